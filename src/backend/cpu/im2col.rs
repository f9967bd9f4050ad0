//! im2col and col2im for one 2-D image (upstream's `im2col_cpu`/`col2im_cpu`,
//! src/caffe/util/im2col.cpp), parallel over input channels: a channel's column rows and its
//! image plane are touched by that channel's task only.
//!
//! For each kernel offset and output row, the output columns whose input column falls inside
//! the image form one contiguous range, computed up front; the rest are padding. With stride 1
//! that range is a plain copy.

use super::Par;
use crate::backend::ConvGeom;

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
