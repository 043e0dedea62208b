//! Expanding a source path (file or folder) into a sorted file list.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// `path` itself if it is a file (whatever its extension), else every file under the
/// folder `path`, recursively, whose extension is one of `exts`, sorted so the
/// concatenation order (and hence every batch) is the same on every machine. Hidden
/// entries (".git", editor backups) and symlinked folders are skipped.
pub(crate) fn list_files(path: &Path, exts: &[&str]) -> Result<Vec<PathBuf>> {
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    if !path.is_dir() {
        bail!("path {} does not exist", path.display());
    }
    let mut out = Vec::new();
    walk(path, exts, &mut out)?;
    if out.is_empty() {
        let pattern: Vec<String> = exts.iter().map(|e| format!("*.{e}")).collect();
        bail!(
            "folder {} contains no {} files",
            path.display(),
            pattern.join(" or ")
        );
    }
    out.sort();
    Ok(out)
}

fn walk(dir: &Path, exts: &[&str], out: &mut Vec<PathBuf>) -> Result<()> {
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("cannot list folder {}", dir.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot list folder {}", dir.display()))?;
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        let ty = entry
            .file_type()
            .with_context(|| format!("cannot stat {}", path.display()))?;
        if ty.is_dir() {
            walk(&path, exts, out)?;
        } else if (ty.is_file() || (ty.is_symlink() && path.is_file()))
            && path
                .extension()
                .is_some_and(|e| exts.iter().any(|x| e.eq_ignore_ascii_case(x)))
        {
            out.push(path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::TempDir;

    #[test]
    fn lists_matching_files_recursively_sorted() {
        let d = TempDir::new("files");
        d.write("b.txt", b"");
        d.write("a/z.md", b"");
        d.write("a/y.TXT", b"");
        d.write("c.bin", b"");
        d.write(".hidden/x.txt", b"");
        let got = list_files(d.path(), &["txt", "md"]).unwrap();
        let rel: Vec<String> = got
            .iter()
            .map(|p| p.strip_prefix(d.path()).unwrap().display().to_string())
            .collect();
        assert_eq!(rel, vec!["a/y.TXT", "a/z.md", "b.txt"]);
        // A file is taken as is, whatever its extension.
        let single = list_files(&d.path().join("c.bin"), &["txt"]).unwrap();
        assert_eq!(single, vec![d.path().join("c.bin")]);
    }

    #[test]
    fn errors_name_the_path() {
        let d = TempDir::new("files-err");
        let missing = d.path().join("nope");
        let msg = format!("{:#}", list_files(&missing, &["txt"]).unwrap_err());
        assert!(
            msg.contains("nope") && msg.contains("does not exist"),
            "{msg}"
        );
        d.write("x.md", b"");
        let msg = format!("{:#}", list_files(d.path(), &["bin"]).unwrap_err());
        assert!(
            msg.contains("*.bin") && msg.contains(&d.path().display().to_string()),
            "{msg}"
        );
    }
}
