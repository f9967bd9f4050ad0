//! im2col and col2im for one 2-D image (upstream's `im2col_cpu`/`col2im_cpu`,
//! src/caffe/util/im2col.cpp), parallel over input channels: a channel's column rows and its
//! image plane are touched by that channel's task only.
//!
//! With a horizontal stride of 1 (every convolution in the zoo's small nets) each channel is
//! first copied into a zero-padded plane, so every column row is one unconditional copy of a
//! padded row segment (col2im: one add), with no bounds or padding logic per row: the rows are
//! 8 to 32 floats long, so that logic, not the copying, was the cost.
//!
//! Otherwise, for each kernel offset and output row, the output columns whose input column
//! falls inside the image form one contiguous range, computed up front; the rest are padding.

use super::simd::{add_short, copy_short, with_simd};
use super::{with_zeroed, Par};
use crate::backend::ConvGeom;
use std::cell::RefCell;
use std::ops::Range;

thread_local! {
    /// One zero-padded channel plane per thread for the stride-1 paths, reused across calls.
    static PADDED: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// A whole zero-padded image per thread for [`col2im_by_rows`].
    static PADDED_IMAGE: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Calls `f(padded plane, padded width)` with this thread's plane for `g`, zeroed.
fn with_padded_plane<R>(g: &ConvGeom, f: impl FnOnce(&mut [f32], usize) -> R) -> R {
    let (hp, wp) = (g.height + 2 * g.pad_h, g.width + 2 * g.pad_w);
    with_zeroed(&PADDED, hp * wp, |plane| f(plane, wp))
}

/// Copies the plane `src` into the interior of the padded plane `padded` (row length `wp`).
fn pad_into(g: &ConvGeom, src: &[f32], padded: &mut [f32], wp: usize) {
    for (h, row) in src.chunks_exact(g.width.max(1)).enumerate() {
        let at = (h + g.pad_h) * wp + g.pad_w;
        copy_short(&mut padded[at..at + g.width], row);
    }
}

/// Copies the interior of the padded plane `padded` (row length `wp`) into the plane `dst`.
fn unpad_into(g: &ConvGeom, padded: &[f32], wp: usize, dst: &mut [f32]) {
    for (h, row) in dst.chunks_exact_mut(g.width.max(1)).enumerate() {
        let at = (h + g.pad_h) * wp + g.pad_w;
        copy_short(row, &padded[at..at + g.width]);
    }
}

/// Adds one channel's columns `cc` of the output rows `rows` onto the pixels they came from in
/// its padded plane (stride_w 1), in (kernel row, kernel column, output row) order.
fn add_columns(g: &ConvGeom, rows: Range<usize>, cc: &[f32], padded: &mut [f32], wp: usize) {
    let out_w = g.out_w();
    for_each_unit_stride_row(g, wp, rows, |row, at| {
        add_short(
            &mut padded[at..at + out_w],
            &cc[row * out_w..(row + 1) * out_w],
        );
    });
}

/// Calls `f(block_row, padded_start)` for every column row of one channel (stride_w 1) for the
/// output rows `rows`: the row's index within the channel's block and where its source starts
/// in the padded plane.
fn for_each_unit_stride_row(
    g: &ConvGeom,
    wp: usize,
    rows: Range<usize>,
    mut f: impl FnMut(usize, usize),
) {
    let n = rows.len();
    for i in 0..g.kernel_h {
        for j in 0..g.kernel_w {
            for (k, oh) in rows.clone().enumerate() {
                let r = oh * g.stride_h + i * g.dilation_h;
                f((i * g.kernel_w + j) * n + k, r * wp + j * g.dilation_w);
            }
        }
    }
}

/// The output columns `ow` whose input column `ow * stride - pad + offset` lies in `0..width`.
fn valid_cols(
    out_w: usize,
    width: usize,
    pad: usize,
    stride: usize,
    offset: usize,
) -> (usize, usize) {
    // ow * stride + offset >= pad  and  ow * stride + offset < width + pad
    let lo = if offset >= pad {
        0
    } else {
        (pad - offset).div_ceil(stride)
    };
    let hi = if width + pad <= offset {
        0
    } else {
        (width + pad - offset).div_ceil(stride)
    };
    let hi = hi.min(out_w);
    (lo.min(hi), hi)
}

/// Calls `f(out_row, ih, lo, hi, iw0)` for every kernel offset `(i, j)` and output row: `out_row`
/// is the index of the column row (`(i kw + j) out_h + oh`), `ih` the input row or `None` in the
/// padding, `lo..hi` the valid output columns and `iw0` the input column of `lo`.
fn for_each_row(g: &ConvGeom, mut f: impl FnMut(usize, Option<usize>, usize, usize, usize)) {
    let (out_h, out_w) = (g.out_h(), g.out_w());
    for i in 0..g.kernel_h {
        for j in 0..g.kernel_w {
            let off_w = j * g.dilation_w;
            let (lo, hi) = valid_cols(out_w, g.width, g.pad_w, g.stride_w, off_w);
            let iw0 = (lo * g.stride_w + off_w).saturating_sub(g.pad_w);
            for oh in 0..out_h {
                let pos = oh * g.stride_h + i * g.dilation_h;
                let ih = pos.checked_sub(g.pad_h).filter(|&ih| ih < g.height);
                f((i * g.kernel_w + j) * out_h + oh, ih, lo, hi, iw0);
            }
        }
    }
}

/// Unrolls `im` (`channels x height x width`) into `col`.
pub(super) fn im2col(par: Par<'_>, g: &ConvGeom, im: &[f32], col: &mut [f32]) {
    if g.stride_w == 1 {
        im2col_unit_stride(par, g, im, col);
    } else {
        im2col_general(par, g, im, col);
    }
}

fn im2col_unit_stride(par: Par<'_>, g: &ConvGeom, im: &[f32], col: &mut [f32]) {
    let out_w = g.out_w();
    let plane = g.height * g.width;
    let per_channel = g.kernel_h * g.kernel_w * g.out_h() * out_w;
    par.rows_mut(col, per_channel, per_channel, |c, cc| {
        with_simd(
            #[inline(always)]
            || {
                with_padded_plane(g, |padded, wp| {
                    pad_into(g, &im[c * plane..(c + 1) * plane], padded, wp);
                    for_each_unit_stride_row(g, wp, 0..g.out_h(), |row, at| {
                        copy_short(
                            &mut cc[row * out_w..(row + 1) * out_w],
                            &padded[at..at + out_w],
                        );
                    });
                })
            },
        )
    });
}

fn im2col_general(par: Par<'_>, g: &ConvGeom, im: &[f32], col: &mut [f32]) {
    let out_w = g.out_w();
    let plane = g.height * g.width;
    let per_channel = g.kernel_h * g.kernel_w * g.out_h() * out_w;
    par.rows_mut(col, per_channel, per_channel, |c, cc| {
        let src = &im[c * plane..(c + 1) * plane];
        for_each_row(g, |row, ih, lo, hi, iw0| {
            let out = &mut cc[row * out_w..(row + 1) * out_w];
            let Some(ih) = ih else {
                out.fill(0.0);
                return;
            };
            out[..lo].fill(0.0);
            out[hi..].fill(0.0);
            if lo == hi {
                return;
            }
            let src_row = &src[ih * g.width..(ih + 1) * g.width];
            if g.stride_w == 1 {
                out[lo..hi].copy_from_slice(&src_row[iw0..iw0 + (hi - lo)]);
            } else {
                for (k, o) in out[lo..hi].iter_mut().enumerate() {
                    *o = src_row[iw0 + k * g.stride_w];
                }
            }
        });
    });
}

/// Overwrites `im` with the sum of the column entries onto the pixels they came from.
pub(super) fn col2im(par: Par<'_>, g: &ConvGeom, col: &[f32], im: &mut [f32]) {
    if g.stride_w == 1 {
        col2im_unit_stride(par, g, col, im);
    } else {
        col2im_general(par, g, col, im);
    }
}

/// Each pixel receives its terms in the same (kernel row, kernel column, output row) order as
/// in [`col2im_general`], so both give the same bits.
fn col2im_unit_stride(par: Par<'_>, g: &ConvGeom, col: &[f32], im: &mut [f32]) {
    let plane = g.height * g.width;
    let per_channel = g.kernel_h * g.kernel_w * g.out_h() * g.out_w();
    par.rows_mut(im, plane, per_channel, |c, dst| {
        let cc = &col[c * per_channel..(c + 1) * per_channel];
        with_simd(
            #[inline(always)]
            || {
                with_padded_plane(g, |padded, wp| {
                    add_columns(g, 0..g.out_h(), cc, padded, wp);
                    unpad_into(g, padded, wp, dst);
                })
            },
        )
    });
}

/// Stride-1 col2im of one image whose columns come chunk by chunk of output rows, on the
/// calling thread: `fill(rows, col)` writes the columns of the output rows `rows` into `col`
/// (as [`im2col`] lays out the columns of those rows) and they are added into a zero-padded copy of the image.
///
/// The chunks are taken last first. A pixel's terms from a later chunk come from smaller kernel
/// rows (output row and kernel row add up to the pixel's row), so each pixel still receives its
/// terms in (kernel row, kernel column) order, as [`col2im`] adds them: the same bits, with only
/// a chunk's columns (cache-sized) alive at a time instead of the whole image's.
pub(super) fn col2im_by_rows(
    g: &ConvGeom,
    chunks: impl DoubleEndedIterator<Item = Range<usize>>,
    col: &mut [f32],
    im: &mut [f32],
    mut fill: impl FnMut(Range<usize>, &mut [f32]),
) {
    assert_eq!(g.stride_w, 1, "col2im_by_rows: horizontal stride 1 only");
    let (hp, wp, out_w) = (g.height + 2 * g.pad_h, g.width + 2 * g.pad_w, g.out_w());
    let (plane, padded_plane) = ((g.height * g.width).max(1), (hp * wp).max(1));
    let taps = g.kernel_h * g.kernel_w;
    with_zeroed(&PADDED_IMAGE, g.channels * hp * wp, |padded| {
        for rows in chunks.rev() {
            let n = rows.len() * out_w;
            let chunk = &mut col[..g.channels * taps * n];
            fill(rows.clone(), chunk);
            with_simd(
                #[inline(always)]
                || {
                    for (p, cc) in padded
                        .chunks_exact_mut(padded_plane)
                        .zip(chunk.chunks_exact(taps * n).take(g.channels))
                    {
                        add_columns(g, rows.clone(), cc, p, wp);
                    }
                },
            );
        }
        with_simd(
            #[inline(always)]
            || {
                for (dst, p) in im
                    .chunks_exact_mut(plane)
                    .zip(padded.chunks_exact(padded_plane))
                {
                    unpad_into(g, p, wp, dst);
                }
            },
        );
    });
}

fn col2im_general(par: Par<'_>, g: &ConvGeom, col: &[f32], im: &mut [f32]) {
    let out_w = g.out_w();
    let plane = g.height * g.width;
    let per_channel = g.kernel_h * g.kernel_w * g.out_h() * out_w;
    par.rows_mut(im, plane, per_channel, |c, dst| {
        dst.fill(0.0);
        let cc = &col[c * per_channel..(c + 1) * per_channel];
        for_each_row(g, |row, ih, lo, hi, iw0| {
            let Some(ih) = ih.filter(|_| lo < hi) else {
                return;
            };
            let src = &cc[row * out_w + lo..row * out_w + hi];
            let dst_row = &mut dst[ih * g.width..(ih + 1) * g.width];
            if g.stride_w == 1 {
                dst_row[iw0..iw0 + (hi - lo)]
                    .iter_mut()
                    .zip(src)
                    .for_each(|(d, &s)| *d += s);
            } else {
                for (k, &s) in src.iter().enumerate() {
                    dst_row[iw0 + k * g.stride_w] += s;
                }
            }
        });
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geom(
        c: usize,
        h: usize,
        w: usize,
        k: (usize, usize),
        pad: (usize, usize),
        sh: usize,
        dil: (usize, usize),
    ) -> ConvGeom {
        ConvGeom {
            channels: c,
            height: h,
            width: w,
            kernel_h: k.0,
            kernel_w: k.1,
            pad_h: pad.0,
            pad_w: pad.1,
            stride_h: sh,
            stride_w: 1,
            dilation_h: dil.0,
            dilation_w: dil.1,
        }
    }

    /// Values with distinct bits everywhere, so a misplaced or reordered term shows.
    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| ((i as u32).wrapping_mul(2654435761) ^ seed) as f32 / u32::MAX as f32 - 0.5)
            .collect()
    }

    #[test]
    fn unit_stride_paths_give_the_general_paths_bits() {
        let serial = Par {
            pool: None,
            threads: 1,
        };
        for g in [
            geom(3, 9, 11, (5, 5), (2, 2), 1, (1, 1)),
            geom(2, 8, 8, (3, 2), (0, 1), 2, (1, 1)),
            geom(4, 12, 7, (3, 3), (2, 2), 1, (2, 2)),
            geom(1, 28, 28, (5, 5), (0, 0), 1, (1, 1)),
            geom(2, 0, 3, (1, 3), (1, 0), 1, (1, 1)),
        ] {
            let im = values(g.im_len(), 7);
            let (mut fast, mut general) = (vec![f32::NAN; g.col_len()], vec![0.0; g.col_len()]);
            im2col_unit_stride(serial, &g, &im, &mut fast);
            im2col_general(serial, &g, &im, &mut general);
            assert!(
                fast.iter()
                    .zip(&general)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{g:?}"
            );
            let (oh, ow) = (g.out_h(), g.out_w());
            let col = values(g.col_len(), 9);
            // Chunk by chunk of output rows, any chunking: the whole col2im's bits.
            let mut whole = vec![0.0; g.im_len()];
            col2im_general(serial, &g, &col, &mut whole);
            for rows_per in [1, 2, 3, oh.max(1)] {
                let chunks: Vec<Range<usize>> = (0..oh)
                    .step_by(rows_per)
                    .map(|r| r..(r + rows_per).min(oh))
                    .collect();
                let mut chunk_col = vec![f32::NAN; g.col_len()];
                let mut by_rows = vec![f32::NAN; g.im_len()];
                col2im_by_rows(
                    &g,
                    chunks.into_iter(),
                    &mut chunk_col,
                    &mut by_rows,
                    |rows, out| {
                        let n = rows.len() * ow;
                        for (r, dst) in out.chunks_exact_mut(n.max(1)).enumerate() {
                            dst.copy_from_slice(&col[r * oh * ow + rows.start * ow..][..n]);
                        }
                    },
                );
                assert!(
                    by_rows
                        .iter()
                        .zip(&whole)
                        .all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{g:?} by {rows_per} rows"
                );
            }
            let (mut fast, mut general) = (vec![f32::NAN; g.im_len()], vec![0.0; g.im_len()]);
            col2im_unit_stride(serial, &g, &col, &mut fast);
            col2im_general(serial, &g, &col, &mut general);
            assert!(
                fast.iter()
                    .zip(&general)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{g:?}"
            );
        }
    }
}
