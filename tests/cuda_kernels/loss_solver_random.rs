//! Plumbing (kernels/plumbing.cu), the label-indexed loss kernels (loss.cu), the update rules
//! (solver.cu) and the random streams (random.cu), emulated, against the CPU ops or the
//! formulas they implement.

use super::*;

#[test]
fn plumbing_ops_match_cpu() {
    let c = cpu();
    let (rows, cols, xs, ys) = (5, 13, 20, 17);
    let x = rand_vec(80, rows * xs, -1.0, 1.0);
    let y0 = rand_vec(81, rows * ys, -1.0, 1.0);
    let xb = buf(&x);
    let block = Block {
        rows,
        cols,
        x_stride: xs,
        y_stride: ys,
    };
    let mut want = buf(&y0);
    c.copy_2d(&block, xb.whole(), want.whole_mut()).unwrap();
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
    let xb = buf(&x);
    let (mut wy, mut wm) = (buf(&y0), buf(&m0));
    c.running_argmax(3.0, xb.whole(), wy.whole_mut(), wm.whole_mut())
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
    c.copy_where_eq(wm.whole(), 3.0, xb.whole(), want.whole_mut())
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
    let xb = buf(&x);
    let axis = Axis::new(outer, dim, inner);
    for kk in [1, 4, dim] {
        let len = outer * kk * inner;
        let (mut wv, mut wi) = (buf(&vec![0.0; len]), buf(&vec![0.0; len]));
        c.top_k_over_axis(axis, kk, xb.whole(), [wv.whole_mut(), wi.whole_mut()])
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
    let axis = Axis::new(outer, dim, inner);
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
        let labelled = Labels {
            values: lb.whole(),
            ignore_label: ignore,
        };
        let (has, il) = (c_int::from(ignore.is_some()), ignore.unwrap_or(0));

        let mut want = buf(&vec![0.0; np]);
        let mask = Unary::LabelMask {
            ignore_label: ignore,
        };
        c.unary(mask, lb.whole().src(), want.whole_mut()).unwrap();
        let mut y = vec![f32::NAN; np];
        emu!(k::label_mask(
            int(np),
            labels.as_ptr(),
            has,
            il,
            y.as_mut_ptr()
        ));
        check("label_mask", &y, want.as_slice(), Tol::Exact);

        c.gather_at_label(axis, xb.whole(), labelled, -9.0, want.whole_mut())
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
            c.top_k_hits(axis, top_k, xb.whole(), labelled, want.whole_mut())
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
        c.affine_at_label(axis, labelled, (0.5, -1.0), want.whole_mut())
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
        let vb = buf(&v);
        let mut want = buf(&vec![0.0; dim]);
        c.sum_by_label(vb.whole(), labelled, want.whole_mut())
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
    let (xb, tb) = (buf(&x), buf(&t));
    let mut want = buf(&vec![0.0; n]);
    let (x_in, t_in) = (xb.whole().src(), tb.whole().src());
    c.binary(Binary::SigmoidCrossEntropy, x_in, t_in, want.whole_mut())
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
    let (gb, mut hb) = (buf(&g0), buf(&h0));
    c.axpby(Scalar::Value(lr), gb.whole(), m, hb.whole_mut())
        .unwrap();
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

/// The counter-based Bernoulli stream, drawn by the CUDA backend (its draw then the counter's
/// advance) on the emulated kernels, against the CPU op, value for value: sizes that are and
/// are not multiples of 4, a draw counter about to carry into its high word.
#[test]
fn random_stream_matches_cpu() {
    use rcaffe::backend::philox;
    let c = cpu();
    let emulated = CudaBackend::on(rcaffe_kernel_emu::EmulatedRuntime::new()).unwrap();
    for (n, p, key) in [(1000, 0.3f32, 7u64), (1003, 0.5, u64::MAX), (3, 0.9, 0)] {
        let mut state = philox::new_state(key);
        state[2] = f32::from_bits(u32::MAX - 1); // two draws from a carry
        let mut cpu_state = buf(&state);
        let mut emu_state = emulated.alloc(state.len()).unwrap();
        emulated.upload(&state, emu_state.whole_mut()).unwrap();
        let mut y = emulated.alloc(n).unwrap();
        for draw in 0..3 {
            let mut want = buf(&vec![f32::NAN; n]);
            c.bernoulli_stream(p, cpu_state.whole_mut(), want.whole_mut())
                .unwrap();
            emulated
                .bernoulli_stream(p, emu_state.whole_mut(), y.whole_mut())
                .unwrap();
            let mut got = vec![f32::NAN; n];
            emulated.download(y.whole(), &mut got).unwrap();
            check(
                &format!("bernoulli_stream n {n} draw {draw}"),
                &got,
                want.as_slice(),
                Tol::Exact,
            );
            emulated.download(emu_state.whole(), &mut state).unwrap();
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&state), bits(cpu_state.as_slice()), "advance_stream");
        }
    }
}
