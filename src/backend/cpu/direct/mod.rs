//! Convolution with a horizontal stride of 1 without a column buffer: the forward product and
//! the weight gradient straight from the (zero-padded) image ("implicit GEMM"), the data
//! gradient by scattering column entries onto their pixels ([`data_gradient`]).
//!
//! With stride 1, column row `k = (c, i, j)` of the im2col matrix restricted to eight outputs
//! of one output row is eight consecutive floats of the padded image, starting at a fixed
//! offset `off[k]` from where that output segment starts. So the kernels read the image
//! through the offset table instead of writing the columns out (im2col) and copying them again
//! into the GEMM's packed panels: on cifar10's convolutions those two passes were a quarter of
//! the convolution's time.
//!
//! The same bits as im2col + the `gemm` crate wherever that path hands the product to the
//! crate's general kernel ([`gives_gemm_bits`]). Every output is the crate's sum, done the
//! crate's way: one fused multiply-add chain per output over the depth in ascending order, cut
//! into the crate's depth blocks (the first block's sum stored or added onto the output, each
//! later block's sum added on in turn). [`depth_block`] asks the crate's own cache model for
//! the block, so the kernels follow it on any machine; the tests compare every bit with the
//! GEMM path.
//!
//! With at most [`SKINNY`] output channels per group (DenseNet's growth-rate layers have 12)
//! the GEMM path goes to the repository's skinny loops instead, which stream the columns once
//! per output channel and sum in another order, several times slower. Such a convolution runs
//! here whatever the thread count and the batch size, so it has one order: the chains above.
//! Its tests compare with the convolution's definition and across thread counts.
//!
//! The crate is pinned to one version in Cargo.toml, and its AVX-512 kernels (feature `x86-v4`,
//! with other block sizes) stay off: a change there would show in the bit-for-bit test.

use super::gemm::SKINNY;
use super::simd::has_avx2_fma;
use super::with_zeroed;
use crate::backend::ConvBatch;
use std::cell::RefCell;

/// Calls `$tile!(R, V)` with the compile-time tile size for `rows` (1 to 6) by `vectors` (1 or
/// 2, anything else taken as 1).
macro_rules! by_tile_size {
    ($rows:expr, $vectors:expr, $tile:ident) => {
        match ($rows, $vectors) {
            (6, 2) => $tile!(6, 2),
            (5, 2) => $tile!(5, 2),
            (4, 2) => $tile!(4, 2),
            (3, 2) => $tile!(3, 2),
            (2, 2) => $tile!(2, 2),
            (1, 2) => $tile!(1, 2),
            (6, _) => $tile!(6, 1),
            (5, _) => $tile!(5, 1),
            (4, _) => $tile!(4, 1),
            (3, _) => $tile!(3, 1),
            (2, _) => $tile!(2, 1),
            _ => $tile!(1, 1),
        }
    };
}

mod data_gradient;
mod sparse;
pub(super) use data_gradient::{data_gradient_applies, data_gradient_image, transpose_weights};
pub(super) use sparse::{
    weight_gradient_image as sparse_weight_gradient_image, worth_it as sparse_worth_it,
};

thread_local! {
    /// The zero-padded image, for convolutions with padding.
    static PADDED: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// `dy` of one group transposed to `spatial x channels` (channels padded to a multiple of 8).
    static DY_T: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// The offset table and the output segments.
    static PLAN: RefCell<Plan> = const { RefCell::new(Plan::new()) };
}

/// The `gemm` crate's microkernel: 16 rows (two 8-float vectors) by 6 columns.
const MR: usize = 16;
const NR: usize = 6;
/// Output channels per vector: the weight gradient keeps them in lanes.
const LANES: usize = 8;

/// Whether the direct kernels take this convolution: x86-64 with AVX2 and FMA, stride 1
/// across, output rows at least one vector wide, and more than 16 column rows (`kernel_dim`):
/// with fewer, the weight gradient is a product at most 16 wide, which the crate sums with
/// other kernels, and the convolution is too small to gain.
pub(super) fn applies(c: &ConvBatch) -> bool {
    let g = &c.geom;
    has_avx2_fma() && !c.is_1x1() && g.stride_w == 1 && g.out_w() >= LANES && c.kernel_dim() > 16
}

/// Whether the direct kernels give the GEMM path's bits for a convolution they take: more than
/// [`SKINNY`] output channels per group. Fewer go to the skinny loops on that path, so such a
/// convolution must take the direct kernels every time (see the module docs).
pub(super) fn gives_gemm_bits(c: &ConvBatch) -> bool {
    c.group_out() > SKINNY
}

/// The depth block of the `gemm` crate's kernel for its `m x n x k` product (`m` the side its
/// vectors run along): 512 for small products, else what its cache model gives.
fn depth_block(m: usize, n: usize, k: usize) -> usize {
    let kc = if m <= 64 && n <= 64 {
        k.min(512)
    } else {
        gemm_common::cache::kernel_params(m, n, k, MR, NR, size_of::<f32>()).kc
    };
    kc.max(1)
}

/// `0..n` cut into the fewest ranges of at most `max`, their sizes differing by one at most:
/// a last tile of 2 rows after tiles of 6 would spend its loads on a third of the work.
fn balanced(n: usize, max: usize) -> impl Iterator<Item = std::ops::Range<usize>> {
    let parts = n.div_ceil(max);
    (0..parts).map(move |t| t * n / parts..(t + 1) * n / parts)
}

/// Where the padded image and the outputs are, for one convolution.
struct Plan {
    /// `off[k]`: where column row `k` of one group starts in the padded image, relative to
    /// the output segment's own start.
    offsets: Vec<usize>,
    /// The [`output_segments`] as `[start in the padded image, first output]` (an overlapping
    /// segment's outputs are computed twice, the same way).
    segments: Vec<[usize; 2]>,
    /// Where each output starts in the padded image.
    positions: Vec<usize>,
}

impl Plan {
    const fn new() -> Self {
        Plan {
            offsets: Vec::new(),
            segments: Vec::new(),
            positions: Vec::new(),
        }
    }

    fn fill(&mut self, c: &ConvBatch) {
        let g = &c.geom;
        let (hp, wp) = padded_size(c);
        let cin = g.channels / c.groups;
        self.offsets.clear();
        for ch in 0..cin {
            for i in 0..g.kernel_h {
                for j in 0..g.kernel_w {
                    self.offsets
                        .push((ch * hp + i * g.dilation_h) * wp + j * g.dilation_w);
                }
            }
        }
        self.positions.clear();
        let out_w = g.out_w();
        for oh in 0..g.out_h() {
            let row = oh * g.stride_h * wp;
            self.positions.extend(row..row + out_w);
        }
        self.segments.clear();
        self.segments
            .extend(output_segments(c, wp).map(|(first, start, _)| [start, first]));
    }
}

fn padded_size(c: &ConvBatch) -> (usize, usize) {
    let g = &c.geom;
    (g.height + 2 * g.pad_h, g.width + 2 * g.pad_w)
}

/// Calls `f(padded image, plan)`: the image itself when there is no padding.
fn with_image<R>(c: &ConvBatch, x: &[f32], f: impl FnOnce(&[f32], &Plan) -> R) -> R {
    PLAN.with(|plan| {
        let mut plan = plan.borrow_mut();
        plan.fill(c);
        let g = &c.geom;
        if g.pad_h == 0 && g.pad_w == 0 {
            return f(x, &plan);
        }
        let (hp, wp) = padded_size(c);
        with_zeroed(&PADDED, g.channels * hp * wp, |padded| {
            let src_rows = x.chunks_exact(g.width);
            for (r, row) in src_rows.enumerate() {
                let (ch, h) = (r / g.height, r % g.height);
                let at = (ch * hp + h + g.pad_h) * wp + g.pad_w;
                padded[at..at + g.width].copy_from_slice(row);
            }
            f(padded, &plan)
        })
    })
}

/// `y = W col(x)` for one image, every group (no bias); `applies(c)` holds.
pub(super) fn forward_image(c: &ConvBatch, x: &[f32], w: &[f32], y: &mut [f32]) {
    // The kernels' reads and writes stay in bounds (and use AVX2) only then.
    assert!(applies(c), "direct convolution called outside its shapes");
    let (kd, sp, go) = (c.kernel_dim(), c.out_spatial(), c.group_out());
    // The crate's product runs its vectors along the outputs (`m` = spatial), as here.
    let kc = depth_block(sp, go, kd);
    let (hp, wp) = padded_size(c);
    let group_image = c.geom.channels / c.groups * hp * wp;
    with_image(c, x, |image, plan| {
        for grp in 0..c.groups {
            let image = &image[grp * group_image..(grp + 1) * group_image];
            let w = &w[grp * go * kd..(grp + 1) * go * kd];
            let y = &mut y[grp * go * sp..(grp + 1) * go * sp];
            let job = ForwardJob {
                image,
                offsets: &plan.offsets,
                segments: &plan.segments,
                kc,
                sp,
            };
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `applies` checked AVX2 and FMA. Every read lies in `image` (each offset
            // plus each segment start plus 7 is inside the padded image: `Plan::fill`), in `w`
            // (`go x kd`) and every write in `y` (`go x sp`).
            unsafe {
                avx2::forward(job, w, y)
            };
        }
    })
}

/// One group's forward product `y = W col(image)` as the kernel reads it, all but the weights
/// and the outputs: the padded image read through the plan's `offsets` (one per column row,
/// `kd` of them) at its output `segments`, the depth block `kc`, and the outputs per channel
/// `sp` (the row length of `y`).
#[derive(Clone, Copy)]
struct ForwardJob<'a> {
    image: &'a [f32],
    offsets: &'a [usize],
    segments: &'a [[usize; 2]],
    kc: usize,
    sp: usize,
}

/// One group's weight-gradient product `dw_t (+)= dy col(image)^T` as the kernel reads it, all
/// but `dy_t` and `dw_t`: the padded image read through the plan's `offsets` (one per column
/// row) at each output's position (`positions`), the depth block `kc` (in outputs), the
/// channels `gop` of a row of `dy_t` and of `dw_t`, and whether to add onto `dw_t` (the GEMM's
/// `beta = 1`).
#[derive(Clone, Copy)]
struct WeightGradientJob<'a> {
    image: &'a [f32],
    offsets: &'a [usize],
    positions: &'a [usize],
    kc: usize,
    gop: usize,
    accumulate: bool,
}

/// Channels of the transposed weight gradient: the group's output channels rounded up to
/// whole vectors.
fn padded_out(c: &ConvBatch) -> usize {
    c.group_out().div_ceil(LANES) * LANES
}

/// Floats of the transposed weight gradient: per group, `kernel_dim x padded_out`.
pub(super) fn transposed_len(c: &ConvBatch) -> usize {
    c.groups * c.kernel_dim() * padded_out(c)
}

/// Copies the weight gradient `dw` (per group `out x kernel_dim`) into `dw_t` (per group
/// `kernel_dim x padded_out`), the layout [`weight_gradient_image`] accumulates into.
pub(super) fn transpose_in(c: &ConvBatch, dw: &[f32], dw_t: &mut [f32]) {
    transpose_groups(c, dw, dw_t, padded_out(c));
}

/// The inverse of [`transpose_in`]: `dw = dw_t` back in the weights' layout.
pub(super) fn transpose_out(c: &ConvBatch, dw_t: &[f32], dw: &mut [f32]) {
    let (kd, go, gop) = (c.kernel_dim(), c.group_out(), padded_out(c));
    for grp in 0..c.groups {
        let src = &dw_t[grp * kd * gop..(grp + 1) * kd * gop];
        let dst = &mut dw[grp * go * kd..(grp + 1) * go * kd];
        for (m, row) in dst.chunks_exact_mut(kd).enumerate() {
            for (k, v) in row.iter_mut().enumerate() {
                *v = src[k * gop + m];
            }
        }
    }
}

/// Per group, the `group_out x kernel_dim` matrix of `src` transposed into the first
/// `group_out` columns of a `kernel_dim x cols` matrix of `dst`.
fn transpose_groups(c: &ConvBatch, src: &[f32], dst: &mut [f32], cols: usize) {
    let (kd, go) = (c.kernel_dim(), c.group_out());
    for grp in 0..c.groups {
        let src = &src[grp * go * kd..(grp + 1) * go * kd];
        let dst = &mut dst[grp * kd * cols..(grp + 1) * kd * cols];
        for (m, row) in src.chunks_exact(kd).enumerate() {
            for (k, &v) in row.iter().enumerate() {
                dst[k * cols + m] = v;
            }
        }
    }
}

/// Eight-output segments of the output rows, as `(first output, start in a padded plane of row
/// length wp, leading lanes the segment before already covers)`. A row whose width is no
/// multiple of 8 ends with a segment overlapping the one before.
fn output_segments(c: &ConvBatch, wp: usize) -> impl Iterator<Item = (usize, usize, usize)> {
    let g = c.geom;
    let out_w = g.out_w();
    (0..g.out_h()).flat_map(move |oh| {
        (0..out_w).step_by(LANES).map(move |ow| {
            let start = ow.min(out_w - LANES);
            (oh * out_w + start, oh * g.stride_h * wp + start, ow - start)
        })
    })
}

/// `dw_t += (dy col(x)^T)^T` for one image, every group, in the transposed layout of
/// [`transpose_in`]; with `accumulate` false `dw_t` is overwritten instead (the GEMM's
/// `beta = 0`). `applies(c)` holds.
pub(super) fn weight_gradient_image(
    c: &ConvBatch,
    x: &[f32],
    dy: &[f32],
    dw_t: &mut [f32],
    accumulate: bool,
) {
    assert!(applies(c), "direct convolution called outside its shapes");
    let (kd, sp, go, gop) = (
        c.kernel_dim(),
        c.out_spatial(),
        c.group_out(),
        padded_out(c),
    );
    // The crate's product runs its vectors along the column rows (`m` = kernel_dim) and sums
    // over the outputs.
    let kc = depth_block(kd, go, sp);
    let (hp, wp) = padded_size(c);
    let group_image = c.geom.channels / c.groups * hp * wp;
    with_image(c, x, |image, plan| {
        with_zeroed(&DY_T, sp * gop, |dy_t| {
            for grp in 0..c.groups {
                let dy = &dy[grp * go * sp..(grp + 1) * go * sp];
                for (m, row) in dy.chunks_exact(sp).enumerate() {
                    for (n, &v) in row.iter().enumerate() {
                        dy_t[n * gop + m] = v;
                    }
                }
                let image = &image[grp * group_image..(grp + 1) * group_image];
                let dw_t = &mut dw_t[grp * kd * gop..(grp + 1) * kd * gop];
                let job = WeightGradientJob {
                    image,
                    offsets: &plan.offsets,
                    positions: &plan.positions,
                    kc,
                    gop,
                    accumulate,
                };
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `applies` checked AVX2 and FMA. Reads: `image` at each offset plus
                // each output's position (inside the padded image), `dy_t` (`sp x gop`);
                // writes: `dw_t` (`kd x gop`).
                unsafe {
                    avx2::weight_gradient(job, dy_t, dw_t)
                };
            }
        })
    })
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{balanced, ForwardJob, WeightGradientJob, LANES, NR};
    use std::arch::x86_64::*;

    /// A depth block's sums into the running totals: stored when `first` (the GEMM's first
    /// block without `beta`), else added lane by lane, one rounding each.
    #[target_feature(enable = "avx2")]
    #[inline]
    pub(super) fn merge_block<const R: usize, const V: usize>(
        total: &mut [[__m256; V]; R],
        acc: &[[__m256; V]; R],
        first: bool,
    ) {
        if first {
            *total = *acc;
            return;
        }
        for (t, a) in total.iter_mut().zip(acc) {
            for (t, &a) in t.iter_mut().zip(a) {
                *t = _mm256_add_ps(*t, a);
            }
        }
    }

    /// `y = W col(image)` for one group: tiles of up to [`NR`] output channels by two output
    /// segments.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn forward(job: ForwardJob<'_>, w: &[f32], y: &mut [f32]) {
        let ForwardJob { segments, sp, .. } = job;
        let kd = job.offsets.len();
        let go = w.len() / kd;
        let y = y.as_mut_ptr();
        for channels in balanced(go, NR) {
            let (m0, rows) = (channels.start, channels.len());
            let w = w.as_ptr().add(m0 * kd);
            let y = y.add(m0 * sp);
            for pair in segments.chunks(2) {
                macro_rules! tile {
                    ($r:literal, $v:literal) => {
                        forward_tile::<$r, $v>(job, pair, w, y)
                    };
                }
                by_tile_size!(rows, pair.len(), tile)
            }
        }
    }

    /// `R` output channels (their weights at `w`, their outputs at `y`) by the `V` output
    /// `segments` of eight outputs: one multiply-add chain per output and depth block of `kc`,
    /// the blocks' sums added in order.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn forward_tile<const R: usize, const V: usize>(
        job: ForwardJob<'_>,
        segments: &[[usize; 2]],
        w: *const f32,
        y: *mut f32,
    ) {
        let ForwardJob {
            image,
            offsets,
            kc,
            sp,
            ..
        } = job;
        let (image, kd) = (image.as_ptr(), offsets.len());
        let src: [*const f32; V] = std::array::from_fn(|v| image.add(segments[v][0]));
        let mut total = [[_mm256_setzero_ps(); V]; R];
        for (b, block) in offsets.chunks(kc).enumerate() {
            let k0 = b * kc;
            let mut acc = [[_mm256_setzero_ps(); V]; R];
            for (dk, &off) in block.iter().enumerate() {
                let k = k0 + dk;
                let x: [__m256; V] = std::array::from_fn(|v| _mm256_loadu_ps(src[v].add(off)));
                for (r, acc) in acc.iter_mut().enumerate() {
                    let wr = _mm256_broadcast_ss(&*w.add(r * kd + k));
                    for v in 0..V {
                        acc[v] = _mm256_fmadd_ps(x[v], wr, acc[v]);
                    }
                }
            }
            merge_block(&mut total, &acc, b == 0);
        }
        for (r, t) in total.iter().enumerate() {
            for v in 0..V {
                _mm256_storeu_ps(y.add(r * sp + segments[v][1]), t[v]);
            }
        }
    }

    /// `dw_t (+)= dy col(image)^T` for one group, transposed: tiles of up to [`NR`] column rows
    /// by two vectors of output channels.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn weight_gradient(
        job: WeightGradientJob<'_>,
        dy_t: &[f32],
        dw_t: &mut [f32],
    ) {
        let WeightGradientJob { offsets, gop, .. } = job;
        let (dy_t, dw_t) = (dy_t.as_ptr(), dw_t.as_mut_ptr());
        let mut m0 = 0;
        while m0 < gop {
            let vectors = ((gop - m0) / LANES).min(2);
            for rows in balanced(offsets.len(), NR) {
                let out = dw_t.add(rows.start * gop + m0);
                let rows = &offsets[rows];
                let dy = dy_t.add(m0);
                macro_rules! tile {
                    ($r:literal, $v:literal) => {
                        weight_gradient_tile::<$r, $v>(job, rows, dy, out)
                    };
                }
                by_tile_size!(rows.len(), vectors, tile)
            }
            m0 += vectors * LANES;
        }
    }

    /// `R` column rows (their offsets `rows`) by `V` vectors of output channels (their `dy`
    /// at `dy`, their sums at `out`): one multiply-add chain per weight and depth block of `kc`
    /// outputs, the blocks' sums added in order onto `out` (or, without `accumulate`, the first
    /// block's sum stored).
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn weight_gradient_tile<const R: usize, const V: usize>(
        job: WeightGradientJob<'_>,
        rows: &[usize],
        dy: *const f32,
        out: *mut f32,
    ) {
        let WeightGradientJob {
            image,
            positions,
            kc,
            gop,
            accumulate,
            ..
        } = job;
        let image = image.as_ptr();
        let src: [*const f32; R] = std::array::from_fn(|r| image.add(rows[r]));
        let mut total = [[_mm256_setzero_ps(); V]; R];
        if accumulate {
            for (r, t) in total.iter_mut().enumerate() {
                for (v, t) in t.iter_mut().enumerate() {
                    *t = _mm256_loadu_ps(out.add(r * gop + v * LANES));
                }
            }
        }
        for (b, block) in positions.chunks(kc).enumerate() {
            let mut acc = [[_mm256_setzero_ps(); V]; R];
            let mut d = dy.add(b * kc * gop);
            for &p in block {
                let dv: [__m256; V] = std::array::from_fn(|v| _mm256_loadu_ps(d.add(v * LANES)));
                for (r, acc) in acc.iter_mut().enumerate() {
                    let xr = _mm256_broadcast_ss(&*src[r].add(p));
                    for v in 0..V {
                        acc[v] = _mm256_fmadd_ps(xr, dv[v], acc[v]);
                    }
                }
                d = d.add(gop);
            }
            merge_block(&mut total, &acc, b == 0 && !accumulate);
        }
        for (r, t) in total.iter().enumerate() {
            for (v, &t) in t.iter().enumerate() {
                _mm256_storeu_ps(out.add(r * gop + v * LANES), t);
            }
        }
    }
}
