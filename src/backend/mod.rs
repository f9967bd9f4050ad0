//! The op set every device implements, and the views and geometry its ops take.
//!
//! Layers are written only with these ops; they never touch device memory themselves. The way
//! data flows: a prototxt becomes a `Net` of layers; each layer's forward and backward passes
//! call the ops of [`Backend`] on views of its blobs; the CPU backend (`cpu/`) runs each op as a
//! loop over host memory, the CUDA backend (`cuda/`) as a kernel from `kernels/*.cu` (or
//! cuBLAS for GEMM).
//!
//! # Views and in-place ops
//!
//! A backend owns memory through its associated [`Backend::Buffer`] type: host memory on the
//! CPU, a device allocation on CUDA. A generic buffer never hands out host slices; data crosses
//! with [`Backend::upload`] and [`Backend::download`]. (The CPU buffer additionally has
//! zero-copy slice accessors, see `cpu::CpuBuffer`.)
//!
//! Ops take typed views ([`view`]): a [`Slice`] (buffer, offset, length) to read, a
//! [`SliceMut`] to write, so a layer can work per image or per group inside a blob, as Caffe's
//! layers do with pointer arithmetic. Each op checks every view against its buffer and its own
//! geometry and returns [`BackendError`] otherwise.
//!
//! Inputs are borrowed shared and outputs exclusively, so Rust's borrow rules keep an op from
//! reading a range another op is writing. An op whose output may also be one of its inputs
//! (ReLU forward `x -> x`, ReLU backward `dy -> dx` on the same diff, `y = y * mask`) takes that
//! input as a [`Src`]: either a view, or [`Src::InPlace`], which means "read the op's own
//! output". Element-wise ops are defined element by element, so the in-place form gives the
//! same result as the out-of-place one.
//!
//! # Adding a backend
//!
//! A backend implements [`Backend`] with `Buffer` = its memory; each op becomes a kernel (the
//! element-wise families one kernel per op kind), GEMM goes to a BLAS. Tests run the CPU op and
//! the device op on the same inputs and compare. The RNG fills take the host [`Rng`]; a device
//! backend may draw on the host and upload, or seed a device generator from it: only the
//! distribution is specified.
//!
//! # Conventions
//!
//! * Shapes follow Caffe's row-major `(num, channels, height, width)`.
//! * "axis" ops view a blob as an [`Axis`], `outer x dim x inner`: `outer = count(0, axis)`,
//!   `dim = shape(axis)`, `inner = count(axis + 1)`, as upstream's softmax does; "per channel"
//!   ops read it as `outer x channels x inner` and apply a vector of length `channels` (a bias,
//!   a scale) to every `(outer, inner)` position.
//! * Where a `beta` multiplies an output that is also read, `beta == 0` means the output is not
//!   read (BLAS convention: NaN or garbage there does not propagate).

mod args;
mod checks;
pub mod cpu;
pub mod cuda;
mod geometry;
pub mod philox;
pub mod view;

use std::fmt;

pub use args::{
    Activation, AxisReduction, BatchNormOutput, BatchStatistics, Binary, Broadcast, Capabilities,
    Distribution, Pooling, Reduction, Scalar, Unary, UpdateRule,
};
pub(crate) use checks::{check_labels, check_probability, copy_2d_spans, gemm_spans};
pub use checks::{check_range, invalid};
pub use cpu::{CpuBackend, CpuBuffer, SharedHostMemory};
pub use geometry::{
    Block, ConvBatch, ConvGeom, Gemm, Gemv, LrnGeom, LrnWithin, PoolGeom, RoundMode, Transpose,
};
pub use view::{Axis, ConvGrads, Labels, LrnSaved, Slice, SliceMut, Src, Views};

/// The random number generator every fill takes explicitly: a net is reproducible from its seed.
///
/// PCG with 128-bit state (`rand_pcg::Pcg64Mcg`): fast, value-stable across releases.
pub type Rng = rand_pcg::Pcg64Mcg;

/// A [`Rng`] seeded from a net's or solver's `random_seed`.
pub fn rng_from_seed(seed: u64) -> Rng {
    <Rng as rand::SeedableRng>::seed_from_u64(seed)
}

/// What can go wrong in a backend op. Every variant names the op.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BackendError {
    /// A range an op would touch does not lie inside its buffer.
    #[error("{op}: {arg} range {off}..{end} lies outside its buffer of {len} elements")]
    OutOfBounds {
        op: &'static str,
        arg: &'static str,
        off: usize,
        end: usize,
        len: usize,
    },
    /// An argument (a geometry, a leading dimension, a probability) is not valid for the op.
    #[error("{op}: {message}")]
    InvalidArgument { op: &'static str, message: String },
    /// The device itself failed (allocation, launch, transfer).
    #[error("{op}: device error: {message}")]
    Device { op: &'static str, message: String },
    /// Memory (of the host or the device) for the op cannot be had.
    #[error("{op}: out of memory: {bytes} bytes cannot be allocated")]
    OutOfMemory { op: &'static str, bytes: u128 },
}

/// Result of a backend op.
pub type Result<T> = std::result::Result<T, BackendError>;

/// Ops recorded by [`Backend::begin_capture`] .. [`Backend::end_capture`] (a CUDA graph):
/// replayable any number of times on the same buffers, with the same scalar arguments.
pub trait CapturedWork: Send {
    /// Issues the recorded ops again, in order, after everything issued before.
    fn replay(&mut self) -> Result<()>;
}

/// [`BackendError::OutOfMemory`] for `len` values of `T`.
pub fn out_of_memory<T>(op: &'static str, len: usize) -> BackendError {
    BackendError::OutOfMemory {
        op,
        bytes: len as u128 * std::mem::size_of::<T>() as u128,
    }
}

/// `len` zeroed `f32`s of host memory, or [`BackendError::OutOfMemory`] where the allocator
/// cannot give them: an error to report rather than an abort. Zeroed by the allocator, as
/// `vec![0.0; len]` is, so pages cost nothing until written (a test net's diffs never are).
pub fn zeroed_host_buffer(op: &'static str, len: usize) -> Result<Vec<f32>> {
    if len == 0 {
        return Ok(Vec::new());
    }
    let layout =
        std::alloc::Layout::array::<f32>(len).map_err(|_| out_of_memory::<f32>(op, len))?;
    // SAFETY: `layout` has a non-zero size (`len > 0`).
    let values = unsafe { std::alloc::alloc_zeroed(layout) }.cast::<f32>();
    if values.is_null() {
        return Err(out_of_memory::<f32>(op, len));
    }
    // SAFETY: `values` is `len` f32s, all zero bits (0.0), from the global allocator with the
    // layout of `len` f32s: what a Vec of capacity and length `len` owns.
    Ok(unsafe { Vec::from_raw_parts(values, len, len) })
}

/// Makes room in `buffer` for `len` values in all, or returns [`BackendError::OutOfMemory`]
/// where the allocator cannot give the memory (the buffer is then left as it was).
pub fn reserve_host_buffer<T>(op: &'static str, buffer: &mut Vec<T>, len: usize) -> Result<()> {
    buffer
        .try_reserve_exact(len.saturating_sub(buffer.len()))
        .map_err(|_| out_of_memory::<T>(op, len))
}

/// Resizes `buffer` to `len` values, new ones `fill`, as [`reserve_host_buffer`] makes room.
pub fn resize_host_buffer<T: Clone>(
    op: &'static str,
    buffer: &mut Vec<T>,
    len: usize,
    fill: T,
) -> Result<()> {
    reserve_host_buffer(op, buffer, len)?;
    buffer.resize(len, fill);
    Ok(())
}

/// The numbers the CUDA kernels and the CPU backend share, from kernels/constants.h.
pub mod kernel_constants {
    include!(concat!(env!("OUT_DIR"), "/kernel_constants.rs"));
}

/// Memory a backend owns: `len` f32 elements.
pub trait DeviceBuffer: Send + Sync + fmt::Debug + 'static {
    /// Number of f32 elements.
    fn len(&self) -> usize;
    /// Whether the buffer holds no element.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The op set. Each op is one line of semantics; the CUDA backend implements each with a kernel
/// of the same name (see kernels/), the CPU backend with a loop in `cpu/`.
///
/// Buffers travel as views ([`Slice`] to read, [`SliceMut`] to write); `x`, `a`, `b` are inputs,
/// `y`, `c` outputs; `dy` is the gradient arriving from above and `dx` the gradient an op
/// produces. An element-wise op runs over its output's elements, and every input it reads is as
/// long; an input taken as [`Src`] may be [`Src::InPlace`]. An op with a geometry (an [`Axis`], a
/// [`Gemm`], a [`ConvBatch`]) needs each view to hold at least what the geometry addresses, from
/// the view's start.
pub trait Backend: Clone + Send + Sync + fmt::Debug + 'static {
    /// Memory of `len` f32 on this device.
    type Buffer: DeviceBuffer;

    /// A short name for logs ("CPU", "CUDA").
    const NAME: &'static str;

    // ---- the device -----------------------------------------------------------------------

    /// A new buffer of `len` elements, all zero.
    fn alloc(&self, len: usize) -> Result<Self::Buffer>;
    /// `dst[i] = src[i]`: host to device (`dst` as long as `src`).
    fn upload(&self, src: &[f32], dst: SliceMut<'_, Self::Buffer>) -> Result<()>;
    /// `dst[i] = src[i]`: device to host (`dst` as long as `src`).
    fn download(&self, src: Slice<'_, Self::Buffer>, dst: &mut [f32]) -> Result<()>;
    /// `y[i] = x[i]`.
    fn copy(&self, x: Slice<'_, Self::Buffer>, y: SliceMut<'_, Self::Buffer>) -> Result<()>;
    /// Waits until every op issued so far has finished (a no-op on the CPU).
    fn synchronize(&self) -> Result<()> {
        Ok(())
    }
    /// What this backend can do beyond the required ops (nothing, by default).
    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }

    /// One parameter's update rule as a single pass over its elements, in place on the gradient
    /// `g` and the history (upstream's `*_update_gpu` kernels); `step` is
    /// [`UpdateRule::step_scale`]. Only where [`Capabilities::fused_updates`]; elsewhere (the
    /// default) it is refused, and the caller composes the rule from the other ops.
    fn fused_update(
        &self,
        rule: &UpdateRule,
        step: Scalar<'_, Self::Buffer>,
        g: SliceMut<'_, Self::Buffer>,
        history: SliceMut<'_, Self::Buffer>,
        history2: Option<SliceMut<'_, Self::Buffer>>,
    ) -> Result<()> {
        let _ = (step, g, history, history2);
        Err(invalid(
            "fused_update",
            format!("this backend has no fused {} update", rule.type_name()),
        ))
    }

    /// Starts recording the ops issued from now on instead of running them, for
    /// [`Backend::end_capture`] to return as one replayable unit. `Ok(false)` (the default, and
    /// the CPU's answer) means this backend cannot record, and nothing changed.
    ///
    /// While recording, an op that needs the host (an upload or download, a reduction
    /// returning a value, a host-drawn random fill, an allocation) fails with
    /// [`BackendError::Device`] naming itself, before it changes anything; the caller then ends
    /// the recording, discards it and runs the work directly.
    fn begin_capture(&self) -> Result<bool> {
        Ok(false)
    }
    /// Ends a recording begun by [`Backend::begin_capture`] and returns it, ready to replay
    /// (`None` when none was under way). The recorded ops have not run: replay them once to
    /// get their effect.
    fn end_capture(&self) -> Result<Option<Box<dyn CapturedWork>>> {
        Ok(None)
    }

    // ---- fills --------------------------------------------------------------------------

    /// `y[i] = value`.
    fn fill(&self, value: f32, y: SliceMut<'_, Self::Buffer>) -> Result<()>;
    /// `y[i]` drawn from `dist` with the host generator `rng`.
    fn random(
        &self,
        dist: Distribution,
        rng: &mut Rng,
        y: SliceMut<'_, Self::Buffer>,
    ) -> Result<()>;
    /// `y[i] = 1` with probability `p`, else `0`, from the counter-based stream whose state is
    /// `state` ([`philox::STATE_LEN`] elements, see [`philox`]), then advances the stream: the
    /// same values on every backend, and a recorded graph draws anew on each replay; needs
    /// `0 <= p <= 1`.
    fn bernoulli_stream(
        &self,
        p: f32,
        state: SliceMut<'_, Self::Buffer>,
        y: SliceMut<'_, Self::Buffer>,
    ) -> Result<()>;

    // ---- BLAS ---------------------------------------------------------------------------

    /// `C = alpha op(A) op(B) + beta C` as `g` describes.
    fn gemm(
        &self,
        g: &Gemm,
        a: Slice<'_, Self::Buffer>,
        b: Slice<'_, Self::Buffer>,
        c: SliceMut<'_, Self::Buffer>,
    ) -> Result<()>;
    /// `y = alpha op(A) x + beta y` as `g` describes.
    fn gemv(
        &self,
        g: &Gemv,
        a: Slice<'_, Self::Buffer>,
        x: Slice<'_, Self::Buffer>,
        y: SliceMut<'_, Self::Buffer>,
    ) -> Result<()>;
    /// `y[i] = alpha x[i] + beta y[i]`; `y` is not read when `beta` is 0 (upstream's
    /// `caffe_axpy` when `beta` is 1, `caffe_cpu_axpby` otherwise).
    fn axpby(
        &self,
        alpha: Scalar<'_, Self::Buffer>,
        x: Slice<'_, Self::Buffer>,
        beta: f32,
        y: SliceMut<'_, Self::Buffer>,
    ) -> Result<()>;
    /// `y[i] = alpha x[i]` (upstream's `caffe_scal` when in place, `caffe_cpu_scale` otherwise).
    fn scale(
        &self,
        alpha: Scalar<'_, Self::Buffer>,
        x: Src<'_, Self::Buffer>,
        y: SliceMut<'_, Self::Buffer>,
    ) -> Result<()>;

    // ---- element-wise -------------------------------------------------------------------

    /// `y[i] = op(x[i])`.
    fn unary(
        &self,
        op: Unary,
        x: Src<'_, Self::Buffer>,
        y: SliceMut<'_, Self::Buffer>,
    ) -> Result<()>;
    /// `y[i] = op(a[i], b[i])`.
    fn binary(
        &self,
        op: Binary,
        a: Src<'_, Self::Buffer>,
        b: Src<'_, Self::Buffer>,
        y: SliceMut<'_, Self::Buffer>,
    ) -> Result<()>;
    /// `y = f(x)` for the activation `f`.
    fn activation_forward(
        &self,
        f: Activation,
        x: Src<'_, Self::Buffer>,
        y: SliceMut<'_, Self::Buffer>,
    ) -> Result<()>;
    /// `dx = dy f'(x)`, with `x` and `y` the forward input and output (each [`Activation`] says
    /// which it reads; in place, the input is the output).
    fn activation_backward(
        &self,
        f: Activation,
        x: Slice<'_, Self::Buffer>,
        y: Slice<'_, Self::Buffer>,
        dy: Src<'_, Self::Buffer>,
        dx: SliceMut<'_, Self::Buffer>,
    ) -> Result<()>;

    // ---- reductions ---------------------------------------------------------------------

    /// The reduction `r` of `x`, returned to the host.
    fn reduce(&self, r: Reduction<'_, Self::Buffer>, x: Slice<'_, Self::Buffer>) -> Result<f32>;
    /// `y[0] = alpha sum_i x[i]`, left on the device (a loss a CUDA graph can record): the
    /// sum accumulated in f64 as [`Reduction::Sum`]'s, times `alpha`, then rounded to f32.
    fn sum_into(
        &self,
        alpha: f32,
        x: Slice<'_, Self::Buffer>,
        y: SliceMut<'_, Self::Buffer>,
    ) -> Result<()>;
    /// The reduction `r` over the middle axis of `x` viewed as `axis`: `y` is `outer x inner`.
    fn reduce_over_axis(
        &self,
        r: AxisReduction<'_, Self::Buffer>,
        axis: Axis,
        x: Slice<'_, Self::Buffer>,
        y: SliceMut<'_, Self::Buffer>,
    ) -> Result<()>;
    /// `y[o, c, j] = op(x[o, c, j], v)` with `v` spread over `axis` as `how` says.
    fn broadcast(
        &self,
        op: Binary,
        how: Broadcast,
        axis: Axis,
        v: Slice<'_, Self::Buffer>,
        x: Src<'_, Self::Buffer>,
        y: SliceMut<'_, Self::Buffer>,
    ) -> Result<()>;
    /// `y[c] = alpha sum_{o, j} x[o, c, j] + beta y[c]` over `axis` (bias gradient, channel
    /// means).
    fn sum_per_channel(
        &self,
        axis: Axis,
        alpha: f32,
        x: Slice<'_, Self::Buffer>,
        beta: f32,
        y: SliceMut<'_, Self::Buffer>,
    ) -> Result<()>;

    // ---- normalisation ------------------------------------------------------------------

    /// BatchNorm's normalisation as one op, where [`Capabilities::fused_batch_norm`] (elsewhere
    /// refused, and the layer composes it from the ops above with the same result): per
    /// channel of `axis`, `std = sqrt(variance + eps)`, `y = (x - mean) / std`, and a copy of
    /// `y` in `x_norm` (all three in `out`). `statistics` gives the mean and variance, or has
    /// the batch's computed and written.
    fn batch_norm_forward(
        &self,
        axis: Axis,
        eps: f32,
        statistics: BatchStatistics<'_, Self::Buffer>,
        x: Src<'_, Self::Buffer>,
        out: BatchNormOutput<'_, Self::Buffer>,
    ) -> Result<()> {
        let _ = (axis, eps, statistics, x, out);
        Err(invalid(
            "batch_norm_forward",
            "this backend has no fused BatchNorm",
        ))
    }
    /// BatchNorm's input gradient with batch statistics as one op, where
    /// [`Capabilities::fused_batch_norm`]: `dx = (dy - inv_count (y sum(dy y) + sum(dy))) /
    /// std`, the sums per channel as [`Backend::sum_per_channel`] adds them, `y` the
    /// normalised input, `std` per channel.
    fn batch_norm_backward(
        &self,
        axis: Axis,
        inv_count: f32,
        y: Slice<'_, Self::Buffer>,
        std: Slice<'_, Self::Buffer>,
        dy: Src<'_, Self::Buffer>,
        dx: SliceMut<'_, Self::Buffer>,
    ) -> Result<()> {
        let _ = (axis, inv_count, y, std, dy, dx);
        Err(invalid(
            "batch_norm_backward",
            "this backend has no fused BatchNorm",
        ))
    }
    /// Scale's forward pass as one op, where [`Capabilities::fused_scale`] (elsewhere refused,
    /// and the layer composes it from [`Backend::broadcast`] and [`Backend::copy`] with the
    /// same result): per channel of `axis`, `y = x scale`, then `+ bias` where there is one
    /// (two roundings, no fused multiply-add), and a copy of `x` in `keep` where given (an
    /// in-place Scale's backward needs its input).
    fn scale_forward(
        &self,
        axis: Axis,
        scale: Slice<'_, Self::Buffer>,
        bias: Option<Slice<'_, Self::Buffer>>,
        x: Src<'_, Self::Buffer>,
        y: SliceMut<'_, Self::Buffer>,
        keep: Option<SliceMut<'_, Self::Buffer>>,
    ) -> Result<()> {
        let _ = (axis, scale, bias, x, y, keep);
        Err(invalid("scale_forward", "this backend has no fused Scale"))
    }
    /// Scale's parameter gradients in one pass over `x` and `dy`, where
    /// [`Capabilities::fused_scale`]: per channel of `axis`, `scale_diff = sum(dy x) + beta
    /// scale_diff` (`scale_diff.1` is `beta`) and `bias_diff = sum(dy) + bias_diff`, each sum as
    /// [`Backend::sum_per_channel`] adds, the products rounded to f32 first.
    fn scale_gradients(
        &self,
        axis: Axis,
        x: Slice<'_, Self::Buffer>,
        dy: Slice<'_, Self::Buffer>,
        scale_diff: Option<(SliceMut<'_, Self::Buffer>, f32)>,
        bias_diff: Option<SliceMut<'_, Self::Buffer>>,
    ) -> Result<()> {
        let _ = (axis, x, dy, scale_diff, bias_diff);
        Err(invalid(
            "scale_gradients",
            "this backend has no fused Scale",
        ))
    }

    // ---- convolution --------------------------------------------------------------------

    /// Unrolls one image into columns: `col[(c kh kw + i kw + j), (oh, ow)] =
    /// im[c, oh sh - ph + i dh, ow sw - pw + j dw]`, zero where that falls in the padding.
    fn im2col(
        &self,
        g: &ConvGeom,
        im: Slice<'_, Self::Buffer>,
        col: SliceMut<'_, Self::Buffer>,
    ) -> Result<()>;
    /// The adjoint of [`Backend::im2col`]: `im` is overwritten with the sum, over every column
    /// entry, of that entry added to the image pixel it was copied from.
    fn col2im(
        &self,
        g: &ConvGeom,
        col: Slice<'_, Self::Buffer>,
        im: SliceMut<'_, Self::Buffer>,
    ) -> Result<()>;

    // Whole-batch convolution. The defaults run upstream's loop (per image: im2col, one GEMM
    // per group) through the ops above with a column buffer as workspace
    // ([`ConvBatch::workspace_len`]); a backend may override them to spread the images over its
    // workers, keeping its own scratch ([`Capabilities::conv_scratch`]).

    /// `y[n] = W col(x[n])` per group for every image `n`, plus `bias[o]` on output channel `o`
    /// when given (upstream's `forward_cpu_gemm` then `forward_cpu_bias`).
    fn conv_forward(
        &self,
        c: &ConvBatch,
        x: Slice<'_, Self::Buffer>,
        w: Slice<'_, Self::Buffer>,
        bias: Option<Slice<'_, Self::Buffer>>,
        mut y: SliceMut<'_, Self::Buffer>,
        mut workspace: SliceMut<'_, Self::Buffer>,
    ) -> Result<()> {
        c.validate("conv_forward")?;
        let (kd, sp, go) = (c.kernel_dim(), c.out_spatial(), c.group_out());
        let gemm = Gemm::packed(Transpose::NoTrans, Transpose::NoTrans, go, sp, kd);
        for n in 0..c.num {
            let image = x.part(n * c.in_len(), c.in_len());
            let cols = if c.is_1x1() {
                image
            } else {
                self.im2col(&c.geom, image, workspace.reborrow())?;
                workspace.as_slice()
            };
            for g in 0..c.groups {
                self.gemm(
                    &gemm,
                    w.part(g * go * kd, go * kd),
                    cols.part(g * kd * sp, kd * sp),
                    y.reborrow().part(n * c.out_len() + g * go * sp, go * sp),
                )?;
            }
        }
        if let Some(bias) = bias {
            let axis = Axis::new(c.num, c.out_channels, sp);
            self.broadcast(
                Binary::Add,
                Broadcast::PerChannel,
                axis,
                bias,
                Src::InPlace,
                y,
            )?;
        }
        Ok(())
    }
    /// The convolution's gradients from `dy` (shaped as the output): `dw += sum_n dy[n]
    /// col(x[n])^T` per group when `grads.dw` is given, and `dx[n] = col2im(W^T dy[n])` when
    /// `grads.dx` is (upstream's `weight_cpu_gemm` and `backward_cpu_gemm`, image by image in
    /// that order). `x` is read only for `dw`. The images' weight gradients may be summed in
    /// another order than one by one (a backend documents its order).
    fn conv_backward(
        &self,
        c: &ConvBatch,
        x: Slice<'_, Self::Buffer>,
        w: Slice<'_, Self::Buffer>,
        dy: Slice<'_, Self::Buffer>,
        mut grads: ConvGrads<'_, Self::Buffer>,
        mut workspace: SliceMut<'_, Self::Buffer>,
    ) -> Result<()> {
        c.validate("conv_backward")?;
        let (kd, sp, go) = (c.kernel_dim(), c.out_spatial(), c.group_out());
        let weight_grad = Gemm::packed(Transpose::NoTrans, Transpose::Trans, go, kd, sp).beta(1.0);
        let data_grad = Gemm::packed(Transpose::Trans, Transpose::NoTrans, kd, sp, go);
        for n in 0..c.num {
            let dy_n = dy.part(n * c.out_len(), c.out_len());
            if let Some(dw) = grads.dw.as_mut() {
                let image = x.part(n * c.in_len(), c.in_len());
                let cols = if c.is_1x1() {
                    image
                } else {
                    self.im2col(&c.geom, image, workspace.reborrow())?;
                    workspace.as_slice()
                };
                for g in 0..c.groups {
                    self.gemm(
                        &weight_grad,
                        dy_n.part(g * go * sp, go * sp),
                        cols.part(g * kd * sp, kd * sp),
                        dw.reborrow().part(g * go * kd, go * kd),
                    )?;
                }
            }
            if let Some(dx) = grads.dx.as_mut() {
                let mut dx_n = dx.reborrow().part(n * c.in_len(), c.in_len());
                let mut cols = if c.is_1x1() {
                    dx_n.reborrow()
                } else {
                    workspace.reborrow()
                };
                for g in 0..c.groups {
                    self.gemm(
                        &data_grad,
                        w.part(g * go * kd, go * kd),
                        dy_n.part(g * go * sp, go * sp),
                        cols.reborrow().part(g * kd * sp, kd * sp),
                    )?;
                }
                if !c.is_1x1() {
                    self.col2im(&c.geom, workspace.as_slice(), dx_n)?;
                }
            }
        }
        Ok(())
    }

    // ---- pooling ------------------------------------------------------------------------

    /// Pools each plane of `x` into `y` as `p` says (max pooling writes its mask).
    fn pool_forward(
        &self,
        g: &PoolGeom,
        p: Pooling<SliceMut<'_, Self::Buffer>>,
        x: Slice<'_, Self::Buffer>,
        y: SliceMut<'_, Self::Buffer>,
    ) -> Result<()>;
    /// `dx` = 0, then each output's `dy` goes back to the inputs it pooled: to `mask`'s argmax
    /// for max pooling (mask -1 skipped), as `dy / size` to every input of the window for
    /// average pooling, with the forward pass's divisor.
    fn pool_backward(
        &self,
        g: &PoolGeom,
        p: Pooling<Slice<'_, Self::Buffer>>,
        dy: Slice<'_, Self::Buffer>,
        dx: SliceMut<'_, Self::Buffer>,
    ) -> Result<()>;

    // ---- local response normalisation ---------------------------------------------------

    /// `scale[n, c, s] = k + alpha/size sum_{|c' - c| <= size/2} x[n, c', s]^2` and
    /// `y = x scale^-beta`.
    fn lrn_across_forward(
        &self,
        g: &LrnGeom,
        x: Slice<'_, Self::Buffer>,
        scale: SliceMut<'_, Self::Buffer>,
        y: SliceMut<'_, Self::Buffer>,
    ) -> Result<()>;
    /// `dx[c] = dy[c] scale[c]^-beta - (2 alpha beta / size) x[c]
    /// sum_{|c' - c| <= size/2} dy[c'] y[c'] / scale[c']` with `x`, `y` and `scale` from the
    /// forward pass.
    fn lrn_across_backward(
        &self,
        g: &LrnGeom,
        forward: LrnSaved<'_, Self::Buffer>,
        dy: Slice<'_, Self::Buffer>,
        dx: SliceMut<'_, Self::Buffer>,
    ) -> Result<()>;
    /// WITHIN_CHANNEL LRN forward as upstream composes it (src/caffe/layers/lrn_layer.cpp: Power
    /// square, AVE pooling, Power, Eltwise product): `mean = avepool(x^2)`,
    /// `power = (1 + alpha mean)^-beta`, `y = x power`, over `window.in_len()` elements; `sq`
    /// is scratch. The default runs the composition op by op; a backend may fuse it, giving the
    /// same bits.
    fn lrn_within_forward(
        &self,
        l: &LrnWithin,
        x: Slice<'_, Self::Buffer>,
        saved: [SliceMut<'_, Self::Buffer>; 2],
        y: SliceMut<'_, Self::Buffer>,
        mut sq: SliceMut<'_, Self::Buffer>,
    ) -> Result<()> {
        l.window.validate_lrn_window("lrn_within_forward")?;
        let [mut mean, mut power] = saved;
        self.unary(Unary::Sqr, x.src(), sq.reborrow())?;
        self.pool_forward(&l.window, Pooling::Ave, sq.as_slice(), mean.reborrow())?;
        let window_power = Unary::Power {
            power: -l.beta,
            scale: l.alpha,
            shift: 1.0,
        };
        self.unary(window_power, mean.as_slice().src(), power.reborrow())?;
        self.binary(Binary::Mul, x.src(), power.as_slice().src(), y)
    }
    /// Backward of [`Backend::lrn_within_forward`] through the same composition, with `x`,
    /// `mean` and `power` (in `forward`: `x`, `y` = mean, `scale` = power) from forward:
    /// `dx = dy power + 2 x avepool^T(-beta alpha dy x power / (1 + alpha mean))`; `scratch` is
    /// two buffers of the input's size.
    fn lrn_within_backward(
        &self,
        l: &LrnWithin,
        forward: LrnSaved<'_, Self::Buffer>,
        dy: Slice<'_, Self::Buffer>,
        mut dx: SliceMut<'_, Self::Buffer>,
        scratch: [SliceMut<'_, Self::Buffer>; 2],
    ) -> Result<()> {
        l.window.validate_lrn_window("lrn_within_backward")?;
        let LrnSaved {
            x,
            y: mean,
            scale: power,
        } = forward;
        let [mut a, mut b] = scratch;
        // Product y = x p: the x path.
        self.binary(Binary::Mul, dy.src(), power.src(), dx.reborrow())?;
        // The p path: dp = dy x; through p = (1 + alpha m)^-beta, as upstream's Power layer:
        // dm = dp (-beta alpha) p / (1 + alpha m).
        self.binary(Binary::Mul, dy.src(), x.src(), a.reborrow())?;
        self.binary(Binary::Mul, Src::InPlace, power.src(), a.reborrow())?;
        let base = Unary::Power {
            power: 1.0,
            scale: l.alpha,
            shift: 1.0,
        };
        self.unary(base, mean.src(), b.reborrow())?;
        self.binary(Binary::Div, Src::InPlace, b.as_slice().src(), a.reborrow())?;
        self.scale(Scalar::Value(-l.beta * l.alpha), Src::InPlace, a.reborrow())?;
        // Through the window mean, then the square (2 x), summed into dx.
        self.pool_backward(&l.window, Pooling::Ave, a.as_slice(), b.reborrow())?;
        self.binary(Binary::Mul, Src::InPlace, x.src(), b.reborrow())?;
        self.axpby(Scalar::Value(2.0), b.as_slice(), 1.0, dx)
    }

    // ---- PReLU's backward pass (its forward is a [`Binary::PRelu`] broadcast per channel) --

    /// `dx[o, c, j] = dy ((x > 0) + slope[c] (x <= 0))` with `x` the forward input.
    fn prelu_backward(
        &self,
        axis: Axis,
        slope: Slice<'_, Self::Buffer>,
        x: Slice<'_, Self::Buffer>,
        dy: Src<'_, Self::Buffer>,
        dx: SliceMut<'_, Self::Buffer>,
    ) -> Result<()>;
    /// `dslope[c] += sum_{o, j} dy[o, c, j] x[o, c, j] (x[o, c, j] <= 0)` (PReLU's slope gradient).
    fn prelu_slope_grad(
        &self,
        axis: Axis,
        x: Slice<'_, Self::Buffer>,
        dy: Slice<'_, Self::Buffer>,
        dslope: SliceMut<'_, Self::Buffer>,
    ) -> Result<()>;

    // ---- plumbing: Concat, Slice, Crop, Eltwise MAX, ArgMax ------------------------------

    /// `y[r y_stride + j] = x[r x_stride + j]` for `r < rows`, `j < cols` as `block` says.
    fn copy_2d(
        &self,
        block: &Block,
        x: Slice<'_, Self::Buffer>,
        y: SliceMut<'_, Self::Buffer>,
    ) -> Result<()>;
    /// Where `x[i] > y[i]`: `y[i] = x[i]` and `mask[i] = index` (a running max and its argmax).
    fn running_argmax(
        &self,
        index: f32,
        x: Slice<'_, Self::Buffer>,
        y: SliceMut<'_, Self::Buffer>,
        mask: SliceMut<'_, Self::Buffer>,
    ) -> Result<()>;
    /// `y[i] = mask[i] == value ? x[i] : 0`.
    fn copy_where_eq(
        &self,
        mask: Slice<'_, Self::Buffer>,
        value: f32,
        x: Slice<'_, Self::Buffer>,
        y: SliceMut<'_, Self::Buffer>,
    ) -> Result<()>;
    /// For each `(o, j)` of `axis`, the `k <= dim` largest `x[o, c, j]` over `c`, in descending
    /// order (equal values: larger `c` first; NaN above all): `top[0][o, r, j]` holds the
    /// values, `top[1][o, r, j] = c` their indices.
    fn top_k_over_axis(
        &self,
        axis: Axis,
        k: usize,
        x: Slice<'_, Self::Buffer>,
        top: [SliceMut<'_, Self::Buffer>; 2],
    ) -> Result<()>;

    // ---- indexed by labels: SoftmaxWithLoss, Accuracy, HingeLoss ---------------------------
    // Labels are f32 values, as Caffe stores them; `l = trunc(label)` is upstream's
    // `static_cast<int>`. Positions `(o, j)` of an `outer x dim x inner` view index the
    // labels; a label equal to `ignore_label` is skipped as each op says, any other outside
    // `0..dim` is an error (and nothing is written).

    /// `y[o, j] = x[o, l, j]`, or `fill` where `l == ignore_label`.
    fn gather_at_label(
        &self,
        axis: Axis,
        x: Slice<'_, Self::Buffer>,
        labels: Labels<'_, Self::Buffer>,
        fill: f32,
        y: SliceMut<'_, Self::Buffer>,
    ) -> Result<()>;
    /// `y[o, l, j] = alpha y[o, l, j] + beta` with `(alpha, beta) = alpha_beta`; where `l == ignore_label`, `y[o, c, j] = 0` for
    /// every `c` instead.
    fn affine_at_label(
        &self,
        axis: Axis,
        labels: Labels<'_, Self::Buffer>,
        alpha_beta: (f32, f32),
        y: SliceMut<'_, Self::Buffer>,
    ) -> Result<()>;
    /// `y[o, j] = 1` when at most `top_k` classes `c` (`l` itself included: ties count against
    /// the label) have `x[o, c, j] >= x[o, l, j]`, else `0`; `0` where `l == ignore_label`.
    fn top_k_hits(
        &self,
        axis: Axis,
        top_k: usize,
        x: Slice<'_, Self::Buffer>,
        labels: Labels<'_, Self::Buffer>,
        y: SliceMut<'_, Self::Buffer>,
    ) -> Result<()>;
    /// `y[c] = sum_{i, trunc(label[i]) == c} x[i]` for `c < y.len` (the classes), over the
    /// positions of `x` (as long as the labels).
    fn sum_by_label(
        &self,
        x: Slice<'_, Self::Buffer>,
        labels: Labels<'_, Self::Buffer>,
        y: SliceMut<'_, Self::Buffer>,
    ) -> Result<()>;
}
