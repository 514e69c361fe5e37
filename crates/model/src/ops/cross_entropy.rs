//! Fused mean cross-entropy on CPU. The logits are the largest activation of a small
//! model (N x V), so each direction is a single parallel pass over them: forward keeps
//! each row's log-sum-exp, backward turns it straight into `softmax - onehot`.

use std::sync::OnceLock;

use candle_core::{bail, CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::cpu::{contiguous, exp, max, rows_per_task, sum_exp_shift, with_f32};
use super::IGNORE;

/// logits (N, V) f32, targets (N) u32 -> scalar
pub(super) fn cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    logits.apply_op2(
        targets,
        CrossEntropy {
            lse: OnceLock::new(),
        },
    )
}

struct CrossEntropy {
    /// Per-row log-sum-exp from the forward pass, reused by the backward.
    lse: OnceLock<Vec<f32>>,
}

fn check(logits: &Shape, targets: &[u32]) -> Result<(usize, usize)> {
    let &[n, v] = logits.dims() else {
        bail!("cross_entropy: logits must be (N, V), got {logits:?}");
    };
    check_targets("cross_entropy", targets, n, v)?;
    Ok((n, v))
}

/// One target per row of logits, each `IGNORE` or inside the vocabulary of `v`; `op`
/// names the operation in the error.
pub(super) fn check_targets(op: &str, targets: &[u32], n: usize, v: usize) -> Result<()> {
    if targets.len() != n {
        bail!("{op}: {n} rows of logits but {} targets", targets.len());
    }
    if let Some(bad) = targets.iter().find(|&&t| t != IGNORE && t as usize >= v) {
        bail!("{op}: target {bad} is outside the vocabulary of {v}");
    }
    Ok(())
}

/// log-sum-exp of every row (0 for ignored rows, which are never read).
fn row_lse(x: &[f32], targets: &[u32], v: usize) -> Vec<f32> {
    let rows = rows_per_task(v);
    let mut lse = vec![0f32; targets.len()];
    lse.par_chunks_mut(rows)
        .zip(x.par_chunks(rows * v).zip(targets.par_chunks(rows)))
        .for_each(|(lse, (x, t))| {
            for ((l, row), &t) in lse.iter_mut().zip(x.chunks_exact(v)).zip(t) {
                if t != IGNORE {
                    let m = max(row);
                    *l = m + sum_exp_shift(row, m).ln();
                }
            }
        });
    lse
}

impl CustomOp2 for CrossEntropy {
    fn name(&self) -> &'static str {
        "fused-cross-entropy"
    }

    fn cpu_fwd(
        &self,
        ls: &CpuStorage,
        ll: &Layout,
        ts: &CpuStorage,
        tl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let targets = contiguous::<u32>(ts, tl)?;
        let (_n, v) = check(ll.shape(), &targets)?;
        let x = contiguous::<f32>(ls, ll)?;
        let lse = row_lse(&x, &targets, v);
        // summed in row order (cheap: one term per row) so the loss is the same bits
        // whatever the thread schedule
        let (sum, kept) = lse
            .iter()
            .zip(targets.iter())
            .enumerate()
            .filter(|(_, (_, &t))| t != IGNORE)
            .fold((0.0f64, 0usize), |(s, k), (i, (&l, &t))| {
                (s + (l - x[i * v + t as usize]) as f64, k + 1)
            });
        let loss = if kept == 0 { 0.0 } else { sum / kept as f64 };
        // A second forward of the same op value cannot happen (one op per call), so a
        // failed `set` would only mean the cache is already right.
        let _ = self.lse.set(lse);
        Ok((CpuStorage::F32(vec![loss as f32]), Shape::from(())))
    }

    fn bwd(
        &self,
        logits: &Tensor,
        targets: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = grad.flatten_all()?.to_vec1::<f32>()?;
        let g = g.first().copied().unwrap_or(0.0);
        let targets: Vec<u32> = targets.flatten_all()?.to_vec1()?;
        let (_n, v) = check(logits.shape(), &targets)?;
        let kept = targets.iter().filter(|&&t| t != IGNORE).count();
        if kept == 0 {
            return Ok((Some(logits.zeros_like()?), None));
        }
        let scale = g / kept as f32;
        let dx = with_f32(logits, |x| {
            let lse = match self.lse.get() {
                Some(lse) => std::borrow::Cow::Borrowed(lse),
                None => std::borrow::Cow::Owned(row_lse(x, &targets, v)),
            };
            let mut dx = vec![0f32; x.len()];
            let rows = rows_per_task(v);
            dx.par_chunks_mut(rows * v)
                .zip(x.par_chunks(rows * v))
                .zip(lse.par_chunks(rows).zip(targets.par_chunks(rows)))
                .for_each(|((dx, x), (lse, t))| {
                    let rows = dx.chunks_exact_mut(v).zip(x.chunks_exact(v));
                    for ((dx, x), (&l, &t)) in rows.zip(lse.iter().zip(t)) {
                        if t == IGNORE {
                            continue; // already zero
                        }
                        for (d, &x) in dx.iter_mut().zip(x) {
                            *d = exp(x - l) * scale;
                        }
                        dx[t as usize] -= scale;
                    }
                });
            Ok(dx)
        })?;
        let dx = Tensor::from_vec(dx, logits.shape(), logits.device())?;
        Ok((Some(dx), None))
    }
}
