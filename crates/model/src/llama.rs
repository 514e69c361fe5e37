//! The decoder: token embedding, N blocks of (RMSNorm, grouped-query attention with
//! rotary positions, RMSNorm, SwiGLU MLP) with residual connections, a final RMSNorm,
//! and the output projection (tied to the embedding or not). The same code trains
//! (full sequences, differentiable) and generates (with a KV cache).

use std::collections::HashMap;

use candle_core::quantized::QTensor;
use candle_core::{DType, Device, Tensor};

use crate::cache::KvCache;
use crate::linear::Weight;
use crate::{ops, weights, Config, Result};

fn missing(n: &str) -> crate::ModelError {
    crate::ModelError::Weights(format!("`{n}` missing"))
}

struct Block {
    input_norm: Tensor, // (C)
    q_proj: Weight,     // (Hq * D, C)
    k_proj: Weight,     // (Hkv * D, C)
    v_proj: Weight,     // (Hkv * D, C)
    o_proj: Weight,     // (C, Hq * D)
    post_norm: Tensor,  // (C)
    gate_proj: Weight,  // (F, C)
    up_proj: Weight,    // (F, C)
    down_proj: Weight,  // (C, F)
}

/// `x @ w^T` for x (N, in) and w (out, in): the layout of a Hugging Face linear weight.
fn linear(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    Ok(x.matmul(&w.t()?)?)
}

/// A Llama-family decoder-only transformer.
pub struct Llama {
    cfg: Config,
    embed: Tensor, // (V, C)
    layers: Vec<Block>,
    norm: Tensor,          // (C)
    head: Option<Weight>,  // (V, C): lm_head, or the embedding when tied; none when scoring
    score: Option<Tensor>, // (1, C) for a scoring model
    cos: Tensor,           // (max_pos, D/2)
    sin: Tensor,           // (max_pos, D/2)
}

impl Llama {
    /// Builds the model over named weights (shared, not copied: a training `Var`'s tensor
    /// can be passed so the model sees its in-place updates).
    pub fn new(cfg: &Config, w: &HashMap<String, Tensor>, device: &Device) -> Result<Self> {
        cfg.validate()?;
        weights::check_weights(cfg, w, "the weights")?;
        let get = |n: &str| -> Tensor { w[n].clone() };
        Self::build(cfg, device, |n| Ok(get(n)), |n| Ok(Weight::Dense(get(n))))
    }

    /// A model over quantized weights (inference only): matrices in a GGML block format,
    /// vectors and the embedding table (looked up, not multiplied) in f32.
    pub fn new_quantized(
        cfg: &Config,
        mut w: HashMap<String, QTensor>,
        device: &Device,
    ) -> Result<Self> {
        cfg.validate()?;
        let mut take = |n: &str| {
            w.remove(n).ok_or_else(|| {
                crate::ModelError::Weights(format!("quantized weights: `{n}` missing"))
            })
        };
        let mut dense = HashMap::new();
        let mut quant = HashMap::new();
        for (n, shape) in weights::param_shapes(cfg) {
            let q = take(&n)?;
            if q.shape().dims() != shape.as_slice() {
                return Err(crate::ModelError::Weights(format!(
                    "quantized weights: `{n}` is {:?}, the config needs {shape:?}",
                    q.shape().dims()
                )));
            }
            if shape.len() == 1 || n == "model.embed_tokens.weight" {
                dense.insert(n.clone(), q.dequantize(device)?);
            }
            if shape.len() == 2 {
                quant.insert(n, Weight::quantized(q)?);
            }
        }
        Self::build(
            cfg,
            device,
            |n| dense.get(n).cloned().ok_or_else(|| missing(n)),
            |n| quant.get(n).cloned().ok_or_else(|| missing(n)),
        )
    }

    fn build(
        cfg: &Config,
        device: &Device,
        vector: impl Fn(&str) -> Result<Tensor>,
        matrix: impl Fn(&str) -> Result<Weight>,
    ) -> Result<Self> {
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| {
                let p = format!("model.layers.{i}");
                Ok(Block {
                    input_norm: vector(&format!("{p}.input_layernorm.weight"))?,
                    q_proj: matrix(&format!("{p}.self_attn.q_proj.weight"))?,
                    k_proj: matrix(&format!("{p}.self_attn.k_proj.weight"))?,
                    v_proj: matrix(&format!("{p}.self_attn.v_proj.weight"))?,
                    o_proj: matrix(&format!("{p}.self_attn.o_proj.weight"))?,
                    post_norm: vector(&format!("{p}.post_attention_layernorm.weight"))?,
                    gate_proj: matrix(&format!("{p}.mlp.gate_proj.weight"))?,
                    up_proj: matrix(&format!("{p}.mlp.up_proj.weight"))?,
                    down_proj: matrix(&format!("{p}.mlp.down_proj.weight"))?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let head = match (cfg.is_classifier(), cfg.tie_word_embeddings) {
            (true, _) => None,
            (false, true) => Some(matrix("model.embed_tokens.weight")?),
            (false, false) => Some(matrix("lm_head.weight")?),
        };
        let score = match cfg.is_classifier() {
            true => Some(vector("score.weight")?),
            false => None,
        };
        let (cos, sin) = rope_tables(cfg, device)?;
        Ok(Self {
            cfg: cfg.clone(),
            embed: vector("model.embed_tokens.weight")?,
            layers,
            norm: vector("model.norm.weight")?,
            head,
            score,
            cos,
            sin,
        })
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn device(&self) -> &Device {
        self.embed.device()
    }

    /// Final hidden states after the last norm: ids (B, T) u32 -> (B * T, C).
    /// `cache` continues a sequence whose first tokens were already seen.
    pub fn hidden(&self, ids: &Tensor, cache: Option<&mut KvCache>) -> Result<Tensor> {
        self.hidden_probed(ids, cache, &mut |_, _, _| Ok(()))
    }

    /// [`Llama::hidden`], showing `probe` what enters each layer's projections:
    /// (layer, the weight it enters, (B * T, in)). Activation-aware pruning measures the
    /// inputs this way.
    pub fn hidden_probed(
        &self,
        ids: &Tensor,
        mut cache: Option<&mut KvCache>,
        probe: &mut dyn FnMut(usize, &str, &Tensor) -> Result<()>,
    ) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        let pos = cache.as_ref().map(|c| c.len()).unwrap_or(0);
        if pos + t > self.cfg.max_position_embeddings {
            return Err(crate::ModelError::Config(format!(
                "sequence of {} tokens is longer than the model's context ({})",
                pos + t,
                self.cfg.max_position_embeddings
            )));
        }
        let d = self.cfg.head_size();
        let (hq, hkv) = (self.cfg.num_attention_heads, self.cfg.kv_heads());
        let eps = self.cfg.rms_norm_eps;
        let scale = 1.0 / (d as f64).sqrt();
        let cos = self.cos.narrow(0, pos, t)?; // (T, D/2)
        let sin = self.sin.narrow(0, pos, t)?;
        let mut x = self.embed.embedding(&ids.flatten_all()?)?; // (B * T, C)
        for (i, l) in self.layers.iter().enumerate() {
            let h = ops::rms_norm(&x, &l.input_norm, eps)?;
            probe(i, "self_attn.qkv", &h)?;
            let q = l.q_proj.forward(&h)?.reshape((b, t, hq, d))?;
            let k = l.k_proj.forward(&h)?.reshape((b, t, hkv, d))?;
            let v = l.v_proj.forward(&h)?.reshape((b, t, hkv, d))?;
            let q = ops::rope(&q, &cos, &sin)?;
            let k = ops::rope(&k, &cos, &sin)?;
            let (k, v) = match cache.as_deref_mut() {
                Some(c) => c.append(i, &k, &v)?,
                None => (k, v),
            };
            let a = ops::causal_attention(&q, &k, &v, scale)?; // (B, T, Hq, D)
            let a = a.reshape((b * t, hq * d))?;
            probe(i, "self_attn.o_proj", &a)?;
            x = (x + l.o_proj.forward(&a)?)?;
            let h = ops::rms_norm(&x, &l.post_norm, eps)?;
            probe(i, "mlp.gate_up", &h)?;
            let g = ops::swiglu(&l.gate_proj.forward(&h)?, &l.up_proj.forward(&h)?)?; // (B * T, F)
            probe(i, "mlp.down_proj", &g)?;
            x = (x + l.down_proj.forward(&g)?)?;
        }
        if let Some(c) = cache {
            c.advance(t);
        }
        Ok(ops::rms_norm(&x, &self.norm, eps)?)
    }

    /// Next-token logits from hidden states: (N, C) -> (N, V).
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        match &self.head {
            Some(h) => h.forward(hidden),
            None => Err(crate::ModelError::Config(
                "this is a scoring model (LlamaForSequenceClassification): it gives scores, not next-token logits".into(),
            )),
        }
    }

    /// A scoring model's score of each row at its position `last[b]` (the last real
    /// token, as Hugging Face reads sequence-classification scores): ids (B, T) -> (B).
    pub fn scores(&self, ids: &Tensor, last: &[usize]) -> Result<Tensor> {
        let score = self.score.as_ref().ok_or_else(|| {
            crate::ModelError::Config(
                "this is a language model, not a scoring model: it has no score.weight".into(),
            )
        })?;
        let (b, t) = ids.dims2()?;
        if last.len() != b || last.iter().any(|&l| l >= t) {
            return Err(crate::ModelError::Config(format!(
                "scores: {} last positions for {b} rows of {t} tokens",
                last.len()
            )));
        }
        let h = self.hidden(ids, None)?; // (B * T, C)
        let rows: Vec<u32> = last
            .iter()
            .enumerate()
            .map(|(i, &l)| (i * t + l) as u32)
            .collect();
        let h = h.index_select(&Tensor::new(rows.as_slice(), ids.device())?, 0)?; // (B, C)
        Ok(linear(&h, score)?.squeeze(1)?)
    }

    /// Logits for every position: ids (B, T) -> (B * T, V).
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        self.logits(&self.hidden(ids, None)?)
    }

    /// Mean next-token cross-entropy: ids and targets (B, T); targets equal to
    /// [`ops::IGNORE`] do not count.
    pub fn loss(&self, ids: &Tensor, targets: &Tensor) -> Result<Tensor> {
        let logits = self.forward(ids)?;
        Ok(ops::cross_entropy(&logits, &targets.flatten_all()?)?)
    }

    /// Feeds `ids` (B, T) after what `cache` holds and returns the logits of the last
    /// position of each row: (B, V).
    pub fn forward_cached(&self, ids: &Tensor, cache: &mut KvCache) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        let h = self.hidden(ids, Some(cache))?; // (B * T, C)
        let last = h
            .reshape((b, t, self.cfg.hidden_size))?
            .narrow(1, t - 1, 1)?
            .squeeze(1)?;
        self.logits(&last.contiguous()?)
    }

    /// Feeds `ids` (1, T) after what `cache` holds and returns the logits of every one of
    /// the T positions: (T, V). Speculative decoding verifies T drafted tokens this way.
    pub fn forward_cached_all(&self, ids: &Tensor, cache: &mut KvCache) -> Result<Tensor> {
        let h = self.hidden(ids, Some(cache))?; // (T, C)
        self.logits(&h.contiguous()?)
    }

    /// One decoding step for several sequences at once, each at its own position:
    /// `tokens[i]` follows what `caches[i]` holds. Returns next-token logits (B, V).
    ///
    /// Embedding, norms, the q/k/v/o projections, the MLP and the output projection run
    /// as one (B, C) matmul for all sequences (that is where batching pays: the weights
    /// are read once per step, not once per sequence); rotary positions use each row's
    /// own position, and only the cache append and attention run per sequence.
    pub fn decode_step(&self, tokens: &[u32], caches: &mut [&mut KvCache]) -> Result<Tensor> {
        let b = tokens.len();
        if b == 0 || caches.len() != b {
            return Err(crate::ModelError::Config(format!(
                "decode_step: {b} tokens for {} caches (need one token per cache, at least one)",
                caches.len()
            )));
        }
        let ctx = self.cfg.max_position_embeddings;
        let pos: Vec<u32> = caches.iter().map(|c| c.len() as u32).collect();
        if let Some(&p) = pos.iter().find(|&&p| p as usize >= ctx) {
            return Err(crate::ModelError::Config(format!(
                "sequence of {} tokens is longer than the model's context ({ctx})",
                p + 1
            )));
        }
        let d = self.cfg.head_size();
        let (hq, hkv) = (self.cfg.num_attention_heads, self.cfg.kv_heads());
        let eps = self.cfg.rms_norm_eps;
        let scale = 1.0 / (d as f64).sqrt();
        let dev = self.device();
        // The rope kernel takes (B, T, H, D) with one angle row per time step: the batch
        // goes in as the time axis of a single row, with each sequence's own angles.
        let pos = Tensor::new(pos.as_slice(), dev)?;
        let cos = self.cos.index_select(&pos, 0)?; // (B, D/2)
        let sin = self.sin.index_select(&pos, 0)?;
        let mut x = self.embed.embedding(&Tensor::new(tokens, dev)?)?; // (B, C)
        for (i, l) in self.layers.iter().enumerate() {
            let h = ops::rms_norm(&x, &l.input_norm, eps)?;
            let q = l.q_proj.forward_rows(&h)?.reshape((1, b, hq, d))?;
            let k = l.k_proj.forward_rows(&h)?.reshape((1, b, hkv, d))?;
            let v = l.v_proj.forward_rows(&h)?.reshape((1, b, hkv, d))?;
            let q = ops::rope(&q, &cos, &sin)?;
            let k = ops::rope(&k, &cos, &sin)?;
            let mut heads = Vec::with_capacity(b);
            for (s, c) in caches.iter_mut().enumerate() {
                let (ks, vs) = c.append(i, &k.narrow(1, s, 1)?, &v.narrow(1, s, 1)?)?;
                heads.push(ops::causal_attention(&q.narrow(1, s, 1)?, &ks, &vs, scale)?);
            }
            let a = Tensor::cat(&heads, 1)?.reshape((b, hq * d))?; // (B, Hq * D)
            x = (x + l.o_proj.forward_rows(&a)?)?;
            let h = ops::rms_norm(&x, &l.post_norm, eps)?;
            let g = ops::swiglu(&l.gate_proj.forward_rows(&h)?, &l.up_proj.forward_rows(&h)?)?;
            x = (x + l.down_proj.forward_rows(&g)?)?;
        }
        for c in caches.iter_mut() {
            c.advance(1);
        }
        let x = ops::rms_norm(&x, &self.norm, eps)?;
        match &self.head {
            Some(h) => h.forward_rows(&x),
            None => self.logits(&x),
        }
    }

    /// A cache sized for this model.
    pub fn new_cache(&self) -> KvCache {
        KvCache::new(self.cfg.num_hidden_layers, self.cfg.max_position_embeddings)
    }
}

/// cos/sin of the rotary angles, (max_pos, D/2), computed in f64 then rounded, as
/// Hugging Face computes them in f32 from the same formula.
fn rope_tables(cfg: &Config, device: &Device) -> Result<(Tensor, Tensor)> {
    let d = cfg.head_size();
    let n = cfg.max_position_embeddings;
    let inv: Vec<f64> = (0..d / 2)
        .map(|i| 1.0 / cfg.rope_theta.powf((2 * i) as f64 / d as f64))
        .collect();
    let mut cos = Vec::with_capacity(n * d / 2);
    let mut sin = Vec::with_capacity(n * d / 2);
    for p in 0..n {
        for f in &inv {
            let a = (p as f32 * *f as f32) as f64;
            cos.push(a.cos() as f32);
            sin.push(a.sin() as f32);
        }
    }
    let cos = Tensor::from_vec(cos, (n, d / 2), device)?.to_dtype(DType::F32)?;
    let sin = Tensor::from_vec(sin, (n, d / 2), device)?.to_dtype(DType::F32)?;
    Ok((cos, sin))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_step_refuses_mismatched_or_full_caches() {
        let cfg = Config::preset("tiny", 20, 4).unwrap();
        let w = weights::init_weights(&cfg, 1, &Device::Cpu).unwrap();
        let m = Llama::new(&cfg, &w, &Device::Cpu).unwrap();
        let mut a = m.new_cache();
        assert!(m.decode_step(&[1, 2], &mut [&mut a]).is_err());
        assert!(m.decode_step(&[], &mut []).is_err());
        let ids = Tensor::new(&[[1u32, 2, 3, 4]], &Device::Cpu).unwrap();
        m.forward_cached(&ids, &mut a).unwrap();
        let e = m.decode_step(&[1], &mut [&mut a]).unwrap_err().to_string();
        assert!(e.contains("context"), "{e}");
    }
}
