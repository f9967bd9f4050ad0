//! Local response normalisation (upstream: src/caffe/layers/lrn_layer.cpp).
//!
//! Across channels (`CrossChannelForward_cpu`/`Backward_cpu`), parallel over images: the window
//! sums slide along the channels a whole plane at a time, as upstream does: the sum for channel
//! `c` is the sum for `c - 1` plus the entering channel minus the leaving one. So a window sum
//! is not recomputed from scratch, and can differ from a direct sum by rounding.
//!
//! Within a channel, parallel over planes: upstream's composition of layers (square, average
//! pooling, power, product; see `Backend::lrn_within_forward`) fused into one pass per plane
//! with the same arithmetic. The window sums run over a zero-padded plane: squares are never
//! `-0`, nor is a running sum of shares (it starts at `+0` and rounding to nearest never
//! yields `-0` from unequal signs), so the padding's `+ 0` terms change no bit, and each
//! output still adds its window in row-major order, each input its shares in output order.

use super::simd::{add_short, with_simd};
use super::{power_step, with_zeroed, Par};
use crate::backend::{LrnGeom, LrnWithin, PoolGeom};
use std::cell::RefCell;

thread_local! {
    /// One plane of running sums for the backward pass, reused across calls on each thread.
    static ACCUM: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// One zero-padded plane (squares, or shares in backward) for WITHIN_CHANNEL.
    static PADDED: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// What a forward pass keeps for its backward pass: its input `x`, its output `y` and the
/// normaliser `scale` (WITHIN_CHANNEL: the window mean in `y`, the power in `scale`).
pub(super) struct Saved<'a> {
    pub x: &'a [f32],
    pub y: &'a [f32],
    pub scale: &'a [f32],
}

/// Calls `f(padded, padded_width)` with this thread's zeroed padded plane for `g`.
fn with_padded<R>(g: &PoolGeom, f: impl FnOnce(&mut [f32], usize) -> R) -> R {
    let (hp, wp) = (g.height + 2 * g.pad_h, g.width + 2 * g.pad_w);
    with_zeroed(&PADDED, hp * wp, |plane| f(plane, wp))
}

/// WITHIN_CHANNEL forward up to the power: `mean = avepool(x^2)` and
/// `power = (1 + alpha mean)^-beta` per plane (`g` a checked LRN window).
pub(super) fn within_forward(
    par: Par<'_>,
    l: &LrnWithin,
    x: &[f32],
    mean: &mut [f32],
    power: &mut [f32],
) {
    let (g, alpha, beta) = (&l.window, l.alpha, l.beta);
    let (hw, w_n, taps) = (g.height * g.width, g.width, g.kernel_h * g.kernel_w);
    // Every window is whole in the padded plane, so every divisor is the window's size.
    let size = taps as f32;
    par.rows2_mut(mean, hw, power, hw, hw * (taps + 8), |p, mp, pp| {
        let xp = &x[p * hw..(p + 1) * hw];
        with_simd(
            #[inline(always)]
            || {
                with_padded(g, |sq, wp| {
                    for (h, row) in xp.chunks_exact(w_n).enumerate() {
                        let at = (h + g.pad_h) * wp + g.pad_w;
                        sq[at..at + w_n]
                            .iter_mut()
                            .zip(row)
                            .for_each(|(s, &v)| *s = v * v);
                    }
                    for (oh, mr) in mp.chunks_exact_mut(w_n).enumerate() {
                        mr.fill(0.0);
                        for i in 0..g.kernel_h {
                            for j in 0..g.kernel_w {
                                let at = (oh + i) * wp + j;
                                add_short(mr, &sq[at..at + w_n]);
                            }
                        }
                        mr.iter_mut().for_each(|m| *m /= size);
                    }
                });
                pp.iter_mut()
                    .zip(mp.iter())
                    .for_each(|(q, &m)| *q = power_step(m, -beta, alpha, 1.0));
            },
        )
    });
}

/// WITHIN_CHANNEL backward, in the composition's order of operations (see
/// `Backend::lrn_within_backward`): per output the share `(-beta alpha) (dy x power /
/// (1 + alpha mean)) / size`, per input the sum of the shares of the windows holding it, then
/// `dx = 2 (sum x) + dy power`.
pub(super) fn within_backward(
    par: Par<'_>,
    l: &LrnWithin,
    saved: Saved<'_>,
    dy: &[f32],
    dx: &mut [f32],
) {
    let (g, alpha, beta) = (&l.window, l.alpha, l.beta);
    let Saved {
        x,
        y: mean,
        scale: power,
    } = saved;
    let (hw, w_n, taps) = (g.height * g.width, g.width, g.kernel_h * g.kernel_w);
    let size = taps as f32;
    let factor = -beta * alpha;
    par.rows_mut(dx, hw, hw * (taps + 12), |p, dxp| {
        let r = p * hw..(p + 1) * hw;
        let (xp, mp, pp, dyp) = (&x[r.clone()], &mean[r.clone()], &power[r.clone()], &dy[r]);
        with_simd(
            #[inline(always)]
            || {
                with_padded(g, |shares, wp| {
                    for h in 0..g.height {
                        let at = (h + g.pad_h) * wp + g.pad_w;
                        let q = h * w_n..(h + 1) * w_n;
                        let inputs = dyp[q.clone()].iter().zip(&xp[q.clone()]);
                        let inputs = inputs.zip(pp[q.clone()].iter().zip(&mp[q]));
                        for (s, ((&d, &v), (&pw, &m))) in
                            shares[at..at + w_n].iter_mut().zip(inputs)
                        {
                            let t = d * v * pw / power_step(m, 1.0, alpha, 1.0);
                            *s = factor * t / size;
                        }
                    }
                    for (h, dst) in dxp.chunks_exact_mut(w_n).enumerate() {
                        // The pixel's windows are the outputs of padded rows h..h+n and columns
                        // w..w+n, taken in output order.
                        dst.fill(0.0);
                        for i in 0..g.kernel_h {
                            for j in 0..g.kernel_w {
                                let at = (h + i) * wp + j;
                                add_short(dst, &shares[at..at + w_n]);
                            }
                        }
                        let q = h * w_n..(h + 1) * w_n;
                        let inputs = xp[q.clone()].iter().zip(dyp[q.clone()].iter().zip(&pp[q]));
                        for (o, (&v, (&d, &pw))) in dst.iter_mut().zip(inputs) {
                            *o = 2.0 * (*o * v) + d * pw;
                        }
                    }
                })
            },
        )
    });
}

/// `s^-beta`, with a faster exact-enough form for AlexNet's `beta = 0.75`.
#[inline]
fn pow_neg_beta(s: f32, beta: f32) -> f32 {
    if beta == 0.75 {
        let r = s.sqrt();
        1.0 / (r * r.sqrt())
    } else {
        s.powf(-beta)
    }
}

pub(super) fn across_forward(
    par: Par<'_>,
    g: &LrnGeom,
    x: &[f32],
    scale: &mut [f32],
    y: &mut [f32],
) {
    let (c_n, s_n) = (g.channels, g.spatial);
    let image = c_n * s_n;
    let pre = (g.size - 1) / 2;
    let a = g.alpha / g.size as f32;
    par.rows2_mut(scale, image, y, image, image * 4, |n, sc, yi| {
        let xi = &x[n * image..(n + 1) * image];
        let plane = |c: usize| &xi[c * s_n..(c + 1) * s_n];
        if s_n == 0 || c_n == 0 {
            return;
        }
        // Channel 0: the window covers channels 0..=pre (the ones before 0 are padding).
        let (first, rest) = sc.split_at_mut(s_n);
        first.fill(g.k);
        for c in 0..=pre.min(c_n - 1) {
            first
                .iter_mut()
                .zip(plane(c))
                .for_each(|(s, &v)| *s += a * (v * v));
        }
        let mut prev: &[f32] = first;
        for (i, cur) in rest.chunks_mut(s_n).enumerate() {
            let c = i + 1;
            cur.copy_from_slice(prev);
            if c + pre < c_n {
                cur.iter_mut()
                    .zip(plane(c + pre))
                    .for_each(|(s, &v)| *s += a * (v * v));
            }
            if c > pre {
                cur.iter_mut()
                    .zip(plane(c - pre - 1))
                    .for_each(|(s, &v)| *s -= a * (v * v));
            }
            prev = cur;
        }
        yi.iter_mut()
            .zip(sc.iter().zip(xi))
            .for_each(|(o, (&s, &v))| *o = v * pow_neg_beta(s, g.beta));
    });
}

pub(super) fn across_backward(
    par: Par<'_>,
    g: &LrnGeom,
    saved: Saved<'_>,
    dy: &[f32],
    dx: &mut [f32],
) {
    let Saved { x, y, scale } = saved;
    let (c_n, s_n) = (g.channels, g.spatial);
    let image = c_n * s_n;
    let pre = (g.size - 1) / 2;
    let cache_ratio = 2.0 * g.alpha * g.beta / g.size as f32;
    par.rows_mut(dx, image, image * 6, |n, dxi| {
        let base = n * image;
        let at = |c: usize| base + c * s_n..base + (c + 1) * s_n;
        // ratio[c] = dy[c] y[c] / scale[c], added into the running window sum.
        let add_ratio = |acc: &mut [f32], c: usize, sign: f32| {
            let r = at(c);
            acc.iter_mut()
                .zip(dy[r.clone()].iter().zip(&y[r.clone()]).zip(&scale[r]))
                .for_each(|(a, ((&d, &t), &s))| *a += sign * (d * t / s));
        };
        with_zeroed(&ACCUM, s_n, |acc| {
            // The window of channel 0 without its last channel: channels 0..pre.
            for c in 0..pre.min(c_n) {
                add_ratio(acc, c, 1.0);
            }
            for (c, dxc) in dxi.chunks_mut(s_n.max(1)).enumerate() {
                if c + pre < c_n {
                    add_ratio(acc, c + pre, 1.0);
                }
                let r = at(c);
                dxc.iter_mut()
                    .zip(acc.iter())
                    .zip(dy[r.clone()].iter().zip(&scale[r.clone()]).zip(&x[r]))
                    .for_each(|((o, &ac), ((&d, &s), &v))| {
                        *o = d * pow_neg_beta(s, g.beta) - cache_ratio * (v * ac);
                    });
                if c >= pre {
                    add_ratio(acc, c - pre, -1.0);
                }
            }
        });
    });
}
