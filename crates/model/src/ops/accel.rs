//! The hot operations on a GPU: candle's own fused forward kernels (RMSNorm, softmax,
//! rotary embedding), which have no backward pass and would silently stop the
//! gradient, given backward passes built from candle ops, so they train on any device.
//!
//! Each forward computes its result without a graph, then [`Attach`]es it to the
//! inputs as the output of an op whose backward is the closed-form gradient. Autograd
//! then keeps only the inputs (and the output where the gradient needs it), not the
//! ~6 intermediate tensors of the composite version, and the forward is one kernel
//! where the composite one is a chain of them.
//!
//! Without a gradient to keep (inference), the kernels' results are handed back as they
//! are. None of this code is specific to a device: it runs, and is tested, on the CPU as
//! well, where candle's kernels have CPU versions.

use candle_core::backend::BackendStorage;
use candle_core::{
    bail, CpuStorage, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor, D,
};

use super::cross_entropy::check_targets;
use super::IGNORE;

/// RMSNorm: x (..., d), weight (d) -> (..., d)
pub(super) fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    let y = candle_nn::ops::rms_norm(&x.contiguous()?, weight, eps as f32)?;
    if !(x.track_op() || weight.track_op()) {
        return Ok(y);
    }
    y.apply_op3(x, weight, Attach(RmsNormGrad { eps }))
}

/// Softmax over the last dimension.
pub(super) fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    let y = candle_nn::ops::softmax_last_dim(&x.contiguous()?)?;
    if !x.track_op() {
        return Ok(y);
    }
    y.apply_op2(x, Attach(SoftmaxGrad))
}

/// Rotary embedding ("rotate half"): x (B, T, H, D), cos/sin (T, D/2) -> (B, T, H, D)
pub(super) fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let (cos, sin) = (cos.contiguous()?, sin.contiguous()?);
    let y = candle_nn::rotary_emb::rope_thd(&x.contiguous()?, &cos, &sin)?;
    if !x.track_op() {
        return Ok(y);
    }
    y.apply_op2(x, Attach(RopeGrad { cos, sin }))
}

/// Causal attention as the composite version computes it, with the fused softmax.
pub(super) fn causal_attention(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64) -> Result<Tensor> {
    super::composite::attention_with(q, k, v, scale, softmax_last_dim)
}

/// Mean cross-entropy over the targets that are not `IGNORE`, without reading the
/// targets back to the host to pick the rows: ignored rows are masked on the device.
/// logits (N, V), targets (N) u32 -> scalar; 0 when all are ignored.
pub(super) fn cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let (n, v) = logits.dims2()?;
    let dev = logits.device();
    if targets.dims() != [n] {
        bail!(
            "cross_entropy: {n} rows of logits but targets {:?}",
            targets.shape()
        );
    }
    let targets = targets.to_device(dev)?.to_dtype(DType::U32)?;
    let keep = targets.ne(&Tensor::full(IGNORE, n, dev)?)?;
    let safe = keep.where_cond(&targets, &Tensor::zeros(n, DType::U32, dev)?)?;
    if n > 0 {
        let top = safe.max(0)?.to_scalar::<u32>()?;
        if top as usize >= v {
            // name the first bad target, as the CPU kernel does
            check_targets("cross_entropy", &targets.to_vec1::<u32>()?, n, v)?;
        }
    }
    let x = logits.detach().contiguous()?;
    let keep = keep.to_dtype(x.dtype())?.unsqueeze(1)?; // (N, 1)
    let safe = safe.unsqueeze(1)?; // (N, 1)
    let count = keep.sum_all()?.maximum(1.0)?;
    let m = x.max_keepdim(1)?;
    let lse = (x.broadcast_sub(&m)?.exp()?.sum_keepdim(1)?.log()? + m)?;
    let picked = x.gather(&safe, 1)?;
    let loss = ((lse - picked)? * &keep)?.sum_all()?.div(&count)?;
    if !logits.track_op() {
        return Ok(loss);
    }
    loss.apply_op2(logits, Attach(CrossEntropyGrad { safe, keep, count }))
}

/// Hands back a result computed without a graph (its first argument) as the output of
/// an op on the remaining arguments, whose backward is `G`'s.
struct Attach<G>(G);

/// The result's own storage, copied: candle's custom ops return a new storage.
fn pass_on<S: BackendStorage>(s: &S, l: &Layout) -> Result<(S, Shape)> {
    if !l.is_contiguous() || l.start_offset() != 0 {
        bail!("attach: the computed result must be a fresh contiguous tensor, got {l:?}");
    }
    Ok((s.try_clone(l)?, l.shape().clone()))
}

/// The gradient of an op with one differentiable input besides the attached result.
trait Grad1: Send + Sync {
    const NAME: &'static str;
    /// d input, given the input, the result and the result's gradient.
    fn grad(&self, x: &Tensor, y: &Tensor, dy: &Tensor) -> Result<Tensor>;
}

/// The gradient of an op with two differentiable inputs.
trait Grad2: Send + Sync {
    const NAME: &'static str;
    fn grad(&self, a: &Tensor, b: &Tensor, y: &Tensor, dy: &Tensor) -> Result<(Tensor, Tensor)>;
}

impl<G: Grad1> CustomOp2 for Attach<G> {
    fn name(&self) -> &'static str {
        G::NAME
    }

    fn cpu_fwd(
        &self,
        s: &CpuStorage,
        l: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        pass_on(s, l)
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s: &candle_core::CudaStorage,
        l: &Layout,
        _: &candle_core::CudaStorage,
        _: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        pass_on(s, l)
    }

    fn bwd(
        &self,
        _: &Tensor,
        x: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        Ok((None, Some(self.0.grad(x, res, grad)?)))
    }
}

impl<G: Grad2> CustomOp3 for Attach<G> {
    fn name(&self) -> &'static str {
        G::NAME
    }

    fn cpu_fwd(
        &self,
        s: &CpuStorage,
        l: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        pass_on(s, l)
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s: &candle_core::CudaStorage,
        l: &Layout,
        _: &candle_core::CudaStorage,
        _: &Layout,
        _: &candle_core::CudaStorage,
        _: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        pass_on(s, l)
    }

    fn bwd(
        &self,
        _: &Tensor,
        a: &Tensor,
        b: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (da, db) = self.0.grad(a, b, res, grad)?;
        Ok((None, Some(da), Some(db)))
    }
}

struct RmsNormGrad {
    eps: f64,
}

impl Grad2 for RmsNormGrad {
    const NAME: &'static str = "rms-norm-with-grad";

    fn grad(&self, x: &Tensor, w: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<(Tensor, Tensor)> {
        // y = x r w with r = (mean(x^2) + eps)^-1/2; with g = dy w:
        // dx = r (g - x r^2 mean(g x)),  dw = sum over rows of dy x r.
        let d = x.dim(D::Minus1)?;
        let r = (x.sqr()?.mean_keepdim(D::Minus1)? + self.eps)?
            .sqrt()?
            .recip()?;
        let g = dy.broadcast_mul(w)?;
        let c = (g.mul(x)?.mean_keepdim(D::Minus1)? * r.sqr()?)?;
        let dx = g.sub(&x.broadcast_mul(&c)?)?.broadcast_mul(&r)?;
        let dw = dy.mul(&x.broadcast_mul(&r)?)?.reshape(((), d))?.sum(0)?;
        Ok((dx, dw))
    }
}

struct SoftmaxGrad;

impl Grad1 for SoftmaxGrad {
    const NAME: &'static str = "softmax-with-grad";

    fn grad(&self, _x: &Tensor, y: &Tensor, dy: &Tensor) -> Result<Tensor> {
        // dx = y (dy - sum(dy y))
        let s = dy.mul(y)?.sum_keepdim(D::Minus1)?;
        dy.broadcast_sub(&s)?.mul(y)
    }
}

struct RopeGrad {
    cos: Tensor,
    sin: Tensor,
}

impl Grad1 for RopeGrad {
    const NAME: &'static str = "rope-with-grad";

    fn grad(&self, _x: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<Tensor> {
        // A rotation's transpose turns by the opposite angle.
        candle_nn::rotary_emb::rope_thd(&dy.contiguous()?, &self.cos, &self.sin.neg()?)
    }
}

struct CrossEntropyGrad {
    /// Each row's target, 0 for ignored rows: (N, 1) u32.
    safe: Tensor,
    /// 1 for the rows that count, 0 for ignored ones: (N, 1).
    keep: Tensor,
    /// How many rows count, at least 1: a scalar.
    count: Tensor,
}

impl Grad1 for CrossEntropyGrad {
    const NAME: &'static str = "cross-entropy-with-grad";

    fn grad(&self, logits: &Tensor, _loss: &Tensor, dy: &Tensor) -> Result<Tensor> {
        // d logits = (softmax - onehot(target)) * keep * dy / count; the one-hot is
        // subtracted in place from the fresh softmax, one element per row
        let p = candle_nn::ops::softmax_last_dim(&logits.contiguous()?)?;
        let minus_one = self.keep.ones_like()?.neg()?;
        p.scatter_add_set(&self.safe, &minus_one, 1)?;
        let scale = self.keep.broadcast_mul(&dy.div(&self.count)?)?;
        p.broadcast_mul(&scale)
    }
}
