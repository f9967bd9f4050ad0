//! The learning rate at each iteration: Caffe's `SGDSolver::GetLearningRate`
//! (upstream `src/caffe/solvers/sgd_solver.cpp`), plus the cyclical policies of Leslie Smith's
//! "Cyclical Learning Rates for Training Neural Networks".
//!
//! Upstream's policies are `fixed`, `step`, `exp`, `inv`, `multistep`, `poly` and `sigmoid`. The
//! paper adds `triangular` and `triangular2` (its appendix A code), `exp_range` and `decay` (its
//! text). All of them reproduce Caffe's single-precision build bit for bit: the parameters are
//! `f32`, and each formula keeps the C++ expression's mix of `float` and `double` arithmetic
//! before the result is rounded to `f32`; the comments on each policy say which parts are which.
//!
//! `exp_range` follows the paper: the whole triangle, both bounds, is scaled by `gamma^iter`,
//! `(base_lr + (max_lr - base_lr) * max(0, 1 - |x|)) * gamma^iter`. Keras' CLR callback and
//! PyTorch's `CyclicLR` instead scale only the amplitude, `base_lr + (max_lr - base_lr) * ... *
//! gamma^iter`, so their lower bound never decays; schedules from those libraries differ.
//!
//! A schedule is built and validated once from the solver parameters ([`LrSchedule::new`]);
//! [`LrSchedule::rate`] is then a function of the iteration and [`LrState`], the one counter
//! `multistep` (and `step`) carry from iteration to iteration and a `.solverstate` saves.

mod schedule;

pub use schedule::{write_lr_schedule, ScheduleError, SCHEDULE_EXTENSIONS};

use crate::proto::caffe::SolverParameter;

/// Every `lr_policy` name this module understands.
pub const POLICY_NAMES: [&str; 11] = [
    "fixed",
    "step",
    "exp",
    "inv",
    "multistep",
    "poly",
    "sigmoid",
    "triangular",
    "triangular2",
    "exp_range",
    "decay",
];

/// Why a solver's learning-rate settings cannot be used; found before training starts.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LrPolicyError {
    #[error("unknown lr_policy \"{name}\"; valid policies: {}", POLICY_NAMES.join(", "))]
    UnknownPolicy { name: String },
    /// A negative rate would climb the loss instead of descending it.
    #[error("base_lr must be at least 0 and finite, but base_lr is {base_lr}")]
    BaseLrOutOfRange { base_lr: f32 },
    #[error("lr_policy \"{policy}\" needs stepsize > 0, but stepsize is {stepsize}")]
    StepsizeNotPositive { policy: &'static str, stepsize: i32 },
    #[error("lr_policy \"{policy}\" needs max_lr, the upper bound of the cycle")]
    MissingMaxLr { policy: &'static str },
    #[error("lr_policy \"{policy}\": max_lr ({max_lr}) is below base_lr ({base_lr})")]
    MaxLrBelowBaseLr {
        policy: &'static str,
        max_lr: f32,
        base_lr: f32,
    },
    #[error("lr_policy \"{policy}\" needs gamma >= 0, but gamma is {gamma}")]
    NegativeGamma { policy: &'static str, gamma: f32 },
    #[error(
        "lr_policy \"multistep\" needs increasing stepvalues, but stepvalue {value} \
         (number {}) follows {previous}",
        .index + 1
    )]
    StepvaluesNotIncreasing {
        /// The 0-based index of the stepvalue at fault.
        index: usize,
        previous: i32,
        value: i32,
    },
    #[error("lr_policy \"poly\" needs max_iter > 0, but max_iter is {max_iter}")]
    MaxIterNotPositive { max_iter: i32 },
}

impl LrPolicyError {
    /// The solver field at fault and which of its values (0-based; `stepvalue` repeats).
    pub fn field(&self) -> (&'static str, usize) {
        match self {
            Self::UnknownPolicy { .. } => ("lr_policy", 0),
            Self::BaseLrOutOfRange { .. } => ("base_lr", 0),
            Self::StepsizeNotPositive { .. } => ("stepsize", 0),
            Self::MissingMaxLr { .. } | Self::MaxLrBelowBaseLr { .. } => ("max_lr", 0),
            Self::NegativeGamma { .. } => ("gamma", 0),
            Self::StepvaluesNotIncreasing { index, .. } => ("stepvalue", *index),
            Self::MaxIterNotPositive { .. } => ("max_iter", 0),
        }
    }
}

/// What the schedule carries from one iteration to the next: Caffe's `current_step_`, which a
/// `.solverstate` saves (`SolverState.current_step`) and a restore puts back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LrState {
    /// `multistep`: how many stepvalues have been passed; `step`: `iter / stepsize`.
    pub current_step: i32,
}

/// A validated learning-rate policy with its parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct LrSchedule {
    base_lr: f32,
    policy: Policy,
}

#[derive(Debug, Clone, PartialEq)]
enum Policy {
    Fixed,
    Step { gamma: f32, stepsize: i32 },
    Exp { gamma: f32 },
    Inv { gamma: f32, power: f32 },
    MultiStep { gamma: f32, stepvalues: Vec<i32> },
    Poly { power: f32, max_iter: i32 },
    Sigmoid { gamma: f32, stepsize: i32 },
    Triangular(Cycle),
    Triangular2(Cycle),
    ExpRange { cycle: Cycle, gamma: f32 },
    Decay(Cycle),
}

/// The parameters the paper's policies share.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Cycle {
    max_lr: f32,
    start: f32,
    stepsize: i32,
}

impl LrSchedule {
    /// Reads and checks `lr_policy` and the fields it uses, as upstream's CHECKs would (plus a
    /// `base_lr` of at least 0 and the paper's policies' own requirements), so that a bad solver
    /// fails before training.
    pub fn new(param: &SolverParameter) -> Result<Self, LrPolicyError> {
        let base_lr = param.base_lr();
        if !(base_lr.is_finite() && base_lr >= 0.0) {
            return Err(LrPolicyError::BaseLrOutOfRange { base_lr });
        }
        let gamma = param.gamma();
        let stepsize = param.stepsize();
        let name = param.lr_policy();
        let policy_name = POLICY_NAMES
            .iter()
            .copied()
            .find(|&known| known == name)
            .ok_or_else(|| LrPolicyError::UnknownPolicy {
                name: name.to_owned(),
            })?;
        let needs_stepsize = || {
            if stepsize > 0 {
                Ok(stepsize)
            } else {
                Err(LrPolicyError::StepsizeNotPositive {
                    policy: policy_name,
                    stepsize,
                })
            }
        };
        let needs_gamma = || {
            if gamma >= 0.0 {
                Ok(gamma)
            } else {
                Err(LrPolicyError::NegativeGamma {
                    policy: policy_name,
                    gamma,
                })
            }
        };
        let needs_cycle = || -> Result<Cycle, LrPolicyError> {
            let stepsize = needs_stepsize()?;
            let max_lr = param.max_lr.ok_or(LrPolicyError::MissingMaxLr {
                policy: policy_name,
            })?;
            if max_lr < base_lr {
                return Err(LrPolicyError::MaxLrBelowBaseLr {
                    policy: policy_name,
                    max_lr,
                    base_lr,
                });
            }
            Ok(Cycle {
                max_lr,
                start: param.start_lr_policy(),
                stepsize,
            })
        };
        let policy = match policy_name {
            "fixed" => Policy::Fixed,
            "step" => Policy::Step {
                stepsize: needs_stepsize()?,
                gamma: needs_gamma()?,
            },
            "exp" => Policy::Exp {
                gamma: needs_gamma()?,
            },
            "inv" => Policy::Inv {
                gamma: needs_gamma()?,
                power: param.power(),
            },
            "multistep" => {
                let stepvalues = param.stepvalue.clone();
                if let Some(index) = stepvalues.windows(2).position(|w| w[1] <= w[0]) {
                    return Err(LrPolicyError::StepvaluesNotIncreasing {
                        index: index + 1,
                        previous: stepvalues[index],
                        value: stepvalues[index + 1],
                    });
                }
                Policy::MultiStep {
                    gamma: needs_gamma()?,
                    stepvalues,
                }
            }
            "poly" => match param.max_iter() {
                max_iter if max_iter > 0 => Policy::Poly {
                    power: param.power(),
                    max_iter,
                },
                max_iter => return Err(LrPolicyError::MaxIterNotPositive { max_iter }),
            },
            // Upstream CHECKs gamma >= 0 here too, which rules out the decaying sigmoid its own
            // comment describes (the rate falls only when gamma < 0). We accept any gamma; the
            // golden reference table exercises gamma = -0.001.
            "sigmoid" => Policy::Sigmoid {
                stepsize: needs_stepsize()?,
                gamma,
            },
            "triangular" => Policy::Triangular(needs_cycle()?),
            "triangular2" => Policy::Triangular2(needs_cycle()?),
            "exp_range" => Policy::ExpRange {
                cycle: needs_cycle()?,
                gamma: needs_gamma()?,
            },
            "decay" => Policy::Decay(needs_cycle()?),
            _ => unreachable!("every name in POLICY_NAMES has an arm"),
        };
        Ok(Self { base_lr, policy })
    }

    /// The policy's name, as written in the solver file.
    pub fn policy_name(&self) -> &'static str {
        match self.policy {
            Policy::Fixed => "fixed",
            Policy::Step { .. } => "step",
            Policy::Exp { .. } => "exp",
            Policy::Inv { .. } => "inv",
            Policy::MultiStep { .. } => "multistep",
            Policy::Poly { .. } => "poly",
            Policy::Sigmoid { .. } => "sigmoid",
            Policy::Triangular(_) => "triangular",
            Policy::Triangular2(_) => "triangular2",
            Policy::ExpRange { .. } => "exp_range",
            Policy::Decay(_) => "decay",
        }
    }

    /// The learning rate at `iter`. `state` must be the one left by the previous iteration's call
    /// (or restored from a `.solverstate`, or default at iteration 0): `multistep` advances it by
    /// at most one step per call, as Caffe does, and `step` overwrites it.
    pub fn rate(&self, iter: u32, state: &mut LrState) -> f32 {
        let base_lr = self.base_lr;
        match &self.policy {
            Policy::Fixed => base_lr,
            // Caffe's int division; then pow(float, int) promotes both to double, and the
            // product with base_lr stays in double until it is stored as float.
            Policy::Step { gamma, stepsize } => {
                let step = i64::from(iter) / i64::from(*stepsize);
                state.current_step = i32::try_from(step).unwrap_or(i32::MAX);
                times_pow(base_lr, *gamma, f64::from(state.current_step))
            }
            Policy::Exp { gamma } => times_pow(base_lr, *gamma, f64::from(iter)),
            // All float: upstream's `pow(float, float)` resolves to `powf` (reference/README.md).
            Policy::Inv { gamma, power } => {
                let base = 1.0 + gamma * iter as f32;
                base_lr * base.powf(-power)
            }
            Policy::MultiStep { gamma, stepvalues } => {
                let next = usize::try_from(state.current_step)
                    .ok()
                    .and_then(|step| stepvalues.get(step));
                if next.is_some_and(|&value| i64::from(iter) >= i64::from(value)) {
                    state.current_step += 1;
                }
                times_pow(base_lr, *gamma, f64::from(state.current_step))
            }
            // All float, `powf` as for `inv`.
            Policy::Poly { power, max_iter } => {
                let base = 1.0 - iter as f32 / *max_iter as f32;
                base_lr * base.powf(*power)
            }
            // All float: upstream's `exp(float)` resolves to `expf`.
            Policy::Sigmoid { gamma, stepsize } => {
                let exponent = -gamma * (iter as f32 - *stepsize as f32);
                base_lr * (1.0 / (1.0 + exponent.exp()))
            }
            Policy::Triangular(cycle) => {
                let (_, height) = cycle.triangle(iter);
                cycle.between(base_lr, height)
            }
            // Each cycle halves the amplitude: dividing the double by 2^cycle is exact.
            Policy::Triangular2(cycle) => {
                let (number, height) = cycle.triangle(iter);
                cycle.between(base_lr, height / 2f64.powi(number))
            }
            // The paper's text: the whole triangle, in double, times gamma^iter (the absolute
            // iteration, not the one counted from start_lr_policy), stored as float.
            Policy::ExpRange { cycle, gamma } => {
                let (_, height) = cycle.triangle(iter);
                let amplitude = f64::from(cycle.max_lr - base_lr);
                let scale = f64::from(*gamma).powf(f64::from(iter));
                ((f64::from(base_lr) + amplitude * height) * scale) as f32
            }
            Policy::Decay(cycle) => {
                let since = cycle.iterations_since_start(iter);
                if since <= 0 {
                    cycle.max_lr
                } else if since >= i64::from(cycle.stepsize) {
                    base_lr
                } else {
                    // The span max_lr - base_lr is a float subtraction; the fraction of the
                    // way down and the rest are double.
                    let span = f64::from(cycle.max_lr - base_lr);
                    let fraction = since as f64 / f64::from(cycle.stepsize);
                    (f64::from(cycle.max_lr) - span * fraction) as f32
                }
            }
        }
    }

    /// The rates of iterations 0, 1, 2, …, each computed from the state its predecessor left.
    pub fn rates(&self) -> impl Iterator<Item = f32> + '_ {
        let mut state = LrState::default();
        (0..=u32::MAX).map(move |iter| self.rate(iter, &mut state))
    }
}

/// `base_lr * pow(base, exponent)` for `step`, `exp` and `multistep`, whose exponent is an int:
/// C++'s `pow(float, int)` promotes to double, so the power and the product are double, rounded
/// to float once.
fn times_pow(base_lr: f32, base: f32, exponent: f64) -> f32 {
    (f64::from(base_lr) * f64::from(base).powf(exponent)) as f32
}

impl Cycle {
    /// Iterations since the cycle started. The appendix code subtracts the float
    /// `start_lr_policy` from the int iteration in float, then truncates toward zero into an int;
    /// a fractional start thus shifts the schedule by the truncation.
    fn iterations_since_start(&self, iter: u32) -> i64 {
        (iter as f32 - self.start) as i64
    }

    /// The cycle number and the triangle's height in [0, 1] at `iter`: 0 at the start of each
    /// cycle, 1 at its middle. Before the start the height is 0, as the appendix code returns
    /// base_lr there. `x` is float, as in the appendix code (the division is a float division);
    /// doing it in double changes the last bit of some rates. `1 - |x|` and the max are double.
    fn triangle(&self, iter: u32) -> (i32, f64) {
        let since = self.iterations_since_start(iter).max(0);
        let stepsize = i64::from(self.stepsize);
        let number = since / (2 * stepsize);
        let x = (since - (2 * number + 1) * stepsize) as f32 / self.stepsize as f32;
        let height = (1.0 - f64::from(x.abs())).max(0.0);
        (i32::try_from(number).unwrap_or(i32::MAX), height)
    }

    /// `base_lr + (max_lr - base_lr) * height`: the span is a float subtraction, the rest double.
    fn between(&self, base_lr: f32, height: f64) -> f32 {
        (f64::from(base_lr) + f64::from(self.max_lr - base_lr) * height) as f32
    }
}
