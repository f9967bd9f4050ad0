//! Local response normalisation across channels, parallel over images
//! (upstream: src/caffe/layers/lrn_layer.cpp, `CrossChannelForward_cpu`/`Backward_cpu`).
//!
//! The window sums slide along the channels a whole plane at a time, as upstream does: the sum
//! for channel `c` is the sum for `c - 1` plus the entering channel minus the leaving one. So a
//! window sum is not recomputed from scratch, and can differ from a direct sum by rounding.

use super::Par;
use crate::backend::LrnGeom;
use std::cell::RefCell;

thread_local! {
    /// One plane of running sums for the backward pass, reused across calls on each thread.
    static ACCUM: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
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
    x: &[f32],
    y: &[f32],
    scale: &[f32],
    dy: &[f32],
    dx: &mut [f32],
) {
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
        ACCUM.with(|cell| {
            let mut acc = cell.borrow_mut();
            acc.clear();
            acc.resize(s_n, 0.0);
            // The window of channel 0 without its last channel: channels 0..pre.
            for c in 0..pre.min(c_n) {
                add_ratio(&mut acc, c, 1.0);
            }
            for (c, dxc) in dxi.chunks_mut(s_n.max(1)).enumerate() {
                if c + pre < c_n {
                    add_ratio(&mut acc, c + pre, 1.0);
                }
                let r = at(c);
                dxc.iter_mut()
                    .zip(acc.iter())
                    .zip(dy[r.clone()].iter().zip(&scale[r.clone()]).zip(&x[r]))
                    .for_each(|((o, &ac), ((&d, &s), &v))| {
                        *o = d * pow_neg_beta(s, g.beta) - cache_ratio * (v * ac);
                    });
                if c >= pre {
                    add_ratio(&mut acc, c - pre, -1.0);
                }
            }
        });
    });
}
