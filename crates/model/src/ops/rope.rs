//! Fused rotary position embedding on CPU (Hugging Face "rotate half": dimension i pairs
//! with i + D/2). It reads x through its strides, so a transposed or sliced q/k costs no
//! copy; the backward is the same kernel rotating by the opposite angle.

use candle_core::{bail, CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::cpu::{buffer, contiguous};

/// x (B, T, H, D), cos/sin (T, D/2) -> (B, T, H, D)
pub(super) fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    x.apply_op3(cos, sin, Rope { inverse: false })
}

struct Rope {
    /// Rotate by -angle: the transpose of the rotation, i.e. its backward.
    inverse: bool,
}

impl CustomOp3 for Rope {
    fn name(&self) -> &'static str {
        "fused-rope"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        cs: &CpuStorage,
        cl: &Layout,
        ss: &CpuStorage,
        sl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let &[b, t, h, d] = xl.dims() else {
            bail!("rope: x must be (B, T, H, D), got {:?}", xl.shape());
        };
        let half = d / 2;
        if d % 2 != 0 {
            bail!("rope: head size {d} is odd");
        }
        for (what, l) in [("cos", cl), ("sin", sl)] {
            if l.dims() != [t, half] {
                bail!(
                    "rope: {what} is {:?}, expected (T={t}, D/2={half})",
                    l.shape()
                );
            }
        }
        let cos = contiguous::<f32>(cs, cl)?;
        let sin = contiguous::<f32>(ss, sl)?;
        let x = buffer::<f32>(xs)?;
        let st = xl.stride();
        let start = xl.start_offset();
        let sign = if self.inverse { -1f32 } else { 1f32 };
        let mut out = vec![0f32; b * t * h * d];
        if out.is_empty() {
            return Ok((CpuStorage::F32(out), xl.shape().clone()));
        }
        // One task per (b, t) row of H heads; every head at time t shares one angle row.
        out.par_chunks_mut(h * d).enumerate().for_each(|(bt, out)| {
            let (bi, ti) = (bt / t, bt % t);
            let c = &cos[ti * half..(ti + 1) * half];
            let s = &sin[ti * half..(ti + 1) * half];
            for (hi, out) in out.chunks_exact_mut(d).enumerate() {
                let base = start + bi * st[0] + ti * st[1] + hi * st[2];
                let (o1, o2) = out.split_at_mut(half);
                if st[3] == 1 {
                    let x1 = &x[base..base + half];
                    let x2 = &x[base + half..base + d];
                    for i in 0..half {
                        let s = sign * s[i];
                        o1[i] = x1[i] * c[i] - x2[i] * s;
                        o2[i] = x2[i] * c[i] + x1[i] * s;
                    }
                } else {
                    for i in 0..half {
                        let (x1, x2) = (x[base + i * st[3]], x[base + (i + half) * st[3]]);
                        let s = sign * s[i];
                        o1[i] = x1 * c[i] - x2 * s;
                        o2[i] = x2 * c[i] + x1 * s;
                    }
                }
            }
        });
        Ok((CpuStorage::F32(out), xl.shape().clone()))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        // The rotation is orthogonal, so its backward is the inverse rotation. cos/sin
        // are position constants and get no gradient.
        let inverse = Rope {
            inverse: !self.inverse,
        };
        let dx = grad.apply_op3_no_bwd(cos, sin, &inverse)?;
        Ok((Some(dx), None, None))
    }
}
