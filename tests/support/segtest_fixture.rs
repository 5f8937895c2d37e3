//! The tiny gtsegs file of python/fixtures/segtest.py and its reference metrics, made on first use and
//! again whenever the script changes. Include after `timm_fixtures`.
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::timm_fixtures::{fixtures, python, ROOT};

/// The folder holding `gtsegs.mat` and `expected.json`.
pub fn segtest_fixture() -> PathBuf {
    let dir = Path::new(ROOT).join("target/fixtures/segtest");
    let script = Path::new(ROOT).join("python/fixtures/segtest.py");
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    if modified(&dir.join("done")) < modified(&script) {
        let _ = std::fs::remove_dir_all(&dir);
        let status = Command::new(python())
            .arg(&script)
            .arg(fixtures().join("vit_tiny_patch16_224/hub"))
            .arg(&dir)
            .status()
            .unwrap();
        assert!(status.success(), "python/fixtures/segtest.py failed");
    }
    dir
}

/// `expected.json`: the reference metrics (percent), the scored image count and the broken entries.
pub fn expected(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap()
}
