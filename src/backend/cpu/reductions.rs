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
use super::simd::with_simd;
use super::Par;
use crate::backend::Axis;
use rayon::prelude::*;

/// Inputs shorter than this are reduced as one part, serially.
const PART: usize = 1 << 15;
/// The most parts an input is cut into.
const MAX_PARTS: usize = 64;
/// Elements summed in f32 lanes before the lanes are added in f64.
const BLOCK: usize = 1024;
/// Interleaved f32 accumulators within a block.
const LANES: usize = 8;

/// `sum_i f(a[i], b[i])` in blocks and lanes (see the module doc); `a` and `b` have one length.
pub(super) fn lanes<F: Fn(f32, f32) -> f32>(a: &[f32], b: &[f32], f: &F) -> f64 {
    let mut total = 0f64;
    for (ab, bb) in a.chunks(BLOCK).zip(b.chunks(BLOCK)) {
        let mut acc = [0f32; LANES];
        let mut ia = ab.chunks_exact(LANES);
        let mut ib = bb.chunks_exact(LANES);
        for (xa, xb) in (&mut ia).zip(&mut ib) {
            for l in 0..LANES {
                acc[l] += f(xa[l], xb[l]);
            }
        }
        for (l, (&p, &q)) in ia.remainder().iter().zip(ib.remainder()).enumerate() {
            acc[l] += f(p, q);
        }
        total += acc.iter().map(|&v| f64::from(v)).sum::<f64>();
    }
    total
}

/// `sum_i f(a[i], b[i])` over equal-length slices; deterministic for any thread count.
pub(super) fn reduce<F>(par: Par<'_>, a: &[f32], b: &[f32], f: F) -> f64
where
    F: Fn(f32, f32) -> f32 + Sync + Send,
{
    let n = a.len();
    let parts = n.div_ceil(PART).clamp(1, MAX_PARTS);
    let part_len = n.div_ceil(parts).max(1);
    let mut sums = [0f64; MAX_PARTS];
    let part = |i: usize| {
        let start = (i * part_len).min(n);
        let end = ((i + 1) * part_len).min(n);
        lanes(&a[start..end], &b[start..end], &f)
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
        with_simd(|| {
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
        })
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
    let (channels, inner) = (axis.dim, axis.inner);
    if inner == 0 || channels == 0 {
        return;
    }
    // Long rows are worth a task each; short ones are grouped per outer index.
    let row_len = if inner >= 64 { inner } else { channels * inner };
    par.rows_mut(y, row_len, row_len, |r, yr| {
        let f = local(f);
        let start = r * row_len;
        with_simd(|| {
            for (k, yc) in yr.chunks_mut(inner).enumerate() {
                let s = start + k * inner;
                let vc = v[(s / inner) % channels];
                match x {
                    Operand::Same => yc.iter_mut().for_each(|p| *p = f(*p, vc)),
                    Operand::Slice(x) => yc
                        .iter_mut()
                        .zip(&x[s..s + inner])
                        .for_each(|(p, &q)| *p = f(q, vc)),
                }
            }
        })
    });
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
    let Axis {
        outer,
        dim: channels,
        inner,
    } = axis;
    let id = |a: f32, _: f32| a;
    par.rows_mut(y, 1, outer * inner, |c, yc| {
        let mut s = 0f64;
        for o in 0..outer {
            let row = &x[(o * channels + c) * inner..(o * channels + c + 1) * inner];
            s += lanes(row, row, &id);
        }
        let sum = (f64::from(alpha) * s) as f32;
        yc[0] = if beta == 0.0 { sum } else { sum + beta * yc[0] };
    });
}
