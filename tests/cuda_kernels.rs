//! Every kernel of `kernels/*.cu`, compiled for the host with `kernels/emulation.h` (the
//! `rcaffe-kernel-emu` dev-dependency) and run as an emulated CUDA grid, against the CPU op of
//! the same name on the same random inputs; plus the NVRTC compile check of every kernel file.
//!
//! Launches use a small grid (3 blocks of 32 threads) and inputs larger than it, so every
//! grid-stride loop goes round several times.
//!
//! Tolerances. Emulated and CPU ops run the same IEEE f32 arithmetic (no FMA contraction on
//! either side), so ops made of +, -, *, /, comparisons and copies must agree exactly, and they
//! do where the kernel adds in the CPU op's order (col2im, pooling backward, LRN, the axis
//! reductions). Transcendental functions (exp, log, tanh, pow, log1p) get a relative 2e-6
//! (~16 ulps): on the host both sides call the same libm, but the tolerance is what the device
//! check will need, where CUDA's expf/logf/tanhf are within 2 ulps and powf within 4, composed
//! through a few operations. Sums whose order differs from the CPU op's (whole-buffer
//! reductions, sum_per_channel, sum_by_label) get 1e-6 of the sum of magnitudes, both sides
//! being within a few ulps of the exact sum.

use rcaffe::backend::cuda::{nvrtc, CudaBackend};
use rcaffe::backend::{
    rng_from_seed, Backend, ConvGeom, CpuBackend, CpuBuffer, LrnGeom, PoolGeom, RoundMode, Scalar,
    Src, Transpose,
};
use rcaffe_kernel_emu::{k, launch};
use std::os::raw::c_int;

const GRID: u32 = 3;
const BLOCK: u32 = 32;

/// Runs one kernel call as an emulated `GRID x BLOCK` launch.
macro_rules! emu {
    ($call:expr) => {
        // SAFETY: every pointer passed comes from a live Vec at least as long as the range the
        // kernel touches (the sizes passed are the Vec's dimensions).
        unsafe {
            launch(GRID, BLOCK, || {
                $call;
            })
        }
    };
}

#[derive(Clone, Copy, Debug)]
enum Tol {
    /// Bit-for-bit (NaN equals NaN).
    Exact,
    /// `|got - want| <= r |want|`, plus the tiniest normal for values near zero.
    Rel(f32),
    /// `|got - want| <= a`.
    Abs(f32),
    /// `|got - want| <= r |want| + a`.
    RelAbs(f32, f32),
}

fn check(op: &str, got: &[f32], want: &[f32], tol: Tol) {
    assert_eq!(got.len(), want.len(), "{op}: lengths differ");
    let mut worst = 0f32;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        if g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()) {
            continue;
        }
        let err = (g - w).abs();
        let ok = match tol {
            Tol::Exact => false,
            Tol::Rel(r) => err <= r * w.abs() + f32::MIN_POSITIVE,
            Tol::Abs(a) => err <= a,
            Tol::RelAbs(r, a) => err <= r * w.abs() + a,
        };
        assert!(
            ok,
            "{op}: element {i}: emulated kernel {g} vs CPU {w} (error {err}, tolerance {tol:?})"
        );
        worst = worst.max(err / w.abs().max(f32::MIN_POSITIVE));
    }
    eprintln!("{op}: {} elements, max relative error {worst:e}", got.len());
}

fn cpu() -> CpuBackend {
    CpuBackend::new(1).expect("CPU backend")
}

/// `n` values uniform on `[lo, hi]`, from `seed`.
fn rand_vec(seed: u64, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    let mut rng = rng_from_seed(seed);
    let mut b = CpuBuffer::from_vec(vec![0.0; n]);
    cpu().rng_uniform(n, lo, hi, &mut rng, &mut b, 0).unwrap();
    b.into_vec()
}

fn buf(v: &[f32]) -> CpuBuffer {
    CpuBuffer::from_vec(v.to_vec())
}

fn int(v: usize) -> c_int {
    c_int::try_from(v).expect("size fits an int")
}

type UnaryKernel = unsafe extern "C" fn(c_int, *const f32, *mut f32);
type CpuUnary = fn(
    &CpuBackend,
    usize,
    Src<'_, CpuBuffer>,
    &mut CpuBuffer,
    usize,
) -> rcaffe::backend::Result<()>;

/// Out of place and in place, against the CPU op.
fn unary(op: &str, kernel: UnaryKernel, reference: CpuUnary, lo: f32, hi: f32, tol: Tol) {
    let n = 1000;
    let x = rand_vec(op.len() as u64, n, lo, hi);
    let mut want = buf(&vec![0.0; n]);
    reference(&cpu(), n, Src::At(&buf(&x), 0), &mut want, 0).unwrap();
    let mut y = vec![f32::NAN; n];
    emu!(kernel(int(n), x.as_ptr(), y.as_mut_ptr()));
    check(op, &y, want.as_slice(), tol);
    let mut inplace = x.clone();
    let p = inplace.as_mut_ptr();
    emu!(kernel(int(n), p, p));
    check(&format!("{op} in place"), &inplace, want.as_slice(), tol);
}

type BinaryKernel = unsafe extern "C" fn(c_int, *const f32, *const f32, *mut f32);
type CpuBinary = fn(
    &CpuBackend,
    usize,
    Src<'_, CpuBuffer>,
    Src<'_, CpuBuffer>,
    &mut CpuBuffer,
    usize,
) -> rcaffe::backend::Result<()>;

fn binary(op: &str, kernel: BinaryKernel, reference: CpuBinary, lo: f32, hi: f32) {
    let n = 777;
    let a = rand_vec(1, n, lo, hi);
    let b = rand_vec(2, n, lo, hi);
    let mut want = buf(&vec![0.0; n]);
    reference(
        &cpu(),
        n,
        Src::At(&buf(&a), 0),
        Src::At(&buf(&b), 0),
        &mut want,
        0,
    )
    .unwrap();
    let mut y = vec![f32::NAN; n];
    emu!(kernel(int(n), a.as_ptr(), b.as_ptr(), y.as_mut_ptr()));
    check(op, &y, want.as_slice(), Tol::Exact);
    // In place on the first operand: y = a, then y = op(y, b).
    let mut inplace = a.clone();
    let p = inplace.as_mut_ptr();
    emu!(kernel(int(n), p, b.as_ptr(), p));
    check(
        &format!("{op} in place"),
        &inplace,
        want.as_slice(),
        Tol::Exact,
    );
}

#[test]
fn elementwise_unary_ops_match_cpu() {
    const TR: Tol = Tol::Rel(2e-6);
    unary(
        "exp",
        k::exp_kernel,
        |c, n, x, y, o| c.exp(n, x, y, o),
        -5.0,
        5.0,
        TR,
    );
    unary(
        "log",
        k::log_kernel,
        |c, n, x, y, o| c.log(n, x, y, o),
        0.01,
        10.0,
        TR,
    );
    unary(
        "abs",
        k::abs_kernel,
        |c, n, x, y, o| c.abs(n, x, y, o),
        -3.0,
        3.0,
        Tol::Exact,
    );
    unary(
        "sqr",
        k::sqr,
        |c, n, x, y, o| c.sqr(n, x, y, o),
        -3.0,
        3.0,
        Tol::Exact,
    );
    unary(
        "sqrt",
        k::sqrt_kernel,
        |c, n, x, y, o| c.sqrt(n, x, y, o),
        0.0,
        9.0,
        Tol::Exact,
    );
    let mut s = rand_vec(3, 300, -1.0, 1.0);
    s[..5].copy_from_slice(&[0.0, -0.0, f32::NAN, f32::INFINITY, -1e-30]);
    let mut want = buf(&[0.0; 300]);
    cpu().sign(300, Src::At(&buf(&s), 0), &mut want, 0).unwrap();
    let mut y = vec![7.0; 300];
    emu!(k::sign(300, s.as_ptr(), y.as_mut_ptr()));
    check("sign", &y, want.as_slice(), Tol::Exact);
}

#[test]
fn activations_match_cpu() {
    const TR: Tol = Tol::Rel(2e-6);
    unary(
        "sigmoid_forward",
        k::sigmoid_forward,
        |c, n, x, y, o| c.sigmoid_forward(n, x, y, o),
        -20.0,
        20.0,
        TR,
    );
    unary(
        "tanh_forward",
        k::tanh_forward,
        |c, n, x, y, o| c.tanh_forward(n, x, y, o),
        -10.0,
        10.0,
        TR,
    );
    unary(
        "bnll_forward",
        k::bnll_forward,
        |c, n, x, y, o| c.bnll_forward(n, x, y, o),
        -30.0,
        30.0,
        TR,
    );
    for slope in [0.0f32, 0.1] {
        let n = 1000;
        let x = rand_vec(4, n, -2.0, 2.0);
        let mut want = buf(&vec![0.0; n]);
        cpu()
            .relu_forward(n, slope, Src::At(&buf(&x), 0), &mut want, 0)
            .unwrap();
        let mut y = vec![f32::NAN; n];
        emu!(k::relu_forward(int(n), slope, x.as_ptr(), y.as_mut_ptr()));
        check("relu_forward", &y, want.as_slice(), Tol::Exact);
        let (alpha, elu_x) = (0.7f32, x.clone());
        let mut want = buf(&vec![0.0; n]);
        cpu()
            .elu_forward(n, alpha, Src::At(&buf(&elu_x), 0), &mut want, 0)
            .unwrap();
        emu!(k::elu_forward(
            int(n),
            alpha,
            elu_x.as_ptr(),
            y.as_mut_ptr()
        ));
        check("elu_forward", &y, want.as_slice(), TR);
    }
    // Backward ops: forward input/output plus an incoming gradient.
    let n = 999;
    let x = rand_vec(5, n, -3.0, 3.0);
    let fwd = rand_vec(6, n, -1.0, 1.0);
    let dy = rand_vec(7, n, -1.0, 1.0);
    let (xb, fb) = (buf(&x), buf(&fwd));
    let mut dx = vec![f32::NAN; n];
    let c = cpu();
    let mut want = buf(&vec![0.0; n]);

    c.relu_backward(n, 0.2, &xb, 0, Src::At(&buf(&dy), 0), &mut want, 0)
        .unwrap();
    emu!(k::relu_backward(
        int(n),
        0.2,
        x.as_ptr(),
        dy.as_ptr(),
        dx.as_mut_ptr()
    ));
    check("relu_backward", &dx, want.as_slice(), Tol::Exact);

    c.sigmoid_backward(n, &fb, 0, Src::At(&buf(&dy), 0), &mut want, 0)
        .unwrap();
    emu!(k::sigmoid_backward(
        int(n),
        fwd.as_ptr(),
        dy.as_ptr(),
        dx.as_mut_ptr()
    ));
    check("sigmoid_backward", &dx, want.as_slice(), Tol::Exact);

    c.tanh_backward(n, &fb, 0, Src::At(&buf(&dy), 0), &mut want, 0)
        .unwrap();
    emu!(k::tanh_backward(
        int(n),
        fwd.as_ptr(),
        dy.as_ptr(),
        dx.as_mut_ptr()
    ));
    check("tanh_backward", &dx, want.as_slice(), Tol::Exact);

    c.elu_backward(n, 0.5, &xb, 0, &fb, 0, Src::At(&buf(&dy), 0), &mut want, 0)
        .unwrap();
    emu!(k::elu_backward(
        int(n),
        0.5,
        x.as_ptr(),
        fwd.as_ptr(),
        dy.as_ptr(),
        dx.as_mut_ptr()
    ));
    check("elu_backward", &dx, want.as_slice(), Tol::Exact);

    let xl = rand_vec(8, n, -80.0, 80.0);
    c.bnll_backward(n, &buf(&xl), 0, Src::At(&buf(&dy), 0), &mut want, 0)
        .unwrap();
    emu!(k::bnll_backward(
        int(n),
        xl.as_ptr(),
        dy.as_ptr(),
        dx.as_mut_ptr()
    ));
    check("bnll_backward", &dx, want.as_slice(), Tol::Rel(2e-6));

    // In place: dx written over dy.
    c.relu_backward(n, 0.0, &xb, 0, Src::At(&buf(&dy), 0), &mut want, 0)
        .unwrap();
    let mut g = dy.clone();
    let p = g.as_mut_ptr();
    emu!(k::relu_backward(int(n), 0.0, x.as_ptr(), p, p));
    check("relu_backward in place", &g, want.as_slice(), Tol::Exact);
}

#[test]
fn blas1_and_binary_ops_match_cpu() {
    binary(
        "add",
        k::add,
        |c, n, a, b, y, o| c.add(n, a, b, y, o),
        -2.0,
        2.0,
    );
    binary(
        "sub",
        k::sub,
        |c, n, a, b, y, o| c.sub(n, a, b, y, o),
        -2.0,
        2.0,
    );
    binary(
        "mul",
        k::mul,
        |c, n, a, b, y, o| c.mul(n, a, b, y, o),
        -2.0,
        2.0,
    );
    binary(
        "div",
        k::div_kernel,
        |c, n, a, b, y, o| c.div(n, a, b, y, o),
        0.1,
        2.0,
    );
    binary(
        "max",
        k::max_kernel,
        |c, n, a, b, y, o| c.max(n, a, b, y, o),
        -2.0,
        2.0,
    );

    let n = 1234;
    let c = cpu();
    let x = rand_vec(9, n, -2.0, 2.0);
    let y0 = rand_vec(10, n, -2.0, 2.0);
    let xb = buf(&x);

    let mut want = buf(&y0);
    c.axpy(n, 0.3, &xb, 0, &mut want, 0).unwrap();
    let mut y = y0.clone();
    emu!(k::axpy(int(n), 0.3, x.as_ptr(), y.as_mut_ptr()));
    check("axpy", &y, want.as_slice(), Tol::Exact);

    // A scalar given by value (a null pointer) and read from memory (the pointer wins).
    let scalars = buf(&[0.5, -1.7]);
    let null = std::ptr::null::<f32>();
    for beta in [0.0f32, 0.9] {
        let mut want = buf(&y0);
        c.axpby(n, 0.3, &xb, 0, beta, &mut want, 0).unwrap();
        let mut y = y0.clone();
        if beta == 0.0 {
            y[0] = f32::NAN; // not read when beta == 0
            want.as_mut_slice()[0] = 0.3 * x[0];
        }
        emu!(k::axpby(
            int(n),
            null,
            0.3,
            x.as_ptr(),
            beta,
            y.as_mut_ptr()
        ));
        check("axpby", &y, want.as_slice(), Tol::Exact);

        let mut want = buf(&y0);
        c.axpby(n, Scalar::At(&scalars, 1), &xb, 0, beta, &mut want, 0)
            .unwrap();
        let mut y = y0.clone();
        let at = &scalars.as_slice()[1];
        emu!(k::axpby(int(n), at, 0.3, x.as_ptr(), beta, y.as_mut_ptr()));
        check("axpby (alpha in memory)", &y, want.as_slice(), Tol::Exact);
    }

    let mut want = buf(&y0);
    c.scale(n, -1.7, Src::At(&xb, 0), &mut want, 0).unwrap();
    emu!(k::scale(int(n), null, -1.7, x.as_ptr(), y.as_mut_ptr()));
    check("scale", &y, want.as_slice(), Tol::Exact);
    c.scale(n, Scalar::At(&scalars, 0), Src::At(&xb, 0), &mut want, 0)
        .unwrap();
    let at = &scalars.as_slice()[0];
    emu!(k::scale(int(n), at, -1.7, x.as_ptr(), y.as_mut_ptr()));
    check("scale (alpha in memory)", &y, want.as_slice(), Tol::Exact);

    c.copy(n, &xb, 0, &mut want, 0).unwrap();
    emu!(k::copy(int(n), x.as_ptr(), y.as_mut_ptr()));
    check("copy", &y, want.as_slice(), Tol::Exact);

    c.set(n, 2.5, &mut want, 0).unwrap();
    emu!(k::set(int(n), 2.5, y.as_mut_ptr()));
    check("set", &y, want.as_slice(), Tol::Exact);

    let mut want = buf(&y0);
    c.add_scalar(n, 0.25, &mut want, 0).unwrap();
    let mut y = y0.clone();
    emu!(k::add_scalar(int(n), 0.25, y.as_mut_ptr()));
    check("add_scalar", &y, want.as_slice(), Tol::Exact);

    let pos = rand_vec(11, n, 0.01, 3.0);
    for p in [2.0f32, 1.0, 0.75, -0.5] {
        c.powx(n, Src::At(&buf(&pos), 0), p, &mut want, 0).unwrap();
        emu!(k::powx(int(n), pos.as_ptr(), p, y.as_mut_ptr()));
        check("powx", &y, want.as_slice(), Tol::Rel(2e-6));
    }
    c.power(n, Src::At(&buf(&pos), 0), -0.75, 2.0, 1.0, &mut want, 0)
        .unwrap();
    emu!(k::power(
        int(n),
        pos.as_ptr(),
        -0.75,
        2.0,
        1.0,
        y.as_mut_ptr()
    ));
    check("power", &y, want.as_slice(), Tol::Rel(2e-6));
}

/// The whole-buffer reductions: partial sums per emulated thread, added on the host, as the
/// CUDA backend does (and, for `sum_into`, by one more kernel, which leaves the sum on the
/// device).
#[test]
fn reductions_match_cpu() {
    let n = 5000;
    let c = cpu();
    let x = rand_vec(12, n, -1.0, 1.0);
    let y = rand_vec(13, n, -1.0, 1.0);
    let (xb, yb) = (buf(&x), buf(&y));
    let threads = (GRID * BLOCK) as usize;
    let magnitude: f32 = x.iter().map(|v| v.abs()).sum::<f32>() + n as f32;
    for (kind, name) in [(0, "sum"), (1, "asum"), (2, "sumsq"), (3, "dot")] {
        let want = match kind {
            0 => c.sum(n, &xb, 0),
            1 => c.asum(n, &xb, 0),
            2 => c.sumsq(n, &xb, 0),
            _ => c.dot(n, &xb, 0, &yb, 0),
        }
        .unwrap();
        let mut partial = vec![f32::NAN; threads];
        emu!(k::reduce_partial(
            int(n),
            kind,
            x.as_ptr(),
            y.as_ptr(),
            partial.as_mut_ptr()
        ));
        let got = partial.iter().map(|&v| f64::from(v)).sum::<f64>() as f32;
        check(name, &[got], &[want], Tol::Abs(1e-6 * magnitude));

        if kind == 0 {
            // sum_into's second step, on the device: the partials added by one thread.
            let mut want = buf(&[f32::NAN; 2]);
            c.sum_into(n, -0.5, &xb, 0, &mut want, 1).unwrap();
            let mut got = [f32::NAN];
            emu!(k::sum_partials(
                int(threads),
                partial.as_ptr(),
                -0.5,
                got.as_mut_ptr()
            ));
            let want = &want.as_slice()[1..];
            check("sum_into", &got, want, Tol::Abs(0.5e-6 * magnitude));
        }
    }
}

#[test]
fn axis_and_per_channel_ops_match_cpu() {
    let c = cpu();
    let (outer, dim, inner) = (3, 10, 37);
    let len = outer * dim * inner;
    let x = rand_vec(14, len, -3.0, 3.0);
    let x2 = rand_vec(15, len, -3.0, 3.0);
    let (xb, x2b) = (buf(&x), buf(&x2));
    let mut want = buf(&vec![0.0; outer * inner]);
    let mut y = vec![f32::NAN; outer * inner];
    let (o, d, i) = (int(outer), int(dim), int(inner));

    c.max_over_axis(outer, dim, inner, &xb, 0, &mut want, 0)
        .unwrap();
    emu!(k::max_over_axis(o, d, i, x.as_ptr(), y.as_mut_ptr()));
    check("max_over_axis", &y, want.as_slice(), Tol::Exact);

    c.sum_over_axis(outer, dim, inner, &xb, 0, &mut want, 0)
        .unwrap();
    emu!(k::sum_over_axis(o, d, i, x.as_ptr(), y.as_mut_ptr()));
    check("sum_over_axis", &y, want.as_slice(), Tol::Exact);

    c.dot_over_axis(outer, dim, inner, &xb, 0, &x2b, 0, &mut want, 0)
        .unwrap();
    emu!(k::dot_over_axis(
        o,
        d,
        i,
        x.as_ptr(),
        x2.as_ptr(),
        y.as_mut_ptr()
    ));
    check("dot_over_axis", &y, want.as_slice(), Tol::Exact);

    let v = rand_vec(16, outer * inner, 0.5, 2.0);
    let vb = buf(&v);
    let mut want = buf(&x);
    c.sub_along_axis(outer, dim, inner, &vb, 0, &mut want, 0)
        .unwrap();
    let mut y = x.clone();
    emu!(k::sub_along_axis(o, d, i, v.as_ptr(), y.as_mut_ptr()));
    check("sub_along_axis", &y, want.as_slice(), Tol::Exact);

    let mut want = buf(&x);
    c.div_along_axis(outer, dim, inner, &vb, 0, &mut want, 0)
        .unwrap();
    let mut y = x.clone();
    emu!(k::div_along_axis(o, d, i, v.as_ptr(), y.as_mut_ptr()));
    check("div_along_axis", &y, want.as_slice(), Tol::Exact);

    // Per channel: dim plays the channels.
    let ch = rand_vec(17, dim, -1.0, 1.0);
    let chb = buf(&ch);
    let mut want = buf(&x);
    c.add_per_channel(outer, dim, inner, &chb, 0, &mut want, 0)
        .unwrap();
    let mut y = x.clone();
    emu!(k::add_per_channel(o, d, i, ch.as_ptr(), y.as_mut_ptr()));
    check("add_per_channel", &y, want.as_slice(), Tol::Exact);

    let mut want = buf(&vec![0.0; len]);
    c.mul_per_channel(outer, dim, inner, &chb, 0, Src::At(&xb, 0), &mut want, 0)
        .unwrap();
    let mut y = vec![f32::NAN; len];
    emu!(k::mul_per_channel(
        o,
        d,
        i,
        ch.as_ptr(),
        x.as_ptr(),
        y.as_mut_ptr()
    ));
    check("mul_per_channel", &y, want.as_slice(), Tol::Exact);
    let mut y = x.clone();
    let p = y.as_mut_ptr();
    emu!(k::mul_per_channel(o, d, i, ch.as_ptr(), p, p));
    check("mul_per_channel in place", &y, want.as_slice(), Tol::Exact);

    let magnitude: f32 = x.iter().map(|v| v.abs()).sum();
    for beta in [0.0f32, 0.5] {
        let y0 = rand_vec(18, dim, -1.0, 1.0);
        let mut want = buf(&y0);
        c.sum_per_channel(outer, dim, inner, 0.5, &xb, 0, beta, &mut want, 0)
            .unwrap();
        let mut y = y0.clone();
        emu!(k::sum_per_channel(
            o,
            d,
            i,
            0.5,
            x.as_ptr(),
            beta,
            y.as_mut_ptr()
        ));
        check(
            "sum_per_channel",
            &y,
            want.as_slice(),
            Tol::Abs(1e-6 * magnitude),
        );
    }
}

fn conv_geoms() -> Vec<ConvGeom> {
    let g = |channels,
             (height, width),
             (kernel_h, kernel_w),
             (pad_h, pad_w),
             (stride_h, stride_w),
             (dilation_h, dilation_w)| ConvGeom {
        channels,
        height,
        width,
        kernel_h,
        kernel_w,
        pad_h,
        pad_w,
        stride_h,
        stride_w,
        dilation_h,
        dilation_w,
    };
    vec![
        g(3, (8, 8), (3, 3), (1, 1), (1, 1), (1, 1)),
        g(2, (11, 9), (5, 3), (2, 0), (2, 3), (1, 1)),
        g(4, (7, 10), (3, 2), (2, 1), (1, 2), (2, 3)),
        g(1, (5, 5), (1, 1), (0, 0), (1, 1), (1, 1)),
        g(2, (6, 7), (4, 4), (3, 3), (3, 2), (1, 1)),
    ]
}

#[test]
fn im2col_and_col2im_match_cpu() {
    let c = cpu();
    for (t, g) in conv_geoms().into_iter().enumerate() {
        g.validate("test").unwrap();
        let im = rand_vec(20 + t as u64, g.im_len(), -1.0, 1.0);
        let mut want = buf(&vec![0.0; g.col_len()]);
        c.im2col(&g, &buf(&im), 0, &mut want, 0).unwrap();
        let mut col = vec![f32::NAN; g.col_len()];
        let args = |g: &ConvGeom| {
            [
                g.channels,
                g.height,
                g.width,
                g.kernel_h,
                g.kernel_w,
                g.pad_h,
                g.pad_w,
                g.stride_h,
                g.stride_w,
                g.dilation_h,
                g.dilation_w,
                g.out_h(),
                g.out_w(),
            ]
            .map(int)
        };
        let a = args(&g);
        emu!(k::im2col(
            a[0],
            a[1],
            a[2],
            a[3],
            a[4],
            a[5],
            a[6],
            a[7],
            a[8],
            a[9],
            a[10],
            a[11],
            a[12],
            im.as_ptr(),
            col.as_mut_ptr()
        ));
        check(&format!("im2col {g:?}"), &col, want.as_slice(), Tol::Exact);

        let cols = rand_vec(30 + t as u64, g.col_len(), -1.0, 1.0);
        let mut want = buf(&vec![0.0; g.im_len()]);
        c.col2im(&g, &buf(&cols), 0, &mut want, 0).unwrap();
        let mut out = vec![f32::NAN; g.im_len()];
        emu!(k::col2im(
            a[0],
            a[1],
            a[2],
            a[3],
            a[4],
            a[5],
            a[6],
            a[7],
            a[8],
            a[9],
            a[10],
            a[11],
            a[12],
            cols.as_ptr(),
            out.as_mut_ptr()
        ));
        check(&format!("col2im {g:?}"), &out, want.as_slice(), Tol::Exact);
    }
}

fn pool_geoms() -> Vec<PoolGeom> {
    let p = |planes, hw, kernel, stride, pad, round| {
        PoolGeom::new(planes, hw, kernel, stride, pad, round).expect("pool geometry")
    };
    vec![
        p(4, (8, 8), (2, 2), (2, 2), (0, 0), RoundMode::Ceil),
        p(3, (7, 9), (3, 3), (2, 2), (1, 1), RoundMode::Ceil),
        p(2, (13, 11), (3, 2), (2, 3), (2, 1), RoundMode::Ceil),
        p(2, (10, 10), (3, 3), (2, 2), (1, 1), RoundMode::Floor),
        p(1, (6, 6), (2, 2), (3, 3), (0, 0), RoundMode::Ceil),
    ]
}

#[test]
fn pooling_matches_cpu() {
    let c = cpu();
    for (t, g) in pool_geoms().into_iter().enumerate() {
        let a = [
            g.planes, g.height, g.width, g.kernel_h, g.kernel_w, g.stride_h, g.stride_w, g.pad_h,
            g.pad_w, g.pooled_h, g.pooled_w,
        ]
        .map(int);
        let mut x = rand_vec(40 + t as u64, g.in_len(), -1.0, 1.0);
        // Ties, so the first-maximum rule is exercised.
        for v in x.iter_mut().step_by(7) {
            *v = 0.5;
        }
        let xb = buf(&x);
        let (mut want_y, mut want_m) = (buf(&vec![0.0; g.out_len()]), buf(&vec![0.0; g.out_len()]));
        c.max_pool_forward(&g, &xb, 0, &mut want_y, 0, &mut want_m, 0)
            .unwrap();
        let (mut y, mut m) = (vec![f32::NAN; g.out_len()], vec![f32::NAN; g.out_len()]);
        emu!(k::max_pool_forward(
            a[0],
            a[1],
            a[2],
            a[3],
            a[4],
            a[5],
            a[6],
            a[7],
            a[8],
            a[9],
            a[10],
            x.as_ptr(),
            y.as_mut_ptr(),
            m.as_mut_ptr()
        ));
        check("max_pool_forward y", &y, want_y.as_slice(), Tol::Exact);
        check("max_pool_forward mask", &m, want_m.as_slice(), Tol::Exact);

        let dy = rand_vec(50 + t as u64, g.out_len(), -1.0, 1.0);
        let mut want = buf(&vec![0.0; g.in_len()]);
        c.max_pool_backward(&g, &buf(&dy), 0, &want_m, 0, &mut want, 0)
            .unwrap();
        let mut dx = vec![f32::NAN; g.in_len()];
        emu!(k::max_pool_backward(
            a[0],
            a[1],
            a[2],
            a[3],
            a[4],
            a[5],
            a[6],
            a[7],
            a[8],
            a[9],
            a[10],
            dy.as_ptr(),
            m.as_ptr(),
            dx.as_mut_ptr()
        ));
        check("max_pool_backward", &dx, want.as_slice(), Tol::Exact);

        let mut want = buf(&vec![0.0; g.out_len()]);
        c.ave_pool_forward(&g, &xb, 0, &mut want, 0).unwrap();
        emu!(k::ave_pool_forward(
            a[0],
            a[1],
            a[2],
            a[3],
            a[4],
            a[5],
            a[6],
            a[7],
            a[8],
            a[9],
            a[10],
            x.as_ptr(),
            y.as_mut_ptr()
        ));
        check("ave_pool_forward", &y, want.as_slice(), Tol::Exact);

        let mut want = buf(&vec![0.0; g.in_len()]);
        c.ave_pool_backward(&g, &buf(&dy), 0, &mut want, 0).unwrap();
        emu!(k::ave_pool_backward(
            a[0],
            a[1],
            a[2],
            a[3],
            a[4],
            a[5],
            a[6],
            a[7],
            a[8],
            a[9],
            a[10],
            dy.as_ptr(),
            dx.as_mut_ptr()
        ));
        check("ave_pool_backward", &dx, want.as_slice(), Tol::Exact);
    }
}

#[test]
fn lrn_matches_cpu() {
    let c = cpu();
    for (size, beta, channels) in [(5, 0.75f32, 12), (3, 0.6, 7), (5, 0.75, 2), (1, 1.0, 4)] {
        let g = LrnGeom {
            num: 3,
            channels,
            spatial: 29,
            size,
            alpha: 1e-2,
            beta,
            k: 1.5,
        };
        g.validate("test").unwrap();
        let n = g.len();
        let x = rand_vec(60, n, -3.0, 3.0);
        let (mut ws, mut wy) = (buf(&vec![0.0; n]), buf(&vec![0.0; n]));
        c.lrn_across_forward(&g, &buf(&x), 0, &mut ws, 0, &mut wy, 0)
            .unwrap();
        let (mut s, mut y) = (vec![f32::NAN; n], vec![f32::NAN; n]);
        let (num, ch, sp, sz) = (int(g.num), int(g.channels), int(g.spatial), int(g.size));
        emu!(k::lrn_across_forward(
            num,
            ch,
            sp,
            sz,
            g.alpha,
            g.beta,
            g.k,
            x.as_ptr(),
            s.as_mut_ptr(),
            y.as_mut_ptr()
        ));
        check("lrn_across_forward scale", &s, ws.as_slice(), Tol::Exact);
        check("lrn_across_forward y", &y, wy.as_slice(), Tol::Rel(2e-6));

        let dy = rand_vec(61, n, -1.0, 1.0);
        let mut want = buf(&vec![0.0; n]);
        c.lrn_across_backward(&g, &buf(&x), 0, &wy, 0, &ws, 0, &buf(&dy), 0, &mut want, 0)
            .unwrap();
        let mut dx = vec![f32::NAN; n];
        emu!(k::lrn_across_backward(
            num,
            ch,
            sp,
            sz,
            g.alpha,
            g.beta,
            x.as_ptr(),
            y.as_ptr(),
            s.as_ptr(),
            dy.as_ptr(),
            dx.as_mut_ptr()
        ));
        check("lrn_across_backward", &dx, want.as_slice(), Tol::Rel(2e-6));
    }
}

#[test]
fn prelu_matches_cpu() {
    let c = cpu();
    let (outer, channels, inner) = (4, 6, 21);
    let n = outer * channels * inner;
    let (o, ch, i) = (int(outer), int(channels), int(inner));
    let slope = rand_vec(70, channels, 0.0, 0.5);
    let x = rand_vec(71, n, -1.0, 1.0);
    let dy = rand_vec(72, n, -1.0, 1.0);
    let (sb, xb) = (buf(&slope), buf(&x));

    let mut want = buf(&vec![0.0; n]);
    c.prelu_forward(
        outer,
        channels,
        inner,
        &sb,
        0,
        Src::At(&xb, 0),
        &mut want,
        0,
    )
    .unwrap();
    let mut y = vec![f32::NAN; n];
    emu!(k::prelu_forward(
        o,
        ch,
        i,
        slope.as_ptr(),
        x.as_ptr(),
        y.as_mut_ptr()
    ));
    check("prelu_forward", &y, want.as_slice(), Tol::Exact);

    c.prelu_backward(
        outer,
        channels,
        inner,
        &sb,
        0,
        &xb,
        0,
        Src::At(&buf(&dy), 0),
        &mut want,
        0,
    )
    .unwrap();
    emu!(k::prelu_backward(
        o,
        ch,
        i,
        slope.as_ptr(),
        x.as_ptr(),
        dy.as_ptr(),
        y.as_mut_ptr()
    ));
    check("prelu_backward", &y, want.as_slice(), Tol::Exact);

    let d0 = rand_vec(73, channels, -1.0, 1.0);
    let mut want = buf(&d0);
    c.prelu_slope_grad(outer, channels, inner, &xb, 0, &buf(&dy), 0, &mut want, 0)
        .unwrap();
    let mut ds = d0.clone();
    emu!(k::prelu_slope_grad(
        o,
        ch,
        i,
        x.as_ptr(),
        dy.as_ptr(),
        ds.as_mut_ptr()
    ));
    check("prelu_slope_grad", &ds, want.as_slice(), Tol::Exact);
}

#[test]
fn plumbing_ops_match_cpu() {
    let c = cpu();
    let (rows, cols, xs, ys) = (5, 13, 20, 17);
    let x = rand_vec(80, rows * xs, -1.0, 1.0);
    let y0 = rand_vec(81, rows * ys, -1.0, 1.0);
    let mut want = buf(&y0);
    c.copy_2d(rows, cols, &buf(&x), 0, xs, &mut want, 0, ys)
        .unwrap();
    let mut y = y0.clone();
    emu!(k::copy_2d(
        int(rows),
        int(cols),
        x.as_ptr(),
        int(xs),
        y.as_mut_ptr(),
        int(ys)
    ));
    check("copy_2d", &y, want.as_slice(), Tol::Exact);

    let n = 500;
    let x = rand_vec(82, n, -1.0, 1.0);
    let (y0, m0) = (rand_vec(83, n, -1.0, 1.0), vec![1.0f32; n]);
    let (mut wy, mut wm) = (buf(&y0), buf(&m0));
    c.running_argmax(n, 3.0, &buf(&x), 0, &mut wy, 0, &mut wm, 0)
        .unwrap();
    let (mut y, mut m) = (y0.clone(), m0.clone());
    emu!(k::running_argmax(
        int(n),
        3.0,
        x.as_ptr(),
        y.as_mut_ptr(),
        m.as_mut_ptr()
    ));
    check("running_argmax y", &y, wy.as_slice(), Tol::Exact);
    check("running_argmax mask", &m, wm.as_slice(), Tol::Exact);

    let mut want = buf(&vec![0.0; n]);
    c.copy_where_eq(n, &wm, 0, 3.0, &buf(&x), 0, &mut want, 0)
        .unwrap();
    emu!(k::copy_where_eq(
        int(n),
        m.as_ptr(),
        3.0,
        x.as_ptr(),
        y.as_mut_ptr()
    ));
    check("copy_where_eq", &y, want.as_slice(), Tol::Exact);

    let (outer, dim, inner) = (3, 11, 7);
    let mut x = rand_vec(84, outer * dim * inner, -1.0, 1.0);
    // Ties and NaNs, to pin the order: equal values rank the larger index first, NaN on top.
    for v in x.iter_mut().step_by(5) {
        *v = 0.25;
    }
    x[3] = f32::NAN;
    x[40] = f32::INFINITY;
    x[41] = -0.0;
    x[42] = 0.0;
    for kk in [1, 4, dim] {
        let len = outer * kk * inner;
        let (mut wv, mut wi) = (buf(&vec![0.0; len]), buf(&vec![0.0; len]));
        c.top_k_over_axis(outer, dim, inner, kk, &buf(&x), 0, &mut wv, 0, &mut wi, 0)
            .unwrap();
        let (mut v, mut ix) = (vec![7.0f32; len], vec![7.0f32; len]);
        emu!(k::top_k_over_axis(
            int(outer),
            int(dim),
            int(inner),
            int(kk),
            x.as_ptr(),
            v.as_mut_ptr(),
            ix.as_mut_ptr()
        ));
        check("top_k_over_axis values", &v, wv.as_slice(), Tol::Exact);
        check("top_k_over_axis indices", &ix, wi.as_slice(), Tol::Exact);
    }
}

#[test]
fn loss_ops_match_cpu() {
    let c = cpu();
    let (outer, dim, inner) = (6, 9, 5);
    let np = outer * inner;
    let (o, d, i) = (int(outer), int(dim), int(inner));
    let x = rand_vec(90, outer * dim * inner, -2.0, 2.0);
    let xb = buf(&x);
    // Labels in 0..dim with a fractional part (truncated), and some equal to the ignore value.
    let mut label: Vec<f32> = rand_vec(91, np, 0.0, dim as f32 - 0.01)
        .into_iter()
        .map(|v| v.min(dim as f32 - 0.5))
        .collect();
    for l in label.iter_mut().step_by(4) {
        *l = 255.0;
    }
    // The label-indexed kernels' report of a bad label ({1, label, dim}), read by the host
    // after a replayed graph.
    let mut error = [0f32; 3];
    for ignore in [Some(255), None] {
        // Without an ignore label, 255 is out of range: use only valid labels then.
        let labels: Vec<f32> = match ignore {
            Some(_) => label.clone(),
            None => label
                .iter()
                .map(|&l| if l == 255.0 { 2.0 } else { l })
                .collect(),
        };
        let lb = buf(&labels);
        let (has, il) = (c_int::from(ignore.is_some()), ignore.unwrap_or(0));

        let mut want = buf(&vec![0.0; np]);
        c.label_mask(np, &lb, 0, ignore, &mut want, 0).unwrap();
        let mut y = vec![f32::NAN; np];
        emu!(k::label_mask(
            int(np),
            labels.as_ptr(),
            has,
            il,
            y.as_mut_ptr()
        ));
        check("label_mask", &y, want.as_slice(), Tol::Exact);

        c.gather_at_label(
            outer, dim, inner, &xb, 0, &lb, 0, ignore, -9.0, &mut want, 0,
        )
        .unwrap();
        emu!(k::gather_at_label(
            o,
            d,
            i,
            x.as_ptr(),
            labels.as_ptr(),
            has,
            il,
            -9.0,
            y.as_mut_ptr(),
            error.as_mut_ptr()
        ));
        check("gather_at_label", &y, want.as_slice(), Tol::Exact);

        for top_k in [1, 3] {
            c.top_k_hits(
                outer, dim, inner, top_k, &xb, 0, &lb, 0, ignore, &mut want, 0,
            )
            .unwrap();
            emu!(k::top_k_hits(
                o,
                d,
                i,
                int(top_k),
                x.as_ptr(),
                labels.as_ptr(),
                has,
                il,
                y.as_mut_ptr(),
                error.as_mut_ptr()
            ));
            check("top_k_hits", &y, want.as_slice(), Tol::Exact);
        }

        let mut want = buf(&x);
        c.affine_at_label(outer, dim, inner, &lb, 0, ignore, 0.5, -1.0, &mut want, 0)
            .unwrap();
        let mut y = x.clone();
        emu!(k::affine_at_label(
            o,
            d,
            i,
            labels.as_ptr(),
            has,
            il,
            0.5,
            -1.0,
            y.as_mut_ptr(),
            error.as_mut_ptr()
        ));
        check("affine_at_label", &y, want.as_slice(), Tol::Exact);
        assert_eq!(error, [0.0; 3], "a valid label was reported");

        let v = rand_vec(92, np, -1.0, 1.0);
        let mut want = buf(&vec![0.0; dim]);
        c.sum_by_label(np, dim, &buf(&v), 0, &lb, 0, ignore, &mut want, 0)
            .unwrap();
        let mut y = vec![f32::NAN; dim];
        emu!(k::sum_by_label(
            int(np),
            d,
            v.as_ptr(),
            labels.as_ptr(),
            has,
            il,
            y.as_mut_ptr()
        ));
        check(
            "sum_by_label",
            &y,
            want.as_slice(),
            Tol::Abs(1e-6 * np as f32),
        );
    }

    // Without an ignore label, 255 is a bad label: each kernel that indexes by label reports
    // it, leaves what it would have indexed alone and goes on with the other positions.
    let before = vec![5.0f32; outer * dim * inner];
    type LabelKernel<'a> = &'a dyn Fn(*mut f32, *mut f32);
    let kernels: [(&str, LabelKernel); 3] = [
        ("gather_at_label", &|y, e| unsafe {
            k::gather_at_label(o, d, i, x.as_ptr(), label.as_ptr(), 0, 0, -9.0, y, e)
        }),
        ("top_k_hits", &|y, e| unsafe {
            k::top_k_hits(o, d, i, 1, x.as_ptr(), label.as_ptr(), 0, 0, y, e)
        }),
        ("affine_at_label", &|y, e| unsafe {
            k::affine_at_label(o, d, i, label.as_ptr(), 0, 0, 0.5, -1.0, y, e)
        }),
    ];
    for (name, kernel) in kernels {
        let mut y = before.clone();
        let mut error = [0f32; 3];
        let (yp, ep) = (y.as_mut_ptr(), error.as_mut_ptr());
        // SAFETY: see `emu!`.
        unsafe { launch(GRID, BLOCK, || kernel(yp, ep)) };
        assert_eq!(
            error,
            [1.0, 255.0, dim as f32],
            "{name}: the bad label's report"
        );
        for (p, _) in label.iter().enumerate().filter(|(_, &l)| l == 255.0) {
            // gather_at_label and top_k_hits write y[p]; affine_at_label p's column.
            let (o, j) = (p / inner, p % inner);
            let untouched = match name {
                "affine_at_label" => (0..dim).all(|c| y[(o * dim + c) * inner + j] == 5.0),
                _ => y[p] == 5.0,
            };
            assert!(untouched, "{name}: position {p} (bad label) was written");
        }
    }

    let n = 1000;
    let x = rand_vec(93, n, -30.0, 30.0);
    let t = rand_vec(94, n, 0.0, 1.0);
    let mut want = buf(&vec![0.0; n]);
    c.sigmoid_cross_entropy(n, &buf(&x), 0, &buf(&t), 0, &mut want, 0)
        .unwrap();
    let mut y = vec![f32::NAN; n];
    emu!(k::sigmoid_cross_entropy(
        int(n),
        x.as_ptr(),
        t.as_ptr(),
        y.as_mut_ptr()
    ));
    // The result is a difference of terms up to |x| = 30: the error is relative to them.
    check(
        "sigmoid_cross_entropy",
        &y,
        want.as_slice(),
        Tol::Abs(2e-6 * 30.0),
    );
}

/// The update rules against upstream's formulas (src/caffe/solvers/*_solver.cu) evaluated in
/// Rust f32, and SGD also against the CPU backend ops upstream's CPU path composes.
#[test]
fn solver_updates_match_reference() {
    let n = 1500;
    let g0 = rand_vec(100, n, -1.0, 1.0);
    let h0 = rand_vec(101, n, 0.0, 1.0);
    let h20 = rand_vec(102, n, 0.0, 1.0);
    let pn = int(n);
    let run2 = |f: &dyn Fn(*mut f32, *mut f32)| {
        let (mut g, mut h) = (g0.clone(), h0.clone());
        let (gp, hp) = (g.as_mut_ptr(), h.as_mut_ptr());
        // SAFETY: see `emu!`.
        unsafe { launch(GRID, BLOCK, || f(gp, hp)) };
        (g, h)
    };
    let (m, lr, delta) = (0.9f32, 0.01f32, 1e-8f32);
    // The step scale by value (a null pointer) and from memory (the pointer wins over 0).
    let null = std::ptr::null::<f32>();

    let (g, h) = run2(&|g, h| unsafe { k::sgd_update(pn, g, h, m, null, lr) });
    let want_h: Vec<f32> = g0.iter().zip(&h0).map(|(&g, &h)| m * h + lr * g).collect();
    check("sgd_update h", &h, &want_h, Tol::Exact);
    check("sgd_update g", &g, &want_h, Tol::Exact);
    // Upstream's CPU SGD: h = lr g + m h (axpby), then g = h (copy).
    let c = cpu();
    let mut hb = buf(&h0);
    c.axpby(n, lr, &buf(&g0), 0, m, &mut hb, 0).unwrap();
    check("sgd_update vs CPU axpby", &h, hb.as_slice(), Tol::Exact);

    let (g, h) = run2(&|g, h| unsafe { k::nesterov_update(pn, g, h, m, &lr, 0.0) });
    let want_h: Vec<f32> = g0.iter().zip(&h0).map(|(&g, &h)| m * h + lr * g).collect();
    let want_g: Vec<f32> = h0
        .iter()
        .zip(&want_h)
        .map(|(&h, &hn)| (1.0 + m) * hn - m * h)
        .collect();
    check("nesterov_update h", &h, &want_h, Tol::Exact);
    check("nesterov_update g", &g, &want_g, Tol::Exact);

    let (g, h) = run2(&|g, h| unsafe { k::adagrad_update(pn, g, h, delta, null, lr) });
    let want_h: Vec<f32> = g0.iter().zip(&h0).map(|(&g, &h)| h + g * g).collect();
    let want_g: Vec<f32> = g0
        .iter()
        .zip(&want_h)
        .map(|(&g, &h)| lr * g / (h.sqrt() + delta))
        .collect();
    check("adagrad_update h", &h, &want_h, Tol::Exact);
    check("adagrad_update g", &g, &want_g, Tol::Exact);

    let decay = 0.98f32;
    let (g, h) = run2(&|g, h| unsafe { k::rmsprop_update(pn, g, h, decay, delta, &lr, 0.0) });
    let want_h: Vec<f32> = g0
        .iter()
        .zip(&h0)
        .map(|(&g, &h)| decay * h + (1.0 - decay) * g * g)
        .collect();
    let want_g: Vec<f32> = g0
        .iter()
        .zip(&want_h)
        .map(|(&g, &h)| lr * g / (h.sqrt() + delta))
        .collect();
    check("rmsprop_update h", &h, &want_h, Tol::Exact);
    check("rmsprop_update g", &g, &want_g, Tol::Exact);

    let (mut g, mut h, mut h2) = (g0.clone(), h0.clone(), h20.clone());
    let (gp, hp, h2p) = (g.as_mut_ptr(), h.as_mut_ptr(), h2.as_mut_ptr());
    emu!(k::adadelta_update(pn, gp, hp, h2p, 0.95, 1e-6, null, 1.0));
    for i in 0..n {
        let (gi, mo, de) = (g0[i], 0.95f32, 1e-6f32);
        let hi = mo * h0[i] + (1.0 - mo) * gi * gi;
        let u = gi * ((h20[i] + de) / (hi + de)).sqrt();
        let h2i = mo * h20[i] + (1.0 - mo) * u * u;
        check(
            "adadelta_update",
            &[h[i], h2[i], g[i]],
            &[hi, h2i, u],
            Tol::Exact,
        );
    }

    let (mut g, mut mm, mut vv) = (g0.clone(), h0.clone(), h20.clone());
    let (gp, mp, vp) = (g.as_mut_ptr(), mm.as_mut_ptr(), vv.as_mut_ptr());
    let (b1, b2, eps, rate) = (0.9f32, 0.999f32, 1e-8f32, 0.001f32);
    emu!(k::adam_update(pn, gp, mp, vp, b1, b2, eps, &rate, 0.0));
    for i in 0..n {
        let gi = g0[i];
        let mi = b1 * h0[i] + (1.0 - b1) * gi;
        let vi = b2 * h20[i] + (1.0 - b2) * gi * gi;
        let step = rate * mi / (vi.sqrt() + eps);
        check(
            "adam_update",
            &[mm[i], vv[i], g[i]],
            &[mi, vi, step],
            Tol::Exact,
        );
    }
}

/// The counter-based Bernoulli stream against the CPU op, value for value: sizes that are and
/// are not multiples of 4, a draw counter about to carry into its high word, and the advance.
#[test]
fn random_stream_matches_cpu() {
    use rcaffe::backend::philox;
    let c = cpu();
    for (n, p, key) in [(1000, 0.3f32, 7u64), (1003, 0.5, u64::MAX), (3, 0.9, 0)] {
        let mut state = philox::new_state(key);
        state[2] = f32::from_bits(u32::MAX - 1); // two draws from a carry
        let mut cpu_state = buf(&state);
        for draw in 0..3 {
            let mut want = buf(&vec![f32::NAN; n]);
            c.rng_bernoulli_stream(n, p, &mut cpu_state, 0, &mut want, 0)
                .unwrap();
            let mut y = vec![f32::NAN; n];
            let groups = int(n.div_ceil(4));
            emu!(k::bernoulli_stream(
                int(n),
                groups,
                p,
                state.as_ptr(),
                y.as_mut_ptr()
            ));
            emu!(k::advance_stream(1, state.as_mut_ptr()));
            check(
                &format!("bernoulli_stream n {n} draw {draw}"),
                &y,
                want.as_slice(),
                Tol::Exact,
            );
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&state), bits(cpu_state.as_slice()), "advance_stream");
        }
    }
}

/// Every kernel file compiles with NVRTC for sm_90, through the code path the CUDA backend
/// uses. Needs NVRTC's shared library (CI installs NVIDIA's wheel); skipped without it.
#[test]
fn every_kernel_file_compiles_with_nvrtc() {
    if !nvrtc::available() {
        eprintln!("SKIPPED: NVRTC not available (libnvrtc.so not found on the library path)");
        return;
    }
    for (name, _) in nvrtc::KERNEL_SOURCES {
        let ptx = nvrtc::compile(name, "sm_90")
            .unwrap_or_else(|e| panic!("kernels/{name}.cu does not compile with NVRTC: {e}"));
        // Every extern "C" kernel of the file is an entry point of the PTX.
        for kernel in nvrtc::kernel_names(name) {
            assert!(
                ptx.contains(&format!(".entry {kernel}(")),
                "kernels/{name}.cu: no PTX entry for {kernel}"
            );
        }
        eprintln!(
            "kernels/{name}.cu: compiled for sm_90 ({} bytes of PTX)",
            ptx.len()
        );
        // For a GPU machine without NVRTC: the PTX, for `RCAFFE_PTX_DIR` there.
        if let Some(dir) = std::env::var_os("RCAFFE_PTX_OUT") {
            let path = std::path::Path::new(&dir).join(format!("{name}.sm_90.ptx"));
            std::fs::write(path, ptx.as_str()).unwrap();
        }
    }
    // Cached per process: a second request returns the same PTX without compiling.
    let first = nvrtc::compile("elementwise", "sm_90").unwrap();
    let again = nvrtc::compile("elementwise", "sm_90").unwrap();
    assert!(std::sync::Arc::ptr_eq(&first, &again));
}

/// Runs a battery of ops on backend `b` from fixed random inputs and returns every output,
/// downloaded, with its name and the tolerance a device result must meet against the CPU's.
fn op_battery<B: Backend>(b: &B) -> Vec<(String, Vec<f32>, Tol)> {
    // Transcendentals on the device: CUDA's expf/logf/tanhf/log1pf are within 2 ulps, powf
    // within 4; composed results near zero lose relative accuracy, hence the absolute term.
    const TR: Tol = Tol::RelAbs(4e-6, 1e-6);
    let mut out: Vec<(String, Vec<f32>, Tol)> = Vec::new();
    let up = |v: &[f32]| {
        let mut buf = b.alloc(v.len()).unwrap();
        b.upload(v, &mut buf, 0).unwrap();
        buf
    };
    let down = |buf: &B::Buffer| {
        let mut v = vec![0f32; rcaffe::backend::DeviceBuffer::len(buf)];
        b.download(buf, 0, &mut v).unwrap();
        v
    };
    let n = 100_003; // several grid-stride rounds are not needed on a device: odd size, offsets
    let x = up(&rand_vec(200, n, -4.0, 4.0));
    let pos = up(&rand_vec(201, n, 0.01, 4.0));
    let dy = up(&rand_vec(202, n, -1.0, 1.0));
    let mut y = b.alloc(n + 5).unwrap();
    let unary: [(&str, Tol); 11] = [
        ("exp", TR),
        ("log", TR),
        ("abs", Tol::Exact),
        ("sqr", Tol::Exact),
        ("sqrt", Tol::Exact),
        ("sign", Tol::Exact),
        ("sigmoid_forward", TR),
        ("tanh_forward", TR),
        ("bnll_forward", TR),
        ("relu_forward", Tol::Exact),
        ("elu_forward", TR),
    ];
    for (name, tol) in unary {
        let src = if matches!(name, "log" | "sqrt") {
            &pos
        } else {
            &x
        };
        let s = Src::At(src, 0);
        match name {
            "exp" => b.exp(n, s, &mut y, 5),
            "log" => b.log(n, s, &mut y, 5),
            "abs" => b.abs(n, s, &mut y, 5),
            "sqr" => b.sqr(n, s, &mut y, 5),
            "sqrt" => b.sqrt(n, s, &mut y, 5),
            "sign" => b.sign(n, s, &mut y, 5),
            "sigmoid_forward" => b.sigmoid_forward(n, s, &mut y, 5),
            "tanh_forward" => b.tanh_forward(n, s, &mut y, 5),
            "bnll_forward" => b.bnll_forward(n, s, &mut y, 5),
            "relu_forward" => b.relu_forward(n, 0.1, s, &mut y, 5),
            _ => b.elu_forward(n, 0.5, s, &mut y, 5),
        }
        .unwrap();
        out.push((name.into(), down(&y)[5..].to_vec(), tol));
    }
    b.powx(n, Src::At(&pos, 0), 0.75, &mut y, 0).unwrap();
    out.push(("powx".into(), down(&y)[..n].to_vec(), TR));
    b.power(n, Src::At(&pos, 0), -0.75, 2.0, 1.0, &mut y, 0)
        .unwrap();
    out.push(("power".into(), down(&y)[..n].to_vec(), TR));
    for name in ["add", "sub", "mul", "div", "max"] {
        let (a, c) = (Src::At(&x, 0), Src::At(&pos, 0));
        match name {
            "add" => b.add(n, a, c, &mut y, 0),
            "sub" => b.sub(n, a, c, &mut y, 0),
            "mul" => b.mul(n, a, c, &mut y, 0),
            "div" => b.div(n, a, c, &mut y, 0),
            _ => b.max(n, a, c, &mut y, 0),
        }
        .unwrap();
        out.push((name.into(), down(&y)[..n].to_vec(), Tol::Exact));
    }
    b.copy(n, &x, 0, &mut y, 0).unwrap();
    b.axpby(n, 0.3, &dy, 0, 0.9, &mut y, 0).unwrap();
    b.axpy(n, -0.2, &pos, 0, &mut y, 0).unwrap();
    b.scale(n, 1.5, Src::InPlace, &mut y, 0).unwrap();
    b.add_scalar(n, 0.125, &mut y, 0).unwrap();
    out.push((
        "copy/axpby/axpy/scale/add_scalar".into(),
        down(&y)[..n].to_vec(),
        Tol::Exact,
    ));
    // Two draws of a counter-based stream (the second after the counter's advance), and the
    // state they leave.
    let mut stream = up(&rcaffe::backend::philox::new_state(0x0123_4567_89ab_cdef));
    for draw in 0..2 {
        b.rng_bernoulli_stream(n, 0.3, &mut stream, 0, &mut y, 1)
            .unwrap();
        let name = format!("rng_bernoulli_stream draw {draw}");
        out.push((name, down(&y)[1..n + 1].to_vec(), Tol::Exact));
    }
    // Each u32 word as two exactly representable halves.
    let state = down(&stream)
        .iter()
        .flat_map(|v| [(v.to_bits() >> 16) as f32, (v.to_bits() & 0xffff) as f32])
        .collect();
    out.push(("rng_bernoulli_stream state".into(), state, Tol::Exact));
    b.relu_backward(n, 0.1, &x, 0, Src::At(&dy, 0), &mut y, 0)
        .unwrap();
    out.push(("relu_backward".into(), down(&y)[..n].to_vec(), Tol::Exact));
    b.sigmoid_backward(n, &pos, 0, Src::At(&dy, 0), &mut y, 0)
        .unwrap();
    out.push((
        "sigmoid_backward".into(),
        down(&y)[..n].to_vec(),
        Tol::Exact,
    ));
    b.bnll_backward(n, &x, 0, Src::At(&dy, 0), &mut y, 0)
        .unwrap();
    out.push(("bnll_backward".into(), down(&y)[..n].to_vec(), TR));
    let mag = n as f32 * 4.0;
    for (name, v) in [
        ("sum", b.sum(n, &x, 0)),
        ("asum", b.asum(n, &x, 0)),
        ("sumsq", b.sumsq(n, &x, 0)),
        ("dot", b.dot(n, &x, 0, &dy, 0)),
    ] {
        out.push((name.into(), vec![v.unwrap()], Tol::Abs(1e-6 * mag * 4.0)));
    }
    b.sum_into(n, -0.5, &x, 0, &mut y, 3).unwrap();
    let sum_tol = Tol::Abs(0.5e-6 * mag * 4.0);
    out.push(("sum_into".into(), down(&y)[3..4].to_vec(), sum_tol));

    // Axis and per-channel ops on (outer, dim, inner) = (32, 10, 300).
    let (o, d, i) = (32, 10, 300);
    let len = o * d * i;
    let mut small = b.alloc(o * i).unwrap();
    b.max_over_axis(o, d, i, &x, 0, &mut small, 0).unwrap();
    out.push(("max_over_axis".into(), down(&small), Tol::Exact));
    b.copy(len, &x, 0, &mut y, 0).unwrap();
    b.sub_along_axis(o, d, i, &small, 0, &mut y, 0).unwrap();
    b.exp(len, Src::InPlace, &mut y, 0).unwrap();
    b.sum_over_axis(o, d, i, &y, 0, &mut small, 0).unwrap();
    b.div_along_axis(o, d, i, &small, 0, &mut y, 0).unwrap();
    out.push((
        "softmax (max/sub/exp/sum/div along axis)".into(),
        down(&y)[..len].to_vec(),
        TR,
    ));
    b.dot_over_axis(o, d, i, &x, 0, &dy, 0, &mut small, 0)
        .unwrap();
    out.push(("dot_over_axis".into(), down(&small), Tol::Exact));
    let ch = up(&rand_vec(203, d, -1.0, 1.0));
    b.copy(len, &x, 0, &mut y, 0).unwrap();
    b.add_per_channel(o, d, i, &ch, 0, &mut y, 0).unwrap();
    b.mul_per_channel(o, d, i, &ch, 0, Src::InPlace, &mut y, 0)
        .unwrap();
    out.push((
        "add/mul_per_channel".into(),
        down(&y)[..len].to_vec(),
        Tol::Exact,
    ));
    let mut chy = up(&rand_vec(204, d, -1.0, 1.0));
    b.sum_per_channel(o, d, i, 0.5, &x, 0, 0.25, &mut chy, 0)
        .unwrap();
    out.push((
        "sum_per_channel".into(),
        down(&chy),
        Tol::Abs(1e-6 * (o * i) as f32 * 4.0),
    ));
    b.prelu_forward(o, d, i, &ch, 0, Src::At(&x, 0), &mut y, 0)
        .unwrap();
    out.push(("prelu_forward".into(), down(&y)[..len].to_vec(), Tol::Exact));
    b.prelu_backward(o, d, i, &ch, 0, &x, 0, Src::At(&dy, 0), &mut y, 0)
        .unwrap();
    out.push((
        "prelu_backward".into(),
        down(&y)[..len].to_vec(),
        Tol::Exact,
    ));
    // Accumulates into its output: start from the same values on both backends.
    b.upload(&rand_vec(209, d, -1.0, 1.0), &mut chy, 0).unwrap();
    b.prelu_slope_grad(o, d, i, &x, 0, &dy, 0, &mut chy, 0)
        .unwrap();
    out.push(("prelu_slope_grad".into(), down(&chy), Tol::Exact));

    // Convolution pieces and GEMM: AlexNet conv2-like geometry, small batch of one image.
    let g = ConvGeom {
        channels: 48,
        height: 27,
        width: 27,
        kernel_h: 5,
        kernel_w: 5,
        pad_h: 2,
        pad_w: 2,
        stride_h: 1,
        stride_w: 1,
        dilation_h: 1,
        dilation_w: 1,
    };
    let mut col = b.alloc(g.col_len()).unwrap();
    b.im2col(&g, &x, 0, &mut col, 0).unwrap();
    out.push(("im2col".into(), down(&col), Tol::Exact));
    let mut im = b.alloc(g.im_len()).unwrap();
    b.col2im(&g, &col, 0, &mut im, 0).unwrap();
    out.push(("col2im".into(), down(&im), Tol::Exact));
    let (m, k, nn) = (64, g.channels * 25, g.out_h() * g.out_w());
    let w = up(&rand_vec(205, m * k, -0.1, 0.1));
    let mut c = b.alloc(m * nn).unwrap();
    match b.gemm_packed(
        Transpose::NoTrans,
        Transpose::NoTrans,
        m,
        nn,
        k,
        1.0,
        &w,
        0,
        &col,
        0,
        0.0,
        &mut c,
        0,
    ) {
        Ok(()) => out.push(("gemm NN".into(), down(&c), Tol::Abs(1e-5 * k as f32))),
        Err(e) => eprintln!("gemm skipped: {e}"),
    }
    let mut gw = b.alloc(m * k).unwrap();
    if b.gemm_packed(
        Transpose::NoTrans,
        Transpose::Trans,
        m,
        k,
        nn,
        1.0,
        &c,
        0,
        &col,
        0,
        0.0,
        &mut gw,
        0,
    )
    .is_ok()
    {
        out.push(("gemm NT".into(), down(&gw), Tol::Abs(1e-4 * nn as f32)));
    }
    if b.gemm_packed(
        Transpose::Trans,
        Transpose::NoTrans,
        k,
        nn,
        m,
        1.0,
        &w,
        0,
        &c,
        0,
        0.0,
        &mut col,
        0,
    )
    .is_ok()
    {
        out.push(("gemm TN".into(), down(&col), Tol::Abs(1e-4 * m as f32)));
    }
    let mut gv = b.alloc(m).unwrap();
    if b.gemv(Transpose::NoTrans, m, k, 1.0, &w, 0, &x, 0, 0.0, &mut gv, 0)
        .is_ok()
    {
        out.push(("gemv N".into(), down(&gv), Tol::Abs(1e-5 * k as f32)));
    }

    // Pooling and LRN: AlexNet pool1 / norm1 shapes, batch 4.
    let pg = PoolGeom::new(4 * 96, (55, 55), (3, 3), (2, 2), (0, 0), RoundMode::Ceil).unwrap();
    let (mut py, mut pm) = (
        b.alloc(pg.out_len()).unwrap(),
        b.alloc(pg.out_len()).unwrap(),
    );
    let px = up(&rand_vec(206, pg.in_len(), -1.0, 1.0));
    b.max_pool_forward(&pg, &px, 0, &mut py, 0, &mut pm, 0)
        .unwrap();
    out.push(("max_pool_forward".into(), down(&py), Tol::Exact));
    out.push(("max_pool_forward mask".into(), down(&pm), Tol::Exact));
    let pdy = up(&rand_vec(207, pg.out_len(), -1.0, 1.0));
    let mut pdx = b.alloc(pg.in_len()).unwrap();
    b.max_pool_backward(&pg, &pdy, 0, &pm, 0, &mut pdx, 0)
        .unwrap();
    out.push(("max_pool_backward".into(), down(&pdx), Tol::Exact));
    let ag = PoolGeom::new(4 * 32, (16, 16), (3, 3), (2, 2), (1, 1), RoundMode::Ceil).unwrap();
    b.ave_pool_forward(&ag, &px, 0, &mut py, 0).unwrap();
    out.push((
        "ave_pool_forward".into(),
        down(&py)[..ag.out_len()].to_vec(),
        Tol::Exact,
    ));
    b.ave_pool_backward(&ag, &pdy, 0, &mut pdx, 0).unwrap();
    out.push((
        "ave_pool_backward".into(),
        down(&pdx)[..ag.in_len()].to_vec(),
        Tol::Exact,
    ));
    let lg = LrnGeom {
        num: 4,
        channels: 96,
        spatial: 27 * 27,
        size: 5,
        alpha: 1e-4,
        beta: 0.75,
        k: 1.0,
    };
    let (mut ls, mut ly, mut ldx) = (
        b.alloc(lg.len()).unwrap(),
        b.alloc(lg.len()).unwrap(),
        b.alloc(lg.len()).unwrap(),
    );
    b.lrn_across_forward(&lg, &px, 0, &mut ls, 0, &mut ly, 0)
        .unwrap();
    out.push(("lrn_across_forward scale".into(), down(&ls), Tol::Exact));
    out.push(("lrn_across_forward y".into(), down(&ly), TR));
    b.lrn_across_backward(&lg, &px, 0, &ly, 0, &ls, 0, &px, 0, &mut ldx, 0)
        .unwrap();
    out.push(("lrn_across_backward".into(), down(&ldx), TR));

    // Plumbing and loss ops.
    b.set(n + 5, 0.0, &mut y, 0).unwrap();
    b.copy_2d(50, 300, &x, 7, 400, &mut y, 3, 310).unwrap();
    out.push(("copy_2d".into(), down(&y)[..n].to_vec(), Tol::Exact));
    let mut am = b.alloc(n).unwrap();
    b.running_argmax(n, 2.0, &dy, 0, &mut y, 0, &mut am, 0)
        .unwrap();
    out.push(("running_argmax".into(), down(&am), Tol::Exact));
    b.copy_where_eq(n, &am, 0, 2.0, &x, 0, &mut y, 0).unwrap();
    out.push(("copy_where_eq".into(), down(&y)[..n].to_vec(), Tol::Exact));
    let (mut tv, mut ti) = (b.alloc(o * 3 * i).unwrap(), b.alloc(o * 3 * i).unwrap());
    b.top_k_over_axis(o, d, i, 3, &x, 0, &mut tv, 0, &mut ti, 0)
        .unwrap();
    out.push(("top_k_over_axis values".into(), down(&tv), Tol::Exact));
    out.push(("top_k_over_axis indices".into(), down(&ti), Tol::Exact));
    let labels: Vec<f32> = rand_vec(208, o * i, 0.0, d as f32 - 0.01)
        .iter()
        .enumerate()
        .map(|(p, &l)| if p % 9 == 0 { -1.0 } else { l.floor() })
        .collect();
    let lab = up(&labels);
    let mut py2 = b.alloc(o * i).unwrap();
    b.gather_at_label(o, d, i, &x, 0, &lab, 0, Some(-1), 0.0, &mut py2, 0)
        .unwrap();
    out.push(("gather_at_label".into(), down(&py2), Tol::Exact));
    b.top_k_hits(o, d, i, 2, &x, 0, &lab, 0, Some(-1), &mut py2, 0)
        .unwrap();
    out.push(("top_k_hits".into(), down(&py2), Tol::Exact));
    b.copy(len, &x, 0, &mut y, 0).unwrap();
    b.affine_at_label(o, d, i, &lab, 0, Some(-1), 1.0, -1.0, &mut y, 0)
        .unwrap();
    out.push((
        "affine_at_label".into(),
        down(&y)[..len].to_vec(),
        Tol::Exact,
    ));
    b.label_mask(o * i, &lab, 0, Some(-1), &mut py2, 0).unwrap();
    out.push(("label_mask".into(), down(&py2), Tol::Exact));
    let mut cls = b.alloc(d).unwrap();
    b.sum_by_label(o * i, d, &dy, 0, &lab, 0, Some(-1), &mut cls, 0)
        .unwrap();
    out.push((
        "sum_by_label".into(),
        down(&cls),
        Tol::Abs(1e-6 * (o * i) as f32),
    ));
    b.sigmoid_cross_entropy(n, &x, 0, &pos, 0, &mut y, 0)
        .unwrap();
    out.push((
        "sigmoid_cross_entropy".into(),
        down(&y)[..n].to_vec(),
        Tol::RelAbs(4e-6, 2e-6),
    ));
    // The six update rules (fused on the GPU, composed from the ops on the CPU): two steps from
    // random gradients and histories, the step scale read from memory.
    {
        use rcaffe::blob::Blob;
        use rcaffe::solver::update_rules::{compute_update_value, UpdateBuffers};
        use rcaffe::solver::UpdateRule;
        let rules = [
            UpdateRule::Sgd { momentum: 0.9 },
            UpdateRule::Nesterov { momentum: 0.9 },
            UpdateRule::AdaGrad { delta: 1e-8 },
            UpdateRule::RmsProp {
                delta: 1e-8,
                rms_decay: 0.98,
            },
            UpdateRule::AdaDelta {
                delta: 1e-6,
                momentum: 0.95,
            },
            UpdateRule::Adam {
                beta1: 0.9,
                beta2: 0.999,
                eps_hat: 1e-8,
            },
        ];
        let m = 10_007;
        let blob = |seed: u64, lo: f32, hi: f32| {
            let mut blob = Blob::new(b, &[m]).unwrap();
            blob.set_data(&rand_vec(seed, m, lo, hi)).unwrap();
            blob
        };
        let step = up(&[0.01 * 0.9f32.sqrt()]);
        for rule in rules {
            let mut param = blob(300, -1.0, 1.0);
            let (mut h1, mut h2) = (blob(301, 0.0, 1.0), blob(302, 0.0, 1.0));
            let (mut update, mut temp) = (blob(303, 0.0, 1.0), blob(304, 0.0, 1.0));
            for pass in 0..2u64 {
                param.set_diff(&rand_vec(305 + pass, m, -1.0, 1.0)).unwrap();
                let bufs = UpdateBuffers {
                    history: &mut h1,
                    history2: (rule.history_sets() == 2).then_some(&mut h2),
                    update: &mut update,
                    temp: &mut temp,
                };
                compute_update_value(&rule, b, &mut param, bufs, Scalar::At(&step, 0)).unwrap();
                param.update().unwrap();
            }
            let name = rule.type_name();
            let mut state = param.data_to_vec().unwrap();
            state.extend(h1.data_to_vec().unwrap());
            if rule.history_sets() == 2 {
                state.extend(h2.data_to_vec().unwrap());
            }
            // Upstream's GPU kernels and CPU ops round differently (an FMA, a product taken
            // before or after a division): a few ulps.
            out.push((format!("{name} update"), state, Tol::RelAbs(4e-6, 1e-7)));
        }
    }
    b.synchronize().unwrap();
    out
}

/// Every op of the battery on the GPU against the CPU backend. Runs only where a CUDA device
/// is present (never in CI); prints one line per op with its largest relative error.
#[test]
fn cuda_backend_matches_cpu_on_device() {
    if !CudaBackend::device_available() {
        eprintln!("SKIPPED: no CUDA device");
        return;
    }
    let gpu = CudaBackend::new(0).expect("CUDA backend on device 0");
    eprintln!(
        "device 0, kernels for {}, NVRTC loadable: {}, {}: {:?}",
        gpu.arch(),
        nvrtc::available(),
        nvrtc::PTX_DIR_ENV,
        std::env::var_os(nvrtc::PTX_DIR_ENV)
    );
    let want = op_battery(&cpu());
    let start = std::time::Instant::now();
    let got = op_battery(&gpu);
    eprintln!(
        "GPU battery took {:?} (including NVRTC compilation)",
        start.elapsed()
    );
    let mut failed = Vec::new();
    for (name, w, tol) in &want {
        let Some((_, g, _)) = got.iter().find(|(n, _, _)| n == name) else {
            eprintln!("GPU {name}: NOT RUN on the device");
            failed.push(name.clone());
            continue;
        };
        // Every op is checked and reported before the test fails.
        let op = format!("GPU {name}");
        if std::panic::catch_unwind(|| check(&op, g, w, *tol)).is_err() {
            failed.push(name.clone());
        }
    }
    assert!(
        failed.is_empty(),
        "ops differing from the CPU beyond tolerance: {failed:?}"
    );
}

/// A CUDA graph records ops without running them, replays them on the buffers' current
/// contents, and refuses every op that needs the host while recording (leaving the stream
/// usable once the capture ends). Device only.
#[test]
fn cuda_graph_capture_records_replays_and_refuses_host_ops_on_device() {
    if !CudaBackend::device_available() {
        eprintln!("SKIPPED: no CUDA device");
        return;
    }
    let gpu = CudaBackend::new(0).expect("CUDA backend on device 0");
    let n = 1000;
    let x0 = rand_vec(7, n, -1.0, 1.0);
    let x1 = rand_vec(8, n, -1.0, 1.0);
    let mut x = gpu.alloc(n).unwrap();
    let mut y = gpu.alloc(n).unwrap();
    let mut a = gpu.alloc(4 * n).unwrap();
    let mut c = gpu.alloc(4).unwrap();
    gpu.upload(&x0, &mut x, 0).unwrap();
    gpu.upload(&rand_vec(9, 4 * n, -1.0, 1.0), &mut a, 0)
        .unwrap();

    assert!(gpu.can_capture());
    assert!(gpu.begin_capture().unwrap());
    // y = 2x + x; c = A y (cuBLAS inside the graph).
    gpu.scale(n, 2.0, Src::At(&x, 0), &mut y, 0).unwrap();
    gpu.axpy(n, 1.0, &x, 0, &mut y, 0).unwrap();
    gpu.gemv(Transpose::NoTrans, 4, n, 1.0, &a, 0, &y, 0, 0.0, &mut c, 0)
        .unwrap();
    // Every host round trip is refused, naming the op, before it does anything.
    let mut host = vec![0f32; n];
    for (op, result) in [
        ("download", gpu.download(&y, 0, &mut host).map(|_| ())),
        ("upload", gpu.upload(&x1, &mut x, 0)),
        ("sum", gpu.sum(n, &y, 0).map(|_| ())),
        ("alloc", gpu.alloc(8).map(|_| ())),
        ("synchronize", gpu.synchronize()),
        (
            "rng_uniform",
            gpu.rng_uniform(n, 0.0, 1.0, &mut rng_from_seed(1), &mut y, 0),
        ),
    ] {
        let error = result.expect_err(op).to_string();
        assert!(
            error.contains(op) && error.contains("CUDA graph"),
            "{op}: {error}"
        );
    }
    let mut work = gpu.end_capture().unwrap().expect("a graph");
    assert!(gpu.end_capture().unwrap().is_none(), "no capture under way");

    // Recorded, not run: y is still zero.
    gpu.download(&y, 0, &mut host).unwrap();
    assert!(host.iter().all(|&v| v == 0.0), "the capture ran its ops");
    let cpu_be = cpu();
    let host_a = {
        let mut v = vec![0f32; 4 * n];
        gpu.download(&a, 0, &mut v).unwrap();
        v
    };
    for input in [&x0, &x1] {
        gpu.upload(input, &mut x, 0).unwrap();
        work.replay().unwrap();
        gpu.download(&y, 0, &mut host).unwrap();
        let want: Vec<f32> = input.iter().map(|v| 2.0 * v + v).collect();
        check("graph y", &host, &want, Tol::Exact);
        let mut got_c = vec![0f32; 4];
        gpu.download(&c, 0, &mut got_c).unwrap();
        let mut want_c = buf(&[0.0; 4]);
        cpu_be
            .gemv(
                Transpose::NoTrans,
                4,
                n,
                1.0,
                &buf(&host_a),
                0,
                &buf(&want),
                0,
                0.0,
                &mut want_c,
                0,
            )
            .unwrap();
        check(
            "graph c",
            &got_c,
            want_c.as_slice(),
            Tol::RelAbs(1e-5, 1e-4),
        );
    }
    eprintln!("CUDA graph: recorded, refused host ops, replayed twice on new inputs");
}

/// Inside a CUDA graph the label-indexed kernels check the labels themselves: a replay that met
/// a bad label fails naming it, the report is cleared, and a replay with good labels succeeds
/// again (with the same results as the op run directly). Device only.
#[test]
fn a_bad_label_inside_a_replayed_graph_is_reported_on_device() {
    if !CudaBackend::device_available() {
        eprintln!("SKIPPED: no CUDA device");
        return;
    }
    let gpu = CudaBackend::new(0).expect("CUDA backend on device 0");
    let (outer, dim, inner) = (8, 5, 3);
    let labels: Vec<f32> = (0..outer * inner).map(|p| (p % dim) as f32).collect();
    let mut bad = labels.clone();
    bad[7] = 9.0;
    let up = |v: &[f32]| {
        let mut b = gpu.alloc(v.len()).unwrap();
        gpu.upload(v, &mut b, 0).unwrap();
        b
    };
    let x = up(&rand_vec(11, outer * dim * inner, -1.0, 1.0));
    let mut label = up(&labels);
    let mut y = gpu.alloc(outer * inner).unwrap();
    let mut direct = gpu.alloc(outer * inner).unwrap();
    gpu.gather_at_label(
        outer,
        dim,
        inner,
        &x,
        0,
        &label,
        0,
        None,
        0.0,
        &mut direct,
        0,
    )
    .unwrap();
    assert!(gpu.begin_capture().unwrap());
    gpu.gather_at_label(outer, dim, inner, &x, 0, &label, 0, None, 0.0, &mut y, 0)
        .unwrap();
    let mut work = gpu.end_capture().unwrap().expect("a graph");
    for (round, values, ok) in [(0, &labels, true), (1, &bad, false), (2, &labels, true)] {
        gpu.upload(values, &mut label, 0).unwrap();
        match (work.replay(), ok) {
            (Ok(()), true) => {
                let (mut got, mut want) = (vec![0f32; outer * inner], vec![0f32; outer * inner]);
                gpu.download(&y, 0, &mut got).unwrap();
                gpu.download(&direct, 0, &mut want).unwrap();
                check(&format!("replay {round}"), &got, &want, Tol::Exact);
            }
            (Err(e), false) => {
                let message = e.to_string();
                assert!(
                    message.contains("label 9") && message.contains("0..5"),
                    "{message}"
                );
            }
            (result, _) => panic!("replay {round}: {result:?}"),
        }
    }
    eprintln!("CUDA graph: a bad label inside a replay is reported and cleared");
}

/// The solver replays whole iterations as a CUDA graph and ends where the CPU ends: a net with
/// DummyData refilled every iteration (gaussian data, uniform labels in 0..4, drawn on the host
/// from the same seed on both backends), two InnerProducts around a ReLU and a Dropout (its
/// masks drawn on the device, the CPU's masks, new on each replay), and a SoftmaxWithLoss
/// that ignores label 3 (its loss, normalizer and label checks stay on the device), with weight
/// decay, under learning-rate policies that change the rate every iteration and update rules
/// whose step depends on the iteration (Adam): the replayed graph reads each iteration's step
/// scales from device memory. Device only.
#[test]
fn solver_replays_iterations_as_a_cuda_graph_on_device() {
    use rcaffe::solver::{read_train_solver, Solver, TrainOptions};
    if !CudaBackend::device_available() {
        eprintln!("SKIPPED: no CUDA device");
        return;
    }
    let schedules = [
        r#"type: "SGD" lr_policy: "fixed" momentum: 0.9"#,
        r#"type: "Nesterov" lr_policy: "triangular2" max_lr: 0.05 stepsize: 4 momentum: 0.9"#,
        r#"type: "Adam" lr_policy: "inv" gamma: 0.1 power: 0.75 momentum: 0.9 momentum2: 0.999"#,
        r#"type: "AdaDelta" lr_policy: "exp_range" max_lr: 0.05 stepsize: 5 gamma: 0.99
           momentum: 0.95 delta: 1e-6"#,
    ];
    let gpu = CudaBackend::new(0).expect("CUDA backend on device 0");
    for schedule in schedules {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("graph.solver.prototxt");
        std::fs::write(
            &path,
            format!(
                r#"
net_param {{
  name: "graph"
  layer {{
    name: "data" type: "DummyData" top: "x" top: "label"
    dummy_data_param {{
      shape {{ dim: 16 dim: 32 }} data_filler {{ type: "gaussian" std: 1 }}
      shape {{ dim: 16 }} data_filler {{ type: "uniform" min: 0 max: 3.99 }}
    }}
  }}
  layer {{
    name: "ip1" type: "InnerProduct" bottom: "x" top: "h"
    inner_product_param {{ num_output: 24 weight_filler {{ type: "gaussian" std: 0.1 }}
                          bias_filler {{ type: "constant" value: 0.1 }} }}
    param {{ lr_mult: 1 }} param {{ lr_mult: 2 decay_mult: 0 }}
  }}
  layer {{ name: "relu" type: "ReLU" bottom: "h" top: "h" }}
  layer {{ name: "drop" type: "Dropout" bottom: "h" top: "h" }}
  layer {{
    name: "ip2" type: "InnerProduct" bottom: "h" top: "out"
    inner_product_param {{ num_output: 4 weight_filler {{ type: "gaussian" std: 0.1 }} }}
  }}
  layer {{
    name: "loss" type: "SoftmaxWithLoss" bottom: "out" bottom: "label" top: "loss"
    loss_param {{ ignore_label: 3 }}
  }}
}}
base_lr: 0.01 weight_decay: 0.0005 {schedule}
max_iter: 30 display: 10 random_seed: 5 snapshot_after_train: false
"#
            ),
        )
        .unwrap();
        let param = read_train_solver(&path, &TrainOptions::default()).unwrap();
        let mut on_cpu = Solver::new(param.clone(), &path, &cpu()).unwrap();
        on_cpu.solve(None).unwrap();
        let mut on_gpu = Solver::new_recording(param, &path, &gpu).unwrap();
        on_gpu.solve(None).unwrap();
        let log = on_gpu.take_log();
        assert!(
            log.iter()
                .any(|l| l.starts_with("CUDA graph: iteration 1 captured")),
            "{schedule}: the solver did not capture: {log:#?}"
        );
        assert!(
            !log.iter().any(|l| l.starts_with("CUDA graph not used")),
            "{schedule}: {log:#?}"
        );
        for (i, (c, g)) in on_cpu
            .net()
            .learnable_params()
            .iter()
            .zip(on_gpu.net().learnable_params())
            .enumerate()
        {
            check(
                &format!("{schedule}: parameter {i} after 30 replayed iterations"),
                &g.data_to_vec().unwrap(),
                &c.data_to_vec().unwrap(),
                Tol::RelAbs(1e-4, 1e-5),
            );
        }
        let (cpu_loss, gpu_loss) = (on_cpu.smoothed_loss(), on_gpu.smoothed_loss());
        assert!(
            (cpu_loss - gpu_loss).abs() <= 1e-4 * cpu_loss.abs() + 1e-5,
            "{schedule}: smoothed loss: CPU {cpu_loss}, GPU {gpu_loss}"
        );
        eprintln!("solver CUDA graph, {schedule}: 30 iterations match the CPU (loss {gpu_loss})");
    }
}

/// A batch-sized upload (pinned staging on the copy stream) lands before the next kernel reads
/// it, and a second one into the same buffer waits for the kernels reading the first. Device
/// only.
#[test]
fn staged_uploads_are_ordered_with_the_compute_stream_on_device() {
    if !CudaBackend::device_available() {
        eprintln!("SKIPPED: no CUDA device");
        return;
    }
    let gpu = CudaBackend::new(0).expect("CUDA backend on device 0");
    let n = 3 * rcaffe::backend::cuda::STAGED_MIN + 5;
    let mut x = gpu.alloc(n).unwrap();
    let mut sum = gpu.alloc(n).unwrap();
    let mut want = vec![0f32; n];
    for round in 0..6 {
        let batch = rand_vec(100 + round, n, -1.0, 1.0);
        gpu.upload(&batch, &mut x, 0).unwrap();
        gpu.axpy(n, 1.0, &x, 0, &mut sum, 0).unwrap();
        for (w, b) in want.iter_mut().zip(&batch) {
            *w += b;
        }
    }
    let mut got = vec![0f32; n];
    gpu.download(&sum, 0, &mut got).unwrap();
    check("staged uploads summed", &got, &want, Tol::Exact);
}
