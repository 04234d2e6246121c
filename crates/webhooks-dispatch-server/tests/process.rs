//! The real `webhooks-dispatch` binary as a child process: one-shot commands ([`run`]) and long-running
//! `serve` / `worker` processes ([`Service`]) whose JSON logs are collected line by line.
//!
//! A child can never outlive the test: it is killed on drop, and the kernel kills it (PDEATHSIG) if the
//! test process dies first.

use std::net::SocketAddr;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;

use crate::support::{Fixture, API_KEY};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_webhooks-dispatch");

/// How long a child may take to start, or to exit after SIGTERM, before the test fails.
const PATIENCE: Duration = Duration::from_secs(30);

/// A command for the binary with the fixture's settings in the environment — the way a deployment would
/// pass them, the master key ring too (for PostgreSQL; SQLite's is the key file beside the database) — and
/// nothing inherited that could change them.
pub fn command(fixture: &Fixture) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("WEBHOOKS_DISPATCH_DATABASE_URL", &fixture.database_url)
        .env("WEBHOOKS_DISPATCH_ALLOW_NET", "127.0.0.1/32")
        .env("WEBHOOKS_DISPATCH_CA_FILE", fixture.ca_file())
        .env("WEBHOOKS_DISPATCH_DATABASE_MAX_CONNECTIONS", "4")
        .kill_on_drop(true);
    if let Some(ring) = &fixture.master_keys {
        cmd.env("WEBHOOKS_DISPATCH_MASTER_KEYS", ring);
    }
    cmd
}

/// `command` for a long-running subcommand (`["serve"]`, `["serve", "--no-worker"]`, `["worker"]`): JSON
/// logs at `info`, the test API key, a short poll interval and a 2 s shutdown grace, and port 0 for `serve`.
/// Later `.env(…)` calls override any of these.
pub fn service_command(fixture: &Fixture, args: &[&str]) -> Command {
    let mut cmd = command(fixture);
    cmd.args(args)
        .env("WEBHOOKS_DISPATCH_LISTEN", "127.0.0.1:0")
        .env("WEBHOOKS_DISPATCH_LOG_FORMAT", "json")
        .env("WEBHOOKS_DISPATCH_POLL_INTERVAL", "100ms")
        .env("WEBHOOKS_DISPATCH_SHUTDOWN_GRACE", "2s")
        .env("WEBHOOKS_DISPATCH_API_KEYS", API_KEY)
        .env("RUST_LOG", "info");
    cmd
}

/// A finished one-shot command.
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs a one-shot command to completion, feeding it `stdin`.
pub async fn run(mut cmd: Command, stdin: Option<&[u8]>) -> Output {
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

/// `field: value` from a command's output.
pub fn field(stdout: &str, name: &str) -> String {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(": ").map(str::to_owned))
        .unwrap_or_else(|| panic!("no {name} in {stdout}"))
}

/// A long-running child (`serve` or `worker`); its stderr (JSON logs) is collected line by line.
pub struct Service {
    child: Child,
    logs: Arc<Mutex<Vec<String>>>,
    /// Lines collected so far; closed when the child's stderr ends.
    lines: watch::Receiver<usize>,
    reader: tokio::task::JoinHandle<()>,
}

impl Service {
    /// Spawns `cmd` (from [`service_command`]) without waiting for anything.
    pub fn spawn(mut cmd: Command) -> Service {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // SAFETY: prctl is async-signal-safe and touches only the child's own state.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = cmd.spawn().expect("spawn the binary");
        let stderr = child.stderr.take().expect("stderr");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (count, lines) = watch::channel(0);
        let sink = logs.clone();
        // Keep draining stderr for the child's whole life, or it would block once the pipe is full.
        let reader = tokio::spawn(async move {
            let mut stream = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = stream.next_line().await {
                sink.lock().unwrap().push(line);
                count.send_modify(|n| *n += 1);
            }
        });
        Service {
            child,
            logs,
            lines,
            reader,
        }
    }

    /// Spawns `serve` and waits until it logs its address.
    pub async fn serve(cmd: Command) -> (Service, SocketAddr) {
        let service = Service::spawn(cmd);
        let event = service.wait_for_log(|e| e["message"] == "listening").await;
        let addr = event["addr"]
            .as_str()
            .expect("addr field")
            .parse()
            .expect("an address");
        (service, addr)
    }

    /// Waits for the first JSON log event matching `matches` (already logged or still to come); panics
    /// with the logs if the child exits or the deadline passes first.
    pub async fn wait_for_log(&self, matches: impl Fn(&Value) -> bool) -> Value {
        let mut lines = self.lines.clone();
        let deadline = tokio::time::Instant::now() + PATIENCE;
        let mut checked = 0;
        loop {
            let found = {
                let logs = self.logs.lock().unwrap();
                let found = logs[checked..]
                    .iter()
                    .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                    .find(|e| matches(e));
                checked = logs.len();
                found
            };
            if let Some(event) = found {
                return event;
            }
            match tokio::time::timeout_at(deadline, lines.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => panic!("the child's log ended first:\n{}", self.logs()),
                Err(_) => panic!("no such log line within {PATIENCE:?}:\n{}", self.logs()),
            }
        }
    }

    /// Every line logged so far.
    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    /// Sends SIGTERM and waits for the exit; returns its status, how long it took, and every log line.
    pub async fn terminate(mut self) -> (ExitStatus, Duration, String) {
        let pid = self.child.id().expect("running") as libc::pid_t;
        let signalled = Instant::now();
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let status = tokio::time::timeout(PATIENCE, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("no exit within {PATIENCE:?} of SIGTERM:\n{}", self.logs()))
            .expect("wait");
        let took = signalled.elapsed();
        // The pipe closed with the child, so the reader ends after the last line.
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut self.reader).await;
        (status, took, self.logs())
    }

    /// Sends SIGKILL (no shutdown of any kind: a crash) and waits until the process is gone; returns every
    /// log line.
    pub async fn kill(mut self) -> String {
        self.child.kill().await.expect("SIGKILL the child");
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut self.reader).await;
        self.logs()
    }
}
