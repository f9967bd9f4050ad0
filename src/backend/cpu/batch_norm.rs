//! BatchNorm's normalisation and its input gradient in three passes over the data each,
//! instead of the dozen that composing them from element-wise ops, broadcasts and channel sums
//! takes: a DenseNet's BatchNorms see every feature map of every dense block, and on the CPU
//! they are bound by memory traffic, not arithmetic.
//!
//! The same bits as that composition (`layers::batch_norm`'s, which the tests run beside
//! these): each channel sum is [`channel_sum`], as `sum_per_channel` adds them, and every
//! element takes the composition's f32 steps in its order, without storing the values in
//! between.

use super::lane_sums::Term;
use super::reductions::{
    channel_sum, channel_sums2, for_channel_runs, for_channel_runs2, map_channels,
};
use super::Par;
use crate::backend::Axis;

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
                let m = channel_sum(axis, inv_count, (input, input), c, Term::First);
                let deviation = Term::SquaredDeviation(m);
                let v = channel_sum(axis, inv_count, (input, input), c, deviation);
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
    for_channel_runs2(
        par,
        axis,
        y,
        x_norm,
        #[inline(always)]
        |c, at, y, norm| {
            let (m, s) = (mean[c], std[c]);
            match x {
                Some(x) => {
                    for ((y, n), &x) in y.iter_mut().zip(norm).zip(&x[at..at + inner]) {
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
            }
        },
    );
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
            // dy first: its own sum is the second term's.
            channel_sums2(axis, (dy, y), c, (Term::Product, Term::First))
        })
    };
    let (neg_inv_count, inner) = (-inv_count, axis.inner);
    for_channel_runs(
        par,
        axis,
        dx,
        #[inline(always)]
        |c, at, dx| {
            let ((dot, sum), s) = (sums[c], std[c]);
            let y = &y[at..at + inner];
            // `move`: captured by reference, the scalars might alias `dx`, and the loop stays
            // scalar.
            let step = move |dy: f32, y: f32| (dy + neg_inv_count * (y * dot + sum)) / s;
            match dy {
                Some(dy) => {
                    for ((dx, &dy), &y) in dx.iter_mut().zip(&dy[at..at + inner]).zip(y) {
                        *dx = step(dy, y);
                    }
                }
                None => {
                    for (dx, &y) in dx.iter_mut().zip(y) {
                        *dx = step(*dx, y);
                    }
                }
            }
        },
    );
}
