//! The six update rules: how a parameter's (normalised, regularised) gradient becomes the value
//! `Net::update` subtracts from it.
//!
//! Each rule follows upstream's CPU path (src/caffe/solvers/{sgd,nesterov,adagrad,rmsprop,
//! adadelta,adam}_solver.cpp) op by op, in f32, through the backend's ops, so that the rounding
//! is the same as upstream's: the order of the operations below is part of the specification.
//! A backend with the rules fused ([`Backend::fused_update`], the CUDA backend: upstream's
//! `*_update_gpu` kernels) runs each in one pass instead, as upstream's GPU path does.
//!
//! History blobs are laid out as upstream's `history_` vector: one per learnable parameter, and
//! for AdaDelta and Adam a second set appended after the first (AdaDelta: the accumulated squared
//! updates; Adam: the second moment). A `.solverstate` stores them in that order.

pub use crate::backend::UpdateRule;
use crate::backend::{Backend, Binary, Scalar, Src, Unary};
use crate::blob::Blob;
use crate::proto::caffe::SolverParameter;

use super::{FieldError, Result, SolverError};

/// The solver types this build knows, as `SolverParameter.type` names them.
pub const SOLVER_TYPES: [&str; 6] = ["SGD", "Nesterov", "AdaGrad", "RMSProp", "AdaDelta", "Adam"];

impl UpdateRule {
    /// Reads `param.type` and the fields the rule uses, with upstream's constructor checks
    /// (AdaGrad and RMSProp refuse momentum; RMSProp needs `0 <= rms_decay < 1`) and the same
    /// range for every other decay rate (`momentum`, Adam's `momentum2`: at 1 or above the
    /// history never fades) and `delta >= 0` where the rule divides by it.
    pub fn from_param(param: &SolverParameter) -> std::result::Result<Self, FieldError> {
        let momentum = || decay_rate("momentum", param.momentum());
        let delta = || at_least_zero("delta", param.delta());
        match param.r#type() {
            "SGD" => Ok(Self::Sgd {
                momentum: momentum()?,
            }),
            "Nesterov" => Ok(Self::Nesterov {
                momentum: momentum()?,
            }),
            "AdaGrad" => {
                refuse_momentum(param, "AdaGrad")?;
                Ok(Self::AdaGrad { delta: delta()? })
            }
            "RMSProp" => {
                refuse_momentum(param, "RMSProp")?;
                Ok(Self::RmsProp {
                    delta: delta()?,
                    rms_decay: decay_rate("rms_decay", param.rms_decay())?,
                })
            }
            "AdaDelta" => Ok(Self::AdaDelta {
                delta: delta()?,
                momentum: momentum()?,
            }),
            "Adam" => Ok(Self::Adam {
                beta1: momentum()?,
                beta2: decay_rate("momentum2", param.momentum2())?,
                eps_hat: delta()?,
            }),
            other => Err(FieldError::new(
                "type",
                format!(
                    "unknown solver type \"{other}\"; valid types: {}",
                    SOLVER_TYPES.join(", ")
                ),
            )),
        }
    }

    /// The factor of the rule's last multiplication: `local_rate` (the rate times the
    /// parameter's `lr_mult`), for Adam times the bias correction of iteration `iter` (at
    /// `t = iter + 1`). Upstream computes the correction with pow(float, int), which C++
    /// evaluates in double, stores it as float, then multiplies in float: so do we.
    pub fn step_scale(&self, local_rate: f32, iter: i32) -> f32 {
        match *self {
            Self::Adam { beta1, beta2, .. } => {
                let t = iter + 1;
                let correction = ((1.0 - f64::from(beta2).powi(t)).sqrt()
                    / (1.0 - f64::from(beta1).powi(t))) as f32;
                local_rate * correction
            }
            _ => local_rate,
        }
    }

    /// How many history blobs the rule keeps per learnable parameter (1 or 2).
    pub fn history_sets(&self) -> usize {
        match self {
            Self::AdaDelta { .. } | Self::Adam { .. } => 2,
            _ => 1,
        }
    }
}

/// Upstream's check of AdaGrad and RMSProp, which have no momentum term.
fn refuse_momentum(param: &SolverParameter, rule: &str) -> std::result::Result<(), FieldError> {
    let momentum = param.momentum();
    if momentum == 0.0 {
        return Ok(());
    }
    Err(FieldError::new(
        "momentum",
        format!(
            "Momentum cannot be used with {rule} (momentum is {momentum}; remove it or set it to \
             0)"
        ),
    ))
}

/// `value` when it lies in [0, 1), as the fraction of a history kept from one iteration to the
/// next must.
fn decay_rate(field: &'static str, value: f32) -> std::result::Result<f32, FieldError> {
    if (0.0..1.0).contains(&value) {
        Ok(value)
    } else {
        Err(FieldError::new(
            field,
            format!("should lie between 0 and 1, 1 excluded (it is {value})"),
        ))
    }
}

/// `value` when it is finite and at least 0.
fn at_least_zero(field: &'static str, value: f32) -> std::result::Result<f32, FieldError> {
    if value.is_finite() && value >= 0.0 {
        Ok(value)
    } else {
        Err(FieldError::new(
            field,
            format!("should be at least 0 and finite (it is {value})"),
        ))
    }
}

/// The per-parameter buffers a rule works with. `history2` is the second history blob of
/// AdaDelta and Adam (`history_[N + i]` upstream); `scratch` is what composing the rule from
/// ops needs, `None` on a backend that fuses the rules ([`Capabilities::fused_updates`](crate::backend::Capabilities::fused_updates)).
pub struct UpdateBuffers<'a, B: Backend> {
    pub history: &'a mut Blob<B>,
    pub history2: Option<&'a mut Blob<B>>,
    pub scratch: Option<Scratch<'a, B>>,
}

/// Two scratch blobs of a parameter's shape, for the composed update rules.
pub struct Scratch<'a, B: Backend> {
    pub update: &'a mut Blob<B>,
    pub temp: &'a mut Blob<B>,
}

fn second<'a, B: Backend>(h: &'a mut Option<&mut Blob<B>>, rule: &str) -> Result<&'a mut Blob<B>> {
    h.as_deref_mut()
        .ok_or_else(|| SolverError::Config(format!("{rule}: missing its second history blob")))
}

/// Replaces `param`'s diff with the value to subtract from its data (upstream's
/// `ComputeUpdateValue`). `step` is [`UpdateRule::step_scale`] of this parameter's rate and
/// iteration; the solver keeps it in a device buffer, so that recorded work (a CUDA graph)
/// reads each iteration's value when replayed.
pub fn compute_update_value<B: Backend>(
    rule: &UpdateRule,
    backend: &B,
    param: &mut Blob<B>,
    bufs: UpdateBuffers<'_, B>,
    step: Scalar<'_, B::Buffer>,
) -> Result<()> {
    let UpdateBuffers {
        history,
        mut history2,
        scratch,
    } = bufs;
    if backend.capabilities().fused_updates {
        let history2 = history2.as_deref_mut().map(Blob::data_view_mut);
        let (g, h) = (param.diff_view_mut(), history.data_view_mut());
        backend.fused_update(rule, step, g, h, history2)?;
        return Ok(());
    }
    let scratch = scratch.ok_or_else(|| {
        SolverError::Config(format!(
            "{}: the update composed from ops needs scratch blobs",
            rule.type_name()
        ))
    })?;
    let composed = Composed {
        backend,
        step,
        param,
        history,
        scratch,
    };
    match *rule {
        UpdateRule::Sgd { momentum } => composed.sgd(momentum),
        UpdateRule::Nesterov { momentum } => composed.nesterov(momentum),
        UpdateRule::AdaGrad { delta } => composed.adagrad(delta),
        UpdateRule::RmsProp { delta, rms_decay } => composed.rmsprop(delta, rms_decay),
        UpdateRule::AdaDelta { delta, momentum } => {
            let update_history = second(&mut history2, "AdaDelta")?;
            composed.adadelta(delta, momentum, update_history)
        }
        UpdateRule::Adam {
            beta1,
            beta2,
            eps_hat,
        } => {
            let second_moment = second(&mut history2, "Adam")?;
            composed.adam((beta1, beta2), eps_hat, second_moment)
        }
    }
}

/// One parameter's update composed from ops, as upstream's CPU path computes each rule: `g`
/// is the parameter's diff, `h` its history, `update` and `temp` scratch of its size.
struct Composed<'a, 's, B: Backend> {
    backend: &'a B,
    step: Scalar<'s, B::Buffer>,
    param: &'a mut Blob<B>,
    history: &'a mut Blob<B>,
    scratch: Scratch<'a, B>,
}

impl<B: Backend> Composed<'_, '_, B> {
    /// `h = step g + momentum h; g = h`.
    fn sgd(self, momentum: f32) -> Result<()> {
        let be = self.backend;
        be.axpby(
            self.step,
            self.param.diff_view(),
            momentum,
            self.history.data_view_mut(),
        )?;
        be.copy(self.history.data_view(), self.param.diff_view_mut())?;
        Ok(())
    }

    /// Keeps the old history, takes the momentum step, then steps from the new history
    /// corrected by the old: `(1 + m) h_new - m h_old`.
    fn nesterov(self, momentum: f32) -> Result<()> {
        let (be, update) = (self.backend, self.scratch.update);
        be.copy(self.history.data_view(), update.data_view_mut())?;
        be.axpby(
            self.step,
            self.param.diff_view(),
            momentum,
            self.history.data_view_mut(),
        )?;
        let corrected = Scalar::Value(1.0 + momentum);
        be.axpby(
            corrected,
            self.history.data_view(),
            -momentum,
            update.data_view_mut(),
        )?;
        be.copy(update.data_view(), self.param.diff_view_mut())?;
        Ok(())
    }

    /// Accumulates `g^2`, then steps `lr g / (sqrt(sum) + delta)`.
    fn adagrad(self, delta: f32) -> Result<()> {
        let be = self.backend;
        let update = &mut *self.scratch.update;
        be.unary(
            Unary::Powx(2.0),
            self.param.diff_view().src(),
            update.data_view_mut(),
        )?;
        be.binary(
            Binary::Add,
            update.data_view().src(),
            Src::InPlace,
            self.history.data_view_mut(),
        )?;
        self.scaled_gradient_over_root(delta)
    }

    /// A leaky average of `g^2`, then the same step as AdaGrad.
    fn rmsprop(self, delta: f32, rms_decay: f32) -> Result<()> {
        let be = self.backend;
        let update = &mut *self.scratch.update;
        be.unary(
            Unary::Powx(2.0),
            self.param.diff_view().src(),
            update.data_view_mut(),
        )?;
        let fresh = Scalar::Value(1.0 - rms_decay);
        be.axpby(
            fresh,
            update.data_view(),
            rms_decay,
            self.history.data_view_mut(),
        )?;
        self.scaled_gradient_over_root(delta)
    }

    /// AdaGrad's and RMSProp's common tail: `g = step g / (sqrt(history) + delta)`.
    fn scaled_gradient_over_root(self, delta: f32) -> Result<()> {
        let (be, update) = (self.backend, self.scratch.update);
        be.unary(
            Unary::Powx(0.5),
            self.history.data_view().src(),
            update.data_view_mut(),
        )?;
        be.unary(
            Unary::AddScalar(delta),
            Src::InPlace,
            update.data_view_mut(),
        )?;
        let g = self.param.diff_view().src();
        be.binary(Binary::Div, g, Src::InPlace, update.data_view_mut())?;
        be.axpby(
            self.step,
            update.data_view(),
            0.0,
            self.param.diff_view_mut(),
        )?;
        Ok(())
    }

    /// Zeiler's AdaDelta with `update_history` the leaky average of the squared steps, scaled
    /// by the learning rate as upstream does.
    fn adadelta(self, delta: f32, momentum: f32, update_history: &mut Blob<B>) -> Result<()> {
        let be = self.backend;
        let Scratch { update, temp } = self.scratch;
        let (param, history) = (self.param, self.history);
        let fresh = Scalar::Value(1.0 - momentum);
        // Leaky average of g^2.
        be.unary(
            Unary::Powx(2.0),
            param.diff_view().src(),
            update.data_view_mut(),
        )?;
        be.axpby(fresh, update.data_view(), momentum, history.data_view_mut())?;
        // update = sqrt((delta + E[dx^2]) / (delta + E[g^2])).
        be.fill(delta, temp.data_view_mut())?;
        be.binary(
            Binary::Add,
            temp.data_view().src(),
            update_history.data_view().src(),
            update.data_view_mut(),
        )?;
        be.binary(
            Binary::Add,
            Src::InPlace,
            history.data_view().src(),
            temp.data_view_mut(),
        )?;
        be.binary(
            Binary::Div,
            Src::InPlace,
            temp.data_view().src(),
            update.data_view_mut(),
        )?;
        be.unary(Unary::Powx(0.5), Src::InPlace, update.data_view_mut())?;
        // g *= update: the unscaled step.
        be.binary(
            Binary::Mul,
            Src::InPlace,
            update.data_view().src(),
            param.diff_view_mut(),
        )?;
        // Leaky average of the squared steps.
        be.unary(
            Unary::Powx(2.0),
            param.diff_view().src(),
            update.data_view_mut(),
        )?;
        be.axpby(
            fresh,
            update.data_view(),
            momentum,
            update_history.data_view_mut(),
        )?;
        // Upstream scales AdaDelta's step by the learning rate too.
        be.scale(self.step, Src::InPlace, param.diff_view_mut())?;
        Ok(())
    }

    /// Kingma & Ba's Adam: `h` the first moment, `second_moment` the second; the step is the
    /// rate times the bias correction.
    fn adam(
        self,
        (beta1, beta2): (f32, f32),
        eps_hat: f32,
        second_moment: &mut Blob<B>,
    ) -> Result<()> {
        let be = self.backend;
        let temp = self.scratch.temp;
        let (param, m) = (self.param, self.history);
        let g = param.diff_view();
        be.axpby(Scalar::Value(1.0 - beta1), g, beta1, m.data_view_mut())?;
        be.binary(Binary::Mul, g.src(), g.src(), temp.data_view_mut())?;
        let fresh = Scalar::Value(1.0 - beta2);
        be.axpby(
            fresh,
            temp.data_view(),
            beta2,
            second_moment.data_view_mut(),
        )?;
        let v = second_moment.data_view().src();
        be.unary(Unary::Powx(0.5), v, temp.data_view_mut())?;
        be.unary(
            Unary::AddScalar(eps_hat),
            Src::InPlace,
            temp.data_view_mut(),
        )?;
        be.binary(
            Binary::Div,
            m.data_view().src(),
            Src::InPlace,
            temp.data_view_mut(),
        )?;
        be.scale(self.step, temp.data_view().src(), param.diff_view_mut())?;
        Ok(())
    }
}

/// Upstream's `Regularize`: adds the weight decay's gradient to `param`'s diff. `local_decay` is
/// `weight_decay * decay_mult`; nothing happens when it is 0. `temp` receives `sign(data)` for L1
/// (needed only then).
pub fn regularize<B: Backend>(
    backend: &B,
    regularization: Regularization,
    local_decay: f32,
    param: &mut Blob<B>,
    temp: Option<&mut Blob<B>>,
) -> Result<()> {
    if local_decay == 0.0 {
        return Ok(());
    }
    let decay = Scalar::Value(local_decay);
    match regularization {
        Regularization::L2 => {
            let (data, diff) = param.data_and_diff_mut();
            backend.axpby(decay, data, 1.0, diff)?;
        }
        Regularization::L1 => {
            let temp = temp.ok_or_else(|| {
                SolverError::Config("L1 regularization needs a scratch blob".to_string())
            })?;
            backend.unary(Unary::Sign, param.data_view().src(), temp.data_view_mut())?;
            backend.axpby(decay, temp.data_view(), 1.0, param.diff_view_mut())?;
        }
    }
    Ok(())
}

/// `regularization_type`: L2 (`decay * w`) or L1 (`decay * sign(w)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Regularization {
    L2,
    L1,
}

impl Regularization {
    /// Reads `param.regularization_type` ("L2" by default) and checks `weight_decay`, its
    /// strength: a negative one would push the weights away from 0.
    pub fn from_param(param: &SolverParameter) -> std::result::Result<Self, FieldError> {
        at_least_zero("weight_decay", param.weight_decay())?;
        match param.regularization_type() {
            "L2" => Ok(Self::L2),
            "L1" => Ok(Self::L1),
            other => Err(FieldError::new(
                "regularization_type",
                format!("Unknown regularization type: \"{other}\"; valid types: L2, L1"),
            )),
        }
    }
}
