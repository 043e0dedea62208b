//! Small filesystem helpers shared by the writers: parent-directory creation and atomic writes.

use std::fs;
use std::io::Write;
use std::path::Path;

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

/// Writes `bytes` to `path` atomically: readers (a user refreshing a chart during training, a
/// resumed run reading its metrics) see either the old file or the complete new one, never a
/// half-written one. Parent directories are created. The temporary file (`tempfile`) sits in the
/// same directory, so the final rename never crosses filesystems, and is removed if anything
/// fails.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    ensure_parent_dir(path)?;
    if path.file_name().is_none() {
        bail!("{} does not name a file", path.display());
    }
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".ramba-")
        .suffix(".tmp")
        .tempfile_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    tmp.write_all(bytes)
        .with_context(|| format!("writing {}", tmp.path().display()))?;
    // tempfile creates its files private (0600); results and plots are meant to be shared
    // like any file written with `fs::write`.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(fs::Permissions::from_mode(0o644))
            .with_context(|| format!("setting permissions of {}", tmp.path().display()))?;
    }
    tmp.persist(path)
        .map_err(|e| e.error)
        .with_context(|| format!("renaming a temporary file to {}", path.display()))?;
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
