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
    mlp: Mlp,
}

/// A SwiGLU MLP: gate (F, C), up (F, C), down (C, F).
struct Swiglu {
    gate: Weight,
    up: Weight,
    down: Weight,
}

/// Sees what enters a block's MLP projections: ("mlp.gate_up" or "mlp.down_proj", input).
type MlpProbe<'a> = &'a mut dyn FnMut(&str, &Tensor) -> Result<()>;

fn no_probe(_: &str, _: &Tensor) -> Result<()> {
    Ok(())
}

impl Swiglu {
    /// h (N, C) -> (N, C); `rows` uses the row-at-a-time kernels of decoding.
    fn forward(&self, h: &Tensor, rows: bool, probe: MlpProbe) -> Result<Tensor> {
        self.forward_add(None, h, rows, probe)
    }

    /// `residual + forward(h)` (or `forward(h)` without one); with a dense down
    /// projection the sum is one fused op.
    fn forward_add(
        &self,
        residual: Option<&Tensor>,
        h: &Tensor,
        rows: bool,
        probe: MlpProbe,
    ) -> Result<Tensor> {
        let f = |w: &Weight, x: &Tensor| {
            if rows {
                w.forward_rows(x)
            } else {
                w.forward(x)
            }
        };
        probe("mlp.gate_up", h)?;
        let g = match (&self.gate, &self.up) {
            (Weight::Dense(wg), Weight::Dense(wu)) if !rows => ops::swiglu_linear(h, wg, wu)?,
            _ => ops::swiglu(&f(&self.gate, h)?, &f(&self.up, h)?)?,
        }; // (N, F)
        probe("mlp.down_proj", &g)?;
        match (residual, &self.down) {
            (Some(x), Weight::Dense(w)) if !rows => Ok(ops::linear_residual(x, &g, w)?),
            (Some(x), _) => Ok((x + f(&self.down, &g)?)?),
            (None, _) => f(&self.down, &g),
        }
    }
}

/// A block's feed-forward part: one MLP, or a routed mixture of them.
enum Mlp {
    Dense(Swiglu),
    Experts {
        router: Tensor, // (E, C)
        experts: Vec<Swiglu>,
        per_token: usize,
        capacity_factor: Option<f64>,
    },
}

/// Softmax over the last axis, differentiable (the max shift carries no gradient).
fn softmax_rows(x: &Tensor) -> Result<Tensor> {
    let e = x.broadcast_sub(&x.detach().max_keepdim(1)?)?.exp()?;
    Ok(e.broadcast_div(&e.sum_keepdim(1)?)?)
}

impl Mlp {
    /// `x + forward(h)`: the residual stream after the MLP.
    fn forward_add(
        &self,
        x: &Tensor,
        h: &Tensor,
        rows: bool,
        probe: MlpProbe,
    ) -> Result<(Tensor, Option<Tensor>)> {
        match self {
            Mlp::Dense(m) => Ok((m.forward_add(Some(x), h, rows, probe)?, None)),
            Mlp::Experts { .. } => {
                let (y, aux) = self.forward(h, rows, probe)?;
                Ok(((x + y)?, aux))
            }
        }
    }

    /// h (N, C) -> (N, C), and for a mixture the load-balancing loss of this call. A dense
    /// MLP shows `probe` its inputs (a mixture's experts are not probed).
    fn forward(&self, h: &Tensor, rows: bool, probe: MlpProbe) -> Result<(Tensor, Option<Tensor>)> {
        match self {
            Mlp::Dense(m) => Ok((m.forward(h, rows, probe)?, None)),
            Mlp::Experts {
                router,
                experts,
                per_token,
                capacity_factor,
            } => {
                let (y, aux) = mixture(h, rows, router, experts, *per_token, *capacity_factor)?;
                Ok((y, Some(aux)))
            }
        }
    }
}

/// The routed mixture of `experts` over h (N, C): the output (N, C) and the load-balancing
/// loss.
fn mixture(
    h: &Tensor,
    rows: bool,
    router: &Tensor,
    experts: &[Swiglu],
    k: usize,
    capacity_factor: Option<f64>,
) -> Result<(Tensor, Tensor)> {
    let (n, c) = h.dims2()?;
    let e = experts.len();
    let probs = softmax_rows(&linear(h, router)?)?; // (N, E)
    let p: Vec<f32> = probs.detach().flatten_all()?.to_vec1()?;
    // each token's k most likely experts, best first
    let mut chosen: Vec<u32> = Vec::with_capacity(n * k);
    let mut top1 = vec![0f64; e];
    for t in 0..n {
        let row = &p[t * e..(t + 1) * e];
        let mut idx: Vec<usize> = (0..e).collect();
        idx.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
        top1[idx[0]] += 1.0;
        chosen.extend(idx[..k].iter().map(|&x| x as u32));
    }
    let chosen_t = Tensor::from_vec(chosen.clone(), (n, k), h.device())?;
    let mut gates = probs.gather(&chosen_t, 1)?; // (N, k)
    if k > 1 {
        gates = gates.broadcast_div(&gates.sum_keepdim(1)?)?;
    }
    let gates = gates.flatten_all()?; // (N * k)
    let cap = capacity_factor.map(|f| ((f * (n * k) as f64 / e as f64).ceil() as usize).max(1));
    let mut out = Tensor::zeros((n, c), h.dtype(), h.device())?;
    for (x, expert) in experts.iter().enumerate() {
        // (token, slot) pairs routed to expert x, in token order, up to its capacity
        let mut tokens: Vec<u32> = Vec::new();
        let mut slots: Vec<u32> = Vec::new();
        for (i, &ex) in chosen.iter().enumerate() {
            if ex as usize == x && cap.is_none_or(|cap| tokens.len() < cap) {
                tokens.push((i / k) as u32);
                slots.push(i as u32);
            }
        }
        if tokens.is_empty() {
            continue;
        }
        let tok = Tensor::new(tokens.as_slice(), h.device())?;
        let w = gates.index_select(&Tensor::new(slots.as_slice(), h.device())?, 0)?;
        let y = expert.forward(&h.index_select(&tok, 0)?, rows, &mut no_probe)?;
        out = out.index_add(&tok, &y.broadcast_mul(&w.unsqueeze(1)?)?, 0)?;
    }
    // Switch's balance loss: E x sum_e (share of tokens whose first choice is e) x
    // (mean router probability of e); 1 when perfectly balanced
    let share: Vec<f32> = top1.iter().map(|&v| (v / n as f64) as f32).collect();
    let share = Tensor::from_vec(share, e, h.device())?;
    let aux = ((probs.mean(0)? * share)?.sum_all()? * e as f64)?;
    Ok((out, aux))
}

/// `x @ w^T` for x (N, in) and w (out, in): the layout of a Hugging Face linear weight.
fn linear(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    Ok(ops::linear(x, w)?)
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
            // the embedding is looked up and a router's few rows pick experts: kept f32
            let router = n.ends_with("block_sparse_moe.gate.weight");
            if shape.len() == 1 || n == "model.embed_tokens.weight" || router {
                dense.insert(n.clone(), q.dequantize(device)?);
            }
            if shape.len() == 2 && !router {
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
                    mlp: match cfg.experts() {
                        None => Mlp::Dense(Swiglu {
                            gate: matrix(&format!("{p}.mlp.gate_proj.weight"))?,
                            up: matrix(&format!("{p}.mlp.up_proj.weight"))?,
                            down: matrix(&format!("{p}.mlp.down_proj.weight"))?,
                        }),
                        Some((e, k)) => {
                            let q = format!("{p}.block_sparse_moe");
                            Mlp::Experts {
                                router: vector(&format!("{q}.gate.weight"))?,
                                experts: (0..e)
                                    .map(|x| {
                                        let r = format!("{q}.experts.{x}");
                                        Ok(Swiglu {
                                            gate: matrix(&format!("{r}.w1.weight"))?,
                                            up: matrix(&format!("{r}.w3.weight"))?,
                                            down: matrix(&format!("{r}.w2.weight"))?,
                                        })
                                    })
                                    .collect::<Result<Vec<_>>>()?,
                                per_token: k,
                                capacity_factor: cfg.expert_capacity_factor,
                            }
                        }
                    },
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
        cache: Option<&mut KvCache>,
        probe: &mut dyn FnMut(usize, &str, &Tensor) -> Result<()>,
    ) -> Result<Tensor> {
        self.hidden_inner(ids, cache, probe, None)
    }

    /// The trunk; a mixture of experts' blocks push their load-balancing losses to `aux`.
    fn hidden_inner(
        &self,
        ids: &Tensor,
        mut cache: Option<&mut KvCache>,
        probe: &mut dyn FnMut(usize, &str, &Tensor) -> Result<()>,
        mut aux: Option<&mut Vec<Tensor>>,
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
            let (q, k, v) = match (&l.q_proj, &l.k_proj, &l.v_proj) {
                (Weight::Dense(wq), Weight::Dense(wk), Weight::Dense(wv)) => (
                    ops::linear_heads(&h, wq, (b, t, hq, d), Some((&cos, &sin)))?,
                    ops::linear_heads(&h, wk, (b, t, hkv, d), Some((&cos, &sin)))?,
                    ops::linear_heads(&h, wv, (b, t, hkv, d), None)?,
                ),
                _ => {
                    let q = l.q_proj.forward(&h)?.reshape((b, t, hq, d))?;
                    let k = l.k_proj.forward(&h)?.reshape((b, t, hkv, d))?;
                    let v = l.v_proj.forward(&h)?.reshape((b, t, hkv, d))?;
                    (ops::rope(&q, &cos, &sin)?, ops::rope(&k, &cos, &sin)?, v)
                }
            };
            let (k, v) = match cache.as_deref_mut() {
                Some(c) => c.append(i, &k, &v)?,
                None => (k, v),
            };
            let a = ops::causal_attention(&q, &k, &v, scale)?; // (B, T, Hq, D)
            let a2 = a.reshape((b * t, hq * d))?;
            probe(i, "self_attn.o_proj", &a2)?;
            x = match &l.o_proj {
                // the heads go in as they are, without a reshape node in the graph
                Weight::Dense(w) => ops::linear_residual(&x, &a, w)?,
                o => (x + o.forward(&a2)?)?,
            };
            let h = ops::rms_norm(&x, &l.post_norm, eps)?;
            let (y, balance) = l
                .mlp
                .forward_add(&x, &h, false, &mut |name, t| probe(i, name, t))?;
            if let (Some(a), Some(b)) = (aux.as_deref_mut(), balance) {
                a.push(b);
            }
            x = y;
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
        self.head_loss(&self.hidden(ids, None)?, targets, true)
    }

    /// [`Llama::loss`] for measuring only (validation): the loss does not take part in a
    /// backward pass, so the fused head skips the gradient work its forward would do.
    pub fn eval_loss(&self, ids: &Tensor, targets: &Tensor) -> Result<Tensor> {
        self.head_loss(&self.hidden(ids, None)?, targets, false)
    }

    /// Mean cross-entropy of the next-token logits of hidden states (N, C) against
    /// targets (N or B, T). A dense head goes through the fused head-and-loss op, which
    /// never holds the (N, V) logits; without `grads` its inputs are detached, so it
    /// computes the loss alone.
    fn head_loss(&self, hidden: &Tensor, targets: &Tensor, grads: bool) -> Result<Tensor> {
        let targets = targets.flatten_all()?;
        let hidden = if grads {
            hidden.clone()
        } else {
            hidden.detach()
        };
        match &self.head {
            Some(Weight::Dense(w)) => {
                let w = if grads { w.clone() } else { w.detach() };
                Ok(ops::linear_cross_entropy(&hidden, &w, &targets)?)
            }
            _ => Ok(ops::cross_entropy(&self.logits(&hidden)?, &targets)?),
        }
    }

    /// What training minimises: [`Llama::loss`], plus for a mixture of experts
    /// `router_aux_loss_coef` x the load-balancing loss, which is also returned (to log).
    pub fn train_loss(&self, ids: &Tensor, targets: &Tensor) -> Result<(Tensor, Option<f64>)> {
        let (h, balance) = self.hidden_with_balance(ids)?;
        let ce = self.head_loss(&h, targets, true)?;
        Ok(match balance {
            Some(b) => {
                let v = b.to_scalar::<f32>()? as f64;
                let coef = self.cfg.router_aux_loss_coef.unwrap_or(0.01);
                ((ce + (b * coef)?)?, Some(v))
            }
            None => (ce, None),
        })
    }

    /// Hidden states (B * T, C) and, for a mixture of experts, the load-balancing loss.
    fn hidden_with_balance(&self, ids: &Tensor) -> Result<(Tensor, Option<Tensor>)> {
        let mut aux = Vec::new();
        let h = self.hidden_inner(ids, None, &mut |_, _, _| Ok(()), Some(&mut aux))?;
        let balance = match aux.len() {
            0 => None,
            n => Some((Tensor::stack(&aux, 0)?.sum_all()? / n as f64)?),
        };
        Ok((h, balance))
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
            x = (x + l.mlp.forward(&h, true, &mut no_probe)?.0)?;
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

    /// A tiny model whose weights are variables (its losses have gradients), the
    /// variables by name, and inputs with their next-token targets.
    fn trainable_tiny(seed: u64) -> (Vec<(String, candle_core::Var)>, Llama, Tensor, Tensor) {
        let cfg = Config::preset("tiny", 40, 16).unwrap();
        let w = weights::init_weights(&cfg, seed, &Device::Cpu).unwrap();
        let vars: Vec<(String, candle_core::Var)> = w
            .iter()
            .map(|(n, t)| (n.clone(), candle_core::Var::from_tensor(t).unwrap()))
            .collect();
        let live: HashMap<String, Tensor> = vars
            .iter()
            .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
            .collect();
        let m = Llama::new(&cfg, &live, &Device::Cpu).unwrap();
        let x = ids().narrow(1, 0, 7).unwrap();
        let y = ids().narrow(1, 1, 7).unwrap().contiguous().unwrap();
        (vars, m, x, y)
    }

    #[test]
    fn the_fused_head_loss_is_the_logits_cross_entropy_with_and_without_gradients() {
        let (vars, m, x, y) = trainable_tiny(2);
        let want =
            ops::composite::cross_entropy(&m.forward(&x).unwrap(), &y.flatten_all().unwrap())
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
        let loss = m.loss(&x, &y).unwrap();
        let eval = m.eval_loss(&x, &y).unwrap().to_scalar::<f32>().unwrap();
        assert!((loss.to_scalar::<f32>().unwrap() - want).abs() < 1e-5);
        assert!((eval - want).abs() < 1e-5);
        // the training loss reaches the head (tied: the embedding) through the fused op
        let grads = loss.backward().unwrap();
        let emb = vars
            .iter()
            .find(|(n, _)| n == "model.embed_tokens.weight")
            .unwrap()
            .1
            .as_tensor();
        assert!(grads.get(emb).is_some());
    }

    #[test]
    fn a_bf16_autocast_step_gives_f32_gradients_close_to_the_f32_step() {
        let (vars, m, x, y) = trainable_tiny(3);
        let exact = m.loss(&x, &y).unwrap();
        let exact_g = exact.backward().unwrap();
        let mixed = {
            let _bf16 = ops::autocast(Some(DType::BF16)).unwrap();
            m.loss(&x, &y).unwrap()
        };
        let mixed_g = mixed.backward().unwrap();
        let (a, b) = (
            mixed.to_scalar::<f32>().unwrap(),
            exact.to_scalar::<f32>().unwrap(),
        );
        assert!(a != b && (a - b).abs() < 1e-2 * b, "loss {a} against {b}");
        for (name, v) in &vars {
            let (g, e) = (
                mixed_g.get(v.as_tensor()).unwrap(),
                exact_g.get(v.as_tensor()).unwrap(),
            );
            // the master weights' gradients: f32, pointing the same way as f32's
            assert_eq!(g.dtype(), DType::F32, "{name}");
            let dot = (g * e)
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            let norm = |t: &Tensor| {
                t.sqr()
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap()
                    .sqrt()
            };
            let cos = dot / (norm(g) * norm(e)).max(1e-12);
            assert!(cos > 0.99, "{name}: cosine {cos} with the f32 gradient");
        }
    }

    fn moe(e: usize, k: usize, cap: Option<f64>, seed: u64) -> (Config, HashMap<String, Tensor>) {
        let cfg = Config::preset("tiny", 40, 16)
            .unwrap()
            .with_experts(e, k, 0.01, cap)
            .unwrap();
        let w = weights::init_weights(&cfg, seed, &Device::Cpu).unwrap();
        (cfg, w)
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar()
            .unwrap()
    }

    fn ids() -> Tensor {
        Tensor::new(
            &[[3u32, 14, 15, 9, 26, 5, 35, 8], [2, 7, 18, 28, 1, 8, 28, 4]],
            &Device::Cpu,
        )
        .unwrap()
    }

    #[test]
    fn one_expert_is_the_dense_model() {
        let (cfg, w) = moe(1, 1, None, 3);
        let mut dense_cfg = Config::preset("tiny", 40, 16).unwrap();
        dense_cfg.tie_word_embeddings = cfg.tie_word_embeddings;
        let mut dw = w.clone();
        for i in 0..cfg.num_hidden_layers {
            let q = format!("model.layers.{i}.block_sparse_moe");
            dw.remove(&format!("{q}.gate.weight"));
            for (from, to) in [("w1", "gate_proj"), ("w3", "up_proj"), ("w2", "down_proj")] {
                let t = dw.remove(&format!("{q}.experts.0.{from}.weight")).unwrap();
                dw.insert(format!("model.layers.{i}.mlp.{to}.weight"), t);
            }
        }
        let a = Llama::new(&cfg, &w, &Device::Cpu)
            .unwrap()
            .forward(&ids())
            .unwrap();
        let b = Llama::new(&dense_cfg, &dw, &Device::Cpu)
            .unwrap()
            .forward(&ids())
            .unwrap();
        assert!(max_diff(&a, &b) < 1e-5);
    }

    /// The mixture computed token by token, from the definition.
    fn reference(m: &Mlp, h: &Tensor) -> Tensor {
        let Mlp::Experts {
            router,
            experts,
            per_token: k,
            ..
        } = m
        else {
            panic!()
        };
        let n = h.dim(0).unwrap();
        let mut rows = Vec::new();
        for t in 0..n {
            let x = h.narrow(0, t, 1).unwrap();
            let logits: Vec<f32> = linear(&x, router)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let mx = logits.iter().cloned().fold(f32::MIN, f32::max);
            let ex: Vec<f32> = logits.iter().map(|l| (l - mx).exp()).collect();
            let z: f32 = ex.iter().sum();
            let p: Vec<f32> = ex.iter().map(|v| v / z).collect();
            let mut idx: Vec<usize> = (0..p.len()).collect();
            idx.sort_by(|&a, &b| p[b].total_cmp(&p[a]));
            let top = &idx[..*k];
            let norm: f32 = if *k > 1 {
                top.iter().map(|&i| p[i]).sum()
            } else {
                1.0
            };
            let mut y = Tensor::zeros_like(&x).unwrap();
            for &i in top {
                let o = experts[i].forward(&x, false, &mut no_probe).unwrap();
                y = (y + (o * (p[i] / norm) as f64).unwrap()).unwrap();
            }
            rows.push(y);
        }
        Tensor::cat(&rows, 0).unwrap()
    }

    #[test]
    fn routing_follows_its_definition_top1_and_top2() {
        for k in [1, 2] {
            let (cfg, w) = moe(4, k, None, 7);
            let m = Llama::new(&cfg, &w, &Device::Cpu).unwrap();
            let h = Tensor::randn(0f32, 1.0, (10, cfg.hidden_size), &Device::Cpu).unwrap();
            let (got, aux) = m.layers[0].mlp.forward(&h, false, &mut no_probe).unwrap();
            assert!(
                max_diff(&got, &reference(&m.layers[0].mlp, &h)) < 1e-5,
                "k {k}"
            );
            // the decode path (row by row kernels) agrees
            let (rows, _) = m.layers[0].mlp.forward(&h, true, &mut no_probe).unwrap();
            assert!(max_diff(&got, &rows) < 1e-5);
            let aux = aux.unwrap().to_scalar::<f32>().unwrap();
            assert!((0.99..=4.0).contains(&aux), "{aux}");
        }
    }

    #[test]
    fn the_balance_loss_is_one_when_even_and_grows_with_skew() {
        let (cfg, mut w) = moe(4, 1, None, 7);
        let c = cfg.hidden_size;
        let h = Tensor::randn(0f32, 1.0, (64, c), &Device::Cpu).unwrap();
        let aux_of = |w: &HashMap<String, Tensor>| {
            let m = Llama::new(&cfg, w, &Device::Cpu).unwrap();
            let (_, aux) = m.layers[0].mlp.forward(&h, false, &mut no_probe).unwrap();
            aux.unwrap().to_scalar::<f32>().unwrap()
        };
        // a router of zeros: every probability 1/4, so the loss is exactly 1
        let name = "model.layers.0.block_sparse_moe.gate.weight";
        w.insert(
            name.into(),
            Tensor::zeros((4, c), DType::F32, &Device::Cpu).unwrap(),
        );
        assert!((aux_of(&w) - 1.0).abs() < 1e-5);
        // a router that sends every token to expert 0 with certainty: 4
        let mut r = vec![0f32; 4 * c];
        let x: Vec<f32> = h.mean(0).unwrap().to_vec1().unwrap();
        for j in 0..c {
            r[j] = 1e3 * x[j].signum();
        }
        w.insert(
            name.into(),
            Tensor::from_vec(r, (4, c), &Device::Cpu).unwrap(),
        );
        let skewed = aux_of(&w);
        assert!(skewed > 2.0, "{skewed}");
    }

    #[test]
    fn an_expert_over_capacity_passes_its_extra_tokens_on() {
        // capacity 0.25 x 12 tokens x 1 / 2 experts = 2 tokens per expert
        let (cfg, w) = moe(2, 1, Some(0.25), 11);
        let m = Llama::new(&cfg, &w, &Device::Cpu).unwrap();
        let h = Tensor::randn(0f32, 1.0, (12, cfg.hidden_size), &Device::Cpu).unwrap();
        let (got, _) = m.layers[0].mlp.forward(&h, false, &mut no_probe).unwrap();
        let norms: Vec<f32> = got.sqr().unwrap().sum(1).unwrap().to_vec1().unwrap();
        let served = norms.iter().filter(|&&v| v > 0.0).count();
        assert!((2..=4).contains(&served), "{norms:?}");
        // the tokens it served get exactly what an unlimited expert gives them
        let mut unlimited = cfg.clone();
        unlimited.expert_capacity_factor = None;
        let u = Llama::new(&unlimited, &w, &Device::Cpu).unwrap();
        let (all, _) = u.layers[0].mlp.forward(&h, false, &mut no_probe).unwrap();
        for (t, &v) in norms.iter().enumerate() {
            if v > 0.0 {
                let d = max_diff(&got.narrow(0, t, 1).unwrap(), &all.narrow(0, t, 1).unwrap());
                assert!(d < 1e-6);
            }
        }
    }

    #[test]
    fn gradients_reach_the_router_and_the_experts_and_match_finite_differences() {
        let (cfg, w) = moe(4, 2, None, 5);
        let targets = ids()
            .narrow(1, 1, 7)
            .unwrap()
            .pad_with_zeros(1, 0, 1)
            .unwrap();
        let vars = weights::to_vars(&cfg, &w).unwrap();
        let tw = weights::var_tensors(&vars, false);
        let m = Llama::new(&cfg, &tw, &Device::Cpu).unwrap();
        let (loss, balance) = m.train_loss(&ids(), &targets).unwrap();
        assert!(balance.is_some());
        let grads = loss.backward().unwrap();
        let loss_at = |name: &str, i: usize, delta: f32| -> f64 {
            let mut w2 = w.clone();
            let t = &w2[name];
            let mut v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
            v[i] += delta;
            let nt = Tensor::from_vec(v, t.dims(), &Device::Cpu).unwrap();
            w2.insert(name.to_string(), nt);
            let m = Llama::new(&cfg, &w2, &Device::Cpu).unwrap();
            m.train_loss(&ids(), &targets)
                .unwrap()
                .0
                .to_dtype(DType::F64)
                .unwrap()
                .to_scalar::<f64>()
                .unwrap()
        };
        for name in [
            "model.layers.0.block_sparse_moe.gate.weight",
            "model.layers.1.block_sparse_moe.experts.2.w2.weight",
            "model.layers.0.block_sparse_moe.experts.1.w1.weight",
        ] {
            let var = &vars.iter().find(|(n, _)| n == name).unwrap().1;
            let g: Vec<f32> = grads
                .get(var.as_tensor())
                .expect(name)
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            // the largest-gradient entry, by central differences
            let i = (0..g.len())
                .max_by(|&a, &b| g[a].abs().total_cmp(&g[b].abs()))
                .unwrap();
            let eps = 1e-2;
            let fd = (loss_at(name, i, eps) - loss_at(name, i, -eps)) / (2.0 * eps as f64);
            let rel = (fd - g[i] as f64).abs() / fd.abs().max(1e-6);
            assert!(
                rel < 0.05,
                "{name}[{i}]: backward {} vs finite differences {fd}",
                g[i]
            );
        }
    }
}
