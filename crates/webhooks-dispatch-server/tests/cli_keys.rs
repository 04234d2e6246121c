//! The key commands of the binary: `keys generate|add|rekey`, `endpoint rotate-secret|expire-previous-
//! secrets|keys`, and `verify --public-key`.

use std::time::Duration;

use tokio::process::Command;
use webhooks_dispatch::keyring::MasterKey;
use webhooks_dispatch::signing::{sign_all, Ed25519SigningKey, SigningSecret};

use crate::db;
use crate::process::{command, field, run, service_command, Output, Service, BIN};
use crate::support::{bounded, Engine, Fixture};

/// `command(fixture)` with these arguments, run to completion; it must succeed.
async fn ok(fixture: &Fixture, args: &[&str]) -> Output {
    let mut cmd = command(fixture);
    cmd.args(args);
    let out = run(cmd, None).await;
    assert!(out.status.success(), "{args:?}: {} {}", out.stdout, out.stderr);
    out
}

// Catches: a printed key the ring cannot read back, an id option ignored, the same key twice, or a bad id
// accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_generate_prints_a_master_key_that_parses() {
    bounded("cli_keys::keys_generate_prints_a_master_key_that_parses", async {
        let generate = |args: &[&str]| {
            let mut cmd = Command::new(BIN);
            cmd.env_clear().args(["keys", "generate"]).args(args);
            cmd
        };
        let first = run(generate(&[]), None).await;
        assert!(first.status.success(), "{}", first.stderr);
        let parsed = MasterKey::parse(first.stdout.trim()).expect("the key parses");
        assert!(parsed.id().starts_with('k'), "{}", parsed.id());
        let named = run(generate(&["--id", "prod-2030"]), None).await;
        let named_key = MasterKey::parse(named.stdout.trim()).unwrap();
        assert_eq!(named_key.id(), "prod-2030");
        assert_ne!(named.stdout.split(':').nth(1), first.stdout.split(':').nth(1));
        assert!(!named.stderr.contains(named.stdout.trim()), "{}", named.stderr);
        let bad = run(generate(&["--id", "no spaces"]), None).await;
        assert_eq!(bad.status.code(), Some(1), "{}", bad.stderr);
        assert!(bad.stdout.is_empty(), "{}", bad.stdout);
    })
    .await
}

// Catches: `keys add` that loses the file's keys or mode, a decrypt-only key that seals, `--current` that
// does not, a rekey that leaves rows under the old key or breaks them (the delivery after it must still be
// signed and verify), the rotation commands, and a ring from the environment silently not updated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_add_and_rekey_move_every_row_to_the_new_current_key() {
    bounded(
        "cli_keys::keys_add_and_rekey_move_every_row_to_the_new_current_key",
        keys_add_and_rekey_scenario(),
    )
    .await
}

async fn keys_add_and_rekey_scenario() {
    let fixture = Fixture::new(Engine::Sqlite).await;
    let key_file = fixture.scratch.path().join("webhooks-dispatch.db.keys");
    ok(&fixture, &["migrate"]).await;
    let url = fixture.receiver_url();
    let added = ok(&fixture, &["endpoint", "add", "--owner", "acme", "--url", &url]).await;
    let endpoint = field(&added.stdout, "id");
    let secret = field(&added.stdout, "secret");
    let rotated = ok(
        &fixture,
        &["endpoint", "rotate-secret", &endpoint, "--grace", "1h"],
    )
    .await;
    let new_secret = field(&rotated.stdout, "secret");
    assert!(new_secret.starts_with("whsec_") && new_secret != secret);
    assert!(
        rotated.stderr.contains("shown only this once"),
        "{}",
        rotated.stderr
    );
    let keys = ok(&fixture, &["endpoint", "keys", &endpoint]).await;
    let lines: Vec<&str> = keys.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", keys.stdout);
    assert!(
        lines[0].starts_with(&field(&rotated.stdout, "key")),
        "{}",
        keys.stdout
    );
    assert!(
        lines[0].contains("  hmac-sha256  ") && lines[0].ends_with("  -  -"),
        "{}",
        lines[0]
    );
    assert!(!keys.stdout.contains("whsec_"), "{}", keys.stdout);
    let expired = ok(&fixture, &["endpoint", "expire-previous-secrets", &endpoint]).await;
    assert_eq!(expired.stdout.trim(), "expired: 1");
    let ed = ok(
        &fixture,
        &[
            "endpoint",
            "add",
            "--owner",
            "acme",
            "--url",
            &url,
            "--signature",
            "ed25519",
        ],
    )
    .await;
    let ed_rotated = ok(&fixture, &["endpoint", "rotate-secret", &field(&ed.stdout, "id")]).await;
    assert!(
        field(&ed_rotated.stdout, "public key").starts_with("whpk_"),
        "{}",
        ed_rotated.stdout
    );
    assert!(!ed_rotated.stdout.contains("secret:"), "{}", ed_rotated.stdout);

    let store = db::open(&fixture.database_url).await;
    let first = webhooks_dispatch::KeyRing::parse(&std::fs::read_to_string(&key_file).unwrap()).unwrap();
    let first = first.current_id().to_owned();
    assert!(all_under(&*store, &format!("wdenc1.{first}.")).await);
    let add = ok(&fixture, &["keys", "add"]).await;
    assert_eq!(add.stdout.trim(), "k2");
    let rekey = ok(&fixture, &["keys", "rekey"]).await;
    assert!(
        rekey.stdout.contains("resealed: 0"),
        "k2 only opens: {}",
        rekey.stdout
    );
    let add = ok(&fixture, &["keys", "add", "--current", "--id", "k-new"]).await;
    assert_eq!(add.stdout.trim(), "k-new");
    let ring = webhooks_dispatch::KeyRing::parse(&std::fs::read_to_string(&key_file).unwrap()).unwrap();
    assert_eq!(ring.key_ids(), ["k-new", first.as_str(), "k2"]);
    assert_eq!(std::fs::metadata(&key_file).map(|m| mode(&m)).unwrap(), 0o600);
    let rekey = ok(&fixture, &["keys", "rekey", "--batch", "1"]).await;
    let resealed = db::stored_keys(&*store).await.len();
    assert!(
        rekey.stdout.contains(&format!("resealed: {resealed}")),
        "{}",
        rekey.stdout
    );
    assert!(
        all_under(&*store, "wdenc1.k-new.").await,
        "every row under the new key"
    );
    deliver_after_rekey(&fixture, &endpoint, &new_secret).await;

    let mut from_env = command(&fixture);
    from_env.env("WEBHOOKS_DISPATCH_MASTER_KEYS", ring_text(&key_file));
    from_env.args(["keys", "add"]);
    let refused = run(from_env, None).await;
    assert_eq!(refused.status.code(), Some(1), "{}", refused.stderr);
    assert!(
        refused.stderr.contains("WEBHOOKS_DISPATCH_MASTER_KEYS"),
        "{}",
        refused.stderr
    );
    let to_add = MasterKey::parse(refused.stdout.trim()).expect("the key to add is printed");
    assert_eq!(to_add.id(), "k4", "the next free id of that ring");
}

/// Whether every stored key is sealed with this prefix (`wdenc1.<master key id>.`).
async fn all_under(store: &dyn webhooks_dispatch::store::Executor, prefix: &str) -> bool {
    let keys = db::stored_keys(store).await;
    !keys.is_empty() && keys.iter().all(|(_, _, stored)| stored.starts_with(prefix))
}

fn mode(meta: &std::fs::Metadata) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o777
}

/// The key entries of a key file, comma-separated, as an environment variable would hold them.
fn ring_text(key_file: &std::path::Path) -> String {
    let text = std::fs::read_to_string(key_file).unwrap();
    let entries: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    entries.join(",")
}

/// A delivery after the rekey is signed with the (resealed) secret and verifies under it.
async fn deliver_after_rekey(fixture: &Fixture, endpoint: &str, secret: &str) {
    let (served, _) = Service::serve(service_command(fixture, &["serve"])).await;
    ok(
        fixture,
        &["send", "--endpoint", endpoint, "--type", "a.b", "--data", "{}"],
    )
    .await;
    assert!(
        fixture.receiver.wait_for(1, Duration::from_secs(30)).await,
        "delivered"
    );
    let got = fixture.receiver.received()[0].clone();
    let webhook = standardwebhooks::Webhook::new(secret).unwrap();
    webhook.verify(&got.body, &got.headers).expect("verifies");
    let (status, _, _) = served.terminate().await;
    assert!(status.success(), "{status:?}");
}

// Catches: `verify --public-key` accepting a tampered body or another key's signature, or both verifiers
// (or neither) accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_public_key_says_valid_or_invalid() {
    bounded("cli_keys::verify_public_key_says_valid_or_invalid", async {
        let key = Ed25519SigningKey::generate();
        let public_key = key.public_key().as_str().to_owned();
        let other = Ed25519SigningKey::generate().public_key().as_str().to_owned();
        let now = chrono::Utc::now().timestamp();
        let body = br#"{"signed":"ed25519"}"#;
        let signature = sign_all(&[SigningSecret::Ed25519(key)], "msg_ed", now, body).unwrap();
        let verify = |extra: &[&str]| {
            let mut cmd = Command::new(BIN);
            cmd.env_clear().arg("verify").args(extra);
            cmd.args([
                "--id",
                "msg_ed",
                "--timestamp",
                &now.to_string(),
                "--signature",
                &signature,
            ]);
            cmd
        };
        // Arguments, body, exit status, and how stdout starts.
        type Case<'a> = (&'a [&'a str], &'a [u8], Option<i32>, &'a str);
        let cases: [Case; 5] = [
            (&["--public-key", &public_key], body, Some(0), "valid"),
            (
                &["--public-key", &public_key],
                br#"{"signed":"tampered"}"#,
                Some(1),
                "invalid",
            ),
            (&["--public-key", &other], body, Some(1), "invalid"),
            (&["--public-key", "whpk_nope"], body, Some(1), ""),
            (&[], body, Some(1), ""),
        ];
        for (args, input, code, stdout) in cases {
            let out = run(verify(args), Some(input)).await;
            assert_eq!(out.status.code(), code, "{args:?}: {} {}", out.stdout, out.stderr);
            assert!(out.stdout.starts_with(stdout), "{args:?}: {}", out.stdout);
        }
        let both = run(
            verify(&["--public-key", &public_key, "--secret", "whsec_AAAA"]),
            Some(body),
        )
        .await;
        assert_eq!(both.status.code(), Some(2), "a usage error: {}", both.stderr);
    })
    .await
}
