//! The shapes ops work on: matrices for GEMM, images for convolution and pooling, channels for
//! LRN. Each knows its element counts and checks itself before an op uses it.

use super::{invalid, Capabilities, Result};

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
    /// Elements of the workspace the batch convolution ops need on a backend with `caps`: one
    /// image's column buffer, none for a 1x1 convolution or where the backend keeps its own.
    pub fn workspace_len(&self, caps: Capabilities) -> usize {
        if caps.conv_scratch || self.is_1x1() {
            0
        } else {
            self.geom.col_len()
        }
    }

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

/// A GEMM: `C = alpha op(A) op(B) + beta C`, row-major, `op(A)` `m x k`, `op(B)` `k x n`, `C`
/// `m x n`; `lda`, `ldb`, `ldc` are the row strides of the matrices as stored (`A` stored `m x k`
/// when `NoTrans`, `k x m` when `Trans`; likewise `B`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Gemm {
    pub trans_a: Transpose,
    pub trans_b: Transpose,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub alpha: f32,
    pub beta: f32,
    pub lda: usize,
    pub ldb: usize,
    pub ldc: usize,
}

impl Gemm {
    /// `C = op(A) op(B)` with packed operands (the leading dimensions upstream's
    /// `caffe_cpu_gemm` implies): the common case for convolution and InnerProduct.
    pub fn packed(trans_a: Transpose, trans_b: Transpose, m: usize, n: usize, k: usize) -> Self {
        Self {
            trans_a,
            trans_b,
            m,
            n,
            k,
            alpha: 1.0,
            beta: 0.0,
            lda: if trans_a == Transpose::NoTrans { k } else { m },
            ldb: if trans_b == Transpose::NoTrans { n } else { k },
            ldc: n,
        }
    }

    /// The same product scaled by `alpha`.
    pub fn alpha(self, alpha: f32) -> Self {
        Self { alpha, ..self }
    }

    /// The same product added to `beta C` (`beta == 0`: `C` is not read).
    pub fn beta(self, beta: f32) -> Self {
        Self { beta, ..self }
    }

    /// The same product over matrices with these row strides.
    pub fn strides(self, lda: usize, ldb: usize, ldc: usize) -> Self {
        Self {
            lda,
            ldb,
            ldc,
            ..self
        }
    }
}

/// A matrix-vector product `y = alpha op(A) x + beta y` with `A` stored packed `m x n`
/// row-major: `NoTrans` gives `y` of length `m` from `x` of length `n`, `Trans` gives `y` of
/// length `n` from `m`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Gemv {
    pub trans: Transpose,
    pub m: usize,
    pub n: usize,
    pub alpha: f32,
    pub beta: f32,
}

/// A strided block copy: `rows` rows of `cols` values, read `x_stride` apart and written
/// `y_stride` apart (`y_stride >= cols` when `rows > 1`, so written rows do not overlap).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block {
    pub rows: usize,
    pub cols: usize,
    pub x_stride: usize,
    pub y_stride: usize,
}

/// WITHIN_CHANNEL local response normalisation as upstream composes it: the mean of the squares
/// over `window` (a [`PoolGeom::lrn_window`]), then `(1 + alpha mean)^-beta`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LrnWithin {
    pub window: PoolGeom,
    pub alpha: f32,
    pub beta: f32,
}
