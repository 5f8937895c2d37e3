//! Atomic file writes: write a uniquely named temporary file beside the target, sync, rename it over the
//! target. A run killed mid-write leaves the previous file (checkpoint, CSV, manifest) intact, never a
//! truncated one, and two writers never share a temporary name.
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The folder a temporary file for `path` goes in: beside it, so the rename stays on one file system.
fn folder(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn named(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("writing {}: {e}", path.display()))
}

/// Writes `bytes` to `path` atomically. Errors name the file.
pub fn write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let result = (|| {
        let mut tmp = tempfile::Builder::new().prefix(".tmp-").tempfile_in(folder(path))?;
        tmp.write_all(bytes)?;
        tmp.as_file().sync_all()?;
        tmp.persist(path).map_err(|e| e.error)?;
        Ok(())
    })();
    result.map_err(|e| named(path, e))
}

/// Lets a writer that only takes a path (e.g. libtorch's safetensors writer) write atomically: it writes
/// to the temporary path given to `produce`, which is then renamed over `path`.
pub fn write_via_path(path: &Path, produce: impl FnOnce(&Path) -> io::Result<()>) -> io::Result<()> {
    let result = (|| {
        let tmp = tempfile::Builder::new().prefix(".tmp-").tempfile_in(folder(path))?.into_temp_path();
        produce(&tmp)?;
        fs::File::open(&tmp)?.sync_all()?;
        tmp.persist(path).map_err(|e| e.error)?;
        Ok(())
    })();
    result.map_err(|e| named(path, e))
}

/// Replaces the folder `dir` with one filled by `fill` (given a fresh temporary folder beside it), so that a
/// reader sees either the old or the new folder whole. A crash between the two renames leaves the old
/// folder at `<dir>.old`, which [`existing_dir`] finds.
pub fn replace_dir(dir: &Path, fill: impl FnOnce(&Path) -> anyhow::Result<()>) -> anyhow::Result<()> {
    let tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempdir_in(folder(dir))
        .map_err(|e| anyhow::anyhow!("creating a folder beside {}: {e}", dir.display()))?;
    // On an error the temporary folder is removed when `tmp` drops.
    fill(tmp.path())?;
    let old = old_path(dir);
    let _ = fs::remove_dir_all(&old);
    if dir.exists() {
        fs::rename(dir, &old).map_err(|e| anyhow::anyhow!("moving {} aside: {e}", dir.display()))?;
    }
    fs::rename(tmp.keep(), dir).map_err(|e| anyhow::anyhow!("moving {} into place: {e}", dir.display()))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_replace_whole_files_and_folders_and_leave_no_temporaries() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.csv");
        write(&file, b"one").unwrap();
        write(&file, b"two").unwrap();
        assert_eq!(fs::read(&file).unwrap(), b"two");
        write_via_path(&file, |tmp| fs::write(tmp, b"three")).unwrap();
        assert_eq!(fs::read(&file).unwrap(), b"three");
        // A failing producer leaves the old file.
        let err = write_via_path(&file, |_| Err(io::Error::other("no"))).unwrap_err();
        assert!(err.to_string().contains("a.csv"), "{err}");
        assert_eq!(fs::read(&file).unwrap(), b"three");

        let run = dir.path().join("best");
        replace_dir(&run, |d| Ok(fs::write(d.join("w"), b"1")?)).unwrap();
        replace_dir(&run, |d| Ok(fs::write(d.join("w"), b"2")?)).unwrap();
        assert!(replace_dir(&run, |_| anyhow::bail!("fill failed")).is_err());
        assert_eq!(fs::read(run.join("w")).unwrap(), b"2");
        let names: Vec<String> =
            fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        let mut names = names;
        names.sort();
        assert_eq!(names, ["a.csv", "best"]);
    }

    #[test]
    fn concurrent_writers_of_one_file_never_collide() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("shared.json");
        std::thread::scope(|s| {
            for t in 0..8 {
                let file = &file;
                s.spawn(move || {
                    for i in 0..50 {
                        write(file, format!("{t}-{i}").repeat(100).as_bytes()).unwrap();
                    }
                });
            }
        });
        // Whichever writer came last, the file holds one writer's whole content.
        let text = fs::read_to_string(&file).unwrap();
        let unit = &text[..text.len() / 100];
        assert_eq!(text, unit.repeat(100));
    }
}
