//! Max and average pooling, parallel over planes (upstream: src/caffe/layers/pooling_layer.cpp).
//!
//! Window of output `(ph, pw)`: rows from `ph * stride_h - pad_h` for `kernel_h` rows (columns
//! likewise). Max pooling looks only at the part inside the image. Average pooling sums the part
//! inside the image but divides by the size of the window clipped to the *padded* image, so
//! padded positions count as zeros. A window entirely outside the image (possible only when
//! the stride exceeds the kernel) gives `-f32::MAX` with mask -1 (max) or 0 (average).

use super::Par;
use crate::backend::PoolGeom;
use std::sync::atomic::{AtomicBool, Ordering};

/// Start and end (exclusive) of window `p` along one axis, clipped to `0..limit`, as i64.
fn window(p: usize, stride: usize, pad: usize, kernel: usize, limit: i64) -> (i64, i64) {
    let start = (p * stride) as i64 - pad as i64;
    ((start).max(0), (start + kernel as i64).min(limit))
}

/// Rows `hs..he` and columns `ws..we` of the window of output `(ph, pw)` inside the image, and
/// the average-pooling divisor.
fn ave_window(g: &PoolGeom, ph: usize, pw: usize) -> (usize, usize, usize, usize, f32) {
    let (h, w) = (g.height as i64, g.width as i64);
    let (hs_pad, he_pad) = window(ph, g.stride_h, g.pad_h, g.kernel_h, h + g.pad_h as i64);
    let (ws_pad, we_pad) = window(pw, g.stride_w, g.pad_w, g.kernel_w, w + g.pad_w as i64);
    // The divisor uses the window clipped to the padded image, before clipping to the image:
    // the start was not clipped at 0 there (the padding before the image counts).
    let hs_raw = (ph * g.stride_h) as i64 - g.pad_h as i64;
    let ws_raw = (pw * g.stride_w) as i64 - g.pad_w as i64;
    let size = (he_pad - hs_raw) * (we_pad - ws_raw);
    let (hs, he) = (hs_pad, he_pad.min(h));
    let (ws, we) = (ws_pad, we_pad.min(w));
    (
        hs as usize,
        he.max(hs) as usize,
        ws as usize,
        we.max(ws) as usize,
        size as f32,
    )
}

pub(super) fn max_forward(par: Par<'_>, g: &PoolGeom, x: &[f32], y: &mut [f32], mask: &mut [f32]) {
    let (hw, pp) = (g.height * g.width, g.pooled_h * g.pooled_w);
    let work = pp * g.kernel_h * g.kernel_w;
    par.rows2_mut(y, pp, mask, pp, work, |p, yp, mp| {
        let xp = &x[p * hw..(p + 1) * hw];
        for ph in 0..g.pooled_h {
            let (hs, he) = window(ph, g.stride_h, g.pad_h, g.kernel_h, g.height as i64);
            for pw in 0..g.pooled_w {
                let (ws, we) = window(pw, g.stride_w, g.pad_w, g.kernel_w, g.width as i64);
                let mut best = -f32::MAX;
                let mut arg = -1i64;
                // An empty window (start past the image) leaves best and arg as they are.
                let rows = if ws < we {
                    hs as usize..he.max(hs) as usize
                } else {
                    0..0
                };
                for h in rows {
                    let row_start = h * g.width + ws as usize;
                    let row = &xp[row_start..h * g.width + we as usize];
                    for (k, &v) in row.iter().enumerate() {
                        if v > best {
                            best = v;
                            arg = (row_start + k) as i64;
                        }
                    }
                }
                let q = ph * g.pooled_w + pw;
                yp[q] = best;
                mp[q] = arg as f32;
            }
        }
    });
}

/// Returns false if the mask held an index outside the plane (other than -1).
pub(super) fn max_backward(
    par: Par<'_>,
    g: &PoolGeom,
    dy: &[f32],
    mask: &[f32],
    dx: &mut [f32],
) -> bool {
    let (hw, pp) = (g.height * g.width, g.pooled_h * g.pooled_w);
    let bad = AtomicBool::new(false);
    par.rows_mut(dx, hw, pp.max(1), |p, dxp| {
        dxp.fill(0.0);
        let (dyp, mp) = (&dy[p * pp..(p + 1) * pp], &mask[p * pp..(p + 1) * pp]);
        for (&d, &m) in dyp.iter().zip(mp) {
            if m == -1.0 {
                continue;
            }
            if m >= 0.0 && m < hw as f32 && m.fract() == 0.0 {
                dxp[m as usize] += d;
            } else {
                bad.store(true, Ordering::Relaxed);
            }
        }
    });
    !bad.load(Ordering::Relaxed)
}

pub(super) fn ave_forward(par: Par<'_>, g: &PoolGeom, x: &[f32], y: &mut [f32]) {
    let (hw, pp) = (g.height * g.width, g.pooled_h * g.pooled_w);
    par.rows_mut(y, pp, pp * g.kernel_h * g.kernel_w, |p, yp| {
        let xp = &x[p * hw..(p + 1) * hw];
        for ph in 0..g.pooled_h {
            for pw in 0..g.pooled_w {
                let (hs, he, ws, we, size) = ave_window(g, ph, pw);
                let mut sum = 0f32;
                for h in hs..he {
                    sum = xp[h * g.width + ws..h * g.width + we]
                        .iter()
                        .fold(sum, |s, &v| s + v);
                }
                yp[ph * g.pooled_w + pw] = if hs < he && ws < we { sum / size } else { 0.0 };
            }
        }
    });
}

pub(super) fn ave_backward(par: Par<'_>, g: &PoolGeom, dy: &[f32], dx: &mut [f32]) {
    let (hw, pp) = (g.height * g.width, g.pooled_h * g.pooled_w);
    par.rows_mut(dx, hw, pp * g.kernel_h * g.kernel_w, |p, dxp| {
        dxp.fill(0.0);
        let dyp = &dy[p * pp..(p + 1) * pp];
        for ph in 0..g.pooled_h {
            for pw in 0..g.pooled_w {
                let (hs, he, ws, we, size) = ave_window(g, ph, pw);
                if hs >= he || ws >= we {
                    continue;
                }
                let share = dyp[ph * g.pooled_w + pw] / size;
                for h in hs..he {
                    dxp[h * g.width + ws..h * g.width + we]
                        .iter_mut()
                        .for_each(|v| *v += share);
                }
            }
        }
    });
}
