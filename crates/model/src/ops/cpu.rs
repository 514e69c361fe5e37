//! Plumbing shared by the fused CPU kernels: reading data out of candle storage whatever
//! its layout, small reductions written so LLVM vectorises them, a vectorisable `exp`,
//! and a raw pointer that rayon tasks may share when each writes its own disjoint part of
//! one output buffer.

use std::borrow::Cow;

use candle_core::{bail, CpuStorage, Layout, Result, Storage, Tensor, WithDType};

/// Rows per rayon task for row-wise kernels: enough work per task (~16K elements) that
/// scheduling is noise, few enough tasks that both cores stay busy.
pub(crate) fn rows_per_task(width: usize) -> usize {
    (16 * 1024 / width.max(1)).max(1)
}

/// The whole backing buffer of a storage, for kernels that walk strides themselves.
pub(crate) fn buffer<T: WithDType>(storage: &CpuStorage) -> Result<&[T]> {
    storage.as_slice::<T>()
}

/// The elements of `storage` in `layout` order: borrowed when contiguous, else gathered
/// into a fresh buffer (one pass), so kernels only ever see dense row-major data.
pub(crate) fn contiguous<'a, T: WithDType>(
    storage: &'a CpuStorage,
    layout: &Layout,
) -> Result<Cow<'a, [T]>> {
    let data = storage.as_slice::<T>()?;
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(Cow::Borrowed(&data[start..end])),
        None => Ok(Cow::Owned(gather_strided(data, layout))),
    }
}

/// Copies a strided view into row-major order with an odometer over the outer dims.
fn gather_strided<T: Copy>(data: &[T], layout: &Layout) -> Vec<T> {
    let dims = layout.dims();
    let stride = layout.stride();
    let start = layout.start_offset();
    let count = layout.shape().elem_count();
    let mut out = Vec::with_capacity(count);
    if count == 0 {
        return out;
    }
    let Some((&inner, outer_dims)) = dims.split_last() else {
        out.push(data[start]);
        return out;
    };
    let inner_stride = stride[dims.len() - 1];
    let mut idx = vec![0usize; outer_dims.len()];
    loop {
        let base = start + idx.iter().zip(stride).map(|(i, s)| i * s).sum::<usize>();
        out.extend((0..inner).map(|j| data[base + j * inner_stride]));
        let mut d = outer_dims.len();
        loop {
            if d == 0 {
                return out;
            }
            d -= 1;
            idx[d] += 1;
            if idx[d] < outer_dims[d] {
                break;
            }
            idx[d] = 0;
        }
    }
}

/// The whole f32 buffer behind a tensor's storage, for backward passes that walk
/// strides themselves.
pub(crate) fn cpu_f32(s: &Storage) -> Result<&[f32]> {
    match s {
        Storage::Cpu(cpu) => buffer::<f32>(cpu),
        _ => bail!("fused CPU op: tensor is not on the CPU"),
    }
}

/// Runs `f` on the row-major f32 data of a CPU tensor. Backward passes get tensors, not
/// storages; this gives them the same view the forward kernels have.
pub(crate) fn with_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> Result<R>) -> Result<R> {
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        Storage::Cpu(cpu) => f(&contiguous::<f32>(cpu, layout)?),
        _ => bail!("fused CPU op: tensor is not on the CPU"),
    }
}

/// Eight independent accumulators: float addition is not associative, so LLVM only
/// vectorises a reduction when the lanes are spelled out.
const LANES: usize = 8;

#[inline]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f32; LANES];
    let (ac, ar) = a.split_at(n - n % LANES);
    let (bc, br) = b.split_at(n - n % LANES);
    for (x, y) in ac.chunks_exact(LANES).zip(bc.chunks_exact(LANES)) {
        for l in 0..LANES {
            acc[l] += x[l] * y[l];
        }
    }
    let tail: f32 = ar.iter().zip(br).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

#[inline]
pub(crate) fn max(a: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = a.chunks_exact(LANES);
    let tail = chunks
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |m, &x| m.max(x));
    for c in chunks {
        for l in 0..LANES {
            acc[l] = acc[l].max(c[l]);
        }
    }
    acc.iter().fold(tail, |m, &x| m.max(x))
}

/// Replaces each `x` by `exp(x - shift)` and returns the sum of the results.
#[inline]
pub(crate) fn exp_shift_sum(a: &mut [f32], shift: f32) -> f32 {
    let mut acc = [0f32; LANES];
    let mut chunks = a.chunks_exact_mut(LANES);
    for c in &mut chunks {
        for l in 0..LANES {
            let e = exp(c[l] - shift);
            c[l] = e;
            acc[l] += e;
        }
    }
    let mut tail = 0f32;
    for x in chunks.into_remainder() {
        *x = exp(*x - shift);
        tail += *x;
    }
    acc.iter().sum::<f32>() + tail
}

/// `sum(exp(x - shift))` without writing anything.
#[inline]
pub(crate) fn sum_exp_shift(a: &[f32], shift: f32) -> f32 {
    let mut acc = [0f32; LANES];
    let chunks = a.chunks_exact(LANES);
    let tail: f32 = chunks.remainder().iter().map(|&x| exp(x - shift)).sum();
    for c in chunks {
        for l in 0..LANES {
            acc[l] += exp(c[l] - shift);
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// In-place softmax of one row.
#[inline]
pub(crate) fn softmax_row(row: &mut [f32]) {
    let m = max(row);
    let sum = exp_shift_sum(row, m);
    let inv = 1.0 / sum;
    for x in row.iter_mut() {
        *x *= inv;
    }
}

/// `a * b + c`, fused where the target has FMA (with `target-cpu=native` here); a plain
/// multiply-add elsewhere, because `mul_add` without FMA hardware is a slow libm call.
#[inline(always)]
fn fma(a: f32, b: f32, c: f32) -> f32 {
    #[cfg(target_feature = "fma")]
    {
        a.mul_add(b, c)
    }
    #[cfg(not(target_feature = "fma"))]
    {
        a * b + c
    }
}

/// `exp` for f32 that LLVM can vectorise (libm's `expf` is a scalar call, ~10x slower
/// here): Cephes' range reduction to [-ln2/2, ln2/2], a degree-6 polynomial, and the
/// power of two built in the exponent bits. The rounding uses the 1.5 * 2^23 trick
/// rather than a float-to-int cast, which LLVM would scalarise. About 1 ulp; inputs are
/// clamped to the normal range, so it never returns inf or a denormal (exp(-inf) gives
/// ~1e-38, not 0); NaN stays NaN.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let t = fma(x, std::f32::consts::LOG2_E, MAGIC);
    let n = t - MAGIC; // round(x / ln 2)
    let r = fma(n, 2.121_944_4e-4, fma(n, -0.693_359_4, x));
    let mut p = 1.987_569_1e-4_f32;
    p = fma(p, r, 1.398_199_9e-3);
    p = fma(p, r, 8.333_452e-3);
    p = fma(p, r, 4.166_579_6e-2);
    p = fma(p, r, 1.666_666_5e-1);
    p = fma(p, r, 0.5);
    let e = fma(p, r * r, r + 1.0);
    let two_n = (t.to_bits().wrapping_sub(MAGIC.to_bits()).wrapping_add(127)) << 23;
    e * f32::from_bits(two_n)
}

/// A pointer into an output buffer that rayon tasks share; each task writes a region no
/// other task touches (documented at every use).
#[derive(Clone, Copy)]
pub(crate) struct SharedMut(*mut f32);

// SAFETY: the pointer is only dereferenced for disjoint regions, one task per region,
// while the owning Vec outlives the parallel section.
unsafe impl Send for SharedMut {}
unsafe impl Sync for SharedMut {}

impl SharedMut {
    pub(crate) fn new(buf: &mut [f32]) -> Self {
        Self(buf.as_mut_ptr())
    }

    /// A method rather than field access, so closures capture the whole (Send) struct.
    pub(crate) fn ptr(self) -> *mut f32 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_exp_matches_libm() {
        let mut worst = 0f32;
        let mut x = -80.0f32;
        while x < 80.0 {
            let rel = (exp(x) - x.exp()).abs() / x.exp();
            worst = worst.max(rel);
            x += 0.0137;
        }
        assert!(worst < 5e-7, "worst relative error {worst}");
        assert!(exp(f32::NEG_INFINITY) < 1e-37);
        assert!(exp(f32::NAN).is_nan());
    }

    #[test]
    fn reductions_and_gather() -> Result<()> {
        let a: Vec<f32> = (0..19).map(|i| i as f32 - 7.0).collect();
        assert_eq!(dot(&a, &a), a.iter().map(|x| x * x).sum::<f32>());
        assert_eq!(max(&a), 11.0);
        let t = Tensor::arange(0f32, 24., &candle_core::Device::Cpu)?.reshape((2, 3, 4))?;
        let tt = t.transpose(0, 2)?.narrow(1, 1, 2)?;
        let want: Vec<f32> = tt.contiguous()?.flatten_all()?.to_vec1()?;
        let got = with_f32(&tt, |d| Ok(d.to_vec()))?;
        assert_eq!(got, want);
        Ok(())
    }
}
