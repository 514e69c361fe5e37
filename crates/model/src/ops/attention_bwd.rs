//! Backward of the fused causal attention. One rayon task per (batch, kv head): it walks
//! the query heads sharing that kv head, so dK and dV are summed inside one task and never
//! raced on. Per query block, with P the saved probabilities:
//! dV += P^T dO,  dP = dO V^T,  dS = P (dP - rowsum(dO * O)),
//! dQ = scale dS K,  dK += scale dS^T Q.

use candle_core::{Result, Tensor};
use rayon::prelude::*;

use super::attention::{forward, matmul, Geometry, Heads, View, BLOCK};
use super::cpu::{cpu_f32, dot, SharedMut};

/// Gradients of q, k and v. `probs` are the forward's probabilities when it kept them;
/// otherwise they are recomputed here.
pub(super) fn backward(
    scale: f32,
    probs: Option<&Vec<f32>>,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    out: &Tensor,
    grad: &Tensor,
) -> Result<(Tensor, Tensor, Tensor)> {
    let g = Geometry::new(q.shape(), k.shape(), v.shape(), scale)?;
    let mut dq = vec![0f32; g.b * g.tq * g.hq * g.d];
    let mut dk = vec![0f32; g.b * g.tk * g.hkv * g.d];
    let mut dv = vec![0f32; g.b * g.tk * g.hkv * g.d];
    if !g.is_empty() {
        let (qs, ql) = q.storage_and_layout();
        let (ks, kl) = k.storage_and_layout();
        let (vs, vl) = v.storage_and_layout();
        let (os, ol) = out.storage_and_layout();
        let (gs, gl) = grad.storage_and_layout();
        let qh = Heads::new(cpu_f32(&qs)?, ql)?;
        let kh = Heads::new(cpu_f32(&ks)?, kl)?;
        let vh = Heads::new(cpu_f32(&vs)?, vl)?;
        let oh = Heads::new(cpu_f32(&os)?, ol)?;
        let doh = Heads::new(cpu_f32(&gs)?, gl)?;
        let recomputed;
        let probs = match probs {
            Some(p) => p.as_slice(),
            None => {
                let mut p = vec![0f32; g.b * g.hq * g.tq * g.tk];
                let mut o = vec![0f32; g.b * g.tq * g.hq * g.d];
                forward(&g, (qh, kh, vh), &mut o, Some(&mut p));
                recomputed = p;
                &recomputed
            }
        };
        let grads = Grads {
            dq: SharedMut::new(&mut dq),
            dk: SharedMut::new(&mut dk),
            dv: SharedMut::new(&mut dv),
        };
        (0..g.b * g.hkv).into_par_iter().for_each_init(
            || (vec![0f32; BLOCK * g.tk], vec![0f32; g.tq]),
            |(ds, di), bg| {
                let ins = Inputs {
                    q: qh,
                    k: kh,
                    v: vh,
                    o: oh,
                    dout: doh,
                    probs,
                };
                // SAFETY: task `bg` alone writes dK/dV of kv head (bg / hkv, bg % hkv)
                // and dQ of the query heads that share it.
                unsafe { group_backward(&g, (bg / g.hkv, bg % g.hkv), ins, grads, ds, di) }
            },
        );
    }
    let dev = q.device();
    Ok((
        Tensor::from_vec(dq, q.shape(), dev)?,
        Tensor::from_vec(dk, k.shape(), dev)?,
        Tensor::from_vec(dv, v.shape(), dev)?,
    ))
}

#[derive(Clone, Copy)]
struct Inputs<'a> {
    q: Heads,
    k: Heads,
    v: Heads,
    o: Heads,
    dout: Heads,
    probs: &'a [f32],
}

/// Contiguous outputs: dq (B, Tq, Hq, D), dk/dv (B, Tk, Hkv, D).
#[derive(Clone, Copy)]
struct Grads {
    dq: SharedMut,
    dk: SharedMut,
    dv: SharedMut,
}

/// Backward of the query heads sharing kv head `kv` of batch `bi`.
///
/// # Safety
/// No other thread may write this kv head's rows of dk/dv, or its query heads' rows of dq.
unsafe fn group_backward(
    g: &Geometry,
    (bi, kv): (usize, usize),
    x: Inputs,
    out: Grads,
    ds: &mut [f32],
    di: &mut [f32],
) {
    let (tq, tk, hq, hkv, d) = (g.tq, g.tk, g.hq, g.hkv, g.d);
    let kh = x.k.head(bi, kv);
    let vh = x.v.head(bi, kv);
    let dk = out.dk.ptr().wrapping_add(bi * tk * hkv * d + kv * d);
    let dv = out.dv.ptr().wrapping_add(bi * tk * hkv * d + kv * d);
    for hi in kv * g.rep()..(kv + 1) * g.rep() {
        let qh = x.q.head(bi, hi);
        let oh = x.o.head(bi, hi);
        let doh = x.dout.head(bi, hi);
        let p = &x.probs[(bi * hq + hi) * tq * tk..(bi * hq + hi + 1) * tq * tk];
        let dq = out.dq.ptr().wrapping_add(bi * tq * hq * d + hi * d);
        // rowsum(dO * O) equals rowsum(P * dP) and is cheaper: D wide, not Tk.
        for (i, di) in di.iter_mut().enumerate() {
            *di = row_dot(oh, doh, i, d);
        }
        for i0 in (0..tq).step_by(BLOCK) {
            let i1 = (i0 + BLOCK).min(tq);
            let (m, n) = (i1 - i0, g.visible(i1));
            let pb = View {
                ptr: p.as_ptr().wrapping_add(i0 * tk),
                rs: tk as isize,
                cs: 1,
            };
            let dob = doh.rows_from(i0);
            // dV[..n] += P[i0..i1, ..n]^T dO[i0..i1]
            matmul((n, d, m), dv, hkv * d, true, pb.t(), dob, 1.0);
            // dP = dO[i0..i1] V[..n]^T, into ds
            matmul((m, n, d), ds.as_mut_ptr(), tk, false, dob, vh.t(), 1.0);
            for (r, row) in ds.chunks_exact_mut(tk).take(m).enumerate() {
                let prow = &p[(i0 + r) * tk..(i0 + r) * tk + n];
                let dr = di[i0 + r];
                for (s, &p) in row[..n].iter_mut().zip(prow) {
                    *s = g.scale * p * (*s - dr);
                }
            }
            let dsb = View {
                ptr: ds.as_ptr(),
                rs: tk as isize,
                cs: 1,
            };
            // dQ[i0..i1] = dS K[..n]  (scale already folded into dS)
            matmul(
                (m, d, n),
                dq.wrapping_add(i0 * hq * d),
                hq * d,
                false,
                dsb,
                kh,
                1.0,
            );
            // dK[..n] += dS^T Q[i0..i1]
            matmul((n, d, m), dk, hkv * d, true, dsb.t(), qh.rows_from(i0), 1.0);
        }
    }
}

/// `sum_d a[i, d] * b[i, d]` for two strided (T, D) views.
///
/// # Safety
/// Row `i` must lie inside both views.
unsafe fn row_dot(a: View, b: View, i: usize, d: usize) -> f32 {
    if a.cs == 1 && b.cs == 1 {
        let a = std::slice::from_raw_parts(a.rows_from(i).ptr, d);
        let b = std::slice::from_raw_parts(b.rows_from(i).ptr, d);
        dot(a, b)
    } else {
        (0..d).map(|c| a.at(i, c) * b.at(i, c)).sum()
    }
}
