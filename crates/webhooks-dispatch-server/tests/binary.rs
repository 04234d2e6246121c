//! The real `webhooks-dispatch` binary: `serve` as a child process (see `process`), the client commands
//! against the same database, `verify`, and start-up refusals, including the generated API key.

use std::net::Ipv4Addr;
use std::time::Duration;

use base64::Engine as _;
use tokio::process::Command;
use webhooks_dispatch::signing::sign;
use webhooks_dispatch::EndpointSecret;
use webhooks_dispatch_testkit::receiver::ClosedPort;
use webhooks_dispatch_testkit::PasswordForms;

use crate::engines;
use crate::process::{command, field, run, service_command, Service, BIN};
use crate::support::{authorize, bounded, eventually, get, master_key_text, send, Engine, Fixture, API_KEY};

engines!(
    cli_serve_send_attempts_and_verify,
    cli_event_send_fans_out_and_endpoint_disable_enable_update_delete,
    cli_message_list_pages_newest_first_with_filters
);

async fn cli_serve_send_attempts_and_verify(engine: Engine) {
    let fixture = Fixture::new(engine).await;
    let (served, addr) = Service::serve(service_command(&fixture, &["serve"])).await;
    assert!(addr.ip().is_loopback() && addr.port() != 0, "{addr}");

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
    let table = eventually("attempts shows the delivery", Duration::from_secs(30), || async {
        let mut attempts = command(&fixture);
        attempts.args(["attempts", &message_id]);
        let out = run(attempts, None).await;
        assert!(out.status.success(), "{}", out.stderr);
        out.stdout
            .contains("delivered after 1 attempt")
            .then_some(out.stdout)
    })
    .await;
    assert!(table.contains("OUTCOME") && table.contains("200"), "{table}");

    verify_real_and_computed_signatures(&fixture, &secret).await;

    let (status, _, logs) = served.terminate().await;
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

/// A fixture whose database `migrate` has set up.
async fn migrated_fixture(engine: Engine) -> Fixture {
    let fixture = Fixture::new(engine).await;
    let mut migrate = command(&fixture);
    migrate.arg("migrate");
    let migrated = run(migrate, None).await;
    assert!(migrated.status.success(), "{}", migrated.stderr);
    fixture
}

/// `endpoint add` for owner acme on the fixture's receiver; returns the id it printed.
async fn add_endpoint(fixture: &Fixture) -> String {
    let mut add = command(fixture);
    add.args([
        "endpoint",
        "add",
        "--owner",
        "acme",
        "--url",
        &fixture.receiver_url(),
    ]);
    let added = run(add, None).await;
    assert!(added.status.success(), "{}", added.stderr);
    field(&added.stdout, "id")
}

async fn cli_event_send_fans_out_and_endpoint_disable_enable_update_delete(engine: Engine) {
    let fixture = migrated_fixture(engine).await;
    let mut ids = Vec::new();
    for _ in 0..2 {
        ids.push(add_endpoint(&fixture).await);
    }
    let endpoint = |verb: &str, id: &str| {
        let mut c = command(&fixture);
        c.args(["endpoint", verb, id]);
        c
    };
    let disabled = run(endpoint("disable", &ids[1]), None).await;
    assert!(disabled.status.success(), "{}", disabled.stderr);
    assert!(
        disabled.stdout.contains("status: disabled (manual) since "),
        "{}",
        disabled.stdout
    );

    let mut send = command(&fixture);
    send.args([
        "event",
        "send",
        "--owner",
        "acme",
        "--type",
        "invoice.paid",
        "--data",
        r#"{"n":1}"#,
    ]);
    let sent = run(send, None).await;
    assert!(sent.status.success(), "{}", sent.stderr);
    let lines: Vec<&str> = sent.stdout.lines().collect();
    assert!(lines[0].starts_with("evt_"), "{}", sent.stdout);
    assert_eq!(lines.len(), 3, "{}", sent.stdout);
    assert!(
        lines[1].starts_with("message msg_") && lines[1].ends_with(&format!(" to {}", ids[0])),
        "{}",
        sent.stdout
    );
    assert_eq!(
        lines[2],
        format!("skipped {}: endpoint disabled (manual)", ids[1])
    );

    let enabled = run(endpoint("enable", &ids[1]), None).await;
    assert!(enabled.status.success(), "{}", enabled.stderr);
    assert!(enabled.stdout.contains("status: active"), "{}", enabled.stdout);
    let mut list = command(&fixture);
    list.args(["endpoint", "list", "--owner", "acme", "--limit", "1"]);
    let listed = run(list, None).await;
    assert!(listed.status.success(), "{}", listed.stderr);
    assert!(
        listed.stdout.starts_with(&format!("{}  acme  active  ", ids[0])),
        "{}",
        listed.stdout
    );
    assert!(
        listed.stderr.contains(&format!("more: --cursor {}", ids[0])),
        "{}",
        listed.stderr
    );
    let unknown = run(endpoint("disable", "ep_nope"), None).await;
    assert!(!unknown.status.success());
    assert!(unknown.stderr.contains("unknown endpoint"), "{}", unknown.stderr);

    let mut update = endpoint("update", &ids[0]);
    update.args([
        "--description",
        "billing",
        "--metadata",
        "team=payments",
        "--header",
        "authorization=Bearer cli-credential",
    ]);
    let updated = run(update, None).await;
    assert!(updated.status.success(), "{}", updated.stderr);
    for line in [
        "description: billing",
        "metadata: team=payments",
        "custom headers: authorization (values hidden)",
    ] {
        assert!(updated.stdout.contains(line), "{line} in {}", updated.stdout);
    }
    assert!(!updated.stdout.contains("cli-credential"), "{}", updated.stdout);
    let deleted = run(endpoint("delete", &ids[0]), None).await;
    assert!(deleted.status.success(), "{}", deleted.stderr);
    assert!(
        deleted.stdout.contains(&format!("deleted: {}", ids[0])),
        "{}",
        deleted.stdout
    );
    let gone = run(endpoint("show", &ids[0]), None).await;
    assert!(gone.stderr.contains("unknown endpoint"), "{}", gone.stderr);
}

async fn cli_message_list_pages_newest_first_with_filters(engine: Engine) {
    let fixture = migrated_fixture(engine).await;
    let endpoint = add_endpoint(&fixture).await;
    let mut sent = Vec::new();
    for n in 0..2 {
        let mut send = command(&fixture);
        let data = format!(r#"{{"n":{n}}}"#);
        send.args([
            "send",
            "--endpoint",
            &endpoint,
            "--type",
            "invoice.paid",
            "--data",
            &data,
        ]);
        let out = run(send, None).await;
        assert!(out.status.success(), "{}", out.stderr);
        sent.push(out.stdout.trim().to_owned());
    }
    let list = |args: &[&str]| {
        let mut c = command(&fixture);
        c.args(["message", "list"]).args(args);
        c
    };

    let first = run(list(&["--endpoint", &endpoint, "--limit", "1"]), None).await;
    assert!(first.status.success(), "{}", first.stderr);
    let prefix = format!("{}  {endpoint}  pending  invoice.paid  ", sent[1]);
    assert!(
        first.stdout.starts_with(&prefix),
        "newest first: {}",
        first.stdout
    );
    assert_eq!(first.stdout.lines().count(), 1);
    assert!(
        first.stderr.contains(&format!("more: --cursor {}", sent[1])),
        "{}",
        first.stderr
    );
    let second = run(list(&["--cursor", &sent[1]]), None).await;
    assert!(second.stdout.starts_with(&sent[0]), "{}", second.stdout);
    assert!(!second.stderr.contains("more:"), "{}", second.stderr);
    let window = [
        "--since",
        "2000-01-01T00:00:00Z",
        "--until",
        "2100-01-01T00:00:00+02:00",
    ];
    let both = run(list(&window), None).await;
    assert_eq!(both.stdout.lines().count(), 2, "{}", both.stdout);
    let dead = run(list(&["--status", "dead"]), None).await;
    assert!(dead.status.success() && dead.stdout.is_empty(), "{}", dead.stdout);

    let usage = run(list(&["--since", "yesterday"]), None).await;
    assert_eq!(usage.status.code(), Some(2), "a usage error");
    assert!(usage.stderr.contains("RFC 3339"), "{}", usage.stderr);
    let refused = run(
        list(&[
            "--since",
            "2030-01-01T00:00:00Z",
            "--until",
            "2029-01-01T00:00:00Z",
        ]),
        None,
    )
    .await;
    assert!(!refused.status.success());
    assert!(refused.stderr.contains("since"), "{}", refused.stderr);
}

/// `verify` accepts the real delivery (body from a file) and a signature computed here (body on stdin), and
/// refuses a tampered body.
async fn verify_real_and_computed_signatures(fixture: &Fixture, secret: &str) {
    // verify: the real delivery, from a file.
    let got = fixture.receiver.received()[0].clone();
    let header = |name: &str| got.headers[name].to_str().unwrap().to_owned();
    let body_file = fixture.scratch.path().join("body");
    std::fs::write(&body_file, &got.body).unwrap();
    let mut check = Command::new(BIN);
    check.env("WEBHOOKS_DISPATCH_VERIFY_SECRET", secret).args([
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
    let signature = sign(&EndpointSecret::parse(secret).unwrap(), "msg_local", now, body).unwrap();
    for (input, valid) in [(&body[..], true), (&br#"{"computed":"tampered"}"#[..], false)] {
        let mut check = Command::new(BIN);
        check.args(["verify", "--secret", secret, "--id", "msg_local"]);
        check.args(["--timestamp", &now.to_string(), "--signature", &signature]);
        let out = run(check, Some(input)).await;
        assert_eq!(out.status.success(), valid, "{} {}", out.stdout, out.stderr);
        assert_eq!(out.stdout.starts_with("valid"), valid, "{}", out.stdout);
    }
}

/// A PostgreSQL URL (with a password that must never be printed) whose port refuses connections for as
/// long as the returned port lives.
fn refusing_database() -> (ClosedPort, String) {
    let port = ClosedPort::bind(Ipv4Addr::LOCALHOST.into()).expect("a closed port");
    let url = format!("postgres://app:hunter2@127.0.0.1:{}/x", port.port());
    (port, url)
}

// Catches: a setting refused at the wrong stage or with a message that does not name it, the environment
// not overriding the file, an unparseable database URL accepted, a database password in any message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_configuration_is_refused_at_start() {
    bounded("binary::bad_configuration_is_refused_at_start", async {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.toml");
        std::fs::write(&file, "listen = \"nonsense\"\n").unwrap();
        let file = file.to_str().unwrap();
        let (_held, url) = refusing_database();
        let no_db = ("WEBHOOKS_DISPATCH_DATABASE_URL", url.as_str());
        // Anything that gets as far as binding binds port 0, never the default 8080.
        let any_port = ("WEBHOOKS_DISPATCH_LISTEN", "127.0.0.1:0");
        let key = ("WEBHOOKS_DISPATCH_API_KEYS", API_KEY);
        let ring = master_key_text();
        let ring = ("WEBHOOKS_DISPATCH_MASTER_KEYS", ring.as_str());
        // Arguments, environment, and what stderr must say. None of these reaches a database.
        type Env<'a> = Vec<(&'a str, &'a str)>;
        let cases: Vec<(Vec<&str>, Env, &str)> = vec![
            (vec!["serve", "--listen", "nonsense"], vec![key], "listen"),
            (vec!["--config", file, "serve"], vec![no_db, key], "listen"),
            // The environment overrides the file: past `listen`, the next complaint is the database.
            (
                vec!["--config", file, "serve"],
                vec![no_db, key, any_port, ring],
                "cannot connect to the database at postgres://app:redacted@127.0.0.1:",
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
    })
    .await
}

/// Panics unless `key` is `wdk_` + 32 bytes in unpadded URL-safe base64.
fn assert_well_formed(key: &str) {
    let encoded = key.strip_prefix("wdk_").unwrap_or_else(|| panic!("{key}"));
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(encoded)
        .unwrap_or_else(|e| panic!("{key} is not URL-safe base64: {e}"));
    assert_eq!(bytes.len(), 32, "{key}");
}

/// The generated key in `file`, which must be private to its owner (mode 0600).
fn read_private_key(file: &std::path::Path) -> String {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(file)
        .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o777,
        0o600,
        "{} has mode {:o}",
        file.display(),
        mode & 0o777
    );
    let key = std::fs::read_to_string(file).expect("read the key file");
    let key = key
        .strip_suffix('\n')
        .unwrap_or_else(|| panic!("one line: {key:?}"));
    assert_well_formed(key);
    key.to_owned()
}

// Catches: `serve` writing a generated API key to a non-terminal stderr (a log pipe, a journal), a key file
// other users can read, a file whose key is not the one the API accepts, the same key on every run, a key
// generated although one (or --insecure-no-auth) was configured, and a key file that follows a planted
// file's permissions instead of replacing it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generated_key_goes_to_a_private_file_never_to_a_piped_stderr() {
    bounded(
        "binary::a_generated_key_goes_to_a_private_file_never_to_a_piped_stderr",
        generated_key_scenario(),
    )
    .await
}

async fn generated_key_scenario() {
    let fixture = Fixture::new(Engine::Sqlite).await;
    let mut cmd = service_command(&fixture, &["serve"]);
    cmd.env_remove("WEBHOOKS_DISPATCH_API_KEYS");
    let (served, addr) = Service::serve(cmd).await;
    // By default the file sits beside the SQLite database.
    let default_file = fixture.scratch.path().join("webhooks-dispatch.api-key");
    let notice = served
        .wait_for_log(|e| e["message"].as_str().is_some_and(|m| m.contains("generated one")))
        .await;
    assert_eq!(notice["file"], default_file.display().to_string(), "{notice}");
    let key = read_private_key(&default_file);
    // The key in the file is the one that opens /v1, and no other key does.
    let mut with_key = get("/v1/messages/msg_x");
    authorize(&mut with_key, &key);
    let reply = send(addr, with_key).await;
    assert_eq!((reply.status, reply.code()), (404, "unknown_message".to_owned()));
    let mut other = get("/v1/messages/msg_x");
    authorize(&mut other, API_KEY);
    assert_eq!(send(addr, other).await.status, 401);
    let (status, _, logs) = served.terminate().await;
    assert!(status.success(), "{status:?}");
    assert!(!logs.contains(&key), "the key reached stderr:\n{logs}");

    // The key step comes before the database is opened, so a refusing database ends a run right after it.
    let dir = tempfile::tempdir().unwrap();
    let chosen = dir.path().join("keys").join("api-key");
    std::fs::create_dir(dir.path().join("keys")).unwrap();
    // A file already there (with a mode others can read) is replaced, not reused.
    std::fs::write(&chosen, "planted\n").unwrap();
    let (_held, url) = refusing_database();
    let ring = master_key_text();
    let serve = |extra: &[(&str, &str)]| {
        let mut cmd = Command::new(BIN);
        cmd.env_clear()
            .arg("serve")
            .env("WEBHOOKS_DISPATCH_DATABASE_URL", &url)
            .env("WEBHOOKS_DISPATCH_MASTER_KEYS", &ring)
            .env("WEBHOOKS_DISPATCH_LISTEN", "127.0.0.1:0")
            .envs(extra.iter().copied())
            .current_dir(dir.path());
        cmd
    };
    let chosen_text = chosen.to_str().unwrap();
    let out = run(serve(&[("WEBHOOKS_DISPATCH_API_KEY_FILE", chosen_text)]), None).await;
    assert!(
        out.stderr.contains("cannot connect to the database"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains(chosen_text),
        "the path is shown: {}",
        out.stderr
    );
    let again = read_private_key(&chosen);
    assert!(!out.stderr.contains(&again), "{}", out.stderr);
    assert_ne!(again, key, "each run generates a fresh key");
    // PostgreSQL has no database file to sit beside: the default is the working directory.
    let out = run(serve(&[]), None).await;
    let in_cwd = read_private_key(&dir.path().join("webhooks-dispatch.api-key"));
    assert!(!out.stderr.contains(&in_cwd), "{}", out.stderr);

    let configured = [
        [("WEBHOOKS_DISPATCH_API_KEYS", API_KEY)],
        [("WEBHOOKS_DISPATCH_INSECURE_NO_AUTH", "true")],
    ];
    for env in configured {
        std::fs::remove_file(dir.path().join("webhooks-dispatch.api-key")).ok();
        let out = run(serve(&env), None).await;
        assert_eq!(out.status.code(), Some(1), "{env:?}: {}", out.stderr);
        assert!(
            out.stderr.contains("cannot connect to the database"),
            "{}",
            out.stderr
        );
        assert!(!out.stderr.contains("wdk_"), "{env:?}: {}", out.stderr);
        assert!(!dir.path().join("webhooks-dispatch.api-key").exists(), "{env:?}");
        assert!(
            !out.stderr.contains(API_KEY),
            "the configured key is printed: {}",
            out.stderr
        );
    }
}

// Catches: a database password written as `?password=`, `sslpassword=` or in a keyword/value string (quoted
// or not) reaching stderr through any path of the binary — the "starting" log line (the configuration's
// Debug), the connection error, or a configuration error that quotes the URL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_passwords_in_any_form_stay_out_of_stderr_and_logs() {
    bounded(
        "binary::database_passwords_in_any_form_stay_out_of_stderr_and_logs",
        async {
            let port = ClosedPort::bind(Ipv4Addr::LOCALHOST.into()).expect("a closed port");
            let (query, ssl, kv, bare) = ("query-pass-7c1e", "ssl pass'9d2f", "kv pass 4b8a", "kv:pass-5e6f");
            let url = format!(
                "postgres://app@127.0.0.1:{}/x?password={}&sslpassword={}",
                port.port(),
                PasswordForms::in_query(query),
                PasswordForms::in_query(ssl),
            );
            let keyword_value = format!(
                "host=127.0.0.1 port={} user=app password={}",
                port.port(),
                PasswordForms::quoted(kv)
            );
            let dir = tempfile::tempdir().unwrap();
            let cases: [(&[&str], String, &str); 4] = [
                (&["serve"], url.clone(), "password=redacted&sslpassword=redacted"),
                (
                    &["worker"],
                    url,
                    "cannot connect to the database at postgres://app@127.0.0.1:",
                ),
                (&["migrate"], keyword_value, "database_url"),
                (&["migrate"], format!("host=db password={bare}"), "database_url"),
            ];
            for (args, database_url, expected) in cases {
                let mut cmd = Command::new(BIN);
                cmd.env_clear()
                    .args(args)
                    .env("WEBHOOKS_DISPATCH_DATABASE_URL", &database_url)
                    .env("WEBHOOKS_DISPATCH_API_KEYS", API_KEY)
                    .env("WEBHOOKS_DISPATCH_MASTER_KEYS", master_key_text())
                    .env("WEBHOOKS_DISPATCH_LISTEN", "127.0.0.1:0")
                    .env("WEBHOOKS_DISPATCH_LOG_FORMAT", "json")
                    .env("RUST_LOG", "trace")
                    .current_dir(dir.path());
                let out = run(cmd, None).await;
                assert_eq!(out.status.code(), Some(1), "{args:?}: {}", out.stderr);
                assert!(out.stderr.contains(expected), "{args:?}: {}", out.stderr);
                if args == ["serve"] {
                    assert!(out.stderr.contains("\"message\":\"starting\""), "{}", out.stderr);
                }
                for password in [query, ssl, kv, bare] {
                    let place = format!("stderr of {args:?}");
                    PasswordForms::of(password).assert_absent(&place, out.stderr.as_bytes());
                }
            }
        },
    )
    .await
}

// Catches: the reason of a destination refusal lost altogether (callers get one generic text, so the
// operators' log is the only place that says what was refused, whose it was and why), or logged without the
// owner or host that let an operator act on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_destination_is_logged_for_operators_with_owner_host_and_reason() {
    bounded(
        "binary::a_refused_destination_is_logged_for_operators_with_owner_host_and_reason",
        async {
            let fixture = Fixture::new(Engine::Sqlite).await;
            let (served, addr) = Service::serve(service_command(&fixture, &["serve", "--no-worker"])).await;
            // An IP literal: refused without any lookup.
            let body =
                serde_json::json!({"owner_id": "acme-ops", "url": "https://10.9.8.7/hook?token=t0k3n"});
            let reply = crate::support::call(addr, hyper::Method::POST, "/v1/endpoints", Some(body)).await;
            assert_eq!(reply.status, 400, "{}", reply.text());
            assert!(!reply.text().contains("private"), "{}", reply.text());
            let logged = served
                .wait_for_log(|e| e["message"] == "endpoint URL refused for its destination")
                .await;
            assert_eq!(logged["owner_id"], "acme-ops", "{logged}");
            assert_eq!(logged["host"], "10.9.8.7", "{logged}");
            assert!(
                logged["reason"]
                    .as_str()
                    .unwrap()
                    .contains("address refused: private"),
                "{logged}"
            );
            let (_, _, logs) = served.terminate().await;
            assert!(!logs.contains("t0k3n"), "the URL's query was logged:\n{logs}");
        },
    )
    .await
}
