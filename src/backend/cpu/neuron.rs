//! The neuron layers' loops (activations, PReLU) and the plumbing layers' (Concat/Slice's
//! `copy_2d`, Eltwise MAX's `running_argmax`, ArgMax's `top_k_over_axis`), over slices the
//! trait impl in `cpu/mod.rs` has checked.

use super::elementwise::{self, Operand};
use super::Par;
use crate::backend::{kernel_constants, Activation, Axis, Block, Result};

/// 1 when `cond`, else 0: keeps upstream's `dy * (x > 0)` arithmetic, NaN included.
#[inline]
fn ind(cond: bool) -> f32 {
    if cond {
        1.0
    } else {
        0.0
    }
}

/// Sigmoid as [`Activation::Sigmoid`] computes it, through tanh (which cannot overflow).
#[inline]
fn sigmoid(v: f32) -> f32 {
    0.5 * (0.5 * v).tanh() + 0.5
}

/// `max(min, min(v, max))` with `std::min`/`std::max`'s comparisons: NaN gives `min`.
#[inline]
fn clip(v: f32, min: f32, max: f32) -> f32 {
    let upper = if max < v { max } else { v };
    if min < upper {
        upper
    } else {
        min
    }
}

/// `y = f(x)`.
pub(super) fn activation_forward(par: Par<'_>, f: Activation, x: Operand<'_>, y: &mut [f32]) {
    match f {
        // Branches rather than max/min so that a NaN input stays NaN.
        Activation::Relu { slope: 0.0 } => {
            // Upstream's `max(v, 0) + 0 min(v, 0)`, zeros' signs, NaNs and `-inf -> NaN`
            // included. Written as the choice `v < 0 ? 0 : v`, the loop would store in place
            // only where the value changes: masked stores, slow on AMD's cores.
            elementwise::map1(par, x, y, move |v| {
                let (above, below) = (if v < 0.0 { 0.0 } else { v }, if 0.0 < v { 0.0 } else { v });
                above + 0.0 * below
            })
        }
        Activation::Relu { slope } => {
            elementwise::map1(par, x, y, move |v| if v > 0.0 { v } else { slope * v })
        }
        Activation::Sigmoid => elementwise::map1(par, x, y, sigmoid),
        Activation::Tanh => elementwise::map1(par, x, y, f32::tanh),
        Activation::Elu { alpha } => {
            elementwise::map1(
                par,
                x,
                y,
                |v| {
                    if v > 0.0 {
                        v
                    } else {
                        alpha * (v.exp() - 1.0)
                    }
                },
            )
        }
        Activation::Bnll => elementwise::map1(par, x, y, move |v| {
            if v > 0.0 {
                v + (-v).exp().ln_1p()
            } else {
                v.exp().ln_1p()
            }
        }),
        Activation::Clip { min, max } => elementwise::map1(par, x, y, move |v| clip(v, min, max)),
        Activation::Swish { beta } => elementwise::map1(par, x, y, move |v| v * sigmoid(beta * v)),
    }
}

/// `dx = dy f'(x)`, fetching the forward input (`x`) and output (`y`) only where `f` reads
/// them, so that only those views are checked.
pub(super) fn activation_backward<'a>(
    par: Par<'_>,
    f: Activation,
    x: impl FnOnce() -> Result<&'a [f32]>,
    y: impl FnOnce() -> Result<&'a [f32]>,
    dy: Operand<'_>,
    dx: &mut [f32],
) -> Result<()> {
    match f {
        Activation::Relu { slope } => {
            // Upstream's product with a factor, 1 or the slope, rather than a choice between
            // `d` and `d * slope`: in place, the compiler turns that choice into masked stores,
            // which AMD's cores run several times slower than the whole pass otherwise takes.
            elementwise::map2(par, Operand::Slice(x()?), dy, dx, move |x, d| {
                d * if x > 0.0 { 1.0 } else { slope }
            })
        }
        Activation::Sigmoid => elementwise::map2(par, Operand::Slice(y()?), dy, dx, move |y, d| {
            d * y * (1.0 - y)
        }),
        Activation::Tanh => elementwise::map2(par, Operand::Slice(y()?), dy, dx, move |y, d| {
            d * (1.0 - y * y)
        }),
        Activation::Elu { alpha } => elementwise::map3(par, x()?, y()?, dy, dx, move |x, y, d| {
            if x > 0.0 {
                d
            } else {
                d * (alpha + y)
            }
        }),
        Activation::Bnll => elementwise::map2(par, Operand::Slice(x()?), dy, dx, move |x, d| {
            let e = x.min(kernel_constants::BNLL_THRESHOLD).exp();
            d * e / (e + 1.0)
        }),
        Activation::Clip { min, max } => {
            elementwise::map2(par, Operand::Slice(x()?), dy, dx, move |x, d| {
                d * ind(x >= min && x <= max)
            })
        }
        Activation::Swish { beta } => elementwise::map3(par, x()?, y()?, dy, dx, move |x, y, d| {
            let s = sigmoid(beta * x);
            d * (beta * y + s * (1.0 - beta * y))
        }),
    }
    Ok(())
}

/// PReLU with slope `slope`: upstream's `max(x, 0) + slope min(x, 0)`
/// (src/caffe/layers/prelu_layer.cpp), as a branch that keeps NaN as NaN, as upstream's
/// std::max/min do.
#[inline(always)]
pub(super) fn prelu(x: f32, slope: f32) -> f32 {
    if x > 0.0 {
        x
    } else {
        slope * x
    }
}

/// `y[o, c, j] = prelu(x[o, c, j], slope[c])`, a task per row of `inner`.
pub(super) fn prelu_forward(
    par: Par<'_>,
    axis: Axis,
    slope: &[f32],
    x: Operand<'_>,
    y: &mut [f32],
) {
    let (channels, inner) = (axis.dim, axis.inner);
    par.rows_mut(y, inner, inner, |r, row| {
        let a = slope[r % channels];
        match x {
            Operand::Same => row.iter_mut().for_each(|v| *v = prelu(*v, a)),
            Operand::Slice(x) => row
                .iter_mut()
                .zip(&x[r * inner..(r + 1) * inner])
                .for_each(|(v, &u)| *v = prelu(u, a)),
        }
    });
}

/// `dx[o, c, j] = dy ((x > 0) + slope[c] (x <= 0))`.
pub(super) fn prelu_backward(
    par: Par<'_>,
    axis: Axis,
    slope: &[f32],
    x: &[f32],
    dy: Operand<'_>,
    dx: &mut [f32],
) {
    let (channels, inner) = (axis.dim, axis.inner);
    par.rows_mut(dx, inner, inner, |r, row| {
        let a = slope[r % channels];
        let xr = &x[r * inner..(r + 1) * inner];
        let g = |u: f32, d: f32| d * (ind(u > 0.0) + a * ind(u <= 0.0));
        match dy {
            Operand::Same => row.iter_mut().zip(xr).for_each(|(v, &u)| *v = g(u, *v)),
            Operand::Slice(dy) => row
                .iter_mut()
                .zip(xr.iter().zip(&dy[r * inner..(r + 1) * inner]))
                .for_each(|(v, (&u, &d))| *v = g(u, d)),
        }
    });
}

/// `dslope[c] += sum_{o, j} dy x (x <= 0)`, accumulated in memory order straight into
/// `dslope`, as upstream's CPU loop.
pub(super) fn prelu_slope_grad(axis: Axis, x: &[f32], dy: &[f32], dslope: &mut [f32]) {
    let (channels, inner) = (axis.dim, axis.inner);
    if inner == 0 {
        return;
    }
    for (r, (xr, dr)) in x.chunks(inner).zip(dy.chunks(inner)).enumerate() {
        let acc = &mut dslope[r % channels];
        for (&u, &d) in xr.iter().zip(dr) {
            *acc += d * u * ind(u <= 0.0);
        }
    }
}

/// Copies `block`'s rows from `x` to `y` (both long enough for it).
pub(super) fn copy_2d(block: &Block, x: &[f32], y: &mut [f32]) {
    let cols = block.cols;
    for r in 0..block.rows {
        let (xs, ys) = (r * block.x_stride, r * block.y_stride);
        y[ys..ys + cols].copy_from_slice(&x[xs..xs + cols]);
    }
}

/// Where `x[i] > y[i]`: `y[i] = x[i]`, `mask[i] = index`.
pub(super) fn running_argmax(index: f32, x: &[f32], y: &mut [f32], mask: &mut [f32]) {
    for ((&v, m), k) in x.iter().zip(y.iter_mut()).zip(mask.iter_mut()) {
        if v > *m {
            *m = v;
            *k = index;
        }
    }
}

/// The `k` largest values over `axis`'s middle axis and their indices, for every `(o, j)`
/// (`0 < k <= dim` unless nothing is asked).
pub(super) fn top_k_over_axis(
    axis: Axis,
    k: usize,
    x: &[f32],
    values: &mut [f32],
    indices: &mut [f32],
) {
    let Axis { outer, dim, inner } = axis;
    if k == 0 {
        return;
    }
    // Descending by (value, index), as upstream's std::greater on pairs
    // (src/caffe/layers/argmax_layer.cpp): equal values rank the larger index first.
    let rank = |a: &(f32, usize), b: &(f32, usize)| b.0.total_cmp(&a.0).then(b.1.cmp(&a.1));
    let mut pairs = Vec::with_capacity(dim);
    for o in 0..outer {
        for j in 0..inner {
            pairs.clear();
            pairs.extend((0..dim).map(|c| (x[(o * dim + c) * inner + j], c)));
            if k < dim {
                pairs.select_nth_unstable_by(k - 1, rank);
            }
            pairs[..k].sort_unstable_by(rank);
            for (r, &(v, c)) in pairs[..k].iter().enumerate() {
                let at = (o * k + r) * inner + j;
                values[at] = v;
                indices[at] = c as f32;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{activation_backward, activation_forward};
    use crate::backend::cpu::{elementwise::Operand, SERIAL};
    use crate::backend::Activation;

    /// Inputs where the forms of ReLU differ, if anywhere: signed zeros, infinities, NaN.
    const SPECIAL: [f32; 9] = [
        f32::NEG_INFINITY,
        -2.5,
        -1e-40,
        -0.0,
        0.0,
        1e-40,
        3.0,
        f32::INFINITY,
        f32::NAN,
    ];

    /// C++'s `std::max` and `std::min`: the first argument unless the comparison says otherwise.
    fn cpp_max(a: f32, b: f32) -> f32 {
        if a < b {
            b
        } else {
            a
        }
    }
    fn cpp_min(a: f32, b: f32) -> f32 {
        if b < a {
            b
        } else {
            a
        }
    }

    /// ReLU gives upstream's CPU formulas bit for bit (relu_layer.cpp): forward
    /// `max(x, 0) + slope min(x, 0)` with slope 0, backward
    /// `dy ((x > 0) + slope (x <= 0))`, in place and not.
    #[test]
    fn relu_follows_upstreams_formulas_on_special_values() {
        // Bits, any NaN as one (its sign and payload depend on where it was made).
        let bits = |v: &[f32]| {
            v.iter()
                .map(|x| if x.is_nan() { u32::MAX } else { x.to_bits() })
                .collect::<Vec<_>>()
        };
        let relu = Activation::Relu { slope: 0.0 };
        let want: Vec<f32> = SPECIAL
            .iter()
            .map(|&v| cpp_max(v, 0.0) + 0.0 * cpp_min(v, 0.0))
            .collect();
        let mut y = [f32::NAN; 9];
        activation_forward(SERIAL, relu, Operand::Slice(&SPECIAL), &mut y);
        assert_eq!(bits(&y), bits(&want));
        let mut in_place = SPECIAL;
        activation_forward(SERIAL, relu, Operand::Same, &mut in_place);
        assert_eq!(bits(&in_place), bits(&want));

        let dy = [1.5, -2.0, 0.25, -0.5, 4.0, -1.0, 2.0, -3.0, 1.0];
        for slope in [0.0f32, 0.1] {
            let ind = |b: bool| if b { 1.0f32 } else { 0.0 };
            let want: Vec<f32> = SPECIAL
                .iter()
                .zip(dy)
                .map(|(&x, d)| d * (ind(x > 0.0) + slope * ind(x <= 0.0)))
                .collect();
            let mut dx = dy;
            let f = Activation::Relu { slope };
            activation_backward(
                SERIAL,
                f,
                || Ok(&SPECIAL[..]),
                || Ok(&[][..]),
                Operand::Same,
                &mut dx,
            )
            .unwrap();
            // At a NaN input upstream multiplies dy by 0 ((x > 0) and (x <= 0) both false),
            // this by the slope, as it did before: the same for slope 0.
            let compared = if slope == 0.0 { 9 } else { 8 };
            assert_eq!(
                bits(&dx[..compared]),
                bits(&want[..compared]),
                "slope {slope}"
            );
        }
    }
}
