//! Scale's forward pass and its parameter gradients in one pass over the data each. Composed
//! from broadcasts, the forward pass of an in-place Scale with a bias reads and writes its
//! blob three times (keep a copy, multiply, add), and the gradients take a product buffer and
//! three passes; after every BatchNorm of a ResNet or a DenseNet, that is memory traffic the
//! size of the net's activations.
//!
//! The same bits as the composition (`layers::scale`'s, which the tests run beside these):
//! each element takes the composition's f32 steps in its order (`x * scale`, then `+ bias`),
//! and each channel sum is [`channel_sum`], as `sum_per_channel` adds.

use super::elementwise::Operand;
use super::lane_sums::Term;
use super::reductions::{
    channel_sum, channel_sums2, for_channel_runs, for_channel_runs2, map_channels,
};
use super::Par;
use crate::backend::Axis;

/// `y = x scale (+ bias)` per channel, and `x` copied into `keep` where given.
pub(super) fn forward(
    par: Par<'_>,
    axis: Axis,
    (scale, bias): (&[f32], Option<&[f32]>),
    x: Operand<'_>,
    y: &mut [f32],
    keep: Option<&mut [f32]>,
) {
    // One channel's run from `at`: its input (`None`: `y` itself), scale and bias.
    let operands = move |c: usize, at: usize| {
        let x = match x {
            Operand::Same => None,
            Operand::Slice(x) => Some(&x[at..at + axis.inner]),
        };
        (x, scale[c], bias.map(|b| b[c]))
    };
    match keep {
        Some(keep) => for_channel_runs2(
            par,
            axis,
            y,
            keep,
            #[inline(always)]
            |c, at, y, kept| {
                let (x, s, b) = operands(c, at);
                affine(s, b, x, y, Some(kept))
            },
        ),
        None => for_channel_runs(
            par,
            axis,
            y,
            #[inline(always)]
            |c, at, y| {
                let (x, s, b) = operands(c, at);
                affine(s, b, x, y, None)
            },
        ),
    }
}

/// One channel's run of `y = x s (+ b)`, `x` from `x` or `y` itself, copied into `keep`.
#[inline(always)]
fn affine(s: f32, b: Option<f32>, x: Option<&[f32]>, y: &mut [f32], keep: Option<&mut [f32]>) {
    match b {
        Some(b) => map_run(move |v| v * s + b, x, y, keep),
        None => map_run(move |v| v * s, x, y, keep),
    }
}

/// `y = f(x)` over a run, `x` from `x` or `y` itself, copied into `keep`: one loop per case, so
/// short runs (DenseNet's 8 x 8 maps) pay no call per copy.
#[inline(always)]
fn map_run(f: impl Fn(f32) -> f32, x: Option<&[f32]>, y: &mut [f32], keep: Option<&mut [f32]>) {
    match (x, keep) {
        (Some(x), Some(keep)) => {
            for ((y, k), &v) in y.iter_mut().zip(keep).zip(x) {
                *k = v;
                *y = f(v);
            }
        }
        (Some(x), None) => y.iter_mut().zip(x).for_each(|(y, &v)| *y = f(v)),
        (None, Some(keep)) => {
            for (y, k) in y.iter_mut().zip(keep) {
                *k = *y;
                *y = f(*y);
            }
        }
        (None, None) => y.iter_mut().for_each(|y| *y = f(*y)),
    }
}

/// Per channel, `scale_diff = sum(dy x) + beta scale_diff` and `bias_diff = sum(dy) +
/// bias_diff` (`sum_per_channel`'s arithmetic, with `alpha` 1).
pub(super) fn gradients(
    par: Par<'_>,
    axis: Axis,
    x: &[f32],
    dy: &[f32],
    scale_diff: Option<(&mut [f32], f32)>,
    bias_diff: Option<&mut [f32]>,
) {
    let sums = map_channels(par, axis, |c| match bias_diff.is_some() {
        true => channel_sums2(axis, (dy, x), c, (Term::Product, Term::First)),
        false => (channel_sum(axis, 1.0, (dy, x), c, Term::Product), 0.0),
    });
    if let Some((scale_diff, beta)) = scale_diff {
        for (v, &(sum, _)) in scale_diff.iter_mut().zip(&sums) {
            *v = if beta == 0.0 { sum } else { sum + beta * *v };
        }
    }
    if let Some(bias_diff) = bias_diff {
        for (v, &(_, sum)) in bias_diff.iter_mut().zip(&sums) {
            *v += sum;
        }
    }
}
