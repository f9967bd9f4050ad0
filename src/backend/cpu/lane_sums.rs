//! The summation kernel of the reductions: `sum_i t(a[i], b[i])` for a [`Term`] `t`, in blocks
//! of [`BLOCK`] elements, each summed in [`LANES`] interleaved f32 lanes (element `i` goes to
//! lane `i % 8`, added in order), the lane and block totals added in f64.
//!
//! With AVX2 the eight lanes are one vector register, so the same additions happen in the same
//! order: the same bits as the portable loop, several times faster (compilers do not vectorise
//! that loop themselves: they keep the products scalar).

#[cfg(target_arch = "x86_64")]
use super::simd::has_avx2;

/// Elements per block: summed in f32 lanes before the lanes are added in f64.
pub(super) const BLOCK: usize = 1024;
/// Interleaved f32 accumulators within a block.
pub(super) const LANES: usize = 8;

/// What a reduction sums for each element pair `(a, b)`.
#[derive(Clone, Copy, Debug)]
pub(super) enum Term {
    /// `a`
    First,
    /// `|a|`
    Abs,
    /// `a a`
    Square,
    /// `a b`
    Product,
    /// `(a - m)^2` (rounded after the subtraction and after the product)
    SquaredDeviation(f32),
}

impl Term {
    #[inline(always)]
    fn scalar(self, a: f32, b: f32) -> f32 {
        match self {
            Term::First => a,
            Term::Abs => a.abs(),
            Term::Square => a * a,
            Term::Product => a * b,
            Term::SquaredDeviation(m) => {
                let d = a - m;
                d * d
            }
        }
    }
}

/// `sum_i t(a[i], b[i])` (see the module docs); `a` and `b` have one length.
pub(super) fn sum(a: &[f32], b: &[f32], t: Term) -> f64 {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU supports AVX2, checked just above.
        return unsafe { avx2::sum(a, b, t) };
    }
    portable(a, b, [t]).0
}

/// `sum_r sum_i t(a_r[i], b_r[i])` over row pairs `(a_r, b_r)`: each row as [`sum`] adds it, the
/// row totals added in f64 in order from `+0`. One check of the CPU for all the rows: per-channel
/// sums of small maps have many short rows.
pub(super) fn sum_rows<'a>(rows: impl Iterator<Item = (&'a [f32], &'a [f32])>, t: Term) -> f64 {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU supports AVX2, checked just above.
        return unsafe { avx2::sum_rows(rows, t) };
    }
    rows.fold(0.0, |total, (a, b)| total + portable(a, b, [t]).0)
}

/// [`sum_rows`] of two terms in one pass over the rows: each total as [`sum_rows`] adds it.
pub(super) fn sum2_rows<'a>(
    rows: impl Iterator<Item = (&'a [f32], &'a [f32])>,
    terms: (Term, Term),
) -> (f64, f64) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU supports AVX2, checked just above.
        return unsafe { avx2::sum2_rows(rows, terms) };
    }
    rows.fold((0.0, 0.0), |(t, u), (a, b)| {
        let (p, q) = portable(a, b, [terms.0, terms.1]);
        (t + p, u + q)
    })
}

/// The portable loop for one or two terms: `(first total, second total or 0)`.
fn portable<const N: usize>(a: &[f32], b: &[f32], terms: [Term; N]) -> (f64, f64) {
    let mut totals = [0f64; N];
    for (ab, bb) in a.chunks(BLOCK).zip(b.chunks(BLOCK)) {
        let mut acc = [[0f32; LANES]; N];
        for (k, (&p, &q)) in ab.iter().zip(bb).enumerate() {
            for (acc, t) in acc.iter_mut().zip(terms) {
                acc[k % LANES] += t.scalar(p, q);
            }
        }
        for (total, acc) in totals.iter_mut().zip(acc) {
            *total += acc.iter().map(|&v| f64::from(v)).sum::<f64>();
        }
    }
    (totals[0], totals.get(1).copied().unwrap_or(0.0))
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{Term, BLOCK, LANES};
    use std::arch::x86_64::*;

    /// `t` on eight lanes: the scalar arithmetic of [`Term::scalar`], lane by lane.
    #[target_feature(enable = "avx2")]
    #[inline]
    fn term(t: Term, a: __m256, b: __m256) -> __m256 {
        match t {
            Term::First => a,
            Term::Abs => _mm256_andnot_ps(_mm256_set1_ps(-0.0), a),
            Term::Square => _mm256_mul_ps(a, a),
            Term::Product => _mm256_mul_ps(a, b),
            Term::SquaredDeviation(m) => {
                let d = _mm256_sub_ps(a, _mm256_set1_ps(m));
                _mm256_mul_ps(d, d)
            }
        }
    }

    /// A block's lanes after its whole vectors, its tail added lane by lane.
    #[target_feature(enable = "avx2")]
    #[inline]
    fn finish(acc: __m256, tail: (&[f32], &[f32]), t: Term) -> f64 {
        let mut lanes = [0f32; LANES];
        // SAFETY: `lanes` holds eight floats.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), acc) };
        for (l, (&p, &q)) in tail.0.iter().zip(tail.1).enumerate() {
            lanes[l] += t.scalar(p, q);
        }
        lanes.iter().map(|&v| f64::from(v)).sum::<f64>()
    }

    /// [`super::sum`] with the eight lanes in one register; the term is matched per block, so
    /// the loop carries one kind of arithmetic.
    #[target_feature(enable = "avx2")]
    #[inline]
    pub(super) fn sum(a: &[f32], b: &[f32], t: Term) -> f64 {
        let mut total = 0f64;
        for (ab, bb) in a.chunks(BLOCK).zip(b.chunks(BLOCK)) {
            let (va, ra) = ab.as_chunks::<LANES>();
            let (vb, rb) = bb.as_chunks::<LANES>();
            let mut acc = _mm256_setzero_ps();
            macro_rules! run {
                ($t:expr) => {
                    for (xa, xb) in va.iter().zip(vb) {
                        // SAFETY: each chunk holds eight floats.
                        let (x, y) =
                            unsafe { (_mm256_loadu_ps(xa.as_ptr()), _mm256_loadu_ps(xb.as_ptr())) };
                        acc = _mm256_add_ps(acc, term($t, x, y));
                    }
                };
            }
            match t {
                Term::First => run!(Term::First),
                Term::Abs => run!(Term::Abs),
                Term::Square => run!(Term::Square),
                Term::Product => run!(Term::Product),
                Term::SquaredDeviation(m) => run!(Term::SquaredDeviation(m)),
            }
            total += finish(acc, (ra, rb), t);
        }
        total
    }

    /// [`super::sum2`] with each term's lanes in one register.
    #[target_feature(enable = "avx2")]
    #[inline]
    pub(super) fn sum2(a: &[f32], b: &[f32], (t, u): (Term, Term)) -> (f64, f64) {
        let (mut total_t, mut total_u) = (0f64, 0f64);
        for (ab, bb) in a.chunks(BLOCK).zip(b.chunks(BLOCK)) {
            let (va, ra) = ab.as_chunks::<LANES>();
            let (vb, rb) = bb.as_chunks::<LANES>();
            let (mut acc_t, mut acc_u) = (_mm256_setzero_ps(), _mm256_setzero_ps());
            for (xa, xb) in va.iter().zip(vb) {
                // SAFETY: each chunk holds eight floats.
                let (x, y) =
                    unsafe { (_mm256_loadu_ps(xa.as_ptr()), _mm256_loadu_ps(xb.as_ptr())) };
                acc_t = _mm256_add_ps(acc_t, term(t, x, y));
                acc_u = _mm256_add_ps(acc_u, term(u, x, y));
            }
            total_t += finish(acc_t, (ra, rb), t);
            total_u += finish(acc_u, (ra, rb), u);
        }
        (total_t, total_u)
    }
    /// [`super::sum_rows`] with every row in [`sum`].
    #[target_feature(enable = "avx2")]
    pub(super) fn sum_rows<'a>(rows: impl Iterator<Item = (&'a [f32], &'a [f32])>, t: Term) -> f64 {
        rows.fold(0.0, |total, (a, b)| total + sum(a, b, t))
    }

    /// [`super::sum2_rows`] with every row in [`sum2`].
    #[target_feature(enable = "avx2")]
    pub(super) fn sum2_rows<'a>(
        rows: impl Iterator<Item = (&'a [f32], &'a [f32])>,
        terms: (Term, Term),
    ) -> (f64, f64) {
        rows.fold((0.0, 0.0), |(t, u), (a, b)| {
            let (p, q) = sum2(a, b, terms);
            (t + p, u + q)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{portable, sum, sum2_rows, sum_rows, Term};

    /// `t(p, q)` in f64, without rounding (an independent reference for the loops).
    fn exact_term(t: Term, p: f32, q: f32) -> f64 {
        let (p, q) = (f64::from(p), f64::from(q));
        match t {
            Term::First => p,
            Term::Abs => p.abs(),
            Term::Square => p * p,
            Term::Product => p * q,
            Term::SquaredDeviation(m) => (p - f64::from(m)).powi(2),
        }
    }

    /// The AVX2 kernels (where the CPU has them) give the portable loop's bits, for every term
    /// and pair of terms, on lengths with and without a tail, across block boundaries, and over
    /// rows; with values whose sums round differently in another order, so a change of order
    /// shows.
    #[test]
    fn kernels_give_the_portable_bits() {
        let value = |i: usize, seed: u32| {
            let h = (i as u32 ^ seed).wrapping_mul(2654435761).rotate_left(9);
            ((h % 40009) as f32 / 97.0 - 206.0) * if h.is_multiple_of(7) { 1e4 } else { 1.0 }
        };
        let terms = [
            Term::First,
            Term::Abs,
            Term::Square,
            Term::Product,
            Term::SquaredDeviation(3.25),
        ];
        for n in [0, 5, 8, 1023, 1024, 1029, 5000] {
            let a: Vec<f32> = (0..n).map(|i| value(i, 1)).collect();
            let b: Vec<f32> = (0..n).map(|i| value(i, 2)).collect();
            for t in terms {
                let want = portable(&a, &b, [t]).0;
                assert_eq!(sum(&a, &b, t).to_bits(), want.to_bits(), "{t:?} over {n}");
                // And near the exact sum (f64 throughout), as any summation order is.
                let exact: f64 = a.iter().zip(&b).map(|(&p, &q)| exact_term(t, p, q)).sum();
                let scale: f64 = a
                    .iter()
                    .zip(&b)
                    .map(|(&p, &q)| exact_term(t, p, q).abs())
                    .sum();
                assert!(
                    (want - exact).abs() <= 1e-5 * scale + 1e-30,
                    "{t:?} over {n}: {want} vs {exact}"
                );
            }
            for row in [1, 64, 1029] {
                let rows = || a.chunks(row).zip(b.chunks(row));
                for t in terms {
                    let want = rows().fold(0.0, |s, (a, b)| s + portable(a, b, [t]).0);
                    let got = sum_rows(rows(), t);
                    assert_eq!(
                        got.to_bits(),
                        want.to_bits(),
                        "{t:?} over {n} in rows of {row}"
                    );
                    for u in terms {
                        let want_t = rows().fold(0.0, |s, (a, b)| s + portable(a, b, [t]).0);
                        let want_u = rows().fold(0.0, |s, (a, b)| s + portable(a, b, [u]).0);
                        let (got_t, got_u) = sum2_rows(rows(), (t, u));
                        let (got, want) = ([got_t, got_u], [want_t, want_u]);
                        assert_eq!(
                            got.map(f64::to_bits),
                            want.map(f64::to_bits),
                            "{t:?}, {u:?}"
                        );
                    }
                }
            }
        }
    }
}
