//! The f32 matrix products of the fused CPU ops, in one place: the `gemm` crate by
//! default, or Intel MKL's `sgemm` (its sequential library, one call per rayon task)
//! when built with the `mkl` feature.
//!
//! Operands are strided views (first element, row stride, column stride); the
//! destination is row-major with a row stride. Products are written (`accumulate`
//! false: `dst` is not read) or added (`accumulate` true: `dst += ...`).

/// A 2-D f32 matrix view: its first element and row/column strides, in elements.
#[derive(Clone, Copy)]
pub(super) struct Mat {
    pub ptr: *const f32,
    pub rows: usize,
    pub cols: usize,
    pub rs: isize,
    pub cs: isize,
}

// SAFETY: a `Mat` is a read-only view; the functions that read through it are unsafe and
// their callers keep the storage alive and unwritten while they run.
unsafe impl Send for Mat {}
unsafe impl Sync for Mat {}

impl Mat {
    /// A row-major (rows, cols) buffer.
    pub fn dense(data: &[f32], rows: usize, cols: usize) -> Self {
        debug_assert!(data.len() >= rows * cols, "buffer smaller than its matrix");
        Self {
            ptr: data.as_ptr(),
            rows,
            cols,
            rs: cols as isize,
            cs: 1,
        }
    }

    pub fn t(self) -> Self {
        Self {
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
            ..self
        }
    }

    /// Rows `r..r + count` of the view.
    pub fn rows_from(self, r: usize, count: usize) -> Self {
        assert!(r + count <= self.rows, "rows outside the view");
        Self {
            ptr: self.ptr.wrapping_offset(r as isize * self.rs),
            rows: count,
            ..self
        }
    }
}

/// `dst (m, n) [+]= alpha * a (m, k) . b (k, n)` on the calling thread; `dst` has row
/// stride `dst_rs`.
///
/// # Safety
/// `dst` must have room for `a.rows` rows of stride `dst_rs` (>= `b.cols`) that nobody
/// else touches meanwhile, and `a`, `b` must be views of live storage.
pub(super) unsafe fn product_serial(
    dst: *mut f32,
    dst_rs: usize,
    accumulate: bool,
    a: Mat,
    b: Mat,
    alpha: f32,
) {
    debug_assert_eq!(a.cols, b.rows, "inner dimensions differ");
    let (m, n, k) = (a.rows, b.cols, a.cols);
    if m * n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for r in 0..m {
                std::ptr::write_bytes(dst.add(r * dst_rs), 0, n);
            }
        }
        return;
    }
    #[cfg(feature = "mkl")]
    if mkl::product(dst, dst_rs, accumulate, a, b, alpha) {
        return;
    }
    gemm_crate(
        dst,
        dst_rs,
        accumulate,
        a,
        b,
        alpha,
        gemm::Parallelism::None,
    );
}

/// The product through the `gemm` crate, on `par`'s threads.
///
/// # Safety
/// As [`product_serial`].
unsafe fn gemm_crate(
    dst: *mut f32,
    dst_rs: usize,
    accumulate: bool,
    a: Mat,
    b: Mat,
    alpha: f32,
    par: gemm::Parallelism,
) {
    gemm::gemm(
        a.rows,
        b.cols,
        a.cols,
        dst,
        1,
        dst_rs as isize,
        accumulate,
        a.ptr,
        a.cs,
        a.rs,
        b.ptr,
        b.cs,
        b.rs,
        1.0,
        alpha,
        false,
        false,
        false,
        par,
    );
}

/// `dst (m, n) [+]= a (m, k) . b (k, n)` into a row-major buffer with row stride `n`,
/// on all rayon threads when the product is big enough to share.
///
/// # Safety
/// As [`product_serial`] with `dst_rs = b.cols`.
pub(super) unsafe fn product(dst: *mut f32, accumulate: bool, a: Mat, b: Mat) {
    assert_eq!(a.cols, b.rows, "inner dimensions differ");
    let (m, n, k) = (a.rows, b.cols, a.cols);
    let threads = rayon::current_num_threads();
    let shared = threads > 1 && m * n * k > 64 * 64 * 64;
    if !shared || m * n == 0 || k == 0 {
        return product_serial(dst, n, accumulate, a, b, 1.0);
    }
    #[cfg(feature = "mkl")]
    {
        // one band of rows per thread: each task is one sequential sgemm
        use rayon::prelude::*;
        let band = m.div_ceil(threads);
        let dst = dst as usize;
        (0..m.div_ceil(band)).into_par_iter().for_each(|i| {
            let r = i * band;
            let rows = band.min(m - r);
            // SAFETY: the bands are disjoint rows of `dst`; the caller's contract covers
            // the rest.
            unsafe {
                product_serial(
                    (dst as *mut f32).add(r * n),
                    n,
                    accumulate,
                    a.rows_from(r, rows),
                    b,
                    1.0,
                )
            };
        });
    }
    #[cfg(not(feature = "mkl"))]
    gemm_crate(
        dst,
        n,
        accumulate,
        a,
        b,
        1.0,
        gemm::Parallelism::Rayon(threads),
    );
}

#[cfg(feature = "mkl")]
mod mkl {
    use super::Mat;

    const ROW_MAJOR: i32 = 101;
    const NO_TRANS: i32 = 111;
    const TRANS: i32 = 112;

    extern "C" {
        #[allow(clippy::too_many_arguments)]
        fn cblas_sgemm(
            layout: i32,
            trans_a: i32,
            trans_b: i32,
            m: i32,
            n: i32,
            k: i32,
            alpha: f32,
            a: *const f32,
            lda: i32,
            b: *const f32,
            ldb: i32,
            beta: f32,
            c: *mut f32,
            ldc: i32,
        );
    }

    /// How BLAS reads a view in row-major order: (transposed, leading dimension), or
    /// None when neither stride is 1 (then the gemm crate does the product).
    fn layout(x: Mat) -> Option<(i32, i32)> {
        let fits = |v: usize| i32::try_from(v).ok();
        if x.cs == 1 && x.rs >= x.cols.max(1) as isize {
            Some((NO_TRANS, fits(x.rs as usize)?))
        } else if x.rs == 1 && x.cs >= x.rows.max(1) as isize {
            Some((TRANS, fits(x.cs as usize)?))
        } else if x.cs == 1 && x.rows == 1 {
            Some((NO_TRANS, fits(x.cols.max(1))?))
        } else {
            None
        }
    }

    /// The product through MKL; false (nothing written) when its sizes or strides are
    /// outside what `cblas_sgemm` takes.
    ///
    /// # Safety
    /// As [`super::product_serial`].
    pub(super) unsafe fn product(
        dst: *mut f32,
        dst_rs: usize,
        accumulate: bool,
        a: Mat,
        b: Mat,
        alpha: f32,
    ) -> bool {
        let (Some((ta, lda)), Some((tb, ldb))) = (layout(a), layout(b)) else {
            return false;
        };
        let (Ok(m), Ok(n), Ok(k), Ok(ldc)) = (
            i32::try_from(a.rows),
            i32::try_from(b.cols),
            i32::try_from(a.cols),
            i32::try_from(dst_rs),
        ) else {
            return false;
        };
        let beta = if accumulate { 1.0 } else { 0.0 };
        cblas_sgemm(
            ROW_MAJOR, ta, tb, m, n, k, alpha, a.ptr, lda, b.ptr, ldb, beta, dst, ldc,
        );
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A row-major buffer viewed as a (rows, cols) matrix, or with `transposed` a
    /// column-major one.
    fn view(data: &[f32], rows: usize, cols: usize, transposed: bool) -> Mat {
        let (rs, cs) = if transposed {
            (1, rows as isize)
        } else {
            (cols as isize, 1)
        };
        Mat {
            ptr: data.as_ptr(),
            rows,
            cols,
            rs,
            cs,
        }
    }

    fn naive(a: Mat, b: Mat) -> Vec<f64> {
        let mut out = vec![0f64; a.rows * b.cols];
        for i in 0..a.rows {
            for j in 0..b.cols {
                for p in 0..a.cols {
                    // SAFETY: indices inside both views
                    let (x, y) = unsafe {
                        (
                            *a.ptr.offset(i as isize * a.rs + p as isize * a.cs),
                            *b.ptr.offset(p as isize * b.rs + j as isize * b.cs),
                        )
                    };
                    out[i * b.cols + j] += f64::from(x) * f64::from(y);
                }
            }
        }
        out
    }

    /// Every layout the fused ops pass (plain, transposed, a band of rows), written and
    /// accumulated, serial and shared between threads, against a plain triple loop.
    #[test]
    fn products_match_a_plain_loop_in_every_layout() {
        let fill = |len: usize, salt: usize| -> Vec<f32> {
            (0..len)
                .map(|i| (((i * 7919 + salt * 104_729) % 1000) as f32 / 500.0) - 1.0)
                .collect()
        };
        for &(m, n, k) in &[(1, 1, 1), (3, 5, 7), (70, 90, 80), (130, 64, 200)] {
            for ta in [false, true] {
                for tb in [false, true] {
                    let a_buf = fill(m * k, 1);
                    let b_buf = fill(k * n, 2);
                    let a = view(&a_buf, m, k, ta);
                    let b = view(&b_buf, k, n, tb);
                    let want = naive(a, b);
                    let start = fill(m * n, 3);
                    for accumulate in [false, true] {
                        for shared in [false, true] {
                            let mut dst = start.clone();
                            // SAFETY: dst holds m x n; a and b are live views
                            unsafe {
                                if shared {
                                    product(dst.as_mut_ptr(), accumulate, a, b);
                                } else {
                                    product_serial(dst.as_mut_ptr(), n, accumulate, a, b, 1.0);
                                }
                            }
                            for (i, (&got, &w)) in dst.iter().zip(&want).enumerate() {
                                let w = w + if accumulate { f64::from(start[i]) } else { 0.0 };
                                assert!(
                                    (f64::from(got) - w).abs() < 1e-4 * (1.0 + w.abs()),
                                    "({m},{n},{k}) ta {ta} tb {tb} acc {accumulate} shared \
                                     {shared}: [{i}] {got} vs {w}"
                                );
                            }
                        }
                    }
                }
            }
        }
        // a band of rows of a bigger matrix, scaled, into a destination with wider rows
        let a_buf = fill(40 * 30, 4);
        let b_buf = fill(30 * 20, 5);
        let a = view(&a_buf, 40, 30, false).rows_from(10, 25);
        let b = view(&b_buf, 30, 20, true);
        let want = naive(a, b);
        let mut dst = vec![7f32; 25 * 24];
        // SAFETY: 25 rows of stride 24 hold the 25 x 20 product
        unsafe { product_serial(dst.as_mut_ptr(), 24, false, a, b, 0.5) };
        for r in 0..25 {
            for c in 0..24 {
                let got = dst[r * 24 + c];
                if c < 20 {
                    let w = 0.5 * want[r * 20 + c];
                    assert!((f64::from(got) - w).abs() < 1e-4 * (1.0 + w.abs()));
                } else {
                    assert_eq!(got, 7.0, "a column past n was written");
                }
            }
        }
    }
}
