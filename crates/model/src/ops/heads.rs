//! The attention's input projections on CPU: `x @ w^T` laid out as (B, T, H, D) in one
//! op, with the rotary embedding applied in place for queries and keys.
//!
//! As separate ops (a linear layer, a reshape, a rotation) each projection leaves three
//! nodes in the graph, and candle's backprop zero-fills and adds one gradient buffer per
//! node. Here there is one node, and the backward rotates the incoming gradient back
//! (the rotation is orthogonal) before the two gradient products.

use candle_core::{bail, CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::blas::Mat;
use super::cpu::with_f32;
use super::linear::{linear_grads, operands, product};

/// x (B * T, C), w (H * D, C) -> (B, T, H, D); with `rope`, cos/sin (T, D/2) rotate
/// each head ("rotate half": dimension i pairs with i + D/2).
pub(super) fn linear_heads(
    x: &Tensor,
    w: &Tensor,
    shape: (usize, usize, usize, usize),
    rope: Option<(&Tensor, &Tensor)>,
) -> Result<Tensor> {
    let rotation = match rope {
        Some((cos, sin)) => Some(Rotation {
            cos: cos.flatten_all()?.to_vec1()?,
            sin: sin.flatten_all()?.to_vec1()?,
        }),
        None => None,
    };
    x.apply_op2(w, Heads { shape, rotation })
}

/// The angles' cosines and sines, (T, D/2) row-major.
struct Rotation {
    cos: Vec<f32>,
    sin: Vec<f32>,
}

impl Rotation {
    /// Rotates every head of `buf` (B * T rows of H heads of D) by its time step's
    /// angles, or by their opposite when `sign` is -1.
    fn apply(&self, buf: &mut [f32], t: usize, d: usize, width: usize, sign: f32) {
        let half = d / 2;
        buf.par_chunks_mut(width).enumerate().for_each(|(bt, row)| {
            let ti = bt % t;
            let c = &self.cos[ti * half..(ti + 1) * half];
            let s = &self.sin[ti * half..(ti + 1) * half];
            for head in row.chunks_exact_mut(d) {
                let (x1, x2) = head.split_at_mut(half);
                for i in 0..half {
                    let (a, b, s) = (x1[i], x2[i], sign * s[i]);
                    x1[i] = a * c[i] - b * s;
                    x2[i] = b * c[i] + a * s;
                }
            }
        });
    }
}

struct Heads {
    shape: (usize, usize, usize, usize),
    rotation: Option<Rotation>,
}

impl CustomOp2 for Heads {
    fn name(&self) -> &'static str {
        "fused-linear-heads"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (b, t, h, d) = self.shape;
        let (x, w) = operands(xs, xl, ws, wl, "linear_heads")?;
        if x.rows != b * t || w.rows != h * d {
            bail!(
                "linear_heads: ({}, {}) . ({}, {})^T does not make (B={b}, T={t}, H={h}, D={d})",
                x.rows,
                x.cols,
                w.rows,
                w.cols
            );
        }
        let mut out = product(x, w.t());
        if let Some(r) = &self.rotation {
            if d % 2 != 0 || r.cos.len() != t * d / 2 || r.sin.len() != t * d / 2 {
                bail!(
                    "linear_heads: rotary tables do not match (T={t}, D/2={})",
                    d / 2
                );
            }
            if !out.is_empty() {
                r.apply(&mut out, t, d, h * d, 1.0);
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((b, t, h, d))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (_, t, h, d) = self.shape;
        let n = x.dims2()?.0;
        let o = h * d;
        let dz = with_f32(grad, |g| {
            let mut dz = g.to_vec();
            if let Some(r) = &self.rotation {
                if !dz.is_empty() {
                    r.apply(&mut dz, t, d, o, -1.0);
                }
            }
            Ok(dz)
        })?;
        let dzm = Mat::dense(&dz, n, o);
        // the rotated-back gradient is the plain projection's
        let (dx, dw) = linear_grads(dzm, x, w)?;
        Ok((Some(dx), Some(dw)))
    }
}
