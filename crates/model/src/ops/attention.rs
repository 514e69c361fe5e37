//! Fused causal attention on CPU with grouped-query heads. Each (batch, head) is a rayon
//! task that runs `gemm` on strided views of q/k/v, so the usual (B, T, H, D) ->
//! (B, H, T, D) transposes and the kv-head repeat are never materialised. Query rows go
//! in blocks, and a block only multiplies the keys its last row can see, which skips most
//! of the masked upper triangle.
//!
//! The softmax probabilities (B, Hq, Tq, Tk) are kept for the backward when an input
//! needs a gradient: that trades memory (12 MB per layer at B=8, T=256, H=6) for not
//! recomputing QK^T. The backward lives in `attention_bwd.rs`.

use std::sync::OnceLock;

use candle_core::{bail, CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::attention_bwd;
use super::blas::{product_serial, Mat};
use super::cpu::{buffer, softmax_row, SharedMut};

/// Query rows per block. Smaller blocks skip more of the masked triangle but give gemm
/// thinner matrices; 64 measured best at T=256, D=64.
pub(super) const BLOCK: usize = 64;

/// q (B, Tq, Hq, D), k/v (B, Tk, Hkv, D) -> (B, Tq, Hq, D)
pub(super) fn causal_attention(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64) -> Result<Tensor> {
    let op = CausalAttention {
        scale: scale as f32,
        keep_probs: q.track_op() || k.track_op() || v.track_op(),
        probs: OnceLock::new(),
    };
    q.apply_op3(k, v, op)
}

struct CausalAttention {
    scale: f32,
    /// Whether to keep `probs` for a backward pass (false for inference).
    keep_probs: bool,
    /// Softmax probabilities (B, Hq, Tq, Tk), zero above the causal diagonal.
    probs: OnceLock<Vec<f32>>,
}

/// Sizes of one attention call, checked once.
#[derive(Clone, Copy, Debug)]
pub(super) struct Geometry {
    pub b: usize,
    pub tq: usize,
    pub tk: usize,
    pub hq: usize,
    pub hkv: usize,
    pub d: usize,
    pub scale: f32,
}

impl Geometry {
    pub fn new(q: &Shape, k: &Shape, v: &Shape, scale: f32) -> Result<Self> {
        let (&[b, tq, hq, d], &[bk, tk, hkv, dk]) = (q.dims(), k.dims()) else {
            bail!("causal_attention: q {q:?} and k {k:?} must be (B, T, H, D)");
        };
        if v != k {
            bail!("causal_attention: k {k:?} and v {v:?} differ");
        }
        if bk != b || dk != d {
            bail!("causal_attention: q {q:?} and k {k:?} disagree on batch or head size");
        }
        if hkv == 0 || hq % hkv != 0 {
            bail!("causal_attention: {hq} query heads cannot share {hkv} kv heads");
        }
        if tk < tq {
            bail!("causal_attention: {tq} queries but only {tk} keys");
        }
        Ok(Self {
            b,
            tq,
            tk,
            hq,
            hkv,
            d,
            scale,
        })
    }

    /// Query heads per kv head.
    pub fn rep(&self) -> usize {
        self.hq / self.hkv
    }

    /// Absolute position of query 0: queries see keys `0..=i + offset`.
    pub fn offset(&self) -> usize {
        self.tk - self.tq
    }

    /// Keys visible to query rows `..end`.
    pub fn visible(&self, end: usize) -> usize {
        (end + self.offset()).min(self.tk)
    }

    pub fn is_empty(&self) -> bool {
        self.b * self.tq * self.hq * self.d == 0
    }
}

/// A read-only (B, T, H, D) tensor seen through its strides.
#[derive(Clone, Copy)]
pub(super) struct Heads {
    ptr: *const f32,
    sb: usize,
    st: usize,
    sh: usize,
    sd: usize,
}

// SAFETY: only read, while the storage guard that owns the data is held by the caller.
unsafe impl Send for Heads {}
unsafe impl Sync for Heads {}

impl Heads {
    pub fn new(buf: &[f32], l: &Layout) -> Result<Self> {
        let s = l.stride();
        if s.len() != 4 {
            bail!(
                "causal_attention: expected a 4-d layout, got {:?}",
                l.shape()
            );
        }
        // The farthest element must lie inside the buffer for the raw reads to be sound.
        let last = l.start_offset()
            + l.dims()
                .iter()
                .zip(s)
                .map(|(&n, &st)| n.saturating_sub(1) * st)
                .sum::<usize>();
        if l.shape().elem_count() > 0 && last >= buf.len() {
            bail!("causal_attention: layout reaches past its storage");
        }
        Ok(Self {
            // SAFETY: start_offset is inside the buffer (checked above when non-empty).
            ptr: buf.as_ptr().wrapping_add(l.start_offset()),
            sb: s[0],
            st: s[1],
            sh: s[2],
            sd: s[3],
        })
    }

    /// The (T, D) matrix of batch `bi`, head `hi`.
    pub fn head(&self, bi: usize, hi: usize) -> View {
        View {
            ptr: self.ptr.wrapping_add(bi * self.sb + hi * self.sh),
            rs: self.st as isize,
            cs: self.sd as isize,
        }
    }
}

/// A strided matrix view for `gemm`.
#[derive(Clone, Copy)]
pub(super) struct View {
    pub ptr: *const f32,
    pub rs: isize,
    pub cs: isize,
}

impl View {
    pub fn t(self) -> Self {
        Self {
            ptr: self.ptr,
            rs: self.cs,
            cs: self.rs,
        }
    }

    pub fn rows_from(self, r: usize) -> Self {
        Self {
            ptr: self.ptr.wrapping_offset(r as isize * self.rs),
            ..self
        }
    }

    /// Element `(r, c)`.
    ///
    /// # Safety
    /// `(r, c)` must be inside the matrix this view was made for.
    pub unsafe fn at(self, r: usize, c: usize) -> f32 {
        *self.ptr.offset(r as isize * self.rs + c as isize * self.cs)
    }
}

/// `dst (m x n) = [dst +] beta * lhs (m x k) . rhs (k x n)`, single-threaded (the caller
/// is already one of many rayon tasks).
///
/// # Safety
/// All views must cover the given sizes, and `dst` must not be written by anyone else.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn matmul(
    (m, n, k): (usize, usize, usize),
    dst: *mut f32,
    dst_rs: usize,
    accumulate: bool,
    lhs: View,
    rhs: View,
    beta: f32,
) {
    let view = |v: View, rows: usize, cols: usize| Mat {
        ptr: v.ptr,
        rows,
        cols,
        rs: v.rs,
        cs: v.cs,
    };
    product_serial(
        dst,
        dst_rs,
        accumulate,
        view(lhs, m, k),
        view(rhs, k, n),
        beta,
    )
}

/// Forward of every (batch, query head): fills `out` (B, Tq, Hq, D) and, when given,
/// `probs` (B, Hq, Tq, Tk); without it each task uses a scratch buffer.
pub(super) fn forward(
    g: &Geometry,
    (q, k, v): (Heads, Heads, Heads),
    out: &mut [f32],
    probs: Option<&mut [f32]>,
) {
    let out = SharedMut::new(out);
    let (tq, tk, hq) = (g.tq, g.tk, g.hq);
    let head = |bh: usize, p: &mut [f32]| {
        // SAFETY: task `bh` is the only writer of head (bh / hq, bh % hq) of `out`.
        unsafe { head_forward(g, (bh / hq, bh % hq), (q, k, v), out, p) }
    };
    match probs {
        Some(probs) => probs
            .par_chunks_mut(tq * tk)
            .enumerate()
            .for_each(|(bh, p)| head(bh, p)),
        None => (0..g.b * hq)
            .into_par_iter()
            .for_each_init(|| vec![0f32; tq * tk], |p, bh| head(bh, p)),
    }
}

/// One (batch, query head) of the forward; `p` is its (Tq, Tk) probability matrix.
///
/// # Safety
/// No other thread may write head `hi` of batch `bi` in `out` meanwhile.
unsafe fn head_forward(
    g: &Geometry,
    (bi, hi): (usize, usize),
    (q, k, v): (Heads, Heads, Heads),
    out: SharedMut,
    p: &mut [f32],
) {
    let (tq, tk, hq, d) = (g.tq, g.tk, g.hq, g.d);
    let (qh, kh, vh) = (
        q.head(bi, hi),
        k.head(bi, hi / g.rep()),
        v.head(bi, hi / g.rep()),
    );
    let o = out.ptr().wrapping_add(bi * tq * hq * d + hi * d);
    for i0 in (0..tq).step_by(BLOCK) {
        let i1 = (i0 + BLOCK).min(tq);
        let n = g.visible(i1);
        let pb = &mut p[i0 * tk..i1 * tk];
        // SAFETY: pb holds (i1 - i0) rows of tk >= n; q/k/v views cover these rows.
        matmul(
            (i1 - i0, n, d),
            pb.as_mut_ptr(),
            tk,
            false,
            qh.rows_from(i0),
            kh.t(),
            g.scale,
        );
        for (r, row) in pb.chunks_exact_mut(tk).enumerate() {
            let lim = g.visible(i0 + r + 1);
            softmax_row(&mut row[..lim]);
            row[lim..].fill(0.0);
        }
        let pv = View {
            ptr: pb.as_ptr(),
            rs: tk as isize,
            cs: 1,
        };
        // SAFETY: rows i0..i1 of head (bi, hi) in `out`, the caller's to write.
        matmul(
            (i1 - i0, d, n),
            o.wrapping_add(i0 * hq * d),
            hq * d,
            false,
            pv,
            vh,
            1.0,
        );
    }
}

impl CustomOp3 for CausalAttention {
    fn name(&self) -> &'static str {
        "fused-causal-attention"
    }

    fn cpu_fwd(
        &self,
        qs: &CpuStorage,
        ql: &Layout,
        ks: &CpuStorage,
        kl: &Layout,
        vs: &CpuStorage,
        vl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = Geometry::new(ql.shape(), kl.shape(), vl.shape(), self.scale)?;
        let mut out = vec![0f32; g.b * g.tq * g.hq * g.d];
        if g.is_empty() {
            return Ok((CpuStorage::F32(out), ql.shape().clone()));
        }
        let q = Heads::new(buffer::<f32>(qs)?, ql)?;
        let k = Heads::new(buffer::<f32>(ks)?, kl)?;
        let v = Heads::new(buffer::<f32>(vs)?, vl)?;
        if self.keep_probs {
            let mut probs = vec![0f32; g.b * g.hq * g.tq * g.tk];
            forward(&g, (q, k, v), &mut out, Some(&mut probs));
            // One op value serves one forward, so the cell is always empty here.
            let _ = self.probs.set(probs);
        } else {
            forward(&g, (q, k, v), &mut out, None);
        }
        Ok((CpuStorage::F32(out), ql.shape().clone()))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dq, dk, dv) =
            attention_bwd::backward(self.scale, self.probs.get(), q, k, v, res, grad)?;
        Ok((Some(dq), Some(dk), Some(dv)))
    }
}
