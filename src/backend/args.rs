//! What an op is told besides the views it reads and writes: which element-wise function it
//! applies, which reduction, which update rule, and scalars that may live on the device.

use std::fmt;

use super::view::{Slice, SliceMut};
use super::DeviceBuffer;

/// A solver's update rule with its hyper-parameters: what [`Backend::fused_update`](super::Backend::fused_update) runs. The
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

/// An element-wise function of one input: `y[i] = f(x[i])`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Unary {
    /// `exp(x)`.
    Exp,
    /// `ln(x)`.
    Log,
    /// `|x|`.
    Abs,
    /// `x^2`.
    Sqr,
    /// `sqrt(x)`.
    Sqrt,
    /// `1, 0 or -1` as `x > 0, == 0, < 0` (0 for NaN), upstream's `caffe_sign`.
    Sign,
    /// `x^p`.
    Powx(f32),
    /// `(shift + scale x)^power`, upstream's PowerLayer.
    Power { power: f32, scale: f32, shift: f32 },
    /// `x + value`.
    AddScalar(f32),
    /// `0` where `trunc(x) == ignore_label` (`x` a label), else `1`.
    LabelMask { ignore_label: Option<i32> },
    /// `1` where `x > threshold`, else `0` (NaN included), upstream's ThresholdLayer.
    Threshold(f32),
}

/// An element-wise function of two inputs: `y[i] = f(a[i], b[i])`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binary {
    /// `a + b`.
    Add,
    /// `a - b`.
    Sub,
    /// `a * b`.
    Mul,
    /// `a / b`.
    Div,
    /// `max(a, b)` (Eltwise MAX): `b` where `a < b`, else `a`.
    Max,
    /// `a > 0 ? a : b a` (PReLU with slope `b`).
    PRelu,
    /// `ln(1 + exp(a - 2 a p)) - a (b - p)` with `p = [a >= 0]`: the cross-entropy of
    /// `sigmoid(a)` against the target `b`, in a form that cannot overflow.
    SigmoidCrossEntropy,
}

/// A neuron's activation, forward `y = f(x)` and backward `dx = dy f'(x)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Activation {
    /// `y = max(x, 0) + slope min(x, 0)`; `dx = dy (x > 0 ? 1 : slope)`, where `x` may be the
    /// forward output (in place).
    Relu { slope: f32 },
    /// `y = 1 / (1 + exp(-x))`, computed as `0.5 tanh(0.5 x) + 0.5`; `dx = dy y (1 - y)`.
    Sigmoid,
    /// `y = tanh(x)`; `dx = dy (1 - y^2)`.
    Tanh,
    /// `y = max(x, 0) + alpha (exp(min(x, 0)) - 1)`; `dx = dy (x > 0 ? 1 : alpha + y)`.
    Elu { alpha: f32 },
    /// `y = x > 0 ? x + ln(1 + exp(-x)) : ln(1 + exp(x))` (softplus);
    /// `dx = dy e / (e + 1)` with `e = exp(min(x, BNLL_THRESHOLD))`.
    Bnll,
    /// `y = max(min, min(x, max))` in `std::max`/`std::min`'s order of comparisons, so a NaN
    /// input gives `min` as upstream's CPU loop; `dx = dy (min <= x <= max)`.
    Clip { min: f32, max: f32 },
    /// `y = x s` with `s = sigmoid(beta x)` (computed as Sigmoid's); `dx = dy (beta y + s (1 -
    /// beta y))`, reading both the forward input and output.
    Swish { beta: f32 },
}

/// A sum over a whole view, returned to the host (accumulated in f64, as upstream's BLAS).
pub enum Reduction<'a, T: ?Sized> {
    /// `sum_i x[i]`.
    Sum,
    /// `sum_i |x[i]|`.
    Asum,
    /// `sum_i x[i]^2`.
    Sumsq,
    /// `sum_i x[i] b[i]` with `b` as long as `x`.
    Dot(Slice<'a, T>),
}

/// A reduction over the middle axis of an `outer x dim x inner` view, giving `outer x inner`.
pub enum AxisReduction<'a, T: ?Sized> {
    /// `y[o, j] = max_c x[o, c, j]`.
    Max,
    /// `y[o, j] = sum_c x[o, c, j]`.
    Sum,
    /// `y[o, j] = sum_c x[o, c, j] b[o, c, j]` with `b` shaped as `x`.
    Dot(Slice<'a, T>),
}

/// How a vector is spread over an `outer x dim x inner` view by [`Backend::broadcast`].
///
/// [`Backend::broadcast`]: super::Backend::broadcast
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Broadcast {
    /// `v` has `outer x inner` elements, one per position: `v[o, j]` applies to every `c`
    /// (softmax's max and sum).
    OverAxis,
    /// `v` has `dim` elements, one per channel: `v[c]` applies to every `(o, j)` (a bias, a
    /// scale).
    PerChannel,
}

/// A distribution to draw a fill from with the host [`Rng`](super::Rng).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Distribution {
    /// Uniform on `[lo, hi]` (as upstream's `caffe_rng_uniform`); needs `lo <= hi`.
    Uniform { lo: f32, hi: f32 },
    /// `N(mean, std^2)`; needs `std >= 0`.
    Gaussian { mean: f32, std: f32 },
    /// `1` with probability `p`, else `0`; needs `0 <= p <= 1`.
    Bernoulli { p: f32 },
}

/// Which pooling a pooling op runs, with the argmax mask max pooling writes (forward) or reads
/// (backward): `M` is a [`SliceMut`](super::SliceMut) or a [`Slice`].
pub enum Pooling<M> {
    /// The maximum over each window clipped to the image; the mask holds its plane index
    /// `h width + w` (first maximum in row-major order; -1 if no element of the window is
    /// greater than -f32::MAX).
    Max { mask: M },
    /// The sum over the window clipped to the image, divided by the window's size clipped only
    /// to the padded image (upstream counts padded positions inside the pad).
    Ave,
}

/// What BatchNorm's normalisation ([`Backend::batch_norm_forward`]) writes.
///
/// [`Backend::batch_norm_forward`]: super::Backend::batch_norm_forward
pub struct BatchNormOutput<'a, T: ?Sized> {
    /// The normalised values.
    pub y: SliceMut<'a, T>,
    /// A copy of them, which backward reads (later in-place layers may overwrite `y`).
    pub x_norm: SliceMut<'a, T>,
    /// Per channel: `sqrt(variance + eps)`.
    pub std: SliceMut<'a, T>,
}

/// Where BatchNorm's normalisation ([`Backend::batch_norm_forward`]) takes its statistics.
///
/// [`Backend::batch_norm_forward`]: super::Backend::batch_norm_forward
pub enum BatchStatistics<'a, T: ?Sized> {
    /// The batch's own, written here per channel: the mean and the biased variance, each
    /// `inv_count` times a channel sum (of `x`, of `(x - mean)^2`) as
    /// [`Backend::sum_per_channel`](super::Backend::sum_per_channel) adds it.
    Batch {
        inv_count: f32,
        mean: SliceMut<'a, T>,
        variance: SliceMut<'a, T>,
    },
    /// Given per channel (the running averages).
    Given {
        mean: Slice<'a, T>,
        variance: Slice<'a, T>,
    },
}

impl<T: DeviceBuffer> BatchStatistics<'_, T> {
    /// The mean per channel (the batch's once written).
    pub fn mean(&self) -> Slice<'_, T> {
        match self {
            BatchStatistics::Batch { mean, .. } => mean.as_slice(),
            BatchStatistics::Given { mean, .. } => *mean,
        }
    }
    /// The variance per channel (the batch's once written).
    pub fn variance(&self) -> Slice<'_, T> {
        match self {
            BatchStatistics::Batch { variance, .. } => variance.as_slice(),
            BatchStatistics::Given { variance, .. } => *variance,
        }
    }
}

/// What a backend can do beyond the required ops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Capabilities {
    /// [`Backend::fused_update`](super::Backend::fused_update) runs every [`UpdateRule`]: the
    /// solver then allocates no scratch for the composed rules.
    pub fused_updates: bool,
    /// [`Backend::begin_capture`](super::Backend::begin_capture) can record work for replay.
    pub capture: bool,
    /// The batch convolution ops keep their own scratch: the `workspace` they take may be empty
    /// (see [`ConvBatch::workspace_len`](super::ConvBatch::workspace_len)).
    pub conv_scratch: bool,
    /// [`Backend::batch_norm_forward`](super::Backend::batch_norm_forward) and
    /// [`Backend::batch_norm_backward`](super::Backend::batch_norm_backward) run: BatchNorm
    /// calls them instead of composing its passes from the other ops.
    pub fused_batch_norm: bool,
    /// [`Backend::scale_forward`](super::Backend::scale_forward) and
    /// [`Backend::scale_gradients`](super::Backend::scale_gradients) run: Scale calls them
    /// instead of composing its passes from the other ops.
    pub fused_scale: bool,
}

impl<T: ?Sized> Clone for Reduction<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T: ?Sized> Copy for Reduction<'_, T> {}

impl<T: ?Sized> Clone for AxisReduction<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T: ?Sized> Copy for AxisReduction<'_, T> {}

impl<T: ?Sized> fmt::Debug for Reduction<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Sum => "Sum",
            Self::Asum => "Asum",
            Self::Sumsq => "Sumsq",
            Self::Dot(_) => "Dot",
        })
    }
}
