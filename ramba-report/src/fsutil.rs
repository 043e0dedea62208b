//! Small filesystem helpers shared by the writers: parent-directory creation and atomic writes.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// Creates the parent directory of `path` (and its ancestors) if it does not exist yet.
pub(crate) fn ensure_parent_dir(path: &Path) -> Result<()> {
    if let Some(parent) = path.parent() {
        // `Path::new("a.png").parent()` is `Some("")`; create_dir_all("") is a no-op.
        fs::create_dir_all(parent)
            .with_context(|| format!("creating directory {}", parent.display()))?;
    }
    Ok(())
}

/// The temporary sibling used by [`write_atomic`]: same directory, so the final rename never
/// crosses filesystems; hidden and tagged with the process id so concurrent writers of
/// different processes do not clobber each other's half-written files.
fn temp_sibling(path: &Path) -> Result<PathBuf> {
    let Some(name) = path.file_name() else {
        bail!("{} does not name a file", path.display());
    };
    let tmp_name = format!(".{}.tmp-{}", name.to_string_lossy(), std::process::id());
    Ok(path.with_file_name(tmp_name))
}

/// Writes `bytes` to `path` atomically: readers (a user refreshing a chart during training, a
/// resumed run reading its metrics) see either the old file or the complete new one, never a
/// half-written one. Parent directories are created.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    ensure_parent_dir(path)?;
    let tmp = temp_sibling(path)?;
    fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    if let Err(e) = fs::rename(&tmp, path) {
        // Best effort: do not leave the temporary file behind; the rename error is what matters.
        let _ = fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;

    #[test]
    fn write_atomic_creates_parents_and_replaces() {
        let dir = TempDir::new("fsutil");
        let path = dir.path().join("a/b/c.txt");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        // No temporary files are left next to the result.
        let names: Vec<_> = fs::read_dir(path.parent().unwrap()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn write_atomic_under_a_regular_file_names_the_path() {
        let dir = TempDir::new("fsutil");
        let file = dir.path().join("plain");
        fs::write(&file, b"x").unwrap();
        let err = write_atomic(&file.join("sub/out.txt"), b"y").unwrap_err();
        assert!(format!("{err:#}").contains("plain"), "{err:#}");
    }
}
