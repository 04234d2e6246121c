//! The real `webhooks-dispatch` binary: `serve` as a child process, the client commands against the same
//! database, `verify`, and start-up refusals.
//!
//! The child can never outlive the test: it is killed on drop, and the kernel kills it (PDEATHSIG) if the
//! test process dies first.

use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use webhooks_dispatch::signing::sign;
use webhooks_dispatch::EndpointSecret;

use crate::engines;
use crate::support::{Engine, Fixture, API_KEY};

const BIN: &str = env!("CARGO_BIN_EXE_webhooks-dispatch");

engines!(cli_serve_send_attempts_and_verify);

/// A command for the binary with the fixture's settings in the environment — the way a deployment would
/// pass them — and nothing inherited that could change them.
fn command(fixture: &Fixture) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("WEBHOOKS_DISPATCH_DATABASE_URL", &fixture.database_url)
        .env("WEBHOOKS_DISPATCH_ALLOW_NET", "127.0.0.1/32")
        .env("WEBHOOKS_DISPATCH_CA_FILE", fixture.ca_file())
        .env("WEBHOOKS_DISPATCH_DATABASE_MAX_CONNECTIONS", "4")
        .kill_on_drop(true);
    cmd
}

struct Output {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

async fn run(mut cmd: Command, stdin: Option<&[u8]>) -> Output {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn the binary");
    let mut input = child.stdin.take().expect("stdin");
    input
        .write_all(stdin.unwrap_or_default())
        .await
        .expect("write stdin");
    drop(input);
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("command finished within 60 s")
        .expect("command output");
    Output {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `serve` running as a child; its stderr (JSON logs) is collected line by line.
struct Served {
    child: Child,
    logs: Arc<Mutex<Vec<String>>>,
    reader: tokio::task::JoinHandle<()>,
}

impl Served {
    async fn start(fixture: &Fixture) -> (Served, String) {
        let mut cmd = command(fixture);
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json"])
            .args(["--poll-interval", "100ms", "--shutdown-grace", "2s"])
            .env("WEBHOOKS_DISPATCH_API_KEYS", API_KEY)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // SAFETY: prctl is async-signal-safe and touches only the child's own state.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = cmd.spawn().expect("spawn serve");
        let stderr = child.stderr.take().expect("stderr");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
        let sink = logs.clone();
        // Keep draining stderr for the child's whole life, or it would block once the pipe is full.
        let reader = tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            let mut addr_tx = Some(addr_tx);
            while let Ok(Some(line)) = lines.next_line().await {
                if let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) {
                    if event["message"] == "listening" {
                        if let (Some(tx), Some(addr)) = (addr_tx.take(), event["addr"].as_str()) {
                            let _ = tx.send(addr.to_owned());
                        }
                    }
                }
                sink.lock().unwrap().push(line);
            }
        });
        let addr = tokio::time::timeout(Duration::from_secs(60), addr_rx)
            .await
            .unwrap_or_else(|_| panic!("serve never logged its address: {:?}", logs.lock().unwrap()))
            .expect("serve exited before listening");
        (Served { child, logs, reader }, addr)
    }

    /// SIGTERM; returns the exit status of the graceful shutdown and every log line.
    async fn terminate(mut self) -> (ExitStatus, String) {
        let pid = self.child.id().expect("running") as libc::pid_t;
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("serve exited within 30 s of SIGTERM")
            .expect("wait");
        // The pipe closed with the child, so the reader ends after the last line.
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut self.reader).await;
        let logs = self.logs.lock().unwrap().join("\n");
        (status, logs)
    }
}

fn field(stdout: &str, name: &str) -> String {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(": ").map(str::to_owned))
        .unwrap_or_else(|| panic!("no {name} in {stdout}"))
}

async fn cli_serve_send_attempts_and_verify(engine: Engine) {
    let fixture = Fixture::new(engine).await;
    let (served, addr) = Served::start(&fixture).await;
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");

    let mut add = command(&fixture);
    add.args([
        "endpoint",
        "add",
        "--owner",
        "acme",
        "--url",
        &fixture.receiver_url(),
    ]);
    add.args(["--event-type", "invoice.paid"]);
    let added = run(add, None).await;
    assert!(added.status.success(), "{}", added.stderr);
    let endpoint = field(&added.stdout, "id");
    let secret = field(&added.stdout, "secret");

    let payload = r#"{"invoice":"payload-marker-7f3a"}"#;
    let mut send = command(&fixture);
    send.args([
        "send",
        "--endpoint",
        &endpoint,
        "--type",
        "invoice.paid",
        "--data",
        payload,
    ]);
    send.args(["--idempotency-key", "inv-7"]);
    let sent = run(send, None).await;
    assert!(sent.status.success(), "{}", sent.stderr);
    let message_id = sent.stdout.trim().to_owned();
    assert!(message_id.starts_with("msg_"), "{}", sent.stdout);

    // The server's worker delivers it; `attempts` shows the table.
    assert!(
        fixture.receiver.wait_for(1, Duration::from_secs(30)).await,
        "delivered"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let table = loop {
        let mut attempts = command(&fixture);
        attempts.args(["attempts", &message_id]);
        let out = run(attempts, None).await;
        assert!(out.status.success(), "{}", out.stderr);
        if out.stdout.contains("delivered after 1 attempt") {
            break out.stdout;
        }
        assert!(Instant::now() < deadline, "never delivered: {}", out.stdout);
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(table.contains("OUTCOME") && table.contains("200"), "{table}");

    // verify: the real delivery, from a file.
    let got = fixture.receiver.received()[0].clone();
    let header = |name: &str| got.headers[name].to_str().unwrap().to_owned();
    let body_file = fixture.scratch.path().join("body");
    std::fs::write(&body_file, &got.body).unwrap();
    let mut check = Command::new(BIN);
    check.env("WEBHOOKS_DISPATCH_VERIFY_SECRET", &secret).args([
        "verify",
        "--id",
        &header("webhook-id"),
        "--timestamp",
        &header("webhook-timestamp"),
        "--signature",
        &header("webhook-signature"),
        "--body-file",
    ]);
    check.arg(&body_file);
    let checked = run(check, None).await;
    assert!(checked.status.success(), "{} {}", checked.stdout, checked.stderr);
    assert_eq!(checked.stdout.trim(), "valid");

    // verify: a signature computed here, body on stdin; then a tampered body.
    let now = chrono::Utc::now().timestamp();
    let body = br#"{"computed":"in the test"}"#;
    let signature = sign(&EndpointSecret::parse(&secret).unwrap(), "msg_local", now, body).unwrap();
    for (input, valid) in [(&body[..], true), (&br#"{"computed":"tampered"}"#[..], false)] {
        let mut check = Command::new(BIN);
        check.args(["verify", "--secret", &secret, "--id", "msg_local"]);
        check.args(["--timestamp", &now.to_string(), "--signature", &signature]);
        let out = run(check, Some(input)).await;
        assert_eq!(out.status.success(), valid, "{} {}", out.stdout, out.stderr);
        assert_eq!(out.stdout.starts_with("valid"), valid, "{}", out.stdout);
    }

    let (status, logs) = served.terminate().await;
    assert!(status.success(), "graceful shutdown exits 0: {status:?}");
    let attempt_line = logs
        .lines()
        .find(|l| l.contains("webhook attempt") && l.contains(&message_id))
        .unwrap_or_else(|| panic!("no attempt line in:\n{logs}"));
    for field in ["endpoint_id", "status", "latency_ms"] {
        assert!(attempt_line.contains(field), "{attempt_line}");
    }
    assert!(!logs.contains(&secret), "the secret was logged");
    assert!(!logs.contains("payload-marker-7f3a"), "the payload was logged");
    assert!(!logs.contains(API_KEY), "the API key was logged");
}

#[tokio::test]
async fn bad_configuration_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.toml");
    std::fs::write(&file, "listen = \"nonsense\"\n").unwrap();
    let file = file.to_str().unwrap();
    let no_db = ("WEBHOOKS_DISPATCH_DATABASE_URL", "postgres://127.0.0.1:1/x");
    // Arguments, environment, and what stderr must say. None of these reaches a database.
    type Env<'a> = Vec<(&'a str, &'a str)>;
    let cases: Vec<(Vec<&str>, Env, &str)> = vec![
        // No key configured: one is generated (never unauthenticated), and the unreachable database is next.
        (vec!["serve"], vec![no_db], "cannot connect to the database"),
        (vec!["serve", "--listen", "nonsense"], vec![], "listen"),
        (vec!["--config", file, "serve"], vec![no_db], "listen"),
        // The environment overrides the file: past `listen`, the next complaint is the database.
        (
            vec!["--config", file, "serve"],
            vec![no_db, ("WEBHOOKS_DISPATCH_LISTEN", "127.0.0.1:0")],
            "cannot connect to the database",
        ),
        (
            vec!["migrate"],
            vec![("WEBHOOKS_DISPATCH_DATABASE_URL", "mysql://u:hunter2@h/db")],
            "database_url",
        ),
    ];
    for (args, env, expected) in cases {
        let mut cmd = Command::new(BIN);
        cmd.env_clear().args(&args).envs(env).current_dir(dir.path());
        let out = run(cmd, None).await;
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains(expected), "{args:?}: {}", out.stderr);
        assert!(!out.stderr.contains("hunter2"), "{}", out.stderr);
    }
    // With no database configured at all, the embedded default is a SQLite file in the working directory.
    let mut cmd = Command::new(BIN);
    cmd.env_clear().arg("migrate").current_dir(dir.path());
    let out = run(cmd, None).await;
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
    assert!(dir.path().join("webhooks-dispatch.db").exists());
}
