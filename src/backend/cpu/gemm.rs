//! Matrix products through the `gemm` crate (pure Rust, runtime-dispatched SIMD kernels).
//!
//! `gemm::gemm` computes `dst = alpha dst + beta lhs rhs` on strided matrices; BLAS's
//! `C = alpha A B + beta C` maps onto it with the two scalars swapped. Transposes are expressed
//! as swapped row/column strides, so no operand is copied. The crate splits large products over
//! the rayon pool the call runs in (we install ours); it keeps small ones on one thread.

use super::Par;
use crate::backend::Transpose;

/// Row and column strides of a matrix used as `op(M)` whose storage has row stride `ld`.
fn strides(trans: Transpose, ld: usize) -> (isize, isize) {
    match trans {
        Transpose::NoTrans => (ld as isize, 1),
        Transpose::Trans => (1, ld as isize),
    }
}

fn parallelism(par: Par<'_>) -> gemm::Parallelism {
    if par.pool.is_some() && par.threads > 1 {
        gemm::Parallelism::Rayon(par.threads)
    } else {
        gemm::Parallelism::None
    }
}

/// `C = alpha op(A) op(B) + beta C`; the slices start at each matrix's first element and are
/// long enough for the given shapes and leading dimensions (checked by the caller).
pub(super) fn gemm(
    par: Par<'_>,
    trans_a: Transpose,
    trans_b: Transpose,
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: &[f32],
    lda: usize,
    b: &[f32],
    ldb: usize,
    beta: f32,
    c: &mut [f32],
    ldc: usize,
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 || alpha == 0.0 {
        // Nothing to multiply: only the scaling of C remains.
        for row in c.chunks_mut(ldc).take(m) {
            let row = &mut row[..n];
            if beta == 0.0 {
                row.fill(0.0);
            } else if beta != 1.0 {
                row.iter_mut().for_each(|v| *v *= beta);
            }
        }
        return;
    }
    let (a_rs, a_cs) = strides(trans_a, lda);
    let (b_rs, b_cs) = strides(trans_b, ldb);
    let run = || {
        // SAFETY: the caller checked that every element the strides reach lies inside `a`, `b`
        // and `c` (rows below m/k, columns below k/n), `c` is exclusively borrowed and cannot
        // overlap `a` or `b`, and `gemm` reads/writes nothing else.
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                c.as_mut_ptr(),
                1,
                ldc as isize,
                beta != 0.0,
                a.as_ptr(),
                a_cs,
                a_rs,
                b.as_ptr(),
                b_cs,
                b_rs,
                beta,
                alpha,
                false,
                false,
                false,
                parallelism(par),
            )
        }
    };
    par.install(run);
}

/// `y = alpha op(A) x + beta y` with `A` packed `m x n` row-major.
pub(super) fn gemv(
    par: Par<'_>,
    trans_a: Transpose,
    m: usize,
    n: usize,
    alpha: f32,
    a: &[f32],
    x: &[f32],
    beta: f32,
    y: &mut [f32],
) {
    // op(A) is rows x cols; y is a rows x 1 column, x a cols x 1 column.
    let (rows, cols) = match trans_a {
        Transpose::NoTrans => (m, n),
        Transpose::Trans => (n, m),
    };
    gemm(
        par,
        trans_a,
        Transpose::NoTrans,
        rows,
        1,
        cols,
        alpha,
        a,
        n,
        x,
        1,
        beta,
        y,
        1,
    );
}
