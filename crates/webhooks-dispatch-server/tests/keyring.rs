//! The master key ring of the binary: SQLite's default key file (created once, private, announced once,
//! reused), endpoint keys sealed in the database file, a database copied without its key file delivering
//! nothing, and PostgreSQL refusing to start without a configured ring.

use std::path::Path;
use std::time::Duration;

use hyper::Method;
use serde_json::{json, Value};

use crate::process::{command, field, run, service_command, Service};
use crate::support::{bounded, call, eventually, Engine, Fixture};

/// What the notice of a created key file says.
const NOTICE: &str = "back it up with the database: without it no endpoint secret can be read";

fn is_notice(e: &Value) -> bool {
    e["message"].as_str().is_some_and(|m| m.contains(NOTICE))
}

fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    meta.permissions().mode() & 0o777
}

/// The stored secret text of every endpoint key, read from the SQLite file without the library.
fn stored_secrets(db: &Path) -> Vec<String> {
    let conn = rusqlite::Connection::open(db).expect("open the database file");
    let mut statement = conn
        .prepare("SELECT secret FROM webhooks_dispatch_endpoint_keys ORDER BY id")
        .unwrap();
    let rows = statement.query_map([], |row| row.get::<_, String>(0)).unwrap();
    rows.map(Result::unwrap).collect()
}

/// Registers an HMAC endpoint through the API and an ed25519 one with `endpoint create`; returns the first.
async fn register_both(fixture: &Fixture, addr: std::net::SocketAddr) -> String {
    let body = json!({"owner_id": "acme", "url": fixture.receiver_url()});
    let created = call(addr, Method::POST, "/v1/endpoints", Some(body)).await;
    assert_eq!(created.status, 201, "{}", created.text());
    let mut create = command(fixture);
    create.args(["endpoint", "create", "--owner", "acme", "--url"]);
    create.args([fixture.receiver_url().as_str(), "--signature", "ed25519"]);
    let out = run(create, None).await;
    assert!(out.status.success(), "{}", out.stderr);
    assert!(
        field(&out.stdout, "public key").starts_with("whpk_"),
        "{}",
        out.stdout
    );
    assert!(!out.stdout.contains("secret"), "{}", out.stdout);
    created.json()["id"].as_str().unwrap().to_owned()
}

// Catches: a first start that leaves secrets in the clear or its key file readable by others, a key file
// created silently or announced on every start, a second start that replaces the key (every stored secret
// lost), and a database that can still sign without its key file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_default_key_file_is_created_once_private_announced_once_and_required() {
    bounded(
        "keyring::sqlite_default_key_file_is_created_once_private_announced_once_and_required",
        sqlite_default_key_file_scenario(),
    )
    .await
}

async fn sqlite_default_key_file_scenario() {
    let fixture = Fixture::new(Engine::Sqlite).await;
    let (db, key_file) = (
        fixture.scratch.path().join("webhooks-dispatch.db"),
        fixture.scratch.path().join("webhooks-dispatch.db.keys"),
    );
    assert!(!key_file.exists());
    let (served, addr) = Service::serve(service_command(&fixture, &["serve"])).await;
    let notice = served.wait_for_log(is_notice).await;
    assert_eq!(notice["file"], key_file.display().to_string(), "{notice}");
    assert_eq!(notice["level"], "WARN", "{notice}");
    assert_eq!(mode_of(&key_file), 0o600);
    let written = std::fs::read_to_string(&key_file).unwrap();
    let endpoint = register_both(&fixture, addr).await;
    let (status, _, logs) = served.terminate().await;
    assert!(status.success(), "{status:?}");
    assert_eq!(logs.matches(NOTICE).count(), 1, "announced once:\n{logs}");

    let (served, _) = Service::serve(service_command(&fixture, &["serve"])).await;
    served
        .wait_for_log(|e| e["message"] == "endpoint keys sealed under the current master key")
        .await;
    let (_, _, logs) = served.terminate().await;
    assert!(
        !logs.contains(NOTICE),
        "a second start announces nothing:\n{logs}"
    );
    assert_eq!(
        std::fs::read_to_string(&key_file).unwrap(),
        written,
        "reused as it was"
    );
    let stored = stored_secrets(&db);
    assert_eq!(stored.len(), 2, "{} keys", stored.len());
    let key_id = webhooks_dispatch::KeyRing::parse(&written)
        .unwrap()
        .current_id()
        .to_owned();
    let prefix = format!("wdenc1.{key_id}.");
    assert!(
        stored.iter().all(|s| s.starts_with(&prefix)),
        "sealed under {key_id}"
    );

    // A consistent copy of the database alone, somewhere else: a new key file is made beside it, whose key
    // (another id: made a second later at least) opens none of the copied keys, as the rekey reports.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let elsewhere = tempfile::tempdir().unwrap();
    let copy = elsewhere.path().join("copy.db");
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute("VACUUM INTO ?1", [copy.to_str().unwrap()]).unwrap();
    drop(conn);
    let mut cmd = service_command(&fixture, &["serve"]);
    cmd.env(
        "WEBHOOKS_DISPATCH_DATABASE_URL",
        format!("sqlite://{}", copy.display()),
    );
    let (served, addr) = Service::serve(cmd).await;
    served
        .wait_for_log(|e| e["level"] == "ERROR" && e["unopened"].as_u64().is_some_and(|n| n > 0))
        .await;
    let before = fixture.receiver.count();
    let body = json!({"endpoint_id": endpoint, "event_type": "invoice.paid", "payload": {"n": 1}});
    let sent = call(addr, Method::POST, "/v1/messages", Some(body)).await;
    assert_eq!(sent.status, 201, "{}", sent.text());
    let path = format!("/v1/messages/{}/attempts", sent.json()["id"].as_str().unwrap());
    let error = eventually("the attempt is refused", Duration::from_secs(30), || async {
        let attempts = call(addr, Method::GET, &path, None).await.json();
        attempts["attempts"][0]["error"].as_str().map(str::to_owned)
    })
    .await;
    assert!(error.contains("endpoint secret unusable"), "{error}");
    assert_eq!(fixture.receiver.count(), before, "nothing was sent");
    let (_, _, logs) = served.terminate().await;
    assert_eq!(
        logs.matches(NOTICE).count(),
        1,
        "the copy's new key file is announced"
    );
}

// Catches: a PostgreSQL service that starts without a ring (generating a key of its own that the other
// processes sharing the database would lack), or a refusal that does not say what to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_without_a_master_key_ring_refuses_to_start_and_says_how_to_give_one() {
    bounded(
        "keyring::postgres_without_a_master_key_ring_refuses_to_start_and_says_how_to_give_one",
        async {
            let fixture = Fixture::new(Engine::Postgres).await;
            for args in [&["serve"][..], &["worker"], &["migrate"]] {
                let mut cmd = service_command(&fixture, args);
                cmd.env_remove("WEBHOOKS_DISPATCH_MASTER_KEYS")
                    .current_dir(fixture.scratch.path());
                let out = run(cmd, None).await;
                assert_eq!(out.status.code(), Some(1), "{args:?}: {}", out.stderr);
                for expected in [
                    "configuration: master_keys",
                    "WEBHOOKS_DISPATCH_MASTER_KEYS",
                    "webhooks-dispatch keys generate",
                    "master_keys_file",
                ] {
                    assert!(out.stderr.contains(expected), "{args:?}: {}", out.stderr);
                }
            }
            let files: Vec<_> = std::fs::read_dir(fixture.scratch.path())
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert_eq!(files, ["ca.pem"], "no key file was made");
            // With one, it starts.
            let (served, addr) = Service::serve(service_command(&fixture, &["serve"])).await;
            served
                .wait_for_log(|e| e["message"] == "endpoint keys sealed under the current master key")
                .await;
            let ready = call(addr, Method::GET, "/readyz", None).await;
            assert_eq!(ready.status, 200, "{}", ready.text());
            let (status, _, _) = served.terminate().await;
            assert!(status.success(), "{status:?}");
        },
    )
    .await
}
