//! Pre-tokenized shard files, memory-mapped so corpora larger than RAM cost nothing to
//! open and random windows only touch the pages they read.
//!
//! Two layouts are accepted, told apart by the first 4 bytes:
//! - llm.c: a 1024-byte header of 256 little-endian i32 (`[magic, version, n_tokens,
//!   …]`), magic 20240520 for u16 tokens (GPT-2) or 20240801 for u32 (Llama 3), then the
//!   tokens;
//! - raw (nanoGPT's `train.bin`): a bare little-endian array of the configured dtype.
//!
//! A raw u16 file starting with the magic would need ids 54696 and 308 in a row: both
//! above GPT-2's vocab, so the sniffing cannot misfire on GPT-2 data.
//!
//! A raw file carries no dtype, so a wrong `dtype` is caught by what it does to the ids:
//! - u32 tokens read as u16: every id < 65 536 becomes (id, 0), so every second u16 is zero.
//!   [`Shard::open`] refuses a raw u16 file whose head has zeros at (nearly) all odd
//!   positions but not at the even ones (real text almost never repeats token 0 like that);
//! - u16 tokens read as u32: two ids fuse into `a + 65536·b`, far above any vocabulary, which
//!   the vocabulary check ([`ShardSet::check_vocab`]) reports. A file whose size is not a
//!   multiple of 4 is refused outright.

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use memmap2::Mmap;

use crate::config::ShardDtype;
use crate::files::list_files;

/// Magic number of llm.c shards holding u16 tokens.
pub const LLMC_MAGIC_U16: i32 = 20_240_520;
/// Magic number of llm.c shards holding u32 tokens.
pub const LLMC_MAGIC_U32: i32 = 20_240_801;
/// Size of the llm.c header in bytes.
pub const LLMC_HEADER_BYTES: usize = 1024;

/// One memory-mapped file.
struct Shard {
    path: PathBuf,
    map: Mmap,
    /// Byte offset of token 0 (the header size, or 0 for raw files).
    data_offset: usize,
    /// Bytes per token.
    width: usize,
    /// Number of tokens.
    len: usize,
}

impl Shard {
    fn open(path: &Path, dtype: ShardDtype) -> Result<Self> {
        let file =
            File::open(path).with_context(|| format!("cannot open shard {}", path.display()))?;
        let size = file
            .metadata()
            .with_context(|| format!("cannot stat shard {}", path.display()))?
            .len() as usize;
        if size == 0 {
            bail!("shard {} is empty", path.display());
        }
        // SAFETY: the map is read-only; like every mmap-based loader we rely on nobody
        // truncating the file while training runs (that would fault, not corrupt).
        let map = unsafe { Mmap::map(&file) }
            .with_context(|| format!("cannot memory-map shard {}", path.display()))?;
        // Windows are read at random offsets: read-ahead would only waste I/O.
        #[cfg(unix)]
        let _ = map.advise(memmap2::Advice::Random);

        let header_word = |i: usize| {
            i32::from_le_bytes([map[4 * i], map[4 * i + 1], map[4 * i + 2], map[4 * i + 3]])
        };
        let magic = if size >= LLMC_HEADER_BYTES {
            header_word(0)
        } else {
            0
        };
        let (data_offset, width, len) = match magic {
            LLMC_MAGIC_U16 | LLMC_MAGIC_U32 => {
                let header_dtype = if magic == LLMC_MAGIC_U16 {
                    ShardDtype::U16
                } else {
                    ShardDtype::U32
                };
                if header_dtype != dtype {
                    bail!(
                        "shard {} has an llm.c header (magic {magic}) for {} tokens, but the \
                         source's dtype is \"{}\"",
                        path.display(),
                        header_dtype,
                        dtype
                    );
                }
                let n = header_word(2);
                let width = header_dtype.width();
                let expected = usize::try_from(n)
                    .ok()
                    .and_then(|n| n.checked_mul(width))
                    .and_then(|b| b.checked_add(LLMC_HEADER_BYTES));
                if expected != Some(size) {
                    bail!(
                        "shard {}: llm.c header says {n} tokens of {width} bytes \
                         ({LLMC_HEADER_BYTES}-byte header), but the file has {size} bytes",
                        path.display()
                    );
                }
                (LLMC_HEADER_BYTES, width, n as usize)
            }
            _ => {
                let width = dtype.width();
                if !size.is_multiple_of(width) {
                    bail!(
                        "shard {} has {size} bytes, not a multiple of {width} ({} tokens)",
                        path.display(),
                        dtype
                    );
                }
                let len = size / width;
                if dtype == ShardDtype::U16 {
                    looks_like_u32(&map, len).map_err(|why| {
                        anyhow::anyhow!(
                            "shard {} is read as dtype = \"u16\" but looks like u32 tokens \
                             ({why}); set dtype = \"u32\" for this source",
                            path.display()
                        )
                    })?;
                }
                (0, width, len)
            }
        };
        Ok(Self {
            path: path.to_path_buf(),
            map,
            data_offset,
            width,
            len,
        })
    }

    fn token(&self, i: usize) -> u32 {
        let o = self.data_offset + i * self.width;
        let b = &self.map[o..o + self.width];
        if self.width == 2 {
            u32::from(u16::from_le_bytes([b[0], b[1]]))
        } else {
            u32::from_le_bytes([b[0], b[1], b[2], b[3]])
        }
    }
}

/// Tokens of a raw u16 file's head inspected by [`looks_like_u32`].
const SNIFF_TOKENS: usize = 1 << 16;

/// `Err(why)` when the head of a raw u16 file (`len` tokens in `bytes`) has the signature of
/// little-endian u32 ids below 65 536: zero at ≥ 95% of the odd positions, and not at most of
/// the even ones. Too short a file (< 64 tokens) is not judged.
fn looks_like_u32(bytes: &[u8], len: usize) -> std::result::Result<(), String> {
    let n = len.min(SNIFF_TOKENS) / 2 * 2;
    if n < 64 {
        return Ok(());
    }
    let zero = |i: usize| bytes[2 * i] == 0 && bytes[2 * i + 1] == 0;
    let odd = (1..n).step_by(2).filter(|&i| zero(i)).count();
    let even = (0..n).step_by(2).filter(|&i| zero(i)).count();
    let pairs = n / 2;
    if odd * 100 >= pairs * 95 && even * 2 <= pairs {
        return Err(format!(
            "{odd} of the first {pairs} odd-position u16 values are 0, against {even} of the \
             even ones"
        ));
    }
    Ok(())
}

/// The shards of one source, read as one concatenated token stream.
pub(crate) struct ShardSet {
    shards: Vec<Shard>,
    /// Global index of each shard's first token.
    starts: Vec<usize>,
    len: usize,
}

impl ShardSet {
    /// Opens `path` (a file, or a folder searched recursively for `*.bin`).
    pub(crate) fn open(path: &Path, dtype: ShardDtype) -> Result<Self> {
        let mut shards = Vec::new();
        let mut starts = Vec::new();
        let mut len = 0usize;
        for p in list_files(path, &["bin"])? {
            let s = Shard::open(&p, dtype)?;
            starts.push(len);
            len += s.len;
            shards.push(s);
        }
        Ok(Self {
            shards,
            starts,
            len,
        })
    }

    /// Total tokens over all shards.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Number of files.
    pub(crate) fn n_files(&self) -> usize {
        self.shards.len()
    }

    /// Scans a sample of every shard (its head, its tail and 16 chunks between) for ids
    /// `>= vocab`: the usual causes, a wrong dtype or another tokenizer's shards, show up
    /// everywhere, and a full scan of a multi-GB corpus would delay every start.
    pub(crate) fn check_vocab(&self, vocab: usize, tokenizer: &str) -> Result<()> {
        const EDGE: usize = 1 << 16;
        const CHUNK: usize = 1 << 12;
        const CHUNKS: usize = 16;
        for s in &self.shards {
            let mut ranges = vec![0..s.len.min(EDGE), s.len.saturating_sub(EDGE)..s.len];
            for k in 1..=CHUNKS {
                let a = s.len / (CHUNKS + 1) * k;
                ranges.push(a..(a + CHUNK).min(s.len));
            }
            for r in ranges {
                for i in r {
                    let id = s.token(i);
                    if id as usize >= vocab {
                        bail!(
                            "shard {}: token id {id} at index {i} is >= the vocab size {vocab} \
                             of tokenizer {tokenizer} (wrong dtype, or shards made with another \
                             tokenizer?)",
                            s.path.display()
                        );
                    }
                }
            }
        }
        Ok(())
    }

    /// Copies tokens `[start, start + out.len())` into `out` (may span files). Ids
    /// `>= vocab` are replaced by `eos` (an out-of-range id would crash the embedding
    /// lookup on the GPU) and the first is described in the returned message.
    pub(crate) fn read(
        &self,
        start: usize,
        out: &mut [u32],
        vocab: usize,
        eos: u32,
    ) -> Option<String> {
        let mut problem = None;
        let mut g = start;
        let mut filled = 0;
        while filled < out.len() {
            // The last shard whose first token is <= g.
            let f = self.starts.partition_point(|&s| s <= g) - 1;
            let s = &self.shards[f];
            let local = g - self.starts[f];
            let n = (s.len - local).min(out.len() - filled);
            for k in 0..n {
                let id = s.token(local + k);
                out[filled + k] = if (id as usize) < vocab {
                    id
                } else {
                    problem.get_or_insert_with(|| {
                        format!(
                            "shard {}: token id {id} at index {} is >= the vocab size {vocab}",
                            s.path.display(),
                            local + k
                        )
                    });
                    eos
                };
            }
            filled += n;
            g += n;
        }
        problem
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::test_util::TempDir;

    pub(crate) fn raw_u16(tokens: &[u32]) -> Vec<u8> {
        tokens
            .iter()
            .flat_map(|&t| (t as u16).to_le_bytes())
            .collect()
    }

    pub(crate) fn raw_u32(tokens: &[u32]) -> Vec<u8> {
        tokens.iter().flat_map(|&t| t.to_le_bytes()).collect()
    }

    pub(crate) fn llmc(magic: i32, tokens: &[u32]) -> Vec<u8> {
        let mut header = [0i32; 256];
        header[0] = magic;
        header[1] = if magic == LLMC_MAGIC_U16 { 1 } else { 7 };
        header[2] = tokens.len() as i32;
        let mut out: Vec<u8> = header.iter().flat_map(|w| w.to_le_bytes()).collect();
        out.extend(if magic == LLMC_MAGIC_U16 {
            raw_u16(tokens)
        } else {
            raw_u32(tokens)
        });
        out
    }

    fn read_all(set: &ShardSet) -> Vec<u32> {
        let mut out = vec![0; set.len()];
        assert_eq!(set.read(0, &mut out, usize::MAX, 0), None);
        out
    }

    #[test]
    fn raw_and_llmc_u16_read_back_exactly() {
        let d = TempDir::new("shards16");
        let a: Vec<u32> = (0..1000).map(|i| (i * 7) % 50_000).collect();
        let b: Vec<u32> = (0..500).map(|i| 65_535 - i).collect();
        d.write("data/000_raw.bin", &raw_u16(&a));
        d.write("data/001_llmc.bin", &llmc(LLMC_MAGIC_U16, &b));
        d.write("data/notes.txt", b"ignored");
        let set = ShardSet::open(&d.path().join("data"), ShardDtype::U16).unwrap();
        assert_eq!((set.len(), set.n_files()), (1500, 2));
        let all = read_all(&set);
        assert_eq!(&all[..1000], &a[..]);
        assert_eq!(&all[1000..], &b[..], "header skipped, tokens exact");
        // A window across the file boundary.
        let mut w = vec![0; 10];
        assert_eq!(set.read(995, &mut w, usize::MAX, 0), None);
        assert_eq!(&w[..5], &a[995..]);
        assert_eq!(&w[5..], &b[..5]);
    }

    #[test]
    fn raw_and_llmc_u32_read_back_exactly() {
        let d = TempDir::new("shards32");
        let a: Vec<u32> = (0..300).map(|i| 100_000 + i * 1000).collect();
        let p = d.write("one.bin", &raw_u32(&a));
        let set = ShardSet::open(&p, ShardDtype::U32).unwrap();
        assert_eq!(read_all(&set), a);
        let p = d.write("llmc.bin", &llmc(LLMC_MAGIC_U32, &a));
        let set = ShardSet::open(&p, ShardDtype::U32).unwrap();
        assert_eq!(read_all(&set), a);
    }

    #[test]
    fn malformed_shards_are_named() {
        let d = TempDir::new("shards-bad");
        let p = d.write("odd.bin", &[1, 2, 3]);
        let msg = format!("{:#}", ShardSet::open(&p, ShardDtype::U16).err().unwrap());
        assert!(
            msg.contains("odd.bin") && msg.contains("multiple of 2"),
            "{msg}"
        );
        let p = d.write("empty.bin", &[]);
        let msg = format!("{:#}", ShardSet::open(&p, ShardDtype::U16).err().unwrap());
        assert!(msg.contains("empty.bin") && msg.contains("empty"), "{msg}");
        let mut bytes = llmc(LLMC_MAGIC_U16, &[1, 2, 3]);
        bytes.truncate(bytes.len() - 2);
        let p = d.write("short.bin", &bytes);
        let msg = format!("{:#}", ShardSet::open(&p, ShardDtype::U16).err().unwrap());
        assert!(
            msg.contains("short.bin") && msg.contains("header says 3 tokens"),
            "{msg}"
        );
        let p = d.write("mismatch.bin", &llmc(LLMC_MAGIC_U32, &[1, 2, 3]));
        let msg = format!("{:#}", ShardSet::open(&p, ShardDtype::U16).err().unwrap());
        assert!(
            msg.contains("mismatch.bin") && msg.contains("u32 tokens"),
            "{msg}"
        );
    }

    #[test]
    fn u32_tokens_read_as_u16_are_refused() {
        let d = TempDir::new("shards-width");
        // GPT-2-like ids written as u32: as u16 every second value is 0.
        let toks: Vec<u32> = (0..5000).map(|i| 1 + (i * 7919) % 50_000).collect();
        let p = d.write("u32.bin", &raw_u32(&toks));
        let msg = format!("{:#}", ShardSet::open(&p, ShardDtype::U16).err().unwrap());
        assert!(
            msg.contains("u32.bin") && msg.contains("dtype = \"u32\""),
            "{msg}"
        );
        // Read with the right dtype it opens and reads back exactly.
        assert_eq!(
            read_all(&ShardSet::open(&p, ShardDtype::U32).unwrap()),
            toks
        );
        // Real u16 data with some zero ids (token 0 is "!" in GPT-2) is not mistaken for it.
        let mut toks16 = toks.clone();
        for i in (1..toks16.len()).step_by(4) {
            toks16[i] = 0;
        }
        let p = d.write("u16.bin", &raw_u16(&toks16));
        assert_eq!(
            read_all(&ShardSet::open(&p, ShardDtype::U16).unwrap()),
            toks16
        );
        // u16 tokens read as u32 fuse pairs into ids far above the vocabulary.
        let p = d.write("u16as32.bin", &raw_u16(&toks[..4000]));
        let set = ShardSet::open(&p, ShardDtype::U32).unwrap();
        let msg = format!("{:#}", set.check_vocab(50_257, "gpt2").unwrap_err());
        assert!(msg.contains("wrong dtype"), "{msg}");
    }

    #[test]
    fn vocab_violations_name_the_file() {
        let d = TempDir::new("shards-vocab");
        let mut toks: Vec<u32> = vec![5; 100_000];
        toks[70_000] = 300; // inside a sampled chunk? not necessarily: also check `read`
        toks[99_999] = 300; // in the tail, which is always sampled
        let p = d.write("gpt2.bin", &raw_u16(&toks));
        let set = ShardSet::open(&p, ShardDtype::U16).unwrap();
        let msg = format!("{:#}", set.check_vocab(257, "byte").unwrap_err());
        assert!(
            msg.contains("gpt2.bin") && msg.contains("300") && msg.contains("257"),
            "{msg}"
        );
        set.check_vocab(301, "wide").unwrap();
        // Lazy check: the bad id is replaced by EOS and reported with the file.
        let mut w = vec![0; 4];
        let problem = set.read(69_998, &mut w, 257, 256).unwrap();
        assert_eq!(w, vec![5, 5, 256, 5]);
        assert!(
            problem.contains("gpt2.bin") && problem.contains("70000"),
            "{problem}"
        );
    }
}
