//! Tokenizers: a dependency-free byte-level one and a wrapper around Hugging Face
//! `tokenizer.json` files, behind one object-safe trait so the pipeline, trainer and
//! evaluator never care which is in use.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, Context, Result};

/// Text ↔ token ids. `Send + Sync` so one tokenizer can be shared (via `Arc`) by a data
/// thread and the evaluator.
pub trait Tokenizer: Send + Sync {
    /// Token ids of `text`, without any special tokens (no BOS/EOS): callers decide where
    /// document boundaries go.
    fn encode(&self, text: &str) -> Vec<u32>;
    /// Text of `ids`; special tokens (EOS) are skipped and invalid UTF-8 is replaced.
    fn decode(&self, ids: &[u32]) -> String;
    /// Number of distinct ids: every id this tokenizer produces is `< vocab_size()`.
    fn vocab_size(&self) -> usize;
    /// The end-of-document id appended after each text document.
    fn eos_id(&self) -> u32;
    /// Short human-readable name for logs and error messages.
    fn name(&self) -> String;
}

/// Lets `Arc<dyn Tokenizer>` sit in `Debug` structs and `Result`s.
impl std::fmt::Debug for dyn Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokenizer({})", self.name())
    }
}

/// Ids 0..=255 are the UTF-8 bytes, 256 is EOS. Needs no files, so it is the default and
/// what the synthetic tasks are calibrated against (one character = one token).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ByteTokenizer;

impl ByteTokenizer {
    /// The end-of-document id.
    pub const EOS: u32 = 256;
    /// Number of ids: 256 bytes + EOS.
    pub const VOCAB_SIZE: usize = 257;
}

impl Tokenizer for ByteTokenizer {
    fn encode(&self, text: &str) -> Vec<u32> {
        text.bytes().map(u32::from).collect()
    }

    fn decode(&self, ids: &[u32]) -> String {
        // Anything that is not a byte (EOS, or an out-of-range id a model sampled) is
        // dropped rather than failing, so generated text can always be shown.
        let bytes: Vec<u8> = ids.iter().filter_map(|&id| u8::try_from(id).ok()).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    fn vocab_size(&self) -> usize {
        Self::VOCAB_SIZE
    }

    fn eos_id(&self) -> u32 {
        Self::EOS
    }

    fn name(&self) -> String {
        "byte".to_string()
    }
}

/// Special tokens tried, in order, as the end-of-document id of a Hugging Face tokenizer.
pub const EOS_CANDIDATES: [&str; 4] = ["<|endoftext|>", "</s>", "<eos>", "<|end_of_text|>"];

/// A Hugging Face `tokenizer.json` (GPT-2, Llama, ... style BPE, WordLevel, ...).
pub struct HfTokenizer {
    inner: tokenizers::Tokenizer,
    eos: u32,
    vocab: usize,
    path: PathBuf,
}

impl std::fmt::Debug for HfTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HfTokenizer")
            .field("path", &self.path)
            .field("eos", &self.eos)
            .field("vocab", &self.vocab)
            .finish()
    }
}

impl HfTokenizer {
    /// Loads `path` (a `tokenizer.json`) and finds its EOS among [`EOS_CANDIDATES`].
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        if !path.is_file() {
            anyhow::bail!("tokenizer file {} does not exist", path.display());
        }
        let inner = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| anyhow!("cannot load tokenizer {}: {e}", path.display()))?;
        let eos = EOS_CANDIDATES
            .iter()
            .find_map(|t| inner.token_to_id(t))
            .ok_or_else(|| {
                anyhow!(
                    "tokenizer {} has none of the end-of-text tokens {:?}, so documents \
                     cannot be separated",
                    path.display(),
                    EOS_CANDIDATES
                )
            })?;
        // Ids can be sparse (added tokens placed past the base vocab), so the embedding
        // table must cover the largest id, not just the number of entries.
        let max_id = inner.get_vocab(true).values().copied().max().unwrap_or(0);
        let vocab = inner.get_vocab_size(true).max(max_id as usize + 1);
        Ok(Self {
            inner,
            eos,
            vocab,
            path: path.to_path_buf(),
        })
    }

    /// Like [`Tokenizer::encode`] but reports the (rare) tokenizer errors instead of
    /// returning an empty sequence.
    pub fn try_encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| anyhow!("tokenizer {}: cannot encode text: {e}", self.path.display()))?;
        Ok(enc.get_ids().to_vec())
    }

    /// The file this tokenizer was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Tokenizer for HfTokenizer {
    fn encode(&self, text: &str) -> Vec<u32> {
        // The trait is infallible so generation loops stay simple; HF encoding only fails
        // for misconfigured truncation/padding, which we report loudly.
        match self.try_encode(text) {
            Ok(ids) => ids,
            Err(e) => {
                eprintln!("warning: {e:#}");
                Vec::new()
            }
        }
    }

    fn decode(&self, ids: &[u32]) -> String {
        match self.inner.decode(ids, true) {
            Ok(s) => s,
            Err(e) => {
                eprintln!(
                    "warning: tokenizer {}: cannot decode: {e}",
                    self.path.display()
                );
                String::new()
            }
        }
    }

    fn vocab_size(&self) -> usize {
        self.vocab
    }

    fn eos_id(&self) -> u32 {
        self.eos
    }

    fn name(&self) -> String {
        format!("hf:{}", self.path.display())
    }
}

/// `"byte"` → [`ByteTokenizer`]; anything else is the path of a `tokenizer.json`
/// (relative paths resolve against the current directory).
pub fn load_tokenizer(spec: &str) -> Result<Arc<dyn Tokenizer>> {
    load_tokenizer_in(spec, Path::new("."))
}

/// Like [`load_tokenizer`], but a relative path resolves against `base_dir` (the
/// directory of the experiment config), matching how data source paths resolve.
pub fn load_tokenizer_in(spec: &str, base_dir: &Path) -> Result<Arc<dyn Tokenizer>> {
    let spec = spec.trim();
    if spec.is_empty() {
        anyhow::bail!("data.tokenizer is empty: use \"byte\" or a path to a tokenizer.json");
    }
    if spec == "byte" {
        return Ok(Arc::new(ByteTokenizer));
    }
    let path = base_dir.join(spec);
    let tok =
        HfTokenizer::from_file(&path).with_context(|| format!("data.tokenizer = {spec:?}"))?;
    Ok(Arc::new(tok))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::TempDir;

    #[test]
    fn byte_roundtrip_including_non_ascii() {
        let tok = ByteTokenizer;
        let text = "héllo wörld — 日本語 🦀";
        let ids = tok.encode(text);
        assert_eq!(ids.len(), text.len(), "one id per UTF-8 byte");
        assert!(ids.iter().all(|&i| i < 256));
        assert_eq!(tok.decode(&ids), text);
        assert_eq!(tok.vocab_size(), 257);
        assert_eq!(tok.eos_id(), 256);
    }

    #[test]
    fn byte_decode_skips_eos_and_is_lossy() {
        let tok = ByteTokenizer;
        let mut ids = tok.encode("ab");
        ids.push(ByteTokenizer::EOS);
        ids.extend(tok.encode("c"));
        assert_eq!(tok.decode(&ids), "abc");
        // A lone continuation byte is not valid UTF-8: replaced, not a panic.
        assert_eq!(tok.decode(&[0x61, 0x80, 0x62]), "a\u{FFFD}b");
    }

    /// A WordLevel tokenizer.json small enough to write by hand.
    pub(crate) const WORD_LEVEL_JSON: &str = r#"{
      "version": "1.0",
      "truncation": null,
      "padding": null,
      "added_tokens": [
        {"id": 0, "content": "<|endoftext|>", "single_word": false, "lstrip": false,
         "rstrip": false, "normalized": false, "special": true}
      ],
      "normalizer": null,
      "pre_tokenizer": {"type": "Whitespace"},
      "post_processor": null,
      "decoder": null,
      "model": {"type": "WordLevel",
                "vocab": {"<|endoftext|>": 0, "[UNK]": 1, "hello": 2, "world": 3, "the": 4},
                "unk_token": "[UNK]"}
    }"#;

    #[test]
    fn hf_word_level_from_file() {
        let dir = TempDir::new("hf-wordlevel");
        let path = dir.write("tokenizer.json", WORD_LEVEL_JSON.as_bytes());
        let tok = HfTokenizer::from_file(&path).unwrap();
        assert_eq!(tok.eos_id(), 0);
        assert_eq!(tok.vocab_size(), 5);
        assert_eq!(tok.encode("hello world the"), vec![2, 3, 4]);
        assert_eq!(tok.encode("hello zebra"), vec![2, 1]);
        assert_eq!(tok.decode(&[2, 0, 3]), "hello world", "EOS is skipped");
        assert!(tok.name().contains("tokenizer.json"));

        // Through the spec loader too, with a path relative to a base dir.
        let via_spec = load_tokenizer_in("tokenizer.json", dir.path()).unwrap();
        assert_eq!(via_spec.encode("world"), vec![3]);
    }

    #[test]
    fn hf_without_eos_is_an_error_naming_the_file() {
        let dir = TempDir::new("hf-noeos");
        let json = WORD_LEVEL_JSON.replace("<|endoftext|>", "<pad>");
        let path = dir.write("noeos.json", json.as_bytes());
        let err = HfTokenizer::from_file(&path).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("noeos.json"), "{msg}");
        assert!(msg.contains("end-of-text"), "{msg}");
    }

    #[test]
    fn load_tokenizer_errors_name_the_path() {
        assert_eq!(load_tokenizer("byte").unwrap().name(), "byte");
        let err = load_tokenizer("/nonexistent/dir/tok.json").unwrap_err();
        assert!(format!("{err:#}").contains("/nonexistent/dir/tok.json"));
        let dir = TempDir::new("hf-garbage");
        let path = dir.write("bad.json", b"{ not json");
        let err = HfTokenizer::from_file(&path).unwrap_err();
        assert!(format!("{err:#}").contains("bad.json"));
        assert!(load_tokenizer("  ").is_err());
    }
}
