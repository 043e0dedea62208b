//! Helpers shared by the unit tests: unique temporary folders and tokenizers built in
//! memory (no downloads).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::tokenizer::Tokenizer;

/// A fresh folder under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!(
            "ramba-data-{tag}-{}-{}-{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        Self(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Writes `bytes` to `rel` (creating parent folders) and returns the full path.
    pub fn write(&self, rel: &str, bytes: &[u8]) -> PathBuf {
        let p = self.0.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("create parent");
        }
        std::fs::write(&p, bytes).expect("write temp file");
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Byte tokenizer with a wide vocabulary, so pre-tokenized shards may hold large ids.
pub struct WideTokenizer(pub usize);

impl Tokenizer for WideTokenizer {
    fn encode(&self, text: &str) -> Vec<u32> {
        text.bytes().map(u32::from).collect()
    }
    fn decode(&self, ids: &[u32]) -> String {
        let b: Vec<u8> = ids.iter().filter_map(|&i| u8::try_from(i).ok()).collect();
        String::from_utf8_lossy(&b).into_owned()
    }
    fn vocab_size(&self) -> usize {
        self.0
    }
    fn eos_id(&self) -> u32 {
        (self.0 - 1) as u32
    }
    fn name(&self) -> String {
        format!("wide{}", self.0)
    }
}

/// GPT-2's byte → printable char table used by ByteLevel BPE vocabularies.
fn bytes_to_unicode() -> Vec<char> {
    let mut direct: Vec<u32> = ('!' as u32..='~' as u32)
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    let mut table = vec!['\0'; 256];
    for &b in &direct {
        table[b as usize] = char::from_u32(b).expect("latin-1 char");
    }
    let mut n = 0;
    for b in 0..256u32 {
        if !direct.contains(&b) {
            table[b as usize] = char::from_u32(256 + n).expect("shifted char");
            n += 1;
            direct.push(b);
        }
    }
    table
}

fn json_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// A GPT-2 style ByteLevel BPE `tokenizer.json`: every byte is a token (ids 0..=255),
/// `<|endoftext|>` is 256, and merges build "The" / "ĠThe" so multi-byte tokens occur.
pub fn byte_level_bpe_json() -> String {
    let table = bytes_to_unicode();
    let mut vocab: Vec<String> = table.iter().map(|c| c.to_string()).collect();
    vocab.push("<|endoftext|>".into());
    vocab.extend(["Th", "The", "ĠThe"].map(String::from));
    let vocab_json: Vec<String> = vocab
        .iter()
        .enumerate()
        .map(|(i, t)| format!("\"{}\": {i}", json_escape(t)))
        .collect();
    format!(
        r#"{{
  "version": "1.0", "truncation": null, "padding": null,
  "added_tokens": [{{"id": 256, "content": "<|endoftext|>", "single_word": false,
     "lstrip": false, "rstrip": false, "normalized": false, "special": true}}],
  "normalizer": null,
  "pre_tokenizer": {{"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}},
  "post_processor": null,
  "decoder": {{"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}},
  "model": {{"type": "BPE", "dropout": null, "unk_token": null,
    "continuing_subword_prefix": null, "end_of_word_suffix": null,
    "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
    "vocab": {{{}}},
    "merges": ["T h", "Th e", "Ġ The"]}}
}}"#,
        vocab_json.join(", ")
    )
}
