//! The solver: the update rules, the training loop, snapshots and restores. (What `rcaffe train`
//! logs around it is tests/solver_train_log.rs, a binary of its own: it installs a logger.)
//!
//! One test binary for these modules, so CI links a handful of binaries rather than one per
//! file.

#[path = "../common/mod.rs"]
mod common;
mod solver_loop;
mod solver_rules;
