//! Checkpoints and outputs made by the .venv's timm (python/fixtures/timm_models.py), shared by the test
//! binaries; made on first use, and again whenever the script changes. Also the tests' scratch folders.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

pub const ROOT: &str = env!("CARGO_MANIFEST_DIR");

pub fn python() -> PathBuf {
    Path::new(ROOT).join(".venv/bin/python")
}

pub fn fixture_script() -> PathBuf {
    Path::new(ROOT).join("python/fixtures/timm_models.py")
}

/// The fixture folder, made on first use (about 15 s). Test binaries run one after another, so only the
/// threads of one binary race here, and the OnceLock serialises them.
pub fn fixtures() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = Path::new(ROOT).join("target/fixtures/timm");
        let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        if modified(&dir.join("done")) < modified(&fixture_script()) {
            let status = Command::new(python()).arg(fixture_script()).arg("make").arg(&dir).status().expect("run python");
            assert!(status.success(), "python/fixtures/timm_models.py make failed");
        }
        dir
    })
}

/// `target/fixtures/<name>`, made by `python/fixtures/<script> <args...> <dir>` on first use and again
/// whenever the script changes; the script writes `<dir>/done` last.
#[allow(dead_code)] // not every test binary that includes this file has such a fixture
pub fn script_fixture(script: &str, name: &str, args: &[&Path]) -> PathBuf {
    let dir = Path::new(ROOT).join("target/fixtures").join(name);
    let script = Path::new(ROOT).join("python/fixtures").join(script);
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    if modified(&dir.join("done")) < modified(&script) {
        let _ = std::fs::remove_dir_all(&dir);
        let status = Command::new(python()).arg(&script).args(args).arg(&dir).status().expect("run python");
        assert!(status.success(), "{} failed", script.display());
    }
    dir
}

/// An empty `target/test-tmp/<name>`.
#[allow(dead_code)] // not every test binary that includes this file needs one
pub fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(ROOT).join("target/test-tmp").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
