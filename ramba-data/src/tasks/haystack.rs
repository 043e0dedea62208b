//! Haystacks read from files (essays, books) instead of the passkey filler: a file, or every
//! text file of a folder, split into sentences that the needle tasks repeat and cut to any
//! length, with the set of words they contain so that needles can avoid them.

use std::collections::HashSet;
use std::path::Path;

use anyhow::{bail, Context, Result};

use super::prompt::Filler;
use crate::files::list_files;
use crate::text::TEXT_EXTENSIONS;
use crate::tokenizer::Tokenizer;

/// Longest run of words kept as one sentence. Needles go between sentences, so text without
/// sentence ends (lists, code) is cut into pieces of this many words to leave places for them.
pub const MAX_SENTENCE_WORDS: usize = 48;

/// The text of a haystack as sentences, each with a leading space (so, like the filler
/// pieces, they tokenize the same wherever the haystack is cut; see the `prompt` module).
/// Whitespace (line breaks included) collapses to single spaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HaystackText {
    label: String,
    sentences: Vec<String>,
    words: HashSet<String>,
}

impl HaystackText {
    /// Reads `path`: a file (whatever its extension), or every `*.txt` / `*.md` file under a
    /// folder, sorted, concatenated. Errors name the file: a missing path, a binary file
    /// (NUL bytes), text that is not UTF-8, and a haystack with no text at all.
    pub fn load(path: &Path) -> Result<Self> {
        let files = list_files(path, &TEXT_EXTENSIONS)
            .with_context(|| format!("haystack {}", path.display()))?;
        let mut sentences = Vec::new();
        for f in &files {
            let bytes = std::fs::read(f)
                .with_context(|| format!("cannot read haystack file {}", f.display()))?;
            if bytes.contains(&0) {
                bail!(
                    "haystack file {} is binary (it holds NUL bytes); give a text file",
                    f.display()
                );
            }
            let text = String::from_utf8(bytes).map_err(|e| {
                anyhow::anyhow!(
                    "haystack file {} is not UTF-8 text (invalid byte at offset {})",
                    f.display(),
                    e.utf8_error().valid_up_to()
                )
            })?;
            sentences.extend(split_sentences(&text));
        }
        Self::from_sentences(sentences, path.display().to_string())
    }

    /// A haystack of `text`; `label` names it in errors.
    pub fn from_text(text: &str, label: impl Into<String>) -> Result<Self> {
        Self::from_sentences(split_sentences(text), label.into())
    }

    fn from_sentences(sentences: Vec<String>, label: String) -> Result<Self> {
        if sentences.is_empty() {
            bail!("haystack {label} holds no text (only whitespace or nothing)");
        }
        let words = sentences.iter().flat_map(|s| haystack_words(s)).collect();
        Ok(Self {
            label,
            sentences,
            words,
        })
    }

    /// Where the text came from (the path given to [`HaystackText::load`]).
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The sentences, in order, each starting with a space.
    pub fn sentences(&self) -> &[String] {
        &self.sentences
    }

    /// Whether `word` occurs in the text as a word, ignoring case. Words are maximal runs of
    /// letters, digits and hyphens, and each hyphen-separated part of them, so `"1,024"`
    /// holds `1` and `024`, and `"well-known"` holds `well-known`, `well` and `known`.
    pub fn contains_word(&self, word: &str) -> bool {
        self.words.contains(&word.to_lowercase())
    }

    /// Exactly `n` tokens of the haystack from sentence `first` on (modulo the sentence
    /// count): repeated from the start when the text is shorter, cut at token level when
    /// longer. This is what the needle tasks read.
    pub fn tokens(&self, tok: &dyn Tokenizer, n: usize, first: usize) -> Result<Vec<u32>> {
        Ok(self.filler(tok)?.take(n, first).0)
    }

    /// The sentences tokenized, for the task generators.
    pub(crate) fn filler(&self, tok: &dyn Tokenizer) -> Result<Filler> {
        Filler::from_sentences(tok, &self.sentences, &format!("haystack {}", self.label))
    }
}

/// `text` as sentences with a leading space each: a sentence ends at a word ending in `.`,
/// `!` or `?` (closing quotes and brackets after it allowed), or after
/// [`MAX_SENTENCE_WORDS`] words.
pub(crate) fn split_sentences(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur: Vec<&str> = Vec::new();
    for w in text.split_whitespace() {
        cur.push(w);
        let end = w
            .trim_end_matches(['"', '\'', ')', ']', '”', '’'])
            .ends_with(['.', '!', '?']);
        if end || cur.len() == MAX_SENTENCE_WORDS {
            out.push(format!(" {}", cur.join(" ")));
            cur.clear();
        }
    }
    if !cur.is_empty() {
        out.push(format!(" {}", cur.join(" ")));
    }
    out
}

/// The words of `s` in the sense of [`HaystackText::contains_word`], lowercased.
pub(crate) fn haystack_words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    for piece in s.split(|c: char| !(c.is_alphanumeric() || c == '-')) {
        let piece = piece.trim_matches('-');
        if piece.is_empty() {
            continue;
        }
        let lower = piece.to_lowercase();
        if lower.contains('-') {
            out.extend(
                lower
                    .split('-')
                    .filter(|p| !p.is_empty())
                    .map(str::to_owned),
            );
        }
        out.push(lower);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::TempDir;
    use crate::tokenizer::ByteTokenizer;

    #[test]
    fn sentences_split_at_ends_and_long_runs() {
        let s = split_sentences("Hello there.  How are\nyou? \"Fine!\" she said (really.) end");
        assert_eq!(
            s,
            vec![
                " Hello there.",
                " How are you?",
                " \"Fine!\"",
                " she said (really.)",
                " end"
            ]
        );
        let long = "w ".repeat(MAX_SENTENCE_WORDS + 3);
        let s = split_sentences(&long);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].split_whitespace().count(), MAX_SENTENCE_WORDS);
        assert!(split_sentences(" \n\t ").is_empty());
    }

    #[test]
    fn words_include_compounds_and_their_parts() {
        let h = HaystackText::from_text("A well-known Fact: 1,024 items cost $7.", "t").unwrap();
        for w in [
            "well-known",
            "well",
            "known",
            "fact",
            "FACT",
            "1",
            "024",
            "7",
            "a",
        ] {
            assert!(h.contains_word(w), "{w}");
        }
        for w in ["1024", "wellknown", "kno", "cost7", "$7"] {
            assert!(!h.contains_word(w), "{w}");
        }
    }

    #[test]
    fn files_of_every_size() {
        let tok = ByteTokenizer;
        let d = TempDir::new("hay");
        // Empty and whitespace-only files are errors naming the file.
        let empty = d.write("empty.txt", b"");
        let msg = format!("{:#}", HaystackText::load(&empty).unwrap_err());
        assert!(
            msg.contains("empty.txt") && msg.contains("no text"),
            "{msg}"
        );
        let blank = d.write("blank.txt", b" \n\n ");
        assert!(HaystackText::load(&blank).is_err());
        // Shorter than needed: repeated from the start, cut at the end.
        let short = d.write("short.txt", b"One two.\nThree.");
        let h = HaystackText::load(&short).unwrap();
        assert_eq!(h.sentences(), [" One two.", " Three."]);
        let t = tok.decode(&h.tokens(&tok, 40, 0).unwrap());
        assert_eq!(t, " One two. Three. One two. Three. One two");
        assert_eq!(t.len(), 40);
        // From another sentence on, wrapping around.
        let t = tok.decode(&h.tokens(&tok, 12, 1).unwrap());
        assert_eq!(t, " Three. One ");
        // Longer than needed: cut, nothing repeated.
        let long_text = "Sentence number one. Sentence number two. Sentence number three.";
        let long = d.write("long.md", long_text.as_bytes());
        let h = HaystackText::load(&long).unwrap();
        let t = tok.decode(&h.tokens(&tok, 30, 0).unwrap());
        assert_eq!(t, " Sentence number one. Sentence");
        // Exactly as long as the text: the text itself.
        let t = tok.decode(&h.tokens(&tok, long_text.len() + 1, 0).unwrap());
        assert_eq!(t, format!(" {long_text}"));
        assert!(h.tokens(&tok, 0, 0).unwrap().is_empty());
    }

    #[test]
    fn folders_read_every_text_file_sorted() {
        let tok = ByteTokenizer;
        let d = TempDir::new("hay-dir");
        d.write("essays/b.txt", b"Second file.");
        d.write("essays/a/inner.md", b"First file.");
        d.write("essays/notes.json", b"{\"not\": \"text\"}");
        let h = HaystackText::load(&d.path().join("essays")).unwrap();
        assert_eq!(h.sentences(), [" First file.", " Second file."]);
        assert!(!h.contains_word("not"), "non-text files are skipped");
        assert_eq!(
            tok.decode(&h.tokens(&tok, 25, 0).unwrap()),
            " First file. Second file."
        );
        let msg = format!(
            "{:#}",
            HaystackText::load(&d.path().join("missing")).unwrap_err()
        );
        assert!(
            msg.contains("missing") && msg.contains("does not exist"),
            "{msg}"
        );
    }

    #[test]
    fn binary_and_non_utf8_files_are_errors_naming_the_file() {
        let d = TempDir::new("hay-bin");
        let bin = d.write("dir/model.txt", &[0x7f, b'E', b'L', b'F', 0, 0, 1]);
        let msg = format!("{:#}", HaystackText::load(&bin).unwrap_err());
        assert!(msg.contains("model.txt") && msg.contains("binary"), "{msg}");
        // Also inside a folder, with good files next to it.
        d.write("dir/a.txt", b"Fine text.");
        let msg = format!(
            "{:#}",
            HaystackText::load(&d.path().join("dir")).unwrap_err()
        );
        assert!(msg.contains("model.txt") && msg.contains("binary"), "{msg}");
        let latin1 = d.write("latin1.txt", &[b'c', b'a', b'f', 0xE9, b'.']);
        let msg = format!("{:#}", HaystackText::load(&latin1).unwrap_err());
        assert!(msg.contains("latin1.txt") && msg.contains("UTF-8"), "{msg}");
        assert!(msg.contains("offset 3"), "{msg}");
    }
}
