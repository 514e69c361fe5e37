//! The training-path linear layer on CPU: `x @ w^T` as one custom op whose backward
//! writes both gradients straight in their final layout.
//!
//! Through candle's ops the same layer is a transpose and a matmul: every product lands
//! in a zero-filled buffer, and the weight's gradient comes out as the transpose of an
//! (in, out) matrix, which the gradient sum then walks with strides. Here each of the
//! three products (forward, input gradient, weight gradient) is one gemm call into an
//! unfilled buffer, and `dw` is produced as (out, in) directly.

use std::sync::Mutex;

use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::blas::{self, Mat};
use super::cpu::{buffer, contiguous, cpu_f32, exp, max, rows_per_task, sum_exp_shift};
use super::cross_entropy::check_targets;
use super::IGNORE;

/// x (N, in), w (out, in) -> (N, out).
pub(super) fn linear(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    x.apply_op2(w, Linear)
}

struct Linear;

/// The view `layout` makes of `data`, a storage's whole buffer.
pub(super) fn view(data: &[f32], layout: &Layout, what: &str) -> Result<Mat> {
    let &[rows, cols] = layout.dims() else {
        bail!("linear: {what} must be 2-D, got {:?}", layout.shape());
    };
    let &[rs, cs] = layout.stride() else {
        unreachable!("a 2-D layout has two strides")
    };
    let start = layout.start_offset();
    if rows * cols > 0 {
        let last = start + (rows - 1) * rs + (cols - 1) * cs;
        if last >= data.len() {
            bail!("linear: {what} layout reaches past its storage");
        }
    }
    Ok(Mat {
        ptr: data[start..].as_ptr(),
        rows,
        cols,
        rs: rs as isize,
        cs: cs as isize,
    })
}

/// `a (m, k) . b (k, n)` into a new row-major (m, n) buffer.
pub(super) fn product(a: Mat, b: Mat) -> Vec<f32> {
    let len = a.rows * b.cols;
    let mut dst = Vec::<f32>::with_capacity(len);
    // SAFETY: `dst` has room for the m * n product, which `blas::product` writes in full
    // (it does not read it), so the length can be set once it returns.
    unsafe {
        blas::product(dst.as_mut_ptr(), false, a, b);
        dst.set_len(len);
    }
    dst
}

/// The input (N, in) and weight (out, in) of `x @ w^T` as views, checked to agree on the
/// features; `op` names the operation in errors.
pub(super) fn operands(
    xs: &CpuStorage,
    xl: &Layout,
    ws: &CpuStorage,
    wl: &Layout,
    op: &str,
) -> Result<(Mat, Mat)> {
    let x = view(buffer(xs)?, xl, "input")?;
    let w = view(buffer(ws)?, wl, "weight")?;
    if x.cols != w.cols {
        bail!(
            "{op}: input has {} features but the weight expects {}",
            x.cols,
            w.cols
        );
    }
    Ok((x, w))
}

/// The gradients of `x @ w^T` for x (N, in), w (out, in), given the output's gradient
/// `dy` (N, out): dx (N, in) = dy . w and dw (out, in) = dy^T . x.
pub(super) fn linear_grads(dy: Mat, x: &Tensor, w: &Tensor) -> Result<(Tensor, Tensor)> {
    let (xs, xl) = x.storage_and_layout();
    let (ws, wl) = w.storage_and_layout();
    let xm = view(cpu_f32(&xs)?, xl, "input")?;
    let wm = view(cpu_f32(&ws)?, wl, "weight")?;
    let dx = product(dy, wm);
    let dw = product(dy.t(), xm);
    Ok((
        Tensor::from_vec(dx, (xm.rows, xm.cols), x.device())?,
        Tensor::from_vec(dw, (wm.rows, wm.cols), w.device())?,
    ))
}

impl CustomOp2 for Linear {
    fn name(&self) -> &'static str {
        "fused-linear"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, w) = operands(xs, xl, ws, wl, "linear")?;
        let out = product(x, w.t());
        Ok((CpuStorage::F32(out), Shape::from((x.rows, w.rows))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (gs, gl) = grad.storage_and_layout();
        let dy = view(cpu_f32(&gs)?, gl, "gradient")?;
        let (dx, dw) = linear_grads(dy, x, w)?;
        Ok((Some(dx), Some(dw)))
    }
}

/// `res + a @ w^T`: res (N, C), a (N, K) or any contiguous shape of N rows of K (the
/// attention's (B, T, H, D) heads), w (C, K) -> (N, C). The product is accumulated onto a
/// copy of the residual stream, and the graph holds one node instead of a linear layer,
/// a reshape and an add.
pub(super) fn linear_residual(res: &Tensor, a: &Tensor, w: &Tensor) -> Result<Tensor> {
    res.apply_op3(a, w, Residual)
}

struct Residual;

/// `data` under `layout` as a matrix of `rows` rows: a 2-D view as it is, or a contiguous
/// tensor of any rank read as rows of `len / rows`.
fn rows_view(data: &[f32], layout: &Layout, rows: usize, what: &str) -> Result<Mat> {
    if layout.dims().len() == 2 {
        return view(data, layout, what);
    }
    let Some((start, end)) = layout.contiguous_offsets() else {
        bail!(
            "linear_residual: {what} {:?} is neither 2-D nor contiguous",
            layout.shape()
        );
    };
    let len = end - start;
    if rows == 0 || len % rows != 0 {
        bail!(
            "linear_residual: {what} {:?} does not split into {rows} rows",
            layout.shape()
        );
    }
    Ok(Mat::dense(&data[start..end], rows, len / rows))
}

impl CustomOp3 for Residual {
    fn name(&self) -> &'static str {
        "fused-linear-residual"
    }

    fn cpu_fwd(
        &self,
        rs: &CpuStorage,
        rl: &Layout,
        as_: &CpuStorage,
        al: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let &[n, c] = rl.dims() else {
            bail!(
                "linear_residual: the residual must be 2-D, got {:?}",
                rl.shape()
            );
        };
        let a = rows_view(buffer(as_)?, al, n, "input")?;
        let w = view(buffer(ws)?, wl, "weight")?;
        if (w.rows, w.cols) != (c, a.cols) {
            bail!(
                "linear_residual: weight {:?} does not map {} features onto the residual's {c}",
                wl.shape(),
                a.cols
            );
        }
        let mut out = contiguous::<f32>(rs, rl)?.into_owned();
        // SAFETY: `out` holds the (N, C) residual, which the product adds to; the views'
        // storages are borrowed for the call.
        unsafe { blas::product(out.as_mut_ptr(), true, a, w.t()) };
        Ok((CpuStorage::F32(out), rl.shape().clone()))
    }

    fn bwd(
        &self,
        _res: &Tensor,
        a: &Tensor,
        w: &Tensor,
        _out: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let n = grad.dims2()?.0;
        let (gs, gl) = grad.storage_and_layout();
        let g = view(cpu_f32(&gs)?, gl, "gradient")?;
        // heads (B, T, H, D) are N rows of K for the products (a free reshape: the
        // forward took them only when contiguous)
        let a2 = match a.rank() {
            2 => a.clone(),
            _ => a.detach().reshape((n, a.elem_count() / n))?,
        };
        let (da, dw) = linear_grads(g, &a2, w)?;
        Ok((Some(grad.clone()), Some(da.reshape(a.shape())?), Some(dw)))
    }
}

/// Mean cross-entropy of the logits `x @ w^T` against `targets`, without ever holding
/// the (N, V) logits: x (N, C), w (V, C), targets (N) u32 -> scalar.
///
/// The rows that count (targets other than `IGNORE`) go through in blocks of a few
/// hundred. Each block's logits are computed into one reused buffer, turned into their
/// loss and, when a gradient will be wanted, in place into `softmax - onehot`, which
/// two more products turn into the block's rows of `dx` and its share of `dw`. The
/// backward then only scales those by the incoming gradient. Against the separate
/// head and loss this saves writing, zero-filling and re-reading the logits and their
/// gradient (each N x V), and the rows that do not count cost nothing.
pub(super) fn linear_cross_entropy(x: &Tensor, w: &Tensor, targets: &Tensor) -> Result<Tensor> {
    linear_cross_entropy_in(x, w, targets, block_rows(w.dim(0)?))
}

/// [`linear_cross_entropy`] in blocks of `block` rows.
pub(super) fn linear_cross_entropy_in(
    x: &Tensor,
    w: &Tensor,
    targets: &Tensor,
    block: usize,
) -> Result<Tensor> {
    let op = LinearCrossEntropy {
        block: block.max(1),
        grads: x.track_op() || w.track_op(),
        saved: Mutex::new(None),
    };
    x.apply_op3(w, targets, op)
}

struct LinearCrossEntropy {
    /// Rows per block.
    block: usize,
    /// Whether the forward also computes the gradients (some input is trained).
    grads: bool,
    /// d(loss)/dx and d(loss)/dw from the forward, taken by the backward.
    saved: Mutex<Grads>,
}

/// Logit rows per block: about 4 MB of them, so a block's logits stay in cache
/// between the products that write and read them.
fn block_rows(v: usize) -> usize {
    ((1usize << 20) / v.max(1)).clamp(16, 1024)
}

type Grads = Option<(Vec<f32>, Vec<f32>)>;

/// The loss and, with `grads`, (dx, dw) of the mean cross-entropy, in blocks of `block`
/// rows.
fn head_loss(x: Mat, w: Mat, targets: &[u32], grads: bool, block: usize) -> Result<(f32, Grads)> {
    let (n, c, v) = (x.rows, x.cols, w.rows);
    if w.cols != c {
        bail!(
            "linear_cross_entropy: hidden states have {c} features but the head expects {}",
            w.cols
        );
    }
    check_targets("linear_cross_entropy", targets, n, v)?;
    let kept: Vec<usize> = (0..n).filter(|&i| targets[i] != IGNORE).collect();
    let mut out_grads = grads.then(|| (vec![0f32; n * c], vec![0f32; v * c]));
    if kept.is_empty() {
        return Ok((0.0, out_grads));
    }
    // the rows that count, gathered when some do not
    let gathered: Vec<f32>;
    let xk = if kept.len() == n {
        x
    } else {
        gathered = kept
            .iter()
            .flat_map(|&i| {
                // SAFETY: i < n and j < c are inside the view `x` (checked by `view`).
                (0..c).map(move |j| unsafe { *x.ptr.offset(i as isize * x.rs + j as isize * x.cs) })
            })
            .collect();
        Mat {
            ptr: gathered.as_ptr(),
            rows: kept.len(),
            cols: c,
            rs: c as isize,
            cs: 1,
        }
    };
    let tk: Vec<u32> = kept.iter().map(|&i| targets[i]).collect();
    let m = kept.len();
    let scale = 1.0 / m as f32;
    let block = block.min(m);
    let mut logits = vec![0f32; block * v];
    let mut row_loss = vec![0f32; m];
    let mut dxk = if grads && m < n {
        vec![0f32; m * c]
    } else {
        Vec::new()
    };
    for start in (0..m).step_by(block) {
        let r = block.min(m - start);
        let xb = xk.rows_from(start, r);
        let buf = &mut logits[..r * v];
        // SAFETY: `buf` holds r x v; xb and w are live views of the right shapes.
        unsafe { blas::product(buf.as_mut_ptr(), false, xb, w.t()) };
        let rows = rows_per_task(v);
        buf.par_chunks_mut(rows * v)
            .zip(row_loss[start..start + r].par_chunks_mut(rows))
            .zip(tk[start..start + r].par_chunks(rows))
            .for_each(|((buf, loss), t)| {
                for ((row, l), &t) in buf.chunks_exact_mut(v).zip(loss).zip(t) {
                    let mx = max(row);
                    let lse = mx + sum_exp_shift(row, mx).ln();
                    *l = lse - row[t as usize];
                    if grads {
                        for z in row.iter_mut() {
                            *z = exp(*z - lse) * scale;
                        }
                        row[t as usize] -= scale;
                    }
                }
            });
        if let Some((dx, dw)) = out_grads.as_mut() {
            let g = Mat {
                ptr: buf.as_ptr(),
                rows: r,
                cols: v,
                rs: v as isize,
                cs: 1,
            };
            let dx_rows = if m < n {
                &mut dxk[start * c..]
            } else {
                &mut dx[start * c..]
            };
            // SAFETY: dx_rows has room for r x c, dw for v x c; all views are live.
            unsafe {
                blas::product(dx_rows.as_mut_ptr(), false, g, w);
                blas::product(dw.as_mut_ptr(), start > 0, g.t(), xb);
            }
        }
    }
    if let Some((dx, _)) = out_grads.as_mut() {
        if m < n {
            for (k, &i) in kept.iter().enumerate() {
                dx[i * c..(i + 1) * c].copy_from_slice(&dxk[k * c..(k + 1) * c]);
            }
        }
    }
    // summed in row order, so the loss is the same bits whatever the thread schedule
    let sum: f64 = row_loss.iter().map(|&l| l as f64).sum();
    Ok(((sum / m as f64) as f32, out_grads))
}

impl CustomOp3 for LinearCrossEntropy {
    fn name(&self) -> &'static str {
        "fused-linear-cross-entropy"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        ts: &CpuStorage,
        tl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = view(buffer(xs)?, xl, "hidden states")?;
        let w = view(buffer(ws)?, wl, "head")?;
        let targets = contiguous::<u32>(ts, tl)?;
        let (loss, grads) = head_loss(x, w, &targets, self.grads, self.block)?;
        *self.saved.lock().expect("saved gradients") = grads;
        Ok((CpuStorage::F32(vec![loss]), Shape::from(())))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        targets: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let g = grad
            .flatten_all()?
            .to_vec1::<f32>()?
            .first()
            .copied()
            .unwrap_or(0.0);
        let saved = self.saved.lock().expect("saved gradients").take();
        let (mut dx, mut dw) = match saved {
            Some(s) => s,
            // a second backward through the same graph: compute them again
            None => {
                let (xs, xl) = x.storage_and_layout();
                let (ws, wl) = w.storage_and_layout();
                let t: Vec<u32> = targets.flatten_all()?.to_vec1()?;
                let xm = view(cpu_f32(&xs)?, xl, "hidden states")?;
                let wm = view(cpu_f32(&ws)?, wl, "head")?;
                head_loss(xm, wm, &t, true, self.block)?
                    .1
                    .expect("gradients were asked for")
            }
        };
        if g != 1.0 {
            dx.par_iter_mut()
                .chain(dw.par_iter_mut())
                .for_each(|d| *d *= g);
        }
        let dx = Tensor::from_vec(dx, x.shape(), x.device())?;
        let dw = Tensor::from_vec(dw, w.shape(), w.device())?;
        Ok((Some(dx), Some(dw), None))
    }
}
