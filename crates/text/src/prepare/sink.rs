//! Where each tokenized document goes: the seeded train/val draw, and the
//! holding back of trailing train documents that lets a tiny corpus still get a
//! val split (see [`super::prepare`]).

use std::collections::VecDeque;

use super::{PrepareOptions, ProgressInfo};
use crate::corpus::Source;
use crate::error::{Result, TextError};
use crate::shards::{Manifest, ShardWriter, Split};

/// Held-back train tokens are capped so that a huge corpus whose val stays
/// empty (a tiny `val_fraction`) cannot grow memory without bound.
const MAX_HOLDBACK_TOKENS: u64 = 1 << 26;

/// Decides each document's split and feeds the shard writer, holding back the
/// trailing train documents while val is still empty (see [`prepare`]).
pub(super) struct Sink {
    writer: ShardWriter,
    vocab_size: u32,
    bos_id: Option<u32>,
    val_fraction: f64,
    seed: u64,
    /// Trailing train documents not yet written: (tokens, source bytes).
    held: VecDeque<(Vec<u32>, u64)>,
    held_tokens: u64,
    pub(super) progress: ProgressInfo,
}

impl Sink {
    pub(super) fn new(writer: ShardWriter, opts: &PrepareOptions) -> Sink {
        Sink {
            writer,
            vocab_size: opts.vocab_size,
            bos_id: opts.bos_id,
            val_fraction: opts.val_fraction,
            seed: opts.seed,
            held: VecDeque::new(),
            held_tokens: 0,
            progress: ProgressInfo::default(),
        }
    }

    pub(super) fn add(
        &mut self,
        index: u64,
        source: &Source,
        ids: Vec<u32>,
        source_bytes: u64,
    ) -> Result<()> {
        if let Some(&id) = ids.iter().find(|&&id| id >= self.vocab_size) {
            return Err(TextError::TokenOutOfRange {
                id,
                vocab_size: self.vocab_size,
                source_doc: source.to_string(),
            });
        }
        let tokens = match self.bos_id {
            Some(bos) => {
                let mut t = Vec::with_capacity(ids.len() + 1);
                t.push(bos);
                t.extend_from_slice(&ids);
                t
            }
            None => ids,
        };
        self.progress.documents += 1;
        self.progress.source_bytes += source_bytes;
        self.progress.tokens += tokens.len() as u64;
        if goes_to_val(self.seed, index, self.val_fraction) {
            // Val exists now, so the held documents are train for good.
            self.flush_held()?;
            return self
                .writer
                .write_document(Split::Val, &tokens, source_bytes);
        }
        let val_empty = self.writer.split_info(Split::Val).documents == 0;
        if !(val_empty && self.val_fraction > 0.0) {
            return self
                .writer
                .write_document(Split::Train, &tokens, source_bytes);
        }
        self.held_tokens += tokens.len() as u64;
        self.held.push_back((tokens, source_bytes));
        // Keep only as many trailing documents as val would need.
        let need = self.val_need();
        while let Some((front, bytes)) = self.held.pop_front() {
            let rest = self.held_tokens - front.len() as u64;
            if self.held.is_empty() || (rest < need && self.held_tokens <= MAX_HOLDBACK_TOKENS) {
                self.held.push_front((front, bytes));
                break;
            }
            self.held_tokens = rest;
            self.writer.write_document(Split::Train, &front, bytes)?;
        }
        Ok(())
    }

    /// Val's share of all tokens seen so far, at least one.
    fn val_need(&self) -> u64 {
        ((self.val_fraction * self.progress.tokens as f64).ceil() as u64).max(1)
    }

    fn flush_held(&mut self) -> Result<()> {
        while let Some((tokens, bytes)) = self.held.pop_front() {
            self.writer.write_document(Split::Train, &tokens, bytes)?;
        }
        self.held_tokens = 0;
        Ok(())
    }

    pub(super) fn finish(mut self, tokenizer: &str, inputs: &[String]) -> Result<Manifest> {
        let need = self.val_need();
        let train_written = self.writer.split_info(Split::Train).documents;
        // Move trailing documents to val until it holds its share, leaving train one.
        let mut moved = 0usize;
        let mut moved_tokens = 0u64;
        let movable = if train_written == 0 {
            self.held.len().saturating_sub(1)
        } else {
            self.held.len()
        };
        while moved < movable && moved_tokens < need {
            moved += 1;
            moved_tokens += self.held[self.held.len() - moved].0.len() as u64;
        }
        let to_val = self.held.split_off(self.held.len() - moved);
        self.flush_held()?;
        for (tokens, bytes) in to_val {
            self.writer.write_document(Split::Val, &tokens, bytes)?;
        }
        self.writer.finish(tokenizer, inputs)
    }
}

/// Whether document `index` belongs to val: a seeded hash, so the draw depends
/// on nothing but the seed and the document's place in the corpus.
fn goes_to_val(seed: u64, index: u64, fraction: f64) -> bool {
    if fraction <= 0.0 {
        return false;
    }
    let h = splitmix64(seed ^ splitmix64(index));
    // The top 53 bits as a uniform float in [0, 1).
    ((h >> 11) as f64 / (1u64 << 53) as f64) < fraction
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn val_draw_matches_the_fraction() {
        let n = 100_000;
        let hits = (0..n).filter(|&i| goes_to_val(7, i, 0.1)).count();
        assert!((9_000..11_000).contains(&hits), "{hits}");
        assert_eq!((0..n).filter(|&i| goes_to_val(7, i, 0.0)).count(), 0);
    }
}
