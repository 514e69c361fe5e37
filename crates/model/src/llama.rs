//! The decoder: token embedding, N blocks of (RMSNorm, grouped-query attention with
//! rotary positions, RMSNorm, SwiGLU MLP) with residual connections, a final RMSNorm,
//! and the output projection (tied to the embedding or not). The same code trains
//! (full sequences, differentiable) and generates (with a KV cache).

use std::collections::HashMap;

use candle_core::{bail, CpuStorage, CustomOp2, DType, Device, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::cache::KvCache;
use crate::{ops, weights, Config, Result};

struct Block {
    input_norm: Tensor, // (C)
    q_proj: Tensor,     // (Hq * D, C)
    k_proj: Tensor,     // (Hkv * D, C)
    v_proj: Tensor,     // (Hkv * D, C)
    o_proj: Tensor,     // (C, Hq * D)
    post_norm: Tensor,  // (C)
    gate_proj: Tensor,  // (F, C)
    up_proj: Tensor,    // (F, C)
    down_proj: Tensor,  // (C, F)
}

/// `x @ w^T` for x (N, in) and w (out, in): the layout of a Hugging Face linear weight.
fn linear(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    Ok(x.matmul(&w.t()?)?)
}

/// `x @ w^T` for the few rows of a decoding step: x (B, C), w (out, C) -> (B, out).
///
/// For 2 to 16 rows on CPU this skips gemm, which for so few rows repacks the whole
/// weight matrix on every call (55% of a batch-8 decode step, measured), for
/// [`DecodeLinear`]: every weight row is read once and dotted with all B rows of x,
/// which stay in L1. One row is gemm's gemv, and more than 16 rows gemm proper: both
/// faster there.
fn linear_rows(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let fused = |t: &Tensor| t.device().is_cpu() && t.dtype() == DType::F32 && t.is_contiguous();
    if (2..=16).contains(&x.dim(0)?) && fused(x) && fused(w) {
        return Ok(x.apply_op2_no_bwd(w, &DecodeLinear)?);
    }
    linear(x, w)
}

/// The CPU kernel of [`linear_rows`] (inference only: no backward). Each output sums in
/// the same order whatever the number of rows, so a sequence gets the same logits in a
/// batch of 2 as in a batch of 16.
struct DecodeLinear;

/// Lanes per accumulator: one AVX register of f32.
const LANES: usize = 8;

/// Weight rows per rayon task: 32 rows (48 KB at C = 384) keep both cores busy on the
/// smallest matrices.
const TASK_ROWS: usize = 32;

/// Weight rows per tile: each load of x serves 4 rows, each load of w up to 4 rows of x.
const TILE_ROWS: usize = 4;

/// Dots of `R` weight rows with up to 4 rows of x (`x.len()` of them; the rest of each
/// output row is 0): `out[r][c] = w[r] . x[c]`. Every output sums its LANES partial sums
/// as ((0+1)+(2+3))+((4+5)+(6+7)), then the tail, whatever R and x.len() are.
#[inline(always)]
fn dot_tile<const R: usize>(w: [&[f32]; R], x: &[&[f32]]) -> [[f32; 4]; R] {
    let k = w[0].len();
    assert!(x.len() <= 4 && w.iter().chain(x).all(|s| s.len() == k));
    let body = k / LANES * LANES;
    let mut out = match x.len() {
        1 => dot_body::<R, 1>(w, x, body),
        2 => dot_body::<R, 2>(w, x, body),
        3 => dot_body::<R, 3>(w, x, body),
        _ => dot_body::<R, 4>(w, x, body),
    };
    for r in 0..R {
        for (c, xc) in x.iter().enumerate() {
            for i in body..k {
                out[r][c] = madd(w[r][i], xc[i], out[r][c]);
            }
        }
    }
    out
}

/// The vector part of [`dot_tile`]: the first `body` (a multiple of LANES) elements.
#[cfg(all(target_arch = "x86_64", target_feature = "avx", target_feature = "fma"))]
#[inline(always)]
fn dot_body<const R: usize, const C: usize>(
    w: [&[f32]; R],
    x: &[&[f32]],
    body: usize,
) -> [[f32; 4]; R] {
    use std::arch::x86_64::*;
    let mut out = [[0f32; 4]; R];
    // SAFETY: the target has AVX and FMA (checked at compile time); the caller checked
    // that x holds C rows and that every row holds at least `body` elements, so each
    // 8-wide load is in bounds, and each 4-wide store goes to a [f32; 4].
    unsafe {
        let mut acc = [[_mm256_setzero_ps(); 4]; R];
        let mut o = 0;
        while o < body {
            let wv: [__m256; R] = std::array::from_fn(|r| _mm256_loadu_ps(w[r].as_ptr().add(o)));
            for c in 0..C {
                let xv = _mm256_loadu_ps(x[c].as_ptr().add(o));
                for r in 0..R {
                    acc[r][c] = _mm256_fmadd_ps(wv[r], xv, acc[r][c]);
                }
            }
            o += LANES;
        }
        for r in 0..R {
            let a = acc[r];
            // lanes (0+1, 2+3) of each accumulator, then their sums, then high + low half
            let t = _mm256_hadd_ps(_mm256_hadd_ps(a[0], a[1]), _mm256_hadd_ps(a[2], a[3]));
            let s = _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1));
            _mm_storeu_ps(out[r].as_mut_ptr(), s);
        }
    }
    out
}

/// The vector part of [`dot_tile`], portable: the same sums, left to LLVM.
#[cfg(not(all(target_arch = "x86_64", target_feature = "avx", target_feature = "fma")))]
#[inline(always)]
fn dot_body<const R: usize, const C: usize>(
    w: [&[f32]; R],
    x: &[&[f32]],
    body: usize,
) -> [[f32; 4]; R] {
    let mut acc = [[[0f32; LANES]; C]; R];
    for o in (0..body).step_by(LANES) {
        for r in 0..R {
            for c in 0..C {
                for l in 0..LANES {
                    acc[r][c][l] = madd(w[r][o + l], x[c][o + l], acc[r][c][l]);
                }
            }
        }
    }
    let mut out = [[0f32; 4]; R];
    for r in 0..R {
        for c in 0..C {
            let a = &acc[r][c];
            out[r][c] = ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
        }
    }
    out
}

/// `a * b + c`, fused where the target has FMA (the workspace builds for the host CPU);
/// `mul_add` without FMA hardware would be a slow libm call.
#[inline(always)]
fn madd(a: f32, b: f32, c: f32) -> f32 {
    if cfg!(target_feature = "fma") {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// Weight rows `j0..j0 + R` against every row of `x`, into `out`: the (R, B) block of
/// the transposed output.
fn dot_rows<const R: usize>(w: &[f32], x: &[&[f32]], j0: usize, out: &mut [f32]) {
    let k = x[0].len();
    let b = x.len();
    let wr: [&[f32]; R] = std::array::from_fn(|r| &w[(j0 + r) * k..(j0 + r + 1) * k]);
    for c0 in (0..b).step_by(4) {
        let n = (b - c0).min(4);
        let t = dot_tile(wr, &x[c0..c0 + n]);
        for (r, row) in t.iter().enumerate() {
            for (i, &v) in row[..n].iter().enumerate() {
                out[r * b + c0 + i] = v;
            }
        }
    }
}

impl CustomOp2 for DecodeLinear {
    fn name(&self) -> &'static str {
        "decode-linear"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let ((b, k), (n, kw)) = (xl.shape().dims2()?, wl.shape().dims2()?);
        if k != kw {
            bail!(
                "decode-linear: x {:?} and w {:?} disagree",
                xl.shape(),
                wl.shape()
            );
        }
        let (Some((x0, x1)), Some((w0, w1))) = (xl.contiguous_offsets(), wl.contiguous_offsets())
        else {
            bail!("decode-linear: x and w must be contiguous");
        };
        let x = &xs.as_slice::<f32>()?[x0..x1];
        let w = &ws.as_slice::<f32>()?[w0..w1];
        let mut y = vec![0f32; b * n];
        if b == 0 || k == 0 {
            return Ok((CpuStorage::F32(y), Shape::from((b, n))));
        }
        let xr: Vec<&[f32]> = x.chunks_exact(k).collect();
        // (out, B) first, each rayon task owning a run of output features
        let mut t = vec![0f32; n * b];
        t.par_chunks_mut(TASK_ROWS * b)
            .enumerate()
            .for_each(|(i, out)| {
                let j0 = i * TASK_ROWS;
                let rows = out.len() / b;
                let mut r = 0;
                while r + TILE_ROWS <= rows {
                    let o = &mut out[r * b..(r + TILE_ROWS) * b];
                    dot_rows::<TILE_ROWS>(w, &xr, j0 + r, o);
                    r += TILE_ROWS;
                }
                for r in r..rows {
                    dot_rows::<1>(w, &xr, j0 + r, &mut out[r * b..(r + 1) * b]);
                }
            });
        for (j, row) in t.chunks_exact(b).enumerate() {
            for (c, &v) in row.iter().enumerate() {
                y[c * n + j] = v;
            }
        }
        Ok((CpuStorage::F32(y), Shape::from((b, n))))
    }
}

/// A Llama-family decoder-only transformer.
pub struct Llama {
    cfg: Config,
    embed: Tensor, // (V, C)
    layers: Vec<Block>,
    norm: Tensor,            // (C)
    lm_head: Option<Tensor>, // (V, C) when not tied to the embedding
    cos: Tensor,             // (max_pos, D/2)
    sin: Tensor,             // (max_pos, D/2)
}

impl Llama {
    /// Builds the model over named weights (shared, not copied: a training `Var`'s tensor
    /// can be passed so the model sees its in-place updates).
    pub fn new(cfg: &Config, w: &HashMap<String, Tensor>, device: &Device) -> Result<Self> {
        cfg.validate()?;
        weights::check_weights(cfg, w, "the weights")?;
        let get = |n: &str| -> Tensor { w[n].clone() };
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| {
                let p = format!("model.layers.{i}");
                Block {
                    input_norm: get(&format!("{p}.input_layernorm.weight")),
                    q_proj: get(&format!("{p}.self_attn.q_proj.weight")),
                    k_proj: get(&format!("{p}.self_attn.k_proj.weight")),
                    v_proj: get(&format!("{p}.self_attn.v_proj.weight")),
                    o_proj: get(&format!("{p}.self_attn.o_proj.weight")),
                    post_norm: get(&format!("{p}.post_attention_layernorm.weight")),
                    gate_proj: get(&format!("{p}.mlp.gate_proj.weight")),
                    up_proj: get(&format!("{p}.mlp.up_proj.weight")),
                    down_proj: get(&format!("{p}.mlp.down_proj.weight")),
                }
            })
            .collect();
        let lm_head = (!cfg.tie_word_embeddings).then(|| get("lm_head.weight"));
        let (cos, sin) = rope_tables(cfg, device)?;
        Ok(Self {
            cfg: cfg.clone(),
            embed: get("model.embed_tokens.weight"),
            layers,
            norm: get("model.norm.weight"),
            lm_head,
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
    pub fn hidden(&self, ids: &Tensor, mut cache: Option<&mut KvCache>) -> Result<Tensor> {
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
            let q = linear(&h, &l.q_proj)?.reshape((b, t, hq, d))?;
            let k = linear(&h, &l.k_proj)?.reshape((b, t, hkv, d))?;
            let v = linear(&h, &l.v_proj)?.reshape((b, t, hkv, d))?;
            let q = ops::rope(&q, &cos, &sin)?;
            let k = ops::rope(&k, &cos, &sin)?;
            let (k, v) = match cache.as_deref_mut() {
                Some(c) => c.append(i, &k, &v)?,
                None => (k, v),
            };
            let a = ops::causal_attention(&q, &k, &v, scale)?; // (B, T, Hq, D)
            let a = a.reshape((b * t, hq * d))?;
            x = (x + linear(&a, &l.o_proj)?)?;
            let h = ops::rms_norm(&x, &l.post_norm, eps)?;
            let g = ops::swiglu(&linear(&h, &l.gate_proj)?, &linear(&h, &l.up_proj)?)?; // (B * T, F)
            x = (x + linear(&g, &l.down_proj)?)?;
        }
        if let Some(c) = cache {
            c.advance(t);
        }
        Ok(ops::rms_norm(&x, &self.norm, eps)?)
    }

    /// Next-token logits from hidden states: (N, C) -> (N, V).
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        linear(hidden, self.lm_head.as_ref().unwrap_or(&self.embed))
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
            let q = linear_rows(&h, &l.q_proj)?.reshape((1, b, hq, d))?;
            let k = linear_rows(&h, &l.k_proj)?.reshape((1, b, hkv, d))?;
            let v = linear_rows(&h, &l.v_proj)?.reshape((1, b, hkv, d))?;
            let q = ops::rope(&q, &cos, &sin)?;
            let k = ops::rope(&k, &cos, &sin)?;
            let mut heads = Vec::with_capacity(b);
            for (s, c) in caches.iter_mut().enumerate() {
                let (ks, vs) = c.append(i, &k.narrow(1, s, 1)?, &v.narrow(1, s, 1)?)?;
                heads.push(ops::causal_attention(&q.narrow(1, s, 1)?, &ks, &vs, scale)?);
            }
            let a = Tensor::cat(&heads, 1)?.reshape((b, hq * d))?; // (B, Hq * D)
            x = (x + linear_rows(&a, &l.o_proj)?)?;
            let h = ops::rms_norm(&x, &l.post_norm, eps)?;
            let g = ops::swiglu(
                &linear_rows(&h, &l.gate_proj)?,
                &linear_rows(&h, &l.up_proj)?,
            )?;
            x = (x + linear_rows(&g, &l.down_proj)?)?;
        }
        for c in caches.iter_mut() {
            c.advance(1);
        }
        let x = ops::rms_norm(&x, &self.norm, eps)?;
        linear_rows(&x, self.lm_head.as_ref().unwrap_or(&self.embed))
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

    fn randn(shape: (usize, usize), seed: u64) -> Tensor {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let v: Vec<f32> = (0..shape.0 * shape.1)
            .map(|_| rng.random_range(-1.0f32..1.0))
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    #[test]
    fn decode_linear_matches_gemm_and_ignores_the_batch_size() {
        // k = 21 has a tail after the 8-wide body; n = 37 leaves partial tiles and tasks
        for (n, k) in [(37, 21), (70, 64), (5, 3)] {
            let w = randn((n, k), 1);
            let x = randn((16, k), 2);
            let full: Vec<Vec<f32>> = linear_rows(&x, &w).unwrap().to_vec2().unwrap();
            for b in 1..=16 {
                let xb = x.narrow(0, 0, b).unwrap();
                let want: Vec<Vec<f32>> = linear(&xb, &w).unwrap().to_vec2().unwrap();
                let got: Vec<Vec<f32>> = linear_rows(&xb, &w).unwrap().to_vec2().unwrap();
                for (i, (g, e)) in got.iter().zip(&want).enumerate() {
                    for (a, c) in g.iter().zip(e) {
                        assert!(
                            (a - c).abs() < 1e-5,
                            "n {n} k {k} b {b} row {i}: {a} vs {c}"
                        );
                    }
                    if b >= 2 {
                        assert_eq!(g, &full[i], "row {i} differs between batch {b} and 16");
                    }
                }
            }
        }
    }

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
