//! Max and average pooling, parallel over groups of planes (upstream:
//! src/caffe/layers/pooling_layer.cpp).
//!
//! Window of output `(ph, pw)`: rows from `ph * stride_h - pad_h` for `kernel_h` rows (columns
//! likewise). Max pooling looks only at the part inside the image. Average pooling sums the part
//! inside the image but divides by the size of the window clipped to the *padded* image, so
//! padded positions count as zeros. A window entirely outside the image (possible only when
//! the stride exceeds the kernel) gives `-f32::MAX` with mask -1 (max) or 0 (average).
//!
//! The loops run over all outputs of a group of planes at once, one window tap after another,
//! so that they vectorise. The planes are first copied into a [`Layout`]: padded on every
//! side (with `-inf` for max, `+0` for average) and split into their `stride_h x stride_w`
//! phases, in which a tap's inputs for consecutive outputs are consecutive floats. Padding
//! changes no bit: `-inf` never beats the running maximum (the comparison is strict and starts
//! from `-f32::MAX`), and a sum that starts at `+0` is never `-0`, so adding `+0` leaves it as
//! it was. Each output still sees its taps in row-major order, and each input of the average's
//! backward pass still receives its shares in output order, as in upstream's loops.

use super::simd::{has_avx2, with_simd};
use super::Par;
use crate::backend::{
    invalid, reserve_host_buffer, resize_host_buffer, BackendError, PoolGeom, Result,
};
use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

thread_local! {
    static SCRATCH: RefCell<Scratch> = const { RefCell::new(Scratch::new()) };
}

/// Output slots a group of planes aims at: enough for long vector loops, few enough that a
/// group of small planes stays in L1 (a large plane makes a group of its own).
const GROUP_SLOTS: usize = 512;

/// A group of planes padded on every side to cover every window and split into their
/// `stride_h x stride_w` phases: phase `(a, b)` holds, plane after plane, the padded rows
/// `a, a + stride_h, ...` by the padded columns `b, b + stride_w, ...`, `rows x cols` of them.
/// Only the phases some window tap reads are kept (`a < kernel_h`, `b < kernel_w`): with a
/// stride above the kernel the others hold inputs no window covers.
/// Output `(ph, pw)` of the group's plane `i` is slot `(i * rows + ph) * cols + pw`, and window
/// tap `(kh, kw)` of every slot is where padded position `(kh, kw)` of plane 0 is, plus the
/// slot: one phase, shifted. Other slots (`ph >= pooled_h` or `pw >= pooled_w`) are spare:
/// computed, never read.
#[derive(Clone, Copy)]
struct Layout {
    stride: (usize, usize),
    /// Phases kept along each axis: `min(stride, kernel)`.
    phases: (usize, usize),
    rows: usize,
    cols: usize,
    planes: usize,
    /// Slots rounded up to whole vectors.
    slots: usize,
}

impl Layout {
    /// The layout for `g`, or `None` when its sizes overflow (an absurd window or stride).
    fn of(g: &PoolGeom) -> Option<Self> {
        // Windows reach at most this far; the image itself may reach further (floor mode).
        let reach = |pooled: usize, stride: usize, kernel: usize, size: usize, pad: usize| {
            let windows = (pooled.max(1) - 1)
                .checked_mul(stride)?
                .checked_add(kernel)?;
            Some(windows.max(size.checked_add(pad)?).div_ceil(stride))
        };
        let rows = reach(g.pooled_h, g.stride_h, g.kernel_h, g.height, g.pad_h)?;
        let cols = reach(g.pooled_w, g.stride_w, g.kernel_w, g.width, g.pad_w)?;
        let plane_len = rows.checked_mul(cols)?;
        let planes = (GROUP_SLOTS / plane_len).clamp(1, g.planes.max(1));
        let layout = Layout {
            stride: (g.stride_h, g.stride_w),
            phases: (g.stride_h.min(g.kernel_h), g.stride_w.min(g.kernel_w)),
            rows,
            cols,
            planes,
            slots: planes.checked_mul(plane_len)?.checked_next_multiple_of(8)?,
        };
        layout.checked_len().map(|_| layout)
    }

    /// Floats of one plane in one phase, and of one phase.
    fn plane_len(&self) -> usize {
        self.rows * self.cols
    }

    fn phase_len(&self) -> usize {
        self.planes * self.plane_len()
    }

    /// The phases, then room for the spare slots' reads past the last one.
    fn len(&self) -> usize {
        self.checked_len().expect("checked by Layout::of")
    }

    fn checked_len(&self) -> Option<usize> {
        self.phases
            .0
            .checked_mul(self.phases.1)?
            .checked_mul(self.phase_len())?
            .checked_add(self.plane_len())?
            .checked_add(8)
    }

    /// Where padded position `(r, c)` of plane 0 is, if its phase is kept.
    fn at(&self, r: usize, c: usize) -> Option<usize> {
        let ((sh, sw), (kept_h, kept_w)) = (self.stride, self.phases);
        let (a, b) = (r % sh, c % sw);
        (a < kept_h && b < kept_w)
            .then(|| (a * kept_w + b) * self.phase_len() + (r / sh) * self.cols + c / sw)
    }
}

/// One worker's buffers, and the tables for the geometry they were last made for (so that the
/// loops over a group do no integer division).
struct Scratch {
    geom: Option<PoolGeom>,
    lay: Layout,
    /// A group of planes in its [`Layout`].
    planes: Vec<f32>,
    /// One value per slot, and for max its argmax.
    values: Vec<f32>,
    arg: Vec<i32>,
    /// Per slot: the image index of its window's first tap (for max pooling's argmax).
    origins: Vec<i32>,
    /// Per slot: its divisor, or 0 for an empty window or a spare slot (average pooling).
    divisors: Vec<f32>,
    /// Per window tap in row-major order: where it is for slot 0, and its image index
    /// relative to the window's first tap.
    taps: Vec<(usize, i32)>,
    /// Per image row of plane 0: where it is (if its phase is kept). Per kept column phase
    /// holding some of the image: where it starts relative to that, its first image column,
    /// and how many it holds.
    row_starts: Vec<Option<usize>>,
    column_phases: Vec<(usize, usize, usize)>,
}

impl Scratch {
    const fn new() -> Self {
        Scratch {
            geom: None,
            lay: Layout {
                stride: (1, 1),
                phases: (1, 1),
                rows: 0,
                cols: 0,
                planes: 0,
                slots: 0,
            },
            planes: Vec::new(),
            values: Vec::new(),
            arg: Vec::new(),
            origins: Vec::new(),
            divisors: Vec::new(),
            taps: Vec::new(),
            row_starts: Vec::new(),
            column_phases: Vec::new(),
        }
    }

    /// Sizes the buffers and makes the tables for `g`, or says they cannot be had.
    fn make_tables(&mut self, g: &PoolGeom) -> Result<()> {
        const OP: &str = "pooling scratch";
        // The tables are made only once they all fit.
        self.geom = None;
        let lay = layout(g)?;
        let taps = g
            .kernel_h
            .checked_mul(g.kernel_w)
            .ok_or_else(|| too_large(g))?;
        resize_host_buffer(OP, &mut self.planes, lay.len(), 0.0)?;
        resize_host_buffer(OP, &mut self.values, lay.slots, 0.0)?;
        resize_host_buffer(OP, &mut self.arg, lay.slots, 0)?;
        self.origins.clear();
        self.divisors.clear();
        self.taps.clear();
        reserve_host_buffer(OP, &mut self.origins, lay.slots)?;
        reserve_host_buffer(OP, &mut self.divisors, lay.slots)?;
        reserve_host_buffer(OP, &mut self.taps, taps)?;
        self.lay = lay;
        for slot in 0..lay.slots {
            let (ph, pw) = ((slot / lay.cols) % lay.rows, slot % lay.cols);
            // A real slot's indices fit an i32 (`PoolGeom::validate` bounds a plane by 2^24
            // elements); a spare slot's may wrap, and are never read.
            let row = ((ph * g.stride_h) as i32).wrapping_sub(g.pad_h as i32);
            let col = ((pw * g.stride_w) as i32).wrapping_sub(g.pad_w as i32);
            self.origins
                .push(row.wrapping_mul(g.width as i32).wrapping_add(col));
            let real = ph < g.pooled_h && pw < g.pooled_w;
            let divisor = ave_divisor(ph, g.stride_h, g.pad_h, g.kernel_h, g.height)
                * ave_divisor(pw, g.stride_w, g.pad_w, g.kernel_w, g.width);
            self.divisors.push(if real { divisor } else { 0.0 });
        }
        for kh in 0..g.kernel_h {
            for kw in 0..g.kernel_w {
                let at = lay.at(kh, kw).expect("a tap's phase is kept");
                self.taps.push((at, (kh * g.width + kw) as i32));
            }
        }
        self.row_starts.clear();
        self.row_starts
            .extend((0..g.height).map(|h| lay.at(h + g.pad_h, 0)));
        self.column_phases.clear();
        let (s, pad) = (g.stride_w, g.pad_w);
        for phase in 0..lay.phases.1 {
            // The phase's first padded column inside the image.
            let first = pad.saturating_sub(phase).div_ceil(s) * s + phase;
            let w0 = first - pad;
            if w0 < g.width {
                let n = (g.width - w0).div_ceil(s);
                let at = lay.at(0, first).expect("a kept phase");
                self.column_phases.push((at, w0, n));
            }
        }
        self.geom = Some(*g);
        Ok(())
    }

    /// Copies `planes` (at most a group) into the layout, the padding set to `fill`.
    #[inline(always)]
    fn fill(&mut self, g: &PoolGeom, planes: &[f32], fill: f32) {
        self.planes.fill(fill);
        let (plane_len, image_len) = (self.lay.plane_len(), g.height * g.width);
        if image_len == 0 {
            return;
        }
        for (i, plane) in planes.chunks_exact(image_len).enumerate() {
            for (src, &row) in plane.chunks_exact(g.width).zip(&self.row_starts) {
                let Some(row) = row else { continue };
                let row = i * plane_len + row;
                for &(at, w0, n) in &self.column_phases {
                    let dst = &mut self.planes[row + at..][..n];
                    let src = &src[w0..];
                    for (t, d) in dst.iter_mut().enumerate() {
                        *d = src[t * g.stride_w];
                    }
                }
            }
        }
    }

    /// The inverse of [`Scratch::fill`]: the image part of the layout into `planes`.
    #[inline(always)]
    fn read(&self, g: &PoolGeom, planes: &mut [f32]) {
        let (plane_len, image_len) = (self.lay.plane_len(), g.height * g.width);
        if image_len == 0 {
            return;
        }
        if self.lay.phases != self.lay.stride {
            // Inputs in the phases not kept are under no window.
            planes.fill(0.0);
        }
        for (i, plane) in planes.chunks_exact_mut(image_len).enumerate() {
            for (dst, &row) in plane.chunks_exact_mut(g.width).zip(&self.row_starts) {
                let Some(row) = row else { continue };
                for &(at, w0, n) in &self.column_phases {
                    let src = &self.planes[i * plane_len + row + at..][..n];
                    let dst = &mut dst[w0..];
                    for (t, &v) in src.iter().enumerate() {
                        dst[t * g.stride_w] = v;
                    }
                }
            }
        }
    }

    /// The real slots of `slots` into the outputs `out` (at most a group's), through `f`.
    #[inline(always)]
    fn read_slots<T: Copy>(
        &self,
        g: &PoolGeom,
        slots: &[T],
        out: &mut [f32],
        f: impl Fn(T) -> f32,
    ) {
        if g.pooled_h * g.pooled_w == 0 {
            return;
        }
        let plane_slots = slots.chunks(self.lay.plane_len());
        for (out, slots) in out
            .chunks_exact_mut(g.pooled_h * g.pooled_w)
            .zip(plane_slots)
        {
            for (row, slots) in out
                .chunks_exact_mut(g.pooled_w)
                .zip(slots.chunks(self.lay.cols))
            {
                row.iter_mut().zip(slots).for_each(|(o, &v)| *o = f(v));
            }
        }
    }

    /// Each real slot's value `f(per_output, divisor)` from a value per output (at most a
    /// group's), the others 0.
    #[inline(always)]
    fn write_slots(&mut self, g: &PoolGeom, per_output: &[f32], f: impl Fn(f32, f32) -> f32) {
        self.values.fill(0.0);
        if g.pooled_h * g.pooled_w == 0 {
            return;
        }
        let plane_len = self.lay.plane_len();
        let plane_slots = self
            .values
            .chunks_mut(plane_len)
            .zip(self.divisors.chunks(plane_len));
        let planes = per_output.chunks_exact(g.pooled_h * g.pooled_w);
        for (out, (slots, divisors)) in planes.zip(plane_slots) {
            let rows = slots
                .chunks_mut(self.lay.cols)
                .zip(divisors.chunks(self.lay.cols));
            for (out, (slots, divisors)) in out.chunks_exact(g.pooled_w).zip(rows) {
                for ((s, &d), &o) in slots.iter_mut().zip(divisors).zip(out) {
                    *s = f(o, d);
                }
            }
        }
    }
}

/// Runs `f` with this thread's scratch, sized and tabulated for `g`; a failure to size it goes
/// to `failed` (the first of a parallel loop's failures is kept) and `f` is not run.
fn with_scratch(g: &PoolGeom, failed: &OnceLock<BackendError>, f: impl FnOnce(&mut Scratch)) {
    SCRATCH.with(|cell| {
        let mut s = cell.borrow_mut();
        if s.geom != Some(*g) {
            if let Err(error) = s.make_tables(g) {
                let _ = failed.set(error);
                return;
            }
        }
        f(&mut s)
    })
}

/// `Err` with the failure a loop of [`with_scratch`] calls recorded, if any.
fn first_failure(failed: OnceLock<BackendError>) -> Result<()> {
    failed.into_inner().map_or(Ok(()), Err)
}

/// Start and end (exclusive) of window `p` along one axis, clipped to `0..limit`, as i64.
fn window(p: usize, stride: usize, pad: usize, kernel: usize, limit: i64) -> (i64, i64) {
    let start = (p * stride) as i64 - pad as i64;
    ((start).max(0), (start + kernel as i64).min(limit))
}

/// Average pooling's divisor along one axis for window `p`: its extent in the padded image
/// (the padding before the image counts: the start is not clipped at 0), or 0 when none of it
/// lies inside the image. A window's divisor is the product of its two axes' (an exact
/// integer product, as upstream's).
fn ave_divisor(p: usize, stride: usize, pad: usize, kernel: usize, size: usize) -> f32 {
    let (start, end) = window(p, stride, pad, kernel, (size + pad) as i64);
    let raw_start = (p * stride) as i64 - pad as i64;
    if start < end.min(size as i64) {
        (end - raw_start) as f32
    } else {
        0.0
    }
}

/// Max pooling of the group in the layout into the slots (`s.values`, `s.arg`), tap by tap:
/// strictly greater wins, so the first maximum in row-major order does and NaN never.
#[inline(always)]
fn max_slots(s: &mut Scratch) {
    s.values.fill(-f32::MAX);
    s.arg.fill(-1);
    for &(tap, shift) in &s.taps {
        let src = &s.planes[tap..tap + s.lay.slots];
        let slots = s.values.iter_mut().zip(s.arg.iter_mut());
        for (((best, arg), &v), &origin) in slots.zip(src).zip(&s.origins) {
            if v > *best {
                (*best, *arg) = (v, origin.wrapping_add(shift));
            }
        }
    }
}

pub(super) fn max_forward(
    par: Par<'_>,
    g: &PoolGeom,
    x: &[f32],
    y: &mut [f32],
    mask: &mut [f32],
) -> Result<()> {
    max_forward_with(par, g, x, y, mask, has_avx2())
}

/// The layout of `g`'s scratch, or an error when its sizes overflow.
fn layout(g: &PoolGeom) -> Result<Layout> {
    Layout::of(g).ok_or_else(|| too_large(g))
}

fn too_large(g: &PoolGeom) -> BackendError {
    invalid(
        "pooling scratch",
        format!("the window and stride need more scratch than memory can hold: {g:?}"),
    )
}

/// [`max_forward`] with or without the AVX2 loops (for the tests: with is the same bits).
fn max_forward_with(
    par: Par<'_>,
    g: &PoolGeom,
    x: &[f32],
    y: &mut [f32],
    mask: &mut [f32],
    use_avx2: bool,
) -> Result<()> {
    let (hw, pp) = (g.height * g.width, g.pooled_h * g.pooled_w);
    let group = layout(g)?.planes;
    let work = window_work(g, group * pp);
    let failed = OnceLock::new();
    par.rows2_mut(y, group * pp, mask, group * pp, work, |i, yg, mg| {
        let first = i * group;
        let xg = &x[first * hw..(first + yg.len() / pp.max(1)) * hw];
        with_scratch(g, &failed, |s| {
            if use_avx2 {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `use_avx2` only where the CPU has AVX2.
                unsafe {
                    avx2::max_group(g, s, xg)
                };
            } else {
                s.fill(g, xg, f32::NEG_INFINITY);
                max_slots(s);
            }
            s.read_slots(g, &s.values, yg, |v| v);
            s.read_slots(g, &s.arg, mg, |a| a as f32);
        })
    });
    first_failure(failed)
}

/// The taps a group of `slots` output slots reads, as a parallel loop's work estimate.
fn window_work(g: &PoolGeom, slots: usize) -> usize {
    slots.saturating_mul(g.kernel_h).saturating_mul(g.kernel_w)
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{PoolGeom, Scratch};
    use std::arch::x86_64::*;

    /// The planes into the layout, then [`super::max_slots`] eight slots at a time, the
    /// running maxima kept in registers over all taps (an ordered greater-than, false for NaN,
    /// chooses each lane).
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn max_group(g: &PoolGeom, s: &mut Scratch, x: &[f32]) {
        s.fill(g, x, f32::NEG_INFINITY);
        let planes = s.planes.as_ptr();
        for block in (0..s.lay.slots).step_by(8) {
            let origin = _mm256_loadu_si256(s.origins.as_ptr().add(block) as *const __m256i);
            let mut best = _mm256_set1_ps(-f32::MAX);
            let mut arg = _mm256_set1_epi32(-1);
            for &(tap, shift) in &s.taps {
                let v = _mm256_loadu_ps(planes.add(tap + block));
                let at = _mm256_add_epi32(origin, _mm256_set1_epi32(shift));
                let larger = _mm256_cmp_ps::<_CMP_GT_OQ>(v, best);
                best = _mm256_blendv_ps(best, v, larger);
                arg = _mm256_castps_si256(_mm256_blendv_ps(
                    _mm256_castsi256_ps(arg),
                    _mm256_castsi256_ps(at),
                    larger,
                ));
            }
            _mm256_storeu_ps(s.values.as_mut_ptr().add(block), best);
            _mm256_storeu_si256(s.arg.as_mut_ptr().add(block) as *mut __m256i, arg);
        }
    }
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

/// Average pooling of the group in the layout into the slots (`s.values`).
#[inline(always)]
fn ave_slots(s: &mut Scratch) {
    s.values.fill(0.0);
    for &(tap, _) in &s.taps {
        let src = &s.planes[tap..tap + s.lay.slots];
        s.values.iter_mut().zip(src).for_each(|(a, &v)| *a += v);
    }
    for (v, &d) in s.values.iter_mut().zip(&s.divisors) {
        *v = if d > 0.0 { *v / d } else { 0.0 };
    }
}

/// The average's backward pass for the group: each slot's share (`s.values`) onto its
/// window's inputs, in the layout.
#[inline(always)]
fn ave_shares(s: &mut Scratch) {
    s.planes.fill(0.0);
    // Last tap first: an input that several windows share then receives their shares in
    // output order, as in upstream's loop over outputs (a later window reaches it through an
    // earlier tap).
    for &(tap, _) in s.taps.iter().rev() {
        let dst = &mut s.planes[tap..tap + s.lay.slots];
        dst.iter_mut().zip(&s.values).for_each(|(a, &v)| *a += v);
    }
}

pub(super) fn ave_forward(par: Par<'_>, g: &PoolGeom, x: &[f32], y: &mut [f32]) -> Result<()> {
    let (hw, pp) = (g.height * g.width, g.pooled_h * g.pooled_w);
    let group = layout(g)?.planes;
    let failed = OnceLock::new();
    par.rows_mut(y, group * pp, window_work(g, group * pp), |i, yg| {
        let first = i * group;
        let xg = &x[first * hw..(first + yg.len() / pp.max(1)) * hw];
        with_scratch(g, &failed, |s| {
            with_simd(
                #[inline(always)]
                || {
                    s.fill(g, xg, 0.0);
                    ave_slots(s);
                    s.read_slots(g, &s.values, yg, |v| v);
                },
            )
        })
    });
    first_failure(failed)
}

pub(super) fn ave_backward(par: Par<'_>, g: &PoolGeom, dy: &[f32], dx: &mut [f32]) -> Result<()> {
    let (hw, pp) = (g.height * g.width, g.pooled_h * g.pooled_w);
    let group = layout(g)?.planes;
    let failed = OnceLock::new();
    par.rows_mut(dx, group * hw, window_work(g, group * pp), |i, dxg| {
        let first = i * group;
        let dyg = &dy[first * pp..(first + dxg.len() / hw.max(1)) * pp];
        with_scratch(g, &failed, |s| {
            with_simd(
                #[inline(always)]
                || {
                    // Spare slots and empty windows pass nothing back (a spare slot's taps may
                    // reach the image).
                    s.write_slots(g, dyg, |dv, d| if d > 0.0 { dv / d } else { 0.0 });
                    ave_shares(s);
                    s.read(g, dxg);
                },
            )
        })
    });
    first_failure(failed)
}

/// Pooling as first written, kept as the tests' reference: max-pooling backward with a libm
/// `fract` per mask entry, and average pooling window by window, as upstream's loops.
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

    pub(super) fn ave_forward(par: Par<'_>, g: &PoolGeom, x: &[f32], y: &mut [f32]) {
        let (hw, pp) = (g.height * g.width, g.pooled_h * g.pooled_w);
        par.rows_mut(y, pp, pp * g.kernel_h * g.kernel_w, |p, yp| {
            let xp = &x[p * hw..(p + 1) * hw];
            for ph in 0..g.pooled_h {
                for pw in 0..g.pooled_w {
                    let (hs, he, ws, we, size) = ave_window(g, ph, pw);
                    let mut sum = 0f32;
                    for h in (hs..he).filter(|_| ws < we) {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::RoundMode;

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
        // Rectangular windows, strides and padding, and a global pooling.
        for (size, kernel, stride, pad, round) in [
            ((9, 11), (3, 2), (2, 3), (1, 1), RoundMode::Ceil),
            ((10, 7), (2, 5), (1, 3), (1, 2), RoundMode::Floor),
            ((8, 13), (4, 3), (3, 2), (0, 1), RoundMode::Ceil),
            ((6, 5), (6, 5), (1, 1), (0, 0), RoundMode::Floor),
        ] {
            out.push(PoolGeom::new(2, size, kernel, stride, pad, round).unwrap());
        }
        // A stride far above the plane (only the phases a tap reads are kept).
        out.push(
            PoolGeom::new(3, (32, 32), (2, 2), (4096, 4096), (0, 0), RoundMode::Ceil).unwrap(),
        );
        // Small planes, more than a group of them (the last group partial).
        out.push(PoolGeom::new(61, (5, 5), (2, 2), (2, 2), (0, 0), RoundMode::Ceil).unwrap());
        out.push(PoolGeom::new(70, (4, 6), (3, 3), (1, 2), (1, 1), RoundMode::Floor).unwrap());
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

            let (y_ref, m_ref) = max_by_definition(&g, &x);
            for use_avx2 in [false, has_avx2()] {
                let (mut y, mut m) = (vec![0.0; n_out], vec![0.0; n_out]);
                max_forward_with(SERIAL, &g, &x, &mut y, &mut m, use_avx2).unwrap();
                assert!(
                    same_bits(&y, &y_ref) && same_bits(&m, &m_ref),
                    "max forward {g:?}, AVX2 {use_avx2}"
                );
            }

            let (mut dx, mut dx_ref) = (vec![f32::NAN; n_in], vec![0.0; n_in]);
            assert!(max_backward(SERIAL, &g, &dy, &m_ref, &mut dx));
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
    fn a_window_whose_scratch_cannot_be_sized_is_an_error() {
        let huge = u32::MAX as usize;
        let g = PoolGeom {
            planes: 1,
            height: 4,
            width: 4,
            kernel_h: huge,
            kernel_w: huge,
            stride_h: huge,
            stride_w: huge,
            pad_h: 0,
            pad_w: 0,
            pooled_h: 1,
            pooled_w: 1,
        };
        let (x, mut y, mut mask) = ([0.0; 16], [0.0], [0.0]);
        let error = max_forward(SERIAL, &g, &x, &mut y, &mut mask).unwrap_err();
        assert!(
            error.to_string().starts_with("pooling scratch: "),
            "{error}"
        );
        assert!(ave_forward(SERIAL, &g, &x, &mut y).is_err());
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

    #[test]
    fn average_pooling_gives_the_window_loops_bits() {
        for g in geoms() {
            let (n_in, n_out) = (g.in_len(), g.out_len());
            let x = values(n_in, 3);
            let (mut y, mut y_ref) = (vec![f32::NAN; n_out], vec![0.0; n_out]);
            ave_forward(SERIAL, &g, &x, &mut y).unwrap();
            reference::ave_forward(SERIAL, &g, &x, &mut y_ref);
            assert!(same_bits(&y, &y_ref), "average forward {g:?}");

            // Values that do not round exactly, so the order of each input's shares shows.
            let dy: Vec<f32> = (0..n_out).map(|i| 0.1 + (i % 7) as f32 * 0.37).collect();
            let (mut dx, mut dx_ref) = (vec![f32::NAN; n_in], vec![0.0; n_in]);
            ave_backward(SERIAL, &g, &dy, &mut dx).unwrap();
            reference::ave_backward(SERIAL, &g, &dy, &mut dx_ref);
            assert!(same_bits(&dx, &dx_ref), "average backward {g:?}");
        }
    }

    #[test]
    fn planes_without_rows_pool_to_empty_windows() {
        // Height 0 is a valid input when the padding alone covers the kernel.
        let g = PoolGeom::new(4, (0, 5), (2, 2), (1, 1), (1, 1), RoundMode::Floor).unwrap();
        let n_out = g.out_len();
        assert!(n_out > 0);
        let (mut y, mut mask) = (vec![0.0; n_out], vec![0.0; n_out]);
        max_forward(SERIAL, &g, &[], &mut y, &mut mask).unwrap();
        assert!(y.iter().all(|&v| v == -f32::MAX) && mask.iter().all(|&m| m == -1.0));
        let mut y = vec![f32::NAN; n_out];
        ave_forward(SERIAL, &g, &[], &mut y).unwrap();
        assert!(y.iter().all(|&v| v.to_bits() == 0));
        ave_backward(SERIAL, &g, &vec![1.0; n_out], &mut []).unwrap();
    }
}
