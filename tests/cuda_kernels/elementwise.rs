//! Element-wise kernels (kernels/elementwise.cu, activations.cu), emulated on a small grid,
//! out of place and in place, against the CPU ops. (The whole-buffer reductions' two launches
//! are checked through the backend, in `backend.rs`.)

use super::*;

type UnaryKernel = unsafe extern "C" fn(c_int, *const f32, *mut f32);
type CpuUnary =
    fn(&CpuBackend, Src<'_, CpuBuffer>, SliceMut<'_, CpuBuffer>) -> rcaffe::backend::Result<()>;

/// Out of place and in place, against the CPU op.
fn unary(op: &str, kernel: UnaryKernel, reference: CpuUnary, lo: f32, hi: f32, tol: Tol) {
    let n = 1000;
    let x = rand_vec(op.len() as u64, n, lo, hi);
    let xb = buf(&x);
    let mut want = buf(&vec![0.0; n]);
    reference(&cpu(), xb.whole().src(), want.whole_mut()).unwrap();
    let mut y = vec![f32::NAN; n];
    emu!(kernel(int(n), x.as_ptr(), y.as_mut_ptr()));
    check(op, &y, want.as_slice(), tol);
    let mut inplace = x.clone();
    let p = inplace.as_mut_ptr();
    emu!(kernel(int(n), p, p));
    check(&format!("{op} in place"), &inplace, want.as_slice(), tol);
}

type BinaryKernel = unsafe extern "C" fn(c_int, *const f32, *const f32, *mut f32);

/// Out of place and in place on the first operand, against the CPU's `binary(op, ..)`.
fn binary(name: &str, kernel: BinaryKernel, op: Binary, lo: f32, hi: f32) {
    let n = 777;
    let a = rand_vec(1, n, lo, hi);
    let b = rand_vec(2, n, lo, hi);
    let (ab, bb) = (buf(&a), buf(&b));
    let mut want = buf(&vec![0.0; n]);
    cpu()
        .binary(op, ab.whole().src(), bb.whole().src(), want.whole_mut())
        .unwrap();
    let mut y = vec![f32::NAN; n];
    emu!(kernel(int(n), a.as_ptr(), b.as_ptr(), y.as_mut_ptr()));
    check(name, &y, want.as_slice(), Tol::Exact);
    // In place on the first operand: y = a, then y = op(y, b).
    let mut inplace = a.clone();
    let p = inplace.as_mut_ptr();
    emu!(kernel(int(n), p, b.as_ptr(), p));
    check(
        &format!("{name} in place"),
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
        |c, x, y| c.unary(Unary::Exp, x, y),
        -5.0,
        5.0,
        TR,
    );
    unary(
        "log",
        k::log_kernel,
        |c, x, y| c.unary(Unary::Log, x, y),
        0.01,
        10.0,
        TR,
    );
    unary(
        "abs",
        k::abs_kernel,
        |c, x, y| c.unary(Unary::Abs, x, y),
        -3.0,
        3.0,
        Tol::Exact,
    );
    unary(
        "sqr",
        k::sqr,
        |c, x, y| c.unary(Unary::Sqr, x, y),
        -3.0,
        3.0,
        Tol::Exact,
    );
    unary(
        "sqrt",
        k::sqrt_kernel,
        |c, x, y| c.unary(Unary::Sqrt, x, y),
        0.0,
        9.0,
        Tol::Exact,
    );
    let mut s = rand_vec(3, 300, -1.0, 1.0);
    s[..5].copy_from_slice(&[0.0, -0.0, f32::NAN, f32::INFINITY, -1e-30]);
    let sb = buf(&s);
    let mut want = buf(&[0.0; 300]);
    cpu()
        .unary(Unary::Sign, sb.whole().src(), want.whole_mut())
        .unwrap();
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
        |c, x, y| c.activation_forward(Activation::Sigmoid, x, y),
        -20.0,
        20.0,
        TR,
    );
    unary(
        "tanh_forward",
        k::tanh_forward,
        |c, x, y| c.activation_forward(Activation::Tanh, x, y),
        -10.0,
        10.0,
        TR,
    );
    unary(
        "bnll_forward",
        k::bnll_forward,
        |c, x, y| c.activation_forward(Activation::Bnll, x, y),
        -30.0,
        30.0,
        TR,
    );
    for slope in [0.0f32, 0.1] {
        let n = 1000;
        let x = rand_vec(4, n, -2.0, 2.0);
        let xb = buf(&x);
        let mut want = buf(&vec![0.0; n]);
        cpu()
            .activation_forward(
                Activation::Relu { slope },
                xb.whole().src(),
                want.whole_mut(),
            )
            .unwrap();
        let mut y = vec![f32::NAN; n];
        emu!(k::relu_forward(int(n), slope, x.as_ptr(), y.as_mut_ptr()));
        check("relu_forward", &y, want.as_slice(), Tol::Exact);
        let alpha = 0.7f32;
        let mut want = buf(&vec![0.0; n]);
        cpu()
            .activation_forward(
                Activation::Elu { alpha },
                xb.whole().src(),
                want.whole_mut(),
            )
            .unwrap();
        emu!(k::elu_forward(int(n), alpha, x.as_ptr(), y.as_mut_ptr()));
        check("elu_forward", &y, want.as_slice(), TR);
    }
    // Backward ops: forward input/output plus an incoming gradient.
    let n = 999;
    let x = rand_vec(5, n, -3.0, 3.0);
    let fwd = rand_vec(6, n, -1.0, 1.0);
    let dy = rand_vec(7, n, -1.0, 1.0);
    let (xb, fb, dyb) = (buf(&x), buf(&fwd), buf(&dy));
    let (x_in, y_in, dy_in) = (xb.whole(), fb.whole(), dyb.whole().src());
    let mut dx = vec![f32::NAN; n];
    let c = cpu();
    let mut want = buf(&vec![0.0; n]);

    // Relu reads the forward input, passed as both.
    let relu = Activation::Relu { slope: 0.2 };
    c.activation_backward(relu, x_in, x_in, dy_in, want.whole_mut())
        .unwrap();
    emu!(k::relu_backward(
        int(n),
        0.2,
        x.as_ptr(),
        dy.as_ptr(),
        dx.as_mut_ptr()
    ));
    check("relu_backward", &dx, want.as_slice(), Tol::Exact);

    // Sigmoid and TanH read the forward output, passed as both.
    c.activation_backward(Activation::Sigmoid, y_in, y_in, dy_in, want.whole_mut())
        .unwrap();
    emu!(k::sigmoid_backward(
        int(n),
        fwd.as_ptr(),
        dy.as_ptr(),
        dx.as_mut_ptr()
    ));
    check("sigmoid_backward", &dx, want.as_slice(), Tol::Exact);

    c.activation_backward(Activation::Tanh, y_in, y_in, dy_in, want.whole_mut())
        .unwrap();
    emu!(k::tanh_backward(
        int(n),
        fwd.as_ptr(),
        dy.as_ptr(),
        dx.as_mut_ptr()
    ));
    check("tanh_backward", &dx, want.as_slice(), Tol::Exact);

    let elu = Activation::Elu { alpha: 0.5 };
    c.activation_backward(elu, x_in, y_in, dy_in, want.whole_mut())
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
    let xlb = buf(&xl);
    let large = xlb.whole();
    c.activation_backward(Activation::Bnll, large, large, dy_in, want.whole_mut())
        .unwrap();
    emu!(k::bnll_backward(
        int(n),
        xl.as_ptr(),
        dy.as_ptr(),
        dx.as_mut_ptr()
    ));
    check("bnll_backward", &dx, want.as_slice(), Tol::Rel(2e-6));

    // In place: dx written over dy.
    let relu = Activation::Relu { slope: 0.0 };
    c.activation_backward(relu, x_in, x_in, dy_in, want.whole_mut())
        .unwrap();
    let mut g = dy.clone();
    let p = g.as_mut_ptr();
    emu!(k::relu_backward(int(n), 0.0, x.as_ptr(), p, p));
    check("relu_backward in place", &g, want.as_slice(), Tol::Exact);
}

#[test]
fn blas1_and_binary_ops_match_cpu() {
    binary("add", k::add, Binary::Add, -2.0, 2.0);
    binary("sub", k::sub, Binary::Sub, -2.0, 2.0);
    binary("mul", k::mul, Binary::Mul, -2.0, 2.0);
    binary("div", k::div_kernel, Binary::Div, 0.1, 2.0);
    binary("max", k::max_kernel, Binary::Max, -2.0, 2.0);

    let n = 1234;
    let c = cpu();
    let x = rand_vec(9, n, -2.0, 2.0);
    let y0 = rand_vec(10, n, -2.0, 2.0);
    let xb = buf(&x);

    let mut want = buf(&y0);
    c.axpby(Scalar::Value(0.3), xb.whole(), 1.0, want.whole_mut())
        .unwrap();
    let mut y = y0.clone();
    emu!(k::axpy(int(n), 0.3, x.as_ptr(), y.as_mut_ptr()));
    check("axpy", &y, want.as_slice(), Tol::Exact);

    // A scalar given by value (a null pointer) and read from memory (the pointer wins).
    let scalars = buf(&[0.5, -1.7]);
    let null = std::ptr::null::<f32>();
    for beta in [0.0f32, 0.9] {
        let mut want = buf(&y0);
        c.axpby(Scalar::Value(0.3), xb.whole(), beta, want.whole_mut())
            .unwrap();
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
        c.axpby(Scalar::At(&scalars, 1), xb.whole(), beta, want.whole_mut())
            .unwrap();
        let mut y = y0.clone();
        let at = &scalars.as_slice()[1];
        emu!(k::axpby(int(n), at, 0.3, x.as_ptr(), beta, y.as_mut_ptr()));
        check("axpby (alpha in memory)", &y, want.as_slice(), Tol::Exact);
    }

    let mut want = buf(&y0);
    c.scale(Scalar::Value(-1.7), xb.whole().src(), want.whole_mut())
        .unwrap();
    emu!(k::scale(int(n), null, -1.7, x.as_ptr(), y.as_mut_ptr()));
    check("scale", &y, want.as_slice(), Tol::Exact);
    c.scale(Scalar::At(&scalars, 0), xb.whole().src(), want.whole_mut())
        .unwrap();
    let at = &scalars.as_slice()[0];
    emu!(k::scale(int(n), at, -1.7, x.as_ptr(), y.as_mut_ptr()));
    check("scale (alpha in memory)", &y, want.as_slice(), Tol::Exact);

    c.copy(xb.whole(), want.whole_mut()).unwrap();
    emu!(k::copy(int(n), x.as_ptr(), y.as_mut_ptr()));
    check("copy", &y, want.as_slice(), Tol::Exact);

    c.fill(2.5, want.whole_mut()).unwrap();
    emu!(k::set(int(n), 2.5, y.as_mut_ptr()));
    check("set", &y, want.as_slice(), Tol::Exact);

    let mut want = buf(&y0);
    c.unary(Unary::AddScalar(0.25), Src::InPlace, want.whole_mut())
        .unwrap();
    let mut y = y0.clone();
    emu!(k::add_scalar(int(n), 0.25, y.as_mut_ptr()));
    check("add_scalar", &y, want.as_slice(), Tol::Exact);

    let pos = rand_vec(11, n, 0.01, 3.0);
    let pos_b = buf(&pos);
    for p in [2.0f32, 1.0, 0.75, -0.5] {
        c.unary(Unary::Powx(p), pos_b.whole().src(), want.whole_mut())
            .unwrap();
        emu!(k::powx(int(n), pos.as_ptr(), p, y.as_mut_ptr()));
        check("powx", &y, want.as_slice(), Tol::Rel(2e-6));
    }
    let power = Unary::Power {
        power: -0.75,
        scale: 2.0,
        shift: 1.0,
    };
    c.unary(power, pos_b.whole().src(), want.whole_mut())
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
