//! The key/value cache of generation: per layer, the rotated keys and the values of
//! every position seen so far, in preallocated buffers that grow by in-place writes.

use candle_core::Tensor;

use crate::Result;

pub struct KvCache {
    layers: Vec<candle_nn::kv_cache::KvCache>,
    len: usize,
}

impl KvCache {
    pub fn new(layers: usize, max_len: usize) -> Self {
        // dim 1 of (B, T, Hkv, D) is time
        let layers = (0..layers)
            .map(|_| candle_nn::kv_cache::KvCache::new(1, max_len))
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

    pub fn reset(&mut self) {
        self.layers.iter_mut().for_each(|l| l.reset());
        self.len = 0;
    }
}
