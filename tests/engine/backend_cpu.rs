//! The CPU backend's ops against naive references written here (f64 loops straight from each
//! op's definition), on random inputs, odd sizes, offsets, in-place forms, and 1 and 3 threads;
//! pooling and LRN also against hand-worked cases and finite differences.

use crate::common::{assert_close, Tolerance};
use rand::RngExt;
use rcaffe::backend::{
    rng_from_seed, Activation, Axis, AxisReduction, Backend, BackendError, Binary, Broadcast,
    ConvGeom, CpuBackend, CpuBuffer, Distribution, Gemm, Gemv, LrnGeom, LrnSaved, LrnWithin,
    PoolGeom, Pooling, Reduction, Rng, RoundMode, Scalar, SliceMut, Src, Transpose, Unary, Views,
};

const SENTINEL: f32 = 12345.0;
/// Sizes that hit the serial path, odd tails of the 8-lane sums, and the parallel path.
const SIZES: [usize; 5] = [1, 7, 1000, 4099, 70001];

fn backends() -> Vec<CpuBackend> {
    vec![CpuBackend::new(1).unwrap(), CpuBackend::new(3).unwrap()]
}

fn randv(rng: &mut Rng, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(lo..hi)).collect()
}

/// A buffer holding `values` at `off`, with sentinels before and `tail` sentinels after.
fn padded(values: &[f32], off: usize, tail: usize) -> CpuBuffer {
    let mut v = vec![SENTINEL; off];
    v.extend_from_slice(values);
    v.extend(std::iter::repeat_n(SENTINEL, tail));
    CpuBuffer::from_vec(v)
}

fn sentinels(len: usize) -> CpuBuffer {
    CpuBuffer::from_vec(vec![SENTINEL; len])
}

/// Checks `buf[off..off + want.len()]` against `want` within `atol + rtol |want|`, and that
/// everything outside that range still holds the sentinel.
fn check_window(what: &str, buf: &CpuBuffer, off: usize, want: &[f64], rtol: f64, atol: f64) {
    let got = buf.as_slice();
    for (i, &w) in want.iter().enumerate() {
        let g = f64::from(got[off + i]);
        let ok = (g - w).abs() <= atol + rtol * w.abs() || (g.is_nan() && w.is_nan());
        assert!(ok, "{what}: element {i}: got {g}, want {w}");
    }
    for (i, &g) in got.iter().enumerate() {
        if i < off || i >= off + want.len() {
            assert_eq!(
                g, SENTINEL,
                "{what}: element {i} outside the output range was written"
            );
        }
    }
}

type UnaryOp =
    dyn Fn(&CpuBackend, Src<'_, CpuBuffer>, SliceMut<'_, CpuBuffer>) -> Result<(), BackendError>;

/// Runs a unary op out of place (on views at offsets) and in place, for every size and backend.
fn check_unary(
    name: &str,
    lo: f32,
    hi: f32,
    op: &UnaryOp,
    reference: impl Fn(f64) -> f64,
    rtol: f64,
    atol: f64,
) {
    let mut rng = rng_from_seed(1);
    for be in backends() {
        for n in SIZES {
            let x = randv(&mut rng, n, lo, hi);
            let want: Vec<f64> = x.iter().map(|&v| reference(f64::from(v))).collect();
            let xb = padded(&x, 3, 2);
            let mut y = sentinels(n + 9);
            op(&be, xb.slice(3, n).src(), y.slice_mut(5, n)).unwrap();
            check_window(&format!("{name} n={n}"), &y, 5, &want, rtol, atol);
            let mut y = padded(&x, 4, 3);
            op(&be, Src::InPlace, y.slice_mut(4, n)).unwrap();
            check_window(&format!("{name} in place n={n}"), &y, 4, &want, rtol, atol);
        }
    }
}

/// Runs a binary op with each operand taken from another buffer or in place.
fn check_binary(op: Binary, reference: impl Fn(f64, f64) -> f64) {
    let mut rng = rng_from_seed(2);
    for be in backends() {
        for n in SIZES {
            let a = randv(&mut rng, n, 0.5, 2.0);
            let b: Vec<f32> = randv(&mut rng, n, 0.5, 2.0)
                .iter()
                .map(|v| v - 1.0)
                .collect();
            let want = |p: &[f32], q: &[f32]| -> Vec<f64> {
                p.iter()
                    .zip(q)
                    .map(|(&p, &q)| reference(p.into(), q.into()))
                    .collect()
            };
            let (ab, bb) = (padded(&a, 1, 0), padded(&b, 6, 1));
            let (a_view, b_view) = (ab.slice(1, n).src(), bb.slice(6, n).src());
            let tag = format!("{op:?} n={n}");
            let mut y = sentinels(n + 2);
            be.binary(op, a_view, b_view, y.slice_mut(2, n)).unwrap();
            check_window(&tag, &y, 2, &want(&a, &b), 1e-6, 1e-7);
            let mut y = padded(&a, 3, 1);
            be.binary(op, Src::InPlace, b_view, y.slice_mut(3, n))
                .unwrap();
            check_window(
                &format!("{tag} a in place"),
                &y,
                3,
                &want(&a, &b),
                1e-6,
                1e-7,
            );
            let mut y = padded(&b, 0, 2);
            be.binary(op, a_view, Src::InPlace, y.slice_mut(0, n))
                .unwrap();
            check_window(
                &format!("{tag} b in place"),
                &y,
                0,
                &want(&a, &b),
                1e-6,
                1e-7,
            );
            let mut y = padded(&a, 2, 2);
            be.binary(op, Src::InPlace, Src::InPlace, y.slice_mut(2, n))
                .unwrap();
            check_window(
                &format!("{tag} both in place"),
                &y,
                2,
                &want(&a, &a),
                1e-6,
                1e-7,
            );
        }
    }
}

/// A unary op, the range its inputs are drawn from, its f64 reference, and `rtol`, `atol`.
type UnaryCase = (Unary, (f32, f32), fn(f64) -> f64, f64, f64);

#[test]
fn unary_math_ops() {
    let cases: [UnaryCase; 5] = [
        (Unary::Exp, (-5.0, 5.0), f64::exp, 2e-7, 0.0),
        (Unary::Log, (0.01, 100.0), f64::ln, 1e-6, 1e-7),
        (Unary::Abs, (-3.0, 3.0), f64::abs, 0.0, 0.0),
        (Unary::Sqr, (-3.0, 3.0), |v| v * v, 1e-7, 0.0),
        (Unary::Sqrt, (0.0, 9.0), f64::sqrt, 1e-7, 0.0),
    ];
    for (op, (lo, hi), reference, rtol, atol) in cases {
        check_unary(
            &format!("{op:?}"),
            lo,
            hi,
            &move |be, x, y| be.unary(op, x, y),
            reference,
            rtol,
            atol,
        );
    }
    check_unary(
        "scale",
        -3.0,
        3.0,
        &|be, x, y| be.scale(Scalar::Value(-0.37), x, y),
        |v| -0.37 * v,
        1e-7,
        0.0,
    );
    for p in [1.7f32, 2.0, -0.5, 1.0] {
        check_unary(
            &format!("powx {p}"),
            0.1,
            3.0,
            &move |be, x, y| be.unary(Unary::Powx(p), x, y),
            |v| v.powf(p.into()),
            1e-6,
            0.0,
        );
    }
    let power = Unary::Power {
        power: -0.75,
        scale: 0.5,
        shift: 1.0,
    };
    check_unary(
        "power",
        0.0,
        2.0,
        &move |be, x, y| be.unary(power, x, y),
        |v| (1.0 + 0.5 * v).powf(-0.75),
        1e-6,
        0.0,
    );
}

#[test]
fn sign_handles_zero() {
    let be = CpuBackend::new(1).unwrap();
    let x = CpuBuffer::from_vec(vec![-2.0, 0.0, -0.0, 3.5, f32::MIN_POSITIVE, -1e-30]);
    let mut y = be.alloc(6).unwrap();
    be.unary(Unary::Sign, x.whole().src(), y.whole_mut())
        .unwrap();
    assert_eq!(y.as_slice(), &[-1.0, 0.0, 0.0, 1.0, 1.0, -1.0]);
}

#[test]
fn binary_ops() {
    for op in [
        Binary::Add,
        Binary::Sub,
        Binary::Mul,
        Binary::Div,
        Binary::Max,
    ] {
        check_binary(op, |a, b| binary_reference(op, a, b));
    }
}

/// PReLU element by element: `a` where it is positive, else `a` times the slope `b`.
#[test]
fn binary_prelu_elementwise() {
    let mut rng = rng_from_seed(40);
    for be in backends() {
        for n in SIZES {
            let mut a = randv(&mut rng, n, -1.0, 1.0);
            a[0] = 0.0;
            let b = randv(&mut rng, n, 0.0, 0.5);
            let want: Vec<f64> = a
                .iter()
                .zip(&b)
                .map(|(&a, &b)| binary_reference(Binary::PRelu, a.into(), b.into()))
                .collect();
            let (ab, bb) = (padded(&a, 2, 1), padded(&b, 1, 0));
            let mut y = sentinels(n + 4);
            be.binary(
                Binary::PRelu,
                ab.slice(2, n).src(),
                bb.slice(1, n).src(),
                y.slice_mut(3, n),
            )
            .unwrap();
            check_window(&format!("PRelu n={n}"), &y, 3, &want, 1e-7, 0.0);
            let mut y = padded(&a, 1, 1);
            be.binary(
                Binary::PRelu,
                Src::InPlace,
                bb.slice(1, n).src(),
                y.slice_mut(1, n),
            )
            .unwrap();
            check_window(&format!("PRelu in place n={n}"), &y, 1, &want, 1e-7, 0.0);
        }
    }
}

/// An activation from its definition, in f64.
fn activation_reference(f: Activation, v: f64) -> f64 {
    match f {
        Activation::Relu { slope } => {
            if v > 0.0 {
                v
            } else {
                f64::from(slope) * v
            }
        }
        Activation::Sigmoid => 1.0 / (1.0 + (-v).exp()),
        Activation::Tanh => v.tanh(),
        Activation::Elu { alpha } => {
            if v > 0.0 {
                v
            } else {
                f64::from(alpha) * (v.exp() - 1.0)
            }
        }
        Activation::Bnll => v.exp().ln_1p(),
        Activation::Clip { min, max } => v.clamp(min.into(), max.into()),
        Activation::Swish { beta } => v / (1.0 + (-f64::from(beta) * v).exp()),
    }
}

#[test]
fn activations_forward() {
    let cases = [
        (Activation::Relu { slope: 0.0 }, (-2.0, 2.0), 1e-7, 0.0),
        (Activation::Relu { slope: 0.1 }, (-2.0, 2.0), 1e-7, 0.0),
        (Activation::Sigmoid, (-8.0, 8.0), 1e-6, 1e-7),
        (Activation::Tanh, (-4.0, 4.0), 1e-6, 1e-7),
        (Activation::Elu { alpha: 0.7 }, (-4.0, 4.0), 1e-6, 1e-7),
        (Activation::Bnll, (-12.0, 12.0), 1e-6, 1e-7),
        (
            Activation::Clip {
                min: -1.0,
                max: 2.5,
            },
            (-4.0, 4.0),
            0.0,
            0.0,
        ),
        // Sigmoid through tanh is off by up to half an ulp of 0.5 (3e-8) where it is tiny,
        // then scaled by |x| <= 8.
        (Activation::Swish { beta: 1.5 }, (-8.0, 8.0), 1e-6, 3e-7),
    ];
    for (f, (lo, hi), rtol, atol) in cases {
        check_unary(
            &format!("{f:?} forward"),
            lo,
            hi,
            &move |be, x, y| be.activation_forward(f, x, y),
            |v| activation_reference(f, v),
            rtol,
            atol,
        );
    }
}

/// An activation's backward pass `dx = f(saved, dy)`, with `dy` from another buffer and in
/// place; `saved` is passed as both the forward input and output, for the one `f` reads.
fn check_backward(f: Activation, lo: f32, hi: f32, reference: impl Fn(f64, f64) -> f64) {
    let mut rng = rng_from_seed(3);
    for be in backends() {
        for n in SIZES {
            let saved = randv(&mut rng, n, lo, hi);
            let dy = randv(&mut rng, n, -1.0, 1.0);
            let want: Vec<f64> = saved
                .iter()
                .zip(&dy)
                .map(|(&s, &d)| reference(s.into(), d.into()))
                .collect();
            let sb = padded(&saved, 2, 0);
            let db = padded(&dy, 1, 1);
            let s = sb.slice(2, n);
            let mut dx = sentinels(n + 3);
            be.activation_backward(f, s, s, db.slice(1, n).src(), dx.slice_mut(3, n))
                .unwrap();
            check_window(&format!("{f:?} backward n={n}"), &dx, 3, &want, 1e-6, 1e-7);
            let mut diff = padded(&dy, 5, 0);
            be.activation_backward(f, s, s, Src::InPlace, diff.slice_mut(5, n))
                .unwrap();
            check_window(
                &format!("{f:?} backward in place n={n}"),
                &diff,
                5,
                &want,
                1e-6,
                1e-7,
            );
        }
    }
}

#[test]
fn activations_backward() {
    for slope in [0.0f32, 0.25] {
        check_backward(Activation::Relu { slope }, -1.0, 1.0, |x, d| {
            if x > 0.0 {
                d
            } else {
                d * f64::from(slope)
            }
        });
    }
    check_backward(Activation::Sigmoid, 0.0, 1.0, |y, d| d * y * (1.0 - y));
    check_backward(Activation::Tanh, -1.0, 1.0, |y, d| d * (1.0 - y * y));
    check_backward(Activation::Bnll, -20.0, 20.0, |x, d| d / (1.0 + (-x).exp()));
    let clip = Activation::Clip {
        min: -1.0,
        max: 2.5,
    };
    check_backward(clip, -4.0, 4.0, |x, d| {
        if (-1.0..=2.5).contains(&x) {
            d
        } else {
            0.0
        }
    });
    // Swish reads both; with one buffer as both, `y` is `x` in the formula.
    check_backward(Activation::Swish { beta: 0.5 }, -4.0, 4.0, |x, d| {
        let s = 1.0 / (1.0 + (-0.5 * x).exp());
        d * (0.5 * x + s * (1.0 - 0.5 * x))
    });
}

#[test]
fn bnll_backward_clamps_large_inputs() {
    let be = CpuBackend::new(1).unwrap();
    let x = CpuBuffer::from_vec(vec![200.0, 60.0, -200.0]);
    let dy = CpuBuffer::from_vec(vec![2.0, 1.0, 1.0]);
    let mut dx = be.alloc(3).unwrap();
    be.activation_backward(
        Activation::Bnll,
        x.whole(),
        x.whole(),
        dy.whole().src(),
        dx.whole_mut(),
    )
    .unwrap();
    assert!(
        dx.as_slice().iter().all(|v| v.is_finite()),
        "{:?}",
        dx.as_slice()
    );
    assert!((dx.as_slice()[0] - 2.0).abs() < 1e-6);
    assert_eq!(dx.as_slice()[2], 0.0);
    let mut y = be.alloc(3).unwrap();
    be.activation_forward(Activation::Bnll, x.whole().src(), y.whole_mut())
        .unwrap();
    assert_eq!(y.as_slice(), &[200.0, 60.0, 0.0]);
}

#[test]
fn elu_backward_uses_input_sign_and_output() {
    let mut rng = rng_from_seed(4);
    let alpha = 0.8f32;
    let elu = Activation::Elu { alpha };
    for be in backends() {
        for n in SIZES {
            let x = randv(&mut rng, n, -3.0, 3.0);
            let y: Vec<f32> = x
                .iter()
                .map(|&v| if v > 0.0 { v } else { alpha * (v.exp() - 1.0) })
                .collect();
            let dy = randv(&mut rng, n, -1.0, 1.0);
            let want: Vec<f64> = (0..n)
                .map(|i| {
                    let d = f64::from(dy[i]);
                    if x[i] > 0.0 {
                        d
                    } else {
                        d * (f64::from(alpha) + f64::from(y[i]))
                    }
                })
                .collect();
            let (xb, yb) = (padded(&x, 1, 0), padded(&y, 0, 1));
            let dyb = CpuBuffer::from_vec(dy.clone());
            let mut dx = sentinels(n + 2);
            be.activation_backward(
                elu,
                xb.slice(1, n),
                yb.slice(0, n),
                dyb.whole().src(),
                dx.slice_mut(2, n),
            )
            .unwrap();
            check_window("elu_backward", &dx, 2, &want, 1e-6, 1e-7);
            // In place: the layer's bottom and top data are the same (y), and dy is dx.
            let mut diff = CpuBuffer::from_vec(dy.clone());
            be.activation_backward(
                elu,
                yb.slice(0, n),
                yb.slice(0, n),
                Src::InPlace,
                diff.whole_mut(),
            )
            .unwrap();
            check_window("elu_backward in place", &diff, 0, &want, 1e-6, 1e-7);
        }
    }
}

#[test]
fn blas_level1() {
    let mut rng = rng_from_seed(5);
    for be in backends() {
        for n in SIZES {
            let x = randv(&mut rng, n, -1.0, 1.0);
            let y = randv(&mut rng, n, -1.0, 1.0);
            let xb = padded(&x, 2, 1);
            let xs = xb.slice(2, n);
            let mut yb = padded(&y, 3, 2);
            be.axpby(Scalar::Value(0.5), xs, 1.0, yb.slice_mut(3, n))
                .unwrap();
            let want: Vec<f64> = x
                .iter()
                .zip(&y)
                .map(|(&a, &b)| 0.5 * f64::from(a) + f64::from(b))
                .collect();
            check_window("axpby beta 1 (axpy)", &yb, 3, &want, 1e-6, 1e-7);

            let mut yb = padded(&y, 3, 2);
            be.axpby(Scalar::Value(-2.0), xs, 0.25, yb.slice_mut(3, n))
                .unwrap();
            let want: Vec<f64> = x
                .iter()
                .zip(&y)
                .map(|(&a, &b)| -2.0 * f64::from(a) + 0.25 * f64::from(b))
                .collect();
            check_window("axpby", &yb, 3, &want, 1e-6, 1e-7);

            // beta = 0: y is not read, so NaN there does not propagate.
            let mut yb = padded(&vec![f32::NAN; n], 3, 2);
            be.axpby(Scalar::Value(3.0), xs, 0.0, yb.slice_mut(3, n))
                .unwrap();
            let want: Vec<f64> = x.iter().map(|&a| 3.0 * f64::from(a)).collect();
            check_window("axpby beta 0", &yb, 3, &want, 1e-6, 1e-7);

            let mut yb = sentinels(n + 4);
            be.copy(xs, yb.slice_mut(1, n)).unwrap();
            let want: Vec<f64> = x.iter().map(|&a| a.into()).collect();
            check_window("copy", &yb, 1, &want, 0.0, 0.0);

            let mut yb = sentinels(n + 4);
            be.fill(-1.5, yb.slice_mut(4, n)).unwrap();
            check_window("fill", &yb, 4, &vec![-1.5; n], 0.0, 0.0);

            let mut yb = padded(&y, 1, 1);
            be.unary(Unary::AddScalar(0.75), Src::InPlace, yb.slice_mut(1, n))
                .unwrap();
            let want: Vec<f64> = y.iter().map(|&a| f64::from(a) + 0.75).collect();
            check_window("AddScalar", &yb, 1, &want, 1e-7, 1e-7);
        }
    }
}

#[test]
fn upload_download_and_bounds() {
    let be = CpuBackend::new(1).unwrap();
    let mut b = be.alloc(6).unwrap();
    assert_eq!(b.as_slice(), &[0.0; 6], "alloc zero-fills");
    be.upload(&[1.0, 2.0, 3.0], b.slice_mut(2, 3)).unwrap();
    let mut out = [0.0; 4];
    be.download(b.slice(1, 4), &mut out).unwrap();
    assert_eq!(out, [0.0, 1.0, 2.0, 3.0]);
    let err = be.upload(&[1.0, 2.0], b.slice_mut(5, 2)).unwrap_err();
    assert_eq!(
        err,
        BackendError::OutOfBounds {
            op: "upload",
            arg: "dst",
            off: 5,
            end: 7,
            len: 6
        }
    );
    assert!(err.to_string().contains("upload: dst range 5..7"), "{err}");
    let x = be.alloc(4).unwrap();
    assert!(matches!(
        be.unary(Unary::Exp, x.slice(0, 5).src(), b.slice_mut(0, 5)),
        Err(BackendError::OutOfBounds {
            op: "unary",
            arg: "x",
            ..
        })
    ));
    assert!(matches!(
        be.axpby(Scalar::Value(1.0), x.slice(0, 3), 1.0, b.slice_mut(4, 3)),
        Err(BackendError::OutOfBounds {
            op: "axpby",
            arg: "y",
            ..
        })
    ));
    assert!(matches!(
        be.reduce(Reduction::Sum, x.slice(usize::MAX, 3)),
        Err(BackendError::OutOfBounds { op: "reduce", .. })
    ));
}

/// A part cut from a view reaches no further than the view, even where the buffer goes on:
/// the op using it reports it out of bounds instead of reading past the view.
#[test]
fn a_part_past_its_view_is_out_of_bounds() {
    let be = CpuBackend::new(1).unwrap();
    let x = CpuBuffer::from_vec(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let view = x.slice(1, 3);
    assert_eq!(be.reduce(Reduction::Sum, view.part(1, 2)).unwrap(), 7.0);
    assert!(matches!(
        be.reduce(Reduction::Sum, view.part(2, 2)),
        Err(BackendError::OutOfBounds {
            op: "reduce",
            arg: "x",
            ..
        })
    ));
    let mut y = be.alloc(6).unwrap();
    assert!(matches!(
        be.copy(x.slice(0, 2), y.slice_mut(0, 4).part(3, 2)),
        Err(BackendError::OutOfBounds {
            op: "copy",
            arg: "y",
            ..
        })
    ));
    assert_eq!(y.as_slice(), &[0.0; 6], "a refused op writes nothing");
}

/// An element-wise input must be exactly as long as the output; the error names the op and
/// the input.
#[test]
fn an_input_of_another_length_is_an_invalid_argument() {
    let be = CpuBackend::new(1).unwrap();
    let x = CpuBuffer::from_vec(vec![1.0; 6]);
    let mut y = be.alloc(4).unwrap();
    for len in [3, 5] {
        let err = be
            .binary(
                Binary::Add,
                x.slice(0, len).src(),
                Src::InPlace,
                y.whole_mut(),
            )
            .unwrap_err();
        let BackendError::InvalidArgument { op, message } = &err else {
            panic!("a {len}-element input for 4 outputs: {err:?}");
        };
        assert_eq!(*op, "binary");
        assert!(message.contains(&format!("a has {len} elements")), "{err}");
        assert!(err.to_string().starts_with("binary: "), "{err}");
    }
    assert!(matches!(
        be.unary(Unary::Exp, x.whole().src(), y.whole_mut()),
        Err(BackendError::InvalidArgument { op: "unary", .. })
    ));
    assert_eq!(y.as_slice(), &[0.0; 4], "a refused op writes nothing");
}

/// `C = alpha op(A) op(B) + beta C` of `product` in f64, from the definition, plus
/// sum |alpha a b| + |beta c| for the tolerance.
fn gemm_reference(product: &Gemm, a: &[f32], b: &[f32], c: &[f32]) -> (Vec<f64>, Vec<f64>) {
    let Gemm {
        trans_a: ta,
        trans_b: tb,
        m,
        n,
        k,
        alpha,
        beta,
        lda,
        ldb,
        ldc,
    } = *product;
    let at = |i: usize, p: usize| {
        f64::from(if ta == Transpose::NoTrans {
            a[i * lda + p]
        } else {
            a[p * lda + i]
        })
    };
    let bt = |p: usize, j: usize| {
        f64::from(if tb == Transpose::NoTrans {
            b[p * ldb + j]
        } else {
            b[j * ldb + p]
        })
    };
    let mut out = vec![0.0; m * n];
    let mut mag = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            let (mut s, mut s_abs) = (0.0, 0.0);
            for p in 0..k {
                s += at(i, p) * bt(p, j);
                s_abs += (at(i, p) * bt(p, j)).abs();
            }
            let cv = if beta == 0.0 {
                0.0
            } else {
                f64::from(beta) * f64::from(c[i * ldc + j])
            };
            out[i * n + j] = f64::from(alpha) * s + cv;
            mag[i * n + j] = f64::from(alpha.abs()) * s_abs + cv.abs();
        }
    }
    (out, mag)
}

#[test]
fn gemm_all_transposes_offsets_and_leading_dims() {
    let mut rng = rng_from_seed(6);
    let shapes = [
        (1, 1, 1),
        (7, 5, 3),
        (3, 17, 1),
        (33, 17, 65),
        (20, 576, 25),
        (64, 200, 150),
    ];
    let scalars = [(1.0f32, 0.0f32), (0.5, 1.0), (-1.5, 0.25), (0.0, 2.0)];
    for be in backends() {
        for &(m, n, k) in &shapes {
            for ta in [Transpose::NoTrans, Transpose::Trans] {
                for tb in [Transpose::NoTrans, Transpose::Trans] {
                    for (si, &(alpha, beta)) in scalars.iter().enumerate() {
                        // Leading dimensions larger than the stored width on odd cases.
                        let extra = si % 2 * 3;
                        let (ar, ac) = if ta == Transpose::NoTrans {
                            (m, k)
                        } else {
                            (k, m)
                        };
                        let (br, bc) = if tb == Transpose::NoTrans {
                            (k, n)
                        } else {
                            (n, k)
                        };
                        let (lda, ldb, ldc) = (ac + extra, bc + extra, n + extra);
                        let a = randv(&mut rng, ar * lda, -1.0, 1.0);
                        let b = randv(&mut rng, br * ldb, -1.0, 1.0);
                        let mut c = randv(&mut rng, m * ldc, -1.0, 1.0);
                        if beta == 0.0 {
                            c.iter_mut().for_each(|v| *v = f32::NAN);
                        }
                        let product = Gemm::packed(ta, tb, m, n, k)
                            .alpha(alpha)
                            .beta(beta)
                            .strides(lda, ldb, ldc);
                        let (want, mag) = gemm_reference(&product, &a, &b, &c);
                        let (ab, bb) = (padded(&a, 5, 0), padded(&b, 1, 2));
                        let mut cb = padded(&c, 7, 0);
                        be.gemm(
                            &product,
                            ab.slice(5, a.len()),
                            bb.slice(1, b.len()),
                            cb.slice_mut(7, c.len()),
                        )
                        .unwrap();
                        let got = &cb.as_slice()[7..];
                        let tol_scale = 5e-7 * (k as f64 + 4.0);
                        for i in 0..m {
                            for j in 0..ldc {
                                let g = got[i * ldc + j];
                                if j >= n {
                                    let orig = c[i * ldc + j];
                                    assert!(
                                        g == orig || (g.is_nan() && orig.is_nan()),
                                        "gemm wrote padding column {j}"
                                    );
                                    continue;
                                }
                                let (w, s) = (want[i * n + j], mag[i * n + j]);
                                assert!(
                                    (f64::from(g) - w).abs() <= tol_scale * s + 1e-6,
                                    "gemm {ta:?}{tb:?} m{m} n{n} k{k} alpha {alpha} beta {beta}: C[{i},{j}] = {g}, want {w}"
                                );
                            }
                        }
                        assert!(cb.as_slice()[..7].iter().all(|&v| v == SENTINEL));
                    }
                }
            }
        }
    }
}

#[test]
fn gemm_packed_and_k_zero() {
    let be = CpuBackend::new(1).unwrap();
    let mut rng = rng_from_seed(7);
    let (m, n, k) = (9, 11, 13);
    for ta in [Transpose::NoTrans, Transpose::Trans] {
        for tb in [Transpose::NoTrans, Transpose::Trans] {
            let a = randv(&mut rng, m * k, -1.0, 1.0);
            let b = randv(&mut rng, k * n, -1.0, 1.0);
            let c = randv(&mut rng, m * n, -1.0, 1.0);
            // Packed: the leading dimensions are the stored widths.
            let product = Gemm::packed(ta, tb, m, n, k).alpha(0.7).beta(0.3);
            let (want, _) = gemm_reference(&product, &a, &b, &c);
            let (ab, bb) = (CpuBuffer::from_vec(a), CpuBuffer::from_vec(b));
            let mut cb = CpuBuffer::from_vec(c.clone());
            be.gemm(&product, ab.whole(), bb.whole(), cb.whole_mut())
                .unwrap();
            assert_close(
                "gemm packed",
                cb.as_slice(),
                &want,
                Tolerance {
                    relative: 1e-5,
                    absolute: 1e-5,
                },
            );
        }
    }
    // k = 0: C = beta C.
    let mut cb = CpuBuffer::from_vec(vec![1.0, 2.0, 3.0, 4.0]);
    let empty = be.alloc(0).unwrap();
    let product = Gemm::packed(Transpose::NoTrans, Transpose::NoTrans, 2, 2, 0)
        .beta(0.5)
        .strides(1, 2, 2);
    be.gemm(&product, empty.whole(), empty.whole(), cb.whole_mut())
        .unwrap();
    assert_eq!(cb.as_slice(), &[0.5, 1.0, 1.5, 2.0]);
}

#[test]
fn gemm_rejects_bad_leading_dims_and_short_buffers() {
    let be = CpuBackend::new(1).unwrap();
    let a = be.alloc(12).unwrap();
    let b = be.alloc(12).unwrap();
    let mut c = be.alloc(9).unwrap();
    let nt = Transpose::NoTrans;
    // 3 x 3 from 4: A spans 12 elements with its packed leading dimension 4.
    let product = Gemm::packed(nt, nt, 3, 3, 4);
    assert!(matches!(
        be.gemm(
            &product.strides(3, 3, 3),
            a.whole(),
            b.whole(),
            c.whole_mut()
        ),
        Err(BackendError::InvalidArgument { op: "gemm", .. })
    ));
    assert!(matches!(
        be.gemm(&product, a.slice(1, 12), b.whole(), c.whole_mut()),
        Err(BackendError::OutOfBounds {
            op: "gemm",
            arg: "a",
            ..
        })
    ));
    assert!(matches!(
        be.gemm(&product, a.whole(), b.whole(), c.slice_mut(1, 9)),
        Err(BackendError::OutOfBounds {
            op: "gemm",
            arg: "c",
            ..
        })
    ));
    // A view inside its buffer but shorter than the product addresses.
    let err = be
        .gemm(&product, a.slice(1, 11), b.whole(), c.whole_mut())
        .unwrap_err();
    assert!(
        matches!(&err, BackendError::InvalidArgument { op: "gemm", message } if message.starts_with("a has 11 elements")),
        "{err:?}"
    );
}

#[test]
fn gemv_both_ways() {
    let mut rng = rng_from_seed(8);
    for be in backends() {
        for &(m, n) in &[(1, 1), (5, 3), (64, 1000), (257, 31)] {
            for ta in [Transpose::NoTrans, Transpose::Trans] {
                for &(alpha, beta) in &[(1.0f32, 0.0f32), (-0.5, 0.5)] {
                    let a = randv(&mut rng, m * n, -1.0, 1.0);
                    let (xl, yl) = if ta == Transpose::NoTrans {
                        (n, m)
                    } else {
                        (m, n)
                    };
                    let x = randv(&mut rng, xl, -1.0, 1.0);
                    let mut y = randv(&mut rng, yl, -1.0, 1.0);
                    if beta == 0.0 {
                        y.iter_mut().for_each(|v| *v = f32::NAN);
                    }
                    let want: Vec<f64> = (0..yl)
                        .map(|i| {
                            let s: f64 = (0..xl)
                                .map(|j| {
                                    let aij = if ta == Transpose::NoTrans {
                                        a[i * n + j]
                                    } else {
                                        a[j * n + i]
                                    };
                                    f64::from(aij) * f64::from(x[j])
                                })
                                .sum();
                            let yv = if beta == 0.0 {
                                0.0
                            } else {
                                f64::from(beta) * f64::from(y[i])
                            };
                            f64::from(alpha) * s + yv
                        })
                        .collect();
                    let (ab, xb) = (padded(&a, 1, 0), padded(&x, 4, 0));
                    let mut yb = padded(&y, 2, 3);
                    let product = Gemv {
                        trans: ta,
                        m,
                        n,
                        alpha,
                        beta,
                    };
                    be.gemv(
                        &product,
                        ab.slice(1, m * n),
                        xb.slice(4, xl),
                        yb.slice_mut(2, yl),
                    )
                    .unwrap();
                    check_window(
                        &format!("gemv {ta:?} {m}x{n}"),
                        &yb,
                        2,
                        &want,
                        1e-5,
                        1e-5 * (xl as f64).sqrt(),
                    );
                }
            }
        }
    }
}

#[test]
fn full_reductions() {
    let mut rng = rng_from_seed(9);
    let one = CpuBackend::new(1).unwrap();
    let three = CpuBackend::new(3).unwrap();
    for n in SIZES.into_iter().chain([0, 1 << 20]) {
        let x = randv(&mut rng, n, -1.0, 1.0);
        let y = randv(&mut rng, n, -1.0, 1.0);
        let (xb, yb) = (padded(&x, 3, 0), padded(&y, 1, 2));
        let sum: f64 = x.iter().map(|&v| f64::from(v)).sum();
        let asum: f64 = x.iter().map(|&v| f64::from(v).abs()).sum();
        let sumsq: f64 = x.iter().map(|&v| f64::from(v).powi(2)).sum();
        let dot: f64 = x
            .iter()
            .zip(&y)
            .map(|(&a, &b)| f64::from(a) * f64::from(b))
            .sum();
        // The error of f32 lanes over blocks of 1024 is bounded by ~1024 eps per term.
        let tol = |scale: f64| 1e-4 * scale + 1e-6;
        let (xs, ys) = (xb.slice(3, n), yb.slice(1, n));
        for be in [&one, &three] {
            let got = be.reduce(Reduction::Sum, xs).unwrap();
            assert!(
                (f64::from(got) - sum).abs() <= tol(asum),
                "sum n={n}: {got} vs {sum}"
            );
            let got = be.reduce(Reduction::Asum, xs).unwrap();
            assert!((f64::from(got) - asum).abs() <= tol(asum), "asum n={n}");
            let got = be.reduce(Reduction::Sumsq, xs).unwrap();
            assert!((f64::from(got) - sumsq).abs() <= tol(sumsq), "sumsq n={n}");
            let got = be.reduce(Reduction::Dot(ys), xs).unwrap();
            assert!(
                (f64::from(got) - dot).abs() <= tol(asum),
                "dot n={n}: {got} vs {dot}"
            );
        }
        // The order of additions depends on the length only: bitwise equal across threads.
        for r in [Reduction::Sum, Reduction::Dot(ys)] {
            assert_eq!(
                one.reduce(r, xs).unwrap().to_bits(),
                three.reduce(r, xs).unwrap().to_bits(),
                "{r:?} n={n}"
            );
        }
    }
}

/// (outer, dim, inner) shapes: row-wise (inner 1), channel-wise, degenerate, and large.
const AXIS_SHAPES: [(usize, usize, usize); 6] = [
    (1, 1, 1),
    (3, 10, 1),
    (2, 5, 7),
    (64, 10, 1),
    (4, 21, 169),
    (1, 1000, 65),
];

#[test]
fn axis_reductions_and_broadcasts() {
    let mut rng = rng_from_seed(10);
    for be in backends() {
        for &(outer, dim, inner) in &AXIS_SHAPES {
            let len = outer * dim * inner;
            let x = randv(&mut rng, len, -3.0, 3.0);
            let x2 = randv(&mut rng, len, -1.0, 1.0);
            let idx = |o: usize, c: usize, j: usize| (o * dim + c) * inner + j;
            let (xb, x2b) = (padded(&x, 2, 0), padded(&x2, 0, 3));
            let axis = Axis::new(outer, dim, inner);
            let reduced = outer * inner;
            let tag = format!("({outer}, {dim}, {inner})");

            let mut want_max = vec![0.0; outer * inner];
            let mut want_sum = vec![0.0; outer * inner];
            let mut want_dot = vec![0.0; outer * inner];
            for o in 0..outer {
                for j in 0..inner {
                    let vals = (0..dim).map(|c| f64::from(x[idx(o, c, j)]));
                    want_max[o * inner + j] = vals.clone().fold(f64::NEG_INFINITY, f64::max);
                    want_sum[o * inner + j] = vals.sum();
                    want_dot[o * inner + j] = (0..dim)
                        .map(|c| f64::from(x[idx(o, c, j)]) * f64::from(x2[idx(o, c, j)]))
                        .sum();
                }
            }
            let mut y = sentinels(reduced + 5);
            be.reduce_over_axis(
                AxisReduction::Max,
                axis,
                xb.slice(2, len),
                y.slice_mut(4, reduced),
            )
            .unwrap();
            check_window(&format!("Max over axis {tag}"), &y, 4, &want_max, 0.0, 0.0);
            let mut y = sentinels(reduced + 1);
            be.reduce_over_axis(
                AxisReduction::Sum,
                axis,
                xb.slice(2, len),
                y.slice_mut(1, reduced),
            )
            .unwrap();
            check_window(
                &format!("Sum over axis {tag}"),
                &y,
                1,
                &want_sum,
                0.0,
                1e-6 * dim as f64,
            );
            let mut y = sentinels(reduced);
            be.reduce_over_axis(
                AxisReduction::Dot(x2b.slice(0, len)),
                axis,
                xb.slice(2, len),
                y.whole_mut(),
            )
            .unwrap();
            check_window(
                &format!("Dot over axis {tag}"),
                &y,
                0,
                &want_dot,
                0.0,
                1e-6 * dim as f64,
            );

            let v = randv(&mut rng, reduced, 0.5, 2.0);
            let vb = padded(&v, 1, 1);
            let vs = vb.slice(1, reduced);
            let over_axis = Broadcast::OverAxis;
            let mut yb = padded(&x, 3, 0);
            be.broadcast(
                Binary::Sub,
                over_axis,
                axis,
                vs,
                Src::InPlace,
                yb.slice_mut(3, len),
            )
            .unwrap();
            let mut want = vec![0.0; len];
            for o in 0..outer {
                for c in 0..dim {
                    for j in 0..inner {
                        want[idx(o, c, j)] =
                            f64::from(x[idx(o, c, j)]) - f64::from(v[o * inner + j]);
                    }
                }
            }
            check_window(&format!("Sub over axis {tag}"), &yb, 3, &want, 1e-6, 1e-6);
            let mut yb = padded(&x, 0, 2);
            be.broadcast(
                Binary::Div,
                over_axis,
                axis,
                vs,
                Src::InPlace,
                yb.slice_mut(0, len),
            )
            .unwrap();
            for o in 0..outer {
                for c in 0..dim {
                    for j in 0..inner {
                        want[idx(o, c, j)] =
                            f64::from(x[idx(o, c, j)]) / f64::from(v[o * inner + j]);
                    }
                }
            }
            check_window(&format!("Div over axis {tag}"), &yb, 0, &want, 1e-6, 1e-7);
        }
    }
}

#[test]
fn per_channel_ops() {
    let mut rng = rng_from_seed(11);
    let shapes = [
        (1, 1, 1),
        (2, 3, 5),
        (10, 96, 1),
        (2, 96, 3025),
        (5, 7, 63),
        (1, 4, 70000),
    ];
    for be in backends() {
        for &(outer, ch, inner) in &shapes {
            let len = outer * ch * inner;
            let x = randv(&mut rng, len, -1.0, 1.0);
            let v = randv(&mut rng, ch, -2.0, 2.0);
            let vb = padded(&v, 1, 0);
            let axis = Axis::new(outer, ch, inner);
            let vs = vb.slice(1, ch);
            let per_channel = Broadcast::PerChannel;
            let cidx = |i: usize| (i / inner) % ch;
            let tag = format!("({outer}, {ch}, {inner})");

            let mut yb = padded(&x, 2, 1);
            be.broadcast(
                Binary::Add,
                per_channel,
                axis,
                vs,
                Src::InPlace,
                yb.slice_mut(2, len),
            )
            .unwrap();
            let want: Vec<f64> = (0..len)
                .map(|i| f64::from(x[i]) + f64::from(v[cidx(i)]))
                .collect();
            check_window(&format!("Add per channel {tag}"), &yb, 2, &want, 1e-7, 1e-7);

            let want: Vec<f64> = (0..len)
                .map(|i| f64::from(x[i]) * f64::from(v[cidx(i)]))
                .collect();
            let xb = padded(&x, 1, 0);
            let mut yb = sentinels(len + 3);
            let xs = xb.slice(1, len).src();
            be.broadcast(Binary::Mul, per_channel, axis, vs, xs, yb.slice_mut(3, len))
                .unwrap();
            check_window(&format!("Mul per channel {tag}"), &yb, 3, &want, 1e-7, 1e-7);
            let mut yb = padded(&x, 0, 0);
            be.broadcast(
                Binary::Mul,
                per_channel,
                axis,
                vs,
                Src::InPlace,
                yb.whole_mut(),
            )
            .unwrap();
            check_window(
                &format!("Mul per channel in place {tag}"),
                &yb,
                0,
                &want,
                1e-7,
                1e-7,
            );

            let y0 = randv(&mut rng, ch, -1.0, 1.0);
            for (alpha, beta) in [(1.0f32, 0.0f32), (0.5, 1.0), (-2.0, 0.3)] {
                let mut sums = vec![0.0f64; ch];
                let mut mags = vec![0.0f64; ch];
                for (i, &xv) in x.iter().enumerate() {
                    sums[cidx(i)] += f64::from(xv);
                    mags[cidx(i)] += f64::from(xv).abs();
                }
                let xb = padded(&x, 2, 0);
                let mut yb = padded(&y0, 1, 1);
                be.sum_per_channel(axis, alpha, xb.slice(2, len), beta, yb.slice_mut(1, ch))
                    .unwrap();
                for c in 0..ch {
                    let w = f64::from(alpha) * sums[c] + f64::from(beta) * f64::from(y0[c]);
                    let g = f64::from(yb.as_slice()[1 + c]);
                    assert!(
                        (g - w).abs() <= 1e-5 * (mags[c] * f64::from(alpha.abs()) + 1.0),
                        "sum_per_channel {tag} c={c}: {g} vs {w}"
                    );
                }
            }
        }
    }
}

/// A binary op from its definition, in f64.
fn binary_reference(op: Binary, a: f64, b: f64) -> f64 {
    match op {
        Binary::Add => a + b,
        Binary::Sub => a - b,
        Binary::Mul => a * b,
        Binary::Div => a / b,
        Binary::Max => a.max(b),
        Binary::PRelu => {
            if a > 0.0 {
                a
            } else {
                b * a
            }
        }
        Binary::SigmoidCrossEntropy => unreachable!("checked with its loss in layers_loss"),
    }
}

/// Every op broadcast both ways, out of place and in place, against a loop over `(o, c, j)`:
/// `v[o, j]` over the axis, `v[c]` per channel.
#[test]
fn broadcast_combinations_against_naive_loop() {
    let mut rng = rng_from_seed(42);
    let ops = [
        Binary::Add,
        Binary::Sub,
        Binary::Mul,
        Binary::Div,
        Binary::Max,
        Binary::PRelu,
    ];
    for be in backends() {
        for &(outer, dim, inner) in &AXIS_SHAPES[..5] {
            let axis = Axis::new(outer, dim, inner);
            let len = outer * dim * inner;
            let x = randv(&mut rng, len, -3.0, 3.0);
            let xb = padded(&x, 1, 2);
            for how in [Broadcast::OverAxis, Broadcast::PerChannel] {
                let v_len = match how {
                    Broadcast::OverAxis => outer * inner,
                    Broadcast::PerChannel => dim,
                };
                let v = randv(&mut rng, v_len, 0.5, 2.0);
                let vb = padded(&v, 2, 1);
                for op in ops {
                    let mut want = vec![0.0; len];
                    for o in 0..outer {
                        for c in 0..dim {
                            for j in 0..inner {
                                let i = (o * dim + c) * inner + j;
                                let vi = match how {
                                    Broadcast::OverAxis => o * inner + j,
                                    Broadcast::PerChannel => c,
                                };
                                want[i] = binary_reference(op, x[i].into(), v[vi].into());
                            }
                        }
                    }
                    let tag = format!("({op:?}, {how:?}) ({outer}, {dim}, {inner})");
                    let vs = vb.slice(2, v_len);
                    let mut y = sentinels(len + 3);
                    be.broadcast(
                        op,
                        how,
                        axis,
                        vs,
                        xb.slice(1, len).src(),
                        y.slice_mut(3, len),
                    )
                    .unwrap();
                    check_window(&tag, &y, 3, &want, 1e-6, 1e-7);
                    let mut y = padded(&x, 2, 0);
                    be.broadcast(op, how, axis, vs, Src::InPlace, y.slice_mut(2, len))
                        .unwrap();
                    check_window(&format!("{tag} in place"), &y, 2, &want, 1e-6, 1e-7);
                }
            }
        }
    }
}

/// im2col from its definition: column row `(c, i, j)`, column `(oh, ow)` holds the input pixel
/// at `(oh sh - ph + i dh, ow sw - pw + j dw)` or 0 outside the image.
fn im2col_reference(g: &ConvGeom, im: &[f32]) -> Vec<f64> {
    let (oh_n, ow_n) = (g.out_h(), g.out_w());
    let mut col = vec![0.0; g.col_len()];
    for c in 0..g.channels {
        for i in 0..g.kernel_h {
            for j in 0..g.kernel_w {
                let row = (c * g.kernel_h + i) * g.kernel_w + j;
                for oh in 0..oh_n {
                    for ow in 0..ow_n {
                        let h = (oh * g.stride_h + i * g.dilation_h) as i64 - g.pad_h as i64;
                        let w = (ow * g.stride_w + j * g.dilation_w) as i64 - g.pad_w as i64;
                        if h >= 0 && w >= 0 && (h as usize) < g.height && (w as usize) < g.width {
                            col[row * oh_n * ow_n + oh * ow_n + ow] =
                                f64::from(im[(c * g.height + h as usize) * g.width + w as usize]);
                        }
                    }
                }
            }
        }
    }
    col
}

/// A convolution of `(channels, height, width)` images: kernel `k`, padding `p`, stride `s`
/// and dilation `d`, each `(h, w)`.
fn geom(
    (c, h, w): (usize, usize, usize),
    k: (usize, usize),
    p: (usize, usize),
    s: (usize, usize),
    d: (usize, usize),
) -> ConvGeom {
    ConvGeom {
        channels: c,
        height: h,
        width: w,
        kernel_h: k.0,
        kernel_w: k.1,
        pad_h: p.0,
        pad_w: p.1,
        stride_h: s.0,
        stride_w: s.1,
        dilation_h: d.0,
        dilation_w: d.1,
    }
}

fn conv_geoms() -> Vec<ConvGeom> {
    vec![
        geom((1, 1, 1), (1, 1), (0, 0), (1, 1), (1, 1)),
        geom((1, 28, 28), (5, 5), (0, 0), (1, 1), (1, 1)), // LeNet conv1
        geom((3, 32, 32), (5, 5), (2, 2), (1, 1), (1, 1)), // cifar conv1
        geom((3, 27, 27), (11, 11), (0, 0), (4, 4), (1, 1)), // AlexNet-like, small
        geom((2, 7, 9), (3, 2), (1, 2), (2, 3), (1, 1)),
        geom((3, 10, 11), (3, 3), (2, 1), (1, 2), (2, 3)),
        geom((2, 5, 6), (2, 4), (3, 3), (3, 1), (1, 1)), // pad larger than part of the kernel
        geom((4, 6, 5), (1, 1), (0, 0), (2, 2), (1, 1)),
        geom((64, 13, 13), (3, 3), (1, 1), (1, 1), (1, 1)),
    ]
}

#[test]
fn im2col_matches_definition() {
    let mut rng = rng_from_seed(12);
    for be in backends() {
        for g in conv_geoms() {
            let im = randv(&mut rng, g.im_len(), -1.0, 1.0);
            let want = im2col_reference(&g, &im);
            let imb = padded(&im, 3, 1);
            let mut col = sentinels(g.col_len() + 6);
            be.im2col(&g, imb.slice(3, g.im_len()), col.slice_mut(2, g.col_len()))
                .unwrap();
            check_window(&format!("im2col {g:?}"), &col, 2, &want, 0.0, 0.0);
        }
    }
}

#[test]
fn col2im_is_the_adjoint_and_counts_overlaps() {
    let mut rng = rng_from_seed(13);
    for be in backends() {
        for g in conv_geoms() {
            // Scatter-add from the definition.
            let col = randv(&mut rng, g.col_len(), -1.0, 1.0);
            let (oh_n, ow_n) = (g.out_h(), g.out_w());
            let mut want = vec![0.0f64; g.im_len()];
            for c in 0..g.channels {
                for i in 0..g.kernel_h {
                    for j in 0..g.kernel_w {
                        let row = (c * g.kernel_h + i) * g.kernel_w + j;
                        for oh in 0..oh_n {
                            for ow in 0..ow_n {
                                let h =
                                    (oh * g.stride_h + i * g.dilation_h) as i64 - g.pad_h as i64;
                                let w =
                                    (ow * g.stride_w + j * g.dilation_w) as i64 - g.pad_w as i64;
                                if h >= 0
                                    && w >= 0
                                    && (h as usize) < g.height
                                    && (w as usize) < g.width
                                {
                                    want[(c * g.height + h as usize) * g.width + w as usize] +=
                                        f64::from(col[row * oh_n * ow_n + oh * ow_n + ow]);
                                }
                            }
                        }
                    }
                }
            }
            // The output is overwritten, not accumulated into.
            let colb = padded(&col, 2, 0);
            let mut im = padded(&vec![7.0; g.im_len()], 1, 2);
            be.col2im(&g, colb.slice(2, g.col_len()), im.slice_mut(1, g.im_len()))
                .unwrap();
            check_window(&format!("col2im {g:?}"), &im, 1, &want, 1e-6, 1e-6);

            // col2im(im2col(ones)) counts, for each pixel, the (kernel offset, output position)
            // pairs that read it: per axis, the offsets i with (h + pad - i dil) a multiple of
            // stride whose quotient is a valid output index.
            let per_axis =
                |x: usize, pad: usize, k: usize, s: usize, d: usize, out: usize| -> usize {
                    (0..k)
                        .filter(|&i| {
                            let t = (x + pad) as i64 - (i * d) as i64;
                            t >= 0 && (t as usize).is_multiple_of(s) && (t as usize / s) < out
                        })
                        .count()
                };
            let ones = CpuBuffer::from_vec(vec![1.0; g.im_len()]);
            let mut colb = be.alloc(g.col_len()).unwrap();
            be.im2col(&g, ones.whole(), colb.whole_mut()).unwrap();
            let mut counts = be.alloc(g.im_len()).unwrap();
            be.col2im(&g, colb.whole(), counts.whole_mut()).unwrap();
            for c in 0..g.channels {
                for h in 0..g.height {
                    for w in 0..g.width {
                        let n = per_axis(h, g.pad_h, g.kernel_h, g.stride_h, g.dilation_h, oh_n)
                            * per_axis(w, g.pad_w, g.kernel_w, g.stride_w, g.dilation_w, ow_n);
                        assert_eq!(
                            counts.as_slice()[(c * g.height + h) * g.width + w],
                            n as f32,
                            "overlap count at ({c}, {h}, {w}) for {g:?}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn conv_geometry_is_validated() {
    let be = CpuBackend::new(1).unwrap();
    let im = be.alloc(100).unwrap();
    let mut col = be.alloc(800).unwrap();
    let bad_stride = geom((1, 5, 5), (3, 3), (0, 0), (0, 1), (1, 1));
    assert!(matches!(
        be.im2col(&bad_stride, im.whole(), col.whole_mut()),
        Err(BackendError::InvalidArgument { .. })
    ));
    let too_big = geom((1, 3, 3), (3, 3), (0, 0), (1, 1), (2, 2));
    assert!(matches!(
        be.im2col(&too_big, im.whole(), col.whole_mut()),
        Err(BackendError::InvalidArgument { .. })
    ));
    // 900 column values for a buffer of 800.
    let ok = geom((4, 5, 5), (3, 3), (1, 1), (1, 1), (1, 1));
    assert!(matches!(
        be.im2col(&ok, im.whole(), col.slice_mut(0, ok.col_len())),
        Err(BackendError::OutOfBounds {
            op: "im2col",
            arg: "col",
            ..
        })
    ));
}

fn pool(
    planes: usize,
    hw: (usize, usize),
    k: (usize, usize),
    s: (usize, usize),
    p: (usize, usize),
) -> PoolGeom {
    PoolGeom::new(planes, hw, k, s, p, RoundMode::Ceil).unwrap()
}

#[test]
fn pooled_size_follows_upstream_rounding_and_clipping() {
    // ceil((5 - 2) / 2) + 1 = 3: the last window hangs off the image.
    let g = pool(1, (5, 5), (2, 2), (2, 2), (0, 0));
    assert_eq!((g.pooled_h, g.pooled_w), (3, 3));
    let f = PoolGeom::new(1, (5, 5), (2, 2), (2, 2), (0, 0), RoundMode::Floor).unwrap();
    assert_eq!((f.pooled_h, f.pooled_w), (2, 2));
    // AlexNet pool1: 55 -> 27 with 3x3 stride 2.
    let a = pool(1, (55, 55), (3, 3), (2, 2), (0, 0));
    assert_eq!(a.pooled_h, 27);
    // With padding: ceil((3 + 2 - 2) / 2) + 1 = 3, but the third window would start at 3, in
    // the padding (3 >= 3 + 1 - 1), so it is dropped.
    let c = pool(1, (3, 3), (2, 2), (2, 2), (1, 1));
    assert_eq!(c.pooled_h, 2);
    let d = pool(1, (4, 4), (3, 3), (2, 2), (1, 1));
    assert_eq!(d.pooled_h, 3);
    // Padding must be below the kernel.
    assert!(PoolGeom::new(1, (4, 4), (2, 2), (1, 1), (2, 0), RoundMode::Ceil).is_err());
    assert!(PoolGeom::new(1, (4, 4), (2, 2), (0, 1), (0, 0), RoundMode::Ceil).is_err());
}

#[test]
fn max_pool_hand_worked() {
    // 5x5 input 0..25 with the max planted off the usual corner; 2x2 windows, stride 2, ceil.
    let mut x: Vec<f32> = (0..25).map(|v| v as f32).collect();
    x[6] = 100.0; // (1, 1)
    let g = pool(1, (5, 5), (2, 2), (2, 2), (0, 0));
    for be in backends() {
        let xb = CpuBuffer::from_vec(x.clone());
        let mut y = sentinels(9);
        let mut mask = sentinels(9);
        let max = Pooling::Max {
            mask: mask.whole_mut(),
        };
        be.pool_forward(&g, max, xb.whole(), y.whole_mut()).unwrap();
        // Windows: rows {0,1},{2,3},{4}; cols likewise (the last clipped to one).
        assert_eq!(
            y.as_slice(),
            &[100.0, 8.0, 9.0, 16.0, 18.0, 19.0, 21.0, 23.0, 24.0]
        );
        assert_eq!(
            mask.as_slice(),
            &[6.0, 8.0, 9.0, 16.0, 18.0, 19.0, 21.0, 23.0, 24.0]
        );
        let dy = CpuBuffer::from_vec((1..=9).map(|v| v as f32).collect());
        let mut dx = sentinels(25);
        let max = Pooling::Max { mask: mask.whole() };
        be.pool_backward(&g, max, dy.whole(), dx.whole_mut())
            .unwrap();
        let mut want = [0.0f32; 25];
        for (q, &m) in mask.as_slice().iter().enumerate() {
            want[m as usize] += (q + 1) as f32;
        }
        assert_eq!(dx.as_slice(), &want[..]);
    }
    // Overlapping windows (3x3 stride 2) on a constant plane: first maximum wins, and the
    // gradient of shared argmaxes accumulates.
    let g = pool(1, (5, 5), (3, 3), (2, 2), (0, 0));
    let be = CpuBackend::new(1).unwrap();
    let x = CpuBuffer::from_vec(vec![1.0; 25]);
    let (mut y, mut mask) = (be.alloc(4).unwrap(), be.alloc(4).unwrap());
    let max = Pooling::Max {
        mask: mask.whole_mut(),
    };
    be.pool_forward(&g, max, x.whole(), y.whole_mut()).unwrap();
    assert_eq!(mask.as_slice(), &[0.0, 2.0, 10.0, 12.0]);
    // Padded max pooling ignores the padding even when every value is negative.
    let g = pool(1, (2, 2), (2, 2), (1, 1), (1, 1));
    assert_eq!((g.pooled_h, g.pooled_w), (3, 3));
    let x = CpuBuffer::from_vec(vec![-4.0, -3.0, -2.0, -1.0]);
    let (mut y, mut mask) = (be.alloc(9).unwrap(), be.alloc(9).unwrap());
    let max = Pooling::Max {
        mask: mask.whole_mut(),
    };
    be.pool_forward(&g, max, x.whole(), y.whole_mut()).unwrap();
    assert_eq!(
        y.as_slice(),
        &[-4.0, -3.0, -3.0, -2.0, -1.0, -1.0, -2.0, -1.0, -1.0]
    );
    assert_eq!(
        mask.as_slice(),
        &[0.0, 1.0, 1.0, 2.0, 3.0, 3.0, 2.0, 3.0, 3.0]
    );
}

#[test]
fn max_pool_backward_rejects_bad_mask() {
    let be = CpuBackend::new(1).unwrap();
    let g = pool(1, (2, 2), (2, 2), (2, 2), (0, 0));
    let dy = CpuBuffer::from_vec(vec![1.0]);
    let mut dx = be.alloc(4).unwrap();
    let bad = CpuBuffer::from_vec(vec![4.0]);
    let max = Pooling::Max { mask: bad.whole() };
    assert!(be
        .pool_backward(&g, max, dy.whole(), dx.whole_mut())
        .is_err());
    let none = CpuBuffer::from_vec(vec![-1.0]);
    let max = Pooling::Max { mask: none.whole() };
    be.pool_backward(&g, max, dy.whole(), dx.whole_mut())
        .unwrap();
    assert_eq!(dx.as_slice(), &[0.0; 4]);
}

#[test]
fn ave_pool_hand_worked() {
    let be = CpuBackend::new(1).unwrap();
    // 3x3 input 1..9, 3x3 kernel, stride 1, pad 1: every divisor is 9 (padded positions
    // count), e.g. the corner sees 1 + 2 + 4 + 5 = 12.
    let g = pool(1, (3, 3), (3, 3), (1, 1), (1, 1));
    let x = CpuBuffer::from_vec((1..=9).map(|v| v as f32).collect());
    let mut y = be.alloc(9).unwrap();
    be.pool_forward(&g, Pooling::Ave, x.whole(), y.whole_mut())
        .unwrap();
    let want = [12.0, 21.0, 16.0, 27.0, 45.0, 33.0, 24.0, 39.0, 28.0].map(|s: f64| s / 9.0);
    assert_close(
        "ave 3x3 pad 1",
        y.as_slice(),
        &want,
        Tolerance {
            relative: 1e-6,
            absolute: 0.0,
        },
    );

    // 4x4 input, 3x3 kernel, stride 2, pad 1 -> 3x3 output. The last window starts at row 3
    // and is clipped by the padded bound 4 + 1 = 5 to rows 3..5 (size 2), then by the image
    // to row 3 alone: its divisor counts the padded row, the sum does not.
    let g = pool(1, (4, 4), (3, 3), (2, 2), (1, 1));
    let x: Vec<f32> = (0..16).map(|v| v as f32).collect();
    let xb = CpuBuffer::from_vec(x.clone());
    let mut y = be.alloc(9).unwrap();
    be.pool_forward(&g, Pooling::Ave, xb.whole(), y.whole_mut())
        .unwrap();
    let at = |h: usize, w: usize| f64::from(x[h * 4 + w]);
    let want = [
        (at(0, 0) + at(0, 1) + at(1, 0) + at(1, 1)) / 9.0,
        (at(0, 1) + at(0, 2) + at(0, 3) + at(1, 1) + at(1, 2) + at(1, 3)) / 9.0,
        (at(0, 3) + at(1, 3)) / 6.0,
        (at(1, 0) + at(1, 1) + at(2, 0) + at(2, 1) + at(3, 0) + at(3, 1)) / 9.0,
        (1..4)
            .flat_map(|h| (1..4).map(move |w| (h, w)))
            .map(|(h, w)| at(h, w))
            .sum::<f64>()
            / 9.0,
        (at(1, 3) + at(2, 3) + at(3, 3)) / 6.0,
        (at(3, 0) + at(3, 1)) / 6.0,
        (at(3, 1) + at(3, 2) + at(3, 3)) / 6.0,
        at(3, 3) / 4.0,
    ];
    assert_close(
        "ave 4x4 k3 s2 pad 1",
        y.as_slice(),
        &want,
        Tolerance {
            relative: 1e-6,
            absolute: 0.0,
        },
    );

    // Backward: each input gets dy / divisor from every window covering it.
    let dy = CpuBuffer::from_vec(vec![9.0, 9.0, 6.0, 9.0, 9.0, 6.0, 6.0, 6.0, 4.0]);
    let mut dx = sentinels(16);
    be.pool_backward(&g, Pooling::Ave, dy.whole(), dx.whole_mut())
        .unwrap();
    // With dy = divisor every window adds 1 to each pixel it covers: dx counts windows.
    let rows = [1.0f32, 2.0, 1.0, 2.0]; // windows covering row h: starts -1, 1, 3
    let want: Vec<f32> = (0..16).map(|i| rows[i / 4] * rows[i % 4]).collect();
    assert_eq!(dx.as_slice(), &want[..]);
}

/// Pooling from upstream's formulas, written out directly, for random checks.
fn pool_reference(g: &PoolGeom, x: &[f32], max: bool) -> (Vec<f64>, Vec<f64>) {
    let (h_n, w_n) = (g.height as i64, g.width as i64);
    let mut y = vec![0.0; g.out_len()];
    let mut mask = vec![-1.0; g.out_len()];
    for p in 0..g.planes {
        for ph in 0..g.pooled_h {
            for pw in 0..g.pooled_w {
                let hs = (ph * g.stride_h) as i64 - g.pad_h as i64;
                let ws = (pw * g.stride_w) as i64 - g.pad_w as i64;
                let q = (p * g.pooled_h + ph) * g.pooled_w + pw;
                if max {
                    let mut best = f64::from(-f32::MAX);
                    for h in hs.max(0)..(hs + g.kernel_h as i64).min(h_n) {
                        for w in ws.max(0)..(ws + g.kernel_w as i64).min(w_n) {
                            let v = f64::from(x[p * g.height * g.width + (h * w_n + w) as usize]);
                            if v > best {
                                best = v;
                                mask[q] = (h * w_n + w) as f64;
                            }
                        }
                    }
                    y[q] = best;
                } else {
                    let he = (hs + g.kernel_h as i64).min(h_n + g.pad_h as i64);
                    let we = (ws + g.kernel_w as i64).min(w_n + g.pad_w as i64);
                    let size = ((he - hs) * (we - ws)) as f64;
                    let mut s = 0.0;
                    for h in hs.max(0)..he.min(h_n) {
                        for w in ws.max(0)..we.min(w_n) {
                            s += f64::from(x[p * g.height * g.width + (h * w_n + w) as usize]);
                        }
                    }
                    y[q] = s / size;
                }
            }
        }
    }
    (y, mask)
}

#[test]
fn pooling_random_against_reference() {
    let mut rng = rng_from_seed(14);
    let cases = [
        pool(3, (7, 9), (3, 2), (2, 3), (1, 1)),
        pool(6, (24, 24), (2, 2), (2, 2), (0, 0)),  // LeNet
        pool(64, (32, 32), (3, 3), (2, 2), (0, 0)), // cifar pool1, parallel path
        pool(20, (13, 13), (3, 3), (2, 2), (1, 1)),
        pool(2, (8, 8), (8, 8), (1, 1), (0, 0)), // global
        PoolGeom::new(5, (11, 10), (3, 3), (2, 2), (1, 2), RoundMode::Floor).unwrap(),
    ];
    for be in backends() {
        for g in &cases {
            let x = randv(&mut rng, g.in_len(), -1.0, 1.0);
            let (in_len, out_len) = (g.in_len(), g.out_len());
            let xb = padded(&x, 2, 0);
            let xs = xb.slice(2, in_len);
            let (want_max, want_mask) = pool_reference(g, &x, true);
            let mut y = sentinels(out_len + 1);
            let mut mask = sentinels(out_len + 3);
            let max = Pooling::Max {
                mask: mask.slice_mut(3, out_len),
            };
            be.pool_forward(g, max, xs, y.slice_mut(1, out_len))
                .unwrap();
            check_window(&format!("max pool {g:?}"), &y, 1, &want_max, 0.0, 0.0);
            check_window(&format!("max mask {g:?}"), &mask, 3, &want_mask, 0.0, 0.0);

            let (want_ave, _) = pool_reference(g, &x, false);
            let mut y = sentinels(out_len + 1);
            be.pool_forward(g, Pooling::Ave, xs, y.slice_mut(1, out_len))
                .unwrap();
            check_window(&format!("ave pool {g:?}"), &y, 1, &want_ave, 1e-5, 1e-6);

            // Backward against the adjoint: <pool(x), dy> == <x, pool_backward(dy)> for ave;
            // for max, the gradient lands on the argmaxes.
            let dy = randv(&mut rng, out_len, -1.0, 1.0);
            let dyb = padded(&dy, 1, 1);
            let dys = dyb.slice(1, out_len);
            let mut dx = sentinels(in_len + 2);
            be.pool_backward(g, Pooling::Ave, dys, dx.slice_mut(2, in_len))
                .unwrap();
            let lhs: f64 = want_ave
                .iter()
                .zip(&dy)
                .map(|(&a, &b)| a * f64::from(b))
                .sum();
            let rhs: f64 = x
                .iter()
                .zip(&dx.as_slice()[2..])
                .map(|(&a, &b)| f64::from(a) * f64::from(b))
                .sum();
            assert!(
                (lhs - rhs).abs() < 1e-4 * (1.0 + lhs.abs()),
                "ave adjoint {g:?}: {lhs} vs {rhs}"
            );
            assert_eq!(dx.as_slice()[..2], [SENTINEL; 2]);

            let mut dx = sentinels(in_len);
            let max = Pooling::Max {
                mask: mask.slice(3, out_len),
            };
            be.pool_backward(g, max, dys, dx.whole_mut()).unwrap();
            let mut want = vec![0.0f64; in_len];
            let pp = g.pooled_h * g.pooled_w;
            for (q, &m) in want_mask.iter().enumerate() {
                want[q / pp * g.height * g.width + m as usize] += f64::from(dy[q]);
            }
            check_window(&format!("max backward {g:?}"), &dx, 0, &want, 1e-6, 1e-6);
        }
    }
}

/// LRN across channels from its definition, in f64: returns (scale, y).
fn lrn_reference(g: &LrnGeom, x: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let pre = (g.size - 1) / 2;
    let mut scale = vec![0.0; g.len()];
    let mut y = vec![0.0; g.len()];
    for n in 0..g.num {
        for c in 0..g.channels {
            for s in 0..g.spatial {
                let lo = c.saturating_sub(pre);
                let hi = (c + pre).min(g.channels - 1);
                let sq: f64 = (lo..=hi)
                    .map(|k| x[(n * g.channels + k) * g.spatial + s].powi(2))
                    .sum();
                let i = (n * g.channels + c) * g.spatial + s;
                scale[i] = f64::from(g.k) + f64::from(g.alpha) / g.size as f64 * sq;
                y[i] = x[i] * scale[i].powf(-f64::from(g.beta));
            }
        }
    }
    (scale, y)
}

#[test]
fn lrn_across_channels() {
    let mut rng = rng_from_seed(15);
    let geoms = [
        LrnGeom {
            num: 1,
            channels: 1,
            spatial: 1,
            size: 5,
            alpha: 1e-4,
            beta: 0.75,
            k: 1.0,
        },
        LrnGeom {
            num: 2,
            channels: 7,
            spatial: 6,
            size: 3,
            alpha: 0.5,
            beta: 0.6,
            k: 2.0,
        },
        LrnGeom {
            num: 3,
            channels: 4,
            spatial: 5,
            size: 9,
            alpha: 1.5,
            beta: 0.75,
            k: 1.0,
        },
        LrnGeom {
            num: 4,
            channels: 96,
            spatial: 169,
            size: 5,
            alpha: 1e-4,
            beta: 0.75,
            k: 1.0,
        },
    ];
    for be in backends() {
        for g in &geoms {
            let x = randv(&mut rng, g.len(), -2.0, 2.0);
            let xd: Vec<f64> = x.iter().map(|&v| v.into()).collect();
            let (want_scale, want_y) = lrn_reference(g, &xd);
            let len = g.len();
            let xb = padded(&x, 1, 0);
            let mut scale = sentinels(len + 2);
            let mut y = sentinels(len + 1);
            be.lrn_across_forward(
                g,
                xb.slice(1, len),
                scale.slice_mut(2, len),
                y.slice_mut(0, len),
            )
            .unwrap();
            check_window(
                &format!("lrn scale {g:?}"),
                &scale,
                2,
                &want_scale,
                1e-5,
                1e-6,
            );
            check_window(&format!("lrn y {g:?}"), &y, 0, &want_y, 1e-5, 1e-6);

            // Backward against the gradient formula in f64.
            let dy = randv(&mut rng, g.len(), -1.0, 1.0);
            let pre = (g.size - 1) / 2;
            let cache = 2.0 * f64::from(g.alpha) * f64::from(g.beta) / g.size as f64;
            let mut want = vec![0.0; g.len()];
            for n in 0..g.num {
                for c in 0..g.channels {
                    for s in 0..g.spatial {
                        let i = (n * g.channels + c) * g.spatial + s;
                        let lo = c.saturating_sub(pre);
                        let hi = (c + pre).min(g.channels - 1);
                        let acc: f64 = (lo..=hi)
                            .map(|k| {
                                let j = (n * g.channels + k) * g.spatial + s;
                                f64::from(dy[j]) * want_y[j] / want_scale[j]
                            })
                            .sum();
                        want[i] = f64::from(dy[i]) * want_scale[i].powf(-f64::from(g.beta))
                            - cache * xd[i] * acc;
                    }
                }
            }
            let dyb = padded(&dy, 0, 0);
            let mut dx = sentinels(len + 3);
            let saved = LrnSaved {
                x: xb.slice(1, len),
                y: y.slice(0, len),
                scale: scale.slice(2, len),
            };
            be.lrn_across_backward(g, saved, dyb.whole(), dx.slice_mut(3, len))
                .unwrap();
            check_window(&format!("lrn backward {g:?}"), &dx, 3, &want, 1e-4, 1e-5);
        }
    }
}

#[test]
fn lrn_gradient_formula_matches_finite_differences() {
    // Checks the reference formula used above against the reference forward itself, so the
    // backward test does not rest on the formula being right.
    let g = LrnGeom {
        num: 1,
        channels: 6,
        spatial: 2,
        size: 3,
        alpha: 0.9,
        beta: 0.75,
        k: 1.5,
    };
    let mut rng = rng_from_seed(16);
    let x: Vec<f64> = randv(&mut rng, g.len(), -1.0, 1.0)
        .iter()
        .map(|&v| v.into())
        .collect();
    let dy: Vec<f64> = randv(&mut rng, g.len(), -1.0, 1.0)
        .iter()
        .map(|&v| v.into())
        .collect();
    let loss = |x: &[f64]| -> f64 {
        lrn_reference(&g, x)
            .1
            .iter()
            .zip(&dy)
            .map(|(a, b)| a * b)
            .sum()
    };
    let be = CpuBackend::new(1).unwrap();
    let xf: Vec<f32> = x.iter().map(|&v| v as f32).collect();
    let xb = CpuBuffer::from_vec(xf.clone());
    let (mut scale, mut y) = (be.alloc(g.len()).unwrap(), be.alloc(g.len()).unwrap());
    be.lrn_across_forward(&g, xb.whole(), scale.whole_mut(), y.whole_mut())
        .unwrap();
    let dyb = CpuBuffer::from_vec(dy.iter().map(|&v| v as f32).collect());
    let mut dx = be.alloc(g.len()).unwrap();
    let saved = LrnSaved {
        x: xb.whole(),
        y: y.whole(),
        scale: scale.whole(),
    };
    be.lrn_across_backward(&g, saved, dyb.whole(), dx.whole_mut())
        .unwrap();
    for i in 0..g.len() {
        let h = 1e-6;
        let (mut xp, mut xm) = (x.clone(), x.clone());
        xp[i] += h;
        xm[i] -= h;
        let numeric = (loss(&xp) - loss(&xm)) / (2.0 * h);
        let got = f64::from(dx.as_slice()[i]);
        assert!(
            (got - numeric).abs() < 1e-4,
            "dx[{i}] = {got}, numeric {numeric}"
        );
    }
}

#[test]
fn lrn_rejects_even_size() {
    let be = CpuBackend::new(1).unwrap();
    let g = LrnGeom {
        num: 1,
        channels: 2,
        spatial: 1,
        size: 4,
        alpha: 1.0,
        beta: 0.75,
        k: 1.0,
    };
    let x = be.alloc(2).unwrap();
    let (mut s, mut y) = (be.alloc(2).unwrap(), be.alloc(2).unwrap());
    assert!(matches!(
        be.lrn_across_forward(&g, x.whole(), s.whole_mut(), y.whole_mut()),
        Err(BackendError::InvalidArgument { .. })
    ));
}

#[test]
fn results_do_not_depend_on_thread_count() {
    let one = CpuBackend::new(1).unwrap();
    let two = CpuBackend::new(2).unwrap();
    let three = CpuBackend::new(3).unwrap();
    let mut rng = rng_from_seed(17);
    let g = geom((16, 27, 27), (3, 3), (1, 1), (1, 1), (1, 1));
    let im = CpuBuffer::from_vec(randv(&mut rng, g.im_len(), -1.0, 1.0));
    let col = CpuBuffer::from_vec(randv(&mut rng, g.col_len(), -1.0, 1.0));
    let pg = pool(32, (27, 27), (3, 3), (2, 2), (0, 0));
    let px = CpuBuffer::from_vec(randv(&mut rng, pg.in_len(), -1.0, 1.0));
    let lg = LrnGeom {
        num: 8,
        channels: 32,
        spatial: 169,
        size: 5,
        alpha: 1e-4,
        beta: 0.75,
        k: 1.0,
    };
    let lx = CpuBuffer::from_vec(randv(&mut rng, lg.len(), -1.0, 1.0));
    let big = CpuBuffer::from_vec(randv(&mut rng, 300_000, -1.0, 1.0));
    let run = |be: &CpuBackend| -> Vec<Vec<f32>> {
        let mut c = be.alloc(g.col_len()).unwrap();
        be.im2col(&g, im.whole(), c.whole_mut()).unwrap();
        let mut i = be.alloc(g.im_len()).unwrap();
        be.col2im(&g, col.whole(), i.whole_mut()).unwrap();
        let (mut y, mut m) = (
            be.alloc(pg.out_len()).unwrap(),
            be.alloc(pg.out_len()).unwrap(),
        );
        let max = Pooling::Max {
            mask: m.whole_mut(),
        };
        be.pool_forward(&pg, max, px.whole(), y.whole_mut())
            .unwrap();
        let mut a = be.alloc(pg.out_len()).unwrap();
        be.pool_forward(&pg, Pooling::Ave, px.whole(), a.whole_mut())
            .unwrap();
        let (mut s, mut l) = (be.alloc(lg.len()).unwrap(), be.alloc(lg.len()).unwrap());
        be.lrn_across_forward(&lg, lx.whole(), s.whole_mut(), l.whole_mut())
            .unwrap();
        let mut ch = be.alloc(96).unwrap();
        be.sum_per_channel(
            Axis::new(3, 96, 1000),
            1.0,
            big.whole(),
            0.0,
            ch.whole_mut(),
        )
        .unwrap();
        let mut e = be.alloc(300_000).unwrap();
        be.activation_forward(Activation::Sigmoid, big.whole().src(), e.whole_mut())
            .unwrap();
        let sums = vec![
            be.reduce(Reduction::Sum, big.whole()).unwrap(),
            be.reduce(Reduction::Asum, big.whole()).unwrap(),
        ];
        [c, i, y, m, a, s, l, ch, e]
            .into_iter()
            .map(CpuBuffer::into_vec)
            .chain([sums])
            .collect()
    };
    let reference = run(&one);
    for be in [&two, &three] {
        let got = run(be);
        for (k, (g, r)) in got.iter().zip(&reference).enumerate() {
            assert!(
                g.iter().zip(r).all(|(a, b)| a.to_bits() == b.to_bits()),
                "output {k} differs with {} threads",
                be.threads()
            );
        }
    }
}

#[test]
fn rng_fills_distribution_and_reproducibility() {
    let be = CpuBackend::new(1).unwrap();
    let n = 200_000;
    let mut y = be.alloc(n + 2).unwrap();
    let mut rng = rng_from_seed(42);
    let uniform = Distribution::Uniform { lo: -2.0, hi: 3.0 };
    be.random(uniform, &mut rng, y.slice_mut(1, n)).unwrap();
    let v = &y.as_slice()[1..=n];
    assert!(v.iter().all(|&u| (-2.0..=3.0).contains(&u)));
    assert_eq!(y.as_slice()[0], 0.0);
    assert_eq!(y.as_slice()[n + 1], 0.0);
    let mean = v.iter().map(|&u| f64::from(u)).sum::<f64>() / n as f64;
    let var = v
        .iter()
        .map(|&u| (f64::from(u) - mean).powi(2))
        .sum::<f64>()
        / n as f64;
    // U(-2, 3): mean 0.5, variance 25/12; 6 standard errors.
    assert!(
        (mean - 0.5).abs() < 6.0 * (25.0f64 / 12.0 / n as f64).sqrt(),
        "uniform mean {mean}"
    );
    assert!((var - 25.0 / 12.0).abs() < 0.03, "uniform variance {var}");

    let gaussian = Distribution::Gaussian {
        mean: 1.5,
        std: 0.5,
    };
    be.random(gaussian, &mut rng, y.slice_mut(0, n)).unwrap();
    let v = &y.as_slice()[..n];
    let mean = v.iter().map(|&u| f64::from(u)).sum::<f64>() / n as f64;
    let var = v
        .iter()
        .map(|&u| (f64::from(u) - mean).powi(2))
        .sum::<f64>()
        / n as f64;
    assert!(
        (mean - 1.5).abs() < 6.0 * 0.5 / (n as f64).sqrt(),
        "gaussian mean {mean}"
    );
    // Var of the sample variance of a normal: 2 sigma^4 / n.
    assert!(
        (var - 0.25).abs() < 6.0 * (2.0 * 0.0625 / n as f64).sqrt(),
        "gaussian variance {var}"
    );

    be.random(
        Distribution::Bernoulli { p: 0.3 },
        &mut rng,
        y.slice_mut(0, n),
    )
    .unwrap();
    let v = &y.as_slice()[..n];
    assert!(v.iter().all(|&b| b == 0.0 || b == 1.0));
    let frac = v.iter().map(|&b| f64::from(b)).sum::<f64>() / n as f64;
    assert!(
        (frac - 0.3).abs() < 6.0 * (0.21 / n as f64).sqrt(),
        "bernoulli {frac}"
    );
    for p in [1.0, 0.0] {
        be.random(Distribution::Bernoulli { p }, &mut rng, y.slice_mut(0, 100))
            .unwrap();
        assert!(y.as_slice()[..100].iter().all(|&b| b == p), "p = {p}");
    }

    // Same seed, same values; another seed, other values.
    let draw = |seed: u64| {
        let mut r = rng_from_seed(seed);
        let mut b = be.alloc(64).unwrap();
        let standard = Distribution::Gaussian {
            mean: 0.0,
            std: 1.0,
        };
        be.random(standard, &mut r, b.slice_mut(0, 32)).unwrap();
        let unit = Distribution::Uniform { lo: 0.0, hi: 1.0 };
        be.random(unit, &mut r, b.slice_mut(32, 32)).unwrap();
        b.into_vec()
    };
    assert_eq!(draw(7), draw(7));
    assert_ne!(draw(7), draw(8));

    // lo == hi gives exactly lo.
    let point = Distribution::Uniform { lo: 0.25, hi: 0.25 };
    be.random(point, &mut rng, y.slice_mut(0, 10)).unwrap();
    assert!(y.as_slice()[..10].iter().all(|&u| u == 0.25));
    for invalid in [
        Distribution::Uniform { lo: 1.0, hi: 0.0 },
        Distribution::Gaussian {
            mean: 0.0,
            std: -1.0,
        },
        Distribution::Bernoulli { p: 1.5 },
    ] {
        assert!(
            be.random(invalid, &mut rng, y.slice_mut(0, 1)).is_err(),
            "{invalid:?}"
        );
    }
}

/// The counter-based Bernoulli stream: element `i` of draw `d` is word `i % 4` of Philox at
/// counter `{i / 4, 0, d}` (the generator itself is checked against Random123's known answers
/// in src/backend/philox.rs), below `p` at the stated rate; each draw advances the counter by
/// one, and the parallel fill gives the serial fill's values.
#[test]
fn bernoulli_stream_draws_philox_words_below_p() {
    use rcaffe::backend::philox::{new_state, philox4x32_10, STATE_LEN};
    let key = 0xfeed_beef_0123_4567u64;
    let n = 100_003; // above the parallel threshold, not a multiple of 4
    let (serial, parallel) = (CpuBackend::new(1).unwrap(), CpuBackend::new(2).unwrap());
    let mut state = CpuBuffer::from_vec(new_state(key).to_vec());
    let mut y = serial.alloc(n).unwrap();
    let mut previous: Option<Vec<f32>> = None;
    for draw in 0..3u32 {
        let mut twin_state = CpuBuffer::from_vec(state.as_slice().to_vec());
        let mut twin = parallel.alloc(n).unwrap();
        serial
            .bernoulli_stream(0.3, state.whole_mut(), y.whole_mut())
            .unwrap();
        parallel
            .bernoulli_stream(0.3, twin_state.whole_mut(), twin.whole_mut())
            .unwrap();
        assert_eq!(y.as_slice(), twin.as_slice(), "draw {draw}: parallel fill");
        let words = state
            .as_slice()
            .iter()
            .map(|v| v.to_bits())
            .collect::<Vec<_>>();
        assert_eq!(words, [key as u32, (key >> 32) as u32, draw + 1, 0]);
        for i in [0, 1, 2, 3, 4, 77_777, n - 1] {
            let word = philox4x32_10(
                [(i / 4) as u32, 0, draw, 0],
                [key as u32, (key >> 32) as u32],
            )[i % 4];
            let u = (word >> 8) as f32 / (1u32 << 24) as f32;
            let want = if u < 0.3 { 1.0 } else { 0.0 };
            assert_eq!(y.as_slice()[i], want, "draw {draw}, element {i}");
        }
        let v = y.as_slice();
        assert!(v.iter().all(|&b| b == 0.0 || b == 1.0));
        let frac = v.iter().map(|&b| f64::from(b)).sum::<f64>() / n as f64;
        assert!(
            (frac - 0.3).abs() < 6.0 * (0.21 / n as f64).sqrt(),
            "draw {draw}: fraction {frac}"
        );
        assert_ne!(
            previous.as_deref(),
            Some(v),
            "draw {draw} repeats the one before"
        );
        previous = Some(v.to_vec());
    }

    for (p, want) in [(0.0, 0.0), (1.0, 1.0)] {
        serial
            .bernoulli_stream(p, state.whole_mut(), y.slice_mut(0, 100))
            .unwrap();
        assert!(y.as_slice()[..100].iter().all(|&b| b == want), "p = {p}");
    }
    assert!(serial
        .bernoulli_stream(1.5, state.whole_mut(), y.slice_mut(0, 1))
        .is_err());
    let mut short = serial.alloc(STATE_LEN - 1).unwrap();
    assert!(serial
        .bernoulli_stream(0.5, short.whole_mut(), y.slice_mut(0, 1))
        .is_err());
}

#[test]
fn pooling_windows_past_the_image_are_empty() {
    // Stride above the kernel without padding: ceil((5 - 1) / 3) + 1 = 3 windows per axis,
    // starting at 0, 3 and 6; the last lies past the 5-pixel image.
    let g = pool(1, (5, 5), (1, 1), (3, 3), (0, 0));
    assert_eq!((g.pooled_h, g.pooled_w), (3, 3));
    let be = CpuBackend::new(1).unwrap();
    let x = CpuBuffer::from_vec((0..25).map(|v| v as f32).collect());
    let (mut y, mut mask) = (be.alloc(9).unwrap(), be.alloc(9).unwrap());
    let max = Pooling::Max {
        mask: mask.whole_mut(),
    };
    be.pool_forward(&g, max, x.whole(), y.whole_mut()).unwrap();
    let m = -f32::MAX;
    assert_eq!(y.as_slice(), &[0.0, 3.0, m, 15.0, 18.0, m, m, m, m]);
    assert_eq!(
        mask.as_slice(),
        &[0.0, 3.0, -1.0, 15.0, 18.0, -1.0, -1.0, -1.0, -1.0]
    );
    let dy = CpuBuffer::from_vec(vec![1.0; 9]);
    let mut dx = be.alloc(25).unwrap();
    let max = Pooling::Max { mask: mask.whole() };
    be.pool_backward(&g, max, dy.whole(), dx.whole_mut())
        .unwrap();
    assert_eq!(dx.as_slice().iter().sum::<f32>(), 4.0);
    be.pool_forward(&g, Pooling::Ave, x.whole(), y.whole_mut())
        .unwrap();
    assert_eq!(
        y.as_slice(),
        &[0.0, 3.0, 0.0, 15.0, 18.0, 0.0, 0.0, 0.0, 0.0]
    );
    be.pool_backward(&g, Pooling::Ave, dy.whole(), dx.whole_mut())
        .unwrap();
    assert_eq!(dx.as_slice().iter().sum::<f32>(), 4.0);
}

/// WITHIN_CHANNEL LRN: the CPU backend's fused ops give the bits of upstream's composition
/// (square, average pooling, power, product and their backward), run op by op here.
#[test]
fn lrn_within_fused_matches_the_composition_bit_for_bit() {
    let mut rng = rng_from_seed(41);
    for be in backends() {
        for (planes, h, w, size, alpha, beta) in [
            (6, 16, 16, 3, 5e-5f32, 0.75f32),
            (3, 5, 7, 5, 0.3, 0.75),
            (2, 1, 1, 3, 1.0, -1.0),
            (4, 8, 3, 1, 0.5, 2.0),
        ] {
            let g = PoolGeom::lrn_window(planes, h, w, size);
            let n = g.in_len();
            let mut x = randv(&mut rng, n, -3.0, 3.0);
            x[0] = 0.0;
            x[n - 1] = -0.0;
            let dy = randv(&mut rng, n, -1.0, 1.0);
            let buf = |v: &[f32]| CpuBuffer::from_vec(v.to_vec());
            let (xb, dyb) = (buf(&x), buf(&dy));

            let l = LrnWithin {
                window: g,
                alpha,
                beta,
            };
            let [mut mean, mut power, mut y, mut sq] = std::array::from_fn(|_| buf(&vec![0.0; n]));
            be.lrn_within_forward(
                &l,
                xb.whole(),
                [mean.whole_mut(), power.whole_mut()],
                y.whole_mut(),
                sq.whole_mut(),
            )
            .unwrap();
            let mut dx = buf(&vec![0.0; n]);
            let [mut a, mut b] = std::array::from_fn(|_| buf(&vec![0.0; n]));
            let saved = LrnSaved {
                x: xb.whole(),
                y: mean.whole(),
                scale: power.whole(),
            };
            be.lrn_within_backward(
                &l,
                saved,
                dyb.whole(),
                dx.whole_mut(),
                [a.whole_mut(), b.whole_mut()],
            )
            .unwrap();

            // The composition, op by op.
            let (x_in, dy_in) = (xb.whole().src(), dyb.whole().src());
            let [mut c_sq, mut c_mean, mut c_power, mut c_y] =
                std::array::from_fn(|_| buf(&vec![0.0; n]));
            be.unary(Unary::Sqr, x_in, c_sq.whole_mut()).unwrap();
            be.pool_forward(&g, Pooling::Ave, c_sq.whole(), c_mean.whole_mut())
                .unwrap();
            let window_power = Unary::Power {
                power: -beta,
                scale: alpha,
                shift: 1.0,
            };
            be.unary(window_power, c_mean.whole().src(), c_power.whole_mut())
                .unwrap();
            let p_in = c_power.whole().src();
            be.binary(Binary::Mul, x_in, p_in, c_y.whole_mut()).unwrap();
            let [mut c_dx, mut c_a, mut c_b] = std::array::from_fn(|_| buf(&vec![0.0; n]));
            be.binary(Binary::Mul, dy_in, p_in, c_dx.whole_mut())
                .unwrap();
            be.binary(Binary::Mul, dy_in, x_in, c_a.whole_mut())
                .unwrap();
            be.binary(Binary::Mul, Src::InPlace, p_in, c_a.whole_mut())
                .unwrap();
            let base = Unary::Power {
                power: 1.0,
                scale: alpha,
                shift: 1.0,
            };
            be.unary(base, c_mean.whole().src(), c_b.whole_mut())
                .unwrap();
            be.binary(
                Binary::Div,
                Src::InPlace,
                c_b.whole().src(),
                c_a.whole_mut(),
            )
            .unwrap();
            be.scale(Scalar::Value(-beta * alpha), Src::InPlace, c_a.whole_mut())
                .unwrap();
            be.pool_backward(&g, Pooling::Ave, c_a.whole(), c_b.whole_mut())
                .unwrap();
            be.binary(Binary::Mul, Src::InPlace, x_in, c_b.whole_mut())
                .unwrap();
            be.axpby(Scalar::Value(2.0), c_b.whole(), 1.0, c_dx.whole_mut())
                .unwrap();

            let bits = |v: &CpuBuffer| v.as_slice().iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            let case = format!("{planes}x{h}x{w} size {size} alpha {alpha} beta {beta}");
            assert_eq!(bits(&mean), bits(&c_mean), "mean, {case}");
            assert_eq!(bits(&power), bits(&c_power), "power, {case}");
            assert_eq!(bits(&y), bits(&c_y), "y, {case}");
            assert_eq!(bits(&dx), bits(&c_dx), "dx, {case}");
        }
    }
}

/// A shared view of a buffer (what a numpy array of the Python package holds) reads and
/// writes the buffer's values, and keeps them alive after the buffer is dropped; a clone of
/// the buffer is a separate copy.
#[test]
fn shared_host_memory_sees_the_buffer_and_outlives_it() {
    let mut buffer = CpuBuffer::from_vec(vec![1.0, 2.0, 3.0]);
    let shared = buffer.share();
    assert_eq!(shared.len(), 3);
    let copy = buffer.clone();
    buffer.as_mut_slice()[1] = 20.0;
    // SAFETY: the buffer is not in use; index 1 is within its 3 values.
    unsafe {
        assert_eq!(*shared.as_ptr().add(1), 20.0);
        *shared.as_ptr().add(2) = 30.0;
    }
    assert_eq!(buffer.as_slice(), &[1.0, 20.0, 30.0]);
    assert_eq!(copy.as_slice(), &[1.0, 2.0, 3.0]);
    drop(buffer);
    // SAFETY: `shared` keeps the memory alive.
    let values = unsafe { std::slice::from_raw_parts(shared.as_ptr(), shared.len()) };
    assert_eq!(values, &[1.0, 20.0, 30.0]);
    // A shared buffer's `into_vec` copies; an unshared one gives its memory back.
    let buffer = CpuBuffer::from_vec(vec![4.0, 5.0]);
    let kept = buffer.share();
    assert_eq!(buffer.into_vec(), vec![4.0, 5.0]);
    assert_eq!(kept.len(), 2);
    assert_eq!(CpuBuffer::from_vec(vec![6.0]).into_vec(), vec![6.0]);
}
