#![no_main]
//! The service's configuration file loader: input format and properties in
//! `webhooks_dispatch_fuzzcheck::config`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(
    // Findings already reported (`Known`) must not stop a run from exploring further.
    init: webhooks_dispatch_fuzzcheck::tolerate_known_findings(),
    |data: &[u8]| webhooks_dispatch_fuzzcheck::config(data)
);
