//! Target `config`: the service's configuration file, through `RawSettings::from_toml_str` (what
//! `RawSettings::from_file` does with the file's text) and `Config::resolve` (what `load` does next when no
//! flag or environment variable is set).
//!
//! Input: the TOML text (not UTF-8: skipped, as `read_to_string` refuses such a file).
//!
//! Properties: it never panics; an accepted configuration has every count at least 1, every duration
//! longer than zero, and the durations the worker and the delivery add to `Instant::now()` (poll interval,
//! attempt timeout) addable without overflow.
//!
//! Secrets never show. The document's API keys (`api_keys`) and database password (the URL's password, and
//! a `password` query parameter, which sqlx also reads) are changed (each letter and digit to the next
//! one, so a key stays as valid as it was) in a copy of the document, and what the two load to must show
//! the same: the `Debug` of `RawSettings`, then of `Config`, or the error's text and `Debug`. The query
//! parameter is changed in a copy of its own, since showing it is a known finding.

use std::time::Instant;

use webhooks_dispatch_server::config::RawSettings;
use webhooks_dispatch_server::Config;

use crate::Known;

/// Loads one input and checks the properties above; panics on a violated one.
pub fn check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let loaded = Loaded::from(text);
    if let Some(Ok(config)) = &loaded.config {
        check_accepted(config);
    }
    let Ok(doc) = text.parse::<toml::Table>() else {
        return;
    };
    // The document and its changed copies are compared as the same serializer writes them, so that
    // everything but the secrets lines up: the same key order (the first unknown field an error names) and
    // the same lines.
    let Ok(same_text) = toml::to_string(&doc) else {
        return;
    };
    let same = Loaded::from(same_text.as_str());
    for (secrets, finding) in [
        (Secrets::KeysAndUrlPassword, None),
        (Secrets::QueryPassword, Some(Known::ConfigQueryPasswordShown)),
    ] {
        let mut copy = doc.clone();
        let changed = change_secrets(&mut copy, secrets);
        let Ok(copy_text) = toml::to_string(&copy) else {
            continue;
        };
        if changed.is_empty() {
            continue;
        }
        // A quote inside a value breaks the error's elision of quoted values (a known finding).
        let finding = finding.or(changed
            .iter()
            .any(|s| s.contains('"'))
            .then_some(Known::ConfigEscapedQuoteShown));
        let copy = Loaded::from(copy_text.as_str());
        let hidden = same.shown == copy.shown;
        let message = || {
            format!(
                "what the settings show depends on a secret:\n{}\nwith the secret changed:\n{}",
                same.shown, copy.shown
            )
        };
        match finding {
            Some(finding) => crate::known(finding, hidden, message),
            None => assert!(hidden, "{}", message()),
        }
    }
}

/// Which secrets a changed copy of the document differs in.
#[derive(Clone, Copy)]
enum Secrets {
    KeysAndUrlPassword,
    QueryPassword,
}

/// What one document loads to, and everything of it that could reach a log or a terminal.
struct Loaded {
    config: Option<Result<Config, webhooks_dispatch_server::Error>>,
    shown: String,
}

impl From<&str> for Loaded {
    fn from(text: &str) -> Loaded {
        let (config, shown) = match RawSettings::from_toml_str(text) {
            Err(message) => (None, message),
            Ok(raw) => {
                let config = Config::resolve(raw.clone());
                let shown = match &config {
                    Ok(config) => format!("{raw:?}\n{config:?}"),
                    Err(e) => format!("{raw:?}\n{e}\n{e:?}"),
                };
                (Some(config), shown)
            }
        };
        Loaded { config, shown }
    }
}

fn check_accepted(config: &Config) {
    let counts = [
        ("concurrency", config.concurrency),
        ("per_endpoint_concurrency", config.per_endpoint_concurrency),
        ("body_limit", config.body_limit),
        ("max_connections", config.server_limits.max_connections),
        (
            "database_max_connections",
            config.database_max_connections as usize,
        ),
    ];
    for (name, n) in counts {
        assert!(n >= 1, "{name} = {n} accepted");
    }
    let mut durations = vec![
        ("poll_interval", config.poll_interval),
        ("attempt_timeout", config.attempt_timeout),
        ("shutdown_grace", config.shutdown_grace),
        ("header_read_timeout", config.server_limits.header_read_timeout),
        ("request_timeout", config.server_limits.request_timeout),
    ];
    durations.extend(config.disable_failing_after.map(|d| ("disable_failing_after", d)));
    for (name, d) in &durations {
        assert!(!d.is_zero(), "{name} = 0 accepted");
    }
    // The worker computes `Instant::now() + poll_interval` and each attempt `Instant::now() + attempt_timeout`
    // (`worker/mod.rs`, `delivery/mod.rs`); std's `Instant + Duration` panics on overflow.
    let now = Instant::now();
    for (name, d) in &durations[..2] {
        crate::known(
            Known::ConfigDurationOverflowsInstant,
            now.checked_add(*d).is_some(),
            || format!("{name} = {d:?} accepted, but Instant::now() + {name} overflows"),
        );
    }
    assert!(!config.insecure_no_auth, "insecure_no_auth set from a file");
    for key in &config.api_keys.0 {
        assert!(key.chars().count() >= 16 && key.bytes().all(|b| b.is_ascii_graphic()));
    }
}

/// Changes the document's `which` secrets in place and returns them as they were.
fn change_secrets(doc: &mut toml::Table, which: Secrets) -> Vec<String> {
    let mut secrets = Vec::new();
    if let Secrets::KeysAndUrlPassword = which {
        let mut change = |value: &mut toml::Value| {
            if let toml::Value::String(s) = value {
                secrets.push(s.clone());
                *s = next_chars(s);
            }
        };
        match doc.get_mut("api_keys") {
            Some(toml::Value::Array(keys)) => keys.iter_mut().for_each(&mut change),
            Some(key) => change(key),
            None => {}
        }
    }
    if let Some(toml::Value::String(url)) = doc.get_mut("database_url") {
        if let Some((found, changed)) = change_database_secrets(url, which) {
            secrets.extend(found);
            *url = changed;
        }
    }
    secrets.retain(|s| s.chars().count() >= 4);
    secrets
}

/// For a PostgreSQL URL: its `which` secrets (the password, or the `password` query parameters), and the
/// URL with them changed (as the parser serializes it, inside the original's surrounding whitespace).
fn change_database_secrets(text: &str, which: Secrets) -> Option<(Vec<String>, String)> {
    let trimmed = text.trim();
    let scheme = trimmed.split_once(':').map(|(s, _)| s);
    if !matches!(scheme, Some("postgres" | "postgresql")) {
        return None;
    }
    let mut url = url::Url::parse(trimmed).ok()?;
    let mut secrets = Vec::new();
    match which {
        Secrets::KeysAndUrlPassword => {
            if let Some(password) = url.password().map(str::to_owned) {
                let _ = url.set_password(Some(&next_chars(&password)));
                secrets.push(password);
            }
        }
        Secrets::QueryPassword => {
            if let Some(query) = url.query().map(str::to_owned) {
                let pairs: Vec<String> = query
                    .split('&')
                    .map(|pair| change_password_pair(pair, &mut secrets))
                    .collect();
                url.set_query(Some(&pairs.join("&")));
            }
        }
    }
    let start = text.len() - text.trim_start().len();
    let end = start + trimmed.len();
    Some((
        secrets,
        format!("{}{}{}", &text[..start], url.as_str(), &text[end..]),
    ))
}

/// One `key=value` of a query, with the value changed if the key decodes to `password` (its raw and
/// decoded forms pushed to `secrets`).
fn change_password_pair(pair: &str, secrets: &mut Vec<String>) -> String {
    let decoded = url::form_urlencoded::parse(pair.as_bytes()).next();
    match (decoded, pair.split_once('=')) {
        (Some((key, value)), Some((raw_key, raw_value))) if key == "password" => {
            secrets.push(raw_value.to_owned());
            secrets.push(value.into_owned());
            format!("{raw_key}={}", next_chars(raw_value))
        }
        _ => pair.to_owned(),
    }
}

/// Each ASCII letter and digit replaced by the next one (wrapping within its kind), everything else kept,
/// so a changed API key stays as valid or invalid as it was.
fn next_chars(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            'z' => 'a',
            'Z' => 'A',
            '9' => '0',
            c if c.is_ascii_alphanumeric() => char::from(c as u8 + 1),
            c => c,
        })
        .collect()
}
