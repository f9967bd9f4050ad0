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

/// The input rows `hs..he` of output row `ph` inside the image (empty when none).
fn rows_of(g: &PoolGeom, ph: usize) -> std::ops::Range<usize> {
    let (hs, he) = window(ph, g.stride_h, g.pad_h, g.kernel_h, g.height as i64);
    hs as usize..he.max(hs) as usize
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
    let (hw, pp, pw_n) = (g.height * g.width, g.pooled_h * g.pooled_w, g.pooled_w);
    let work = pp * g.kernel_h * g.kernel_w;
    par.rows2_mut(y, pp, mask, pp, work, |p, yp, mp| {
        let xp = &x[p * hw..(p + 1) * hw];
        for (ph, (yr, mr)) in yp
            .chunks_exact_mut(pw_n)
            .zip(mp.chunks_exact_mut(pw_n))
            .enumerate()
        {
            let rows = rows_of(g, ph);
            for (pw, (y, m)) in yr.iter_mut().zip(mr.iter_mut()).enumerate() {
                let (ws, we) = window(pw, g.stride_w, g.pad_w, g.kernel_w, g.width as i64);
                let (mut best, mut arg) = (-f32::MAX, -1i64);
                for h in rows.clone() {
                    for w in ws..we {
                        let v = xp[h * g.width + w as usize];
                        // Strictly greater: the first maximum in row-major order wins and NaN
                        // never does, as upstream. (A branch: selects measured slower here,
                        // the compare-select chain being longer than a mispredict on average.)
                        if v > best {
                            (best, arg) = (v, (h * g.width) as i64 + w);
                        }
                    }
                }
                (*y, *m) = (best, arg as f32);
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
            // The index as an integer without a libm call: `m as usize` truncates (negative
            // and NaN give 0), so the round trip holds only for whole numbers in range.
            let i = m as usize;
            if i < hw && i as f32 == m {
                dxp[i] += d;
            } else if m != -1.0 {
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

/// Max-pooling backward as first written (a libm `fract` per mask entry), kept as the tests'
/// reference.
#[cfg(test)]
mod reference {
    use super::*;

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
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERIAL: Par<'static> = Par {
        pool: None,
        threads: 1,
    };

    fn geoms() -> Vec<PoolGeom> {
        let mut out = Vec::new();
        for (h, w) in [(5, 5), (7, 6), (12, 12), (32, 32), (3, 9)] {
            for (k, s, pad) in [
                (2, 2, 0),
                (3, 2, 0),
                (3, 2, 1),
                (3, 1, 1),
                (2, 3, 0),
                (5, 3, 2),
                // In ceil mode, a last window past the image.
                (1, 3, 0),
            ] {
                for ceil in [true, false] {
                    let round = |n: usize| {
                        let span = n + 2 * pad - k;
                        if ceil {
                            span.div_ceil(s) + 1
                        } else {
                            span / s + 1
                        }
                    };
                    let (mut ph, mut pw) = (round(h), round(w));
                    // Upstream drops a last window that would start in the padding.
                    if pad > 0 {
                        if (ph - 1) * s >= h + pad {
                            ph -= 1;
                        }
                        if (pw - 1) * s >= w + pad {
                            pw -= 1;
                        }
                    }
                    out.push(PoolGeom {
                        planes: 3,
                        height: h,
                        width: w,
                        kernel_h: k,
                        kernel_w: k,
                        stride_h: s,
                        stride_w: s,
                        pad_h: pad,
                        pad_w: pad,
                        pooled_h: ph,
                        pooled_w: pw,
                    });
                }
            }
        }
        out
    }

    /// Coarse values (many ties), with NaN, -inf, -FLT_MAX and -0 among them.
    fn values(n: usize, seed: usize) -> Vec<f32> {
        (0..n)
            .map(|i| match (i * 7919 + seed * 104729) % 23 {
                0 if i % 5 == 0 => f32::NAN,
                0 => f32::MIN,
                1 => f32::NEG_INFINITY,
                2 if i % 2 == 0 => -0.0,
                r => r as f32 * 0.25 - 2.0,
            })
            .collect()
    }

    /// Upstream's rule stated as a definition rather than a scan: among the window's elements
    /// (clipped to the image) greater than -FLT_MAX, the largest value, at the first position
    /// holding it in row-major order; -FLT_MAX and -1 when there is none.
    fn max_by_definition(g: &PoolGeom, x: &[f32]) -> (Vec<f32>, Vec<f32>) {
        let (mut y, mut mask) = (Vec::new(), Vec::new());
        for plane in x.chunks_exact(g.height * g.width) {
            for ph in 0..g.pooled_h {
                for pw in 0..g.pooled_w {
                    let (hs, he) = window(ph, g.stride_h, g.pad_h, g.kernel_h, g.height as i64);
                    let (ws, we) = window(pw, g.stride_w, g.pad_w, g.kernel_w, g.width as i64);
                    let candidates: Vec<usize> = (hs..he)
                        .flat_map(|h| (ws..we).map(move |w| (h * g.width as i64 + w) as usize))
                        .filter(|&i| plane[i] > -f32::MAX)
                        .collect();
                    let top = candidates.iter().map(|&i| plane[i]).reduce(f32::max);
                    match top.and_then(|top| candidates.iter().find(|&&i| plane[i] == top)) {
                        Some(&i) => {
                            y.push(plane[i]);
                            mask.push(i as f32);
                        }
                        None => {
                            y.push(-f32::MAX);
                            mask.push(-1.0);
                        }
                    }
                }
            }
        }
        (y, mask)
    }

    fn same_bits(a: &[f32], b: &[f32]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
    }

    #[test]
    fn max_pooling_gives_the_window_loops_bits() {
        for g in geoms() {
            let (n_in, n_out) = (
                g.planes * g.height * g.width,
                g.planes * g.pooled_h * g.pooled_w,
            );
            let x = values(n_in, 1);
            let dy = values(n_out, 2)
                .iter()
                .map(|v| if v.is_finite() { *v + 0.1 } else { 0.3 })
                .collect::<Vec<_>>();

            let (mut y, mut m) = (vec![0.0; n_out], vec![0.0; n_out]);
            max_forward(SERIAL, &g, &x, &mut y, &mut m);
            let (y_ref, m_ref) = max_by_definition(&g, &x);
            assert!(
                same_bits(&y, &y_ref) && same_bits(&m, &m_ref),
                "max forward {g:?}"
            );

            let (mut dx, mut dx_ref) = (vec![f32::NAN; n_in], vec![0.0; n_in]);
            assert!(max_backward(SERIAL, &g, &dy, &m, &mut dx));
            assert!(reference::max_backward(
                SERIAL,
                &g,
                &dy,
                &m_ref,
                &mut dx_ref
            ));
            assert!(same_bits(&dx, &dx_ref), "max backward {g:?}");
        }
    }

    #[test]
    fn a_mask_pointing_outside_the_plane_is_reported() {
        let g = &geoms()[0];
        let n_out = g.planes * g.pooled_h * g.pooled_w;
        let mut dx = vec![0.0; g.planes * g.height * g.width];
        for bad in [25.0, 2.5, -2.0, f32::NAN] {
            let mut mask = vec![0.0; n_out];
            mask[1] = bad;
            assert!(
                !max_backward(SERIAL, g, &vec![1.0; n_out], &mask, &mut dx),
                "{bad}"
            );
        }
    }
}
