//! The key/value cache of generation: per layer, the rotated keys and the values of
//! every position seen so far, in preallocated buffers that grow by in-place writes.

use candle_core::Tensor;

use crate::Result;

/// Positions a buffer holds at first and grows by when full: a short chat does not
/// reserve the whole context (420 MB for `d20` at 2048 positions), which matters when
/// many sequences are in flight at once.
const CHUNK: usize = 256;

/// The cache of one sequence. Several sequences decode together by each keeping its own
/// cache (see `Llama::decode_step`), so they can sit at different positions.
pub struct KvCache {
    layers: Vec<candle_nn::kv_cache::KvCache>,
    len: usize,
}

impl KvCache {
    /// A cache for `layers` layers of a model whose context is `max_len`; the buffers are
    /// allocated on the first append, `min(max_len, 256)` positions at a time.
    pub fn new(layers: usize, max_len: usize) -> Self {
        let chunk = max_len.clamp(1, CHUNK);
        // dim 1 of (B, T, Hkv, D) is time
        let layers = (0..layers)
            .map(|_| candle_nn::kv_cache::KvCache::new(1, chunk))
            .collect();
        Self { layers, len: 0 }
    }

    /// Positions already in the cache.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds this step's k/v (B, T, Hkv, D) to layer `i`; returns all keys and values so far.
    pub(crate) fn append(&mut self, i: usize, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        Ok(self.layers[i].append(&k.contiguous()?, &v.contiguous()?)?)
    }

    pub(crate) fn advance(&mut self, t: usize) {
        self.len += t;
    }

    /// Keeps the first `len` positions and forgets the rest (speculative decoding takes
    /// back the drafted tokens the target rejected). The kept keys and values are copied
    /// into fresh buffers.
    pub fn truncate(&mut self, len: usize) -> Result<()> {
        if len >= self.len {
            return Ok(());
        }
        for l in &mut self.layers {
            let (k, v) = match (l.k()?, l.v()?) {
                (Some(k), Some(v)) => (k.narrow(1, 0, len)?, v.narrow(1, 0, len)?),
                _ => continue,
            };
            l.reset();
            if len > 0 {
                l.append(&k.contiguous()?, &v.contiguous()?)?;
            }
        }
        self.len = len;
        Ok(())
    }

    /// Forgets every position (the buffers are freed too).
    pub fn reset(&mut self) {
        self.layers.iter_mut().for_each(|l| l.reset());
        self.len = 0;
    }
}
