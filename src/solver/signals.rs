//! What a signal asks the solver to do (upstream: `SolverAction`, `caffe train`'s
//! `-sigint_effect`/`-sighup_effect` and src/caffe/util/signal_handler.cpp).
//!
//! The solver polls an action source once per iteration (and once per test batch), as
//! upstream's `Step` and `Test` call their action function: [`SolverAction::Snapshot`] writes
//! a snapshot and goes on, [`SolverAction::Stop`] leaves the loop (the snapshot after training
//! is still written, and the log says "Optimization stopped early."). Sources: a
//! [`SignalHandler`] (real SIGINT/SIGHUP, through `signal-hook`'s flags) and [`ActionRequests`]
//! (a handle any thread or test can post an action to).

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;

/// What the solver is asked to do (upstream's `SolverAction::Enum`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SolverAction {
    /// Carry on.
    #[default]
    None,
    /// Leave the training loop (the snapshot after training is still written).
    Stop,
    /// Write a snapshot and carry on.
    Snapshot,
}

/// The effect names `-sigint_effect`/`-sighup_effect` accept.
pub const SIGNAL_EFFECTS: [&str; 3] = ["stop", "snapshot", "none"];

/// An effect name that is not one of [`SIGNAL_EFFECTS`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Invalid signal effect \"{0}\" was specified; valid effects are stop, snapshot and none")]
pub struct InvalidSignalEffect(pub String);

impl FromStr for SolverAction {
    type Err = InvalidSignalEffect;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "stop" => Ok(SolverAction::Stop),
            "snapshot" => Ok(SolverAction::Snapshot),
            "none" => Ok(SolverAction::None),
            other => Err(InvalidSignalEffect(other.to_string())),
        }
    }
}

impl SolverAction {
    fn to_u8(self) -> u8 {
        match self {
            SolverAction::None => 0,
            SolverAction::Stop => 1,
            SolverAction::Snapshot => 2,
        }
    }
    fn from_u8(v: u8) -> Self {
        match v {
            1 => SolverAction::Stop,
            2 => SolverAction::Snapshot,
            _ => SolverAction::None,
        }
    }
}

/// What SIGINT and SIGHUP do during `rcaffe train`; the default is upstream's (SIGINT stops,
/// SIGHUP snapshots).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignalEffects {
    /// `-sigint_effect`.
    pub sigint: SolverAction,
    /// `-sighup_effect`.
    pub sighup: SolverAction,
}

impl Default for SignalEffects {
    fn default() -> Self {
        Self {
            sigint: SolverAction::Stop,
            sighup: SolverAction::Snapshot,
        }
    }
}

impl SignalEffects {
    /// Parses the two flags' values; an unknown name is an error naming the valid ones.
    pub fn parse(sigint: &str, sighup: &str) -> Result<Self, InvalidSignalEffect> {
        Ok(Self {
            sigint: sigint.parse()?,
            sighup: sighup.parse()?,
        })
    }
}

/// A cloneable handle holding one pending action: [`ActionRequests::request`] posts one (a
/// later request replaces an earlier one not yet taken), [`ActionRequests::take`] returns and
/// clears it. Hand a clone to the solver with `solver.set_action_source(move || r.take())`
/// ([`super::Solver::set_action_source`]) or in [`super::TrainOptions::actions`].
#[derive(Debug, Clone, Default)]
pub struct ActionRequests(Arc<AtomicU8>);

impl ActionRequests {
    /// A handle with nothing pending.
    pub fn new() -> Self {
        Self::default()
    }
    /// Asks for `action` at the solver's next check.
    pub fn request(&self, action: SolverAction) {
        self.0.store(action.to_u8(), Ordering::SeqCst);
    }
    /// The pending action, cleared.
    pub fn take(&self) -> SolverAction {
        SolverAction::from_u8(self.0.swap(0, Ordering::SeqCst))
    }
}

/// Catches SIGINT and SIGHUP for as long as it lives (upstream's `SignalHandler`): each signal
/// sets a flag (`signal_hook::flag`), and [`SignalHandler::check`] maps a raised flag to its
/// effect. Once it is installed neither signal ends the process, whatever its effect (as
/// upstream, where `none` ignores the signal); dropping it unregisters the flags, but
/// signal-hook's handler stays, so the signals stay ignored for the rest of the process.
#[derive(Debug)]
pub struct SignalHandler {
    effects: SignalEffects,
    sigint: Arc<AtomicBool>,
    sighup: Arc<AtomicBool>,
    ids: Vec<signal_hook::SigId>,
}

impl SignalHandler {
    /// Installs the handlers.
    pub fn new(effects: SignalEffects) -> std::io::Result<Self> {
        use signal_hook::consts::{SIGHUP, SIGINT};
        let sigint = Arc::new(AtomicBool::new(false));
        let sighup = Arc::new(AtomicBool::new(false));
        let mut ids = Vec::with_capacity(2);
        ids.push(signal_hook::flag::register(SIGINT, Arc::clone(&sigint))?);
        match signal_hook::flag::register(SIGHUP, Arc::clone(&sighup)) {
            Ok(id) => ids.push(id),
            Err(e) => {
                signal_hook::low_level::unregister(ids[0]);
                return Err(e);
            }
        }
        Ok(Self {
            effects,
            sigint,
            sighup,
            ids,
        })
    }

    /// The effects it maps signals to.
    pub fn effects(&self) -> SignalEffects {
        self.effects
    }

    /// Upstream's `CheckForSignals`: the effect of a SIGHUP received since the last check,
    /// else of a SIGINT, else [`SolverAction::None`]; clears the flag it reports.
    pub fn check(&self) -> SolverAction {
        if self.sighup.swap(false, Ordering::SeqCst) {
            return self.effects.sighup;
        }
        if self.sigint.swap(false, Ordering::SeqCst) {
            return self.effects.sigint;
        }
        SolverAction::None
    }
}

impl Drop for SignalHandler {
    fn drop(&mut self) {
        for id in self.ids.drain(..) {
            signal_hook::low_level::unregister(id);
        }
    }
}
