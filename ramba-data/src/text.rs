//! Plain-text sources: files → token ids, one EOS after each document.

use std::path::Path;

use anyhow::{Context, Result};

use crate::files::list_files;
use crate::tokenizer::Tokenizer;

/// Extensions picked up when a text source is a folder.
pub const TEXT_EXTENSIONS: [&str; 2] = ["txt", "md"];

/// Tokenizes `path` (a file, or every `*.txt`/`*.md` under a folder, sorted), each file
/// being one document followed by EOS, concatenated. Returns the tokens and the number
/// of documents.
pub(crate) fn load_text(path: &Path, tok: &dyn Tokenizer) -> Result<(Vec<u32>, usize)> {
    let files = list_files(path, &TEXT_EXTENSIONS)?;
    let mut tokens = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f)
            .with_context(|| format!("cannot read text file {} (must be UTF-8)", f.display()))?;
        tokens.extend(tok.encode(&text));
        // EOS marks the document boundary so the model learns not to carry context over.
        tokens.push(tok.eos_id());
    }
    Ok((tokens, files.len()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::TempDir;
    use crate::tokenizer::ByteTokenizer;

    #[test]
    fn documents_are_concatenated_with_eos_in_sorted_order() {
        let d = TempDir::new("text");
        d.write("corpus/b.md", "bé".as_bytes());
        d.write("corpus/a/x.txt", b"hi");
        d.write("corpus/skip.json", b"{}");
        let (t, docs) = load_text(&d.path().join("corpus"), &ByteTokenizer).unwrap();
        assert_eq!(docs, 2);
        let eos = ByteTokenizer::EOS;
        assert_eq!(
            t,
            vec![b'h' as u32, b'i' as u32, eos, b'b' as u32, 0xC3, 0xA9, eos]
        );
    }

    #[test]
    fn errors_name_the_file() {
        let d = TempDir::new("text-bad");
        let p = d.write("latin1.txt", &[0x61, 0xE9, 0x62]);
        let msg = format!("{:#}", load_text(&p, &ByteTokenizer).unwrap_err());
        assert!(msg.contains("latin1.txt") && msg.contains("UTF-8"), "{msg}");
        let msg = format!(
            "{:#}",
            load_text(&d.path().join("gone.txt"), &ByteTokenizer).unwrap_err()
        );
        assert!(msg.contains("gone.txt"), "{msg}");
    }
}
