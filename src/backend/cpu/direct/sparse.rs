//! The weight gradient when most of `dy` is zero: behind a max pooling (a quarter of its
//! input positions receive a gradient, at most) or a ReLU, the products with `dy = 0` are most
//! of the work and add nothing. Here each output channel's nonzero entries of `dy` are listed
//! (eight at a time, one permutation packing the nonzero lanes) and only they are multiplied,
//! up to 64 column rows (eight vectors) at a time, from a copy of the image's columns laid
//! out position by position (eight by eight, transposed in registers).
//!
//! The same bits as the dense kernels: each weight is the same chain of fused multiply-adds
//! over the outputs in ascending order, in the same depth blocks, less the terms whose `dy` is
//! zero. Such a term is `x * (+-0) = +-0` when `x` is finite, and adding a zero to a chain
//! leaves it as it was, because a chain that starts at `+0` is `-0` only if it underflowed to
//! it: so leaving the term out changes nothing, except that an entry which underflows to zero
//! may end with the other sign of zero. A non-finite `x` would make the term NaN, so
//! [`worth_it`] keeps batches with a non-finite input on the dense kernels.

use super::super::simd::with_simd;
use super::{applies, depth_block, with_image, LANES};
use crate::backend::ConvBatch;
use std::cell::RefCell;

/// `dy` must have at most this share of nonzeros: above it, listing the entries and the
/// column copy cost more than the dense kernel's multiplications that the list saves.
const MAX_DENSITY: f32 = 0.35;

thread_local! {
    static SCRATCH: RefCell<Scratch> = const {
        RefCell::new(Scratch {
            columns: Vec::new(),
            entries: Vec::new(),
            row_ends: Vec::new(),
        })
    };
}

/// One worker's buffers (they only grow: no allocation once warm).
struct Scratch {
    /// The image's columns position by position: `spatial x padded kernel_dim`.
    columns: Vec<f32>,
    /// Each output channel's nonzero entries of `dy`, channel after channel, and where each
    /// channel's list ends.
    entries: Vec<Entry>,
    row_ends: Vec<usize>,
}

/// Whether the weight gradient of this batch goes through [`weight_gradient_image`]: the
/// direct kernels take the convolution, `dy` is sparse enough, and the input is all finite.
pub(in crate::backend::cpu) fn worth_it(c: &ConvBatch, x: &[f32], dy: &[f32]) -> bool {
    if !applies(c) || dy.is_empty() || c.out_spatial() > u32::MAX as usize {
        return false;
    }
    nonzero_share(dy) <= MAX_DENSITY
        && with_simd(
            #[inline(always)]
            || all_finite(x),
        )
}

/// The share of nonzeros in `dy`, from every 16th block of 64 floats (all of a small `dy`):
/// it only chooses the faster path, the results are the same bits either way, and reading
/// all of a large `dy` once more (cifar10's conv1: 13 MB) would cost more than the choice.
fn nonzero_share(dy: &[f32]) -> f32 {
    const BLOCK: usize = 64;
    let step = if dy.len() < 16 * 1024 { 1 } else { 16 };
    let (mut seen, mut nonzero) = (0, 0);
    for block in dy.chunks(BLOCK).step_by(step) {
        seen += block.len();
        nonzero += block.iter().map(|&v| usize::from(v != 0.0)).sum::<usize>();
    }
    nonzero as f32 / seen.max(1) as f32
}

/// A fold rather than a search that stops early, so that it vectorises.
#[inline(always)]
fn all_finite(v: &[f32]) -> bool {
    v.iter().fold(true, |finite, v| finite & v.is_finite())
}

/// Column rows padded to whole vectors.
fn padded_kernel_dim(c: &ConvBatch) -> usize {
    c.kernel_dim().next_multiple_of(LANES)
}

/// `dw (+)= dy col(x)^T` for one image, every group, `dw` in the weights' layout (per group
/// `out x kernel_dim`); with `accumulate` false `dw` is overwritten (the GEMM's `beta = 0`).
/// `worth_it` held for the batch.
pub(in crate::backend::cpu) fn weight_gradient_image(
    c: &ConvBatch,
    x: &[f32],
    dy: &[f32],
    dw: &mut [f32],
    accumulate: bool,
) {
    assert!(
        applies(c),
        "sparse weight gradient called outside its shapes"
    );
    let (kd, sp, go) = (c.kernel_dim(), c.out_spatial(), c.group_out());
    let kdp = padded_kernel_dim(c);
    // As the dense kernel: the crate's product runs along the column rows, over the outputs.
    let kc = depth_block(kd, go, sp);
    let (hp, wp) = super::padded_size(c);
    let group_image = c.geom.channels / c.groups * hp * wp;
    with_image(c, x, |image, plan| {
        SCRATCH.with(|scratch| {
            let s = &mut *scratch.borrow_mut();
            if s.columns.len() < sp * kdp {
                s.columns.resize(sp * kdp, 0.0);
            }
            for grp in 0..c.groups {
                let image = &image[grp * group_image..(grp + 1) * group_image];
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `applies` checked AVX2. Reads: each segment's eight outputs at each
                // offset lie in the image (`Plan::fill`); writes: rows `first..first + 8` of
                // `columns` (`sp x kdp`), each segment inside `0..sp`.
                unsafe {
                    avx2::transpose_columns(
                        image,
                        &plan.offsets,
                        &plan.segments,
                        &mut s.columns,
                        kdp,
                    )
                };
                let dy = &dy[grp * go * sp..(grp + 1) * go * sp];
                list_nonzeros(dy, sp, &mut s.entries, &mut s.row_ends);
                let dw = &mut dw[grp * go * kd..(grp + 1) * go * kd];
                let job = Job {
                    columns: &s.columns,
                    kdp,
                    lists: Lists {
                        entries: &s.entries,
                        row_ends: &s.row_ends,
                    },
                    kc,
                    sp,
                    kd,
                    accumulate,
                };
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `applies` checked AVX2 and FMA. Reads: `columns` rows of `kdp`
                // floats at listed positions (< sp); writes: `dw` (`go x kd`).
                unsafe {
                    avx2::weight_gradient(job, dw)
                };
            }
        })
    })
}

/// One nonzero entry of `dy`: its position among the outputs, and its value. `repr(C)`:
/// the AVX2 listing writes the two fields as neighbouring lanes, position first.
#[repr(C)]
#[derive(Clone, Copy)]
struct Entry {
    position: u32,
    value: f32,
}

/// Lists each row's nonzero entries of `dy` (rows of `sp`) as (position, value), row after
/// row, into `entries` (grown, never shrunk: no allocation once warm), and where each row's
/// list ends into `row_ends`.
fn list_nonzeros(dy: &[f32], sp: usize, entries: &mut Vec<Entry>, row_ends: &mut Vec<usize>) {
    // Whole vectors of entries are written past the end.
    if entries.len() < dy.len() + LANES {
        let zero = Entry {
            position: 0,
            value: 0.0,
        };
        entries.resize(dy.len() + LANES, zero);
    }
    row_ends.clear();
    let mut end = 0;
    for row in dy.chunks_exact(sp) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the sparse path runs only where the CPU has AVX2 (`applies`); `entries`
        // has room for the row's entries and a vector more.
        unsafe {
            end = avx2::list_row(row, &mut entries[end..]) + end;
        }
        row_ends.push(end);
    }
}

/// One group's weight-gradient product, as the kernel reads it: the columns (`sp` rows of
/// `kdp`), the listed entries, the depth block `kc`, the column rows `kd`, and whether to add
/// onto `dw` (the GEMM's `beta = 1`).
#[derive(Clone, Copy)]
struct Job<'a> {
    columns: &'a [f32],
    kdp: usize,
    lists: Lists<'a>,
    kc: usize,
    sp: usize,
    kd: usize,
    accumulate: bool,
}

/// Each output channel's nonzero `dy` entries, by position.
#[derive(Clone, Copy)]
struct Lists<'a> {
    entries: &'a [Entry],
    row_ends: &'a [usize],
}

impl Lists<'_> {
    fn row(&self, m: usize) -> &[Entry] {
        let start = if m == 0 { 0 } else { self.row_ends[m - 1] };
        &self.entries[start..self.row_ends[m]]
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::super::LANES;
    use super::{Entry, Job};
    use std::arch::x86_64::*;

    /// Column-row vectors per tile.
    const VECTORS: usize = 8;

    /// For each 8-bit mask, the lanes whose bit is set, in order (then zeros).
    static LEFT_PACK: [[u32; 8]; 256] = {
        let mut table = [[0; 8]; 256];
        let mut mask = 0;
        while mask < 256 {
            let (mut lane, mut n) = (0, 0);
            while lane < 8 {
                if mask >> lane & 1 == 1 {
                    table[mask][n] = lane as u32;
                    n += 1;
                }
                lane += 1;
            }
            mask += 1;
        }
        table
    };

    /// Writes the row's nonzero entries (position, value) in order to the front of
    /// `entries`, which has room for them and eight more; returns how many there are. Eight
    /// at a time: the nonzero lanes packed to the front by one permutation from [`LEFT_PACK`].
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn list_row(row: &[f32], entries: &mut [Entry]) -> usize {
        assert!(entries.len() >= row.len() + LANES);
        let out = entries.as_mut_ptr() as *mut f32;
        let mut n = 0;
        let blocks = row.len() / LANES;
        for b in 0..blocks {
            let v = _mm256_loadu_ps(row.as_ptr().add(b * LANES));
            let nonzero = _mm256_cmp_ps::<_CMP_NEQ_UQ>(v, _mm256_setzero_ps());
            let mask = _mm256_movemask_ps(nonzero) as usize;
            let pack = _mm256_loadu_si256(LEFT_PACK[mask].as_ptr() as *const __m256i);
            let positions = _mm256_add_epi32(pack, _mm256_set1_epi32((b * LANES) as i32));
            let values = _mm256_permutevar8x32_ps(v, pack);
            let positions = _mm256_castsi256_ps(positions);
            // Pairs (position, value): interleave, then put the halves in order.
            let low = _mm256_unpacklo_ps(positions, values);
            let high = _mm256_unpackhi_ps(positions, values);
            let at = out.add(2 * n);
            _mm256_storeu_ps(at, _mm256_permute2f128_ps::<0x20>(low, high));
            _mm256_storeu_ps(at.add(LANES), _mm256_permute2f128_ps::<0x31>(low, high));
            n += mask.count_ones() as usize;
        }
        for (p, &v) in row.iter().enumerate().skip(blocks * LANES) {
            if v != 0.0 {
                entries[n] = Entry {
                    position: p as u32,
                    value: v,
                };
                n += 1;
            }
        }
        n
    }

    /// `columns[p][k] = image[position of p + offsets[k]]`, eight outputs (one segment) by
    /// eight column rows at a time: eight loads along the outputs, transposed in registers.
    /// Column rows past the last (up to `kdp`) get copies of it.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn transpose_columns(
        image: &[f32],
        offsets: &[usize],
        segments: &[[usize; 2]],
        columns: &mut [f32],
        kdp: usize,
    ) {
        let kd = offsets.len();
        let (image, columns) = (image.as_ptr(), columns.as_mut_ptr());
        for &[start, first] in segments {
            let src = image.add(start);
            let dst = columns.add(first * kdp);
            for k0 in (0..kd).step_by(LANES) {
                let rows: [__m256; 8] = std::array::from_fn(|r| {
                    _mm256_loadu_ps(src.add(offsets[(k0 + r).min(kd - 1)]))
                });
                for (lane, v) in transpose8(rows).into_iter().enumerate() {
                    _mm256_storeu_ps(dst.add(lane * kdp + k0), v);
                }
            }
        }
    }

    /// The 8 x 8 transpose: lane `j` of row `i` to lane `i` of row `j`.
    #[target_feature(enable = "avx2")]
    #[inline]
    fn transpose8(r: [__m256; 8]) -> [__m256; 8] {
        let t0 = _mm256_unpacklo_ps(r[0], r[1]);
        let t1 = _mm256_unpackhi_ps(r[0], r[1]);
        let t2 = _mm256_unpacklo_ps(r[2], r[3]);
        let t3 = _mm256_unpackhi_ps(r[2], r[3]);
        let t4 = _mm256_unpacklo_ps(r[4], r[5]);
        let t5 = _mm256_unpackhi_ps(r[4], r[5]);
        let t6 = _mm256_unpacklo_ps(r[6], r[7]);
        let t7 = _mm256_unpackhi_ps(r[6], r[7]);
        let s0 = _mm256_shuffle_ps::<0x44>(t0, t2);
        let s1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
        let s2 = _mm256_shuffle_ps::<0x44>(t1, t3);
        let s3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
        let s4 = _mm256_shuffle_ps::<0x44>(t4, t6);
        let s5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
        let s6 = _mm256_shuffle_ps::<0x44>(t5, t7);
        let s7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
        [
            _mm256_permute2f128_ps::<0x20>(s0, s4),
            _mm256_permute2f128_ps::<0x20>(s1, s5),
            _mm256_permute2f128_ps::<0x20>(s2, s6),
            _mm256_permute2f128_ps::<0x20>(s3, s7),
            _mm256_permute2f128_ps::<0x31>(s0, s4),
            _mm256_permute2f128_ps::<0x31>(s1, s5),
            _mm256_permute2f128_ps::<0x31>(s2, s6),
            _mm256_permute2f128_ps::<0x31>(s3, s7),
        ]
    }

    /// `dw (+)= dy col^T` from the listed entries: tiles of up to [`VECTORS`] vectors of
    /// column rows, by two output channels when the tile is narrow (so that enough chains
    /// run side by side to hide the multiply-add's latency), else by one.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn weight_gradient(job: Job<'_>, dw: &mut [f32]) {
        let (go, kd) = (job.lists.row_ends.len(), job.kd);
        let mut k0 = 0;
        while k0 < kd {
            let vectors = (kd - k0).div_ceil(LANES).min(VECTORS);
            let pair = vectors <= VECTORS / 2;
            let mut m = 0;
            while m < go {
                let channels = if pair && m + 1 < go { 2 } else { 1 };
                macro_rules! tile {
                    ($r:literal, $v:literal) => {
                        tile::<$r, $v>(job, k0, m, dw)
                    };
                }
                match (channels, vectors) {
                    (2, 4) => tile!(2, 4),
                    (2, 3) => tile!(2, 3),
                    (2, 2) => tile!(2, 2),
                    (2, _) => tile!(2, 1),
                    (_, 8) => tile!(1, 8),
                    (_, 7) => tile!(1, 7),
                    (_, 6) => tile!(1, 6),
                    (_, 5) => tile!(1, 5),
                    (_, 4) => tile!(1, 4),
                    (_, 3) => tile!(1, 3),
                    (_, 2) => tile!(1, 2),
                    _ => tile!(1, 1),
                }
                m += channels;
            }
            k0 += vectors * LANES;
        }
    }

    /// Column rows `k0..k0 + 8 V` of output channels `m0..m0 + R`: per depth block of `kc`
    /// outputs one multiply-add chain per weight over its channel's listed entries (the `R`
    /// channels' chains advanced side by side), the blocks' sums added in order onto `dw` (or,
    /// without `accumulate`, the first stored).
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn tile<const R: usize, const V: usize>(
        job: Job<'_>,
        k0: usize,
        m0: usize,
        dw: &mut [f32],
    ) {
        let Job {
            columns,
            kdp,
            lists,
            kc,
            sp,
            kd,
            accumulate,
        } = job;
        let width = (kd - k0).min(V * LANES);
        let columns = columns.as_ptr().add(k0);
        // The running totals, in memory: whole vectors, the last of which may reach past the
        // row's end in `dw`.
        let mut totals = [[0f32; VECTORS * LANES]; R];
        if accumulate {
            for (r, total) in totals.iter_mut().enumerate() {
                let at = (m0 + r) * kd + k0;
                total[..width].copy_from_slice(&dw[at..at + width]);
            }
        }
        let mut rest: [&[Entry]; R] = std::array::from_fn(|r| lists.row(m0 + r));
        let fma = |acc: &mut [__m256; V], e: &Entry| {
            let x = columns.add(e.position as usize * kdp);
            let d = _mm256_set1_ps(e.value);
            for (v, a) in acc.iter_mut().enumerate() {
                *a = _mm256_fmadd_ps(_mm256_loadu_ps(x.add(v * LANES)), d, *a);
            }
        };
        for (b, block_start) in (0..sp).step_by(kc).enumerate() {
            let block_end = block_start + kc;
            let block: [&[Entry]; R] = std::array::from_fn(|r| {
                let (head, tail) = rest[r]
                    .split_at(rest[r].partition_point(|e| (e.position as usize) < block_end));
                rest[r] = tail;
                head
            });
            let mut acc = [[_mm256_setzero_ps(); V]; R];
            let common = block.iter().map(|b| b.len()).min().unwrap_or(0);
            for i in 0..common {
                for (acc, block) in acc.iter_mut().zip(&block) {
                    fma(acc, &block[i]);
                }
            }
            for (acc, block) in acc.iter_mut().zip(&block) {
                block[common..].iter().for_each(|e| fma(acc, e));
            }
            let first = b == 0 && !accumulate;
            for (total, acc) in totals.iter_mut().zip(&acc) {
                for (v, &a) in acc.iter().enumerate() {
                    let t = total.as_mut_ptr().add(v * LANES);
                    let sum = if first {
                        a
                    } else {
                        _mm256_add_ps(_mm256_loadu_ps(t), a)
                    };
                    _mm256_storeu_ps(t, sum);
                }
            }
        }
        for (r, total) in totals.iter().enumerate() {
            let at = (m0 + r) * kd + k0;
            dw[at..at + width].copy_from_slice(&total[..width]);
        }
    }
}
