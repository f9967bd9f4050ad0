//! Weight initialisers, built from a `FillerParameter` (upstream: include/caffe/filler.hpp).
//!
//! Every random filler draws from the [`Rng`] it is given, so a net's initial weights are a
//! function of its seed. The draws go through the backend's RNG ops, so a blob is filled where
//! it lives.

use crate::backend::{
    Axis, AxisReduction, Backend, BackendError, Binary, Broadcast, Distribution, Rng, Src, Views,
};
use crate::blob::{Blob, BlobError};
use crate::proto::caffe::filler_parameter::VarianceNorm;
use crate::proto::caffe::FillerParameter;

/// The filler type names upstream accepts, in its order.
pub const FILLER_TYPES: [&str; 7] = [
    "constant",
    "gaussian",
    "positive_unitball",
    "uniform",
    "xavier",
    "msra",
    "bilinear",
];

/// What can go wrong building or running a filler.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FillerError {
    #[error("unknown filler type \"{0}\"; valid types are: {types}", types = FILLER_TYPES.join(", "))]
    UnknownType(String),
    #[error("{filler} filler: {message}")]
    Invalid {
        filler: &'static str,
        message: String,
    },
    #[error(transparent)]
    Blob(#[from] BlobError),
    #[error(transparent)]
    Backend(#[from] BackendError),
}

/// Result of a filler.
pub type Result<T> = std::result::Result<T, FillerError>;

/// A weight initialiser.
#[derive(Debug, Clone, PartialEq)]
pub enum Filler {
    /// Every value `value`.
    Constant { value: f32 },
    /// Uniform on `[min, max]`.
    Uniform { min: f32, max: f32 },
    /// Normal `N(mean, std^2)`; with `sparse >= 0`, each value is kept with probability
    /// `sparse / shape(0)` and zeroed otherwise (upstream: so that each input has `sparse`
    /// non-zero output weights on average).
    Gaussian {
        mean: f32,
        std: f32,
        sparse: Option<u32>,
    },
    /// Uniform on `[0, 1]`, then each of the `shape(0)` rows scaled to sum to 1.
    PositiveUnitball,
    /// Uniform on `[-sqrt(3/n), sqrt(3/n)]`, `n` from [`fan`] per `norm`.
    Xavier { norm: VarianceNorm },
    /// Normal `N(0, 2/n)`, `n` from [`fan`] per `norm`.
    Msra { norm: VarianceNorm },
    /// Bilinear-interpolation kernels for a square `(C, 1, K, K)` (or any 4-D square) blob.
    Bilinear,
}

impl Filler {
    /// Reads a `FillerParameter`, rejecting an unknown type, an unknown `variance_norm`, and
    /// `sparse` on fillers other than `gaussian`, as upstream does.
    pub fn from_param(param: &FillerParameter) -> Result<Self> {
        let kind = param.r#type();
        let sparse = param.sparse();
        let name = FILLER_TYPES
            .iter()
            .copied()
            .find(|&t| t == kind)
            .ok_or_else(|| FillerError::UnknownType(kind.to_string()))?;
        if sparse != -1 && name != "gaussian" {
            return Err(FillerError::Invalid {
                filler: name,
                message: format!("sparsity is not supported (sparse: {sparse})"),
            });
        }
        let norm = || {
            let raw = param.variance_norm.unwrap_or(VarianceNorm::FanIn as i32);
            VarianceNorm::try_from(raw).map_err(|_| FillerError::Invalid {
                filler: name,
                message: format!("unknown variance_norm {raw}"),
            })
        };
        Ok(match name {
            "constant" => Filler::Constant {
                value: param.value(),
            },
            "uniform" => Filler::Uniform {
                min: param.min(),
                max: param.max(),
            },
            "gaussian" => Filler::Gaussian {
                mean: param.mean(),
                std: param.std(),
                sparse: match sparse {
                    -1 => None,
                    s if s >= 0 => Some(s as u32),
                    s => {
                        return Err(FillerError::Invalid {
                            filler: name,
                            message: format!("sparse must be -1 (off) or >= 0, got {s}"),
                        })
                    }
                },
            },
            "positive_unitball" => Filler::PositiveUnitball,
            "xavier" => Filler::Xavier { norm: norm()? },
            "msra" => Filler::Msra { norm: norm()? },
            "bilinear" => Filler::Bilinear,
            _ => unreachable!("every name in FILLER_TYPES is matched"),
        })
    }

    /// The type name, as in `FillerParameter.type`.
    pub fn name(&self) -> &'static str {
        match self {
            Filler::Constant { .. } => "constant",
            Filler::Uniform { .. } => "uniform",
            Filler::Gaussian { .. } => "gaussian",
            Filler::PositiveUnitball => "positive_unitball",
            Filler::Xavier { .. } => "xavier",
            Filler::Msra { .. } => "msra",
            Filler::Bilinear => "bilinear",
        }
    }

    /// Fills `blob`'s data. The blob must hold at least one element.
    pub fn fill<B: Backend>(&self, blob: &mut Blob<B>, rng: &mut Rng) -> Result<()> {
        let invalid = |message: String| FillerError::Invalid {
            filler: self.name(),
            message,
        };
        let n = blob.count();
        if n == 0 {
            return Err(invalid(format!(
                "cannot fill an empty blob (shape {})",
                blob.shape_string()
            )));
        }
        let be = blob.backend().clone();
        match *self {
            Filler::Constant { value } => be.fill(value, blob.data_view_mut())?,
            Filler::Uniform { min, max } => {
                if min.is_nan() || max.is_nan() || min > max {
                    return Err(invalid(format!("needs min <= max, got [{min}, {max}]")));
                }
                let uniform = Distribution::Uniform { lo: min, hi: max };
                be.random(uniform, rng, blob.data_view_mut())?
            }
            Filler::Gaussian { mean, std, sparse } => {
                let gaussian = Distribution::Gaussian { mean, std };
                be.random(gaussian, rng, blob.data_view_mut())?;
                if let Some(sparse) = sparse {
                    keep_sparse(sparse, blob, rng)?;
                }
            }
            Filler::PositiveUnitball => {
                let unit = Distribution::Uniform { lo: 0.0, hi: 1.0 };
                be.random(unit, rng, blob.data_view_mut())?;
                divide_rows_by_sums(blob)?;
            }
            Filler::Xavier { norm } => {
                let scale = (3.0 / fan(blob, norm)?).sqrt() as f32;
                let uniform = Distribution::Uniform {
                    lo: -scale,
                    hi: scale,
                };
                be.random(uniform, rng, blob.data_view_mut())?;
            }
            Filler::Msra { norm } => {
                let std = (2.0 / fan(blob, norm)?).sqrt() as f32;
                let gaussian = Distribution::Gaussian { mean: 0.0, std };
                be.random(gaussian, rng, blob.data_view_mut())?;
            }
            Filler::Bilinear => {
                if blob.num_axes() != 4 {
                    return Err(invalid(format!(
                        "blob must have 4 axes, has shape {}",
                        blob.shape_string()
                    )));
                }
                let (h, w) = (blob.height()?, blob.width()?);
                if h != w {
                    return Err(invalid(format!(
                        "filter must be square, has shape {}",
                        blob.shape_string()
                    )));
                }
                blob.set_data(&bilinear_kernel(n, w))?;
            }
        }
        Ok(())
    }
}

/// Builds the filler a `FillerParameter` describes and fills `blob` with it.
pub fn fill<B: Backend>(param: &FillerParameter, blob: &mut Blob<B>, rng: &mut Rng) -> Result<()> {
    Filler::from_param(param)?.fill(blob, rng)
}

/// Gaussian's sparsity: keeps each value with probability `sparse / shape(0)`, zeroes the rest.
fn keep_sparse<B: Backend>(sparse: u32, blob: &mut Blob<B>, rng: &mut Rng) -> Result<()> {
    let outputs = blob.shape_at(0)?;
    let p = sparse as f32 / outputs as f32;
    if p > 1.0 {
        return Err(FillerError::Invalid {
            filler: "gaussian",
            message: format!(
                "sparse ({sparse}) exceeds shape(0) ({outputs}) of blob {}",
                blob.shape_string()
            ),
        });
    }
    let be = blob.backend().clone();
    let mut mask = be.alloc(blob.count())?;
    be.random(Distribution::Bernoulli { p }, rng, mask.whole_mut())?;
    be.binary(
        Binary::Mul,
        Src::InPlace,
        mask.whole().src(),
        blob.data_view_mut(),
    )?;
    Ok(())
}

/// PositiveUnitball's normalisation: each of the `shape(0)` rows divided by its sum.
fn divide_rows_by_sums<B: Backend>(blob: &mut Blob<B>) -> Result<()> {
    let be = blob.backend().clone();
    let rows = blob.shape_at(0)?;
    let row_axis = Axis::new(rows, blob.count() / rows, 1);
    let mut sums = be.alloc(rows)?;
    be.reduce_over_axis(
        AxisReduction::Sum,
        row_axis,
        blob.data_view(),
        sums.whole_mut(),
    )?;
    be.broadcast(
        Binary::Div,
        Broadcast::OverAxis,
        row_axis,
        sums.whole(),
        Src::InPlace,
        blob.data_view_mut(),
    )?;
    Ok(())
}

/// The `n` that xavier and msra scale by, as upstream computes it: `fan_in = count / shape(0)`,
/// `fan_out = count / shape(1)` (`count` for a 1-axis blob); `FAN_IN` gives `fan_in`, `FAN_OUT`
/// `fan_out`, `AVERAGE` their mean.
pub fn fan<B: Backend>(blob: &Blob<B>, norm: VarianceNorm) -> Result<f64> {
    let count = blob.count();
    let fan_in = count / blob.shape_at(0)?;
    let fan_out = if blob.num_axes() > 1 {
        count / blob.shape_at(1)?
    } else {
        count
    };
    Ok(match norm {
        VarianceNorm::FanIn => fan_in as f64,
        VarianceNorm::FanOut => fan_out as f64,
        VarianceNorm::Average => (fan_in + fan_out) as f64 / 2.0,
    })
}

/// Upstream's bilinear upsampling weights for a blob of `count` elements with square
/// `width x width` kernels: `f = ceil(width / 2)`, `c = (width - 1) / (2 f)`, and value
/// `(1 - |x / f - c|) (1 - |y / f - c|)` at column `x`, row `y` of every kernel.
fn bilinear_kernel(count: usize, width: usize) -> Vec<f32> {
    let f = width.div_ceil(2) as f64;
    let c = (width as f64 - 1.0) / (2.0 * f);
    (0..count)
        .map(|i| {
            let x = (i % width) as f64;
            let y = ((i / width) % width) as f64;
            ((1.0 - (x / f - c).abs()) * (1.0 - (y / f - c).abs())) as f32
        })
        .collect()
}
