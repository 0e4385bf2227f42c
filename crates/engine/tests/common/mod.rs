//! Paths to shared test data, with failures that say what is missing.

#![allow(dead_code)]

use std::path::PathBuf;

/// `../shared/assets/<rel>` beside the checkout; panics naming the path when absent.
pub fn shared(rel: &str) -> PathBuf {
    let p = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/assets")).join(rel);
    assert!(p.exists(), "missing shared test data {} (tests need ../shared/assets beside the checkout)", p.display());
    p
}

/// `reference/<rel>` in the repository; panics naming the path when absent.
pub fn reference(rel: &str) -> PathBuf {
    let p = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../reference")).join(rel);
    assert!(p.exists(), "missing reference data {} (made by scripts/make_reference_checkpoints.py)", p.display());
    p
}
