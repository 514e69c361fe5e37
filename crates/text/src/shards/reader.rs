//! Reads one split of a prepared folder through memory maps: nothing is loaded up
//! front, the page cache holds what training touches, and a corpus larger than
//! memory trains as well as a small one. Also samples training batches.

use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use rand::Rng;

use super::{shard_path, Dtype, Header, Manifest, Split, HEADER_LEN, MANIFEST_FILE};
use crate::error::{Result, TextError};

/// The tokens of one split, as one stream across its shards.
pub struct TokenShards {
    dir: PathBuf,
    split: Split,
    manifest: Manifest,
    dtype: Dtype,
    shards: Vec<Mmap>,
    /// `starts[i]` is the index of shard i's first token; the last entry is the total.
    starts: Vec<u64>,
}

impl TokenShards {
    /// Maps every shard of `split` listed in `dir/manifest.json`, checking each
    /// one's header and length against the manifest.
    pub fn open(dir: &Path, split: Split) -> Result<TokenShards> {
        let manifest = Manifest::load(dir)?;
        let manifest_path = dir.join(MANIFEST_FILE);
        let dtype = manifest.dtype;
        let mut shards = Vec::new();
        let mut starts = vec![0u64];
        for info in &manifest.split(split).shards {
            let path = shard_path(dir, &manifest_path, &info.file)?;
            let file = File::open(&path).map_err(|e| TextError::read(&path, e))?;
            let len = file
                .metadata()
                .map_err(|e| TextError::read(&path, e))?
                .len();
            // SAFETY: the map is read-only, and shards are only ever replaced by
            // rename (never rewritten in place), so the mapped file does not change
            // under us unless someone edits it by hand mid-run.
            let map = unsafe { Mmap::map(&file) }.map_err(|e| TextError::read(&path, e))?;
            let header = Header::decode(&path, &map, len)?;
            let bad = |message: String| TextError::ShardInvalid {
                path: path.clone(),
                message,
            };
            if header.dtype != dtype {
                return Err(bad(format!(
                    "holds {:?} ids but the manifest says {:?}",
                    header.dtype, dtype
                )));
            }
            if header.tokens != info.tokens {
                return Err(bad(format!(
                    "holds {} tokens but the manifest says {} (is it from another run?)",
                    header.tokens, info.tokens
                )));
            }
            let end = starts[starts.len() - 1] + header.tokens;
            starts.push(end);
            shards.push(map);
        }
        Ok(TokenShards {
            dir: dir.to_path_buf(),
            split,
            manifest,
            dtype,
            shards,
            starts,
        })
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    pub fn split(&self) -> Split {
        self.split
    }

    /// Tokens in the split.
    pub fn len(&self) -> u64 {
        self.starts[self.starts.len() - 1]
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Source-text bytes per token in this split: multiply a loss in bits per
    /// token by its inverse to get bits per byte. Zero for an empty split.
    pub fn bytes_per_token(&self) -> f64 {
        let info = self.manifest.split(self.split);
        if info.tokens == 0 {
            0.0
        } else {
            info.source_bytes as f64 / info.tokens as f64
        }
    }

    /// The token at `index`, or `None` past the end.
    pub fn get(&self, index: u64) -> Option<u32> {
        if index >= self.len() {
            return None;
        }
        let shard = self.starts.partition_point(|&s| s <= index) - 1;
        let at = HEADER_LEN + (index - self.starts[shard]) as usize * self.dtype.width();
        let bytes = self.shards[shard].get(at..at + self.dtype.width())?;
        Some(decode_one(self.dtype, bytes))
    }

    /// Appends tokens `start..start + len` to `out`, across shard boundaries.
    pub fn read(&self, start: u64, len: usize, out: &mut Vec<u32>) -> Result<()> {
        let end = start.checked_add(len as u64).filter(|&e| e <= self.len());
        let Some(end) = end else {
            return Err(TextError::OutOfRange {
                split: self.split.to_string(),
                start,
                end: start.saturating_add(len as u64),
                len: self.len(),
            });
        };
        self.copy_range(start, end, out);
        Ok(())
    }

    /// Appends `start..end`, which the caller has checked lies inside the split.
    fn copy_range(&self, mut start: u64, end: u64, out: &mut Vec<u32>) {
        out.reserve((end - start) as usize);
        let w = self.dtype.width();
        while start < end {
            let shard = self.starts.partition_point(|&s| s <= start) - 1;
            let Some(map) = self.shards.get(shard) else {
                return;
            };
            let stop = end.min(self.starts[shard + 1]);
            let from = HEADER_LEN + (start - self.starts[shard]) as usize * w;
            let to = HEADER_LEN + (stop - self.starts[shard]) as usize * w;
            let Some(bytes) = map.get(from..to) else {
                return;
            };
            match self.dtype {
                Dtype::U16 => out.extend(
                    bytes
                        .chunks_exact(2)
                        .map(|c| u16::from_le_bytes([c[0], c[1]]) as u32),
                ),
                Dtype::U32 => out.extend(
                    bytes
                        .chunks_exact(4)
                        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])),
                ),
            }
            start = stop;
        }
    }

    /// Fails unless the split holds one window of `seq + 1` tokens.
    fn check_window(&self, batch: usize, seq: usize) -> Result<()> {
        if batch == 0 || seq == 0 {
            return Err(TextError::InvalidOption(
                "batch size and sequence length must be positive".to_string(),
            ));
        }
        if self.len() < seq as u64 + 1 {
            return Err(TextError::TooFewTokens {
                dir: self.dir.clone(),
                split: self.split.to_string(),
                tokens: self.len(),
                needed: seq as u64 + 1,
            });
        }
        Ok(())
    }

    /// `batch` windows of `seq + 1` tokens at uniformly random offsets: the
    /// inputs are each window's first `seq` tokens, the targets its last `seq`
    /// (the next token at every position). Both are `batch * seq` long, row-major.
    pub fn random_batch(
        &self,
        rng: &mut impl Rng,
        batch: usize,
        seq: usize,
    ) -> Result<(Vec<u32>, Vec<u32>)> {
        self.random_batch_part(rng, batch, seq, 0..batch)
    }

    /// Rows `part` of the batch [`TokenShards::random_batch`] would draw: the random
    /// stream advances over all `batch` rows, but only these are read. Data-parallel
    /// ranks each take their own part of one global batch this way.
    pub fn random_batch_part(
        &self,
        rng: &mut impl Rng,
        batch: usize,
        seq: usize,
        part: std::ops::Range<usize>,
    ) -> Result<(Vec<u32>, Vec<u32>)> {
        self.check_window(batch, seq)?;
        let last_start = self.len() - seq as u64 - 1;
        let mut inputs = Vec::with_capacity(part.len() * seq);
        let mut targets = Vec::with_capacity(part.len() * seq);
        let mut window = Vec::with_capacity(seq + 1);
        for row in 0..batch {
            let start = rng.random_range(0..=last_start);
            if !part.contains(&row) {
                continue;
            }
            window.clear();
            self.copy_range(start, start + seq as u64 + 1, &mut window);
            inputs.extend_from_slice(&window[..seq]);
            targets.extend_from_slice(&window[1..]);
        }
        Ok((inputs, targets))
    }

    /// The split in order as batches of non-overlapping windows (window `i`
    /// predicts tokens `i*seq + 1 ..= (i+1)*seq`), for evaluation that sees each
    /// token once. The last batch may hold fewer than `batch` rows, so a small
    /// split still yields one; `max_batches` caps the count.
    pub fn val_batches(
        &self,
        batch: usize,
        seq: usize,
        max_batches: Option<usize>,
    ) -> Result<ValBatches<'_>> {
        self.check_window(batch, seq)?;
        let windows = (self.len() - 1) / seq as u64;
        Ok(ValBatches {
            shards: self,
            batch,
            seq,
            next_window: 0,
            windows,
            batches_left: max_batches.unwrap_or(usize::MAX),
        })
    }
}

/// Iterator of `(inputs, targets)` from [`TokenShards::val_batches`].
pub struct ValBatches<'a> {
    shards: &'a TokenShards,
    batch: usize,
    seq: usize,
    next_window: u64,
    windows: u64,
    batches_left: usize,
}

impl Iterator for ValBatches<'_> {
    type Item = (Vec<u32>, Vec<u32>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.batches_left == 0 || self.next_window >= self.windows {
            return None;
        }
        self.batches_left -= 1;
        let rows = (self.windows - self.next_window).min(self.batch as u64) as usize;
        let seq = self.seq;
        let mut inputs = Vec::with_capacity(rows * seq);
        let mut targets = Vec::with_capacity(rows * seq);
        let mut window = Vec::with_capacity(seq + 1);
        for _ in 0..rows {
            let start = self.next_window * seq as u64;
            window.clear();
            self.shards
                .copy_range(start, start + seq as u64 + 1, &mut window);
            inputs.extend_from_slice(&window[..seq]);
            targets.extend_from_slice(&window[1..]);
            self.next_window += 1;
        }
        Some((inputs, targets))
    }
}

fn decode_one(dtype: Dtype, bytes: &[u8]) -> u32 {
    match dtype {
        Dtype::U16 => u16::from_le_bytes([bytes[0], bytes[1]]) as u32,
        Dtype::U32 => u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]),
    }
}
