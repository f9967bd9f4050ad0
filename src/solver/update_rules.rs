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
use crate::backend::{Backend, Scalar, Src};
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
/// ops needs, `None` on a backend that fuses the rules ([`Backend::has_fused_updates`]).
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
    let n = param.count();
    let UpdateBuffers {
        history,
        mut history2,
        scratch,
    } = bufs;
    if backend.has_fused_updates() {
        let history2_data = history2.as_deref_mut().map(Blob::data_mut);
        let (g, h) = (param.diff_mut(), history.data_mut());
        backend.fused_update(rule, n, step, g, h, history2_data)?;
        return Ok(());
    }
    let Scratch { update, temp } = scratch.ok_or_else(|| {
        SolverError::Config(format!(
            "{}: the update composed from ops needs scratch blobs",
            rule.type_name()
        ))
    })?;
    let mut composed = ComposedUpdate {
        backend,
        n,
        param,
        history,
        history2,
        update,
        temp,
        step,
    };
    match *rule {
        UpdateRule::Sgd { momentum } => composed.sgd(momentum),
        UpdateRule::Nesterov { momentum } => composed.nesterov(momentum),
        UpdateRule::AdaGrad { delta } => composed.ada_grad(delta),
        UpdateRule::RmsProp { delta, rms_decay } => composed.rms_prop(delta, rms_decay),
        UpdateRule::AdaDelta { delta, momentum } => composed.ada_delta(delta, momentum),
        UpdateRule::Adam {
            beta1,
            beta2,
            eps_hat,
        } => composed.adam(beta1, beta2, eps_hat),
    }
}

/// An update rule composed from the backend's ops, one method per rule, on one parameter of `n`
/// elements: its diff holds the gradient and receives the update.
struct ComposedUpdate<'a, B: Backend> {
    backend: &'a B,
    n: usize,
    param: &'a mut Blob<B>,
    history: &'a mut Blob<B>,
    history2: Option<&'a mut Blob<B>>,
    update: &'a mut Blob<B>,
    temp: &'a mut Blob<B>,
    step: Scalar<'a, B::Buffer>,
}

impl<B: Backend> ComposedUpdate<'_, B> {
    fn sgd(&mut self, momentum: f32) -> Result<()> {
        let Self {
            backend,
            n,
            param,
            history,
            step,
            ..
        } = self;
        let (backend, n) = (*backend, *n);
        // history = step * g + momentum * history; g = history.
        backend.axpby(n, *step, param.diff(), 0, momentum, history.data_mut(), 0)?;
        backend.copy(n, history.data(), 0, param.diff_mut(), 0)?;
        Ok(())
    }

    fn nesterov(&mut self, momentum: f32) -> Result<()> {
        let Self {
            backend,
            n,
            param,
            history,
            update,
            step,
            ..
        } = self;
        let (backend, n) = (*backend, *n);
        // Keep the old history, take the momentum step, then step from the new history
        // corrected by the old: (1 + m) h_new - m h_old.
        backend.copy(n, history.data(), 0, update.data_mut(), 0)?;
        backend.axpby(n, *step, param.diff(), 0, momentum, history.data_mut(), 0)?;
        backend.axpby(
            n,
            1.0 + momentum,
            history.data(),
            0,
            -momentum,
            update.data_mut(),
            0,
        )?;
        backend.copy(n, update.data(), 0, param.diff_mut(), 0)?;
        Ok(())
    }

    fn ada_grad(&mut self, delta: f32) -> Result<()> {
        let Self {
            backend,
            n,
            param,
            history,
            update,
            ..
        } = self;
        let (backend, n) = (*backend, *n);
        // Accumulate g^2, then step lr * g / (sqrt(sum) + delta).
        backend.powx(n, Src::At(param.diff(), 0), 2.0, update.data_mut(), 0)?;
        backend.add(
            n,
            Src::At(update.data(), 0),
            Src::InPlace,
            history.data_mut(),
            0,
        )?;
        self.scaled_gradient_over_root(delta)
    }

    fn rms_prop(&mut self, delta: f32, rms_decay: f32) -> Result<()> {
        let Self {
            backend,
            n,
            param,
            history,
            update,
            ..
        } = self;
        let (backend, n) = (*backend, *n);
        // Leaky average of g^2, then the same step as AdaGrad.
        backend.powx(n, Src::At(param.diff(), 0), 2.0, update.data_mut(), 0)?;
        backend.axpby(
            n,
            1.0 - rms_decay,
            update.data(),
            0,
            rms_decay,
            history.data_mut(),
            0,
        )?;
        self.scaled_gradient_over_root(delta)
    }

    /// AdaGrad's and RMSProp's common tail: `g = step * g / (sqrt(history) + delta)`.
    fn scaled_gradient_over_root(&mut self, delta: f32) -> Result<()> {
        let Self {
            backend,
            n,
            param,
            history,
            update,
            step,
            ..
        } = self;
        let (backend, n) = (*backend, *n);
        backend.powx(n, Src::At(history.data(), 0), 0.5, update.data_mut(), 0)?;
        backend.add_scalar(n, delta, update.data_mut(), 0)?;
        backend.div(
            n,
            Src::At(param.diff(), 0),
            Src::InPlace,
            update.data_mut(),
            0,
        )?;
        backend.axpby(n, *step, update.data(), 0, 0.0, param.diff_mut(), 0)?;
        Ok(())
    }

    fn ada_delta(&mut self, delta: f32, momentum: f32) -> Result<()> {
        let Self {
            backend,
            n,
            param,
            history,
            history2,
            update,
            temp,
            step,
        } = self;
        let (backend, n) = (*backend, *n);
        let update_history = second(history2, "AdaDelta")?;
        // Leaky average of g^2.
        backend.powx(n, Src::At(param.diff(), 0), 2.0, update.data_mut(), 0)?;
        backend.axpby(
            n,
            1.0 - momentum,
            update.data(),
            0,
            momentum,
            history.data_mut(),
            0,
        )?;
        // update = sqrt((delta + E[dx^2]) / (delta + E[g^2])).
        backend.set(n, delta, temp.data_mut(), 0)?;
        backend.add(
            n,
            Src::At(temp.data(), 0),
            Src::At(update_history.data(), 0),
            update.data_mut(),
            0,
        )?;
        backend.add(
            n,
            Src::InPlace,
            Src::At(history.data(), 0),
            temp.data_mut(),
            0,
        )?;
        backend.div(
            n,
            Src::InPlace,
            Src::At(temp.data(), 0),
            update.data_mut(),
            0,
        )?;
        backend.powx(n, Src::InPlace, 0.5, update.data_mut(), 0)?;
        // g *= update: the unscaled step.
        backend.mul(
            n,
            Src::InPlace,
            Src::At(update.data(), 0),
            param.diff_mut(),
            0,
        )?;
        // Leaky average of the squared steps.
        backend.powx(n, Src::At(param.diff(), 0), 2.0, update.data_mut(), 0)?;
        backend.axpby(
            n,
            1.0 - momentum,
            update.data(),
            0,
            momentum,
            update_history.data_mut(),
            0,
        )?;
        // Upstream scales AdaDelta's step by the learning rate too.
        backend.scale(n, *step, Src::InPlace, param.diff_mut(), 0)?;
        Ok(())
    }

    fn adam(&mut self, beta1: f32, beta2: f32, eps_hat: f32) -> Result<()> {
        let Self {
            backend,
            n,
            param,
            history: m,
            history2,
            temp,
            step,
            ..
        } = self;
        let (backend, n) = (*backend, *n);
        let second_moment = second(history2, "Adam")?;
        backend.axpby(n, 1.0 - beta1, param.diff(), 0, beta1, m.data_mut(), 0)?;
        backend.mul(
            n,
            Src::At(param.diff(), 0),
            Src::At(param.diff(), 0),
            temp.data_mut(),
            0,
        )?;
        backend.axpby(
            n,
            1.0 - beta2,
            temp.data(),
            0,
            beta2,
            second_moment.data_mut(),
            0,
        )?;
        backend.powx(n, Src::At(second_moment.data(), 0), 0.5, temp.data_mut(), 0)?;
        backend.add_scalar(n, eps_hat, temp.data_mut(), 0)?;
        backend.div(n, Src::At(m.data(), 0), Src::InPlace, temp.data_mut(), 0)?;
        // The step is the rate times the bias correction.
        backend.scale(n, *step, Src::At(temp.data(), 0), param.diff_mut(), 0)?;
        Ok(())
    }
}

/// AdaDelta's and Adam's second history blob.
fn second<'a, B: Backend>(h: &'a mut Option<&mut Blob<B>>, rule: &str) -> Result<&'a mut Blob<B>> {
    h.as_deref_mut()
        .ok_or_else(|| SolverError::Config(format!("{rule}: missing its second history blob")))
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
    let n = param.count();
    match regularization {
        Regularization::L2 => {
            let (data, diff) = param.data_diff_mut();
            backend.axpy(n, local_decay, data, 0, diff, 0)?;
        }
        Regularization::L1 => {
            let temp = temp.ok_or_else(|| {
                SolverError::Config("L1 regularization needs a scratch blob".to_string())
            })?;
            backend.sign(n, Src::At(param.data(), 0), temp.data_mut(), 0)?;
            backend.axpy(n, local_decay, temp.data(), 0, param.diff_mut(), 0)?;
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
