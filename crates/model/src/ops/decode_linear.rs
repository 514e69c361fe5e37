//! The linear layer of a decoding step, for a handful of rows: inference only (no
//! backward), so it is not among this module's public, differentiable operations.

use candle_core::{bail, CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// `x @ w^T` for the few rows of a decoding step: x (B, C), w (out, C) -> (B, out).
///
/// For 2 to 16 rows on CPU this skips gemm, which for so few rows repacks the whole
/// weight matrix on every call (55% of a batch-8 decode step, measured), for
/// [`DecodeLinear`]: every weight row is read once and dotted with all B rows of x,
/// which stay in L1. One row is gemm's gemv, and more than 16 rows gemm proper: both
/// faster there.
pub(crate) fn linear_rows(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let fused = |t: &Tensor| t.device().is_cpu() && t.dtype() == DType::F32 && t.is_contiguous();
    if (2..=16).contains(&x.dim(0)?) && fused(x) && fused(w) {
        return x.apply_op2_no_bwd(w, &DecodeLinear);
    }
    x.matmul(&w.t()?)
}

/// The CPU kernel of [`linear_rows`] (inference only: no backward). Each output sums in
/// the same order whatever the number of rows, so a sequence gets the same logits in a
/// batch of 2 as in a batch of 16.
struct DecodeLinear;

/// Lanes per accumulator: one AVX register of f32.
const LANES: usize = 8;

/// Weight rows per rayon task: 32 rows (48 KB at C = 384) keep both cores busy on the
/// smallest matrices.
const TASK_ROWS: usize = 32;

/// Weight rows per tile: each load of x serves 4 rows, each load of w up to 4 rows of x.
const TILE_ROWS: usize = 4;

/// Dots of `R` weight rows with up to 4 rows of x (`x.len()` of them; the rest of each
/// output row is 0): `out[r][c] = w[r] . x[c]`. Every output sums its LANES partial sums
/// as ((0+1)+(2+3))+((4+5)+(6+7)), then the tail, whatever R and x.len() are.
#[inline(always)]
fn dot_tile<const R: usize>(w: [&[f32]; R], x: &[&[f32]]) -> [[f32; 4]; R] {
    let k = w[0].len();
    assert!(x.len() <= 4 && w.iter().chain(x).all(|s| s.len() == k));
    let body = k / LANES * LANES;
    let mut out = match x.len() {
        1 => dot_body::<R, 1>(w, x, body),
        2 => dot_body::<R, 2>(w, x, body),
        3 => dot_body::<R, 3>(w, x, body),
        _ => dot_body::<R, 4>(w, x, body),
    };
    for r in 0..R {
        for (c, xc) in x.iter().enumerate() {
            for i in body..k {
                out[r][c] = madd(w[r][i], xc[i], out[r][c]);
            }
        }
    }
    out
}

/// The vector part of [`dot_tile`]: the first `body` (a multiple of LANES) elements.
#[cfg(all(target_arch = "x86_64", target_feature = "avx", target_feature = "fma"))]
#[inline(always)]
fn dot_body<const R: usize, const C: usize>(
    w: [&[f32]; R],
    x: &[&[f32]],
    body: usize,
) -> [[f32; 4]; R] {
    use std::arch::x86_64::*;
    let mut out = [[0f32; 4]; R];
    // SAFETY: the target has AVX and FMA (checked at compile time); the caller checked
    // that x holds C rows and that every row holds at least `body` elements, so each
    // 8-wide load is in bounds, and each 4-wide store goes to a [f32; 4].
    unsafe {
        let mut acc = [[_mm256_setzero_ps(); 4]; R];
        let mut o = 0;
        while o < body {
            let wv: [__m256; R] = std::array::from_fn(|r| _mm256_loadu_ps(w[r].as_ptr().add(o)));
            for c in 0..C {
                let xv = _mm256_loadu_ps(x[c].as_ptr().add(o));
                for r in 0..R {
                    acc[r][c] = _mm256_fmadd_ps(wv[r], xv, acc[r][c]);
                }
            }
            o += LANES;
        }
        for r in 0..R {
            let a = acc[r];
            // lanes (0+1, 2+3) of each accumulator, then their sums, then high + low half
            let t = _mm256_hadd_ps(_mm256_hadd_ps(a[0], a[1]), _mm256_hadd_ps(a[2], a[3]));
            let s = _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1));
            _mm_storeu_ps(out[r].as_mut_ptr(), s);
        }
    }
    out
}

/// The vector part of [`dot_tile`], portable: the same sums, left to LLVM.
#[cfg(not(all(target_arch = "x86_64", target_feature = "avx", target_feature = "fma")))]
#[inline(always)]
fn dot_body<const R: usize, const C: usize>(
    w: [&[f32]; R],
    x: &[&[f32]],
    body: usize,
) -> [[f32; 4]; R] {
    let mut acc = [[[0f32; LANES]; C]; R];
    for o in (0..body).step_by(LANES) {
        for r in 0..R {
            for c in 0..C {
                for l in 0..LANES {
                    acc[r][c][l] = madd(w[r][o + l], x[c][o + l], acc[r][c][l]);
                }
            }
        }
    }
    let mut out = [[0f32; 4]; R];
    for r in 0..R {
        for c in 0..C {
            let a = &acc[r][c];
            out[r][c] = ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
        }
    }
    out
}

/// `a * b + c`, fused where the target has FMA (the workspace builds for the host CPU);
/// `mul_add` without FMA hardware would be a slow libm call.
#[inline(always)]
fn madd(a: f32, b: f32, c: f32) -> f32 {
    if cfg!(target_feature = "fma") {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// Weight rows `j0..j0 + R` against every row of `x`, into `out`: the (R, B) block of
/// the transposed output.
fn dot_rows<const R: usize>(w: &[f32], x: &[&[f32]], j0: usize, out: &mut [f32]) {
    let k = x[0].len();
    let b = x.len();
    let wr: [&[f32]; R] = std::array::from_fn(|r| &w[(j0 + r) * k..(j0 + r + 1) * k]);
    for c0 in (0..b).step_by(4) {
        let n = (b - c0).min(4);
        let t = dot_tile(wr, &x[c0..c0 + n]);
        for (r, row) in t.iter().enumerate() {
            for (i, &v) in row[..n].iter().enumerate() {
                out[r * b + c0 + i] = v;
            }
        }
    }
}

impl CustomOp2 for DecodeLinear {
    fn name(&self) -> &'static str {
        "decode-linear"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let ((b, k), (n, kw)) = (xl.shape().dims2()?, wl.shape().dims2()?);
        if k != kw {
            bail!(
                "decode-linear: x {:?} and w {:?} disagree",
                xl.shape(),
                wl.shape()
            );
        }
        let (Some((x0, x1)), Some((w0, w1))) = (xl.contiguous_offsets(), wl.contiguous_offsets())
        else {
            bail!("decode-linear: x and w must be contiguous");
        };
        let x = &xs.as_slice::<f32>()?[x0..x1];
        let w = &ws.as_slice::<f32>()?[w0..w1];
        let mut y = vec![0f32; b * n];
        if b == 0 || k == 0 {
            return Ok((CpuStorage::F32(y), Shape::from((b, n))));
        }
        let xr: Vec<&[f32]> = x.chunks_exact(k).collect();
        // (out, B) first, each rayon task owning a run of output features
        let mut t = vec![0f32; n * b];
        t.par_chunks_mut(TASK_ROWS * b)
            .enumerate()
            .for_each(|(i, out)| {
                let j0 = i * TASK_ROWS;
                let rows = out.len() / b;
                let mut r = 0;
                while r + TILE_ROWS <= rows {
                    let o = &mut out[r * b..(r + TILE_ROWS) * b];
                    dot_rows::<TILE_ROWS>(w, &xr, j0 + r, o);
                    r += TILE_ROWS;
                }
                for r in r..rows {
                    dot_rows::<1>(w, &xr, j0 + r, &mut out[r * b..(r + 1) * b]);
                }
            });
        for (j, row) in t.chunks_exact(b).enumerate() {
            for (c, &v) in row.iter().enumerate() {
                y[c * n + j] = v;
            }
        }
        Ok((CpuStorage::F32(y), Shape::from((b, n))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn randn(shape: (usize, usize), seed: u64) -> Tensor {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let v: Vec<f32> = (0..shape.0 * shape.1)
            .map(|_| rng.random_range(-1.0f32..1.0))
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    #[test]
    fn decode_linear_matches_gemm_and_ignores_the_batch_size() {
        // k = 21 has a tail after the 8-wide body; n = 37 leaves partial tiles and tasks
        for (n, k) in [(37, 21), (70, 64), (5, 3)] {
            let w = randn((n, k), 1);
            let x = randn((16, k), 2);
            let full: Vec<Vec<f32>> = linear_rows(&x, &w).unwrap().to_vec2().unwrap();
            for b in 1..=16 {
                let xb = x.narrow(0, 0, b).unwrap();
                let want: Vec<Vec<f32>> = xb.matmul(&w.t().unwrap()).unwrap().to_vec2().unwrap();
                let got: Vec<Vec<f32>> = linear_rows(&xb, &w).unwrap().to_vec2().unwrap();
                for (i, (g, e)) in got.iter().zip(&want).enumerate() {
                    for (a, c) in g.iter().zip(e) {
                        assert!(
                            (a - c).abs() < 1e-5,
                            "n {n} k {k} b {b} row {i}: {a} vs {c}"
                        );
                    }
                    if b >= 2 {
                        assert_eq!(g, &full[i], "row {i} differs between batch {b} and 16");
                    }
                }
            }
        }
    }
}
