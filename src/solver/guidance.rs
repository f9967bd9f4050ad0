//! The paper's guidance for the cyclic policies, as `Solver::solve` logs it: how many
//! iterations an epoch of the train net's data is, a warning when `stepsize` is outside the
//! paper's 2–10 epochs, and the iterations where cycles end (where the paper stops training or
//! tests). The range test (`crate::lr_range`) counts its length in the same epochs.

use std::path::Path;

use crate::data::Lmdb;
use crate::net::filter::filter_net;
use crate::proto::caffe::{LayerParameter, SolverParameter};
use crate::proto::resolve_solver_nets;

/// The paper's recommended half-cycle length, in epochs.
pub const STEPSIZE_EPOCHS: std::ops::RangeInclusive<f64> = 2.0..=10.0;

// ---- epochs --------------------------------------------------------------------------------

/// The training set a train net reads, and how many iterations one pass over it takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Epoch {
    /// The Data layer's LMDB (or the ImageData layer's list file).
    pub source: String,
    /// Records (images) in the source.
    pub images: u64,
    /// Images per forward pass.
    pub batch_size: u64,
    /// Forward passes per iteration (the solver's `iter_size`).
    pub iter_size: u64,
}

impl Epoch {
    /// Iterations per epoch: images / (batch size × iter_size), rounded up.
    pub fn iterations(&self) -> u64 {
        self.images
            .div_ceil((self.batch_size * self.iter_size).max(1))
    }
}

/// The epoch of the first `Data` (LMDB) or `ImageData` layer among `layers` (a train net's, after
/// its include/exclude rules), with `iter_size` passes per iteration; `None` when no such layer
/// has a source that can be counted. Sources are opened relative to the working directory, as
/// the layers open them.
pub fn epoch_of_layers<'a>(
    layers: impl IntoIterator<Item = &'a LayerParameter>,
    iter_size: i32,
) -> Option<Epoch> {
    let iter_size = u64::try_from(iter_size.max(1)).unwrap_or(1);
    layers
        .into_iter()
        .find_map(|layer| match layer.r#type() {
            "Data" => {
                let data = layer.data_param.as_ref()?;
                let images = Lmdb::open(Path::new(data.source())).ok()?.len().ok()?;
                Some(Epoch {
                    source: data.source().to_string(),
                    images,
                    batch_size: u64::from(data.batch_size()),
                    iter_size,
                })
            }
            "ImageData" => {
                let image_data = layer.image_data_param.as_ref()?;
                let list = std::fs::read_to_string(image_data.source()).ok()?;
                Some(Epoch {
                    source: image_data.source().to_string(),
                    images: list.lines().filter(|l| !l.trim().is_empty()).count() as u64,
                    batch_size: u64::from(image_data.batch_size()),
                    iter_size,
                })
            }
            _ => None,
        })
        .filter(|epoch| epoch.images > 0 && epoch.batch_size > 0)
}

/// The epoch of the train net `param` names (resolved and filtered as the solver would).
pub fn epoch_of_solver(param: &SolverParameter, origin: &Path) -> Option<Epoch> {
    let nets = resolve_solver_nets(param, origin).ok()?;
    let (train, _) = filter_net(&nets.train.param).ok()?;
    epoch_of_layers(&train.layer, param.iter_size())
}

/// One line of [`cycle_guidance`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuidanceLine {
    /// Log it as a warning rather than as information.
    pub warning: bool,
    pub text: String,
}

/// The paper's advice for a solver with a cyclic policy (`triangular`, `triangular2`,
/// `exp_range`, `decay`), given its train set's `epoch`: the epoch length, a warning when
/// `stepsize` is outside 2–10 epochs, and the iterations where cycles end. Empty for other
/// policies. No line starts with "Iteration ", so log parsers do not mistake them.
pub fn cycle_guidance(param: &SolverParameter, epoch: Option<&Epoch>) -> Vec<GuidanceLine> {
    let policy = param.lr_policy();
    if !["triangular", "triangular2", "exp_range", "decay"].contains(&policy) {
        return Vec::new();
    }
    let info = |text: String| GuidanceLine {
        warning: false,
        text,
    };
    let stepsize = i64::from(param.stepsize().max(1));
    let mut lines = Vec::new();
    match epoch {
        Some(epoch) => {
            let per_epoch = epoch.iterations();
            let epochs = stepsize as f64 / per_epoch as f64;
            let passes = if epoch.iter_size > 1 {
                format!(" × iter_size {}", epoch.iter_size)
            } else {
                String::new()
            };
            lines.push(info(format!(
                "Cyclic learning rate ({policy}): an epoch is {per_epoch} iterations ({} images \
                 in {}, batch {}{passes}); stepsize {stepsize} is {epochs:.1} epochs",
                epoch.images, epoch.source, epoch.batch_size
            )));
            if !STEPSIZE_EPOCHS.contains(&epochs) {
                lines.push(GuidanceLine {
                    warning: true,
                    text: format!(
                        "stepsize {stepsize} is {epochs:.1} epochs, outside the 2-10 epochs the \
                         paper recommends ({}-{} iterations here)",
                        2 * per_epoch,
                        10 * per_epoch
                    ),
                });
            }
        }
        None => lines.push(info(format!(
            "Cyclic learning rate ({policy}): epoch length unknown (no Data or ImageData layer \
             with a readable source in the train net); the paper sets stepsize to 2-10 epochs"
        ))),
    }
    let start = f64::from(param.start_lr_policy()).ceil().max(0.0) as i64;
    let max_iter = i64::from(param.max_iter());
    if policy == "decay" {
        lines.push(info(format!(
            "decay: the rate falls from max_lr to base_lr over iterations {start}-{}, then stays \
             at base_lr",
            start + stepsize
        )));
        return lines;
    }
    let cycle = 2 * stepsize;
    let ends: Vec<i64> = (1..)
        .map(|k| start + k * cycle)
        .take_while(|&end| end <= max_iter)
        .collect();
    const SHOWN: usize = 8;
    let listed: Vec<String> = ends.iter().take(SHOWN).map(i64::to_string).collect();
    let more = if ends.len() > SHOWN {
        format!(", ... ({} in all)", ends.len())
    } else {
        String::new()
    };
    let text = if ends.is_empty() {
        format!(
            "No cycle ends by max_iter {max_iter} (a cycle is {cycle} iterations from \
             {start}); the paper stops training at the end of a cycle"
        )
    } else {
        let off_cycle = if ends.last() != Some(&max_iter) {
            format!("; max_iter {max_iter} is not at a cycle end")
        } else {
            String::new()
        };
        format!(
            "Cycles end at iterations {}{more}: where the rate is lowest, the paper stops \
             training or tests{off_cycle}",
            listed.join(", ")
        )
    };
    lines.push(info(text));
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_rounds_up() {
        let epoch = Epoch {
            source: "x".into(),
            images: 6000,
            batch_size: 64,
            iter_size: 1,
        };
        assert_eq!(epoch.iterations(), 94);
        let doubled = Epoch {
            iter_size: 2,
            ..epoch
        };
        assert_eq!(doubled.iterations(), 47);
    }
}
