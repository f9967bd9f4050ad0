//! The op set every device implements, and the geometry types its ops take.
//!
//! Layers are written only with these ops; they never touch device memory themselves.
//!
//! # Buffers, offsets and in-place ops
//!
//! A backend owns memory through its associated [`Backend::Buffer`] type: host memory on
//! the CPU, a device allocation on CUDA. A generic buffer never hands out host slices; data
//! crosses with [`Backend::upload`] and [`Backend::download`]. (The CPU buffer additionally
//! has zero-copy slice accessors, see `cpu::CpuBuffer`.)
//!
//! Every op addresses its buffers as `(buffer, element offset)` pairs, so a layer can work
//! per image or per group inside a blob, as Caffe's layers do with pointer arithmetic. Each op
//! checks that every range it touches lies inside its buffer and returns
//! [`BackendError::OutOfBounds`] otherwise.
//!
//! Inputs are borrowed shared and outputs exclusively, so Rust's borrow rules keep an op from
//! reading a range another op is writing. An op whose output may also be one of its inputs
//! (ReLU forward `x -> x`, ReLU backward `dy -> dx` on the same diff, `y = y * mask`) takes that
//! input as a [`Src`]: either another buffer at an offset, or [`Src::InPlace`], which means
//! "read the op's own output range". Element-wise ops are defined element by element, so the
//! in-place form gives the same result as the out-of-place one.
//!
//! # Adding a backend
//!
//! A CUDA backend implements this trait with `Buffer` = a device allocation; each op becomes a
//! kernel launch of the same name taking the same arguments (in-place: the same device pointer
//! for input and output), GEMM goes to cuBLAS. Tests run the CPU op and the device op on the
//! same inputs and compare. The RNG fills take the host [`Rng`]; a device backend may draw on
//! the host and upload, or seed a device generator from it: only the distribution is specified.
//!
//! # Conventions
//!
//! * `n` is an element count; shapes follow Caffe's row-major `(num, channels, height, width)`.
//! * "axis" ops view a blob as `(outer, dim, inner)`: `outer = count(0, axis)`,
//!   `dim = shape(axis)`, `inner = count(axis + 1)`, as upstream's softmax does.
//! * "per channel" ops view a blob as `(outer, channels, inner)` and apply a vector of length
//!   `channels` (a bias, a scale) to every `(outer, inner)` position.
//! * Where a `beta` multiplies an output that is also read, `beta == 0` means the output is not
//!   read (BLAS convention: NaN or garbage there does not propagate).

#![allow(clippy::too_many_arguments)]

pub mod cpu;
pub mod cuda;
pub mod philox;

use std::fmt;

pub use cpu::{CpuBackend, CpuBuffer};

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

/// Shorthand for an [`BackendError::InvalidArgument`].
pub fn invalid(op: &'static str, message: impl Into<String>) -> BackendError {
    BackendError::InvalidArgument {
        op,
        message: message.into(),
    }
}

/// The elements a `rows × cols` row-major matrix with leading dimension `ld` spans (its last
/// element's offset plus one; 0 when it is empty), with `ld` checked to hold a row and the span
/// to fit a `usize`. `name` names the matrix in the error.
pub(crate) fn matrix_span(
    op: &'static str,
    name: &str,
    rows: usize,
    cols: usize,
    ld: usize,
) -> Result<usize> {
    if ld < cols.max(1) {
        return Err(invalid(
            op,
            format!("leading dimension of {name} is {ld}, less than its {cols} columns"),
        ));
    }
    if rows == 0 || cols == 0 {
        return Ok(0);
    }
    (rows - 1)
        .checked_mul(ld)
        .and_then(|span| span.checked_add(cols))
        .ok_or_else(|| {
            invalid(
                op,
                format!("matrix {name} ({rows} x {cols}, ld {ld}) overflows usize"),
            )
        })
}

/// The spans of a GEMM's A, B and C (`C = op(A) op(B)`, `m × n` from `k`), checked as
/// [`matrix_span`] checks each: the one argument check both backends' `gemm` make.
pub(crate) fn gemm_spans(
    op: &'static str,
    (trans_a, trans_b): (Transpose, Transpose),
    (m, n, k): (usize, usize, usize),
    (lda, ldb, ldc): (usize, usize, usize),
) -> Result<[usize; 3]> {
    // Stored extents (rows x cols) of A and B as the row-major operands are laid out.
    let (a_rows, a_cols) = match trans_a {
        Transpose::NoTrans => (m, k),
        Transpose::Trans => (k, m),
    };
    let (b_rows, b_cols) = match trans_b {
        Transpose::NoTrans => (k, n),
        Transpose::Trans => (n, k),
    };
    Ok([
        matrix_span(op, "A", a_rows, a_cols, lda)?,
        matrix_span(op, "B", b_rows, b_cols, ldb)?,
        matrix_span(op, "C", m, n, ldc)?,
    ])
}

/// The spans of `copy_2d`'s source and destination (`rows` rows of `cols` values, rows
/// `x_stride` and `y_stride` apart), or `None` when there is nothing to copy: destination rows
/// may not overlap (`y_stride >= cols`), and neither region may overflow a `usize`.
pub(crate) fn copy_2d_spans(
    op: &'static str,
    (rows, cols): (usize, usize),
    x_stride: usize,
    y_stride: usize,
) -> Result<Option<(usize, usize)>> {
    if rows == 0 || cols == 0 {
        return Ok(None);
    }
    if rows > 1 && y_stride < cols {
        return Err(invalid(
            op,
            format!("y_stride {y_stride} is less than the {cols} columns copied per row"),
        ));
    }
    let span = |stride: usize| {
        (rows - 1)
            .checked_mul(stride)
            .and_then(|s| s.checked_add(cols))
            .ok_or_else(|| invalid(op, "the copied region overflows usize"))
    };
    Ok(Some((span(x_stride)?, span(y_stride)?)))
}

/// The numbers the CUDA kernels and the CPU backend share, from kernels/constants.h.
pub mod kernel_constants {
    include!(concat!(env!("OUT_DIR"), "/kernel_constants.rs"));
}

/// Checks that every label that is not `ignore_label` names a class in `0..dim`, before a
/// label-indexed op writes anything: the one label check of both backends (the CUDA backend
/// runs it on the labels it downloads). A label's class is upstream's `static_cast<int>`.
pub(crate) fn check_labels(
    op: &'static str,
    labels: &[f32],
    ignore_label: Option<i32>,
    dim: usize,
) -> Result<()> {
    for (position, &label) in labels.iter().enumerate() {
        let class = label as i32;
        if ignore_label == Some(class) {
            continue;
        }
        if usize::try_from(class).map_or(true, |class| class >= dim) {
            return Err(invalid(
                op,
                format!("label {label} at position {position} is outside 0..{dim}"),
            ));
        }
    }
    Ok(())
}

/// A Bernoulli fill's `p`, checked to lie in `[0, 1]`.
pub(crate) fn check_probability(op: &'static str, p: f32) -> Result<()> {
    if !(0.0..=1.0).contains(&p) {
        return Err(invalid(op, format!("needs 0 <= p <= 1, got {p}")));
    }
    Ok(())
}

/// Checks that `off..off + len` lies inside a buffer of `buf_len` elements and returns the range.
pub fn check_range(
    op: &'static str,
    arg: &'static str,
    buf_len: usize,
    off: usize,
    len: usize,
) -> Result<std::ops::Range<usize>> {
    match off.checked_add(len) {
        Some(end) if end <= buf_len => Ok(off..end),
        _ => Err(BackendError::OutOfBounds {
            op,
            arg,
            off,
            end: off.saturating_add(len),
            len: buf_len,
        }),
    }
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

/// An input of an op whose output may be that same input.
pub enum Src<'a, T: ?Sized> {
    /// Read from this buffer starting at this element offset.
    At(&'a T, usize),
    /// Read from the op's own output range: the op runs in place.
    InPlace,
}

/// A solver's update rule with its hyper-parameters: what [`Backend::fused_update`] runs. The
/// solver reads it from its parameters and composes it from the other ops where no fused form
/// exists (`solver::update_rules`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum UpdateRule {
    /// `h = lr g + momentum h; step = h`.
    Sgd { momentum: f32 },
    /// Nesterov's accelerated gradient in Sutskever's form: the step is
    /// `(1 + momentum) h_new - momentum h_old`.
    Nesterov { momentum: f32 },
    /// `h += g^2; step = lr g / (sqrt(h) + delta)`.
    AdaGrad { delta: f32 },
    /// `h = rms_decay h + (1 - rms_decay) g^2; step = lr g / (sqrt(h) + delta)`.
    RmsProp { delta: f32, rms_decay: f32 },
    /// Zeiler's AdaDelta, scaled by the learning rate as upstream does.
    AdaDelta { delta: f32, momentum: f32 },
    /// Kingma & Ba's Adam with upstream's bias correction at `t = iter + 1`.
    Adam {
        beta1: f32,
        beta2: f32,
        eps_hat: f32,
    },
}

impl UpdateRule {
    /// The rule's name as `SolverParameter.type` spells it.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Sgd { .. } => "SGD",
            Self::Nesterov { .. } => "Nesterov",
            Self::AdaGrad { .. } => "AdaGrad",
            Self::RmsProp { .. } => "RMSProp",
            Self::AdaDelta { .. } => "AdaDelta",
            Self::Adam { .. } => "Adam",
        }
    }
}

/// A scalar argument: a value fixed when the op is issued, or one element of a buffer, read when
/// the op runs. Recorded work (a CUDA graph) keeps the element's address, so writing a new value
/// there before a replay changes what the replayed op uses (the solver's learning rate).
pub enum Scalar<'a, T: ?Sized> {
    Value(f32),
    At(&'a T, usize),
}

impl<T: ?Sized> Clone for Scalar<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T: ?Sized> Copy for Scalar<'_, T> {}

impl<T: ?Sized> From<f32> for Scalar<'_, T> {
    fn from(value: f32) -> Self {
        Self::Value(value)
    }
}

impl<T: ?Sized> Clone for Src<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T: ?Sized> Copy for Src<'_, T> {}

impl<T: ?Sized> fmt::Debug for Src<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Src::At(_, off) => write!(f, "Src::At(_, {off})"),
            Src::InPlace => f.write_str("Src::InPlace"),
        }
    }
}

/// Whether a GEMM/GEMV operand is used as stored or transposed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transpose {
    /// Use the matrix as stored.
    NoTrans,
    /// Use the transpose of the stored matrix.
    Trans,
}

/// Geometry of a 2-D im2col/col2im over one image: `channels x height x width`, a
/// `kernel_h x kernel_w` window with zero padding, stride and dilation (upstream's
/// `im2col_cpu` arguments). The column buffer is
/// `(channels * kernel_h * kernel_w) x (out_h * out_w)`, row-major.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvGeom {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub kernel_h: usize,
    pub kernel_w: usize,
    pub pad_h: usize,
    pub pad_w: usize,
    pub stride_h: usize,
    pub stride_w: usize,
    pub dilation_h: usize,
    pub dilation_w: usize,
}

impl ConvGeom {
    /// Output height: `(height + 2 pad_h - (dilation_h (kernel_h - 1) + 1)) / stride_h + 1`.
    pub fn out_h(&self) -> usize {
        conv_out(
            self.height,
            self.kernel_h,
            self.pad_h,
            self.stride_h,
            self.dilation_h,
        )
    }
    /// Output width, as [`ConvGeom::out_h`].
    pub fn out_w(&self) -> usize {
        conv_out(
            self.width,
            self.kernel_w,
            self.pad_w,
            self.stride_w,
            self.dilation_w,
        )
    }
    /// Elements of one image: `channels * height * width`.
    pub fn im_len(&self) -> usize {
        self.channels * self.height * self.width
    }
    /// Elements of the column buffer: `channels * kernel_h * kernel_w * out_h * out_w`.
    pub fn col_len(&self) -> usize {
        self.channels * self.kernel_h * self.kernel_w * self.out_h() * self.out_w()
    }
    /// Checks that kernel, stride and dilation are positive and the dilated kernel fits the
    /// padded image.
    pub fn validate(&self, op: &'static str) -> Result<()> {
        if self.kernel_h == 0 || self.kernel_w == 0 {
            return Err(invalid(
                op,
                format!("kernel size must be positive: {self:?}"),
            ));
        }
        if self.stride_h == 0 || self.stride_w == 0 {
            return Err(invalid(op, format!("stride must be positive: {self:?}")));
        }
        if self.dilation_h == 0 || self.dilation_w == 0 {
            return Err(invalid(op, format!("dilation must be positive: {self:?}")));
        }
        let ext_h = self.dilation_h * (self.kernel_h - 1) + 1;
        let ext_w = self.dilation_w * (self.kernel_w - 1) + 1;
        if self.height + 2 * self.pad_h < ext_h || self.width + 2 * self.pad_w < ext_w {
            return Err(invalid(
                op,
                format!(
                    "dilated kernel {ext_h}x{ext_w} is larger than the padded image \
                     {}x{}",
                    self.height + 2 * self.pad_h,
                    self.width + 2 * self.pad_w
                ),
            ));
        }
        Ok(())
    }
}

fn conv_out(size: usize, kernel: usize, pad: usize, stride: usize, dilation: usize) -> usize {
    let ext = dilation * (kernel.max(1) - 1) + 1;
    let padded = size + 2 * pad;
    if padded < ext || stride == 0 {
        0
    } else {
        (padded - ext) / stride + 1
    }
}

/// A convolution over a batch, as a layer runs it: `num` images of `geom` (its channels are the
/// convolution's input channels) convolved with weights `(out_channels, channels / groups,
/// kernel_h, kernel_w)`, giving `num` outputs of `out_channels x out_h x out_w`. Images, weights
/// and outputs are packed row-major, image after image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvBatch {
    pub geom: ConvGeom,
    pub num: usize,
    pub groups: usize,
    pub out_channels: usize,
}

impl ConvBatch {
    /// A 1x1 kernel with stride 1 and no padding: the image is its own column matrix (upstream's
    /// `is_1x1_`, which ignores dilation: with one tap it has no effect).
    pub fn is_1x1(&self) -> bool {
        let g = &self.geom;
        g.kernel_h == 1
            && g.kernel_w == 1
            && g.stride_h == 1
            && g.stride_w == 1
            && g.pad_h == 0
            && g.pad_w == 0
    }
    /// Output positions per image: `out_h * out_w`.
    pub fn out_spatial(&self) -> usize {
        self.geom.out_h() * self.geom.out_w()
    }
    /// Columns of one group's weight matrix: `channels / groups * kernel_h * kernel_w`.
    pub fn kernel_dim(&self) -> usize {
        self.geom.channels / self.groups * self.geom.kernel_h * self.geom.kernel_w
    }
    /// Output channels per group.
    pub fn group_out(&self) -> usize {
        self.out_channels / self.groups
    }
    /// Elements of one input image.
    pub fn in_len(&self) -> usize {
        self.geom.im_len()
    }
    /// Elements of one output image.
    pub fn out_len(&self) -> usize {
        self.out_channels * self.out_spatial()
    }
    /// Elements of the weights: `out_channels * kernel_dim`.
    pub fn weight_len(&self) -> usize {
        self.out_channels * self.kernel_dim()
    }
    /// Floating-point operations of the batch's forward GEMMs (two per multiply-add); each of
    /// the two backward products (weights, data) costs as much.
    pub fn forward_flops(&self) -> u64 {
        2 * (self.out_channels * self.kernel_dim() * self.out_spatial()) as u64 * self.num as u64
    }
    /// Checks the geometry and that `groups` divides both channel counts.
    pub fn validate(&self, op: &'static str) -> Result<()> {
        self.geom.validate(op)?;
        if self.groups == 0
            || !self.geom.channels.is_multiple_of(self.groups)
            || !self.out_channels.is_multiple_of(self.groups)
        {
            return Err(invalid(
                op,
                format!(
                    "{} groups must divide {} input and {} output channels",
                    self.groups, self.geom.channels, self.out_channels
                ),
            ));
        }
        Ok(())
    }
}

/// How pooling rounds its output size (upstream `PoolingParameter.round_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RoundMode {
    /// `ceil((size + 2 pad - kernel) / stride) + 1`, Caffe's default.
    #[default]
    Ceil,
    /// `floor((size + 2 pad - kernel) / stride) + 1`.
    Floor,
}

/// Geometry of 2-D pooling over `planes` (= num x channels) independent planes of
/// `height x width`, producing `pooled_h x pooled_w` per plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolGeom {
    pub planes: usize,
    pub height: usize,
    pub width: usize,
    pub kernel_h: usize,
    pub kernel_w: usize,
    pub stride_h: usize,
    pub stride_w: usize,
    pub pad_h: usize,
    pub pad_w: usize,
    pub pooled_h: usize,
    pub pooled_w: usize,
}

impl PoolGeom {
    /// Builds the geometry, computing the pooled size with upstream's rule
    /// (src/caffe/layers/pooling_layer.cpp, `Reshape`): round per `round`, then, when there is
    /// padding, drop the last window if it would start in the padding rather than the image.
    /// Padding must be smaller than the kernel, as upstream checks.
    pub fn new(
        planes: usize,
        (height, width): (usize, usize),
        (kernel_h, kernel_w): (usize, usize),
        (stride_h, stride_w): (usize, usize),
        (pad_h, pad_w): (usize, usize),
        round: RoundMode,
    ) -> Result<Self> {
        const OP: &str = "PoolGeom::new";
        if kernel_h == 0 || kernel_w == 0 || stride_h == 0 || stride_w == 0 {
            return Err(invalid(
                OP,
                format!(
                    "kernel ({kernel_h}x{kernel_w}) and stride ({stride_h}x{stride_w}) must be \
                     positive"
                ),
            ));
        }
        if pad_h >= kernel_h || pad_w >= kernel_w {
            return Err(invalid(
                OP,
                format!(
                    "pad ({pad_h}x{pad_w}) must be smaller than kernel ({kernel_h}x{kernel_w})"
                ),
            ));
        }
        if height + 2 * pad_h < kernel_h || width + 2 * pad_w < kernel_w {
            return Err(invalid(
                OP,
                format!(
                    "kernel {kernel_h}x{kernel_w} is larger than the padded input {}x{}",
                    height + 2 * pad_h,
                    width + 2 * pad_w
                ),
            ));
        }
        let pooled = |size: usize, kernel: usize, stride: usize, pad: usize| {
            let span = size + 2 * pad - kernel;
            let mut out = match round {
                RoundMode::Ceil => span.div_ceil(stride) + 1,
                RoundMode::Floor => span / stride + 1,
            };
            if pad > 0 && (out - 1) * stride >= size + pad {
                out -= 1;
            }
            out
        };
        Ok(Self {
            planes,
            height,
            width,
            kernel_h,
            kernel_w,
            stride_h,
            stride_w,
            pad_h,
            pad_w,
            pooled_h: pooled(height, kernel_h, stride_h, pad_h),
            pooled_w: pooled(width, kernel_w, stride_w, pad_w),
        })
    }

    /// Elements of the input: `planes * height * width`.
    pub fn in_len(&self) -> usize {
        self.planes * self.height * self.width
    }
    /// Elements of the output (and of the max-pooling mask): `planes * pooled_h * pooled_w`.
    pub fn out_len(&self) -> usize {
        self.planes * self.pooled_h * self.pooled_w
    }
    /// The window of WITHIN_CHANNEL LRN over `planes` planes of `height x width`: `size x size`,
    /// stride 1, padded by `(size - 1) / 2`, so every window is whole in the padded plane (each
    /// divisor is `size^2`) and the output has the input's size.
    pub fn lrn_window(planes: usize, height: usize, width: usize, size: usize) -> Self {
        let pad = size.saturating_sub(1) / 2;
        PoolGeom {
            planes,
            height,
            width,
            kernel_h: size,
            kernel_w: size,
            stride_h: 1,
            stride_w: 1,
            pad_h: pad,
            pad_w: pad,
            pooled_h: height,
            pooled_w: width,
        }
    }
    /// Checks `self` is a [`PoolGeom::lrn_window`] with an odd size.
    pub fn validate_lrn_window(&self, op: &'static str) -> Result<()> {
        let expected = Self::lrn_window(self.planes, self.height, self.width, self.kernel_h);
        if *self != expected || self.kernel_h.is_multiple_of(2) {
            return Err(invalid(
                op,
                format!("not an odd WITHIN_CHANNEL LRN window: {self:?}"),
            ));
        }
        Ok(())
    }
    /// Checks kernel and stride are positive and a plane's indices fit an f32 mask exactly.
    pub fn validate(&self, op: &'static str) -> Result<()> {
        if self.kernel_h == 0 || self.kernel_w == 0 || self.stride_h == 0 || self.stride_w == 0 {
            return Err(invalid(
                op,
                format!("kernel and stride must be positive: {self:?}"),
            ));
        }
        if self.height * self.width > (1 << 24) {
            return Err(invalid(
                op,
                format!(
                    "a {}x{} plane is too large for an f32 argmax mask",
                    self.height, self.width
                ),
            ));
        }
        Ok(())
    }
}

/// Geometry and parameters of local response normalisation across channels over `num`
/// images of `channels x spatial` (spatial = height x width), upstream's `LRNParameter` with
/// `norm_region: ACROSS_CHANNELS`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LrnGeom {
    pub num: usize,
    pub channels: usize,
    pub spatial: usize,
    /// `local_size`: odd window length across channels.
    pub size: usize,
    pub alpha: f32,
    pub beta: f32,
    pub k: f32,
}

impl LrnGeom {
    /// Elements of the input, scale and output: `num * channels * spatial`.
    pub fn len(&self) -> usize {
        self.num * self.channels * self.spatial
    }
    /// Whether there is no element.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Checks the window length is odd, as upstream requires.
    pub fn validate(&self, op: &'static str) -> Result<()> {
        if self.size % 2 != 1 {
            return Err(invalid(
                op,
                format!(
                    "LRN only supports odd values for local_size, got {}",
                    self.size
                ),
            ));
        }
        Ok(())
    }
}

/// The op set. Each op is one line of semantics; a device backend implements each with a
/// kernel of the same name and arguments.
///
/// Buffer arguments come as `(buffer, offset)`; `x`, `a`, `b` are inputs, `y`, `c` outputs; `dy`
/// is the gradient arriving from above and `dx` the gradient an op produces. Inputs taken as
/// [`Src`] may be [`Src::InPlace`]. Element-wise formulas are written for one index `i` in
/// `0..n`.
pub trait Backend: Clone + Send + Sync + fmt::Debug + 'static {
    /// Memory of `len` f32 on this device.
    type Buffer: DeviceBuffer;

    /// A short name for logs ("CPU", "CUDA").
    fn name(&self) -> &'static str;

    // ---- memory -------------------------------------------------------------------------

    /// A new buffer of `len` elements, all zero.
    fn alloc(&self, len: usize) -> Result<Self::Buffer>;
    /// `dst[dst_off + i] = src[i]` for `i < src.len()`: host to device.
    fn upload(&self, src: &[f32], dst: &mut Self::Buffer, dst_off: usize) -> Result<()>;
    /// `dst[i] = src[src_off + i]` for `i < dst.len()`: device to host.
    fn download(&self, src: &Self::Buffer, src_off: usize, dst: &mut [f32]) -> Result<()>;
    /// `y[i] = x[i]`.
    fn copy(
        &self,
        n: usize,
        x: &Self::Buffer,
        x_off: usize,
        y: &mut Self::Buffer,
        y_off: usize,
    ) -> Result<()>;
    /// Waits until every op issued so far has finished (a no-op on the CPU).
    fn synchronize(&self) -> Result<()> {
        Ok(())
    }

    // ---- solver updates ---------------------------------------------------------------------

    /// Whether [`Backend::fused_update`] runs every [`UpdateRule`]. The solver then allocates
    /// no scratch for the composed rules; the CPU backend composes them, as upstream's CPU path.
    fn has_fused_updates(&self) -> bool {
        false
    }

    /// One parameter's update rule as a single pass over its `n` elements, in place on the
    /// gradient `g` and the history (upstream's `*_update_gpu` kernels); `step` is
    /// [`UpdateRule::step_scale`]. Only where [`Backend::has_fused_updates`]; elsewhere (the
    /// default) it is refused, and the caller composes the rule from the ops above.
    fn fused_update(
        &self,
        rule: &UpdateRule,
        n: usize,
        step: Scalar<'_, Self::Buffer>,
        g: &mut Self::Buffer,
        history: &mut Self::Buffer,
        history2: Option<&mut Self::Buffer>,
    ) -> Result<()> {
        let _ = (n, step, g, history, history2);
        Err(invalid(
            "fused_update",
            format!("this backend has no fused {} update", rule.type_name()),
        ))
    }

    // ---- recording work for replay (CUDA graphs) ------------------------------------------

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
    /// Whether [`Backend::begin_capture`] can record on this backend (false by default).
    fn can_capture(&self) -> bool {
        false
    }
    /// Ends a recording begun by [`Backend::begin_capture`] and returns it, ready to replay
    /// (`None` when none was under way). The recorded ops have not run: replay them once to
    /// get their effect.
    fn end_capture(&self) -> Result<Option<Box<dyn CapturedWork>>> {
        Ok(None)
    }

    // ---- fills --------------------------------------------------------------------------

    /// `y[i] = value`.
    fn set(&self, n: usize, value: f32, y: &mut Self::Buffer, y_off: usize) -> Result<()>;
    /// `y[i] += value`.
    fn add_scalar(&self, n: usize, value: f32, y: &mut Self::Buffer, y_off: usize) -> Result<()>;
    /// `y[i]` uniform on `[lo, hi]` (as upstream's `caffe_rng_uniform`); needs `lo <= hi`.
    fn rng_uniform(
        &self,
        n: usize,
        lo: f32,
        hi: f32,
        rng: &mut Rng,
        y: &mut Self::Buffer,
        y_off: usize,
    ) -> Result<()>;
    /// `y[i] ~ N(mean, std^2)`; needs `std >= 0`.
    fn rng_gaussian(
        &self,
        n: usize,
        mean: f32,
        std: f32,
        rng: &mut Rng,
        y: &mut Self::Buffer,
        y_off: usize,
    ) -> Result<()>;
    /// `y[i] = 1` with probability `p`, else `0`, from the counter-based stream whose state is
    /// `state[state_off..][..philox::STATE_LEN]` (see [`philox`]), then advances the stream:
    /// the same values on every backend, and a recorded graph draws anew on each replay;
    /// needs `0 <= p <= 1`.
    fn rng_bernoulli_stream(
        &self,
        n: usize,
        p: f32,
        state: &mut Self::Buffer,
        state_off: usize,
        y: &mut Self::Buffer,
        y_off: usize,
    ) -> Result<()>;
    /// `y[i] = 1` with probability `p`, else `0`; needs `0 <= p <= 1`.
    fn rng_bernoulli(
        &self,
        n: usize,
        p: f32,
        rng: &mut Rng,
        y: &mut Self::Buffer,
        y_off: usize,
    ) -> Result<()>;

    // ---- BLAS ---------------------------------------------------------------------------

    /// `C = alpha op(A) op(B) + beta C`, row-major: `op(A)` is `m x k`, `op(B)` is `k x n`,
    /// `C` is `m x n`; `lda`, `ldb`, `ldc` are the row strides of the matrices as stored
    /// (`A` stored `m x k` when `NoTrans`, `k x m` when `Trans`; likewise `B`).
    fn gemm(
        &self,
        trans_a: Transpose,
        trans_b: Transpose,
        m: usize,
        n: usize,
        k: usize,
        alpha: f32,
        a: &Self::Buffer,
        a_off: usize,
        lda: usize,
        b: &Self::Buffer,
        b_off: usize,
        ldb: usize,
        beta: f32,
        c: &mut Self::Buffer,
        c_off: usize,
        ldc: usize,
    ) -> Result<()>;
    /// [`Backend::gemm`] with packed operands (`lda`, `ldb`, `ldc` implied as upstream's
    /// `caffe_cpu_gemm`): the common case for convolution and InnerProduct.
    fn gemm_packed(
        &self,
        trans_a: Transpose,
        trans_b: Transpose,
        m: usize,
        n: usize,
        k: usize,
        alpha: f32,
        a: &Self::Buffer,
        a_off: usize,
        b: &Self::Buffer,
        b_off: usize,
        beta: f32,
        c: &mut Self::Buffer,
        c_off: usize,
    ) -> Result<()> {
        let lda = if trans_a == Transpose::NoTrans { k } else { m };
        let ldb = if trans_b == Transpose::NoTrans { n } else { k };
        self.gemm(
            trans_a, trans_b, m, n, k, alpha, a, a_off, lda, b, b_off, ldb, beta, c, c_off, n,
        )
    }
    /// `y = alpha op(A) x + beta y` with `A` stored packed `m x n` row-major: `NoTrans` gives
    /// `y` of length `m` from `x` of length `n`, `Trans` gives `y` of length `n` from `m`.
    fn gemv(
        &self,
        trans_a: Transpose,
        m: usize,
        n: usize,
        alpha: f32,
        a: &Self::Buffer,
        a_off: usize,
        x: &Self::Buffer,
        x_off: usize,
        beta: f32,
        y: &mut Self::Buffer,
        y_off: usize,
    ) -> Result<()>;
    /// `y[i] += alpha x[i]`.
    fn axpy(
        &self,
        n: usize,
        alpha: f32,
        x: &Self::Buffer,
        x_off: usize,
        y: &mut Self::Buffer,
        y_off: usize,
    ) -> Result<()>;
    /// `y[i] = alpha x[i] + beta y[i]`; `y` is not read when `beta` is 0.
    fn axpby<'a>(
        &self,
        n: usize,
        alpha: impl Into<Scalar<'a, Self::Buffer>>,
        x: &Self::Buffer,
        x_off: usize,
        beta: f32,
        y: &mut Self::Buffer,
        y_off: usize,
    ) -> Result<()>;
    /// `y[i] = alpha x[i]` (upstream's `caffe_scal` when in place, `caffe_cpu_scale` otherwise).
    fn scale<'a>(
        &self,
        n: usize,
        alpha: impl Into<Scalar<'a, Self::Buffer>>,
        x: Src<'_, Self::Buffer>,
        y: &mut Self::Buffer,
        y_off: usize,
    ) -> Result<()>;

    // ---- element-wise binary ------------------------------------------------------------

    /// `y[i] = a[i] + b[i]`.
    fn add(
        &self,
        n: usize,
        a: Src<'_, Self::Buffer>,
        b: Src<'_, Self::Buffer>,
        y: &mut Self::Buffer,
        y_off: usize,
    ) -> Result<()>;
    /// `y[i] = a[i] - b[i]`.
    fn sub(
        &self,
        n: usize,
        a: Src<'_, Self::Buffer>,
        b: Src<'_, Self::Buffer>,
        y: &mut Self::Buffer,
        y_off: usize,
    ) -> Result<()>;
    /// `y[i] = a[i] * b[i]`.
    fn mul(
        &self,
        n: usize,
        a: Src<'_, Self::Buffer>,
        b: Src<'_, Self::Buffer>,
        y: &mut Self::Buffer,
        y_off: usize,
    ) -> Result<()>;
    /// `y[i] = a[i] / b[i]`.
    fn div(
        &self,
        n: usize,
        a: Src<'_, Self::Buffer>,
        b: Src<'_, Self::Buffer>,
        y: &mut Self::Buffer,
        y_off: usize,
    ) -> Result<()>;
    /// `y[i] = max(a[i], b[i])` (Eltwise MAX).
    fn max(
        &self,
        n: usize,
        a: Src<'_, Self::Buffer>,
        b: Src<'_, Self::Buffer>,
        y: &mut Self::Buffer,
        y_off: usize,
    ) -> Result<()>;

    // ---- element-wise unary -------------------------------------------------------------

    /// `y[i] = x[i]^p`.
    fn powx(
        &self,
        n: usize,
        x: Src<'_, Self::Buffer>,
        p: f32,
        y: &mut Self::Buffer,
        y_off: usize,
    ) -> Result<()>;
    /// `y[i] = (shift + scale x[i])^power` (upstream's PowerLayer).
    fn power(
        &self,
        n: usize,
        x: Src<'_, Self::Buffer>,
        power: f32,
        scale: f32,
        shift: f32,
        y: &mut Self::Buffer,
        y_off: usize,
    ) -> Result<()>;
    /// `y[i] = exp(x[i])`.
    fn exp(
        &self,
        n: usize,
        x: Src<'_, Self::Buffer>,
        y: &mut Self::Buffer,
        y_off: usize,
    ) -> Result<()>;
    /// `y[i] = ln(x[i])`.
    fn log(
        &self,
        n: usize,
        x: Src<'_, Self::Buffer>,
        y: &mut Self::Buffer,
        y_off: usize,
    ) -> Result<()>;
    /// `y[i] = |x[i]|`.
    fn abs(
        &self,
        n: usize,
        x: Src<'_, Self::Buffer>,
        y: &mut Self::Buffer,
        y_off: usize,
    ) -> Result<()>;
    /// `y[i] = x[i]^2`.
    fn sqr(
        &self,
        n: usize,
        x: Src<'_, Self::Buffer>,
        y: &mut Self::Buffer,
        y_off: usize,
    ) -> Result<()>;
    /// `y[i] = sqrt(x[i])`.
    fn sqrt(
        &self,
        n: usize,
        x: Src<'_, Self::Buffer>,
        y: &mut Self::Buffer,
        y_off: usize,
    ) -> Result<()>;
    /// `y[i] = 1, 0 or -1` as `x[i] > 0, == 0, < 0` (0 for NaN), upstream's `caffe_sign`.
    fn sign(
        &self,
        n: usize,
        x: Src<'_, Self::Buffer>,
        y: &mut Self::Buffer,
        y_off: usize,
    ) -> Result<()>;

    // ---- activations --------------------------------------------------------------------

    /// `y[i] = max(x[i], 0) + slope min(x[i], 0)`.
    fn relu_forward(
        &self,
        n: usize,
        slope: f32,
        x: Src<'_, Self::Buffer>,
        y: &mut Self::Buffer,
        y_off: usize,
    ) -> Result<()>;
    /// `dx[i] = dy[i] (x[i] > 0 ? 1 : slope)`; `x` is the forward input (or output, in place).
    fn relu_backward(
        &self,
        n: usize,
        slope: f32,
        x: &Self::Buffer,
        x_off: usize,
        dy: Src<'_, Self::Buffer>,
        dx: &mut Self::Buffer,
        dx_off: usize,
    ) -> Result<()>;
    /// `y[i] = 1 / (1 + exp(-x[i]))`, computed as `0.5 tanh(0.5 x) + 0.5`.
    fn sigmoid_forward(
        &self,
        n: usize,
        x: Src<'_, Self::Buffer>,
        y: &mut Self::Buffer,
        y_off: usize,
    ) -> Result<()>;
    /// `dx[i] = dy[i] y[i] (1 - y[i])` with `y` the forward output.
    fn sigmoid_backward(
        &self,
        n: usize,
        y: &Self::Buffer,
        y_off: usize,
        dy: Src<'_, Self::Buffer>,
        dx: &mut Self::Buffer,
        dx_off: usize,
    ) -> Result<()>;
    /// `y[i] = tanh(x[i])`.
    fn tanh_forward(
        &self,
        n: usize,
        x: Src<'_, Self::Buffer>,
        y: &mut Self::Buffer,
        y_off: usize,
    ) -> Result<()>;
    /// `dx[i] = dy[i] (1 - y[i]^2)` with `y` the forward output.
    fn tanh_backward(
        &self,
        n: usize,
        y: &Self::Buffer,
        y_off: usize,
        dy: Src<'_, Self::Buffer>,
        dx: &mut Self::Buffer,
        dx_off: usize,
    ) -> Result<()>;
    /// `y[i] = max(x[i], 0) + alpha (exp(min(x[i], 0)) - 1)`.
    fn elu_forward(
        &self,
        n: usize,
        alpha: f32,
        x: Src<'_, Self::Buffer>,
        y: &mut Self::Buffer,
        y_off: usize,
    ) -> Result<()>;
    /// `dx[i] = dy[i] (x[i] > 0 ? 1 : alpha + y[i])` with `x`, `y` the forward input and output.
    fn elu_backward(
        &self,
        n: usize,
        alpha: f32,
        x: &Self::Buffer,
        x_off: usize,
        y: &Self::Buffer,
        y_off: usize,
        dy: Src<'_, Self::Buffer>,
        dx: &mut Self::Buffer,
        dx_off: usize,
    ) -> Result<()>;
    /// `y[i] = x > 0 ? x + ln(1 + exp(-x)) : ln(1 + exp(x))` (softplus).
    fn bnll_forward(
        &self,
        n: usize,
        x: Src<'_, Self::Buffer>,
        y: &mut Self::Buffer,
        y_off: usize,
    ) -> Result<()>;
    /// `dx[i] = dy[i] e / (e + 1)` with `e = exp(min(x[i], 50))`, `x` the forward input.
    fn bnll_backward(
        &self,
        n: usize,
        x: &Self::Buffer,
        x_off: usize,
        dy: Src<'_, Self::Buffer>,
        dx: &mut Self::Buffer,
        dx_off: usize,
    ) -> Result<()>;

    // ---- reductions ---------------------------------------------------------------------

    /// `sum_i x[i]`.
    fn sum(&self, n: usize, x: &Self::Buffer, x_off: usize) -> Result<f32>;
    /// `y[y_off] = alpha sum_i x[i]`, left on the device (a loss a CUDA graph can record): the
    /// sum accumulated in f64 as [`Backend::sum`]'s, times `alpha`, then rounded to f32.
    fn sum_into(
        &self,
        n: usize,
        alpha: f32,
        x: &Self::Buffer,
        x_off: usize,
        y: &mut Self::Buffer,
        y_off: usize,
    ) -> Result<()>;
    /// `sum_i |x[i]|`.
    fn asum(&self, n: usize, x: &Self::Buffer, x_off: usize) -> Result<f32>;
    /// `sum_i x[i]^2`.
    fn sumsq(&self, n: usize, x: &Self::Buffer, x_off: usize) -> Result<f32>;
    /// `sum_i x[i] y[i]`.
    fn dot(
        &self,
        n: usize,
        x: &Self::Buffer,
        x_off: usize,
        y: &Self::Buffer,
        y_off: usize,
    ) -> Result<f32>;

    // ---- along an axis: (outer, dim, inner) views -----------------------------------------

    /// `y[o, j] = max_c x[o, c, j]` over `c < dim`.
    fn max_over_axis(
        &self,
        outer: usize,
        dim: usize,
        inner: usize,
        x: &Self::Buffer,
        x_off: usize,
        y: &mut Self::Buffer,
        y_off: usize,
    ) -> Result<()>;
    /// `y[o, j] = sum_c x[o, c, j]` over `c < dim`.
    fn sum_over_axis(
        &self,
        outer: usize,
        dim: usize,
        inner: usize,
        x: &Self::Buffer,
        x_off: usize,
        y: &mut Self::Buffer,
        y_off: usize,
    ) -> Result<()>;
    /// `y[o, j] = sum_c a[o, c, j] b[o, c, j]` over `c < dim`.
    fn dot_over_axis(
        &self,
        outer: usize,
        dim: usize,
        inner: usize,
        a: &Self::Buffer,
        a_off: usize,
        b: &Self::Buffer,
        b_off: usize,
        y: &mut Self::Buffer,
        y_off: usize,
    ) -> Result<()>;
    /// `y[o, c, j] -= v[o, j]`.
    fn sub_along_axis(
        &self,
        outer: usize,
        dim: usize,
        inner: usize,
        v: &Self::Buffer,
        v_off: usize,
        y: &mut Self::Buffer,
        y_off: usize,
    ) -> Result<()>;
    /// `y[o, c, j] /= v[o, j]`.
    fn div_along_axis(
        &self,
        outer: usize,
        dim: usize,
        inner: usize,
        v: &Self::Buffer,
        v_off: usize,
        y: &mut Self::Buffer,
        y_off: usize,
    ) -> Result<()>;

    // ---- per channel: (outer, channels, inner) views ---------------------------------------

    /// `y[o, c, j] += v[c]` (bias).
    fn add_per_channel(
        &self,
        outer: usize,
        channels: usize,
        inner: usize,
        v: &Self::Buffer,
        v_off: usize,
        y: &mut Self::Buffer,
        y_off: usize,
    ) -> Result<()>;
    /// `y[o, c, j] = x[o, c, j] v[c]` (scale).
    fn mul_per_channel(
        &self,
        outer: usize,
        channels: usize,
        inner: usize,
        v: &Self::Buffer,
        v_off: usize,
        x: Src<'_, Self::Buffer>,
        y: &mut Self::Buffer,
        y_off: usize,
    ) -> Result<()>;
    /// `y[c] = alpha sum_{o, j} x[o, c, j] + beta y[c]` (bias gradient, channel means).
    fn sum_per_channel(
        &self,
        outer: usize,
        channels: usize,
        inner: usize,
        alpha: f32,
        x: &Self::Buffer,
        x_off: usize,
        beta: f32,
        y: &mut Self::Buffer,
        y_off: usize,
    ) -> Result<()>;

    // ---- convolution --------------------------------------------------------------------

    /// Unrolls one image into columns: `col[(c kh kw + i kw + j), (oh, ow)] =
    /// im[c, oh sh - ph + i dh, ow sw - pw + j dw]`, zero where that falls in the padding.
    fn im2col(
        &self,
        g: &ConvGeom,
        im: &Self::Buffer,
        im_off: usize,
        col: &mut Self::Buffer,
        col_off: usize,
    ) -> Result<()>;
    /// The adjoint of [`Backend::im2col`]: `im` is overwritten with the sum, over every column
    /// entry, of that entry added to the image pixel it was copied from.
    fn col2im(
        &self,
        g: &ConvGeom,
        col: &Self::Buffer,
        col_off: usize,
        im: &mut Self::Buffer,
        im_off: usize,
    ) -> Result<()>;

    // Whole-batch convolution. The defaults run upstream's loop (per image: im2col, one GEMM
    // per group) through the ops above with a column buffer as workspace; a backend may
    // override them to spread the images over its workers.

    /// Elements of the `workspace` the three batch-convolution ops below need for `c` (the
    /// default: one image's column buffer, none for a 1x1 convolution). A backend that keeps
    /// its own scratch returns 0.
    fn conv_workspace_len(&self, c: &ConvBatch) -> usize {
        if c.is_1x1() {
            0
        } else {
            c.geom.col_len()
        }
    }
    /// `y[n] = W col(x[n])` per group for every image `n`, plus `bias[o]` on output channel `o`
    /// when given (upstream's `forward_cpu_gemm` then `forward_cpu_bias`).
    fn conv_forward(
        &self,
        c: &ConvBatch,
        x: &Self::Buffer,
        x_off: usize,
        w: &Self::Buffer,
        w_off: usize,
        bias: Option<(&Self::Buffer, usize)>,
        y: &mut Self::Buffer,
        y_off: usize,
        workspace: &mut Self::Buffer,
    ) -> Result<()> {
        c.validate("conv_forward")?;
        let (kd, sp, go) = (c.kernel_dim(), c.out_spatial(), c.group_out());
        for n in 0..c.num {
            let (xo, yo) = (x_off + n * c.in_len(), y_off + n * c.out_len());
            let (cols, cols_off) = if c.is_1x1() {
                (x, xo)
            } else {
                self.im2col(&c.geom, x, xo, workspace, 0)?;
                (&*workspace, 0)
            };
            for g in 0..c.groups {
                self.gemm_packed(
                    Transpose::NoTrans,
                    Transpose::NoTrans,
                    go,
                    sp,
                    kd,
                    1.0,
                    w,
                    w_off + g * go * kd,
                    cols,
                    cols_off + g * kd * sp,
                    0.0,
                    y,
                    yo + g * go * sp,
                )?;
            }
        }
        if let Some((b, b_off)) = bias {
            self.add_per_channel(c.num, c.out_channels, sp, b, b_off, y, y_off)?;
        }
        Ok(())
    }
    /// The convolution's gradients from `dy` (shaped as the output): `dw += sum_n dy[n]
    /// col(x[n])^T` per group when `dw` is given, and `dx[n] = col2im(W^T dy[n])` when `dx` is
    /// (upstream's `weight_cpu_gemm` and `backward_cpu_gemm`, image by image in that order).
    /// `x` is read only when `dw` is given. The images' weight gradients may be summed in
    /// another order than one by one (a backend documents its order).
    fn conv_backward(
        &self,
        c: &ConvBatch,
        x: &Self::Buffer,
        x_off: usize,
        w: &Self::Buffer,
        w_off: usize,
        dy: &Self::Buffer,
        dy_off: usize,
        mut dw: Option<(&mut Self::Buffer, usize)>,
        mut dx: Option<(&mut Self::Buffer, usize)>,
        workspace: &mut Self::Buffer,
    ) -> Result<()> {
        c.validate("conv_backward")?;
        let (kd, sp, go) = (c.kernel_dim(), c.out_spatial(), c.group_out());
        for n in 0..c.num {
            let (xo, yo) = (x_off + n * c.in_len(), dy_off + n * c.out_len());
            if let Some((dw, dw_off)) = dw.as_mut() {
                let (cols, cols_off) = if c.is_1x1() {
                    (x, xo)
                } else {
                    self.im2col(&c.geom, x, xo, workspace, 0)?;
                    (&*workspace, 0)
                };
                for g in 0..c.groups {
                    self.gemm_packed(
                        Transpose::NoTrans,
                        Transpose::Trans,
                        go,
                        kd,
                        sp,
                        1.0,
                        dy,
                        yo + g * go * sp,
                        cols,
                        cols_off + g * kd * sp,
                        1.0,
                        dw,
                        *dw_off + g * go * kd,
                    )?;
                }
            }
            if let Some((dx, dx_off)) = dx.as_mut() {
                let xo = *dx_off + n * c.in_len();
                let (cols, cols_off): (&mut Self::Buffer, usize) =
                    if c.is_1x1() { (dx, xo) } else { (workspace, 0) };
                for g in 0..c.groups {
                    self.gemm_packed(
                        Transpose::Trans,
                        Transpose::NoTrans,
                        kd,
                        sp,
                        go,
                        1.0,
                        w,
                        w_off + g * go * kd,
                        dy,
                        yo + g * go * sp,
                        0.0,
                        cols,
                        cols_off + g * kd * sp,
                    )?;
                }
                if !c.is_1x1() {
                    self.col2im(&c.geom, workspace, 0, dx, xo)?;
                }
            }
        }
        Ok(())
    }

    // ---- pooling ------------------------------------------------------------------------

    /// Max pooling: `y` = max over each window clipped to the image, `mask` = the argmax as a
    /// plane index `h * width + w` (first maximum in row-major order; -1 if no element of the
    /// window is greater than -f32::MAX).
    fn max_pool_forward(
        &self,
        g: &PoolGeom,
        x: &Self::Buffer,
        x_off: usize,
        y: &mut Self::Buffer,
        y_off: usize,
        mask: &mut Self::Buffer,
        mask_off: usize,
    ) -> Result<()>;
    /// `dx` = 0, then `dx[mask[p]] += dy[p]` for each output `p` of each plane (mask -1 skipped).
    fn max_pool_backward(
        &self,
        g: &PoolGeom,
        dy: &Self::Buffer,
        dy_off: usize,
        mask: &Self::Buffer,
        mask_off: usize,
        dx: &mut Self::Buffer,
        dx_off: usize,
    ) -> Result<()>;
    /// Average pooling: sum over the window clipped to the image, divided by the window's size
    /// clipped only to the padded image (upstream counts padded positions inside the pad).
    fn ave_pool_forward(
        &self,
        g: &PoolGeom,
        x: &Self::Buffer,
        x_off: usize,
        y: &mut Self::Buffer,
        y_off: usize,
    ) -> Result<()>;
    /// `dx` = 0, then every input in a window gets `dy / size` with the forward pass's divisor.
    fn ave_pool_backward(
        &self,
        g: &PoolGeom,
        dy: &Self::Buffer,
        dy_off: usize,
        dx: &mut Self::Buffer,
        dx_off: usize,
    ) -> Result<()>;

    // ---- local response normalisation ---------------------------------------------------
    // WITHIN_CHANNEL needs no op of its own: upstream composes it as sqr -> average pooling
    // (kernel local_size, pad (local_size - 1) / 2, stride 1) -> power(-beta, alpha, 1) -> mul,
    // and so can a layer, from the ops above.

    /// `scale[n, c, s] = k + alpha/size sum_{|c' - c| <= size/2} x[n, c', s]^2` and
    /// `y = x scale^-beta`.
    fn lrn_across_forward(
        &self,
        g: &LrnGeom,
        x: &Self::Buffer,
        x_off: usize,
        scale: &mut Self::Buffer,
        scale_off: usize,
        y: &mut Self::Buffer,
        y_off: usize,
    ) -> Result<()>;
    /// `dx[c] = dy[c] scale[c]^-beta - (2 alpha beta / size) x[c]
    /// sum_{|c' - c| <= size/2} dy[c'] y[c'] / scale[c']` with `x`, `scale`, `y` from forward.
    fn lrn_across_backward(
        &self,
        g: &LrnGeom,
        x: &Self::Buffer,
        x_off: usize,
        y: &Self::Buffer,
        y_off: usize,
        scale: &Self::Buffer,
        scale_off: usize,
        dy: &Self::Buffer,
        dy_off: usize,
        dx: &mut Self::Buffer,
        dx_off: usize,
    ) -> Result<()>;

    /// WITHIN_CHANNEL LRN forward as upstream composes it (src/caffe/layers/lrn_layer.cpp: Power
    /// square, AVE pooling, Power, Eltwise product): `mean = avepool_g(x^2)`,
    /// `power = (1 + alpha mean)^-beta`, `y = x power`, over `g.in_len()` elements from offset
    /// 0, with `g` a [`PoolGeom::lrn_window`]; `sq` is scratch. The default runs the composition
    /// op by op; a backend may fuse it, giving the same bits.
    fn lrn_within_forward(
        &self,
        g: &PoolGeom,
        alpha: f32,
        beta: f32,
        x: &Self::Buffer,
        mean: &mut Self::Buffer,
        power: &mut Self::Buffer,
        y: &mut Self::Buffer,
        sq: &mut Self::Buffer,
    ) -> Result<()> {
        g.validate_lrn_window("lrn_within_forward")?;
        let n = g.in_len();
        self.sqr(n, Src::At(x, 0), sq, 0)?;
        self.ave_pool_forward(g, sq, 0, mean, 0)?;
        self.power(n, Src::At(mean, 0), -beta, alpha, 1.0, power, 0)?;
        self.mul(n, Src::At(x, 0), Src::At(power, 0), y, 0)
    }
    /// Backward of [`Backend::lrn_within_forward`] through the same composition, with `mean`
    /// and `power` from forward: `dx = dy power + 2 x avepool_g^T(-beta alpha dy x power /
    /// (1 + alpha mean))`; `a` and `b` are scratch.
    fn lrn_within_backward(
        &self,
        g: &PoolGeom,
        alpha: f32,
        beta: f32,
        x: &Self::Buffer,
        mean: &Self::Buffer,
        power: &Self::Buffer,
        dy: &Self::Buffer,
        dx: &mut Self::Buffer,
        a: &mut Self::Buffer,
        b: &mut Self::Buffer,
    ) -> Result<()> {
        g.validate_lrn_window("lrn_within_backward")?;
        let n = g.in_len();
        // Product y = x p: the x path.
        self.mul(n, Src::At(dy, 0), Src::At(power, 0), dx, 0)?;
        // The p path: dp = dy x; through p = (1 + alpha m)^-beta, as upstream's Power layer:
        // dm = dp (-beta alpha) p / (1 + alpha m).
        self.mul(n, Src::At(dy, 0), Src::At(x, 0), a, 0)?;
        self.mul(n, Src::InPlace, Src::At(power, 0), a, 0)?;
        self.power(n, Src::At(mean, 0), 1.0, alpha, 1.0, b, 0)?;
        self.div(n, Src::InPlace, Src::At(b, 0), a, 0)?;
        self.scale(n, -beta * alpha, Src::InPlace, a, 0)?;
        // Through the window mean, then the square (2 x), summed into dx.
        self.ave_pool_backward(g, a, 0, b, 0)?;
        self.mul(n, Src::InPlace, Src::At(x, 0), b, 0)?;
        self.axpy(n, 2.0, b, 0, dx, 0)
    }

    // ---- ops added for the neuron and plumbing layers (PReLU, Concat, Slice, Eltwise, ArgMax) -

    /// `y[o, c, j] = x > 0 ? x : slope[c] x` over `(outer, channels, inner)` (PReLU forward).
    fn prelu_forward(
        &self,
        outer: usize,
        channels: usize,
        inner: usize,
        slope: &Self::Buffer,
        slope_off: usize,
        x: Src<'_, Self::Buffer>,
        y: &mut Self::Buffer,
        y_off: usize,
    ) -> Result<()>;
    /// `dx[o, c, j] = dy ((x > 0) + slope[c] (x <= 0))` with `x` the forward input.
    fn prelu_backward(
        &self,
        outer: usize,
        channels: usize,
        inner: usize,
        slope: &Self::Buffer,
        slope_off: usize,
        x: &Self::Buffer,
        x_off: usize,
        dy: Src<'_, Self::Buffer>,
        dx: &mut Self::Buffer,
        dx_off: usize,
    ) -> Result<()>;
    /// `dslope[c] += sum_{o, j} dy[o, c, j] x[o, c, j] (x[o, c, j] <= 0)` (PReLU's slope gradient).
    fn prelu_slope_grad(
        &self,
        outer: usize,
        channels: usize,
        inner: usize,
        x: &Self::Buffer,
        x_off: usize,
        dy: &Self::Buffer,
        dy_off: usize,
        dslope: &mut Self::Buffer,
        dslope_off: usize,
    ) -> Result<()>;
    /// `y[y_off + r y_stride + j] = x[x_off + r x_stride + j]` for `r < rows`, `j < cols`
    /// (a strided block copy; needs `y_stride >= cols` when `rows > 1`).
    fn copy_2d(
        &self,
        rows: usize,
        cols: usize,
        x: &Self::Buffer,
        x_off: usize,
        x_stride: usize,
        y: &mut Self::Buffer,
        y_off: usize,
        y_stride: usize,
    ) -> Result<()>;
    /// Where `x[i] > y[i]`: `y[i] = x[i]` and `mask[i] = index` (a running max and its argmax).
    fn running_argmax(
        &self,
        n: usize,
        index: f32,
        x: &Self::Buffer,
        x_off: usize,
        y: &mut Self::Buffer,
        y_off: usize,
        mask: &mut Self::Buffer,
        mask_off: usize,
    ) -> Result<()>;
    /// `y[i] = mask[i] == value ? x[i] : 0`.
    fn copy_where_eq(
        &self,
        n: usize,
        mask: &Self::Buffer,
        mask_off: usize,
        value: f32,
        x: &Self::Buffer,
        x_off: usize,
        y: &mut Self::Buffer,
        y_off: usize,
    ) -> Result<()>;
    /// For each `(o, j)`, the `k <= dim` largest `x[o, c, j]` over `c`, in descending order (equal
    /// values: larger `c` first; NaN above all): `values[o, r, j]` and `indices[o, r, j] = c`.
    fn top_k_over_axis(
        &self,
        outer: usize,
        dim: usize,
        inner: usize,
        k: usize,
        x: &Self::Buffer,
        x_off: usize,
        values: &mut Self::Buffer,
        values_off: usize,
        indices: &mut Self::Buffer,
        indices_off: usize,
    ) -> Result<()>;

    // ---- ops added for the loss and accuracy layers (SoftmaxWithLoss, Accuracy, HingeLoss,
    // SigmoidCrossEntropyLoss) ----
    // Labels are f32 values, as Caffe stores them; `l = trunc(label)` is upstream's
    // `static_cast<int>`. Positions `(o, j)` of an `(outer, dim, inner)` view index the labels.

    /// `y[i] = 0` where `trunc(label[i]) == ignore_label`, else `1`.
    fn label_mask(
        &self,
        n: usize,
        label: &Self::Buffer,
        label_off: usize,
        ignore_label: Option<i32>,
        y: &mut Self::Buffer,
        y_off: usize,
    ) -> Result<()>;
    /// `y[o, j] = x[o, l, j]`, or `fill` where `l == ignore_label`; any other `l` outside
    /// `0..dim` is an error.
    fn gather_at_label(
        &self,
        outer: usize,
        dim: usize,
        inner: usize,
        x: &Self::Buffer,
        x_off: usize,
        label: &Self::Buffer,
        label_off: usize,
        ignore_label: Option<i32>,
        fill: f32,
        y: &mut Self::Buffer,
        y_off: usize,
    ) -> Result<()>;
    /// `y[o, l, j] = alpha y[o, l, j] + beta`; where `l == ignore_label`, `y[o, c, j] = 0` for
    /// every `c` instead; any other `l` outside `0..dim` is an error (nothing is written then).
    fn affine_at_label(
        &self,
        outer: usize,
        dim: usize,
        inner: usize,
        label: &Self::Buffer,
        label_off: usize,
        ignore_label: Option<i32>,
        alpha: f32,
        beta: f32,
        y: &mut Self::Buffer,
        y_off: usize,
    ) -> Result<()>;
    /// `y[o, j] = 1` when at most `top_k` classes `c` (`l` itself included: ties count against
    /// the label) have `x[o, c, j] >= x[o, l, j]`, else `0`; `0` where `l == ignore_label`; any
    /// other `l` outside `0..dim` is an error.
    fn top_k_hits(
        &self,
        outer: usize,
        dim: usize,
        inner: usize,
        top_k: usize,
        x: &Self::Buffer,
        x_off: usize,
        label: &Self::Buffer,
        label_off: usize,
        ignore_label: Option<i32>,
        y: &mut Self::Buffer,
        y_off: usize,
    ) -> Result<()>;
    /// `y[c] = sum_{i < n, trunc(label[i]) == c} x[i]` for `c < classes`, skipping labels equal
    /// to `ignore_label`; any other label outside `0..classes` is an error.
    fn sum_by_label(
        &self,
        n: usize,
        classes: usize,
        x: &Self::Buffer,
        x_off: usize,
        label: &Self::Buffer,
        label_off: usize,
        ignore_label: Option<i32>,
        y: &mut Self::Buffer,
        y_off: usize,
    ) -> Result<()>;
    /// `y[i] = ln(1 + exp(x[i] - 2 x[i] p)) - x[i] (t[i] - p)` with `p = [x[i] >= 0]`: the
    /// cross-entropy of `sigmoid(x)` against the target `t`, in a form that cannot overflow.
    fn sigmoid_cross_entropy(
        &self,
        n: usize,
        x: &Self::Buffer,
        x_off: usize,
        t: &Self::Buffer,
        t_off: usize,
        y: &mut Self::Buffer,
        y_off: usize,
    ) -> Result<()>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(result: Result<impl fmt::Debug>) -> String {
        result.expect_err("an invalid argument").to_string()
    }

    #[test]
    fn gemm_spans_follow_the_stored_layout_and_name_a_bad_leading_dimension() {
        let no = Transpose::NoTrans;
        // A 2x3 (ld 4), B 3x5 (ld 5), C 2x5 (ld 6).
        assert_eq!(
            gemm_spans("gemm", (no, no), (2, 5, 3), (4, 5, 6)).unwrap(),
            [4 + 3, 2 * 5 + 5, 6 + 5]
        );
        // Transposed A is stored 3x2: its leading dimension holds 2 columns.
        assert_eq!(
            gemm_spans("gemm", (Transpose::Trans, no), (2, 5, 3), (2, 5, 5)).unwrap()[0],
            2 * 2 + 2
        );
        let short = message(gemm_spans("gemm", (no, no), (2, 5, 3), (4, 4, 5)));
        assert!(
            short.contains("leading dimension of B is 4, less than its 5 columns"),
            "{short}"
        );
        let huge = message(gemm_spans("gemm", (no, no), (usize::MAX, 1, 1), (2, 1, 1)));
        assert!(huge.contains("overflows usize"), "{huge}");
        // Empty products span nothing, but their leading dimensions are still checked.
        assert_eq!(
            gemm_spans("gemm", (no, no), (0, 5, 3), (3, 5, 5)).unwrap(),
            [0, 15, 0]
        );
    }

    #[test]
    fn labels_are_classes_in_range_unless_ignored() {
        // Truncated toward zero, as upstream's static_cast<int>: 2.9 is class 2, -0.5 class 0.
        check_labels("op", &[0.0, 2.9, -0.5], None, 3).unwrap();
        check_labels("op", &[1.0, 7.0], Some(7), 3).unwrap();
        let high = message(check_labels("op", &[1.0, 3.0], None, 3));
        assert!(
            high.contains("label 3 at position 1 is outside 0..3"),
            "{high}"
        );
        let negative = message(check_labels("op", &[-1.0], Some(7), 3));
        assert!(negative.contains("label -1 at position 0"), "{negative}");
    }

    #[test]
    fn copy_2d_spans_refuse_overlapping_rows_and_overflow() {
        assert_eq!(
            copy_2d_spans("copy_2d", (3, 4), 10, 4).unwrap(),
            Some((24, 12))
        );
        assert_eq!(copy_2d_spans("copy_2d", (0, 4), 10, 4).unwrap(), None);
        // One row may have any destination stride; overlapping source rows are fine.
        assert_eq!(
            copy_2d_spans("copy_2d", (1, 4), 0, 0).unwrap(),
            Some((4, 4))
        );
        assert_eq!(
            copy_2d_spans("copy_2d", (2, 4), 1, 4).unwrap(),
            Some((5, 8))
        );
        let overlap = message(copy_2d_spans("copy_2d", (2, 4), 4, 3));
        assert!(
            overlap.contains("y_stride 3 is less than the 4 columns"),
            "{overlap}"
        );
        let huge = message(copy_2d_spans("copy_2d", (usize::MAX, 2), 2, 2));
        assert!(huge.contains("overflows usize"), "{huge}");
    }
}
