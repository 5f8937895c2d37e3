//! What the tests share: the repository's paths, fixtures made by the scripts in python/fixtures/ (once,
//! whatever the number of test threads and processes asking), and scratch folders.
pub mod imagenet_s;
pub mod rollout;
pub mod segtest;

use std::fs::{self, File};
use std::hash::Hasher;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository (this test target belongs to the harness crate, one folder down).
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("harness/ lies in the repository")
}

/// The harness binary built for these tests.
pub const HARNESS: &str = env!("CARGO_BIN_EXE_harness");

pub fn python() -> PathBuf {
    root().join(".venv/bin/python")
}

/// `target/fixtures/<name>`: the folder `python/fixtures/<script> <args...> <folder>` writes. Made once:
/// under an exclusive lock on `target/fixtures/.<name>.lock` (it holds across threads and test processes),
/// into a temporary folder that is renamed into place when the script has succeeded, with a stamp of what
/// made it. It is remade when a script of python/fixtures/ (they import each other), the Python environment
/// (scripts/requirements.txt and constraints.txt) or the arguments change.
pub fn fixture(script: &str, name: &str, args: &[&str]) -> PathBuf {
    let base = root().join("target/fixtures");
    let dir = base.join(name);
    let script = root().join("python/fixtures").join(script);
    let want = stamp(&script, args);
    let current = |dir: &Path| fs::read_to_string(dir.join(STAMP)).is_ok_and(|s| s == want);
    if current(&dir) {
        return dir;
    }
    fs::create_dir_all(&base).unwrap();
    let lock = File::create(base.join(format!(".{name}.lock"))).unwrap();
    lock.lock().unwrap();
    // Another thread or process may have made it while this one waited.
    if current(&dir) {
        return dir;
    }
    let tmp = base.join(format!(".{name}.tmp"));
    let _ = fs::remove_dir_all(&tmp);
    let status = Command::new(python()).arg(&script).args(args).arg(&tmp).status().expect("run python");
    assert!(status.success(), "{} failed", script.display());
    fs::write(tmp.join(STAMP), &want).unwrap();
    let old = base.join(format!(".{name}.old"));
    let _ = fs::remove_dir_all(&old);
    if dir.exists() {
        fs::rename(&dir, &old).unwrap();
    }
    fs::rename(&tmp, &dir).unwrap();
    let _ = fs::remove_dir_all(&old);
    dir
}

const STAMP: &str = ".stamp";

/// What a fixture depends on, hashed: the script and the others of its folder, the Python environment's
/// pins and the arguments.
fn stamp(script: &Path, args: &[&str]) -> String {
    let mut h = std::hash::DefaultHasher::new();
    let folder = script.parent().expect("a script lies in python/fixtures");
    let mut scripts: Vec<PathBuf> = fs::read_dir(folder)
        .unwrap_or_else(|e| panic!("{}: {e}", folder.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "py"))
        .collect();
    scripts.sort();
    h.write(script.file_name().unwrap().as_encoded_bytes());
    let pins = [root().join("scripts/requirements.txt"), root().join("scripts/constraints.txt")];
    for file in scripts.iter().chain(&pins) {
        h.write(&fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display())));
    }
    for arg in args {
        h.write(arg.as_bytes());
    }
    format!("{:016x}", h.finish())
}

/// `target/fixtures/python/<name>`, one of the fixtures python/fixtures/all.py makes from fixed recipes, all
/// in one Python process (importing torch and timm costs about 8 s of a core each time; the set takes about
/// 25 s): timm, eval, segtest, explain-reference, known-relevance, pickles, pil-goldens,
/// segmentation-metrics, tokencut, each written by the script of that name.
pub fn made(name: &str) -> PathBuf {
    let dir = fixture("all.py", "python", &[]).join(name);
    assert!(dir.is_dir(), "python/fixtures/all.py made no {}", dir.display());
    dir
}

/// Checkpoints, inputs and outputs made with the .venv's timm (python/fixtures/timm_models.py).
pub fn timm() -> PathBuf {
    made("timm")
}

/// The timm hub folder of the fixture model `name` (vit_tiny_patch16_224, deit_tiny_patch16_224, custom).
pub fn hub(name: &str) -> PathBuf {
    timm().join(name).join("hub")
}

/// The timm hub folder of the study tests' model: vit_tiny at 64 px (17 tokens), 1000 classes. A study's
/// orchestration (plans, resumes, shards, tables) is what those tests check, and it runs the same at any size.
pub fn study_hub() -> PathBuf {
    hub("vit_tiny_64px")
}

/// The largest change of any weight between two checkpoints (`.safetensors`) with the same keys and shapes.
pub fn max_weight_change(a: &Path, b: &Path) -> f64 {
    let read = |p: &Path| {
        let mut named = tch::Tensor::read_safetensors(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        named.sort_by(|x, y| x.0.cmp(&y.0));
        named
    };
    let (a, b) = (read(a), read(b));
    assert_eq!(a.iter().map(|t| &t.0).collect::<Vec<_>>(), b.iter().map(|t| &t.0).collect::<Vec<_>>());
    a.iter().zip(&b).map(|((_, x), (_, y))| (x - y).abs().max().double_value(&[])).fold(0.0, f64::max)
}

/// An empty `target/test-tmp/<name>`.
pub fn scratch(name: &str) -> PathBuf {
    let dir = root().join("target/test-tmp").join(name);
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}
