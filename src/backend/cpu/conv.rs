//! Whole-batch convolution: upstream's per-image im2col + GEMM, with the images spread over the
//! pool's workers instead of each GEMM being split.
//!
//! Why per image and not inside the GEMM: the zoo's convolutions are small matrices (LeNet's
//! conv2 is 50 x 64 x 500 per image), too small for a GEMM to split well over threads, while a
//! batch holds 10 to 100 independent images. Each worker runs whole images with a serial
//! im2col and a serial GEMM in its own column buffer, so every image is computed exactly as a
//! single-threaded run computes it.
//!
//! With a horizontal stride of 1 (every convolution of the zoo's small nets) all three products
//! skip the column buffer: [`direct`] reads the padded image through an offset table (forward,
//! weight gradient) and scatters column entries onto their pixels (data gradient), summing each
//! output exactly as the GEMM path does, so the bits are the same either way. Convolutions with
//! at most 16 outputs per group (DenseNet's growth-rate layers) have no GEMM twin with those
//! bits and always run direct.
//!
//! Determinism of the weight gradient: `dW += sum_n dy[n] col(x[n])^T` is a sum over images,
//! and the order of a float sum changes its value. The images are cut into
//! [`WGRAD_PARTS`] fixed contiguous parts (fewer when the batch is smaller); part 0 accumulates
//! straight into `dW`, each other part into its own zeroed partial, image by image, and the
//! partials are then added to `dW` in part order. The parts depend only on the batch size, never
//! on the thread count, so the result is the same bits on 1 or 64 threads. Upstream adds the
//! images one by one into `dW`; this differs from that only in rounding (see
//! docs/benchmarks.md for the measured effect).
//!
//! Through the GEMM (other strides, narrow products), the data gradient runs by chunks of
//! output rows whose columns fit in L2 (`W^T dy` for the
//! chunk, then its col2im into a padded image), last chunk first so that every pixel still
//! receives its terms in upstream's order: the same bits as the whole-image col2im.
//!
//! Scratch (column buffers, partial gradients) lives in the backend and only grows: after the
//! first iteration a convolution allocates no buffer, only a few pointer-sized lists per call
//! (one lock per worker's column buffer, one entry per gradient part).

use super::{direct, gemm, im2col, Par, SERIAL};
use crate::backend::{resize_host_buffer, ConvBatch, Gemm, Result, Transpose};
use rayon::prelude::*;
use std::ops::Range;
use std::sync::Mutex;

/// The weight gradient is summed in this many fixed parts of the batch (see the module docs):
/// enough for the cores this targets, few enough that the partials stay small.
pub(super) const WGRAD_PARTS: usize = 4;

/// Column-buffer elements one image needs (none for a 1x1 convolution).
fn col_len(c: &ConvBatch) -> usize {
    if c.is_1x1() {
        0
    } else {
        c.geom.col_len()
    }
}

/// Workers that share the batch: one per image at most; 1 means run serially and let the GEMM
/// use the pool itself.
fn workers(par: Par<'_>, c: &ConvBatch) -> usize {
    if par.pool.is_some() && par.threads > 1 {
        par.threads.min(c.num)
    } else {
        1
    }
}

/// Whether the images go through the direct kernels ([`direct`]). They run an image on one
/// thread, so a single image on a pool keeps the GEMM, which can split it, where that gives
/// the same bits; a convolution with few output channels has no such twin and always runs
/// direct.
fn use_direct(par: Par<'_>, c: &ConvBatch, n_workers: usize) -> bool {
    direct::applies(c)
        && (!direct::gives_gemm_bits(c) || n_workers > 1 || par.pool.is_none() || par.threads <= 1)
}

/// Grows `scratch` to at least `len` elements (never shrinks: no allocation once warm), or
/// says the memory cannot be had.
fn scratch_of<'s>(
    op: &'static str,
    scratch: &'s mut Vec<f32>,
    len: usize,
) -> Result<&'s mut [f32]> {
    if scratch.len() < len {
        resize_host_buffer(op, scratch, len, 0.0)?;
    }
    Ok(&mut scratch[..len])
}

/// Cuts `buf` into `n` slices of `len`, one per worker, each behind its own lock.
fn slots(buf: &mut [f32], len: usize, n: usize) -> Vec<Mutex<&mut [f32]>> {
    let mut out = Vec::with_capacity(n);
    let mut rest = buf;
    for _ in 0..n {
        let (slot, tail) = rest.split_at_mut(len);
        out.push(Mutex::new(slot));
        rest = tail;
    }
    out
}

/// Runs `f` with the calling worker's column buffer. Inside a task every kernel is serial, so a
/// worker never re-enters the pool while holding its slot: the lock is never contended unless
/// more workers than slots exist (then it just waits).
fn with_slot<R>(slots: &[Mutex<&mut [f32]>], f: impl FnOnce(&mut [f32]) -> R) -> R {
    let i = rayon::current_thread_index().unwrap_or(0) % slots.len();
    let mut guard = slots[i].lock().unwrap_or_else(|e| e.into_inner());
    f(&mut guard)
}

/// Column floats one chunk of output rows may take in the data gradient: 256 KiB, half a
/// core's L2 on the machines this targets. A whole image's columns (cifar's conv2: 800 KiB)
/// would go out to L3 between the GEMM writing them and col2im reading them back.
const CHUNK_COL_FLOATS: usize = 1 << 16;

/// The output rows of one image cut into chunks of about equal size whose columns fit
/// [`CHUNK_COL_FLOATS`].
fn row_chunks(c: &ConvBatch) -> impl DoubleEndedIterator<Item = Range<usize>> {
    let out_h = c.geom.out_h();
    let per_row = (c.groups * c.kernel_dim() * c.geom.out_w()).max(1);
    let chunks = out_h.div_ceil((CHUNK_COL_FLOATS / per_row).max(1)).max(1);
    let rows = out_h.div_ceil(chunks).max(1);
    (0..out_h)
        .step_by(rows)
        .map(move |r| r..(r + rows).min(out_h))
}

/// One image's GEMM operand: the image itself for a 1x1 stride-1 unpadded kernel, else its
/// im2col expansion written into `col`.
fn columns<'a>(par: Par<'_>, c: &ConvBatch, x: &'a [f32], col: &'a mut [f32]) -> &'a [f32] {
    if c.is_1x1() {
        x
    } else {
        im2col::im2col(par, &c.geom, x, col);
        col
    }
}

/// What every image of one forward call shares: the kernels' pool (serial inside a task when
/// images run side by side), the convolution, whether it runs direct, the weights and the bias.
struct Forward<'a> {
    par: Par<'a>,
    c: &'a ConvBatch,
    direct: bool,
    w: &'a [f32],
    bias: Option<&'a [f32]>,
}

impl Forward<'_> {
    /// One image's forward pass: `y = W col(x)` per group (directly, or through im2col and
    /// the GEMM in the column buffer `col`), then `+ bias`.
    fn image(&self, x: &[f32], y: &mut [f32], col: &mut [f32]) {
        let (c, w) = (self.c, self.w);
        let sp = c.out_spatial();
        if self.direct {
            direct::forward_image(c, x, w, y);
        } else {
            image_product(self.par, c, x, w, y, col);
        }
        // The bias is added while the image's output is still in cache; the same single
        // rounding as upstream's separate bias GEMM with a ones vector (one product, one add
        // per element).
        if let Some(bias) = self.bias {
            for (row, &b) in y.chunks_exact_mut(sp).zip(bias) {
                row.iter_mut().for_each(|v| *v += b);
            }
        }
    }
}

/// `y = W col(x)` per group through im2col and the GEMM: one product for the whole image (the
/// GEMM kernel blocks its sums differently for a narrower product).
fn image_product(
    par: Par<'_>,
    c: &ConvBatch,
    x: &[f32],
    w: &[f32],
    y: &mut [f32],
    col: &mut [f32],
) {
    let (kd, sp, go) = (c.kernel_dim(), c.out_spatial(), c.group_out());
    let product = Gemm::packed(Transpose::NoTrans, Transpose::NoTrans, go, sp, kd);
    let cols = columns(par, c, x, col);
    for g in 0..c.groups {
        gemm::gemm(
            par,
            &product,
            &w[g * go * kd..],
            &cols[g * kd * sp..],
            &mut y[g * go * sp..],
        );
    }
}

/// `y[n] = W col(x[n]) (+ bias)` for every image; slices are checked by the caller.
pub(super) fn forward(
    par: Par<'_>,
    scratch: &mut Vec<f32>,
    c: &ConvBatch,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
) -> Result<()> {
    let (il, ol, cl) = (c.in_len(), c.out_len(), col_len(c));
    if c.num == 0 || ol == 0 {
        return Ok(());
    }
    let n_workers = workers(par, c);
    let use_direct = use_direct(par, c, n_workers);
    let cl = if use_direct { 0 } else { cl };
    let buf = scratch_of("conv_forward", scratch, n_workers * cl)?;
    let run = Forward {
        par: if n_workers == 1 { par } else { SERIAL },
        c,
        direct: use_direct,
        w,
        bias,
    };
    if n_workers == 1 {
        for (xi, yi) in x.chunks_exact(il).zip(y.chunks_exact_mut(ol)) {
            run.image(xi, yi, buf);
        }
        return Ok(());
    }
    let slots = slots(buf, cl, n_workers);
    par.install(|| {
        x.par_chunks_exact(il)
            .zip(y.par_chunks_exact_mut(ol))
            .for_each(|(xi, yi)| with_slot(&slots, |col| run.image(xi, yi, col)))
    });
    Ok(())
}

/// The weight gradient's part `p` of `parts`: the images `lo..hi`.
fn part_range(num: usize, parts: usize, p: usize) -> (usize, usize) {
    (p * num / parts, (p + 1) * num / parts)
}

/// The gradients [`backward`] writes, each only when wanted: the weights' (added to) and the
/// input's (overwritten).
pub(super) struct Grads<'a> {
    pub dw: Option<&'a mut [f32]>,
    pub dx: Option<&'a mut [f32]>,
}

/// `dw += sum_n dy[n] col(x[n])^T` (when `dw` is given) and `dx[n] = col2im(W^T dy[n])` (when
/// `dx` is) for every image; slices are checked by the caller (`x` may be empty without `dw`).
pub(super) fn backward(
    par: Par<'_>,
    scratch: &mut Vec<f32>,
    c: &ConvBatch,
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    Grads { dw, dx }: Grads<'_>,
) -> Result<()> {
    if c.num == 0 || (dw.is_none() && dx.is_none()) {
        return Ok(());
    }
    let run = Backward::new(par, c, x, w, dy, dw.is_some(), dx.is_some());
    match dw {
        Some(dw) => run.with_weight_gradient(scratch, dw, dx),
        None => run.data_gradient_only(scratch, dx.expect("checked above")),
    }
}

/// One backward call: its inputs, and the path each gradient takes.
struct Backward<'a> {
    c: &'a ConvBatch,
    x: &'a [f32],
    w: &'a [f32],
    dy: &'a [f32],
    par: Par<'a>,
    n_workers: usize,
    /// Serial kernels inside a task when images run side by side; otherwise the kernels may use
    /// the pool themselves.
    kernel_par: Par<'a>,
    /// The weight gradient skips `dy`'s zeros, or else runs direct, or else through the columns.
    sparse_dw: bool,
    direct_dw: bool,
    direct_dx: bool,
    /// Column-buffer elements per worker: none when no product goes through the columns.
    col_len: usize,
    /// Elements of the transposed weights the direct data gradient reads: none otherwise.
    wt_len: usize,
}

impl<'a> Backward<'a> {
    const OP: &'static str = "conv_backward";

    fn new(
        par: Par<'a>,
        c: &'a ConvBatch,
        x: &'a [f32],
        w: &'a [f32],
        dy: &'a [f32],
        wants_dw: bool,
        wants_dx: bool,
    ) -> Self {
        let n_workers = workers(par, c);
        // Which products skip the column buffer (the same bits either way, see [`direct`]).
        let direct = use_direct(par, c, n_workers);
        // A weight gradient from a mostly zero `dy` skips the zeros (the same bits, but for the
        // sign of an entry that underflows to zero: see [`direct::sparse_worth_it`]'s module).
        let sparse_dw = wants_dw && direct && direct::sparse_worth_it(c, x, dy);
        let direct_dw = wants_dw && direct && !sparse_dw;
        let direct_dx = wants_dx && direct && direct::data_gradient_applies(c);
        let needs_columns = (wants_dw && !direct_dw && !sparse_dw) || (wants_dx && !direct_dx);
        Backward {
            c,
            x,
            w,
            dy,
            par,
            n_workers,
            kernel_par: if n_workers == 1 { par } else { SERIAL },
            sparse_dw,
            direct_dw,
            direct_dx,
            col_len: if needs_columns { col_len(c) } else { 0 },
            wt_len: if direct_dx { c.weight_len() } else { 0 },
        }
    }

    /// One image's data gradient, `dyi` into `dxi`; `wt` holds the transposed weights when it
    /// runs direct, `col` is a column buffer otherwise.
    fn data_gradient(&self, wt: &[f32], dyi: &[f32], dxi: &mut [f32], col: &mut [f32]) {
        if self.direct_dx {
            direct::data_gradient_image(self.c, wt, dyi, dxi);
        } else {
            self.data_gradient_by_gemm(dyi, dxi, col);
        }
    }

    /// One image's weight gradient through im2col (into `col`) and the GEMM:
    /// `dw = beta dw + dy col(x)^T` per group, one product over the whole image, as forward
    /// (chunks would add their products in turn: a change of summation order).
    fn weight_gradient_by_gemm(
        &self,
        x: &[f32],
        dy: &[f32],
        dw: &mut [f32],
        beta: f32,
        col: &mut [f32],
    ) {
        let (par, c) = (self.kernel_par, self.c);
        let (kd, sp, go) = (c.kernel_dim(), c.out_spatial(), c.group_out());
        let cols = columns(par, c, x, col);
        let product = Gemm::packed(Transpose::NoTrans, Transpose::Trans, go, kd, sp).beta(beta);
        for g in 0..c.groups {
            gemm::gemm(
                par,
                &product,
                &dy[g * go * sp..],
                &cols[g * kd * sp..],
                &mut dw[g * go * kd..],
            );
        }
    }

    /// One image's data gradient through the GEMM and col2im: `dx = col2im(W^T dy)`, the
    /// columns in `col` (written straight into `dx` for a 1x1 convolution).
    fn data_gradient_by_gemm(&self, dy: &[f32], dx: &mut [f32], col: &mut [f32]) {
        let (par, c, w) = (self.kernel_par, self.c, self.w);
        let (kd, sp, go) = (c.kernel_dim(), c.out_spatial(), c.group_out());
        // The columns of `W^T dy` for the output rows `rows`, into `cols`.
        let data_columns = |rows: Range<usize>, cols: &mut [f32]| {
            let (n0, ld) = (rows.start * c.geom.out_w(), rows.len() * c.geom.out_w());
            // `W^T` times the rows' columns of `dy`, read with its full row stride.
            let product =
                Gemm::packed(Transpose::Trans, Transpose::NoTrans, kd, ld, go).strides(kd, sp, ld);
            for g in 0..c.groups {
                gemm::gemm(
                    par,
                    &product,
                    &w[g * go * kd..],
                    &dy[g * go * sp + n0..],
                    &mut cols[g * kd * ld..],
                );
            }
        };
        let all_rows = 0..c.geom.out_h();
        if c.is_1x1() {
            data_columns(all_rows, dx);
        } else if c.geom.stride_w == 1 {
            im2col::col2im_by_rows(&c.geom, row_chunks(c), col, dx, data_columns);
        } else {
            data_columns(all_rows, col);
            im2col::col2im(par, &c.geom, col, dx);
        }
    }

    /// Data gradient only: every image on its own, as in forward.
    fn data_gradient_only(&self, scratch: &mut Vec<f32>, dx: &mut [f32]) -> Result<()> {
        let (il, ol) = (self.c.in_len(), self.c.out_len());
        let buf = scratch_of(
            Self::OP,
            scratch,
            self.wt_len + self.n_workers * self.col_len,
        )?;
        let (wt, cols) = buf.split_at_mut(self.wt_len);
        if self.direct_dx {
            direct::transpose_weights(self.c, self.w, wt);
        }
        let wt = &*wt;
        if self.n_workers == 1 {
            for (dyi, dxi) in self.dy.chunks_exact(ol).zip(dx.chunks_exact_mut(il)) {
                self.data_gradient(wt, dyi, dxi, cols);
            }
            return Ok(());
        }
        let slots = slots(cols, self.col_len, self.n_workers);
        self.par.install(|| {
            self.dy
                .par_chunks_exact(ol)
                .zip(dx.par_chunks_exact_mut(il))
                .for_each(|(dyi, dxi)| {
                    with_slot(&slots, |col| self.data_gradient(wt, dyi, dxi, col))
                })
        });
        Ok(())
    }

    /// With the weight gradient: fixed parts of the batch, each summed image by image into its
    /// own accumulator (part 0: `dw` itself), then the partials added in part order. The direct
    /// kernels accumulate in their transposed layout, part 0 starting from `dw` transposed.
    fn with_weight_gradient(
        &self,
        scratch: &mut Vec<f32>,
        dw: &mut [f32],
        dx: Option<&mut [f32]>,
    ) -> Result<()> {
        let c = self.c;
        let parts = WGRAD_PARTS.min(c.num);
        let acc_len = if self.direct_dw {
            direct::transposed_len(c)
        } else {
            c.weight_len()
        };
        let own_accumulators = if self.direct_dw { parts } else { parts - 1 };
        let columns_len = self.n_workers * self.col_len;
        let buf = scratch_of(
            Self::OP,
            scratch,
            self.wt_len + columns_len + own_accumulators * acc_len,
        )?;
        let (wt, rest) = buf.split_at_mut(self.wt_len);
        let (cols, partials) = rest.split_at_mut(columns_len);
        if self.direct_dx {
            direct::transpose_weights(c, self.w, wt);
        }
        if self.direct_dw {
            direct::transpose_in(c, dw, partials);
        }
        let mut accumulators: Vec<&mut [f32]> = Vec::with_capacity(parts);
        if !self.direct_dw {
            accumulators.push(&mut *dw);
        }
        accumulators.extend(
            partials
                .chunks_exact_mut(acc_len.max(1))
                .take(own_accumulators),
        );
        let dx_parts = dx_by_part(c, parts, dx);
        self.run_parts(parts, wt, accumulators, dx_parts, cols);
        let add_partials = |total: &mut [f32], rest: &[f32]| {
            for partial in rest.chunks_exact(acc_len.max(1)).take(parts - 1) {
                total.iter_mut().zip(partial).for_each(|(d, &s)| *d += s);
            }
        };
        if self.direct_dw {
            let (total, rest) = partials.split_at_mut(acc_len);
            add_partials(total, rest);
            direct::transpose_out(c, total, dw);
        } else {
            add_partials(dw, partials);
        }
        Ok(())
    }

    /// Runs part `p` of `parts` with `accumulators[p]` and `dx_parts[p]`, the parts side by side
    /// when there are several workers, each on a worker's column buffer.
    fn run_parts(
        &self,
        parts: usize,
        wt: &[f32],
        accumulators: Vec<&mut [f32]>,
        dx_parts: Vec<Option<&mut [f32]>>,
        cols: &mut [f32],
    ) {
        let run_part = |p: usize, acc: &mut [f32], dxp: Option<&mut [f32]>, col: &mut [f32]| {
            let (lo, hi) = part_range(self.c.num, parts, p);
            self.run_part(lo..hi, p == 0, wt, acc, dxp, col);
        };
        if self.n_workers == 1 {
            for (p, (acc, dxp)) in accumulators.into_iter().zip(dx_parts).enumerate() {
                run_part(p, acc, dxp, cols);
            }
        } else {
            let slots = slots(cols, self.col_len, self.n_workers);
            self.par.install(|| {
                accumulators
                    .into_par_iter()
                    .zip(dx_parts)
                    .enumerate()
                    .for_each(|(p, (acc, dxp))| with_slot(&slots, |col| run_part(p, acc, dxp, col)))
            });
        }
    }

    /// The images of one part: each one's weight gradient summed into `acc` (the first part
    /// onto the gradient already there, the others from zero) and, with `dxp` (the part's
    /// slice of `dx`), its data gradient.
    fn run_part(
        &self,
        images: Range<usize>,
        first_part: bool,
        wt: &[f32],
        acc: &mut [f32],
        mut dxp: Option<&mut [f32]>,
        col: &mut [f32],
    ) {
        let (c, il, ol) = (self.c, self.c.in_len(), self.c.out_len());
        let lo = images.start;
        for n in images {
            let beta = if first_part || n > lo { 1.0 } else { 0.0 };
            let dxi = dxp
                .as_deref_mut()
                .map(|d| &mut d[(n - lo) * il..(n - lo + 1) * il]);
            let (xi, dyi) = (
                &self.x[n * il..(n + 1) * il],
                &self.dy[n * ol..(n + 1) * ol],
            );
            // The two gradients are independent: computed one after the other, each by its
            // own path.
            if self.sparse_dw {
                direct::sparse_weight_gradient_image(c, xi, dyi, acc, beta != 0.0);
            } else if self.direct_dw {
                direct::weight_gradient_image(c, xi, dyi, acc, beta != 0.0);
            } else {
                self.weight_gradient_by_gemm(xi, dyi, acc, beta, col);
            }
            if let Some(dxi) = dxi {
                self.data_gradient(wt, dyi, dxi, col);
            }
        }
    }
}

/// `dx` cut into the images of each of the `parts` weight-gradient parts (all `None` without
/// `dx`).
fn dx_by_part<'d>(
    c: &ConvBatch,
    parts: usize,
    dx: Option<&'d mut [f32]>,
) -> Vec<Option<&'d mut [f32]>> {
    let mut rest = dx;
    (0..parts)
        .map(|p| {
            let (lo, hi) = part_range(c.num, parts, p);
            let (head, tail) = rest.take()?.split_at_mut((hi - lo) * c.in_len());
            rest = Some(tail);
            Some(head)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::CpuBackend;
    use crate::backend::{
        rng_from_seed, Backend, ConvBatch, ConvGeom, ConvGrads, CpuBuffer, Distribution, Views,
    };

    fn random(be: &CpuBackend, n: usize, seed: u64) -> CpuBuffer {
        let mut b = be.alloc(n).unwrap();
        let uniform = Distribution::Uniform { lo: -1.0, hi: 1.0 };
        be.random(uniform, &mut rng_from_seed(seed), b.whole_mut())
            .unwrap();
        b
    }

    /// `(num, channels, size, out_channels, groups, kernel, pad, stride, dilation)`.
    type Case = (
        usize,
        usize,
        usize,
        usize,
        usize,
        usize,
        usize,
        usize,
        usize,
    );

    const CASES: [Case; 11] = [
        (7, 3, 9, 4, 1, 3, 1, 1, 1),
        (2, 5, 15, 12, 1, 3, 1, 1, 1), // rows of 16: the data gradient's gather form, 12 outputs
        (2, 4, 7, 16, 1, 3, 2, 1, 2),  // rows of 8, dilation 2: gather form
        (3, 2, 8, 12, 1, 3, 1, 1, 1),  // DenseNet's growth-rate layers: direct with 12 outputs
        (2, 6, 8, 8, 2, 3, 1, 1, 1),   // few outputs per group, two groups
        (2, 4, 9, 18, 1, 3, 1, 1, 1),
        (5, 4, 8, 6, 2, 3, 0, 2, 1),
        (6, 4, 6, 8, 1, 1, 0, 1, 1),
        (3, 2, 10, 3, 1, 3, 2, 1, 2),
        (1, 3, 7, 5, 1, 5, 2, 1, 1),
        (9, 2, 5, 4, 2, 2, 1, 3, 1),
    ];

    fn batch(case: Case) -> ConvBatch {
        let (num, channels, size, out_channels, groups, k, pad, stride, dil) = case;
        ConvBatch {
            geom: ConvGeom {
                channels,
                height: size,
                width: size + 1,
                kernel_h: k,
                kernel_w: k,
                pad_h: pad,
                pad_w: pad,
                stride_h: stride,
                stride_w: stride,
                dilation_h: dil,
                dilation_w: dil,
            },
            num,
            groups,
            out_channels,
        }
    }

    /// The convolution written out from its definition, in f64.
    fn direct(c: &ConvBatch, x: &[f32], w: &[f32]) -> Vec<f64> {
        let g = &c.geom;
        let (oh, ow) = (g.out_h(), g.out_w());
        let cin = g.channels / c.groups;
        let mut y = vec![0.0; c.num * c.out_len()];
        for n in 0..c.num {
            for o in 0..c.out_channels {
                let grp = o / c.group_out();
                for (r, q) in (0..oh).flat_map(|r| (0..ow).map(move |q| (r, q))) {
                    let mut acc = 0.0f64;
                    for ci in 0..cin {
                        let ch = grp * cin + ci;
                        for (i, j) in
                            (0..g.kernel_h).flat_map(|i| (0..g.kernel_w).map(move |j| (i, j)))
                        {
                            let ih =
                                (r * g.stride_h + i * g.dilation_h) as isize - g.pad_h as isize;
                            let iw =
                                (q * g.stride_w + j * g.dilation_w) as isize - g.pad_w as isize;
                            if ih < 0 || iw < 0 || ih >= g.height as isize || iw >= g.width as isize
                            {
                                continue;
                            }
                            let xv = x[n * c.in_len()
                                + (ch * g.height + ih as usize) * g.width
                                + iw as usize];
                            let wv = w[((o * cin + ci) * g.kernel_h + i) * g.kernel_w + j];
                            acc += f64::from(xv) * f64::from(wv);
                        }
                    }
                    y[n * c.out_len() + (o * oh + r) * ow + q] = acc;
                }
            }
        }
        y
    }

    /// `(channels, height, width, out_channels, groups, kernel, pad, stride_h, dilation)`.
    type DirectCase = (
        usize,
        usize,
        usize,
        usize,
        usize,
        usize,
        usize,
        usize,
        usize,
    );

    /// Shapes the direct kernels take (`direct::applies`), around the GEMM's depth blocks.
    const DIRECT_CASES: [DirectCase; 10] = [
        (20, 12, 12, 50, 1, 5, 0, 1, 1), // LeNet conv2: one block, tiles of 5 and 6 channels
        (32, 16, 16, 32, 1, 5, 2, 1, 1), // cifar10 conv2: forward depth 800 (two blocks of 400 here)
        (3, 32, 32, 32, 1, 5, 2, 1, 1),  // cifar10 conv1: weight gradient over 1024 outputs
        (24, 8, 8, 20, 1, 5, 2, 1, 1),   // small product, depth 600: blocks of 512 and 88
        (2, 30, 30, 18, 1, 3, 1, 1, 1),  // small product, 900 outputs: blocks of 512 and 388
        (40, 13, 13, 48, 2, 3, 1, 1, 1), // AlexNet-like: rows of 13, two groups
        (6, 17, 20, 19, 1, 3, 2, 2, 2),  // vertical stride 2, dilation 2
        (5, 9, 40, 17, 1, 4, 0, 1, 1),   // even kernel, rows of 37
        (8, 14, 16, 24, 1, 3, 2, 1, 2),  // the data gradient's gather form, dilation 2
        (5, 10, 16, 20, 1, 2, 3, 1, 1),  // gather form, padding beyond the kernel's reach
    ];

    fn direct_batch(case: DirectCase) -> ConvBatch {
        let (channels, height, width, out_channels, groups, k, pad, stride_h, dil) = case;
        ConvBatch {
            geom: ConvGeom {
                channels,
                height,
                width,
                kernel_h: k,
                kernel_w: k,
                pad_h: pad,
                pad_w: pad,
                stride_h,
                stride_w: 1,
                dilation_h: dil,
                dilation_w: dil,
            },
            num: 3,
            groups,
            out_channels,
        }
    }

    /// The direct kernels against the im2col + GEMM paths, image by image (AVX2 and FMA only).
    #[cfg(target_arch = "x86_64")]
    mod direct_against_gemm {
        use super::super::{direct, Backward, Forward, SERIAL};
        use super::{direct_batch, random, DIRECT_CASES};
        use crate::backend::cpu::CpuBackend;
        use crate::backend::ConvBatch;

        /// One case's random operands: input, weights, output gradient and a starting `dw`.
        struct Operands {
            x: Vec<f32>,
            w: Vec<f32>,
            dy: Vec<f32>,
            dw0: Vec<f32>,
        }

        /// A serial backward call on the case's operands, for its GEMM paths.
        fn gemm_paths<'a>(
            c: &'a ConvBatch,
            Operands { x, w, dy, .. }: &'a Operands,
        ) -> Backward<'a> {
            Backward::new(SERIAL, c, x, w, dy, true, true)
        }

        fn same_bits(a: &[f32], b: &[f32]) -> bool {
            a.iter().zip(b).all(|(a, b)| a.to_bits() == b.to_bits())
        }

        #[test]
        fn direct_kernels_give_the_gemm_paths_bits() {
            if !crate::backend::cpu::simd::has_avx2_fma() {
                eprintln!("skipped: the CPU lacks AVX2 and FMA");
                return;
            }
            // Plus a rectangular kernel with unequal pads and dilations, in three groups.
            let mut rectangular = direct_batch((6, 11, 21, 60, 3, 1, 0, 1, 1));
            (rectangular.geom.kernel_h, rectangular.geom.kernel_w) = (2, 5);
            (rectangular.geom.pad_h, rectangular.geom.pad_w) = (3, 1);
            (rectangular.geom.dilation_h, rectangular.geom.dilation_w) = (2, 1);
            let batches: Vec<ConvBatch> = DIRECT_CASES
                .iter()
                .map(|&case| direct_batch(case))
                .chain([rectangular])
                .collect();
            let mut data_gradients = 0;
            for c in &batches {
                assert!(
                    direct::applies(c) && direct::gives_gemm_bits(c),
                    "{:?} is not a direct shape with the GEMM's bits",
                    c.geom
                );
                let be = CpuBackend::new(1).unwrap();
                let operands = Operands {
                    x: random(&be, c.num * c.in_len(), 1).into_vec(),
                    w: random(&be, c.weight_len(), 2).into_vec(),
                    dy: random(&be, c.num * c.out_len(), 4).into_vec(),
                    dw0: random(&be, c.weight_len(), 5).into_vec(),
                };
                check_forward(c, &operands);
                if direct::data_gradient_applies(c) {
                    data_gradients += 1;
                    check_data_gradient(c, &operands);
                }
                check_weight_gradient(c, &operands);
                check_sparse_weight_gradient(c, &operands);
            }
            assert_eq!(data_gradients, batches.len(), "every case checks dx");
        }

        fn check_forward(c: &ConvBatch, Operands { x, w, .. }: &Operands) {
            let (il, ol) = (c.in_len(), c.out_len());
            let mut col = vec![0.0; c.geom.col_len()];
            for n in 0..c.num {
                let xi = &x[n * il..(n + 1) * il];
                let mut by_gemm = vec![0.0; ol];
                let mut direct_y = vec![f32::NAN; ol];
                let forward = |direct| Forward {
                    par: SERIAL,
                    c,
                    direct,
                    w,
                    bias: None,
                };
                forward(false).image(xi, &mut by_gemm, &mut col);
                forward(true).image(xi, &mut direct_y, &mut col);
                assert!(
                    same_bits(&by_gemm, &direct_y),
                    "{:?}: forward of image {n}",
                    c.geom
                );
            }
        }

        fn check_data_gradient(c: &ConvBatch, operands: &Operands) {
            let Operands { w, dy, .. } = operands;
            let gemm = gemm_paths(c, operands);
            let (il, ol) = (c.in_len(), c.out_len());
            let mut col = vec![0.0; c.geom.col_len()];
            let mut wt = vec![f32::NAN; c.weight_len()];
            direct::transpose_weights(c, w, &mut wt);
            for n in 0..c.num {
                let dyi = &dy[n * ol..(n + 1) * ol];
                let mut by_gemm = vec![f32::NAN; il];
                let mut direct_dx = vec![f32::NAN; il];
                gemm.data_gradient_by_gemm(dyi, &mut by_gemm, &mut col);
                direct::data_gradient_image(c, &wt, dyi, &mut direct_dx);
                assert!(
                    same_bits(&by_gemm, &direct_dx),
                    "{:?}: data gradient of image {n}",
                    c.geom
                );
            }
        }

        /// Images summed onto the gradient (beta 1), and onto nothing (beta 0 first).
        fn check_weight_gradient(c: &ConvBatch, operands: &Operands) {
            let Operands { x, dy, dw0, .. } = operands;
            let gemm = gemm_paths(c, operands);
            let (il, ol) = (c.in_len(), c.out_len());
            let mut col = vec![0.0; c.geom.col_len()];
            for start_from_zero in [false, true] {
                let mut by_gemm = dw0.clone();
                let mut dw_t = vec![f32::NAN; direct::transposed_len(c)];
                direct::transpose_in(c, dw0, &mut dw_t);
                for n in 0..c.num {
                    let (xi, dyi) = (&x[n * il..(n + 1) * il], &dy[n * ol..(n + 1) * ol]);
                    let beta = if start_from_zero && n == 0 { 0.0 } else { 1.0 };
                    gemm.weight_gradient_by_gemm(xi, dyi, &mut by_gemm, beta, &mut col);
                    direct::weight_gradient_image(c, xi, dyi, &mut dw_t, beta != 0.0);
                }
                let mut direct_dw = vec![f32::NAN; c.weight_len()];
                direct::transpose_out(c, &dw_t, &mut direct_dw);
                assert!(
                    same_bits(&by_gemm, &direct_dw),
                    "{:?}: weight gradient (from zero: {start_from_zero})",
                    c.geom
                );
            }
        }

        /// A mostly zero `dy` (some zeros negative), as behind a max pooling: the sparse weight
        /// gradient skips its zeros and gives the same bits.
        fn check_sparse_weight_gradient(c: &ConvBatch, operands: &Operands) {
            let Operands { x, dy, dw0, .. } = operands;
            let gemm = gemm_paths(c, operands);
            let (il, ol) = (c.in_len(), c.out_len());
            let mut col = vec![0.0; c.geom.col_len()];
            let sparse_dy: Vec<f32> = dy
                .iter()
                .enumerate()
                .map(|(i, &v)| match i % 7 {
                    0 | 3 => v,
                    5 => -0.0,
                    _ => 0.0,
                })
                .collect();
            let case = c.geom;
            assert!(
                direct::sparse_worth_it(c, x, &sparse_dy),
                "{case:?}: sparse dy"
            );
            assert!(!direct::sparse_worth_it(c, x, dy), "{case:?}: dense dy");
            for start_from_zero in [false, true] {
                let (mut by_gemm, mut sparse) = (dw0.clone(), dw0.clone());
                for n in 0..c.num {
                    let xi = &x[n * il..(n + 1) * il];
                    let dyi = &sparse_dy[n * ol..(n + 1) * ol];
                    let beta = if start_from_zero && n == 0 { 0.0 } else { 1.0 };
                    gemm.weight_gradient_by_gemm(xi, dyi, &mut by_gemm, beta, &mut col);
                    direct::sparse_weight_gradient_image(c, xi, dyi, &mut sparse, beta != 0.0);
                }
                assert!(
                    same_bits(&by_gemm, &sparse),
                    "{case:?}: sparse weight gradient (from zero: {start_from_zero})"
                );
            }
            // A non-finite input keeps the dense kernels (it would make the skipped terms NaN).
            let mut x_inf = x.clone();
            x_inf[il / 2] = f32::INFINITY;
            assert!(!direct::sparse_worth_it(c, &x_inf, &sparse_dy));
        }
    }

    /// Convolutions with few output channels per group, which take the direct kernels as their
    /// only path: against the definition at depths of several blocks, and the sparse weight
    /// gradient against the dense one, bit for bit.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn skinny_direct_kernels_match_the_definition_and_their_sparse_twin() {
        use super::{direct, Forward, SERIAL};
        if !crate::backend::cpu::simd::has_avx2_fma() {
            eprintln!("skipped: the CPU lacks AVX2 and FMA");
            return;
        }
        // (channels, size, out_channels, groups): DenseNet-40's third block at depth 2736
        // (six blocks of 512 and less), a first convolution with 16 outputs, two groups of 5.
        for (channels, size, out_channels, groups) in
            [(304, 8, 12, 1), (3, 32, 16, 1), (8, 11, 10, 2)]
        {
            let c = batch((2, channels, size, out_channels, groups, 3, 1, 1, 1));
            assert!(direct::applies(&c) && !direct::gives_gemm_bits(&c));
            let be = CpuBackend::new(1).unwrap();
            let x = random(&be, c.num * c.in_len(), 1).into_vec();
            let w = random(&be, c.weight_len(), 2).into_vec();
            let (il, ol) = (c.in_len(), c.out_len());
            let want = direct(&c, &x, &w);
            let forward = Forward {
                par: SERIAL,
                c: &c,
                direct: true,
                w: &w,
                bias: None,
            };
            let mut y = vec![f32::NAN; c.num * ol];
            for (xi, yi) in x.chunks_exact(il).zip(y.chunks_exact_mut(ol)) {
                forward.image(xi, yi, &mut []);
            }
            for (i, (&a, &e)) in y.iter().zip(&want).enumerate() {
                let tolerance = 1e-5 * (c.kernel_dim() as f64).sqrt() * (1.0 + e.abs());
                assert!(
                    (f64::from(a) - e).abs() <= tolerance,
                    "{:?} y[{i}]: {a} vs {e}",
                    c.geom
                );
            }
            // dy as behind a max pooling: three entries in four zero.
            let dy: Vec<f32> = random(&be, c.num * ol, 4)
                .into_vec()
                .into_iter()
                .enumerate()
                .map(|(i, v)| if i % 4 == 1 { v } else { 0.0 })
                .collect();
            assert!(direct::sparse_worth_it(&c, &x, &dy));
            let mut dense = vec![0.0; direct::transposed_len(&c)];
            let mut sparse = random(&be, c.weight_len(), 5).into_vec();
            direct::transpose_in(&c, &sparse.clone(), &mut dense);
            for n in 0..c.num {
                let (xi, dyi) = (&x[n * il..(n + 1) * il], &dy[n * ol..(n + 1) * ol]);
                direct::weight_gradient_image(&c, xi, dyi, &mut dense, true);
                direct::sparse_weight_gradient_image(&c, xi, dyi, &mut sparse, true);
            }
            let mut dense_dw = vec![f32::NAN; c.weight_len()];
            direct::transpose_out(&c, &dense, &mut dense_dw);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&dense_dw), bits(&sparse), "{:?}", c.geom);
        }
    }

    type Run = (Vec<f32>, Vec<f32>, Vec<f32>);

    /// Forward with bias, then both gradients onto a non-zero `dw`, on `threads` workers.
    fn run(c: &ConvBatch, threads: usize) -> Run {
        let be = CpuBackend::new(threads).unwrap();
        let x = random(&be, c.num * c.in_len(), 1);
        let w = random(&be, c.weight_len(), 2);
        let b = random(&be, c.out_channels, 3);
        let dy = random(&be, c.num * c.out_len(), 4);
        let mut y = be.alloc(c.num * c.out_len()).unwrap();
        let mut ws = be.alloc(c.workspace_len(be.capabilities())).unwrap();
        let (x, w, b) = (x.whole(), w.whole(), b.whole());
        be.conv_forward(c, x, w, Some(b), y.whole_mut(), ws.whole_mut())
            .unwrap();
        let mut dw = random(&be, c.weight_len(), 5);
        let mut dx = be.alloc(c.num * c.in_len()).unwrap();
        let grads = ConvGrads {
            dw: Some(dw.whole_mut()),
            dx: Some(dx.whole_mut()),
        };
        be.conv_backward(c, x, w, dy.whole(), grads, ws.whole_mut())
            .unwrap();
        (y.into_vec(), dw.into_vec(), dx.into_vec())
    }

    #[test]
    fn batch_convolution_is_the_same_bits_on_any_thread_count() {
        for case in CASES {
            let c = batch(case);
            let one = run(&c, 1);
            for threads in [2, 3, 8] {
                assert!(run(&c, threads) == one, "{case:?} on {threads} threads");
            }
        }
    }

    #[test]
    fn batch_convolution_matches_its_definition() {
        for case in CASES {
            let c = batch(case);
            let be = CpuBackend::new(1).unwrap();
            let x = random(&be, c.num * c.in_len(), 1).into_vec();
            let w = random(&be, c.weight_len(), 2).into_vec();
            let b = random(&be, c.out_channels, 3).into_vec();
            let dy = random(&be, c.num * c.out_len(), 4).into_vec();
            let dw0 = random(&be, c.weight_len(), 5).into_vec();
            let (y, dw, dx) = run(&c, 2);
            let close = |a: f32, e: f64, what: &str, i: usize| {
                assert!(
                    (f64::from(a) - e).abs() <= 1e-4 * (1.0 + e.abs()),
                    "{case:?} {what}[{i}]: {a} vs {e}"
                );
            };
            let want = direct(&c, &x, &w);
            for (i, (&a, &e)) in y.iter().zip(&want).enumerate() {
                let o = i / c.out_spatial() % c.out_channels;
                close(a, e + f64::from(b[o]), "y", i);
            }
            // The gradients through the adjoint identity: <dy, conv(x')> is linear in x' and in
            // W, so perturbing one input or weight element by one reads off its gradient.
            for i in 0..x.len() {
                let mut e = vec![0.0f32; x.len()];
                e[i] = 1.0;
                let col = direct(&c, &e, &w);
                let g: f64 = col.iter().zip(&dy).map(|(&v, &d)| v * f64::from(d)).sum();
                close(dx[i], g, "dx", i);
            }
            for i in 0..w.len() {
                let mut e = vec![0.0f32; w.len()];
                e[i] = 1.0;
                let col = direct(&c, &x, &e);
                let g: f64 = col.iter().zip(&dy).map(|(&v, &d)| v * f64::from(d)).sum();
                close(dw[i], g + f64::from(dw0[i]), "dw", i);
            }
        }
    }
}
