//! Matrix products through the `gemm` crate (pure Rust, runtime-dispatched SIMD kernels).
//!
//! `gemm::gemm` computes `dst = alpha dst + beta lhs rhs` on strided matrices; BLAS's
//! `C = alpha A B + beta C` maps onto it with the two scalars swapped. Transposes are expressed
//! as swapped row/column strides, so no operand is copied. The crate splits large products over
//! the rayon pool the call runs in (we install ours); it keeps small ones on one thread.

use super::simd::{has_avx2, with_simd};
use super::Par;
use crate::backend::{Gemm, Gemv, Transpose};
use rayon::prelude::*;

/// A product with `m` (or `k`) at most this is "skinny": InnerProduct at small batch sizes
/// (AlexNet's fc6 at batch 10 is 10 x 4096 x 9216). It is bound by streaming the large operand
/// from memory, which the general kernel, built for blocks of both large dimensions, does
/// several times slower than the direct loops in [`skinny`].
pub(super) const SKINNY: usize = 16;
/// Skinny products smaller than this many multiply-adds go to the general kernel.
const SKINNY_MIN_WORK: usize = 1 << 18;

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

/// `C = alpha op(A) op(B) + beta C` as `g` describes; the slices start at each matrix's first
/// element and are long enough for its shapes and leading dimensions (checked by the caller).
pub(super) fn gemm(par: Par<'_>, g: &Gemm, a: &[f32], b: &[f32], c: &mut [f32]) {
    let Gemm {
        trans_a,
        trans_b,
        m,
        n,
        k,
        alpha,
        beta,
        lda,
        ldb,
        ldc,
    } = *g;
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
    if skinny(par, g, a, b, c) {
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

/// `c = alpha acc + beta c`, not reading `c` when `beta` is 0 (BLAS convention).
#[inline(always)]
fn store(c: &mut f32, acc: f32, alpha: f32, beta: f32) {
    *c = if beta == 0.0 {
        alpha * acc
    } else {
        alpha * acc + beta * *c
    };
}

/// `sum_p a[p] b[p]` in eight interleaved partial sums (lane `l` takes `p = l mod 8`), added
/// pairwise at the end: a fixed order, whatever the SIMD width the compiler picks.
#[inline(always)]
fn dot8_portable(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (a8, a_tail) = a.split_at(a.len() / 8 * 8);
    let (b8, b_tail) = b.split_at(a8.len());
    for (x, y) in a8.chunks_exact(8).zip(b8.chunks_exact(8)) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    for (l, (x, y)) in a_tail.iter().zip(b_tail).enumerate() {
        acc[l] += x * y;
    }
    ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]))
}

/// `c[i][j] = alpha dot(A row i, B row j) + beta c[i][j]` for this task's columns `j0..` of
/// every row (`rows[i]` is row `i`'s segment): `op(A) = A` and `op(B) = B^T`, both rows
/// contiguous.
#[inline(always)]
fn dot_task(rows: &mut [&mut [f32]], j0: usize, g: &Gemm, a: &[f32], b: &[f32]) {
    let Gemm {
        k,
        alpha,
        beta,
        lda,
        ldb,
        ..
    } = *g;
    let width = rows.first().map_or(0, |r| r.len());
    let m = rows.len();
    for jj in 0..width {
        let j = j0 + jj;
        let b_row = &b[j * ldb..j * ldb + k];
        // Four rows of A at a time: four independent sums hide the adds' latency and each
        // load of B serves four products.
        let mut i = 0;
        while i + 4 <= m {
            let sums = dot8x4(
                [
                    &a[i * lda..i * lda + k],
                    &a[(i + 1) * lda..(i + 1) * lda + k],
                    &a[(i + 2) * lda..(i + 2) * lda + k],
                    &a[(i + 3) * lda..(i + 3) * lda + k],
                ],
                b_row,
            );
            for (r, sum) in sums.into_iter().enumerate() {
                store(&mut rows[i + r][jj], sum, alpha, beta);
            }
            i += 4;
        }
        for (r, row) in rows.iter_mut().enumerate().skip(i) {
            store(
                &mut row[jj],
                dot8(&a[r * lda..r * lda + k], b_row),
                alpha,
                beta,
            );
        }
    }
}

/// [`dot8`] of four rows against one, each summed exactly as [`dot8`] sums it.
#[inline(always)]
fn dot8x4_portable(a: [&[f32]; 4], b: &[f32]) -> [f32; 4] {
    let mut acc = [[0.0f32; 8]; 4];
    let full = b.len() / 8 * 8;
    let mut p = 0;
    while p < full {
        let y = &b[p..p + 8];
        for (acc, a) in acc.iter_mut().zip(&a) {
            let x = &a[p..p + 8];
            for l in 0..8 {
                acc[l] += x[l] * y[l];
            }
        }
        p += 8;
    }
    for (acc, a) in acc.iter_mut().zip(&a) {
        for (l, (x, y)) in a[full..].iter().zip(&b[full..]).enumerate() {
            acc[l] += x * y;
        }
    }
    acc.map(|acc| ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7])))
}

/// `sum_p a[p] b[p]` in eight interleaved partial sums (lane `l` takes `p = l mod 8`), added
/// pairwise at the end. The AVX2 kernel takes the same steps eight lanes at a time (explicitly:
/// the compiler does not carry [`with_simd`] into these loops), so both give the same bits.
#[inline(always)]
fn dot8(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU has AVX2.
        return unsafe { avx2::dot8_rows([a], b)[0] };
    }
    dot8_portable(a, b)
}

/// [`dot8`] of four rows against one.
#[inline(always)]
fn dot8x4(a: [&[f32]; 4], b: &[f32]) -> [f32; 4] {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU has AVX2.
        return unsafe { avx2::dot8_rows(a, b) };
    }
    dot8x4_portable(a, b)
}

/// `c += s x`, each element one product and one sum (no fused multiply-add).
#[inline(always)]
fn axpy(c: &mut [f32], s: f32, x: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU has AVX2.
        return unsafe { avx2::axpy(c, s, x) };
    }
    c.iter_mut().zip(x).for_each(|(c, &x)| *c += s * x);
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    /// `R` rows' dot products with `b`, each in the order of `dot8_portable`.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn dot8_rows<const R: usize>(a: [&[f32]; R], b: &[f32]) -> [f32; R] {
        for a in &a {
            assert_eq!(a.len(), b.len(), "dot product of unequal lengths");
        }
        let full = b.len() / 8 * 8;
        let mut acc = [_mm256_setzero_ps(); R];
        let mut p = 0;
        while p < full {
            let y = _mm256_loadu_ps(b.as_ptr().add(p));
            for (acc, a) in acc.iter_mut().zip(&a) {
                let x = _mm256_loadu_ps(a.as_ptr().add(p));
                *acc = _mm256_add_ps(*acc, _mm256_mul_ps(x, y));
            }
            p += 8;
        }
        let mut out = [0.0; R];
        for ((out, acc), a) in out.iter_mut().zip(acc).zip(&a) {
            let mut lanes = [0.0f32; 8];
            _mm256_storeu_ps(lanes.as_mut_ptr(), acc);
            for (l, (x, y)) in a[full..b.len()].iter().zip(&b[full..]).enumerate() {
                lanes[l] += x * y;
            }
            *out = ((lanes[0] + lanes[4]) + (lanes[2] + lanes[6]))
                + ((lanes[1] + lanes[5]) + (lanes[3] + lanes[7]));
        }
        out
    }

    /// `c += s x` eight at a time, then the tail.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn axpy(c: &mut [f32], s: f32, x: &[f32]) {
        let n = c.len().min(x.len());
        let full = n / 8 * 8;
        let sv = _mm256_set1_ps(s);
        let mut j = 0;
        while j < full {
            let at = c.as_mut_ptr().add(j);
            let prod = _mm256_mul_ps(sv, _mm256_loadu_ps(x.as_ptr().add(j)));
            _mm256_storeu_ps(at, _mm256_add_ps(_mm256_loadu_ps(at), prod));
            j += 8;
        }
        for (c, &x) in c[full..n].iter_mut().zip(&x[full..n]) {
            *c += s * x;
        }
    }
}

/// `c_i = beta c_i + sum_p (alpha op(A)[i][p]) B_p` over this task's columns of every row: each
/// row `p` of `B` (`op(B) = B`) is read once for all rows of `C`, in ascending `p`.
#[inline(always)]
fn axpy_task(
    rows: &mut [&mut [f32]],
    j0: usize,
    g: &Gemm,
    a_at: impl Fn(usize, usize) -> f32,
    b: &[f32],
) {
    let Gemm {
        k,
        alpha,
        beta,
        ldb,
        ..
    } = *g;
    for row in rows.iter_mut() {
        if beta == 0.0 {
            row.fill(0.0);
        } else if beta != 1.0 {
            row.iter_mut().for_each(|v| *v *= beta);
        }
    }
    let width = rows.first().map_or(0, |r| r.len());
    for p in 0..k {
        let b_seg = &b[p * ldb + j0..p * ldb + j0 + width];
        for (i, row) in rows.iter_mut().enumerate() {
            let s = alpha * a_at(i, p);
            axpy(row, s, b_seg);
        }
    }
}

/// The skinny products InnerProduct makes at small batch sizes, computed directly with the work
/// split over column ranges of `C` (each output is summed in a fixed order, whatever the thread
/// count); returns false, doing nothing, for any other product.
///
/// * `m <= SKINNY`, `C = A B^T` (forward): each output a dot product of two contiguous rows;
/// * `m <= SKINNY`, `C = A B` (data gradient): rows of `B` streamed once, added into `C`;
/// * `k <= SKINNY`, `C += op(A) B` (weight gradient): the same, a rank-k update.
fn skinny(par: Par<'_>, g: &Gemm, a: &[f32], b: &[f32], c: &mut [f32]) -> bool {
    use Transpose::{NoTrans, Trans};
    let Gemm {
        trans_a,
        trans_b,
        m,
        n,
        k,
        lda,
        ldc,
        ..
    } = *g;
    if m.saturating_mul(n).saturating_mul(k) < SKINNY_MIN_WORK {
        return false;
    }
    let dot = m <= SKINNY && trans_a == NoTrans && trans_b == Trans;
    let axpy = trans_b == NoTrans && (k <= SKINNY || (m <= SKINNY && trans_a == NoTrans));
    if !(dot || axpy) {
        return false;
    }
    // Column ranges of C: a few per worker for balance, each at least 64 columns wide.
    let tasks = if par.pool.is_some() {
        par.threads * 4
    } else {
        1
    }
    .min(n.div_ceil(64))
    .max(1);
    let width = n.div_ceil(tasks);
    let a_at = |i: usize, p: usize| match trans_a {
        NoTrans => a[i * lda + p],
        Trans => a[p * lda + i],
    };
    // Rows of C split into column segments: task t gets segment t of every row. A row-heavy
    // product (the weight gradient: m in the thousands) is instead split by rows.
    if m > SKINNY {
        let run = |(i, row): (usize, &mut [f32])| {
            let row = &mut row[..n];
            with_simd(
                #[inline(always)]
                || axpy_task(&mut [row], 0, g, |_, p| a_at(i, p), b),
            )
        };
        match par.pool {
            Some(pool) if par.threads > 1 => pool.install(|| {
                c.par_chunks_mut(ldc)
                    .take(m)
                    .enumerate()
                    .with_min_len(4)
                    .for_each(run)
            }),
            _ => c.chunks_mut(ldc).take(m).enumerate().for_each(run),
        }
        return true;
    }
    let mut segments: Vec<Vec<&mut [f32]>> = (0..tasks).map(|_| Vec::with_capacity(m)).collect();
    for row in c.chunks_mut(ldc).take(m) {
        for (t, seg) in row[..n].chunks_mut(width).enumerate() {
            segments[t].push(seg);
        }
    }
    let run = |(t, mut rows): (usize, Vec<&mut [f32]>)| {
        let j0 = t * width;
        with_simd(
            #[inline(always)]
            || {
                if dot {
                    dot_task(&mut rows, j0, g, a, b)
                } else {
                    axpy_task(&mut rows, j0, g, a_at, b)
                }
            },
        )
    };
    match par.pool {
        Some(pool) if tasks > 1 => {
            pool.install(|| segments.into_par_iter().enumerate().for_each(run))
        }
        _ => segments.into_iter().enumerate().for_each(run),
    }
    true
}

/// `y = alpha op(A) x + beta y` with `A` packed `m x n` row-major: a GEMM with one column.
pub(super) fn gemv(par: Par<'_>, g: &Gemv, a: &[f32], x: &[f32], y: &mut [f32]) {
    // op(A) is rows x cols; y is a rows x 1 column, x a cols x 1 column.
    let (rows, cols) = match g.trans {
        Transpose::NoTrans => (g.m, g.n),
        Transpose::Trans => (g.n, g.m),
    };
    let product = Gemm::packed(g.trans, Transpose::NoTrans, rows, 1, cols)
        .alpha(g.alpha)
        .beta(g.beta)
        .strides(g.n, 1, 1);
    gemm(par, &product, a, x, y);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Transpose::{NoTrans, Trans};

    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) % 2001) as f32 / 1000.0
                    - 1.0
            })
            .collect()
    }

    /// The explicit AVX2 loops take the portable loops' steps: the same bits, tails included.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_loops_give_the_portable_bits() {
        if !has_avx2() {
            eprintln!("skipped: the CPU lacks AVX2");
            return;
        }
        for len in [1, 7, 8, 9, 64, 1001] {
            let rows: Vec<Vec<f32>> = (0..4).map(|r| values(len, 10 + r)).collect();
            let b = values(len, 20);
            let a = [&rows[0][..], &rows[1][..], &rows[2][..], &rows[3][..]];
            let want = dot8x4_portable(a, &b);
            assert_eq!(dot8x4(a, &b).map(f32::to_bits), want.map(f32::to_bits));
            assert_eq!(dot8(a[2], &b).to_bits(), dot8_portable(a[2], &b).to_bits());
            let mut c = values(len, 30);
            let mut c_portable = c.clone();
            axpy(&mut c, 0.7, &b);
            c_portable
                .iter_mut()
                .zip(&b)
                .for_each(|(c, &x)| *c += 0.7 * x);
            assert!(c
                .iter()
                .zip(&c_portable)
                .all(|(x, y)| x.to_bits() == y.to_bits()));
        }
    }

    /// The skinny paths against the definition, in f64, for every transpose, alpha and beta,
    /// on one and three threads (which must agree bit for bit).
    #[test]
    fn skinny_products_match_the_definition() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        let pars = [
            Par {
                pool: None,
                threads: 1,
            },
            Par {
                pool: Some(&pool),
                threads: 3,
            },
        ];
        for (ta, tb, m, n, k) in [
            (NoTrans, Trans, 10, 300, 1001),
            (NoTrans, NoTrans, 7, 1100, 300),
            (Trans, NoTrans, 300, 1001, 10),
            (NoTrans, NoTrans, 500, 700, 9),
            (Trans, NoTrans, 12, 5000, 13),
        ] {
            for (alpha, beta) in [(1.0, 0.0), (0.5, 1.0), (2.0, -0.5)] {
                let a = values(m * k, 1);
                let b = values(k * n, 2);
                let c0 = values(m * n, 3);
                let (lda, ldb) = (
                    if ta == NoTrans { k } else { m },
                    if tb == NoTrans { n } else { k },
                );
                let mut results = Vec::new();
                for par in pars {
                    let mut c = c0.clone();
                    let g = Gemm::packed(ta, tb, m, n, k)
                        .alpha(alpha)
                        .beta(beta)
                        .strides(lda, ldb, n);
                    assert!(skinny(par, &g, &a, &b, &mut c));
                    results.push(c);
                }
                assert!(
                    results[0] == results[1],
                    "{m}x{n}x{k}: thread counts differ"
                );
                for i in 0..m {
                    for j in 0..n {
                        let mut want = f64::from(beta) * f64::from(c0[i * n + j]);
                        for p in 0..k {
                            let av = if ta == NoTrans {
                                a[i * lda + p]
                            } else {
                                a[p * lda + i]
                            };
                            let bv = if tb == NoTrans {
                                b[p * ldb + j]
                            } else {
                                b[j * ldb + p]
                            };
                            want += f64::from(alpha) * f64::from(av) * f64::from(bv);
                        }
                        let got = f64::from(results[0][i * n + j]);
                        assert!(
                            (got - want).abs() <= 1e-3 * (1.0 + want.abs()),
                            "{m}x{n}x{k} [{i},{j}]: {got} vs {want}"
                        );
                    }
                }
            }
        }
    }
}
