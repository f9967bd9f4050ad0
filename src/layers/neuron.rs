//! The element-wise neuron layers: ReLU, Sigmoid, TanH, ELU, AbsVal, Power, Exp, Log, BNLL,
//! Clip, Swish and Threshold (upstream: `src/caffe/layers/<name>_layer.cpp`, all
//! `NeuronLayer`s: one bottom, one top of the same shape).
//!
//! Each is a [`NeuronLayer`] around a [`NeuronFn`] that reads its parameters and computes its
//! forward and backward passes with backend ops; ReLU, Sigmoid, TanH, ELU, BNLL, Clip and Swish
//! are each one backend [`Activation`] ([`Activated`]). Every one but AbsVal runs in place.
//! Threshold has no backward pass, as upstream. A layer whose
//! backward pass reads the forward input keeps a copy of it when in place (as upstream's PReLU
//! does); upstream's other layers read the overwritten input there instead and get wrong
//! gradients (Power, Log, BNLL, and ReLU / ELU with a negative slope / alpha).

use std::marker::PhantomData;

use crate::backend::{Activation, Backend, BackendError, Binary, Slice, SliceMut, Src, Unary};
use crate::blob::Blob;
use crate::layers::{BlobCounts, Blobs, Context, InOut, Layer, LayerError, Params};
use crate::proto::caffe::LayerParameter;

/// What one element-wise neuron computes.
pub trait NeuronFn: Send + Sized + 'static {
    /// The type string the registry knows the layer by.
    const TYPE: &'static str;
    /// Whether the top may be the bottom.
    const IN_PLACE: bool = true;
    /// Whether the layer has a backward pass; without one, asking for the bottom's gradient is
    /// an error.
    const HAS_BACKWARD: bool = true;

    /// Reads and checks the layer's parameters.
    fn from_param(param: &LayerParameter) -> Result<Self, LayerError>;

    /// Whether backward reads the forward input `x` (kept in a copy when in place).
    fn needs_input(&self) -> bool;

    /// `y = f(x)`.
    fn forward<B: Backend>(
        &self,
        be: &B,
        x: Src<'_, B::Buffer>,
        y: SliceMut<'_, B::Buffer>,
    ) -> Result<(), BackendError>;

    /// `dx = dy f'(x)`, with `x` and `y` the forward input and output (in place without
    /// [`NeuronFn::needs_input`], `x` is the output). `dy` is [`Src::InPlace`] when in place;
    /// `tmp` (as long as `dx`) is then given if the layer needs its input.
    fn backward<B: Backend>(
        &self,
        be: &B,
        x_y: (Slice<'_, B::Buffer>, Slice<'_, B::Buffer>),
        dy: Src<'_, B::Buffer>,
        dx: SliceMut<'_, B::Buffer>,
        tmp: Option<SliceMut<'_, B::Buffer>>,
    ) -> Result<(), BackendError>;
}

/// `dx = g dy`, with `g` written by `grad` into `dx` (when `dy` is another view) or `tmp`
/// (in place, where `dx` holds `dy`).
fn times_dy<B: Backend>(
    be: &B,
    dy: Src<'_, B::Buffer>,
    mut dx: SliceMut<'_, B::Buffer>,
    tmp: Option<SliceMut<'_, B::Buffer>>,
    grad: impl FnOnce(SliceMut<'_, B::Buffer>) -> Result<(), BackendError>,
) -> Result<(), BackendError> {
    match (dy, tmp) {
        (Src::Slice(dy), _) => {
            grad(dx.reborrow())?;
            be.binary(Binary::Mul, Src::InPlace, dy.src(), dx)
        }
        (Src::InPlace, Some(mut tmp)) => {
            grad(tmp.reborrow())?;
            be.binary(Binary::Mul, Src::InPlace, tmp.as_slice().src(), dx)
        }
        (Src::InPlace, None) => Err(crate::backend::invalid(
            "neuron backward",
            "an in-place gradient needs a scratch buffer",
        )),
    }
}

/// An element-wise neuron layer computing `F`.
pub struct NeuronLayer<F, B: Backend> {
    f: F,
    /// The forward input (data) and a scratch (diff), kept only in place when `F` needs them.
    saved: Option<Blob<B>>,
}

impl<F: NeuronFn, B: Backend> NeuronLayer<F, B> {
    /// Reads the function's parameters.
    pub fn new(param: &LayerParameter) -> Result<Self, LayerError> {
        Ok(NeuronLayer {
            f: F::from_param(param)?,
            saved: None,
        })
    }
}

impl<F: NeuronFn, B: Backend> Layer<B> for NeuronLayer<F, B> {
    fn layer_type(&self) -> &'static str {
        F::TYPE
    }
    fn counts(&self) -> BlobCounts {
        BlobCounts::exactly(1, 1)
    }
    fn supports_in_place(&self) -> bool {
        F::IN_PLACE
    }

    fn reshape(
        &mut self,
        ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        _params: &Params<'_, B>,
    ) -> Result<(), LayerError> {
        let shape = blobs.bottom(0).shape().to_vec();
        if !blobs.is_in_place(0) {
            blobs.top_mut(0).reshape(&shape)?;
        } else if self.f.needs_input() {
            match &mut self.saved {
                Some(saved) => saved.reshape(&shape)?,
                None => self.saved = Some(Blob::new(ctx.backend, &shape)?),
            }
        }
        Ok(())
    }

    fn forward(
        &mut self,
        ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        _params: &mut Params<'_, B>,
    ) -> Result<(), LayerError> {
        let be = ctx.backend;
        match blobs.forward_io(0) {
            InOut::Separate { input, output } => {
                let x = input.data_view().src();
                self.f.forward(be, x, output.data_view_mut())?;
            }
            InOut::Same(blob) => {
                if self.f.needs_input() {
                    let saved = self.saved.as_mut().ok_or_else(not_reshaped)?;
                    be.copy(blob.data_view(), saved.data_view_mut())?;
                }
                self.f.forward(be, Src::InPlace, blob.data_view_mut())?;
            }
        }
        Ok(())
    }

    fn backward(
        &mut self,
        ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        propagate_down: &[bool],
        _params: &mut Params<'_, B>,
    ) -> Result<(), LayerError> {
        if !propagate_down[0] {
            return Ok(());
        }
        if !F::HAS_BACKWARD {
            return Err(LayerError::invalid(format!(
                "{} has no backward pass (upstream: not implemented); it cannot propagate a \
                 gradient to its bottom",
                F::TYPE
            )));
        }
        let be = ctx.backend;
        match blobs.backward_io(0) {
            InOut::Separate {
                input: top,
                output: bottom,
            } => {
                let (x, dx) = bottom.data_and_diff_mut();
                let dy = top.diff_view().src();
                self.f.backward(be, (x, top.data_view()), dy, dx, None)?;
            }
            InOut::Same(blob) => {
                let (y, dx) = blob.data_and_diff_mut();
                if self.f.needs_input() {
                    let saved = self.saved.as_mut().ok_or_else(not_reshaped)?;
                    let (x, tmp) = saved.data_and_diff_mut();
                    self.f.backward(be, (x, y), Src::InPlace, dx, Some(tmp))?;
                } else {
                    self.f.backward(be, (y, y), Src::InPlace, dx, None)?;
                }
            }
        }
        Ok(())
    }
}

fn not_reshaped() -> LayerError {
    LayerError::invalid("in-place neuron layer run before reshape")
}

/// A neuron that is one backend [`Activation`]: ReLU, Sigmoid, TanH, ELU, BNLL, Clip and Swish
/// differ only in their type string and the parameters they read.
pub trait ActivationKind: Send + 'static {
    /// The type string the registry knows the layer by.
    const TYPE: &'static str;
    /// The activation `param` configures, or why `param` configures none.
    fn activation(param: &LayerParameter) -> Result<Activation, LayerError>;
}

/// The neuron computing the backend [`Activation`] that `K` reads from its parameters.
pub struct Activated<K> {
    f: Activation,
    kind: PhantomData<K>,
}

impl<K: ActivationKind> NeuronFn for Activated<K> {
    const TYPE: &'static str = K::TYPE;
    fn from_param(param: &LayerParameter) -> Result<Self, LayerError> {
        Ok(Activated {
            f: K::activation(param)?,
            kind: PhantomData,
        })
    }
    fn needs_input(&self) -> bool {
        match self.f {
            // With a slope / alpha >= 0 the output has the input's sign, which is all of the
            // input backward reads.
            Activation::Relu { slope } => slope < 0.0,
            Activation::Elu { alpha } => alpha < 0.0,
            Activation::Sigmoid | Activation::Tanh => false,
            // Clip's output cannot tell a clipped input from one on the bound.
            Activation::Bnll | Activation::Clip { .. } | Activation::Swish { .. } => true,
        }
    }
    fn forward<B: Backend>(
        &self,
        be: &B,
        x: Src<'_, B::Buffer>,
        y: SliceMut<'_, B::Buffer>,
    ) -> Result<(), BackendError> {
        be.activation_forward(self.f, x, y)
    }
    fn backward<B: Backend>(
        &self,
        be: &B,
        (x, y): (Slice<'_, B::Buffer>, Slice<'_, B::Buffer>),
        dy: Src<'_, B::Buffer>,
        dx: SliceMut<'_, B::Buffer>,
        _tmp: Option<SliceMut<'_, B::Buffer>>,
    ) -> Result<(), BackendError> {
        be.activation_backward(self.f, x, y, dy, dx)
    }
}

/// ReLU's [`ActivationKind`].
pub struct Relu;
/// The ReLU layer, `max(x, 0) + negative_slope min(x, 0)` (`relu_param.negative_slope`,
/// default 0).
pub type ReLULayer<B> = NeuronLayer<Activated<Relu>, B>;

impl ActivationKind for Relu {
    const TYPE: &'static str = "ReLU";
    fn activation(param: &LayerParameter) -> Result<Activation, LayerError> {
        let slope = param.relu_param.unwrap_or_default().negative_slope();
        Ok(Activation::Relu { slope })
    }
}

/// Sigmoid's [`ActivationKind`].
pub struct Sigmoid;
/// The Sigmoid layer, `1 / (1 + exp(-x))`.
pub type SigmoidLayer<B> = NeuronLayer<Activated<Sigmoid>, B>;

impl ActivationKind for Sigmoid {
    const TYPE: &'static str = "Sigmoid";
    fn activation(_param: &LayerParameter) -> Result<Activation, LayerError> {
        Ok(Activation::Sigmoid)
    }
}

/// TanH's [`ActivationKind`].
pub struct TanH;
/// The TanH layer, `tanh(x)`.
pub type TanHLayer<B> = NeuronLayer<Activated<TanH>, B>;

impl ActivationKind for TanH {
    const TYPE: &'static str = "TanH";
    fn activation(_param: &LayerParameter) -> Result<Activation, LayerError> {
        Ok(Activation::Tanh)
    }
}

/// ELU's [`ActivationKind`].
pub struct Elu;
/// The ELU layer, `max(x, 0) + alpha (exp(min(x, 0)) - 1)` (`elu_param.alpha`, default 1).
pub type ELULayer<B> = NeuronLayer<Activated<Elu>, B>;

impl ActivationKind for Elu {
    const TYPE: &'static str = "ELU";
    fn activation(param: &LayerParameter) -> Result<Activation, LayerError> {
        let alpha = param.elu_param.unwrap_or_default().alpha();
        Ok(Activation::Elu { alpha })
    }
}

/// BNLL's [`ActivationKind`].
pub struct Bnll;
/// The BNLL layer, `ln(1 + exp(x))` (softplus), computed stably.
pub type BNLLLayer<B> = NeuronLayer<Activated<Bnll>, B>;

impl ActivationKind for Bnll {
    const TYPE: &'static str = "BNLL";
    fn activation(_param: &LayerParameter) -> Result<Activation, LayerError> {
        Ok(Activation::Bnll)
    }
}

/// Clip's [`ActivationKind`].
pub struct Clip;
/// The Clip layer, `max(min, min(x, max))` (`clip_param.min` and `clip_param.max`, both
/// required); the gradient passes where `min <= x <= max`.
pub type ClipLayer<B> = NeuronLayer<Activated<Clip>, B>;

impl ActivationKind for Clip {
    const TYPE: &'static str = "Clip";
    fn activation(param: &LayerParameter) -> Result<Activation, LayerError> {
        // Both fields are required in the schema, so a Clip layer without the message is
        // refused rather than clipping to [0, 0].
        let p = param
            .clip_param
            .ok_or_else(|| LayerError::invalid("Clip needs clip_param (min and max)"))?;
        let (min, max) = (p.min, p.max);
        if min.is_nan() || max.is_nan() || min > max {
            return Err(LayerError::invalid(format!(
                "clip_param.min ({min}) must not exceed clip_param.max ({max})"
            )));
        }
        Ok(Activation::Clip { min, max })
    }
}

/// Swish's [`ActivationKind`].
pub struct Swish;
/// The Swish layer, `x sigmoid(beta x)` (`swish_param.beta`, default 1).
pub type SwishLayer<B> = NeuronLayer<Activated<Swish>, B>;

impl ActivationKind for Swish {
    const TYPE: &'static str = "Swish";
    fn activation(param: &LayerParameter) -> Result<Activation, LayerError> {
        let beta = param.swish_param.unwrap_or_default().beta();
        Ok(Activation::Swish { beta })
    }
}

/// `x > threshold ? 1 : 0`, forward only (src/caffe/layers/threshold_layer.cpp).
pub struct Threshold {
    threshold: f32,
}
/// The Threshold layer (`threshold_param.threshold`, default 0).
pub type ThresholdLayer<B> = NeuronLayer<Threshold, B>;

impl NeuronFn for Threshold {
    const TYPE: &'static str = "Threshold";
    const HAS_BACKWARD: bool = false;
    fn from_param(param: &LayerParameter) -> Result<Self, LayerError> {
        let threshold = param.threshold_param.unwrap_or_default().threshold();
        Ok(Threshold { threshold })
    }
    fn needs_input(&self) -> bool {
        false
    }
    fn forward<B: Backend>(
        &self,
        be: &B,
        x: Src<'_, B::Buffer>,
        y: SliceMut<'_, B::Buffer>,
    ) -> Result<(), BackendError> {
        be.unary(Unary::Threshold(self.threshold), x, y)
    }
    fn backward<B: Backend>(
        &self,
        _be: &B,
        _x_y: (Slice<'_, B::Buffer>, Slice<'_, B::Buffer>),
        _dy: Src<'_, B::Buffer>,
        _dx: SliceMut<'_, B::Buffer>,
        _tmp: Option<SliceMut<'_, B::Buffer>>,
    ) -> Result<(), BackendError> {
        // NeuronLayer refuses the backward pass before it gets here (HAS_BACKWARD).
        Err(crate::backend::invalid(
            "Threshold backward",
            "Threshold has no backward pass",
        ))
    }
}

/// `|x|`; never in place, as upstream (src/caffe/layers/absval_layer.cpp).
pub struct AbsVal;
/// The AbsVal layer.
pub type AbsValLayer<B> = NeuronLayer<AbsVal, B>;

impl NeuronFn for AbsVal {
    const TYPE: &'static str = "AbsVal";
    const IN_PLACE: bool = false;
    fn from_param(_param: &LayerParameter) -> Result<Self, LayerError> {
        Ok(AbsVal)
    }
    fn needs_input(&self) -> bool {
        true
    }
    fn forward<B: Backend>(
        &self,
        be: &B,
        x: Src<'_, B::Buffer>,
        y: SliceMut<'_, B::Buffer>,
    ) -> Result<(), BackendError> {
        be.unary(Unary::Abs, x, y)
    }
    fn backward<B: Backend>(
        &self,
        be: &B,
        (x, _): (Slice<'_, B::Buffer>, Slice<'_, B::Buffer>),
        dy: Src<'_, B::Buffer>,
        dx: SliceMut<'_, B::Buffer>,
        tmp: Option<SliceMut<'_, B::Buffer>>,
    ) -> Result<(), BackendError> {
        times_dy(be, dy, dx, tmp, |g| be.unary(Unary::Sign, x.src(), g))
    }
}

/// `(shift + scale x)^power`.
pub struct Power {
    power: f32,
    scale: f32,
    shift: f32,
    /// `power * scale`, the derivative's constant factor.
    diff_scale: f32,
}
/// The Power layer (`power_param`: power 1, scale 1, shift 0).
pub type PowerLayer<B> = NeuronLayer<Power, B>;

impl NeuronFn for Power {
    const TYPE: &'static str = "Power";
    fn from_param(param: &LayerParameter) -> Result<Self, LayerError> {
        let p = param.power_param.unwrap_or_default();
        Ok(Power {
            power: p.power(),
            scale: p.scale(),
            shift: p.shift(),
            diff_scale: p.power() * p.scale(),
        })
    }
    fn needs_input(&self) -> bool {
        self.diff_scale != 0.0 && self.power != 1.0
    }
    fn forward<B: Backend>(
        &self,
        be: &B,
        x: Src<'_, B::Buffer>,
        y: SliceMut<'_, B::Buffer>,
    ) -> Result<(), BackendError> {
        if self.diff_scale == 0.0 {
            // The input is ignored: upstream (src/caffe/layers/power_layer.cpp) writes 1 for
            // power 0, else shift^power, even where x is not finite.
            let value = if self.power == 0.0 {
                1.0
            } else {
                self.shift.powf(self.power)
            };
            return be.fill(value, y);
        }
        let (power, scale, shift) = (self.power, self.scale, self.shift);
        be.unary(
            Unary::Power {
                power,
                scale,
                shift,
            },
            x,
            y,
        )
    }
    fn backward<B: Backend>(
        &self,
        be: &B,
        (x, _): (Slice<'_, B::Buffer>, Slice<'_, B::Buffer>),
        dy: Src<'_, B::Buffer>,
        dx: SliceMut<'_, B::Buffer>,
        tmp: Option<SliceMut<'_, B::Buffer>>,
    ) -> Result<(), BackendError> {
        if self.diff_scale == 0.0 {
            return be.fill(0.0, dx);
        }
        if self.power == 1.0 {
            return be.scale(self.diff_scale.into(), dy, dx);
        }
        // dy/dx = diff_scale (shift + scale x)^(power - 1). Upstream divides y by the base
        // instead, which is 0/0 where the base is 0; the value elsewhere is the same.
        let derivative_base = Unary::Power {
            power: self.power - 1.0,
            scale: self.scale,
            shift: self.shift,
        };
        times_dy(be, dy, dx, tmp, |mut g| {
            be.unary(derivative_base, x.src(), g.reborrow())?;
            be.scale(self.diff_scale.into(), Src::InPlace, g)
        })
    }
}

/// `ln(base)` for Exp and Log: base -1 means e; any other base must be positive and give a
/// finite logarithm (upstream: src/caffe/layers/exp_layer.cpp, log_layer.cpp).
fn log_base(field: &str, base: f32) -> Result<f32, LayerError> {
    if base == -1.0 {
        return Ok(1.0);
    }
    if base.is_nan() || base <= 0.0 {
        return Err(LayerError::invalid(format!(
            "{field}.base must be strictly positive (or -1 for e), got {base}"
        )));
    }
    let log_base = base.ln();
    if !log_base.is_finite() {
        return Err(LayerError::invalid(format!(
            "{field}.base {base} has no finite logarithm"
        )));
    }
    Ok(log_base)
}

/// `base^(shift + scale x)`, computed as `outer exp(inner x)`.
pub struct Exp {
    /// `ln(base) scale`.
    inner: f32,
    /// `base^shift`.
    outer: f32,
}
/// The Exp layer (`exp_param`: base -1 (e), scale 1, shift 0).
pub type ExpLayer<B> = NeuronLayer<Exp, B>;

impl NeuronFn for Exp {
    const TYPE: &'static str = "Exp";
    fn from_param(param: &LayerParameter) -> Result<Self, LayerError> {
        let p = param.exp_param.unwrap_or_default();
        let (base, shift) = (p.base(), p.shift());
        let ln_base = log_base("exp_param", base)?;
        let outer = if shift == 0.0 {
            1.0
        } else if base == -1.0 {
            shift.exp()
        } else {
            base.powf(shift)
        };
        Ok(Exp {
            inner: ln_base * p.scale(),
            outer,
        })
    }
    fn needs_input(&self) -> bool {
        false
    }
    fn forward<B: Backend>(
        &self,
        be: &B,
        x: Src<'_, B::Buffer>,
        mut y: SliceMut<'_, B::Buffer>,
    ) -> Result<(), BackendError> {
        if self.inner == 1.0 {
            be.unary(Unary::Exp, x, y.reborrow())?;
        } else {
            be.scale(self.inner.into(), x, y.reborrow())?;
            be.unary(Unary::Exp, Src::InPlace, y.reborrow())?;
        }
        if self.outer != 1.0 {
            be.scale(self.outer.into(), Src::InPlace, y)?;
        }
        Ok(())
    }
    fn backward<B: Backend>(
        &self,
        be: &B,
        (_, y): (Slice<'_, B::Buffer>, Slice<'_, B::Buffer>),
        dy: Src<'_, B::Buffer>,
        mut dx: SliceMut<'_, B::Buffer>,
        _tmp: Option<SliceMut<'_, B::Buffer>>,
    ) -> Result<(), BackendError> {
        be.binary(Binary::Mul, y.src(), dy, dx.reborrow())?;
        if self.inner != 1.0 {
            be.scale(self.inner.into(), Src::InPlace, dx)?;
        }
        Ok(())
    }
}

/// `log_base(shift + scale x)`.
pub struct Log {
    scale: f32,
    shift: f32,
    /// `1 / ln(base)`.
    base_scale: f32,
    /// `scale / ln(base)`.
    backward_scale: f32,
}
/// The Log layer (`log_param`: base -1 (e), scale 1, shift 0).
pub type LogLayer<B> = NeuronLayer<Log, B>;

impl NeuronFn for Log {
    const TYPE: &'static str = "Log";
    fn from_param(param: &LayerParameter) -> Result<Self, LayerError> {
        let p = param.log_param.unwrap_or_default();
        let ln_base = log_base("log_param", p.base())?;
        let base_scale = 1.0 / ln_base;
        if !base_scale.is_finite() {
            return Err(LayerError::invalid(format!(
                "log_param.base {} gives 1/ln(base) = {base_scale}",
                p.base()
            )));
        }
        Ok(Log {
            scale: p.scale(),
            shift: p.shift(),
            base_scale,
            backward_scale: p.scale() / ln_base,
        })
    }
    fn needs_input(&self) -> bool {
        true
    }
    fn forward<B: Backend>(
        &self,
        be: &B,
        x: Src<'_, B::Buffer>,
        mut y: SliceMut<'_, B::Buffer>,
    ) -> Result<(), BackendError> {
        if self.scale == 1.0 && self.shift == 0.0 {
            be.unary(Unary::Log, x, y.reborrow())?;
        } else {
            be.scale(self.scale.into(), x, y.reborrow())?;
            if self.shift != 0.0 {
                be.unary(Unary::AddScalar(self.shift), Src::InPlace, y.reborrow())?;
            }
            be.unary(Unary::Log, Src::InPlace, y.reborrow())?;
        }
        if self.base_scale != 1.0 {
            be.scale(self.base_scale.into(), Src::InPlace, y)?;
        }
        Ok(())
    }
    fn backward<B: Backend>(
        &self,
        be: &B,
        (x, _): (Slice<'_, B::Buffer>, Slice<'_, B::Buffer>),
        dy: Src<'_, B::Buffer>,
        dx: SliceMut<'_, B::Buffer>,
        tmp: Option<SliceMut<'_, B::Buffer>>,
    ) -> Result<(), BackendError> {
        // dy/dx = scale / (ln(base) (shift + scale x)).
        let reciprocal = Unary::Power {
            power: -1.0,
            scale: self.scale,
            shift: self.shift,
        };
        times_dy(be, dy, dx, tmp, |mut g| {
            be.unary(reciprocal, x.src(), g.reborrow())?;
            if self.backward_scale != 1.0 {
                be.scale(self.backward_scale.into(), Src::InPlace, g)?;
            }
            Ok(())
        })
    }
}
