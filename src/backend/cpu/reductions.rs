//! Reductions and broadcasts.
//!
//! Summation order. `reduce` (sum, asum, sumsq, dot) and `sum_per_channel` do not add left to
//! right: they cut the input into blocks of 1024, sum each block in 8 interleaved f32 lanes
//! (element `i` goes to lane `i % 8`), and add the lane and block totals in f64. Long inputs are
//! first cut into at most 64 parts whose boundaries depend only on the length; parts are summed
//! in parallel and their totals added in order. The result is therefore the same for any
//! thread count, and usually closer to the exact sum than a naive f32 loop.
//!
//! The axis reductions (`over_axis`) go along the reduced axis in order, exactly like a naive
//! loop starting from the first element (max) or from zero (sum, dot).

use super::elementwise::{local, Operand};
use super::lane_sums::{self, Term};
use super::simd::with_simd;
use super::Par;
use crate::backend::Axis;
use rayon::prelude::*;

/// Inputs shorter than this are reduced as one part, serially.
const PART: usize = 1 << 15;
/// The most parts an input is cut into.
const MAX_PARTS: usize = 64;
/// `sum_i t(a[i], b[i])` over equal-length slices; deterministic for any thread count.
pub(super) fn reduce(par: Par<'_>, a: &[f32], b: &[f32], t: Term) -> f64 {
    let n = a.len();
    let parts = n.div_ceil(PART).clamp(1, MAX_PARTS);
    let part_len = n.div_ceil(parts).max(1);
    let mut sums = [0f64; MAX_PARTS];
    let part = |i: usize| {
        let start = (i * part_len).min(n);
        let end = ((i + 1) * part_len).min(n);
        lane_sums::sum(&a[start..end], &b[start..end], t)
    };
    match par.pool {
        Some(pool) if parts > 1 => pool.install(|| {
            sums[..parts]
                .par_iter_mut()
                .enumerate()
                .for_each(|(i, s)| *s = part(i))
        }),
        _ => sums[..parts]
            .iter_mut()
            .enumerate()
            .for_each(|(i, s)| *s = part(i)),
    }
    sums[..parts].iter().sum()
}

/// What [`over_axis`] computes.
#[derive(Clone, Copy)]
pub(super) enum AxisReduce<'a> {
    Max,
    Sum,
    /// The sum of the products with this second factor, shaped as `x`.
    Dot(&'a [f32]),
}

/// `y[o, j] = reduce_c x[o, c, j]`.
pub(super) fn over_axis(par: Par<'_>, axis: Axis, x: &[f32], y: &mut [f32], kind: AxisReduce<'_>) {
    let Axis { dim, inner, .. } = axis;
    par.rows_mut(y, inner, dim * inner, |o, yr| {
        let base = o * dim * inner;
        let plane = |c: usize| &x[base + c * inner..base + (c + 1) * inner];
        match kind {
            AxisReduce::Max => {
                if dim == 0 {
                    yr.fill(f32::NEG_INFINITY);
                    return;
                }
                yr.copy_from_slice(plane(0));
                for c in 1..dim {
                    // Upstream's `max(value, running)`: a NaN value replaces the running max.
                    yr.iter_mut()
                        .zip(plane(c))
                        .for_each(|(m, &v)| *m = if v < *m { *m } else { v });
                }
            }
            AxisReduce::Sum => {
                yr.fill(0.0);
                for c in 0..dim {
                    yr.iter_mut().zip(plane(c)).for_each(|(s, &v)| *s += v);
                }
            }
            AxisReduce::Dot(x2) => {
                yr.fill(0.0);
                for c in 0..dim {
                    let q = &x2[base + c * inner..base + (c + 1) * inner];
                    yr.iter_mut()
                        .zip(plane(c).iter().zip(q))
                        .for_each(|(s, (&p, &q))| *s += p * q);
                }
            }
        }
    });
}

/// `y[o, c, j] = f(x[o, c, j], v[o, j])`, `x` possibly `y` itself.
pub(super) fn along_axis<F>(
    par: Par<'_>,
    axis: Axis,
    v: &[f32],
    x: Operand<'_>,
    y: &mut [f32],
    f: F,
) where
    F: Fn(f32, f32) -> f32 + Copy + Sync + Send,
{
    let Axis { dim, inner, .. } = axis;
    if inner == 0 {
        return;
    }
    par.rows_mut(y, dim * inner, dim * inner, |o, yo| {
        let f = local(f);
        let vo = &v[o * inner..(o + 1) * inner];
        with_simd(
            #[inline(always)]
            || {
                for (c, yc) in yo.chunks_mut(inner).enumerate() {
                    match x {
                        Operand::Same => yc.iter_mut().zip(vo).for_each(|(p, &q)| *p = f(*p, q)),
                        Operand::Slice(x) => {
                            let xc = &x[(o * dim + c) * inner..(o * dim + c + 1) * inner];
                            yc.iter_mut()
                                .zip(xc.iter().zip(vo))
                                .for_each(|(p, (&u, &q))| *p = f(u, q))
                        }
                    }
                }
            },
        )
    });
}

/// The row length of a task in a per-channel pass over `axis` (`inner > 0`): whole runs of one
/// channel (`inner` values each), a few thousand values at least, so that small maps (DenseNet's
/// 8 x 8) do not cost more in calls than in arithmetic. A row may span channels and images.
fn channel_row_len(axis: Axis) -> usize {
    axis.inner
        * 4096usize
            .div_ceil(axis.inner)
            .min(axis.dim * axis.outer)
            .max(1)
}

/// Calls `f(channel, at, run)` for every run of one channel in `y` viewed as `axis` (`inner`
/// values from `at`), the pool's tasks taking rows of [`channel_row_len`] values. `f` runs
/// inside `with_simd`: mark it `#[inline(always)]`, and copy the scalars its loops read.
pub(super) fn for_channel_runs<F>(par: Par<'_>, axis: Axis, y: &mut [f32], f: F)
where
    F: Fn(usize, usize, &mut [f32]) + Sync + Send,
{
    let inner = axis.inner;
    if inner == 0 || axis.dim == 0 {
        return;
    }
    let row_len = channel_row_len(axis);
    par.rows_mut(y, row_len, row_len, |r, y| {
        with_simd(
            #[inline(always)]
            || {
                for (k, run) in y.chunks_mut(inner).enumerate() {
                    let at = r * row_len + k * inner;
                    f((at / inner) % axis.dim, at, run);
                }
            },
        )
    });
}

/// [`for_channel_runs`] over two outputs of `y`'s length: `f(channel, at, run of y, run of z)`.
pub(super) fn for_channel_runs2<F>(par: Par<'_>, axis: Axis, y: &mut [f32], z: &mut [f32], f: F)
where
    F: Fn(usize, usize, &mut [f32], &mut [f32]) + Sync + Send,
{
    let inner = axis.inner;
    if inner == 0 || axis.dim == 0 {
        return;
    }
    let row_len = channel_row_len(axis);
    par.rows2_mut(y, row_len, z, row_len, row_len, |r, y, z| {
        with_simd(
            #[inline(always)]
            || {
                let runs = y.chunks_mut(inner).zip(z.chunks_mut(inner));
                for (k, (run_y, run_z)) in runs.enumerate() {
                    let at = r * row_len + k * inner;
                    f((at / inner) % axis.dim, at, run_y, run_z);
                }
            },
        )
    });
}

/// `y[o, c, j] = f(x[o, c, j], v[c])`, `x` possibly `y` itself.
pub(super) fn per_channel<F>(
    par: Par<'_>,
    axis: Axis,
    v: &[f32],
    x: Operand<'_>,
    y: &mut [f32],
    f: F,
) where
    F: Fn(f32, f32) -> f32 + Copy + Sync + Send,
{
    let inner = axis.inner;
    for_channel_runs(
        par,
        axis,
        y,
        #[inline(always)]
        |c, at, run| {
            let (f, vc) = (local(f), v[c]);
            match x {
                Operand::Same => run.iter_mut().for_each(|p| *p = f(*p, vc)),
                Operand::Slice(x) => run
                    .iter_mut()
                    .zip(&x[at..at + inner])
                    .for_each(|(p, &q)| *p = f(q, vc)),
            }
        },
    );
}

/// `y[c] = alpha sum_{o, j} x[o, c, j] + beta y[c]` (`y` not read when `beta == 0`); each
/// `(o, c)` row is summed as in [`reduce`]'s blocks and the rows are added in f64, in order.
pub(super) fn sum_per_channel(
    par: Par<'_>,
    axis: Axis,
    alpha: f32,
    x: &[f32],
    beta: f32,
    y: &mut [f32],
) {
    par.rows_mut(y, 1, axis.outer * axis.inner, |c, yc| {
        let sum = channel_sum(axis, alpha, (x, x), c, Term::First);
        yc[0] = if beta == 0.0 { sum } else { sum + beta * yc[0] };
    });
}

/// Row `o` of channel `c` of `x` viewed as `outer x channels x inner`.
fn row(axis: Axis, x: &[f32], o: usize, c: usize) -> &[f32] {
    let at = (o * axis.dim + c) * axis.inner;
    &x[at..at + axis.inner]
}

/// `alpha` times the sum of `t(a, b)` over channel `c` of `a` and `b`, as `sum_per_channel`
/// sums a channel: each row in [`lane_sums::sum`], the rows added in f64 in order.
pub(super) fn channel_sum(
    axis: Axis,
    alpha: f32,
    (a, b): (&[f32], &[f32]),
    c: usize,
    t: Term,
) -> f32 {
    let rows = (0..axis.outer).map(|o| (row(axis, a, o, c), row(axis, b, o, c)));
    (f64::from(alpha) * lane_sums::sum_rows(rows, t)) as f32
}

/// [`channel_sum`] of `t` and of `u` (with `alpha` 1) in one pass over channel `c` of `a` and
/// `b`: the same two sums, reading the data once.
pub(super) fn channel_sums2(
    axis: Axis,
    (a, b): (&[f32], &[f32]),
    c: usize,
    terms: (Term, Term),
) -> (f32, f32) {
    let rows = (0..axis.outer).map(|o| (row(axis, a, o, c), row(axis, b, o, c)));
    let (total_t, total_u) = lane_sums::sum2_rows(rows, terms);
    (total_t as f32, total_u as f32)
}

/// `f(c)` for every channel, side by side on the pool when there is one.
pub(super) fn map_channels<T: Send>(
    par: Par<'_>,
    axis: Axis,
    f: impl Fn(usize) -> T + Sync + Send,
) -> Vec<T> {
    match par.pool {
        Some(pool) if par.threads > 1 && axis.dim > 1 => {
            pool.install(|| (0..axis.dim).into_par_iter().map(f).collect())
        }
        _ => (0..axis.dim).map(f).collect(),
    }
}
