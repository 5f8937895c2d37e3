//! The tiny gtsegs file of python/fixtures/segtest.py and its reference metrics. Include after
//! `timm_fixtures`.
use std::path::{Path, PathBuf};

use crate::timm_fixtures::{fixtures, script_fixture};

/// The folder holding `gtsegs.mat` and `expected.json`.
pub fn segtest_fixture() -> PathBuf {
    script_fixture("segtest.py", "segtest", &[&fixtures().join("vit_tiny_patch16_224/hub")])
}

/// `expected.json`: the reference metrics (percent), the scored image count and the broken entries.
pub fn expected(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap()
}
