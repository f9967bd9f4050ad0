//! The CUDA backend's own op code (argument marshalling, bounds checks, multi-launch
//! sequences, the random stream, fused updates, graph capture and replay) against the CPU
//! backend: the checks here take any backend, and run on the emulated kernels
//! ([`EmulatedRuntime`]: the kernels compiled for the host) in every test run, and on a GPU in
//! `device.rs`.

use super::*;
use rcaffe_kernel_emu::EmulatedRuntime;

fn emulated() -> CudaBackend<EmulatedRuntime> {
    CudaBackend::on(EmulatedRuntime::new()).expect("CUDA backend on the emulated runtime")
}

/// Runs a battery of ops on backend `b` from fixed random inputs and returns every output,
/// downloaded, with its name and the tolerance a device result must meet against the CPU's.
pub(super) fn op_battery<B: Backend>(b: &B) -> Vec<(String, Vec<f32>, Tol)> {
    // Transcendentals on the device: CUDA's expf/logf/tanhf/log1pf are within 2 ulps, powf
    // within 4; composed results near zero lose relative accuracy, hence the absolute term.
    const TR: Tol = Tol::RelAbs(4e-6, 1e-6);
    let mut out: Vec<(String, Vec<f32>, Tol)> = Vec::new();
    let up = |v: &[f32]| {
        let mut buf = b.alloc(v.len()).unwrap();
        b.upload(v, buf.whole_mut()).unwrap();
        buf
    };
    let down = |buf: &B::Buffer| {
        let mut v = vec![0f32; rcaffe::backend::DeviceBuffer::len(buf)];
        b.download(buf.whole(), &mut v).unwrap();
        v
    };
    let n = 100_003; // several grid-stride rounds are not needed on a device: odd size, offsets
    let x = up(&rand_vec(200, n, -4.0, 4.0));
    let pos = up(&rand_vec(201, n, 0.01, 4.0));
    let dy = up(&rand_vec(202, n, -1.0, 1.0));
    let mut y = b.alloc(n + 5).unwrap();
    let unary = [
        (Unary::Exp, TR),
        (Unary::Log, TR),
        (Unary::Abs, Tol::Exact),
        (Unary::Sqr, Tol::Exact),
        (Unary::Sqrt, Tol::Exact),
        (Unary::Sign, Tol::Exact),
        (Unary::Threshold(0.25), Tol::Exact),
    ];
    for (op, tol) in unary {
        let src = if matches!(op, Unary::Log | Unary::Sqrt) {
            &pos
        } else {
            &x
        };
        b.unary(op, src.whole().src(), y.slice_mut(5, n)).unwrap();
        out.push((format!("{op:?}"), down(&y)[5..].to_vec(), tol));
    }
    let activations = [
        (Activation::Sigmoid, TR),
        (Activation::Tanh, TR),
        (Activation::Bnll, TR),
        (Activation::Relu { slope: 0.1 }, Tol::Exact),
        (Activation::Elu { alpha: 0.5 }, TR),
        (
            Activation::Clip {
                min: -1.0,
                max: 2.5,
            },
            Tol::Exact,
        ),
        (Activation::Swish { beta: 1.5 }, TR),
    ];
    for (f, tol) in activations {
        b.activation_forward(f, x.whole().src(), y.slice_mut(5, n))
            .unwrap();
        out.push((format!("{f:?} forward"), down(&y)[5..].to_vec(), tol));
    }
    b.unary(Unary::Powx(0.75), pos.whole().src(), y.slice_mut(0, n))
        .unwrap();
    out.push(("powx".into(), down(&y)[..n].to_vec(), TR));
    let power = Unary::Power {
        power: -0.75,
        scale: 2.0,
        shift: 1.0,
    };
    b.unary(power, pos.whole().src(), y.slice_mut(0, n))
        .unwrap();
    out.push(("power".into(), down(&y)[..n].to_vec(), TR));
    for op in [
        Binary::Add,
        Binary::Sub,
        Binary::Mul,
        Binary::Div,
        Binary::Max,
        Binary::PRelu,
    ] {
        b.binary(op, x.whole().src(), pos.whole().src(), y.slice_mut(0, n))
            .unwrap();
        out.push((format!("{op:?}"), down(&y)[..n].to_vec(), Tol::Exact));
        // In place on the first operand, then on the second.
        b.copy(x.whole(), y.slice_mut(0, n)).unwrap();
        b.binary(op, Src::InPlace, pos.whole().src(), y.slice_mut(0, n))
            .unwrap();
        let name = format!("{op:?} in place on a");
        out.push((name, down(&y)[..n].to_vec(), Tol::Exact));
        b.copy(pos.whole(), y.slice_mut(0, n)).unwrap();
        b.binary(op, x.whole().src(), Src::InPlace, y.slice_mut(0, n))
            .unwrap();
        let name = format!("{op:?} in place on b");
        out.push((name, down(&y)[..n].to_vec(), Tol::Exact));
    }
    b.copy(x.whole(), y.slice_mut(0, n)).unwrap();
    b.axpby(Scalar::Value(0.3), dy.whole(), 0.9, y.slice_mut(0, n))
        .unwrap();
    b.axpby(Scalar::Value(-0.2), pos.whole(), 1.0, y.slice_mut(0, n))
        .unwrap();
    b.scale(Scalar::Value(1.5), Src::InPlace, y.slice_mut(0, n))
        .unwrap();
    b.unary(Unary::AddScalar(0.125), Src::InPlace, y.slice_mut(0, n))
        .unwrap();
    out.push((
        "copy/axpby/axpy/scale/add_scalar".into(),
        down(&y)[..n].to_vec(),
        Tol::Exact,
    ));
    b.scale(Scalar::Value(-0.75), x.whole().src(), y.slice_mut(2, n))
        .unwrap();
    b.axpby(Scalar::At(&pos, 3), dy.whole(), 0.0, y.slice_mut(1, n))
        .unwrap();
    b.unary(Unary::AddScalar(-0.5), x.whole().src(), y.slice_mut(0, n))
        .unwrap();
    out.push((
        "scale/axpby (alpha in memory, beta 0)/add_scalar out of place".into(),
        down(&y)[..n + 2].to_vec(),
        Tol::Exact,
    ));
    // Host-drawn fills: the CPU backend's values.
    for (seed, dist) in [
        Distribution::Uniform { lo: -2.0, hi: 3.0 },
        Distribution::Gaussian {
            mean: 0.5,
            std: 2.0,
        },
        Distribution::Bernoulli { p: 0.3 },
    ]
    .into_iter()
    .enumerate()
    {
        let mut rng = rng_from_seed(seed as u64);
        b.random(dist, &mut rng, y.slice_mut(4, n)).unwrap();
        out.push((
            format!("random {dist:?}"),
            down(&y)[4..].to_vec(),
            Tol::Exact,
        ));
    }
    // Two draws of a counter-based stream (the second after the counter's advance), and the
    // state they leave.
    let mut stream = up(&rcaffe::backend::philox::new_state(0x0123_4567_89ab_cdef));
    for draw in 0..2 {
        b.bernoulli_stream(0.3, stream.whole_mut(), y.slice_mut(1, n))
            .unwrap();
        let name = format!("bernoulli_stream draw {draw}");
        out.push((name, down(&y)[1..n + 1].to_vec(), Tol::Exact));
    }
    // Each u32 word as two exactly representable halves.
    let state = down(&stream)
        .iter()
        .flat_map(|v| [(v.to_bits() >> 16) as f32, (v.to_bits() & 0xffff) as f32])
        .collect();
    out.push(("bernoulli_stream state".into(), state, Tol::Exact));
    // Each backward pass reads one of the forward input and output: that one is passed as both.
    let relu = Activation::Relu { slope: 0.1 };
    b.activation_backward(
        relu,
        x.whole(),
        x.whole(),
        dy.whole().src(),
        y.slice_mut(0, n),
    )
    .unwrap();
    out.push(("relu_backward".into(), down(&y)[..n].to_vec(), Tol::Exact));
    let sigmoid = Activation::Sigmoid;
    b.activation_backward(
        sigmoid,
        pos.whole(),
        pos.whole(),
        dy.whole().src(),
        y.slice_mut(0, n),
    )
    .unwrap();
    out.push((
        "sigmoid_backward".into(),
        down(&y)[..n].to_vec(),
        Tol::Exact,
    ));
    let bnll = Activation::Bnll;
    b.activation_backward(
        bnll,
        x.whole(),
        x.whole(),
        dy.whole().src(),
        y.slice_mut(0, n),
    )
    .unwrap();
    out.push(("bnll_backward".into(), down(&y)[..n].to_vec(), TR));
    let tanh = Activation::Tanh;
    b.activation_backward(
        tanh,
        pos.whole(),
        pos.whole(),
        dy.whole().src(),
        y.slice_mut(0, n),
    )
    .unwrap();
    out.push(("tanh_backward".into(), down(&y)[..n].to_vec(), Tol::Exact));
    // ELU reads both: the forward output from the op itself, the gradient in place.
    let elu = Activation::Elu { alpha: 0.5 };
    let mut fwd = b.alloc(n).unwrap();
    b.activation_forward(elu, x.whole().src(), fwd.whole_mut())
        .unwrap();
    b.copy(dy.whole(), y.slice_mut(0, n)).unwrap();
    b.activation_backward(elu, x.whole(), fwd.whole(), Src::InPlace, y.slice_mut(0, n))
        .unwrap();
    out.push(("elu_backward in place".into(), down(&y)[..n].to_vec(), TR));
    let clip = Activation::Clip {
        min: -1.0,
        max: 2.5,
    };
    b.activation_backward(
        clip,
        x.whole(),
        x.whole(),
        dy.whole().src(),
        y.slice_mut(0, n),
    )
    .unwrap();
    out.push(("clip_backward".into(), down(&y)[..n].to_vec(), Tol::Exact));
    // Swish reads both, like ELU.
    let swish = Activation::Swish { beta: 1.5 };
    b.activation_forward(swish, x.whole().src(), fwd.whole_mut())
        .unwrap();
    b.activation_backward(
        swish,
        x.whole(),
        fwd.whole(),
        dy.whole().src(),
        y.slice_mut(0, n),
    )
    .unwrap();
    out.push(("swish_backward".into(), down(&y)[..n].to_vec(), TR));
    let mag = n as f32 * 4.0;
    for r in [
        Reduction::Sum,
        Reduction::Asum,
        Reduction::Sumsq,
        Reduction::Dot(dy.whole()),
    ] {
        let v = b.reduce(r, x.whole()).unwrap();
        out.push((format!("{r:?}"), vec![v], Tol::Abs(1e-6 * mag * 4.0)));
    }
    b.sum_into(-0.5, x.whole(), y.slice_mut(3, 1)).unwrap();
    let sum_tol = Tol::Abs(0.5e-6 * mag * 4.0);
    out.push(("sum_into".into(), down(&y)[3..4].to_vec(), sum_tol));

    // Axis and per-channel ops on (outer, dim, inner) = (32, 10, 300).
    let (o, d, i) = (32, 10, 300);
    let axis = Axis::new(o, d, i);
    let len = o * d * i;
    let (x_axis, dy_axis) = (x.slice(0, len), dy.slice(0, len));
    let (over_axis, per_channel) = (Broadcast::OverAxis, Broadcast::PerChannel);
    let mut small = b.alloc(o * i).unwrap();
    b.reduce_over_axis(AxisReduction::Max, axis, x_axis, small.whole_mut())
        .unwrap();
    out.push(("max over axis".into(), down(&small), Tol::Exact));
    b.copy(x_axis, y.slice_mut(0, len)).unwrap();
    b.broadcast(
        Binary::Sub,
        over_axis,
        axis,
        small.whole(),
        Src::InPlace,
        y.slice_mut(0, len),
    )
    .unwrap();
    b.unary(Unary::Exp, Src::InPlace, y.slice_mut(0, len))
        .unwrap();
    b.reduce_over_axis(AxisReduction::Sum, axis, y.slice(0, len), small.whole_mut())
        .unwrap();
    b.broadcast(
        Binary::Div,
        over_axis,
        axis,
        small.whole(),
        Src::InPlace,
        y.slice_mut(0, len),
    )
    .unwrap();
    out.push((
        "softmax (max/sub/exp/sum/div over the axis)".into(),
        down(&y)[..len].to_vec(),
        TR,
    ));
    b.reduce_over_axis(AxisReduction::Dot(dy_axis), axis, x_axis, small.whole_mut())
        .unwrap();
    out.push(("dot over axis".into(), down(&small), Tol::Exact));
    let ch = up(&rand_vec(203, d, -1.0, 1.0));
    b.copy(x_axis, y.slice_mut(0, len)).unwrap();
    b.broadcast(
        Binary::Add,
        per_channel,
        axis,
        ch.whole(),
        Src::InPlace,
        y.slice_mut(0, len),
    )
    .unwrap();
    b.broadcast(
        Binary::Mul,
        per_channel,
        axis,
        ch.whole(),
        Src::InPlace,
        y.slice_mut(0, len),
    )
    .unwrap();
    out.push((
        "add/mul per channel".into(),
        down(&y)[..len].to_vec(),
        Tol::Exact,
    ));
    // Every broadcast combination, in place and from another view (the layers' own ones above
    // and below have kernels of their own; the rest share one per way of spreading `v`).
    let ops = [
        (Binary::Add, Tol::Exact),
        (Binary::Sub, Tol::Exact),
        (Binary::Mul, Tol::Exact),
        (Binary::Div, Tol::Exact),
        (Binary::Max, Tol::Exact),
        (Binary::PRelu, Tol::Exact),
        (Binary::SigmoidCrossEntropy, Tol::RelAbs(4e-6, 2e-6)),
    ];
    let pos_small = pos.slice(0, o * i);
    for (op, tol) in ops {
        for (how, v) in [(over_axis, pos_small), (per_channel, ch.whole())] {
            b.broadcast(op, how, axis, v, x_axis.src(), y.slice_mut(0, len))
                .unwrap();
            let name = format!("broadcast {op:?} {how:?}");
            out.push((name, down(&y)[..len].to_vec(), tol));
            b.copy(x_axis, y.slice_mut(1, len)).unwrap();
            b.broadcast(op, how, axis, v, Src::InPlace, y.slice_mut(1, len))
                .unwrap();
            let name = format!("broadcast {op:?} {how:?} in place");
            out.push((name, down(&y)[1..len + 1].to_vec(), tol));
        }
    }
    let mut chy = up(&rand_vec(204, d, -1.0, 1.0));
    b.sum_per_channel(axis, 0.5, x_axis, 0.25, chy.whole_mut())
        .unwrap();
    out.push((
        "sum_per_channel".into(),
        down(&chy),
        Tol::Abs(1e-6 * (o * i) as f32 * 4.0),
    ));
    // Channels long enough to be summed in parts first (a convolution's bias gradient).
    let (lo, ld, li) = (16, 6, 3000);
    let long = up(&rand_vec(212, lo * ld * li, -1.0, 1.0));
    let mut long_sums = up(&rand_vec(213, ld, -1.0, 1.0));
    b.sum_per_channel(
        Axis::new(lo, ld, li),
        0.5,
        long.whole(),
        0.25,
        long_sums.whole_mut(),
    )
    .unwrap();
    out.push((
        "sum_per_channel, long channels".into(),
        down(&long_sums),
        Tol::Abs(1e-6 * (lo * li) as f32),
    ));
    b.broadcast(
        Binary::PRelu,
        per_channel,
        axis,
        ch.whole(),
        x_axis.src(),
        y.slice_mut(0, len),
    )
    .unwrap();
    out.push(("prelu_forward".into(), down(&y)[..len].to_vec(), Tol::Exact));
    b.prelu_backward(axis, ch.whole(), x_axis, dy_axis.src(), y.slice_mut(0, len))
        .unwrap();
    out.push((
        "prelu_backward".into(),
        down(&y)[..len].to_vec(),
        Tol::Exact,
    ));
    // Accumulates into its output: start from the same values on both backends.
    b.upload(&rand_vec(209, d, -1.0, 1.0), chy.whole_mut())
        .unwrap();
    b.prelu_slope_grad(axis, x_axis, dy_axis, chy.whole_mut())
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
    b.im2col(&g, x.slice(0, g.im_len()), col.whole_mut())
        .unwrap();
    out.push(("im2col".into(), down(&col), Tol::Exact));
    let mut im = b.alloc(g.im_len()).unwrap();
    b.col2im(&g, col.whole(), im.whole_mut()).unwrap();
    out.push(("col2im".into(), down(&im), Tol::Exact));
    let (m, k, nn) = (64, g.channels * 25, g.out_h() * g.out_w());
    let (nt, t) = (Transpose::NoTrans, Transpose::Trans);
    let w = up(&rand_vec(205, m * k, -0.1, 0.1));
    let mut c = b.alloc(m * nn).unwrap();
    match b.gemm(
        &Gemm::packed(nt, nt, m, nn, k),
        w.whole(),
        col.whole(),
        c.whole_mut(),
    ) {
        Ok(()) => out.push(("gemm NN".into(), down(&c), Tol::Abs(1e-5 * k as f32))),
        Err(e) => eprintln!("gemm skipped: {e}"),
    }
    let mut gw = b.alloc(m * k).unwrap();
    if b.gemm(
        &Gemm::packed(nt, t, m, k, nn),
        c.whole(),
        col.whole(),
        gw.whole_mut(),
    )
    .is_ok()
    {
        out.push(("gemm NT".into(), down(&gw), Tol::Abs(1e-4 * nn as f32)));
    }
    if b.gemm(
        &Gemm::packed(t, nt, k, nn, m),
        w.whole(),
        c.whole(),
        col.whole_mut(),
    )
    .is_ok()
    {
        out.push(("gemm TN".into(), down(&col), Tol::Abs(1e-4 * m as f32)));
    }
    let mut gv = b.alloc(m).unwrap();
    let product = Gemv {
        trans: nt,
        m,
        n: k,
        alpha: 1.0,
        beta: 0.0,
    };
    if b.gemv(&product, w.whole(), x.slice(0, k), gv.whole_mut())
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
    let max = Pooling::Max {
        mask: pm.whole_mut(),
    };
    b.pool_forward(&pg, max, px.whole(), py.whole_mut())
        .unwrap();
    out.push(("max_pool_forward".into(), down(&py), Tol::Exact));
    out.push(("max_pool_forward mask".into(), down(&pm), Tol::Exact));
    let pdy = up(&rand_vec(207, pg.out_len(), -1.0, 1.0));
    let mut pdx = b.alloc(pg.in_len()).unwrap();
    let max = Pooling::Max { mask: pm.whole() };
    b.pool_backward(&pg, max, pdy.whole(), pdx.whole_mut())
        .unwrap();
    out.push(("max_pool_backward".into(), down(&pdx), Tol::Exact));
    let ag = PoolGeom::new(4 * 32, (16, 16), (3, 3), (2, 2), (1, 1), RoundMode::Ceil).unwrap();
    let (a_in, a_out) = (ag.in_len(), ag.out_len());
    b.pool_forward(&ag, Pooling::Ave, px.slice(0, a_in), py.slice_mut(0, a_out))
        .unwrap();
    out.push((
        "ave_pool_forward".into(),
        down(&py)[..a_out].to_vec(),
        Tol::Exact,
    ));
    b.pool_backward(
        &ag,
        Pooling::Ave,
        pdy.slice(0, a_out),
        pdx.slice_mut(0, a_in),
    )
    .unwrap();
    out.push((
        "ave_pool_backward".into(),
        down(&pdx)[..a_in].to_vec(),
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
    let lx = px.slice(0, lg.len());
    b.lrn_across_forward(&lg, lx, ls.whole_mut(), ly.whole_mut())
        .unwrap();
    out.push(("lrn_across_forward scale".into(), down(&ls), Tol::Exact));
    out.push(("lrn_across_forward y".into(), down(&ly), TR));
    let saved = LrnSaved {
        x: lx,
        y: ly.whole(),
        scale: ls.whole(),
    };
    // The input doubles as the gradient from above.
    b.lrn_across_backward(&lg, saved, lx, ldx.whole_mut())
        .unwrap();
    out.push(("lrn_across_backward".into(), down(&ldx), TR));
    // WITHIN_CHANNEL LRN: each backend's composition (or fusion) of the window ops.
    let lw = LrnWithin {
        window: PoolGeom::lrn_window(4 * 96, 27, 27, 5),
        alpha: 1e-4,
        beta: 0.75,
    };
    let wn = lw.window.in_len();
    let wx = px.slice(0, wn);
    let [mut mean, mut power, mut wy, mut s0, mut s1] = [0; 5].map(|_| b.alloc(wn).unwrap());
    b.lrn_within_forward(
        &lw,
        wx,
        [mean.whole_mut(), power.whole_mut()],
        wy.whole_mut(),
        s0.whole_mut(),
    )
    .unwrap();
    out.push(("lrn_within_forward mean".into(), down(&mean), Tol::Exact));
    out.push(("lrn_within_forward y".into(), down(&wy), TR));
    let saved = LrnSaved {
        x: wx,
        y: mean.whole(),
        scale: power.whole(),
    };
    b.lrn_within_backward(
        &lw,
        saved,
        wx,
        wy.whole_mut(),
        [s0.whole_mut(), s1.whole_mut()],
    )
    .unwrap();
    out.push(("lrn_within_backward".into(), down(&wy), TR));
    // A grouped batch convolution with a bias, forward and both gradients.
    let conv = ConvBatch {
        geom: ConvGeom {
            channels: 8,
            height: 13,
            width: 11,
            kernel_h: 3,
            kernel_w: 3,
            pad_h: 1,
            pad_w: 0,
            stride_h: 2,
            stride_w: 1,
            dilation_h: 1,
            dilation_w: 2,
        },
        num: 3,
        groups: 2,
        out_channels: 6,
    };
    let cx = x.slice(0, conv.num * conv.in_len());
    let cw = up(&rand_vec(214, conv.weight_len(), -0.5, 0.5));
    let bias = up(&rand_vec(215, conv.out_channels, -1.0, 1.0));
    let cdy = dy.slice(0, conv.num * conv.out_len());
    let mut cy = b.alloc(conv.num * conv.out_len()).unwrap();
    let mut ws = b.alloc(conv.workspace_len(b.capabilities())).unwrap();
    let conv_tol = Tol::Abs(1e-5 * conv.kernel_dim() as f32);
    b.conv_forward(
        &conv,
        cx,
        cw.whole(),
        Some(bias.whole()),
        cy.whole_mut(),
        ws.whole_mut(),
    )
    .unwrap();
    out.push(("conv_forward".into(), down(&cy), conv_tol));
    let mut cdw = up(&rand_vec(216, conv.weight_len(), -0.5, 0.5));
    let mut cdx = b.alloc(conv.num * conv.in_len()).unwrap();
    let grads = ConvGrads {
        dw: Some(cdw.whole_mut()),
        dx: Some(cdx.whole_mut()),
    };
    b.conv_backward(&conv, cx, cw.whole(), cdy, grads, ws.whole_mut())
        .unwrap();
    let batch_tol = Tol::Abs(1e-5 * (conv.num * conv.out_spatial()) as f32);
    out.push(("conv_backward dw".into(), down(&cdw), batch_tol));
    out.push(("conv_backward dx".into(), down(&cdx), conv_tol));

    // Plumbing and loss ops.
    b.fill(0.0, y.whole_mut()).unwrap();
    let block = Block {
        rows: 50,
        cols: 300,
        x_stride: 400,
        y_stride: 310,
    };
    b.copy_2d(&block, x.tail(7), y.tail_mut(3)).unwrap();
    out.push(("copy_2d".into(), down(&y)[..n].to_vec(), Tol::Exact));
    let mut am = b.alloc(n).unwrap();
    b.running_argmax(2.0, dy.whole(), y.slice_mut(0, n), am.whole_mut())
        .unwrap();
    out.push(("running_argmax".into(), down(&am), Tol::Exact));
    b.copy_where_eq(am.whole(), 2.0, x.whole(), y.slice_mut(0, n))
        .unwrap();
    out.push(("copy_where_eq".into(), down(&y)[..n].to_vec(), Tol::Exact));
    let (mut tv, mut ti) = (b.alloc(o * 3 * i).unwrap(), b.alloc(o * 3 * i).unwrap());
    b.top_k_over_axis(axis, 3, x_axis, [tv.whole_mut(), ti.whole_mut()])
        .unwrap();
    out.push(("top_k_over_axis values".into(), down(&tv), Tol::Exact));
    out.push(("top_k_over_axis indices".into(), down(&ti), Tol::Exact));
    let labels: Vec<f32> = rand_vec(208, o * i, 0.0, d as f32 - 0.01)
        .iter()
        .enumerate()
        .map(|(p, &l)| if p % 9 == 0 { -1.0 } else { l.floor() })
        .collect();
    let lab = up(&labels);
    let labelled = Labels {
        values: lab.whole(),
        ignore_label: Some(-1),
    };
    let mut py2 = b.alloc(o * i).unwrap();
    b.gather_at_label(axis, x_axis, labelled, 0.0, py2.whole_mut())
        .unwrap();
    out.push(("gather_at_label".into(), down(&py2), Tol::Exact));
    b.top_k_hits(axis, 2, x_axis, labelled, py2.whole_mut())
        .unwrap();
    out.push(("top_k_hits".into(), down(&py2), Tol::Exact));
    b.copy(x_axis, y.slice_mut(0, len)).unwrap();
    b.affine_at_label(axis, labelled, (1.0, -1.0), y.slice_mut(0, len))
        .unwrap();
    out.push((
        "affine_at_label".into(),
        down(&y)[..len].to_vec(),
        Tol::Exact,
    ));
    let mask = Unary::LabelMask {
        ignore_label: Some(-1),
    };
    b.unary(mask, lab.whole().src(), py2.whole_mut()).unwrap();
    out.push(("label_mask".into(), down(&py2), Tol::Exact));
    let mut cls = b.alloc(d).unwrap();
    b.sum_by_label(dy.slice(0, o * i), labelled, cls.whole_mut())
        .unwrap();
    out.push((
        "sum_by_label".into(),
        down(&cls),
        Tol::Abs(1e-6 * (o * i) as f32),
    ));
    let cross_entropy = Binary::SigmoidCrossEntropy;
    b.binary(
        cross_entropy,
        x.whole().src(),
        pos.whole().src(),
        y.slice_mut(0, n),
    )
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
        use rcaffe::solver::update_rules::{compute_update_value, Scratch, UpdateBuffers};
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
                    scratch: (!b.capabilities().fused_updates).then_some(Scratch {
                        update: &mut update,
                        temp: &mut temp,
                    }),
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

/// Checks every op of a battery run on `label`'s backend against the CPU's run, reporting
/// each before failing.
pub(super) fn check_battery(
    label: &str,
    got: &[(String, Vec<f32>, Tol)],
    want: &[(String, Vec<f32>, Tol)],
) {
    let mut failed = Vec::new();
    for (name, w, tol) in want {
        let Some((_, g, _)) = got.iter().find(|(n, _, _)| n == name) else {
            eprintln!("{label} {name}: NOT RUN");
            failed.push(name.clone());
            continue;
        };
        let op = format!("{label} {name}");
        if std::panic::catch_unwind(|| check(&op, g, w, *tol)).is_err() {
            failed.push(name.clone());
        }
    }
    assert!(
        failed.is_empty(),
        "{label}: ops differing from the CPU beyond tolerance: {failed:?}"
    );
}

/// A CUDA graph records ops without running them, replays them on the buffers' current
/// contents, and refuses every op that needs the host while recording (leaving the stream
/// usable once the capture ends).
pub(super) fn graph_capture_records_replays_and_refuses_host_ops<B: Backend>(gpu: &B) {
    let n = 1000;
    let x0 = rand_vec(7, n, -1.0, 1.0);
    let x1 = rand_vec(8, n, -1.0, 1.0);
    let mut x = gpu.alloc(n).unwrap();
    let mut y = gpu.alloc(n).unwrap();
    let mut a = gpu.alloc(4 * n).unwrap();
    let mut c = gpu.alloc(4).unwrap();
    gpu.upload(&x0, x.whole_mut()).unwrap();
    gpu.upload(&rand_vec(9, 4 * n, -1.0, 1.0), a.whole_mut())
        .unwrap();
    let product = Gemv {
        trans: Transpose::NoTrans,
        m: 4,
        n,
        alpha: 1.0,
        beta: 0.0,
    };

    // A warm-up outside the capture, as the solver's first iteration is: cuBLAS loads the
    // kernels of a product on its first call, which a capture cannot record.
    let (mut y_warm, mut c_warm) = (gpu.alloc(n).unwrap(), gpu.alloc(4).unwrap());
    gpu.scale(Scalar::Value(2.0), x.whole().src(), y_warm.whole_mut())
        .unwrap();
    gpu.gemv(&product, a.whole(), y_warm.whole(), c_warm.whole_mut())
        .unwrap();
    gpu.synchronize().unwrap();

    assert!(gpu.capabilities().capture);
    assert!(gpu.begin_capture().unwrap());
    // y = 2x + x; c = A y (cuBLAS inside the graph).
    gpu.scale(Scalar::Value(2.0), x.whole().src(), y.whole_mut())
        .unwrap();
    gpu.axpby(Scalar::Value(1.0), x.whole(), 1.0, y.whole_mut())
        .unwrap();
    gpu.gemv(&product, a.whole(), y.whole(), c.whole_mut())
        .unwrap();
    // Every host round trip is refused, naming the op, before it does anything.
    let mut host = vec![0f32; n];
    let uniform = Distribution::Uniform { lo: 0.0, hi: 1.0 };
    for (op, result) in [
        ("download", gpu.download(y.whole(), &mut host)),
        ("upload", gpu.upload(&x1, x.whole_mut())),
        ("reduce", gpu.reduce(Reduction::Sum, y.whole()).map(|_| ())),
        ("alloc", gpu.alloc(8).map(|_| ())),
        ("synchronize", gpu.synchronize()),
        (
            "random",
            gpu.random(uniform, &mut rng_from_seed(1), y.whole_mut()),
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
    gpu.download(y.whole(), &mut host).unwrap();
    assert!(host.iter().all(|&v| v == 0.0), "the capture ran its ops");
    let cpu_be = cpu();
    let host_a = {
        let mut v = vec![0f32; 4 * n];
        gpu.download(a.whole(), &mut v).unwrap();
        buf(&v)
    };
    for input in [&x0, &x1] {
        gpu.upload(input, x.whole_mut()).unwrap();
        work.replay().unwrap();
        gpu.download(y.whole(), &mut host).unwrap();
        let want: Vec<f32> = input.iter().map(|v| 2.0 * v + v).collect();
        check("graph y", &host, &want, Tol::Exact);
        let mut got_c = vec![0f32; 4];
        gpu.download(c.whole(), &mut got_c).unwrap();
        let want_y = buf(&want);
        let mut want_c = buf(&[0.0; 4]);
        cpu_be
            .gemv(&product, host_a.whole(), want_y.whole(), want_c.whole_mut())
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
/// again (with the same results as the op run directly).
pub(super) fn a_bad_label_inside_a_replayed_graph_is_reported<B: Backend>(gpu: &B) {
    let (outer, dim, inner) = (8, 5, 3);
    let labels: Vec<f32> = (0..outer * inner).map(|p| (p % dim) as f32).collect();
    let mut bad = labels.clone();
    bad[7] = 9.0;
    let up = |v: &[f32]| {
        let mut b = gpu.alloc(v.len()).unwrap();
        gpu.upload(v, b.whole_mut()).unwrap();
        b
    };
    let axis = Axis::new(outer, dim, inner);
    let x = up(&rand_vec(11, outer * dim * inner, -1.0, 1.0));
    let mut label = up(&labels);
    let mut y = gpu.alloc(outer * inner).unwrap();
    let mut direct = gpu.alloc(outer * inner).unwrap();
    let labelled = Labels {
        values: label.whole(),
        ignore_label: None,
    };
    gpu.gather_at_label(axis, x.whole(), labelled, 0.0, direct.whole_mut())
        .unwrap();
    assert!(gpu.begin_capture().unwrap());
    gpu.gather_at_label(axis, x.whole(), labelled, 0.0, y.whole_mut())
        .unwrap();
    let mut work = gpu.end_capture().unwrap().expect("a graph");
    for (round, values, ok) in [(0, &labels, true), (1, &bad, false), (2, &labels, true)] {
        gpu.upload(values, label.whole_mut()).unwrap();
        match (work.replay(), ok) {
            (Ok(()), true) => {
                let (mut got, mut want) = (vec![0f32; outer * inner], vec![0f32; outer * inner]);
                gpu.download(y.whole(), &mut got).unwrap();
                gpu.download(direct.whole(), &mut want).unwrap();
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
/// scales from device memory.
pub(super) fn solver_replays_iterations_as_a_graph<B: Backend>(gpu: &B) {
    use rcaffe::solver::{read_train_solver, Solver, TrainOptions};
    let schedules = [
        r#"type: "SGD" lr_policy: "fixed" momentum: 0.9 regularization_type: "L1""#,
        r#"type: "Nesterov" lr_policy: "triangular2" max_lr: 0.05 stepsize: 4 momentum: 0.9"#,
        r#"type: "Adam" lr_policy: "inv" gamma: 0.1 power: 0.75 momentum: 0.9 momentum2: 0.999"#,
        r#"type: "AdaDelta" lr_policy: "exp_range" max_lr: 0.05 stepsize: 5 gamma: 0.99
           momentum: 0.95 delta: 1e-6"#,
    ];
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
        let mut on_gpu = Solver::new_recording(param, &path, gpu).unwrap();
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

/// Every op of the battery, through the CUDA backend on the emulated kernels, against the CPU.
#[test]
fn cuda_backend_on_emulated_kernels_matches_cpu() {
    let want = op_battery(&cpu());
    let got = op_battery(&emulated());
    check_battery("emulated CUDA", &got, &want);
}

#[test]
fn emulated_graph_capture_records_replays_and_refuses_host_ops() {
    graph_capture_records_replays_and_refuses_host_ops(&emulated());
}

#[test]
fn a_bad_label_inside_an_emulated_replay_is_reported() {
    a_bad_label_inside_a_replayed_graph_is_reported(&emulated());
}

#[test]
fn solver_replays_iterations_on_emulated_kernels() {
    solver_replays_iterations_as_a_graph(&emulated());
}

/// Views that do not fit their op, one bad argument each: the error, which names the op and
/// the argument.
fn view_errors<B: Backend>(b: &B) -> Vec<String> {
    let x = b.alloc(10).unwrap();
    let mut y = b.alloc(10).unwrap();
    let nt = Transpose::NoTrans;
    let labels = Labels {
        values: x.slice(0, 3),
        ignore_label: None,
    };
    let relu = Activation::Relu { slope: 0.0 };
    let per_channel = Broadcast::PerChannel;
    let results = [
        b.upload(&[0.0; 3], y.slice_mut(8, 3)),
        b.download(x.slice(0, 2), &mut [0.0; 3]),
        b.copy(x.slice(0, 9), y.whole_mut()),
        b.unary(Unary::Exp, x.slice(0, 4).src(), y.slice_mut(0, 5)),
        b.binary(
            Binary::Add,
            Src::InPlace,
            x.slice(2, 9).src(),
            y.slice_mut(0, 9),
        ),
        b.activation_backward(
            relu,
            x.slice(0, 3),
            x.slice(0, 3),
            Src::InPlace,
            y.slice_mut(0, 4),
        ),
        b.axpby(Scalar::At(&x, 10), x.whole(), 1.0, y.whole_mut()),
        b.reduce(Reduction::Dot(x.slice(0, 3)), x.slice(0, 4))
            .map(|_| ()),
        b.reduce_over_axis(
            AxisReduction::Sum,
            Axis::new(2, 3, 2),
            x.whole(),
            y.whole_mut(),
        ),
        b.broadcast(
            Binary::Mul,
            per_channel,
            Axis::new(2, 3, 1),
            x.slice(0, 2),
            Src::InPlace,
            y.slice_mut(0, 6),
        ),
        b.gemm(
            &Gemm::packed(nt, nt, 2, 3, 4),
            x.slice(0, 7),
            x.whole(),
            y.whole_mut(),
        ),
        b.sum_by_label(x.slice(0, 4), labels, y.slice_mut(0, 2)),
    ];
    results
        .into_iter()
        .map(|result| result.expect_err("a view that does not fit").to_string())
        .collect()
}

/// The CUDA backend refuses views that do not fit their op with the CPU backend's errors.
#[test]
fn views_that_do_not_fit_are_refused_as_on_the_cpu() {
    let want = view_errors(&cpu());
    let got = view_errors(&emulated());
    for (got, want) in got.iter().zip(&want) {
        assert_eq!(got, want);
    }
    eprintln!("{want:#?}");
}
