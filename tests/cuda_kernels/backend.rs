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
    b.tanh_backward(n, &pos, 0, Src::At(&dy, 0), &mut y, 0)
        .unwrap();
    out.push(("tanh_backward".into(), down(&y)[..n].to_vec(), Tol::Exact));
    let mut fwd = b.alloc(n).unwrap();
    b.elu_forward(n, 0.5, Src::At(&x, 0), &mut fwd, 0).unwrap();
    b.copy(n, &dy, 0, &mut y, 0).unwrap();
    b.elu_backward(n, 0.5, &x, 0, &fwd, 0, Src::InPlace, &mut y, 0)
        .unwrap();
    out.push(("elu_backward in place".into(), down(&y)[..n].to_vec(), TR));
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
    // Channels long enough to be summed in parts first (a convolution's bias gradient).
    let (lo, ld, li) = (16, 6, 3000);
    let long = up(&rand_vec(212, lo * ld * li, -1.0, 1.0));
    let mut long_sums = up(&rand_vec(213, ld, -1.0, 1.0));
    b.sum_per_channel(lo, ld, li, 0.5, &long, 0, 0.25, &mut long_sums, 0)
        .unwrap();
    out.push((
        "sum_per_channel, long channels".into(),
        down(&long_sums),
        Tol::Abs(1e-6 * (lo * li) as f32),
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
                    scratch: (!b.has_fused_updates()).then_some(Scratch {
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
    gpu.upload(&x0, &mut x, 0).unwrap();
    gpu.upload(&rand_vec(9, 4 * n, -1.0, 1.0), &mut a, 0)
        .unwrap();

    // A warm-up outside the capture, as the solver's first iteration is: cuBLAS loads the
    // kernels of a product on its first call, which a capture cannot record.
    let (mut y_warm, mut c_warm) = (gpu.alloc(n).unwrap(), gpu.alloc(4).unwrap());
    gpu.scale(n, 2.0, Src::At(&x, 0), &mut y_warm, 0).unwrap();
    gpu.gemv(
        Transpose::NoTrans,
        4,
        n,
        1.0,
        &a,
        0,
        &y_warm,
        0,
        0.0,
        &mut c_warm,
        0,
    )
    .unwrap();
    gpu.synchronize().unwrap();

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
/// again (with the same results as the op run directly).
pub(super) fn a_bad_label_inside_a_replayed_graph_is_reported<B: Backend>(gpu: &B) {
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
