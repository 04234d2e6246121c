#![no_main]
//! URL rules and address vetting with an injected resolver: input format and properties in
//! `webhooks_dispatch_fuzzcheck::url_vetting`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(
    // Findings already reported (`Known`) must not stop a run from exploring further.
    init: webhooks_dispatch_fuzzcheck::tolerate_known_findings(),
    |data: &[u8]| webhooks_dispatch_fuzzcheck::url_vetting(data)
);
