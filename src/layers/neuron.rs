//! The element-wise neuron layers: ReLU, Sigmoid, TanH, ELU, AbsVal, Power, Exp, Log and BNLL
//! (upstream: `src/caffe/layers/<name>_layer.cpp`, all `NeuronLayer`s: one bottom, one top of
//! the same shape).
//!
//! Each is a [`NeuronLayer`] around an [`Activation`] that reads its parameters and computes
//! its forward and backward passes with backend ops. Every one but AbsVal runs in place. A
//! layer whose backward pass reads the forward input keeps a copy of it when in place (as
//! upstream's PReLU does); upstream's other layers read the overwritten input there instead
//! and get wrong gradients (Power, Log, BNLL, and ReLU / ELU with a negative slope / alpha).

use crate::backend::{Backend, BackendError, Src};
use crate::blob::Blob;
use crate::layers::{BlobCounts, Blobs, Context, InOut, Layer, LayerError, Params};
use crate::proto::caffe::LayerParameter;

/// What one element-wise neuron computes.
pub trait Activation: Send + Sized + 'static {
    /// The type string the registry knows the layer by.
    const TYPE: &'static str;
    /// Whether the top may be the bottom.
    const IN_PLACE: bool = true;

    /// Reads and checks the layer's parameters.
    fn from_param(param: &LayerParameter) -> Result<Self, LayerError>;

    /// Whether backward reads the forward input `x` (kept in a copy when in place).
    fn needs_input(&self) -> bool;

    /// `y = f(x)`.
    fn forward<B: Backend>(
        &self,
        b: &B,
        n: usize,
        x: Src<'_, B::Buffer>,
        y: &mut B::Buffer,
    ) -> Result<(), BackendError>;

    /// `dx = dy f'(x)`, with `x` and `y` the forward input and output (in place without
    /// [`Activation::needs_input`], `x` is the output). `dy` is [`Src::InPlace`] when in place;
    /// `tmp` (n elements) is then given if the layer needs its input.
    fn backward<B: Backend>(
        &self,
        b: &B,
        n: usize,
        io: (&B::Buffer, &B::Buffer),
        dy: Src<'_, B::Buffer>,
        dx: &mut B::Buffer,
        tmp: Option<&mut B::Buffer>,
    ) -> Result<(), BackendError>;
}

/// `dx = g dy`, with `g` written by `grad` into `dx` (when `dy` is another buffer) or `tmp`
/// (in place, where `dx` holds `dy`).
fn times_dy<B: Backend>(
    b: &B,
    n: usize,
    dy: Src<'_, B::Buffer>,
    dx: &mut B::Buffer,
    tmp: Option<&mut B::Buffer>,
    grad: impl FnOnce(&mut B::Buffer) -> Result<(), BackendError>,
) -> Result<(), BackendError> {
    match (dy, tmp) {
        (Src::At(dy, off), _) => {
            grad(dx)?;
            b.mul(n, Src::InPlace, Src::At(dy, off), dx, 0)
        }
        (Src::InPlace, Some(tmp)) => {
            grad(tmp)?;
            b.mul(n, Src::InPlace, Src::At(tmp, 0), dx, 0)
        }
        (Src::InPlace, None) => Err(crate::backend::invalid(
            "neuron backward",
            "an in-place gradient needs a scratch buffer",
        )),
    }
}

/// An element-wise neuron layer computing `A`.
pub struct NeuronLayer<A, B: Backend> {
    act: A,
    /// The forward input (data) and a scratch (diff), kept only in place when `A` needs them.
    saved: Option<Blob<B>>,
}

impl<A: Activation, B: Backend> NeuronLayer<A, B> {
    /// Reads the activation's parameters.
    pub fn new(param: &LayerParameter) -> Result<Self, LayerError> {
        Ok(NeuronLayer {
            act: A::from_param(param)?,
            saved: None,
        })
    }
}

impl<A: Activation, B: Backend> Layer<B> for NeuronLayer<A, B> {
    fn layer_type(&self) -> &'static str {
        A::TYPE
    }
    fn counts(&self) -> BlobCounts {
        BlobCounts::exactly(1, 1)
    }
    fn supports_in_place(&self) -> bool {
        A::IN_PLACE
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
        } else if self.act.needs_input() {
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
        let b = ctx.backend;
        match blobs.forward_io(0) {
            InOut::Separate { input, output } => {
                self.act.forward(
                    b,
                    input.count(),
                    Src::At(input.data(), 0),
                    output.data_mut(),
                )?;
            }
            InOut::Same(blob) => {
                let n = blob.count();
                if self.act.needs_input() {
                    let saved = self.saved.as_mut().ok_or_else(not_reshaped)?;
                    b.copy(n, blob.data(), 0, saved.data_mut(), 0)?;
                }
                self.act.forward(b, n, Src::InPlace, blob.data_mut())?;
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
        let b = ctx.backend;
        match blobs.backward_io(0) {
            InOut::Separate {
                input: top,
                output: bottom,
            } => {
                let n = top.count();
                let (x, dx) = bottom.data_diff_mut();
                let dy = Src::At(top.diff(), 0);
                self.act.backward(b, n, (&*x, top.data()), dy, dx, None)?;
            }
            InOut::Same(blob) => {
                let n = blob.count();
                let (y, dx) = blob.data_diff_mut();
                if self.act.needs_input() {
                    let saved = self.saved.as_mut().ok_or_else(not_reshaped)?;
                    let (x, tmp) = saved.data_diff_mut();
                    self.act
                        .backward(b, n, (&*x, &*y), Src::InPlace, dx, Some(tmp))?;
                } else {
                    self.act
                        .backward(b, n, (&*y, &*y), Src::InPlace, dx, None)?;
                }
            }
        }
        Ok(())
    }
}

fn not_reshaped() -> LayerError {
    LayerError::invalid("in-place neuron layer run before reshape")
}

/// `max(x, 0) + negative_slope min(x, 0)`.
pub struct Relu {
    slope: f32,
}
/// The ReLU layer (`relu_param.negative_slope`, default 0).
pub type ReLULayer<B> = NeuronLayer<Relu, B>;

impl Activation for Relu {
    const TYPE: &'static str = "ReLU";
    fn from_param(param: &LayerParameter) -> Result<Self, LayerError> {
        let p = param.relu_param.unwrap_or_default();
        Ok(Relu {
            slope: p.negative_slope(),
        })
    }
    fn needs_input(&self) -> bool {
        // With a slope >= 0 the output has the input's sign, which is all backward reads.
        self.slope < 0.0
    }
    fn forward<B: Backend>(
        &self,
        b: &B,
        n: usize,
        x: Src<'_, B::Buffer>,
        y: &mut B::Buffer,
    ) -> Result<(), BackendError> {
        b.relu_forward(n, self.slope, x, y, 0)
    }
    fn backward<B: Backend>(
        &self,
        b: &B,
        n: usize,
        (x, _): (&B::Buffer, &B::Buffer),
        dy: Src<'_, B::Buffer>,
        dx: &mut B::Buffer,
        _tmp: Option<&mut B::Buffer>,
    ) -> Result<(), BackendError> {
        b.relu_backward(n, self.slope, x, 0, dy, dx, 0)
    }
}

/// `1 / (1 + exp(-x))`.
pub struct Sigmoid;
/// The Sigmoid layer.
pub type SigmoidLayer<B> = NeuronLayer<Sigmoid, B>;

impl Activation for Sigmoid {
    const TYPE: &'static str = "Sigmoid";
    fn from_param(_param: &LayerParameter) -> Result<Self, LayerError> {
        Ok(Sigmoid)
    }
    fn needs_input(&self) -> bool {
        false
    }
    fn forward<B: Backend>(
        &self,
        b: &B,
        n: usize,
        x: Src<'_, B::Buffer>,
        y: &mut B::Buffer,
    ) -> Result<(), BackendError> {
        b.sigmoid_forward(n, x, y, 0)
    }
    fn backward<B: Backend>(
        &self,
        b: &B,
        n: usize,
        (_, y): (&B::Buffer, &B::Buffer),
        dy: Src<'_, B::Buffer>,
        dx: &mut B::Buffer,
        _tmp: Option<&mut B::Buffer>,
    ) -> Result<(), BackendError> {
        b.sigmoid_backward(n, y, 0, dy, dx, 0)
    }
}

/// `tanh(x)`.
pub struct TanH;
/// The TanH layer.
pub type TanHLayer<B> = NeuronLayer<TanH, B>;

impl Activation for TanH {
    const TYPE: &'static str = "TanH";
    fn from_param(_param: &LayerParameter) -> Result<Self, LayerError> {
        Ok(TanH)
    }
    fn needs_input(&self) -> bool {
        false
    }
    fn forward<B: Backend>(
        &self,
        b: &B,
        n: usize,
        x: Src<'_, B::Buffer>,
        y: &mut B::Buffer,
    ) -> Result<(), BackendError> {
        b.tanh_forward(n, x, y, 0)
    }
    fn backward<B: Backend>(
        &self,
        b: &B,
        n: usize,
        (_, y): (&B::Buffer, &B::Buffer),
        dy: Src<'_, B::Buffer>,
        dx: &mut B::Buffer,
        _tmp: Option<&mut B::Buffer>,
    ) -> Result<(), BackendError> {
        b.tanh_backward(n, y, 0, dy, dx, 0)
    }
}

/// `max(x, 0) + alpha (exp(min(x, 0)) - 1)`.
pub struct Elu {
    alpha: f32,
}
/// The ELU layer (`elu_param.alpha`, default 1).
pub type ELULayer<B> = NeuronLayer<Elu, B>;

impl Activation for Elu {
    const TYPE: &'static str = "ELU";
    fn from_param(param: &LayerParameter) -> Result<Self, LayerError> {
        let p = param.elu_param.unwrap_or_default();
        Ok(Elu { alpha: p.alpha() })
    }
    fn needs_input(&self) -> bool {
        // With alpha >= 0 the output has the input's sign, and backward reads only that.
        self.alpha < 0.0
    }
    fn forward<B: Backend>(
        &self,
        b: &B,
        n: usize,
        x: Src<'_, B::Buffer>,
        y: &mut B::Buffer,
    ) -> Result<(), BackendError> {
        b.elu_forward(n, self.alpha, x, y, 0)
    }
    fn backward<B: Backend>(
        &self,
        b: &B,
        n: usize,
        (x, y): (&B::Buffer, &B::Buffer),
        dy: Src<'_, B::Buffer>,
        dx: &mut B::Buffer,
        _tmp: Option<&mut B::Buffer>,
    ) -> Result<(), BackendError> {
        b.elu_backward(n, self.alpha, x, 0, y, 0, dy, dx, 0)
    }
}

/// `|x|`; never in place, as upstream (src/caffe/layers/absval_layer.cpp).
pub struct AbsVal;
/// The AbsVal layer.
pub type AbsValLayer<B> = NeuronLayer<AbsVal, B>;

impl Activation for AbsVal {
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
        b: &B,
        n: usize,
        x: Src<'_, B::Buffer>,
        y: &mut B::Buffer,
    ) -> Result<(), BackendError> {
        b.abs(n, x, y, 0)
    }
    fn backward<B: Backend>(
        &self,
        b: &B,
        n: usize,
        (x, _): (&B::Buffer, &B::Buffer),
        dy: Src<'_, B::Buffer>,
        dx: &mut B::Buffer,
        tmp: Option<&mut B::Buffer>,
    ) -> Result<(), BackendError> {
        times_dy(b, n, dy, dx, tmp, |g| b.sign(n, Src::At(x, 0), g, 0))
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

impl Activation for Power {
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
        b: &B,
        n: usize,
        x: Src<'_, B::Buffer>,
        y: &mut B::Buffer,
    ) -> Result<(), BackendError> {
        if self.diff_scale == 0.0 {
            // The input is ignored: upstream (src/caffe/layers/power_layer.cpp) writes 1 for
            // power 0, else shift^power, even where x is not finite.
            let value = if self.power == 0.0 {
                1.0
            } else {
                self.shift.powf(self.power)
            };
            return b.set(n, value, y, 0);
        }
        b.power(n, x, self.power, self.scale, self.shift, y, 0)
    }
    fn backward<B: Backend>(
        &self,
        b: &B,
        n: usize,
        (x, _): (&B::Buffer, &B::Buffer),
        dy: Src<'_, B::Buffer>,
        dx: &mut B::Buffer,
        tmp: Option<&mut B::Buffer>,
    ) -> Result<(), BackendError> {
        if self.diff_scale == 0.0 {
            return b.set(n, 0.0, dx, 0);
        }
        if self.power == 1.0 {
            return b.scale(n, self.diff_scale, dy, dx, 0);
        }
        // dy/dx = diff_scale (shift + scale x)^(power - 1). Upstream divides y by the base
        // instead, which is 0/0 where the base is 0; the value elsewhere is the same.
        times_dy(b, n, dy, dx, tmp, |g| {
            let (p, s, t) = (self.power - 1.0, self.scale, self.shift);
            b.power(n, Src::At(x, 0), p, s, t, g, 0)?;
            b.scale(n, self.diff_scale, Src::InPlace, g, 0)
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

impl Activation for Exp {
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
        b: &B,
        n: usize,
        x: Src<'_, B::Buffer>,
        y: &mut B::Buffer,
    ) -> Result<(), BackendError> {
        if self.inner == 1.0 {
            b.exp(n, x, y, 0)?;
        } else {
            b.scale(n, self.inner, x, y, 0)?;
            b.exp(n, Src::InPlace, y, 0)?;
        }
        if self.outer != 1.0 {
            b.scale(n, self.outer, Src::InPlace, y, 0)?;
        }
        Ok(())
    }
    fn backward<B: Backend>(
        &self,
        b: &B,
        n: usize,
        (_, y): (&B::Buffer, &B::Buffer),
        dy: Src<'_, B::Buffer>,
        dx: &mut B::Buffer,
        _tmp: Option<&mut B::Buffer>,
    ) -> Result<(), BackendError> {
        b.mul(n, Src::At(y, 0), dy, dx, 0)?;
        if self.inner != 1.0 {
            b.scale(n, self.inner, Src::InPlace, dx, 0)?;
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

impl Activation for Log {
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
        b: &B,
        n: usize,
        x: Src<'_, B::Buffer>,
        y: &mut B::Buffer,
    ) -> Result<(), BackendError> {
        if self.scale == 1.0 && self.shift == 0.0 {
            b.log(n, x, y, 0)?;
        } else {
            b.scale(n, self.scale, x, y, 0)?;
            if self.shift != 0.0 {
                b.add_scalar(n, self.shift, y, 0)?;
            }
            b.log(n, Src::InPlace, y, 0)?;
        }
        if self.base_scale != 1.0 {
            b.scale(n, self.base_scale, Src::InPlace, y, 0)?;
        }
        Ok(())
    }
    fn backward<B: Backend>(
        &self,
        b: &B,
        n: usize,
        (x, _): (&B::Buffer, &B::Buffer),
        dy: Src<'_, B::Buffer>,
        dx: &mut B::Buffer,
        tmp: Option<&mut B::Buffer>,
    ) -> Result<(), BackendError> {
        // dy/dx = scale / (ln(base) (shift + scale x)).
        times_dy(b, n, dy, dx, tmp, |g| {
            b.power(n, Src::At(x, 0), -1.0, self.scale, self.shift, g, 0)?;
            if self.backward_scale != 1.0 {
                b.scale(n, self.backward_scale, Src::InPlace, g, 0)?;
            }
            Ok(())
        })
    }
}

/// `ln(1 + exp(x))` (softplus), computed stably.
pub struct Bnll;
/// The BNLL layer.
pub type BNLLLayer<B> = NeuronLayer<Bnll, B>;

impl Activation for Bnll {
    const TYPE: &'static str = "BNLL";
    fn from_param(_param: &LayerParameter) -> Result<Self, LayerError> {
        Ok(Bnll)
    }
    fn needs_input(&self) -> bool {
        true
    }
    fn forward<B: Backend>(
        &self,
        b: &B,
        n: usize,
        x: Src<'_, B::Buffer>,
        y: &mut B::Buffer,
    ) -> Result<(), BackendError> {
        b.bnll_forward(n, x, y, 0)
    }
    fn backward<B: Backend>(
        &self,
        b: &B,
        n: usize,
        (x, _): (&B::Buffer, &B::Buffer),
        dy: Src<'_, B::Buffer>,
        dx: &mut B::Buffer,
        _tmp: Option<&mut B::Buffer>,
    ) -> Result<(), BackendError> {
        b.bnll_backward(n, x, 0, dy, dx, 0)
    }
}
