//! Atomic file writes: write beside the target, sync, rename over it. A run killed mid-write leaves the
//! previous file (checkpoint, CSV, manifest) intact, never a truncated one.
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

fn temp_path(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// Writes `path` through `fill`, atomically. Errors name the file.
pub fn write_with(path: &Path, fill: impl FnOnce(&mut BufWriter<File>) -> io::Result<()>) -> io::Result<()> {
    let tmp = temp_path(path);
    let result = (|| {
        let mut out = BufWriter::new(File::create(&tmp)?);
        fill(&mut out)?;
        out.flush()?;
        out.get_ref().sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(|e| io::Error::new(e.kind(), format!("writing {}: {e}", path.display())))
}

/// Writes `bytes` to `path` atomically.
pub fn write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_with(path, |out| out.write_all(bytes))
}

/// Lets a writer that only takes a path (e.g. libtorch's safetensors writer) write atomically: it writes
/// to the temporary path given to `produce`, which is then renamed over `path`.
pub fn write_via_path(path: &Path, produce: impl FnOnce(&Path) -> io::Result<()>) -> io::Result<()> {
    let tmp = temp_path(path);
    let result = produce(&tmp).and_then(|_| File::open(&tmp)?.sync_all()).and_then(|_| fs::rename(&tmp, path));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(|e| io::Error::new(e.kind(), format!("writing {}: {e}", path.display())))
}

/// Replaces the folder `dir` with one filled by `fill` (given a fresh temporary folder beside it), so that a
/// reader sees either the old or the new folder whole. A crash between the two renames leaves the old
/// folder at `<dir>.old`, which [`existing_dir`] finds.
pub fn replace_dir(dir: &Path, fill: impl FnOnce(&Path) -> anyhow::Result<()>) -> anyhow::Result<()> {
    let tmp = temp_path(dir);
    let old = old_path(dir);
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp).map_err(|e| anyhow::anyhow!("creating {}: {e}", tmp.display()))?;
    if let Err(e) = fill(&tmp) {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    let _ = fs::remove_dir_all(&old);
    if dir.exists() {
        fs::rename(dir, &old).map_err(|e| anyhow::anyhow!("moving {} aside: {e}", dir.display()))?;
    }
    fs::rename(&tmp, dir).map_err(|e| anyhow::anyhow!("moving {} into place: {e}", dir.display()))?;
    let _ = fs::remove_dir_all(&old);
    Ok(())
}

fn old_path(dir: &Path) -> PathBuf {
    let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    dir.with_file_name(format!("{name}.old"))
}

/// `dir`, or the previous version [`replace_dir`] left aside if a crash interrupted the swap.
pub fn existing_dir(dir: &Path) -> Option<PathBuf> {
    [dir.to_path_buf(), old_path(dir)].into_iter().find(|p| p.is_dir())
}
