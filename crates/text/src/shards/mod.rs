//! Token shards: the tokenized corpus on disk, as training reads it.
//!
//! A prepared folder holds `train_0000.bin`, `train_0001.bin`, ..., `val_0000.bin`, ...
//! and a `manifest.json` written last (so a folder with a manifest is complete).
//! A shard is a 32-byte little-endian header followed by the token ids:
//!
//! ```text
//! offset  size  field
//!      0     8  magic "FCTOKENS"
//!      8     4  format version (u32, currently 1)
//!     12     2  dtype: bytes per token, 2 (u16 ids) or 4 (u32 ids)
//!     14     2  reserved, zero
//!     16     8  token count (u64)
//!     24     8  reserved, zero
//!     32     -  token ids, little-endian, `count * dtype` bytes
//! ```
//!
//! u16 ids halve the disk and page-cache footprint, so they are used whenever the
//! vocabulary fits (at most 65536 ids). The 32-byte header keeps the ids aligned.

mod reader;
mod writer;

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Result, TextError};

pub use reader::{TokenShards, ValBatches};
pub use writer::ShardWriter;

/// The first bytes of every shard.
pub const MAGIC: &[u8; 8] = b"FCTOKENS";
/// The shard layout this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Bytes before the first token id.
pub const HEADER_LEN: usize = 32;
/// The manifest's file name inside a prepared folder.
pub const MANIFEST_FILE: &str = "manifest.json";

/// How token ids are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    U16,
    U32,
}

impl Dtype {
    /// The narrowest type that holds every id below `vocab_size`.
    pub fn for_vocab(vocab_size: u32) -> Dtype {
        if vocab_size <= 1 << 16 {
            Dtype::U16
        } else {
            Dtype::U32
        }
    }

    /// Bytes per token, which is also the header's dtype code.
    pub fn width(self) -> usize {
        match self {
            Dtype::U16 => 2,
            Dtype::U32 => 4,
        }
    }

    fn from_code(code: u16) -> Option<Dtype> {
        match code {
            2 => Some(Dtype::U16),
            4 => Some(Dtype::U32),
            _ => None,
        }
    }
}

/// The two parts of a prepared corpus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Val,
}

impl Split {
    pub fn as_str(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
        }
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Split {
    type Err = TextError;
    fn from_str(s: &str) -> Result<Split> {
        match s {
            "train" => Ok(Split::Train),
            "val" | "validation" => Ok(Split::Val),
            _ => Err(TextError::InvalidOption(format!(
                "unknown split \"{s}\" (expected \"train\" or \"val\")"
            ))),
        }
    }
}

/// One shard file of a split.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardInfo {
    /// File name inside the prepared folder.
    pub file: String,
    pub tokens: u64,
}

/// What one split holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitInfo {
    pub documents: u64,
    /// Tokens written, the per-document BOS tokens included.
    pub tokens: u64,
    /// UTF-8 bytes of the source text these tokens encode, for bits per byte.
    pub source_bytes: u64,
    pub shards: Vec<ShardInfo>,
}

/// `manifest.json`: what a prepared folder holds and how it was made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format_version: u32,
    pub vocab_size: u32,
    pub dtype: Dtype,
    /// The id prefixed to every document, if any.
    pub bos_id: Option<u32>,
    /// Free-form description of the tokenizer (a path, a name, a hash).
    pub tokenizer: String,
    /// The input paths as given.
    pub inputs: Vec<String>,
    pub documents: u64,
    pub source_bytes: u64,
    pub train: SplitInfo,
    pub val: SplitInfo,
}

impl Manifest {
    pub fn split(&self, split: Split) -> &SplitInfo {
        match split {
            Split::Train => &self.train,
            Split::Val => &self.val,
        }
    }

    /// Reads and checks `dir/manifest.json`.
    pub fn load(dir: &Path) -> Result<Manifest> {
        let path = dir.join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                TextError::Manifest {
                    path: path.clone(),
                    message: "missing: this folder holds no completed token shards (prepare the data first)"
                        .to_string(),
                }
            } else {
                TextError::read(&path, e)
            }
        })?;
        let manifest: Manifest = serde_json::from_str(&text).map_err(|e| TextError::Manifest {
            path: path.clone(),
            message: e.to_string(),
        })?;
        if manifest.format_version != FORMAT_VERSION {
            return Err(TextError::Manifest {
                path,
                message: format!(
                    "format version {}, this build reads version {FORMAT_VERSION}",
                    manifest.format_version
                ),
            });
        }
        Ok(manifest)
    }
}

/// The header fields of one shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Header {
    dtype: Dtype,
    tokens: u64,
}

impl Header {
    fn encode(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[0..8].copy_from_slice(MAGIC);
        h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        h[12..14].copy_from_slice(&(self.dtype.width() as u16).to_le_bytes());
        h[16..24].copy_from_slice(&self.tokens.to_le_bytes());
        h
    }

    /// Parses and checks a header; `file_len` is the whole file's length.
    fn decode(path: &Path, bytes: &[u8], file_len: u64) -> Result<Header> {
        let bad = |message: String| TextError::ShardInvalid {
            path: path.to_path_buf(),
            message,
        };
        if bytes.len() < HEADER_LEN {
            if !MAGIC.starts_with(&bytes[..bytes.len().min(MAGIC.len())]) {
                return Err(bad_magic(path, bytes));
            }
            return Err(bad(format!(
                "truncated token shard: {} bytes, shorter than the {HEADER_LEN}-byte header",
                bytes.len()
            )));
        }
        if &bytes[0..8] != MAGIC {
            return Err(bad_magic(path, bytes));
        }
        let u16_at = |i: usize| u16::from_le_bytes([bytes[i], bytes[i + 1]]);
        let mut word = [0u8; 4];
        word.copy_from_slice(&bytes[8..12]);
        let version = u32::from_le_bytes(word);
        if version != FORMAT_VERSION {
            return Err(TextError::BadVersion {
                path: path.to_path_buf(),
                found: version,
                expected: FORMAT_VERSION,
            });
        }
        let code = u16_at(12);
        let dtype = Dtype::from_code(code).ok_or_else(|| {
            bad(format!(
                "unknown dtype code {code} (expected 2 for u16 or 4 for u32)"
            ))
        })?;
        let mut count = [0u8; 8];
        count.copy_from_slice(&bytes[16..24]);
        let tokens = u64::from_le_bytes(count);
        let expected = tokens
            .checked_mul(dtype.width() as u64)
            .and_then(|b| b.checked_add(HEADER_LEN as u64));
        if expected != Some(file_len) {
            return Err(TextError::ShardLength {
                path: path.to_path_buf(),
                tokens,
                expected: expected.unwrap_or(u64::MAX),
                actual: file_len,
            });
        }
        Ok(Header { dtype, tokens })
    }
}

fn bad_magic(path: &Path, bytes: &[u8]) -> TextError {
    TextError::BadMagic {
        path: path.to_path_buf(),
        found: String::from_utf8_lossy(&bytes[..bytes.len().min(8)]).into_owned(),
    }
}

/// `train_0003.bin` and the like.
fn shard_file_name(split: Split, index: usize) -> String {
    format!("{}_{index:04}.bin", split.as_str())
}

/// Whether `name` is a shard file name this module writes, for clearing stale ones.
fn is_shard_file_name(name: &str) -> bool {
    let Some(stem) = name.strip_suffix(".bin") else {
        return false;
    };
    let digits = stem
        .strip_prefix("train_")
        .or_else(|| stem.strip_prefix("val_"));
    digits.is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
}

/// A manifest's shard name must stay inside the folder.
fn shard_path(dir: &Path, manifest_path: &Path, name: &str) -> Result<PathBuf> {
    let plain = Path::new(name).components().count() == 1
        && matches!(
            Path::new(name).components().next(),
            Some(std::path::Component::Normal(_))
        );
    if !plain {
        return Err(TextError::Manifest {
            path: manifest_path.to_path_buf(),
            message: format!("shard name \"{name}\" is not a plain file name"),
        });
    }
    Ok(dir.join(name))
}
