//! Fused RMSNorm on CPU: one parallel pass forward, one backward giving both the input
//! and the weight gradient. The composite version costs ~6 allocating passes each way.

use candle_core::{bail, CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::cpu::{contiguous, dot, rows_per_task, with_f32};

/// x (..., d), weight (d) -> (..., d)
pub(super) fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    x.apply_op2(weight, RmsNorm { eps: eps as f32 })
}

struct RmsNorm {
    eps: f32,
}

/// `1 / sqrt(mean(x^2) + eps)` of one row.
#[inline]
fn inv_rms(row: &[f32], eps: f32) -> f32 {
    1.0 / (dot(row, row) / row.len() as f32 + eps).sqrt()
}

fn width(x: &Shape, w_len: usize) -> Result<usize> {
    let d = x.dims().last().copied().unwrap_or(1);
    if d != w_len {
        bail!("rms_norm: input {x:?} has last dim {d}, weight has {w_len} elements");
    }
    Ok(d)
}

impl CustomOp2 for RmsNorm {
    fn name(&self) -> &'static str {
        "fused-rms-norm"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = contiguous::<f32>(xs, xl)?;
        let w = contiguous::<f32>(ws, wl)?;
        let d = width(xl.shape(), w.len())?;
        let mut out = vec![0f32; x.len()];
        if d > 0 {
            let chunk = d * rows_per_task(d);
            out.par_chunks_mut(chunk)
                .zip(x.par_chunks(chunk))
                .for_each(|(out, x)| {
                    for (o, x) in out.chunks_exact_mut(d).zip(x.chunks_exact(d)) {
                        let r = inv_rms(x, self.eps);
                        for ((o, &x), &w) in o.iter_mut().zip(x).zip(w.iter()) {
                            *o = x * r * w;
                        }
                    }
                });
        }
        Ok((CpuStorage::F32(out), xl.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        // y = x r w with r = (mean(x^2) + eps)^-1/2; with g = dy w:
        // dx = r (g - x r^2 mean(g x)),  dw = sum over rows of dy x r.
        let d = width(x.shape(), w.elem_count())?;
        let (dx, dw) = with_f32(x, |x| {
            with_f32(w, |w| {
                with_f32(grad, |dy| Ok(backward(x, w, dy, d, self.eps)))
            })
        })?;
        let dx = Tensor::from_vec(dx, x.shape(), x.device())?;
        let dw = Tensor::from_vec(dw, w.shape(), w.device())?;
        Ok((Some(dx), Some(dw)))
    }
}

fn backward(x: &[f32], w: &[f32], dy: &[f32], d: usize, eps: f32) -> (Vec<f32>, Vec<f32>) {
    let mut dx = vec![0f32; x.len()];
    if d == 0 || x.is_empty() {
        return (dx, vec![0f32; d]);
    }
    let chunk = d * rows_per_task(d);
    // Each fixed chunk of rows sums its contribution to dw in its own buffer; the
    // buffers are then added in chunk order, so no two threads write the same dw
    // element and the result does not depend on how rayon scheduled the chunks
    // (exact resume needs bit-identical gradients run to run).
    let partials: Vec<Vec<f32>> = dx
        .par_chunks_mut(chunk)
        .zip(x.par_chunks(chunk))
        .zip(dy.par_chunks(chunk))
        .map(|((dx, x), dy)| {
            let mut dw = vec![0f32; d];
            let rows = dx.chunks_exact_mut(d).zip(x.chunks_exact(d));
            for ((dx, x), dy) in rows.zip(dy.chunks_exact(d)) {
                let r = inv_rms(x, eps);
                for ((dx, &dy), &w) in dx.iter_mut().zip(dy).zip(w) {
                    *dx = dy * w; // g, kept in dx until the row's mean is known
                }
                let c = r * r * dot(dx, x) / d as f32;
                for (((dx, &x), &dy), dw) in dx.iter_mut().zip(x).zip(dy).zip(dw.iter_mut()) {
                    *dx = r * (*dx - x * c);
                    *dw += dy * x * r;
                }
            }
            dw
        })
        .collect();
    let mut dw = vec![0f32; d];
    for p in &partials {
        for (a, b) in dw.iter_mut().zip(p) {
            *a += b;
        }
    }
    (dx, dw)
}
