//! The tiny gtsegs file of python/fixtures/segtest.py and its reference metrics.
use std::path::{Path, PathBuf};

use super::made;

/// The folder holding `gtsegs.mat` and `expected.json`.
pub fn segtest_fixture() -> PathBuf {
    made("segtest")
}

/// `expected.json`: the reference metrics (percent) of the vit_tiny fixture model, the scored image count
/// and the broken entries.
pub fn expected(dir: &Path) -> serde_json::Value {
    read(&dir.join("expected.json"))
}

/// `expected-study.json`: the same of the study tests' model (`super::study_hub`).
pub fn expected_of_study_model(dir: &Path) -> serde_json::Value {
    read(&dir.join("expected-study.json"))
}

fn read(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}
