#![no_main]
//! Retry-After parsing: input format and properties in
//! `webhooks_dispatch_fuzzcheck::retry_after`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(
    // Findings already reported (`Known`) must not stop a run from exploring further.
    init: webhooks_dispatch_fuzzcheck::tolerate_known_findings(),
    |data: &[u8]| webhooks_dispatch_fuzzcheck::retry_after(data)
);
