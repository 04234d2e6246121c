//! Target `verify`: Standard Webhooks verification (`signing::verify_at`), which parses the `webhook-*`
//! headers (the timestamp, and the space-separated `v1,<base64>` signature list) of a request a receiver got.
//!
//! Input, line by line:
//!
//! ```text
//! raw | signed [id|ts|body|sig <index> <xor>]   mode (anything not starting with "signed" is raw)
//! <now> <tolerance> [whsec_…]                   verifier's clock and tolerance (i64), and secret
//! <webhook-id>
//! <webhook-timestamp>
//! <webhook-signature>                           in signed mode: extra candidates put before the real one
//! <body>                                        everything after, newlines included
//! ```
//!
//! A header line that is not UTF-8 is a missing header (what `HeaderValue::to_str` makes of it).
//!
//! Raw mode checks the verdict on arbitrary headers against a model of the Standard Webhooks rules: a
//! missing header is `MissingHeader`; an unparseable or out-of-tolerance timestamp is `Timestamp` (the
//! distance computed without overflow); otherwise it is accepted exactly when `sign` over (id, timestamp,
//! body) is one of the space-separated candidates, byte for byte (so no other encoding of the same tag, and
//! no candidate for another message, gets in).
//!
//! Signed mode signs (id, timestamp, body) with `sign`, checks that the result verifies (amid extra
//! candidates) exactly when the timestamp is within tolerance, then changes one byte of the id, the
//! timestamp, the body or the real signature (`xor` at `index`, modulo the length) and checks that the
//! changed request is rejected.

use webhooks_dispatch::signing::{sign, verify_at, EndpointSecret, VerifyError};

use crate::input::{split_lines, text, words};

/// The secret used when the input names none (or an invalid one): the Standard Webhooks example secret.
const DEFAULT_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const DEFAULT_NOW: i64 = 1_614_265_330;
const DEFAULT_TOLERANCE: i64 = 300;

/// Runs one input through `verify_at` and checks the verdicts; panics on a violated property.
pub fn check(data: &[u8]) {
    let case = Case::decode(data);
    for call in case.calls() {
        if case.overflows(&call) && crate::tolerating_known_findings() {
            // Known::VerifyTimestampOverflow: the call itself would panic inside `verify_at`.
            continue;
        }
        let header = |name: &str| match name {
            "webhook-id" => call.id.as_deref(),
            "webhook-timestamp" => call.timestamp.as_deref(),
            "webhook-signature" => call.signature.as_deref(),
            _ => None,
        };
        let got = verify_at(&case.secret, header, &call.body, case.now, case.tolerance);
        match call.expect {
            Expect::Exactly(want) => assert_eq!(got, want, "{}: verdict on {call:?}", call.what),
            Expect::Rejected => assert!(got.is_err(), "{}: accepted {call:?}", call.what),
        }
    }
}

struct Case<'a> {
    mode: Mode,
    secret: EndpointSecret,
    now: i64,
    tolerance: i64,
    id: &'a [u8],
    timestamp: &'a [u8],
    signature: &'a [u8],
    body: &'a [u8],
}

enum Mode {
    Raw,
    Signed(Option<Mutation>),
}

#[derive(Clone, Copy)]
enum Field {
    Id,
    Timestamp,
    Body,
    Signature,
}

struct Mutation {
    field: Field,
    index: usize,
    xor: u8,
}

/// One `verify_at` call and what it must answer.
#[derive(Debug)]
struct Call {
    what: &'static str,
    id: Option<String>,
    timestamp: Option<String>,
    signature: Option<String>,
    body: Vec<u8>,
    expect: Expect,
}

#[derive(Debug)]
enum Expect {
    Exactly(Result<(), VerifyError>),
    /// Anything but acceptance: a changed byte may break the header's text, its timestamp or the signature.
    Rejected,
}

impl<'a> Case<'a> {
    fn decode(data: &'a [u8]) -> Case<'a> {
        let ([mode, params, id, timestamp, signature], body) = split_lines::<5>(data);
        let [now, tolerance] = words::<i64, 2>(params);
        let secret = text(params)
            .and_then(|p| p.split_ascii_whitespace().nth(2))
            .and_then(|s| EndpointSecret::parse(s).ok())
            .unwrap_or_else(|| EndpointSecret::parse(DEFAULT_SECRET).expect("the default secret is valid"));
        Case {
            mode: Mode::decode(mode),
            secret,
            now: now.unwrap_or(DEFAULT_NOW),
            tolerance: tolerance.unwrap_or(DEFAULT_TOLERANCE),
            id,
            timestamp,
            signature,
            body,
        }
    }

    /// Whether `verify_at` computes `now - timestamp` (or its absolute value) out of `i64`'s range for this
    /// call ([`crate::Known::VerifyTimestampOverflow`]).
    fn overflows(&self, call: &Call) -> bool {
        // The other two headers are looked up first: without them the subtraction is never reached.
        let parsed = call
            .timestamp
            .as_deref()
            .and_then(|ts| ts.trim().parse::<i64>().ok());
        let reached = call.id.is_some() && call.signature.is_some();
        reached && parsed.is_some_and(|ts| self.now.checked_sub(ts).and_then(i64::checked_abs).is_none())
    }

    fn calls(&self) -> Vec<Call> {
        match &self.mode {
            Mode::Raw => vec![self.raw_call()],
            Mode::Signed(mutation) => self.signed_calls(mutation.as_ref()),
        }
    }

    /// The headers as given, judged by the model of the rules.
    fn raw_call(&self) -> Call {
        let (id, timestamp, signature) = (text(self.id), text(self.timestamp), text(self.signature));
        let expect = match (id, timestamp, signature) {
            (Some(id), Some(timestamp), Some(signature)) => match timestamp.trim().parse::<i64>() {
                Ok(ts) if within_tolerance(self.now, ts, self.tolerance) => {
                    let expected = sign(&self.secret, id, ts, self.body).expect("the secret is valid");
                    let listed = signature.split(' ').any(|candidate| candidate == expected);
                    Expect::Exactly(if listed {
                        Ok(())
                    } else {
                        Err(VerifyError::Signature)
                    })
                }
                _ => Expect::Exactly(Err(VerifyError::Timestamp)),
            },
            _ => Expect::Exactly(Err(VerifyError::MissingHeader)),
        };
        Call {
            what: "raw headers",
            id: id.map(str::to_owned),
            timestamp: timestamp.map(str::to_owned),
            signature: signature.map(str::to_owned),
            body: self.body.to_vec(),
            expect,
        }
    }

    /// A correctly signed request, then the same request with one byte changed.
    fn signed_calls(&self, mutation: Option<&Mutation>) -> Vec<Call> {
        let id = String::from_utf8_lossy(self.id).into_owned();
        let ts = text(self.timestamp)
            .and_then(|t| t.trim().parse::<i64>().ok())
            .unwrap_or(self.now);
        let real = sign(&self.secret, &id, ts, self.body).expect("the secret is valid");
        let extras = String::from_utf8_lossy(self.signature);
        let signature = if extras.is_empty() {
            real.clone()
        } else {
            format!("{extras} {real}")
        };
        let timestamp = ts.to_string();
        let expect = if within_tolerance(self.now, ts, self.tolerance) {
            Ok(())
        } else {
            Err(VerifyError::Timestamp)
        };
        let mut calls = vec![Call {
            what: "signed by sign()",
            id: Some(id.clone()),
            timestamp: Some(timestamp.clone()),
            signature: Some(signature.clone()),
            body: self.body.to_vec(),
            expect: Expect::Exactly(expect),
        }];
        if let Some(m) = mutation {
            let (mut id, mut timestamp, mut signature, mut body) = (
                id.into_bytes(),
                timestamp.into_bytes(),
                signature.into_bytes(),
                self.body.to_vec(),
            );
            // Only the real signature is changed: a byte of an extra candidate is irrelevant to the verdict.
            let real_starts = signature.len() - real.len();
            let bytes = match m.field {
                Field::Id => &mut id[..],
                Field::Timestamp => &mut timestamp[..],
                Field::Body => &mut body[..],
                Field::Signature => &mut signature[real_starts..],
            };
            if !bytes.is_empty() {
                let at = m.index % bytes.len();
                bytes[at] ^= m.xor;
                calls.push(Call {
                    what: "one byte changed after signing",
                    id: text(&id).map(str::to_owned),
                    timestamp: text(&timestamp).map(str::to_owned),
                    signature: text(&signature).map(str::to_owned),
                    body,
                    expect: Expect::Rejected,
                });
            }
        }
        calls
    }
}

impl Mode {
    fn decode(line: &[u8]) -> Mode {
        let line = text(line).unwrap_or_default();
        let mut words = line.split_ascii_whitespace();
        if words.next() != Some("signed") {
            return Mode::Raw;
        }
        let field = match words.next() {
            Some("id") => Field::Id,
            Some("ts") => Field::Timestamp,
            Some("body") => Field::Body,
            Some("sig") => Field::Signature,
            _ => return Mode::Signed(None),
        };
        let index = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
        // A zero xor would change nothing; any other value changes the byte.
        let xor = words
            .next()
            .and_then(|w| w.parse().ok())
            .filter(|&x| x != 0)
            .unwrap_or(1);
        Mode::Signed(Some(Mutation { field, index, xor }))
    }
}

/// The Standard Webhooks window, computed in `i128` so no pair of `i64`s can overflow it.
fn within_tolerance(now: i64, timestamp: i64, tolerance: i64) -> bool {
    (i128::from(now) - i128::from(timestamp)).abs() <= i128::from(tolerance)
}
