//! The fuzz targets' seed corpora as ordinary tests: every file of `fuzz/corpus/<target>/` goes through the
//! same check function the fuzz target calls, so the properties hold on stable for every seed, and an input a
//! fuzzer once broke (saved into the corpus) stays fixed.

use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use webhooks_dispatch_fuzzcheck::TARGETS;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

/// Runs every seed of `target`, reporting all that fail (by file name) rather than stopping at the first.
fn run_seeds(target: &str) {
    let (_, check) = TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .expect("a known target");
    let dir = fuzz_dir().join("corpus").join(target);
    let mut seeds: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("a readable directory entry").path())
        .collect();
    seeds.sort();
    assert!(!seeds.is_empty(), "{} has no seeds", dir.display());
    let failed: Vec<String> = seeds
        .iter()
        .filter(|seed| {
            let data = std::fs::read(seed).expect("a readable seed");
            panic::catch_unwind(AssertUnwindSafe(|| check(&data))).is_err()
        })
        .map(|seed| seed.file_name().expect("a file").to_string_lossy().into_owned())
        .collect();
    assert!(
        failed.is_empty(),
        "{target}: seeds failing their properties: {failed:?}"
    );
}

#[test]
fn verify_seeds_hold_signature_properties() {
    run_seeds("verify");
}

#[test]
fn url_vetting_seeds_hold_ssrf_properties() {
    run_seeds("url_vetting");
}

#[test]
fn retry_after_seeds_hold_parse_properties() {
    run_seeds("retry_after");
}

#[test]
fn config_seeds_hold_loader_properties() {
    run_seeds("config");
}

#[test]
fn every_target_has_a_fuzz_binary_and_a_corpus() {
    let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).expect("fuzz/Cargo.toml");
    for (target, _) in TARGETS {
        assert!(
            fuzz_dir()
                .join("fuzz_targets")
                .join(format!("{target}.rs"))
                .is_file(),
            "{target}"
        );
        assert!(
            manifest.contains(&format!("name = \"{target}\"")),
            "{target} not in fuzz/Cargo.toml"
        );
        assert!(
            fuzz_dir().join("corpus").join(target).is_dir(),
            "{target} has no corpus"
        );
    }
}
