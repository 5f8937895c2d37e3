//! The tiny gtsegs file of python/fixtures/segtest.py and its reference metrics.
use std::path::{Path, PathBuf};

use super::made;

/// The folder holding `gtsegs.mat` and `expected.json`.
pub fn segtest_fixture() -> PathBuf {
    made("segtest")
}

/// `expected.json`: the reference metrics (percent), the scored image count and the broken entries.
pub fn expected(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap()
}
