//! The data gradient `dx = col2im(W^T dy)` with stride 1 both ways, straight from a
//! zero-padded `dy`: no column buffer and no col2im pass.
//!
//! The same bits as the GEMM and col2im. Column entry `(c, i, j)` of output `o` is one
//! multiply-add chain over the output channels (never more than the GEMM kernel's depth block,
//! 512, so one chain there too); col2im adds a pixel's entries onto zero in ascending `(i, j)`.
//! Here each pixel adds the same chains in the same order. Taps that fall outside `dy` read its
//! zero padding and add an exact `+0` (the running sum starts at `+0` and is never `-0`), so
//! they change nothing, as long as the weights are finite.

use super::{applies, balanced, with_zeroed, LANES};
use crate::backend::ConvBatch;
use std::cell::RefCell;

thread_local! {
    /// One image's `dy`, every channel zero-padded by the kernel's reach on each side.
    static DY_PADDED: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// Eight-pixel segments of the input rows: `[start in padded dy, first pixel, input row]`.
    static SEGMENTS: RefCell<Vec<[usize; 3]>> = const { RefCell::new(Vec::new()) };
}

/// Input channels per tile.
const CHANNELS: usize = 6;

/// Whether [`data_gradient_image`] can take this convolution: [`applies`] with stride 1 down
/// as well, input rows at least one vector wide, and one depth block of output channels.
pub(in crate::backend::cpu) fn data_gradient_fits(c: &ConvBatch) -> bool {
    applies(c) && c.geom.stride_h == 1 && c.geom.width >= LANES && c.group_out() <= 512
}

/// Whether it should: it fits, with no more multiply-adds than the GEMM ([`direct_work`]).
pub(in crate::backend::cpu) fn data_gradient_applies(c: &ConvBatch) -> bool {
    let g = &c.geom;
    data_gradient_fits(c) && direct_work(c) <= g.out_h() * g.out_w() * g.kernel_h * g.kernel_w
}

/// Multiply-adds per input channel and output channel here: every pixel of whole segments
/// times every tap of the kernel rows that reach an output row. Without padding, a small image
/// has many pixels that few taps reach (LeNet's conv2: twice the GEMM's work), while with
/// padding nearly every tap counts (cifar10's convolutions: 0.85 to 0.93 of it).
fn direct_work(c: &ConvBatch) -> usize {
    let g = &c.geom;
    let computed_width = g.width.div_ceil(LANES) * LANES;
    let reaching_rows: usize = (0..g.height)
        .map(|h| {
            (0..g.kernel_h)
                .filter(|&i| {
                    (h + g.pad_h)
                        .checked_sub(i * g.dilation_h)
                        .is_some_and(|oh| oh < g.out_h())
                })
                .count()
        })
        .sum();
    reaching_rows * g.kernel_w * computed_width
}

/// Floats of [`transpose_weights`]'s output.
pub(in crate::backend::cpu) fn transposed_weights_len(c: &ConvBatch) -> usize {
    c.weight_len()
}

/// `wt = W^T` per group (`kernel_dim x group_out`): each tap's weights over the output
/// channels contiguous, as the kernel walks them.
pub(in crate::backend::cpu) fn transpose_weights(c: &ConvBatch, w: &[f32], wt: &mut [f32]) {
    let (kd, go) = (c.kernel_dim(), c.group_out());
    for grp in 0..c.groups {
        let src = &w[grp * go * kd..(grp + 1) * go * kd];
        let dst = &mut wt[grp * kd * go..(grp + 1) * kd * go];
        for (m, row) in src.chunks_exact(kd).enumerate() {
            for (k, &v) in row.iter().enumerate() {
                dst[k * go + m] = v;
            }
        }
    }
}

/// How far the kernel reaches down and across: `dy` is padded by this much on each side.
fn reach(c: &ConvBatch) -> (usize, usize) {
    let g = &c.geom;
    (
        (g.kernel_h - 1) * g.dilation_h,
        (g.kernel_w - 1) * g.dilation_w,
    )
}

/// `dx = col2im(W^T dy)` for one image, every group, from `wt` ([`transpose_weights`]);
/// `data_gradient_applies(c)` holds.
pub(in crate::backend::cpu) fn data_gradient_image(
    c: &ConvBatch,
    wt: &[f32],
    dy: &[f32],
    dx: &mut [f32],
) {
    let g = &c.geom;
    let (kd, go) = (c.kernel_dim(), c.group_out());
    let (out_h, out_w) = (g.out_h(), g.out_w());
    let (reach_h, reach_w) = reach(c);
    let (rows, cols) = (out_h + 2 * reach_h, out_w + 2 * reach_w);
    let cin = g.channels / c.groups;
    let plane = g.height * g.width;
    SEGMENTS.with(|segments| {
        let mut segments = segments.borrow_mut();
        segments.clear();
        for h in 0..g.height {
            let mut w = 0;
            while w < g.width {
                let start = w.min(g.width - LANES);
                let at = (h + g.pad_h + reach_h) * cols + start + g.pad_w + reach_w;
                segments.push([at, h * g.width + start, h]);
                w += LANES;
            }
        }
        with_zeroed(&DY_PADDED, c.out_channels * rows * cols, |padded| {
            for (r, row) in dy.chunks_exact(out_w).enumerate() {
                let (m, oh) = (r / out_h, r % out_h);
                let at = (m * rows + oh + reach_h) * cols + reach_w;
                padded[at..at + out_w].copy_from_slice(row);
            }
            for grp in 0..c.groups {
                let dy = &padded[grp * go * rows * cols..(grp + 1) * go * rows * cols];
                let wt = &wt[grp * kd * go..(grp + 1) * kd * go];
                let dx = &mut dx[grp * cin * plane..(grp + 1) * cin * plane];
                let shape = Shape {
                    channels: cin,
                    outputs: go,
                    dy_plane: rows * cols,
                    dy_cols: cols,
                    dx_plane: plane,
                    out_h,
                    pad_h: g.pad_h,
                    kernel: (g.kernel_h, g.kernel_w),
                    dilation: (g.dilation_h, g.dilation_w),
                };
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `applies` checked AVX2 and FMA. Each segment start minus a tap's
                // reach plus 7 lies inside a padded `dy` plane (the padding covers the kernel's
                // reach), `wt` is `kd x go` and each segment's eight pixels lie in `dx`.
                unsafe {
                    avx2::data_gradient(dy, wt, &segments, shape, dx)
                };
            }
        })
    })
}

/// One group's sizes as the kernel needs them.
#[derive(Clone, Copy)]
struct Shape {
    channels: usize,
    outputs: usize,
    dy_plane: usize,
    dy_cols: usize,
    dx_plane: usize,
    out_h: usize,
    pad_h: usize,
    kernel: (usize, usize),
    dilation: (usize, usize),
}

impl Shape {
    /// Whether kernel row `i` reaches an output row from input row `h`.
    #[inline(always)]
    fn row_reaches(self, h: usize, i: usize) -> bool {
        (h + self.pad_h)
            .checked_sub(i * self.dilation.0)
            .is_some_and(|oh| oh < self.out_h)
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{balanced, Shape, CHANNELS};
    use std::arch::x86_64::*;

    /// Tiles of up to [`CHANNELS`] input channels by two pixel segments.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn data_gradient(
        dy: &[f32],
        wt: &[f32],
        segments: &[[usize; 3]],
        shape: Shape,
        dx: &mut [f32],
    ) {
        let (dy, wt, dx) = (dy.as_ptr(), wt.as_ptr(), dx.as_mut_ptr());
        let taps = shape.kernel.0 * shape.kernel.1;
        for channels in balanced(shape.channels, CHANNELS) {
            let (c0, channels) = (channels.start, channels.len());
            let wt = wt.add(c0 * taps * shape.outputs);
            let dx = dx.add(c0 * shape.dx_plane);
            for pair in segments.chunks(2) {
                macro_rules! tile {
                    ($r:literal, $v:literal) => {
                        tile::<$r, $v>(dy, wt, pair, shape, dx)
                    };
                }
                match (channels, pair.len()) {
                    (6, 2) => tile!(6, 2),
                    (5, 2) => tile!(5, 2),
                    (4, 2) => tile!(4, 2),
                    (3, 2) => tile!(3, 2),
                    (2, 2) => tile!(2, 2),
                    (1, 2) => tile!(1, 2),
                    (6, _) => tile!(6, 1),
                    (5, _) => tile!(5, 1),
                    (4, _) => tile!(4, 1),
                    (3, _) => tile!(3, 1),
                    (2, _) => tile!(2, 1),
                    _ => tile!(1, 1),
                }
            }
        }
    }

    /// `R` channels by `V` segments: per tap, one chain over the output channels, added onto
    /// the pixels' sums in tap order.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn tile<const R: usize, const V: usize>(
        dy: *const f32,
        wt: *const f32,
        segments: &[[usize; 3]],
        shape: Shape,
        dx: *mut f32,
    ) {
        let (kh, kw) = shape.kernel;
        let taps = kh * kw;
        let mut sum = [[_mm256_setzero_ps(); V]; R];
        for i in 0..kh {
            if !segments[..V].iter().any(|s| shape.row_reaches(s[2], i)) {
                continue; // every term of this kernel row would be an exact +0
            }
            for j in 0..kw {
                let back = i * shape.dilation.0 * shape.dy_cols + j * shape.dilation.1;
                let src: [*const f32; V] = std::array::from_fn(|v| dy.add(segments[v][0] - back));
                let w: [*const f32; R] =
                    std::array::from_fn(|r| wt.add((r * taps + i * kw + j) * shape.outputs));
                let mut acc = [[_mm256_setzero_ps(); V]; R];
                for m in 0..shape.outputs {
                    let d: [__m256; V] =
                        std::array::from_fn(|v| _mm256_loadu_ps(src[v].add(m * shape.dy_plane)));
                    for (r, acc) in acc.iter_mut().enumerate() {
                        let wr = _mm256_broadcast_ss(&*w[r].add(m));
                        for (a, &d) in acc.iter_mut().zip(&d) {
                            *a = _mm256_fmadd_ps(d, wr, *a);
                        }
                    }
                }
                for (s, a) in sum.iter_mut().zip(&acc) {
                    for (s, &a) in s.iter_mut().zip(a) {
                        *s = _mm256_add_ps(*s, a);
                    }
                }
            }
        }
        for (r, s) in sum.iter().enumerate() {
            for (v, &s) in s.iter().enumerate() {
                _mm256_storeu_ps(dx.add(r * shape.dx_plane + segments[v][1]), s);
            }
        }
    }
}
