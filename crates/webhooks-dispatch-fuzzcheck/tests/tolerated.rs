//! What a fuzz target does with its corpus at start: every seed, known findings tolerated, passes. So a
//! finding kept in a corpus (which fails `seeds.rs` until its fix is merged) never stops a fuzzing run.
//! A test binary of its own, because tolerating is process-wide.

use webhooks_dispatch_fuzzcheck::{tolerate_known_findings, TARGETS};

#[test]
fn every_seed_passes_with_known_findings_tolerated() {
    tolerate_known_findings();
    let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
    for (target, check) in TARGETS {
        for entry in std::fs::read_dir(corpus.join(target)).expect("a corpus directory") {
            let path = entry.expect("a readable entry").path();
            let data = std::fs::read(&path).expect("a readable seed");
            let outcome = std::panic::catch_unwind(|| check(&data));
            assert!(
                outcome.is_ok(),
                "{target}: {} fails with known findings tolerated",
                path.display()
            );
        }
    }
}
