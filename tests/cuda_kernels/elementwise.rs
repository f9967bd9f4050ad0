//! Element-wise kernels (kernels/elementwise.cu, activations.cu), emulated on a small grid,
//! out of place and in place, against the CPU ops. (The whole-buffer reductions' two launches
//! are checked through the backend, in `backend.rs`.)

use super::*;

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
