//! The data gradient `dx = col2im(W^T dy)` with stride 1 across, without a column buffer.
//!
//! Each pixel of `dx` is the sum, in ascending tap order from `+0`, of the column entries that
//! land on it, and each entry is one multiply-add chain over the output channels: col2im after
//! the GEMM, whenever the chain (the output channels) is one block of the GEMM kernel (at most
//! 512). Two ways to get there, the same bits:
//!
//! * **Gather** (stride 1 both ways, input rows at least a vector wide): `dx` computed like a
//!   forward convolution over `dy` bordered with zeros, reading each pixel's entries tap by tap
//!   (the forward kernel with one depth block per tap: each block's chain starts at `+0`, the
//!   blocks' sums added in order). An entry from outside the outputs reads zeros and sums to
//!   `+0`, which leaves the pixel as it is (a sum from `+0` is never `-0`). Every pixel is
//!   written once, from registers.
//! * **Scatter** (otherwise): for each tap in turn, each output's entry added onto the pixel it
//!   came from, eight outputs at a time. Rows whose width is no multiple of 8 end with a segment
//!   overlapping the one before; its lanes already added are masked to an exact `+0`. Each tap
//!   reads and writes `dx` again, and each entry's chain is as short as the output channels
//!   (16 in a CIFAR ResNet's first stage): the gather form is faster there ([`gathers`]).

use super::{
    applies, balanced, output_segments, padded_size, transpose_groups, with_zeroed, ForwardJob,
    LANES,
};
use crate::backend::ConvBatch;
use std::cell::RefCell;

thread_local! {
    /// One group's `dx`, zero-padded.
    static DX_PADDED: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// The [`output_segments`] as `[first output, start in the padded dx, lanes covered]`.
    static OUTPUT_SEGMENTS: RefCell<Vec<[usize; 3]>> = const { RefCell::new(Vec::new()) };
    /// One group's `dy`, bordered with zeros (the gather form).
    static DY_BORDERED: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// The gather form's offsets (per tap, per output channel) and `dx` segments.
    static GATHER_PLAN: RefCell<(Vec<usize>, Vec<[usize; 2]>)> =
        const { RefCell::new((Vec::new(), Vec::new())) };
}

/// Input channels per tile.
const CHANNELS: usize = 6;

/// Whether [`data_gradient_image`] takes this convolution: [`applies`], and one depth block
/// of output channels.
pub(in crate::backend::cpu) fn data_gradient_applies(c: &ConvBatch) -> bool {
    applies(c) && c.group_out() <= 512
}

/// `wt = W^T` per group (`kernel_dim x group_out`, `weight_len` floats): each column row's
/// weights over the output channels contiguous, as the kernel walks them.
pub(in crate::backend::cpu) fn transpose_weights(c: &ConvBatch, w: &[f32], wt: &mut [f32]) {
    transpose_groups(c, w, wt, c.group_out());
}

/// `dx = col2im(W^T dy)` for one image, every group, from `wt` ([`transpose_weights`]);
/// `data_gradient_applies(c)` holds.
pub(in crate::backend::cpu) fn data_gradient_image(
    c: &ConvBatch,
    wt: &[f32],
    dy: &[f32],
    dx: &mut [f32],
) {
    assert!(
        data_gradient_applies(c),
        "direct data gradient called outside its shapes"
    );
    if gathers(c) {
        return gather_image(c, wt, dy, dx);
    }
    let g = &c.geom;
    let (kd, go, sp) = (c.kernel_dim(), c.group_out(), c.out_spatial());
    let (hp, wp) = padded_size(c);
    let cin = g.channels / c.groups;
    let plane = g.height * g.width;
    OUTPUT_SEGMENTS.with(|segments| {
        let mut segments = segments.borrow_mut();
        segments.clear();
        segments.extend(output_segments(c, wp).map(|(first, at, skip)| [first, at, skip]));
        let shape = Shape {
            channels: cin,
            outputs: go,
            spatial: sp,
            dx_plane: hp * wp,
            dx_cols: wp,
            kernel: (g.kernel_h, g.kernel_w),
            dilation: (g.dilation_h, g.dilation_w),
        };
        for grp in 0..c.groups {
            with_zeroed(&DX_PADDED, cin * hp * wp, |padded| {
                let dy = &dy[grp * go * sp..(grp + 1) * go * sp];
                let wt = &wt[grp * kd * go..(grp + 1) * kd * go];
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `applies` checked AVX2 and FMA. Reads: `dy` (`go x sp`, each segment
                // eight outputs of one row), `wt` (`kd x go`); each segment's eight pixels under
                // each tap lie in the padded `dx` planes (stride 1 across).
                unsafe {
                    avx2::data_gradient(dy, wt, &segments, shape, padded)
                };
                let dx = &mut dx[grp * cin * plane..(grp + 1) * cin * plane];
                for (r, row) in dx.chunks_exact_mut(g.width).enumerate() {
                    let (ch, h) = (r / g.height, r % g.height);
                    let at = (ch * hp + h + g.pad_h) * wp + g.pad_w;
                    row.copy_from_slice(&padded[at..at + g.width]);
                }
            })
        }
    })
}

/// Whether [`data_gradient_image`] takes the gather form: stride 1 both ways, input rows of
/// whole vectors (a last segment overlapping the one before would compute its pixels twice:
/// LeNet's conv2, rows of 12, runs twice as long gathered), and at most 32 output channels per
/// group. With longer chains the scatter form's passes over `dx` cost little, and it was as
/// fast or faster (`cargo bench --bench ops -- conv`: cifar10's conv3, 64 outputs, 20 % slower
/// gathered; a CIFAR ResNet's first stage, 16 outputs, 30 % faster). Either gives the same bits.
fn gathers(c: &ConvBatch) -> bool {
    c.geom.stride_h == 1 && c.geom.width.is_multiple_of(LANES) && c.group_out() <= 32
}

/// The gather form (see the module docs) for one image, every group.
fn gather_image(c: &ConvBatch, wt: &[f32], dy: &[f32], dx: &mut [f32]) {
    let g = &c.geom;
    let (kd, go, sp) = (c.kernel_dim(), c.group_out(), c.out_spatial());
    let (out_h, out_w) = (g.out_h(), g.out_w());
    // Outputs sit inside a border as wide as the kernel's reach, so every tap of every pixel
    // reads inside the bordered planes.
    let (border_h, border_w) = (
        (g.kernel_h - 1) * g.dilation_h,
        (g.kernel_w - 1) * g.dilation_w,
    );
    let (hb, wb) = (out_h + 2 * border_h, out_w + 2 * border_w);
    let plane = g.height * g.width;
    let cin = g.channels / c.groups;
    GATHER_PLAN.with(|plan| {
        let mut plan = plan.borrow_mut();
        let (offsets, segments) = &mut *plan;
        // Pixel (h, w) takes tap (i, j) from output (h + pad_h - i dil_h, w + pad_w - j dil_w),
        // at (h + pad_h, w + pad_w) + (border - (i dil_h, j dil_w)) in the bordered planes.
        offsets.clear();
        for i in 0..g.kernel_h {
            for j in 0..g.kernel_w {
                let tap =
                    (g.kernel_h - 1 - i) * g.dilation_h * wb + (g.kernel_w - 1 - j) * g.dilation_w;
                offsets.extend((0..go).map(|m| m * hb * wb + tap));
            }
        }
        segments.clear();
        for h in 0..g.height {
            for w in (0..g.width).step_by(LANES) {
                let w = w.min(g.width - LANES);
                segments.push([(h + g.pad_h) * wb + w + g.pad_w, h * g.width + w]);
            }
        }
        for grp in 0..c.groups {
            with_zeroed(&DY_BORDERED, go * hb * wb, |bordered| {
                let dy = &dy[grp * go * sp..(grp + 1) * go * sp];
                for (r, row) in dy.chunks_exact(out_w).enumerate() {
                    let (m, oh) = (r / out_h, r % out_h);
                    let at = (m * hb + oh + border_h) * wb + border_w;
                    bordered[at..at + out_w].copy_from_slice(row);
                }
                let job = ForwardJob {
                    image: bordered,
                    offsets,
                    segments,
                    kc: go,
                    sp: plane,
                };
                let wt = &wt[grp * kd * go..(grp + 1) * kd * go];
                let dx = &mut dx[grp * cin * plane..(grp + 1) * cin * plane];
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `applies` checked AVX2 and FMA. Each segment (eight pixels of one
                // row, `width >= 8`) plus each offset lies inside the bordered planes: rows up
                // to `height - 1 + pad_h + border_h < hb`, columns up to `width - 1 + pad_w +
                // border_w < wb` (stride 1: `out = in + 2 pad - border`). `wt` holds `cin`
                // rows of `kd` (taps x output channels, the order of `offsets`), `dx` `cin`
                // planes.
                unsafe {
                    super::avx2::forward(job, wt, dx)
                };
            })
        }
    })
}

/// One group's sizes as the kernel needs them.
#[derive(Clone, Copy)]
struct Shape {
    channels: usize,
    outputs: usize,
    spatial: usize,
    dx_plane: usize,
    dx_cols: usize,
    kernel: (usize, usize),
    dilation: (usize, usize),
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{balanced, Shape, CHANNELS};
    use std::arch::x86_64::*;

    /// Lane masks: eight floats from `KEEP_FROM[8 - skip..]` keep lanes `skip..8`.
    static KEEP_FROM: [i32; 16] = [0, 0, 0, 0, 0, 0, 0, 0, -1, -1, -1, -1, -1, -1, -1, -1];

    /// Per tap in order, tiles of up to [`CHANNELS`] input channels by two output segments.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn data_gradient(
        dy: &[f32],
        wt: &[f32],
        segments: &[[usize; 3]],
        shape: Shape,
        dx: &mut [f32],
    ) {
        let (dy, wt, dx) = (dy.as_ptr(), wt.as_ptr(), dx.as_mut_ptr());
        let (kh, kw) = shape.kernel;
        let taps = kh * kw;
        for channels in balanced(shape.channels, CHANNELS) {
            let (c0, channels) = (channels.start, channels.len());
            let dx = dx.add(c0 * shape.dx_plane);
            for tap in 0..taps {
                let (i, j) = (tap / kw, tap % kw);
                let shift = i * shape.dilation.0 * shape.dx_cols + j * shape.dilation.1;
                let wt = wt.add((c0 * taps + tap) * shape.outputs);
                for pair in segments.chunks(2) {
                    macro_rules! tile {
                        ($r:literal, $v:literal) => {
                            scatter_tile::<$r, $v>(dy, wt, taps, pair, shift, shape, dx)
                        };
                    }
                    by_tile_size!(channels, pair.len(), tile)
                }
            }
        }
    }

    /// `R` channels by `V` output segments for one tap: each column entry's chain over the
    /// output channels, added onto its pixel (lanes another segment covers add nothing).
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn scatter_tile<const R: usize, const V: usize>(
        dy: *const f32,
        wt: *const f32,
        taps: usize,
        segments: &[[usize; 3]],
        shift: usize,
        shape: Shape,
        dx: *mut f32,
    ) {
        let src: [*const f32; V] = std::array::from_fn(|v| dy.add(segments[v][0]));
        let w: [*const f32; R] = std::array::from_fn(|r| wt.add(r * taps * shape.outputs));
        let mut acc = [[_mm256_setzero_ps(); V]; R];
        for m in 0..shape.outputs {
            let d: [__m256; V] =
                std::array::from_fn(|v| _mm256_loadu_ps(src[v].add(m * shape.spatial)));
            for (r, acc) in acc.iter_mut().enumerate() {
                let wr = _mm256_broadcast_ss(&*w[r].add(m));
                for (a, &d) in acc.iter_mut().zip(&d) {
                    *a = _mm256_fmadd_ps(d, wr, *a);
                }
            }
        }
        for v in 0..V {
            let keep = _mm256_loadu_ps(KEEP_FROM.as_ptr().add(8 - segments[v][2]) as *const f32);
            for (r, acc) in acc.iter().enumerate() {
                let at = dx.add(r * shape.dx_plane + segments[v][1] + shift);
                let term = _mm256_and_ps(acc[v], keep);
                _mm256_storeu_ps(at, _mm256_add_ps(_mm256_loadu_ps(at), term));
            }
        }
    }
}
