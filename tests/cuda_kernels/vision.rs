//! Axis and per-channel ops, im2col/col2im, pooling, LRN and PReLU (kernels/axis.cu,
//! im2col.cu, pooling.cu, lrn.cu, activations.cu), emulated, against the CPU ops.

use super::*;

#[test]
fn axis_and_per_channel_ops_match_cpu() {
    let c = cpu();
    let (outer, dim, inner) = (3, 10, 37);
    let len = outer * dim * inner;
    let x = rand_vec(14, len, -3.0, 3.0);
    let x2 = rand_vec(15, len, -3.0, 3.0);
    let (xb, x2b) = (buf(&x), buf(&x2));
    let axis = Axis::new(outer, dim, inner);
    let mut want = buf(&vec![0.0; outer * inner]);
    let mut y = vec![f32::NAN; outer * inner];
    let (o, d, i) = (int(outer), int(dim), int(inner));

    c.reduce_over_axis(AxisReduction::Max, axis, xb.whole(), want.whole_mut())
        .unwrap();
    emu!(k::max_over_axis(o, d, i, x.as_ptr(), y.as_mut_ptr()));
    check("max_over_axis", &y, want.as_slice(), Tol::Exact);

    c.reduce_over_axis(AxisReduction::Sum, axis, xb.whole(), want.whole_mut())
        .unwrap();
    emu!(k::sum_over_axis(o, d, i, x.as_ptr(), y.as_mut_ptr()));
    check("sum_over_axis", &y, want.as_slice(), Tol::Exact);

    let dot = AxisReduction::Dot(x2b.whole());
    c.reduce_over_axis(dot, axis, xb.whole(), want.whole_mut())
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
    let over_axis = Broadcast::OverAxis;
    let mut want = buf(&x);
    c.broadcast(
        Binary::Sub,
        over_axis,
        axis,
        vb.whole(),
        Src::InPlace,
        want.whole_mut(),
    )
    .unwrap();
    let mut y = x.clone();
    emu!(k::sub_along_axis(o, d, i, v.as_ptr(), y.as_mut_ptr()));
    check("sub_along_axis", &y, want.as_slice(), Tol::Exact);

    let mut want = buf(&x);
    c.broadcast(
        Binary::Div,
        over_axis,
        axis,
        vb.whole(),
        Src::InPlace,
        want.whole_mut(),
    )
    .unwrap();
    let mut y = x.clone();
    emu!(k::div_along_axis(o, d, i, v.as_ptr(), y.as_mut_ptr()));
    check("div_along_axis", &y, want.as_slice(), Tol::Exact);

    // Per channel: dim plays the channels.
    let ch = rand_vec(17, dim, -1.0, 1.0);
    let chb = buf(&ch);
    let per_channel = Broadcast::PerChannel;
    let mut want = buf(&x);
    c.broadcast(
        Binary::Add,
        per_channel,
        axis,
        chb.whole(),
        Src::InPlace,
        want.whole_mut(),
    )
    .unwrap();
    let mut y = x.clone();
    emu!(k::add_per_channel(o, d, i, ch.as_ptr(), y.as_mut_ptr()));
    check("add_per_channel", &y, want.as_slice(), Tol::Exact);

    let mut want = buf(&vec![0.0; len]);
    let x_in = xb.whole().src();
    c.broadcast(
        Binary::Mul,
        per_channel,
        axis,
        chb.whole(),
        x_in,
        want.whole_mut(),
    )
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
        c.sum_per_channel(axis, 0.5, xb.whole(), beta, want.whole_mut())
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

    // Long channels: partial sums over interleaved positions, then one thread per channel;
    // parts from 2 to more than there are positions (the extra parts sum nothing).
    let (outer, dim, inner) = (4, 5, 700);
    let x = rand_vec(19, outer * dim * inner, -1.0, 1.0);
    let xb = buf(&x);
    let axis = Axis::new(outer, dim, inner);
    let magnitude: f32 = x.iter().map(|v| v.abs()).sum();
    for (parts, beta) in [
        (2usize, 0.0f32),
        (7, 0.5),
        (64, 0.0),
        (outer * inner + 3, 0.5),
    ] {
        let y0 = rand_vec(20, dim, -1.0, 1.0);
        let mut want = buf(&y0);
        c.sum_per_channel(axis, 0.5, xb.whole(), beta, want.whole_mut())
            .unwrap();
        let mut partial = vec![f32::NAN; dim * parts];
        emu!(k::sum_per_channel_partial(
            int(outer),
            int(dim),
            int(inner),
            int(parts),
            x.as_ptr(),
            partial.as_mut_ptr()
        ));
        let mut y = y0.clone();
        emu!(k::sum_per_channel_parts(
            int(dim),
            int(parts),
            partial.as_ptr(),
            0.5,
            beta,
            y.as_mut_ptr()
        ));
        check(
            &format!("sum_per_channel in {parts} parts"),
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

/// The broadcasts without a kernel of their own: `broadcast_over_axis` and
/// `broadcast_per_channel` for every Binary op (by the codes kernels/axis.cu lists), from
/// another buffer and in place.
#[test]
fn generic_broadcast_kernels_match_cpu() {
    let c = cpu();
    let (outer, dim, inner) = (3, 10, 37);
    let len = outer * dim * inner;
    let axis = Axis::new(outer, dim, inner);
    let (o, d, i) = (int(outer), int(dim), int(inner));
    let x = rand_vec(40, len, -3.0, 3.0);
    let xb = buf(&x);
    let ops = [
        Binary::Add,
        Binary::Sub,
        Binary::Mul,
        Binary::Div,
        Binary::Max,
        Binary::PRelu,
        Binary::SigmoidCrossEntropy,
    ];
    for (code, op) in ops.into_iter().enumerate() {
        let tol = if op == Binary::SigmoidCrossEntropy {
            Tol::Rel(2e-6)
        } else {
            Tol::Exact
        };
        for how in [Broadcast::OverAxis, Broadcast::PerChannel] {
            let v_len = match how {
                Broadcast::OverAxis => outer * inner,
                Broadcast::PerChannel => dim,
            };
            let v = rand_vec(41, v_len, 0.5, 2.0);
            let mut want = buf(&vec![0.0; len]);
            c.broadcast(
                op,
                how,
                axis,
                buf(&v).whole(),
                xb.whole().src(),
                want.whole_mut(),
            )
            .unwrap();
            let kernel = match how {
                Broadcast::OverAxis => k::broadcast_over_axis,
                Broadcast::PerChannel => k::broadcast_per_channel,
            };
            let code = int(code);
            let mut y = vec![f32::NAN; len];
            emu!(kernel(
                code,
                o,
                d,
                i,
                v.as_ptr(),
                x.as_ptr(),
                y.as_mut_ptr()
            ));
            check(&format!("{op:?} {how:?}"), &y, want.as_slice(), tol);
            let mut y = x.clone();
            let p = y.as_mut_ptr();
            emu!(kernel(code, o, d, i, v.as_ptr(), p, p));
            check(
                &format!("{op:?} {how:?} in place"),
                &y,
                want.as_slice(),
                tol,
            );
        }
    }
}

#[test]
fn im2col_and_col2im_match_cpu() {
    let c = cpu();
    for (t, g) in conv_geoms().into_iter().enumerate() {
        g.validate("test").unwrap();
        let im = rand_vec(20 + t as u64, g.im_len(), -1.0, 1.0);
        let imb = buf(&im);
        let mut want = buf(&vec![0.0; g.col_len()]);
        c.im2col(&g, imb.whole(), want.whole_mut()).unwrap();
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
        let colb = buf(&cols);
        let mut want = buf(&vec![0.0; g.im_len()]);
        c.col2im(&g, colb.whole(), want.whole_mut()).unwrap();
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
        let max = Pooling::Max {
            mask: want_m.whole_mut(),
        };
        c.pool_forward(&g, max, xb.whole(), want_y.whole_mut())
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
        let dyb = buf(&dy);
        let mut want = buf(&vec![0.0; g.in_len()]);
        let max = Pooling::Max {
            mask: want_m.whole(),
        };
        c.pool_backward(&g, max, dyb.whole(), want.whole_mut())
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
        c.pool_forward(&g, Pooling::Ave, xb.whole(), want.whole_mut())
            .unwrap();
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
        c.pool_backward(&g, Pooling::Ave, dyb.whole(), want.whole_mut())
            .unwrap();
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
        let xb = buf(&x);
        let (mut ws, mut wy) = (buf(&vec![0.0; n]), buf(&vec![0.0; n]));
        c.lrn_across_forward(&g, xb.whole(), ws.whole_mut(), wy.whole_mut())
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
        let dyb = buf(&dy);
        let mut want = buf(&vec![0.0; n]);
        let saved = LrnSaved {
            x: xb.whole(),
            y: wy.whole(),
            scale: ws.whole(),
        };
        c.lrn_across_backward(&g, saved, dyb.whole(), want.whole_mut())
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
    let (sb, xb, dyb) = (buf(&slope), buf(&x), buf(&dy));
    let axis = Axis::new(outer, channels, inner);

    // The forward pass is a PRelu broadcast per channel.
    let mut want = buf(&vec![0.0; n]);
    let per_channel = Broadcast::PerChannel;
    c.broadcast(
        Binary::PRelu,
        per_channel,
        axis,
        sb.whole(),
        xb.whole().src(),
        want.whole_mut(),
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
        axis,
        sb.whole(),
        xb.whole(),
        dyb.whole().src(),
        want.whole_mut(),
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
    c.prelu_slope_grad(axis, xb.whole(), dyb.whole(), want.whole_mut())
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
