//! Scenario 14: what signing costs per delivery. One HMAC key is what every endpoint has; ten is an endpoint
//! at the rotation cap (every key of an overlap signs every attempt); one ed25519 key is `v1a`. Each is
//! measured twice in the same run: as CPU time for the signature header of one delivery (this process, a
//! tight loop over the benchmark's payload), and as delivery throughput over 100 endpoints signed that way,
//! against the same run with one HMAC key. Opening the sealed keys (decryption, parsing) is reported beside:
//! the dispatcher does it once per key, not per delivery.

use std::time::{Duration, Instant};

use webhooks_dispatch::keyring::SecretCipher;
use webhooks_dispatch::signing::{sign_all, SignatureScheme, SigningSecret};

use crate::delivery::{self, Keys, Plan};
use crate::env::{payload, Env, Tuning};
use crate::report::{Report, Samples};

const SCENARIO: &str = "14. signing cost";
/// How long each CPU measurement loops: long enough that the clock's resolution does not matter.
const LOOP: Duration = Duration::from_millis(300);

/// The three ways of signing, with their figure keys and labels.
const WAYS: [(Keys, &str, &str); 3] = [
    (
        Keys {
            scheme: SignatureScheme::HmacSha256,
            count: 1,
        },
        "signing.hmac_1",
        "1 HMAC key",
    ),
    (
        Keys {
            scheme: SignatureScheme::HmacSha256,
            count: 10,
        },
        "signing.hmac_10",
        "10 HMAC keys (rotation cap)",
    ),
    (
        Keys {
            scheme: SignatureScheme::Ed25519,
            count: 1,
        },
        "signing.ed25519",
        "1 ed25519 key (v1a)",
    ),
];

/// Runs the CPU measurements, then `rounds` interleaved delivery runs of each way.
pub async fn scenario(env: &Env, report: &mut Report, tuning: &Tuning, messages: usize, rounds: usize) {
    let body = serde_json::to_vec(&payload(7)).expect("the payload serializes");
    for (keys, key, label) in WAYS {
        let (sign_us, open_us) = cpu_per_delivery(env, keys, &body);
        let figure = format!("{key}.cpu");
        let text = format!("{label}: CPU to sign one delivery");
        report.add(SCENARIO, &figure, &text, sign_us, "µs").note(format!(
            "{} B body, one core; opening the {} sealed key(s) costs {open_us:.2} µs once per process (the \
             dispatcher keeps the keys it opened until they are resealed)",
            body.len(),
            keys.count,
        ));
    }
    let mut samples: Vec<Samples> = WAYS.iter().map(|_| Samples::default()).collect();
    for _ in 0..rounds {
        for ((keys, _, _), samples) in WAYS.iter().zip(&mut samples) {
            let plan = Plan {
                keys: *keys,
                ..Plan::healthy("signing", 1, messages)
            };
            samples.push(delivery::run(env, tuning, &plan).await);
        }
    }
    for ((_, key, label), samples) in WAYS.iter().zip(&samples) {
        let text = format!("delivery, 100 endpoints, each signed with {label}");
        samples.report(report, SCENARIO, key, &text);
        if *key != WAYS[0].1 {
            report.ratio(key, WAYS[0].1, "1 HMAC key");
        }
    }
}

/// Microseconds per delivery to sign with `keys`, and to open them from their sealed form (once per key and
/// process: the dispatcher keeps what it opened).
fn cpu_per_delivery(env: &Env, keys: Keys, body: &[u8]) -> (f64, f64) {
    let secrets: Vec<SigningSecret> = (0..keys.count)
        .map(|_| SigningSecret::generate(keys.scheme))
        .collect();
    let sealed: Vec<(String, String)> = secrets
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let id = format!("key_{i}");
            let text = env.ring.seal(&id, s.expose()).expect("seal");
            (id, text)
        })
        .collect();
    let sign = per_iteration(|n| {
        let header = sign_all(&secrets, "msg_01JBENCHMARK", 1_767_225_600 + n as i64, body).expect("sign");
        std::hint::black_box(header);
    });
    let open = per_iteration(|_| {
        for (id, text) in &sealed {
            let opened = env.ring.open(id, text).expect("open");
            std::hint::black_box(SigningSecret::parse(&opened).expect("parse"));
        }
    });
    (sign, open)
}

/// Mean microseconds per call of `f` over [`LOOP`].
fn per_iteration(mut f: impl FnMut(u64)) -> f64 {
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < LOOP {
        for _ in 0..64 {
            f(n);
            n += 1;
        }
    }
    started.elapsed().as_secs_f64() * 1e6 / n as f64
}
