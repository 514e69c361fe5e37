//! The transformer's hot operations, each with a plain composite version (candle ops,
//! differentiable by candle's autograd, runs on any device) and a fused one: on CPU our
//! own kernels, as candle custom ops with their own backward; on a GPU candle's fused
//! kernels, given the backward passes they lack ([`accel`]). The fused versions exist
//! for speed; the composite ones are the reference they are tested against.
//!
//! Every public function here is differentiable. Shapes use B batch, T time, H heads,
//! D head size, V vocabulary.
//!
//! [`autocast`] turns on mixed precision for the matrix products (bf16 on a GPU's tensor
//! cores), as PyTorch's autocast does: parameters and everything else stay f32.

use std::cell::Cell;

use candle_core::{DType, Device, Result, Tensor, D};

mod accel;
mod attention;
mod attention_bwd;
mod blas;
pub mod check;
mod cpu;
mod cross_entropy;
mod decode_linear;
mod heads;
mod linear;
mod rms_norm;
mod rope;
mod swiglu;
#[cfg(test)]
mod tests;

pub(crate) use decode_linear::linear_rows;

/// Whether the fused CPU kernels may be used for these tensors.
fn fused_ok(ts: &[&Tensor]) -> bool {
    ts.iter()
        .all(|t| matches!(t.device(), Device::Cpu) && t.dtype() == DType::F32)
}

/// Whether candle's fused GPU kernels, with the backward passes of [`accel`], serve
/// these tensors.
fn accel_ok(ts: &[&Tensor]) -> bool {
    ts.iter().all(|t| t.device().is_cuda())
}

/// As [`fused_ok`], for the operations that multiply matrices: the fused kernels compute
/// in f32, so under [`autocast`] the composite versions run (and cast).
fn fused_mm_ok(ts: &[&Tensor]) -> bool {
    autocast_dtype().is_none() && fused_ok(ts)
}

thread_local! {
    static AUTOCAST: Cell<Option<DType>> = const { Cell::new(None) };
}

/// Mixed precision for the matrix products made on this thread while the returned guard
/// lives: every projection, the attention scores and their weighted sum, and the
/// language-model head multiply their operands cast to `dtype` (bf16 or f16) and hand
/// back f32. Normalisation, softmax, the loss and the parameters stay f32, and the
/// casts are differentiable, so the gradients reach the f32 parameters in f32 (the
/// "master weights"). `None` turns it off; dropping the guard restores what was before.
///
/// Backward needs no guard: it multiplies the low-precision copies the forward kept.
pub fn autocast(dtype: Option<DType>) -> Result<Autocast> {
    if let Some(d) = dtype {
        if !matches!(d, DType::BF16 | DType::F16) {
            candle_core::bail!("autocast multiplies in bf16 or f16, not {d:?}");
        }
    }
    Ok(Autocast {
        before: AUTOCAST.with(|a| a.replace(dtype)),
    })
}

/// The dtype this thread's matrix products are cast to, if [`autocast`] is on.
pub fn autocast_dtype() -> Option<DType> {
    AUTOCAST.with(|a| a.get())
}

/// Keeps [`autocast`]'s setting while it lives.
#[must_use = "autocast is off again once the guard is dropped"]
pub struct Autocast {
    before: Option<DType>,
}

impl Drop for Autocast {
    fn drop(&mut self) {
        AUTOCAST.with(|a| a.set(self.before));
    }
}

/// `a @ b` under [`autocast`]: both operands cast to its dtype, the product back to f32
/// (the operands' own dtype when it is off).
fn mm(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    match autocast_dtype() {
        Some(d) if a.dtype() != d || b.dtype() != d => {
            let out = a.dtype();
            a.to_dtype(d)?.matmul(&b.to_dtype(d)?)?.to_dtype(out)
        }
        _ => a.matmul(b),
    }
}

/// RMSNorm: `x / sqrt(mean(x^2) + eps) * weight`.
/// x (..., d), weight (d) -> (..., d)
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    if fused_ok(&[x, weight]) {
        return rms_norm::rms_norm(x, weight, eps);
    }
    if accel_ok(&[x, weight]) {
        return accel::rms_norm(x, weight, eps);
    }
    composite::rms_norm(x, weight, eps)
}

/// Rotary position embedding in the Hugging Face "rotate half" convention: dimension
/// i is paired with i + D/2.
/// x (B, T, H, D), cos/sin (T, D/2) for the positions of x -> (B, T, H, D)
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    if fused_ok(&[x, cos, sin]) {
        return rope::rope(x, cos, sin);
    }
    if accel_ok(&[x, cos, sin]) {
        return accel::rope(x, cos, sin);
    }
    composite::rope(x, cos, sin)
}

/// Causal scaled-dot-product attention with grouped-query heads.
/// q (B, Tq, Hq, D), k/v (B, Tk, Hkv, D) with Tk >= Tq and Hq % Hkv == 0. Query i sits
/// at absolute position Tk - Tq + i and sees keys 0..=that position.
/// -> (B, Tq, Hq, D)
pub fn causal_attention(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64) -> Result<Tensor> {
    if fused_mm_ok(&[q, k, v]) {
        return attention::causal_attention(q, k, v, scale);
    }
    if accel_ok(&[q, k, v]) {
        return accel::causal_attention(q, k, v, scale);
    }
    composite::causal_attention(q, k, v, scale)
}

/// SwiGLU gate: `silu(gate) * up`, elementwise; gate/up (..., f) -> (..., f)
pub fn swiglu(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    if fused_ok(&[gate, up]) {
        return swiglu::swiglu(gate, up);
    }
    composite::swiglu(gate, up)
}

/// An attention input projection laid out in heads, optionally rotated:
/// `rope(linear(x, w).reshape((B, T, H, D)), cos, sin)`, or without `rope` the reshaped
/// projection alone. x (B * T, C), w (H * D, C), cos/sin (T, D/2) -> (B, T, H, D)
pub fn linear_heads(
    x: &Tensor,
    w: &Tensor,
    shape: (usize, usize, usize, usize),
    rope: Option<(&Tensor, &Tensor)>,
) -> Result<Tensor> {
    let tables: Vec<&Tensor> = rope.iter().flat_map(|(c, s)| [*c, *s]).collect();
    if fused_mm_ok(&[x, w]) && fused_ok(&tables) && x.rank() == 2 && w.rank() == 2 {
        return heads::linear_heads(x, w, shape, rope);
    }
    let y = linear(x, w)?.reshape(shape)?;
    match rope {
        Some((cos, sin)) => self::rope(&y, cos, sin),
        None => Ok(y),
    }
}

/// A linear layer added onto a residual stream: `res + linear(a, w)`, where `a` is
/// (N, K) or a contiguous tensor of N rows of K (attention heads (B, T, H, D)).
/// res (N, C), w (C, K) -> (N, C)
pub fn linear_residual(res: &Tensor, a: &Tensor, w: &Tensor) -> Result<Tensor> {
    let (n, _) = res.dims2()?;
    if fused_mm_ok(&[res, a, w]) && w.rank() == 2 && (a.rank() == 2 || a.is_contiguous()) {
        return linear::linear_residual(res, a, w);
    }
    let k = a.elem_count().checked_div(n).unwrap_or(0);
    res + linear(&a.reshape((n, k))?, w)?
}

/// The first half of a SwiGLU MLP: `swiglu(linear(x, w_gate), linear(x, w_up))`.
/// x (N, C), w_gate/w_up (F, C) -> (N, F)
pub fn swiglu_linear(x: &Tensor, w_gate: &Tensor, w_up: &Tensor) -> Result<Tensor> {
    if fused_mm_ok(&[x, w_gate, w_up]) && x.rank() == 2 && w_gate.rank() == 2 && w_up.rank() == 2 {
        return swiglu::swiglu_linear(x, w_gate, w_up);
    }
    swiglu(&linear(x, w_gate)?, &linear(x, w_up)?)
}

/// A linear layer without bias: `x @ w^T`, in Hugging Face's weight layout.
/// x (N, in), w (out, in) -> (N, out)
pub fn linear(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    if fused_mm_ok(&[x, w]) && x.rank() == 2 && w.rank() == 2 {
        return linear::linear(x, w);
    }
    composite::linear(x, w)
}

/// Mean cross-entropy of the logits `x @ w^T`, for a language-model head: what
/// `cross_entropy(linear(x, w), targets)` gives, without holding the logits on CPU.
/// x (N, C), w (V, C), targets (N) u32 -> scalar.
pub fn linear_cross_entropy(x: &Tensor, w: &Tensor, targets: &Tensor) -> Result<Tensor> {
    if fused_mm_ok(&[x, w])
        && x.rank() == 2
        && w.rank() == 2
        && targets.device().is_cpu()
        && targets.dtype() == DType::U32
    {
        return linear::linear_cross_entropy(x, w, targets);
    }
    cross_entropy(&linear(x, w)?, targets)
}

/// Marks a target that does not count in the loss (prompt tokens, padding).
pub const IGNORE: u32 = u32::MAX;

/// Mean cross-entropy over the targets that are not `IGNORE`.
/// logits (N, V) f32, targets (N) u32 -> scalar. Returns 0 when all are ignored.
pub fn cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    if fused_ok(&[logits]) && targets.device().is_cpu() && targets.dtype() == DType::U32 {
        return cross_entropy::cross_entropy(logits, targets);
    }
    if accel_ok(&[logits]) {
        return accel::cross_entropy(logits, targets);
    }
    composite::cross_entropy(logits, targets)
}

/// Composite reference versions, built from candle's differentiable ops.
pub mod composite {
    use super::*;

    pub fn linear(x: &Tensor, w: &Tensor) -> Result<Tensor> {
        mm(x, &w.t()?)
    }

    pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
        let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
        let y = x.broadcast_div(&(ms + eps)?.sqrt()?)?;
        y.broadcast_mul(weight)
    }

    pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
        let (_b, t, _h, d) = x.dims4()?;
        let half = d / 2;
        // (T, D/2) -> (1, T, 1, D) with both halves sharing the angle
        let cos = Tensor::cat(&[cos, cos], 1)?.reshape((1, t, 1, d))?;
        let sin = Tensor::cat(&[sin, sin], 1)?.reshape((1, t, 1, d))?;
        let x1 = x.narrow(3, 0, half)?;
        let x2 = x.narrow(3, half, half)?;
        let rotated = Tensor::cat(&[&x2.neg()?, &x1], 3)?;
        x.broadcast_mul(&cos)? + rotated.broadcast_mul(&sin)?
    }

    pub fn causal_attention(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64) -> Result<Tensor> {
        attention_with(q, k, v, scale, |a| candle_nn::ops::softmax(a, D::Minus1))
    }

    /// Causal attention with the given softmax over the last dimension.
    pub(super) fn attention_with(
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        scale: f64,
        softmax: impl Fn(&Tensor) -> Result<Tensor>,
    ) -> Result<Tensor> {
        let (b, tq, hq, d) = q.dims4()?;
        let (_, tk, hkv, _) = k.dims4()?;
        let rep = hq / hkv;
        let q = q.transpose(1, 2)?.contiguous()?; // (B, Hq, Tq, D)
        let expand = |t: &Tensor| -> Result<Tensor> {
            // (B, Tk, Hkv, D) -> (B, Hq, Tk, D), each kv head shared by `rep` query heads
            let t = t.transpose(1, 2)?; // (B, Hkv, Tk, D)
            let t = t
                .unsqueeze(2)?
                .broadcast_as((b, hkv, rep, tk, d))?
                .reshape((b, hq, tk, d))?;
            t.contiguous()
        };
        let k = expand(k)?;
        let v = expand(v)?;
        let att = (mm(&q, &k.t()?)? * scale)?; // (B, Hq, Tq, Tk)
        let att = att.broadcast_add(&causal_mask(tq, tk, att.dtype(), att.device())?)?;
        mm(&softmax(&att)?, &v)?.transpose(1, 2)?.contiguous()
    }

    /// (Tq, Tk): 0 where query i (at position Tk - Tq + i) may see key j, -inf where
    /// not; made on the device, so a GPU step copies nothing from the host for it.
    fn causal_mask(tq: usize, tk: usize, dtype: DType, device: &Device) -> Result<Tensor> {
        let offset = (tk - tq) as u32;
        let query = Tensor::arange(offset, offset + tq as u32, device)?.unsqueeze(1)?;
        let key = Tensor::arange(0u32, tk as u32, device)?.unsqueeze(0)?;
        let zero = Tensor::zeros((tq, tk), dtype, device)?;
        let hidden = Tensor::full(f32::NEG_INFINITY, (tq, tk), device)?.to_dtype(dtype)?;
        key.broadcast_le(&query)?.where_cond(&zero, &hidden)
    }

    pub fn swiglu(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
        let silu = (gate * candle_nn::ops::sigmoid(gate)?)?;
        silu * up
    }

    pub fn cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
        let (n, _v) = logits.dims2()?;
        let t: Vec<u32> = targets.to_vec1()?;
        let keep: Vec<u32> = (0..n as u32).filter(|&i| t[i as usize] != IGNORE).collect();
        if keep.is_empty() {
            return logits.sum_all()?.affine(0.0, 0.0);
        }
        let idx = Tensor::new(keep.as_slice(), logits.device())?;
        let tgt: Vec<u32> = keep.iter().map(|&i| t[i as usize]).collect();
        let tgt = Tensor::new(tgt.as_slice(), logits.device())?;
        let logits = logits.index_select(&idx, 0)?;
        let logp = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
        let picked = logp.gather(&tgt.unsqueeze(1)?, 1)?;
        picked.mean_all()?.neg()
    }
}
