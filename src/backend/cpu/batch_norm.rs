//! BatchNorm's normalisation and its input gradient in three passes over the data each,
//! instead of the dozen that composing them from element-wise ops, broadcasts and channel sums
//! takes: a DenseNet's BatchNorms see every feature map of every dense block, and on the CPU
//! they are bound by memory traffic, not arithmetic.
//!
//! The same bits as that composition (`layers::batch_norm`'s, which the tests run beside
//! these): each channel sum is [`lanes`] over the channel's rows added in f64 in order, as
//! `sum_per_channel` adds them, and every element takes the composition's f32 steps in its
//! order, without storing the values in between.

use super::reductions::lanes;
use super::simd::with_simd;
use super::Par;
use crate::backend::Axis;
use rayon::prelude::*;

/// Row `o` of channel `c` of `x` viewed as `outer x channels x inner`.
fn row(axis: Axis, x: &[f32], o: usize, c: usize) -> &[f32] {
    let at = (o * axis.dim + c) * axis.inner;
    &x[at..at + axis.inner]
}

/// `alpha` times the sum of `f(a, b)` over channel `c` of `a` and `b`, as `sum_per_channel`
/// sums a channel: each row in [`lanes`], the rows added in f64 in order.
fn channel_sum(
    axis: Axis,
    alpha: f32,
    (a, b): (&[f32], &[f32]),
    c: usize,
    f: impl Fn(f32, f32) -> f32,
) -> f32 {
    let total: f64 = (0..axis.outer)
        .map(|o| lanes(row(axis, a, o, c), row(axis, b, o, c), &f))
        .sum();
    (f64::from(alpha) * total) as f32
}

/// `f(c)` for every channel, side by side on the pool when there is one.
fn map_channels<T: Send>(par: Par<'_>, axis: Axis, f: impl Fn(usize) -> T + Sync + Send) -> Vec<T> {
    match par.pool {
        Some(pool) if par.threads > 1 && axis.dim > 1 => {
            pool.install(|| (0..axis.dim).into_par_iter().map(f).collect())
        }
        _ => (0..axis.dim).map(f).collect(),
    }
}

/// Where the forward pass takes its statistics.
pub(super) enum Statistics<'a> {
    /// The batch's: its mean and (biased) variance, each `inv_count` times a channel sum, are
    /// written here.
    Batch {
        inv_count: f32,
        mean: &'a mut [f32],
        variance: &'a mut [f32],
    },
    /// Given per channel (the running averages).
    Given {
        mean: &'a [f32],
        variance: &'a [f32],
    },
}

/// What [`forward`] writes: `y`, its copy `x_norm`, and per channel `std`.
pub(super) struct Output<'a> {
    pub y: &'a mut [f32],
    pub x_norm: &'a mut [f32],
    pub std: &'a mut [f32],
}

/// `y = (x - mean) / std` per channel, with `std = sqrt(variance + eps)`, and a copy of `y` in
/// `x_norm`; `x` is `None` when `y` holds the input (in place).
pub(super) fn forward(
    par: Par<'_>,
    axis: Axis,
    eps: f32,
    statistics: Statistics<'_>,
    x: Option<&[f32]>,
    Output { y, x_norm, std }: Output<'_>,
) {
    let (mean, variance): (&[f32], &[f32]) = match statistics {
        Statistics::Batch {
            inv_count,
            mean,
            variance,
        } => {
            let input = x.unwrap_or(y);
            let moments = map_channels(par, axis, |c| {
                let m = channel_sum(axis, inv_count, (input, input), c, |a, _| a);
                let v = channel_sum(axis, inv_count, (input, input), c, |a, _| {
                    let d = a - m;
                    d * d
                });
                (m, v)
            });
            for ((m, v), (bm, bv)) in mean.iter_mut().zip(variance.iter_mut()).zip(moments) {
                (*m, *v) = (bm, bv);
            }
            (mean, variance)
        }
        Statistics::Given { mean, variance } => (mean, variance),
    };
    for (s, &v) in std.iter_mut().zip(variance) {
        *s = (v + eps).sqrt();
    }
    let (std, inner) = (&*std, axis.inner);
    par.rows2_mut(y, inner, x_norm, inner, inner * 4, |r, y, norm| {
        let (start, m, s) = (r * inner, mean[r % axis.dim], std[r % axis.dim]);
        with_simd(|| match x {
            Some(x) => {
                let x = &x[start..start + y.len()];
                for ((y, n), &x) in y.iter_mut().zip(norm).zip(x) {
                    *y = (x - m) / s;
                    *n = *y;
                }
            }
            None => {
                for (y, n) in y.iter_mut().zip(norm) {
                    *y = (*y - m) / s;
                    *n = *y;
                }
            }
        })
    });
}

/// The input gradient with batch statistics:
/// `dx = (dy - inv_count (y sum(dy y) + sum(dy))) / std`, the sums per channel; `y` is the
/// normalised input, and `dy` is `None` when `dx` holds it (in place).
pub(super) fn backward(
    par: Par<'_>,
    axis: Axis,
    inv_count: f32,
    y: &[f32],
    std: &[f32],
    dy: Option<&[f32]>,
    dx: &mut [f32],
) {
    let sums = {
        let dy = dy.unwrap_or(dx);
        map_channels(par, axis, |c| {
            let dot = channel_sum(axis, 1.0, (y, dy), c, |y, dy| y * dy);
            let sum = channel_sum(axis, 1.0, (dy, dy), c, |dy, _| dy);
            (dot, sum)
        })
    };
    let neg_inv_count = -inv_count;
    par.rows_mut(dx, axis.inner, axis.inner * 4, |r, dx| {
        let start = r * axis.inner;
        let ((dot, sum), s) = (sums[r % axis.dim], std[r % axis.dim]);
        let y = &y[start..start + dx.len()];
        let step = |dy: f32, y: f32| (dy + neg_inv_count * (y * dot + sum)) / s;
        with_simd(|| match dy {
            Some(dy) => {
                let dy = &dy[start..start + dx.len()];
                for ((dx, &dy), &y) in dx.iter_mut().zip(dy).zip(y) {
                    *dx = step(dy, y);
                }
            }
            None => {
                for (dx, &y) in dx.iter_mut().zip(y) {
                    *dx = step(*dx, y);
                }
            }
        })
    });
}
