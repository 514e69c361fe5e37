//! Fused SwiGLU gate on CPU: `silu(gate) * up` in one pass, and both input gradients
//! in one pass back (the composite backward is about ten elementwise passes).
//!
//! [`swiglu_linear`] goes one step further for the MLP's first half: both projections
//! and the gate in one op. Its backward sums the input's two gradient products in one
//! buffer, and the two (N, F) projections never become graph nodes, so candle's
//! backprop does not zero-fill and add a gradient buffer for each of them.

use std::sync::Mutex;

use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::blas::{self, Mat};
use super::cpu::{buffer, contiguous, cpu_f32, exp, with_f32};
use super::linear::{product, view};

/// Elements per rayon task.
const CHUNK: usize = 16 * 1024;

/// gate/up (..., f) -> (..., f)
pub(super) fn swiglu(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    gate.apply_op2(up, SwiGlu)
}

struct SwiGlu;

#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

/// The gradients of `silu(g) * u` given the output's gradient `dy`: (dg, du).
fn gate_grads(g: &[f32], u: &[f32], dy: &[f32]) -> (Vec<f32>, Vec<f32>) {
    // d silu(g)/dg = s (1 + g (1 - s)) with s = sigmoid(g).
    let mut dg = vec![0f32; g.len()];
    let mut du = vec![0f32; g.len()];
    dg.par_chunks_mut(CHUNK)
        .zip(du.par_chunks_mut(CHUNK))
        .zip(g.par_chunks(CHUNK))
        .zip(u.par_chunks(CHUNK).zip(dy.par_chunks(CHUNK)))
        .for_each(|(((dg, du), g), (u, dy))| {
            let ins = g.iter().zip(u).zip(dy);
            for ((dg, du), ((&g, &u), &dy)) in dg.iter_mut().zip(du).zip(ins) {
                let s = sigmoid(g);
                *dg = dy * u * s * (1.0 + g * (1.0 - s));
                *du = dy * g * s;
            }
        });
    (dg, du)
}

/// `silu(g) * u` elementwise into a new buffer.
fn gate(g: &[f32], u: &[f32]) -> Vec<f32> {
    let mut out = vec![0f32; g.len()];
    out.par_chunks_mut(CHUNK)
        .zip(g.par_chunks(CHUNK).zip(u.par_chunks(CHUNK)))
        .for_each(|(out, (g, u))| {
            for ((o, &g), &u) in out.iter_mut().zip(g).zip(u) {
                *o = g * sigmoid(g) * u;
            }
        });
    out
}

impl CustomOp2 for SwiGlu {
    fn name(&self) -> &'static str {
        "fused-swiglu"
    }

    fn cpu_fwd(
        &self,
        gs: &CpuStorage,
        gl: &Layout,
        us: &CpuStorage,
        ul: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        if gl.shape() != ul.shape() {
            bail!(
                "swiglu: gate {:?} and up {:?} differ",
                gl.shape(),
                ul.shape()
            );
        }
        let g = contiguous::<f32>(gs, gl)?;
        let u = contiguous::<f32>(us, ul)?;
        Ok((CpuStorage::F32(gate(&g, &u)), gl.shape().clone()))
    }

    fn bwd(
        &self,
        gate: &Tensor,
        up: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dg, du) = with_f32(gate, |g| {
            with_f32(up, |u| with_f32(grad, |dy| Ok(gate_grads(g, u, dy))))
        })?;
        let dg = Tensor::from_vec(dg, gate.shape(), gate.device())?;
        let du = Tensor::from_vec(du, up.shape(), up.device())?;
        Ok((Some(dg), Some(du)))
    }
}

/// `silu(x @ w_gate^T) * (x @ w_up^T)`: x (N, C), w_gate/w_up (F, C) -> (N, F).
pub(super) fn swiglu_linear(x: &Tensor, w_gate: &Tensor, w_up: &Tensor) -> Result<Tensor> {
    x.apply_op3(w_gate, w_up, GateUp::default())
}

/// The op keeps its forward's two projections (N, F) for the backward: the same memory
/// the separate ops' outputs would hold in the graph.
#[derive(Default)]
struct GateUp {
    saved: Mutex<Option<(Vec<f32>, Vec<f32>)>>,
}

impl CustomOp3 for GateUp {
    fn name(&self) -> &'static str {
        "fused-gate-up"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
        us: &CpuStorage,
        ul: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = view(buffer(xs)?, xl, "input")?;
        let wg = view(buffer(gs)?, gl, "gate weight")?;
        let wu = view(buffer(us)?, ul, "up weight")?;
        if (wg.rows, wg.cols) != (wu.rows, wu.cols) {
            bail!(
                "swiglu_linear: gate weight {:?} and up weight {:?} differ",
                gl.shape(),
                ul.shape()
            );
        }
        if x.cols != wg.cols {
            bail!(
                "swiglu_linear: input has {} features but the weights expect {}",
                x.cols,
                wg.cols
            );
        }
        let g = product(x, wg.t());
        let u = product(x, wu.t());
        let out = gate(&g, &u);
        *self.saved.lock().unwrap_or_else(|e| e.into_inner()) = Some((g, u));
        Ok((CpuStorage::F32(out), Shape::from((x.rows, wg.rows))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w_gate: &Tensor,
        w_up: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let saved = self.saved.lock().unwrap_or_else(|e| e.into_inner());
        let Some((g, u)) = saved.as_ref() else {
            bail!("swiglu_linear: backward before forward");
        };
        let (n, c) = x.dims2()?;
        let (f, _) = w_gate.dims2()?;
        let (dg, du) = with_f32(grad, |dy| Ok(gate_grads(g, u, dy)))?;
        let (dg, du) = (Mat::dense(&dg, n, f), Mat::dense(&du, n, f));
        let (xs, xl) = x.storage_and_layout();
        let (gs, gl) = w_gate.storage_and_layout();
        let (us, ul) = w_up.storage_and_layout();
        let xm = view(cpu_f32(&xs)?, xl, "input")?;
        let wg = view(cpu_f32(&gs)?, gl, "gate weight")?;
        let wu = view(cpu_f32(&us)?, ul, "up weight")?;
        // dx (N, C) = dg . w_gate + du . w_up, summed in one buffer
        let mut dx = Vec::<f32>::with_capacity(n * c);
        // SAFETY: `dx` has room for the (N, C) product; the first call writes all of it
        // without reading, the second adds to it; the views' storages outlive the calls.
        unsafe {
            blas::product(dx.as_mut_ptr(), false, dg, wg);
            blas::product(dx.as_mut_ptr(), true, du, wu);
            dx.set_len(n * c);
        }
        // dw (F, C) = d^T (F, N) . x (N, C)
        let dwg = product(dg.t(), xm);
        let dwu = product(du.t(), xm);
        let dev = x.device();
        Ok((
            Some(Tensor::from_vec(dx, (n, c), dev)?),
            Some(Tensor::from_vec(dwg, (f, c), dev)?),
            Some(Tensor::from_vec(dwu, (f, c), dev)?),
        ))
    }
}
