//! Resolution, precedence, validation and redaction of settings.

use super::*;
use proptest::prelude::*;
use std::path::Path;

/// A master key ring of one key, `t:` + 32 bytes of 7.
fn ring_text() -> String {
    use base64::Engine as _;
    format!(
        "t:{}",
        base64::engine::general_purpose::STANDARD.encode([7u8; 32])
    )
}

fn raw() -> RawSettings {
    RawSettings {
        database_url: Some("postgres://u:hunter2@127.0.0.1/db".to_owned()),
        master_keys: Some(ring_text()),
        ..RawSettings::default()
    }
}

#[test]
fn defaults_apply() {
    let c = Config::resolve(RawSettings::default()).unwrap();
    assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
    assert!(matches!(c.database_url, DatabaseUrl::Sqlite(_)));
    assert_eq!(c.body_limit, DEFAULT_BODY_LIMIT);
    assert_eq!(c.log_format, LogFormat::Human);
}

#[test]
fn flags_and_env_win_over_the_file() {
    let file = RawSettings {
        listen: Some("127.0.0.1:1".to_owned()),
        concurrency: Some(3),
        ..RawSettings::default()
    };
    let flags = RawSettings {
        listen: Some("127.0.0.1:2".to_owned()),
        ..RawSettings::default()
    };
    let c = Config::resolve(flags.or(file)).unwrap();
    assert_eq!(c.listen.port(), 2);
    assert_eq!(c.concurrency, 3);
}

#[test]
fn invalid_settings_name_the_setting() {
    let cases: Vec<(RawSettings, &str)> = vec![
        (
            RawSettings {
                listen: Some("nope".into()),
                ..raw()
            },
            "listen",
        ),
        (
            RawSettings {
                database_url: Some("mysql://x".into()),
                ..raw()
            },
            "database_url",
        ),
        (
            RawSettings {
                api_keys: Some(vec!["short".into()]),
                ..raw()
            },
            "api_keys",
        ),
        (
            RawSettings {
                poll_interval: Some("10".into()),
                ..raw()
            },
            "poll_interval",
        ),
        (
            RawSettings {
                allow_net: Some(vec!["10.0.0.0/33".into()]),
                ..raw()
            },
            "allow_net",
        ),
        (
            RawSettings {
                concurrency: Some(0),
                ..raw()
            },
            "concurrency",
        ),
    ];
    for (raw, setting) in cases {
        let err = Config::resolve(raw).unwrap_err().to_string();
        assert!(err.contains(setting), "{err}");
    }
}

#[test]
fn serve_needs_keys_or_explicit_insecure_mode() {
    let c = Config::resolve(raw()).unwrap();
    assert!(c
        .check_serve()
        .unwrap_err()
        .to_string()
        .contains("--insecure-no-auth"));
    let insecure = Config::resolve(RawSettings {
        insecure_no_auth: true,
        ..raw()
    })
    .unwrap();
    insecure.check_serve().unwrap();
}

#[test]
fn debug_never_shows_secrets() {
    let key = "k".repeat(20);
    let raw = RawSettings {
        api_keys: Some(vec![key.clone()]),
        ..raw()
    };
    let mut c = Config::resolve(raw.clone()).unwrap();
    c.load_key_ring().unwrap();
    let master = ring_text();
    let master_b64 = master.split_once(':').unwrap().1;
    for text in [format!("{raw:?}"), format!("{c:?}")] {
        assert!(!text.contains(&key), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
        assert!(!text.contains(master_b64), "{text}");
    }
    assert!(format!("{c:?}").contains(r#"current: "t""#), "{c:?}");
}

#[test]
fn master_keys_flow_like_every_setting_and_a_bad_ring_names_the_setting() {
    let file = RawSettings {
        master_keys_file: Some("/etc/webhooks/keys".into()),
        ..RawSettings::default()
    };
    let c = Config::resolve(RawSettings::default().or(file.clone())).unwrap();
    assert_eq!(c.master_keys.file(), Some(Path::new("/etc/webhooks/keys")));
    let flags = RawSettings {
        master_keys: Some(ring_text()),
        ..RawSettings::default()
    };
    let c = Config::resolve(flags.or(file)).unwrap();
    assert_eq!(c.master_keys.file(), None, "the ring itself wins over a file");
    let c = Config::resolve(RawSettings::default()).unwrap();
    assert_eq!(
        c.master_keys.file(),
        Some(Path::new("webhooks-dispatch.db.keys")),
        "SQLite's default sits beside the database"
    );
    let bad = RawSettings {
        master_keys: Some("t:short".into()),
        ..raw()
    };
    let err = Config::resolve(bad).unwrap_err().to_string();
    assert!(err.contains("master_keys") && !err.contains("short"), "{err}");
    let none = RawSettings {
        master_keys: None,
        ..raw()
    };
    let err = Config::resolve(none).unwrap_err().to_string();
    assert!(
        err.contains("master_keys") && err.contains("keys generate"),
        "{err}"
    );
}

#[test]
fn file_errors_elide_values() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        "listen = \"127.0.0.1:9\"\nconcurrency = \"sekrit-value\"\n",
    )
    .unwrap();
    let err = RawSettings::from_file(&path).unwrap_err().to_string();
    assert!(err.contains("line 2"), "{err}");
    assert!(!err.contains("sekrit"), "{err}");
    std::fs::write(&path, "listn = 1\n").unwrap();
    assert!(RawSettings::from_file(&path).is_err(), "unknown keys are refused");
}

#[test]
fn the_example_file_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("webhooks-dispatch.example.toml");
    let raw = RawSettings::from_file(&path).unwrap();
    assert_eq!(raw.log_format, Some(LogFormat::Json));
    let c = Config::resolve(raw).unwrap();
    c.check_serve().unwrap();
    assert!(matches!(c.database_url, DatabaseUrl::Postgres(_)));
    assert!(c.master_keys.file().is_some(), "PostgreSQL needs a ring: {c:?}");
}

#[test]
fn durations() {
    assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
    assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
    assert!(parse_duration("0s").is_err());
    assert_eq!(parse_duration_or_zero("0s").unwrap(), Duration::ZERO);
    assert_eq!(
        parse_duration_or_zero("24h").unwrap(),
        Duration::from_secs(86_400)
    );
    assert!(parse_duration_or_zero("-1s").is_err());
    assert!(parse_duration("1.5s").is_err());
    assert!(parse_duration("s").is_err());
    assert_eq!(duration::show(Duration::from_secs(3650 * 86_400)), "3650d");
    assert_eq!(duration::show(Duration::from_millis(1500)), "1500ms");
    assert_eq!(duration::show(Duration::from_secs(3601)), "3601s");
}

#[test]
fn operational_owner_is_optional_flows_like_every_setting_and_must_be_an_owner_id() {
    assert_eq!(Config::resolve(raw()).unwrap().operational_owner, None);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, "operational_owner = \"ops-file\"\n").unwrap();
    let file = RawSettings::from_file(&path).unwrap();
    let from_file = Config::resolve(raw().or(file.clone())).unwrap();
    assert_eq!(from_file.operational_owner.as_deref(), Some("ops-file"));
    let flags = RawSettings {
        operational_owner: Some("ops-flag".to_owned()),
        ..raw()
    };
    let c = Config::resolve(flags.or(file)).unwrap();
    assert_eq!(c.operational_owner.as_deref(), Some("ops-flag"));
    // Global like every setting: accepted after the command name too.
    let cli = <crate::cli::Cli as clap::Parser>::try_parse_from([
        "webhooks-dispatch",
        "worker",
        "--operational-owner",
        "ops-cli",
    ])
    .unwrap();
    assert_eq!(cli.settings.operational_owner.as_deref(), Some("ops-cli"));
    for bad in [
        " ".to_owned(),
        "o".repeat(webhooks_dispatch::MAX_OWNER_ID_CHARS + 1),
    ] {
        let raw = RawSettings {
            operational_owner: Some(bad),
            ..raw()
        };
        let err = Config::resolve(raw).unwrap_err().to_string();
        assert!(err.contains("operational_owner"), "{err}");
    }
}

#[test]
fn disable_failing_after_takes_days_or_off_and_on_gone_takes_its_two_words() {
    let c = Config::resolve(raw()).unwrap();
    assert_eq!(
        c.disable_failing_after,
        Some(webhooks_dispatch::DEFAULT_DISABLE_FAILING_AFTER)
    );
    assert_eq!(c.on_gone, GoneSetting::Disable);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, "disable_failing_after = \"2d\"\non_gone = \"dead\"\n").unwrap();
    let c = Config::resolve(RawSettings::from_file(&path).unwrap().or(raw())).unwrap();
    assert_eq!(c.disable_failing_after, Some(Duration::from_secs(2 * 86_400)));
    assert_eq!(c.on_gone, GoneSetting::Dead);
    let off = RawSettings {
        disable_failing_after: Some("off".to_owned()),
        ..raw()
    };
    assert_eq!(Config::resolve(off).unwrap().disable_failing_after, None);
    let bad = RawSettings {
        disable_failing_after: Some("soon".to_owned()),
        ..raw()
    };
    let err = Config::resolve(bad).unwrap_err().to_string();
    assert!(err.contains("disable_failing_after"), "{err}");
}

#[test]
fn server_limits_have_defaults_and_take_settings() {
    let c = Config::resolve(raw()).unwrap();
    assert_eq!(c.server_limits, crate::listen::ServerLimits::default());
    let set = RawSettings {
        header_read_timeout: Some("2s".to_owned()),
        request_timeout: Some("1m".to_owned()),
        max_connections: Some(7),
        ..raw()
    };
    let limits = Config::resolve(set).unwrap().server_limits;
    assert_eq!(
        (
            limits.header_read_timeout,
            limits.request_timeout,
            limits.max_connections
        ),
        (Duration::from_secs(2), Duration::from_secs(60), 7)
    );
    for bad in [
        RawSettings {
            max_connections: Some(0),
            ..raw()
        },
        RawSettings {
            request_timeout: Some("0s".to_owned()),
            ..raw()
        },
    ] {
        assert!(Config::resolve(bad).is_err());
    }
}

/// Sets one duration setting.
type Setter = fn(&mut RawSettings, String);

/// Every duration setting, how to set it, and its documented maximum.
fn duration_settings() -> Vec<(&'static str, Setter, Duration)> {
    let hour = duration::MAX_SHORT;
    vec![
        ("poll_interval", |r, v| r.poll_interval = Some(v), hour),
        ("attempt_timeout", |r, v| r.attempt_timeout = Some(v), hour),
        ("shutdown_grace", |r, v| r.shutdown_grace = Some(v), hour),
        (
            "header_read_timeout",
            |r, v| r.header_read_timeout = Some(v),
            hour,
        ),
        ("request_timeout", |r, v| r.request_timeout = Some(v), hour),
        ("metrics_refresh", |r, v| r.metrics_refresh = Some(v), hour),
        (
            "disable_failing_after",
            |r, v| r.disable_failing_after = Some(v),
            duration::MAX_DISABLE_FAILING_AFTER,
        ),
    ]
}

/// The value `setting` resolved to in `c`.
fn resolved(c: &Config, setting: &str) -> Option<Duration> {
    match setting {
        "poll_interval" => Some(c.poll_interval),
        "attempt_timeout" => Some(c.attempt_timeout),
        "shutdown_grace" => Some(c.shutdown_grace),
        "header_read_timeout" => Some(c.server_limits.header_read_timeout),
        "request_timeout" => Some(c.server_limits.request_timeout),
        "disable_failing_after" => c.disable_failing_after,
        "metrics_refresh" => Some(c.metrics_refresh),
        other => panic!("unknown setting {other}"),
    }
}

// Catches: a duration setting that accepts a value the worker or the API server later overflows on
// (`Instant + 9999999999999999h` panics), or a refusal that does not name the setting and its range.
#[test]
fn out_of_range_durations_are_refused_naming_the_setting_and_range() {
    for (setting, set, max) in duration_settings() {
        for huge in [
            "9999999999999999h",
            "18446744073709551615d",
            "18446744073709551616ms",
            "99999999999999999999999999s",
        ] {
            let mut r = raw();
            set(&mut r, huge.to_owned());
            let err = Config::resolve(r).unwrap_err().to_string();
            assert!(
                err.contains(setting) && err.contains("allowed: 1ms to"),
                "{huge}: {err}"
            );
        }
        let mut r = raw();
        set(&mut r, format!("{}ms", max.as_millis() + 1));
        let err = Config::resolve(r).unwrap_err().to_string();
        assert!(err.contains(setting), "{err}");
        let mut r = raw();
        set(&mut r, format!("{}s", max.as_secs() + 1));
        let err = Config::resolve(r).unwrap_err().to_string();
        let over = duration::show(max + Duration::from_secs(1));
        let expected = format!(
            "{setting}: {over} is too long; allowed: 1ms to {}",
            duration::show(max)
        );
        assert!(err.ends_with(&expected), "{err}");
        let mut r = raw();
        set(&mut r, format!("{}s", max.as_secs()));
        assert_eq!(resolved(&Config::resolve(r).unwrap(), setting), Some(max));
    }
}

proptest! {
    // Catches: parse_duration overflowing (a panic, or a saturated Duration::MAX slipping through) on
    // extreme numbers, and any duration setting accepting a value outside 1ms..=its maximum.
    #[test]
    fn duration_settings_never_panic_and_stay_within_their_range(
        text in prop_oneof![
            "[0-9]{1,28}(ms|s|m|h|d)",
            (any::<u64>(), "(ms|s|m|h|d)").prop_map(|(n, u)| format!("{n}{u}")),
            "\\PC{0,12}",
        ]
    ) {
        let _ = parse_duration(&text);
        for (setting, set, max) in duration_settings() {
            let mut r = raw();
            set(&mut r, text.clone());
            match Config::resolve(r) {
                Ok(c) => {
                    if let Some(d) = resolved(&c, setting) {
                        prop_assert!(
                            d >= Duration::from_millis(1) && d <= max,
                            "{setting} = {text:?} resolved to {d:?}"
                        );
                    }
                }
                Err(e) => prop_assert!(e.to_string().contains(setting), "{e}"),
            }
        }
    }
}

#[test]
fn metrics_settings_default_to_open_and_five_seconds_and_a_key_needs_keys() {
    let c = Config::resolve(raw()).unwrap();
    assert_eq!(c.metrics_refresh, crate::metrics::DEFAULT_BACKLOG_REFRESH);
    assert!(!c.metrics_require_key);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, "metrics_refresh = \"30s\"\nmetrics_require_key = true\n").unwrap();
    let c = Config::resolve(RawSettings::from_file(&path).unwrap().or(raw())).unwrap();
    assert_eq!(c.metrics_refresh, Duration::from_secs(30));
    assert!(c.metrics_require_key);
    let both = RawSettings {
        metrics_require_key: true,
        insecure_no_auth: true,
        ..raw()
    };
    let err = Config::resolve(both).unwrap_err().to_string();
    assert!(err.contains("metrics_require_key"), "{err}");
}

#[test]
fn lease_defaults_to_ten_seconds_and_refuses_values_the_worker_would_clamp() {
    assert_eq!(Config::resolve(raw()).unwrap().lease, Duration::from_secs(10));
    let set = |lease: &str| RawSettings {
        lease: Some(lease.to_owned()),
        ..raw()
    };
    assert_eq!(
        Config::resolve(set("30s")).unwrap().lease,
        Duration::from_secs(30)
    );
    for bad in ["500ms", "2d", "soon"] {
        let err = Config::resolve(set(bad)).unwrap_err().to_string();
        assert!(err.contains("lease: "), "{bad}: {err}");
    }
}
