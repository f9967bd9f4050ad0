//! Random fills, drawn sequentially from the caller's generator so that a fill is a pure
//! function of the generator's state (and leaves it advanced by a fixed amount per element,
//! except for the Gaussian, whose ziggurat sampler occasionally draws more).

use crate::backend::Rng;
use rand::{Rng as _, RngExt as _};
use rand_distr::StandardNormal;

/// A uniform draw from `[0, 1)` with 24 random bits (every f32 multiple of 2^-24).
#[inline]
fn unit(rng: &mut Rng) -> f32 {
    (rng.next_u32() >> 8) as f32 * (1.0 / (1u32 << 24) as f32)
}

/// `y[i] = lo + (hi - lo) u` with `u` uniform on `[0, 1)`; rounding can give `hi` itself, so
/// the values lie in `[lo, hi]`, the interval upstream's `caffe_rng_uniform` samples.
pub(super) fn uniform(rng: &mut Rng, lo: f32, hi: f32, y: &mut [f32]) {
    let span = hi - lo;
    for v in y {
        *v = (lo + span * unit(rng)).min(hi);
    }
}

/// `y[i] = mean + std z` with `z` standard normal (ziggurat, computed in f64).
pub(super) fn gaussian(rng: &mut Rng, mean: f32, std: f32, y: &mut [f32]) {
    let (mean, std) = (f64::from(mean), f64::from(std));
    for v in y {
        let z: f64 = rng.sample(StandardNormal);
        *v = (mean + std * z) as f32;
    }
}

/// `y[i] = 1` if a uniform draw on `[0, 1)` is below `p`, else `0`.
pub(super) fn bernoulli(rng: &mut Rng, p: f32, y: &mut [f32]) {
    for v in y {
        *v = if unit(rng) < p { 1.0 } else { 0.0 };
    }
}
