//! [`Backend`] for [`CudaBackend`]: each op's views checked and handed to the launch code of
//! the parent module, which takes `(buffer, offset)` pairs.

use super::super::Src as At;
use super::*;
use crate::backend::{
    Activation, Axis, AxisReduction, Binary, Block, Broadcast, Capabilities, Distribution, Gemm,
    Gemv, Labels, LrnSaved, Pooling, Reduction, Slice, SliceMut, Unary, Views,
};

type In<'a> = crate::backend::Src<'a, CudaBuffer>;

/// An input for an op writing `n` elements, as the launch code takes it.
fn input<'a>(
    op: &'static str,
    arg: &'static str,
    x: In<'a>,
    n: usize,
) -> Result<At<'a, CudaBuffer>> {
    Ok(match x.resolve(op, arg, n)? {
        Some(s) => At::At(s.buf, s.off),
        None => At::InPlace,
    })
}

/// A read view that must be exactly `n` long.
fn exact<'a>(
    op: &'static str,
    arg: &'static str,
    x: Slice<'a, CudaBuffer>,
    n: usize,
) -> Result<Slice<'a, CudaBuffer>> {
    if x.len == n {
        Ok(x)
    } else {
        Err(crate::backend::view::length_mismatch(op, arg, x.len, n))
    }
}

impl Backend for CudaBackend {
    type Buffer = CudaBuffer;
    const NAME: &'static str = "CUDA";

    fn alloc(&self, len: usize) -> Result<CudaBuffer> {
        CudaBackend::alloc(self, len)
    }

    fn upload(&self, src: &[f32], dst: SliceMut<'_, CudaBuffer>) -> Result<()> {
        exact("upload", "dst", dst.as_slice(), src.len())?;
        CudaBackend::upload(self, src, dst.buf, dst.off)
    }

    fn download(&self, src: Slice<'_, CudaBuffer>, dst: &mut [f32]) -> Result<()> {
        exact("download", "src", src, dst.len())?;
        CudaBackend::download(self, src.buf, src.off, dst)
    }

    fn copy(&self, x: Slice<'_, CudaBuffer>, y: SliceMut<'_, CudaBuffer>) -> Result<()> {
        exact("copy", "x", x, y.len)?;
        CudaBackend::copy(self, y.len, x.buf, x.off, y.buf, y.off)
    }

    fn synchronize(&self) -> Result<()> {
        CudaBackend::synchronize(self)
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            fused_updates: true,
            capture: true,
            conv_scratch: false,
        }
    }

    fn fused_update(
        &self,
        rule: &UpdateRule,
        step: Scalar<'_, CudaBuffer>,
        g: SliceMut<'_, CudaBuffer>,
        history: SliceMut<'_, CudaBuffer>,
        history2: Option<SliceMut<'_, CudaBuffer>>,
    ) -> Result<()> {
        const OP: &str = "fused_update";
        let n = g.len;
        for h in std::iter::once(&history).chain(history2.as_ref()) {
            if h.off != 0 {
                return Err(invalid(
                    OP,
                    "a history view must start at its buffer's start",
                ));
            }
            exact(OP, "history", h.as_slice(), n)?;
        }
        if g.off != 0 {
            return Err(invalid(
                OP,
                "the gradient view must start at its buffer's start",
            ));
        }
        CudaBackend::fused_update(
            self,
            rule,
            n,
            step,
            g.buf,
            history.buf,
            history2.map(|h| h.buf),
        )
    }

    fn begin_capture(&self) -> Result<bool> {
        CudaBackend::begin_capture(self)
    }

    fn end_capture(&self) -> Result<Option<Box<dyn CapturedWork>>> {
        CudaBackend::end_capture(self)
    }

    fn fill(&self, value: f32, y: SliceMut<'_, CudaBuffer>) -> Result<()> {
        self.set(y.len, value, y.buf, y.off)
    }

    fn random(&self, dist: Distribution, rng: &mut Rng, y: SliceMut<'_, CudaBuffer>) -> Result<()> {
        // Drawn on the host, as upstream's GPU fillers: the same values as the CPU backend's.
        self.host_guard("random")?;
        let mut host = crate::backend::CpuBuffer::from_vec(vec![0.0; y.len]);
        crate::backend::CpuBackend::new(1)?.random(dist, rng, host.whole_mut())?;
        Backend::upload(self, host.as_slice(), y)
    }

    fn bernoulli_stream(
        &self,
        p: f32,
        state: SliceMut<'_, CudaBuffer>,
        y: SliceMut<'_, CudaBuffer>,
    ) -> Result<()> {
        self.rng_bernoulli_stream(y.len, p, state.buf, state.off, y.buf, y.off)
    }

    fn gemm(
        &self,
        g: &Gemm,
        a: Slice<'_, CudaBuffer>,
        b: Slice<'_, CudaBuffer>,
        c: SliceMut<'_, CudaBuffer>,
    ) -> Result<()> {
        let [a_span, b_span, c_span] = gemm_spans(
            "gemm",
            (g.trans_a, g.trans_b),
            (g.m, g.n, g.k),
            (g.lda, g.ldb, g.ldc),
        )?;
        within("gemm", "A", a, a_span)?;
        within("gemm", "B", b, b_span)?;
        within("gemm", "C", c.as_slice(), c_span)?;
        CudaBackend::gemm(
            self, g.trans_a, g.trans_b, g.m, g.n, g.k, g.alpha, a.buf, a.off, g.lda, b.buf, b.off,
            g.ldb, g.beta, c.buf, c.off, g.ldc,
        )
    }

    fn gemv(
        &self,
        g: &Gemv,
        a: Slice<'_, CudaBuffer>,
        x: Slice<'_, CudaBuffer>,
        y: SliceMut<'_, CudaBuffer>,
    ) -> Result<()> {
        let (x_len, y_len) = match g.trans {
            Transpose::NoTrans => (g.n, g.m),
            Transpose::Trans => (g.m, g.n),
        };
        within("gemv", "A", a, g.m * g.n)?;
        within("gemv", "x", x, x_len)?;
        within("gemv", "y", y.as_slice(), y_len)?;
        CudaBackend::gemv(
            self, g.trans, g.m, g.n, g.alpha, a.buf, a.off, x.buf, x.off, g.beta, y.buf, y.off,
        )
    }

    fn axpby(
        &self,
        alpha: Scalar<'_, CudaBuffer>,
        x: Slice<'_, CudaBuffer>,
        beta: f32,
        y: SliceMut<'_, CudaBuffer>,
    ) -> Result<()> {
        exact("axpby", "x", x, y.len)?;
        match alpha {
            Scalar::Value(alpha) if beta == 1.0 => {
                self.axpy(y.len, alpha, x.buf, x.off, y.buf, y.off)
            }
            _ => CudaBackend::axpby(self, y.len, alpha, x.buf, x.off, beta, y.buf, y.off),
        }
    }

    fn scale(
        &self,
        alpha: Scalar<'_, CudaBuffer>,
        x: In<'_>,
        y: SliceMut<'_, CudaBuffer>,
    ) -> Result<()> {
        let x = input("scale", "x", x, y.len)?;
        CudaBackend::scale(self, y.len, alpha, x, y.buf, y.off)
    }

    fn unary(&self, op: Unary, x: In<'_>, y: SliceMut<'_, CudaBuffer>) -> Result<()> {
        let n = y.len;
        let (y, yo) = (y.buf, y.off);
        if let Unary::LabelMask { ignore_label } = op {
            let Some(labels) = x.resolve("label_mask", "labels", n)? else {
                return Err(invalid("label_mask", "the labels cannot be the mask"));
            };
            return self.label_mask(n, labels.buf, labels.off, ignore_label, y, yo);
        }
        let x = input("unary", "x", x, n)?;
        match op {
            Unary::Exp => self.exp(n, x, y, yo),
            Unary::Log => self.log(n, x, y, yo),
            Unary::Abs => self.abs(n, x, y, yo),
            Unary::Sqr => self.sqr(n, x, y, yo),
            Unary::Sqrt => self.sqrt(n, x, y, yo),
            Unary::Sign => self.sign(n, x, y, yo),
            Unary::Powx(p) => self.powx(n, x, p, y, yo),
            Unary::Power {
                power,
                scale,
                shift,
            } => self.power(n, x, power, scale, shift, y, yo),
            Unary::AddScalar(v) => match x {
                At::InPlace => self.add_scalar(n, v, y, yo),
                At::At(x, xo) => {
                    CudaBackend::copy(self, n, x, xo, y, yo)?;
                    self.add_scalar(n, v, y, yo)
                }
            },
            Unary::LabelMask { .. } => unreachable!("handled above"),
        }
    }

    fn binary(&self, op: Binary, a: In<'_>, b: In<'_>, y: SliceMut<'_, CudaBuffer>) -> Result<()> {
        let n = y.len;
        let a = input("binary", "a", a, n)?;
        let b = input("binary", "b", b, n)?;
        let (y, yo) = (y.buf, y.off);
        match op {
            Binary::Add => self.add(n, a, b, y, yo),
            Binary::Sub => self.sub(n, a, b, y, yo),
            Binary::Mul => self.mul(n, a, b, y, yo),
            Binary::Div => self.div(n, a, b, y, yo),
            Binary::Max => self.max(n, a, b, y, yo),
            Binary::PRelu => {
                // A slope per element: PReLU's kernel with every element its own channel.
                let (slope, slope_off) = no_in_place(b)?;
                self.prelu_forward(1, n, 1, slope, slope_off, a, y, yo)
            }
            Binary::SigmoidCrossEntropy => {
                let (x, xo) = no_in_place(a)?;
                let (t, to) = no_in_place(b)?;
                self.sigmoid_cross_entropy(n, x, xo, t, to, y, yo)
            }
        }
    }

    fn activation_forward(
        &self,
        f: Activation,
        x: In<'_>,
        y: SliceMut<'_, CudaBuffer>,
    ) -> Result<()> {
        let n = y.len;
        let x = input("activation_forward", "x", x, n)?;
        let (y, yo) = (y.buf, y.off);
        match f {
            Activation::Relu { slope } => self.relu_forward(n, slope, x, y, yo),
            Activation::Sigmoid => self.sigmoid_forward(n, x, y, yo),
            Activation::Tanh => self.tanh_forward(n, x, y, yo),
            Activation::Elu { alpha } => self.elu_forward(n, alpha, x, y, yo),
            Activation::Bnll => self.bnll_forward(n, x, y, yo),
        }
    }

    fn activation_backward(
        &self,
        f: Activation,
        x: Slice<'_, CudaBuffer>,
        y: Slice<'_, CudaBuffer>,
        dy: In<'_>,
        dx: SliceMut<'_, CudaBuffer>,
    ) -> Result<()> {
        const OP: &str = "activation_backward";
        let n = dx.len;
        exact(OP, "x", x, n)?;
        exact(OP, "y", y, n)?;
        let dy = input(OP, "dy", dy, n)?;
        let (dx, dxo) = (dx.buf, dx.off);
        match f {
            Activation::Relu { slope } => self.relu_backward(n, slope, x.buf, x.off, dy, dx, dxo),
            Activation::Sigmoid => self.sigmoid_backward(n, y.buf, y.off, dy, dx, dxo),
            Activation::Tanh => self.tanh_backward(n, y.buf, y.off, dy, dx, dxo),
            Activation::Elu { alpha } => {
                self.elu_backward(n, alpha, x.buf, x.off, y.buf, y.off, dy, dx, dxo)
            }
            Activation::Bnll => self.bnll_backward(n, x.buf, x.off, dy, dx, dxo),
        }
    }

    fn reduce(&self, r: Reduction<'_, CudaBuffer>, x: Slice<'_, CudaBuffer>) -> Result<f32> {
        let n = x.len;
        match r {
            Reduction::Sum => self.sum(n, x.buf, x.off),
            Reduction::Asum => self.asum(n, x.buf, x.off),
            Reduction::Sumsq => self.sumsq(n, x.buf, x.off),
            Reduction::Dot(b) => {
                exact("dot", "b", b, n)?;
                self.dot(n, x.buf, x.off, b.buf, b.off)
            }
        }
    }

    fn sum_into(
        &self,
        alpha: f32,
        x: Slice<'_, CudaBuffer>,
        y: SliceMut<'_, CudaBuffer>,
    ) -> Result<()> {
        exact("sum_into", "y", y.as_slice(), 1)?;
        CudaBackend::sum_into(self, x.len, alpha, x.buf, x.off, y.buf, y.off)
    }

    fn reduce_over_axis(
        &self,
        r: AxisReduction<'_, CudaBuffer>,
        axis: Axis,
        x: Slice<'_, CudaBuffer>,
        y: SliceMut<'_, CudaBuffer>,
    ) -> Result<()> {
        let Axis { outer, dim, inner } = axis;
        match r {
            AxisReduction::Max => self.max_over_axis(outer, dim, inner, x.buf, x.off, y.buf, y.off),
            AxisReduction::Sum => self.sum_over_axis(outer, dim, inner, x.buf, x.off, y.buf, y.off),
            AxisReduction::Dot(b) => {
                self.dot_over_axis(outer, dim, inner, x.buf, x.off, b.buf, b.off, y.buf, y.off)
            }
        }
    }

    fn broadcast(
        &self,
        op: Binary,
        how: Broadcast,
        axis: Axis,
        v: Slice<'_, CudaBuffer>,
        x: In<'_>,
        y: SliceMut<'_, CudaBuffer>,
    ) -> Result<()> {
        const OP: &str = "broadcast";
        let Axis { outer, dim, inner } = axis;
        let x = input(OP, "x", x, y.len)?;
        let (y, yo) = (y.buf, y.off);
        match (op, how, x) {
            (Binary::Sub, Broadcast::OverAxis, At::InPlace) => {
                self.sub_along_axis(outer, dim, inner, v.buf, v.off, y, yo)
            }
            (Binary::Div, Broadcast::OverAxis, At::InPlace) => {
                self.div_along_axis(outer, dim, inner, v.buf, v.off, y, yo)
            }
            (Binary::Add, Broadcast::PerChannel, At::InPlace) => {
                self.add_per_channel(outer, dim, inner, v.buf, v.off, y, yo)
            }
            (Binary::Mul, Broadcast::PerChannel, x) => {
                self.mul_per_channel(outer, dim, inner, v.buf, v.off, x, y, yo)
            }
            (Binary::PRelu, Broadcast::PerChannel, x) => {
                self.prelu_forward(outer, dim, inner, v.buf, v.off, x, y, yo)
            }
            _ => Err(invalid(
                OP,
                format!("{op:?} {how:?} has no CUDA kernel here"),
            )),
        }
    }

    fn sum_per_channel(
        &self,
        axis: Axis,
        alpha: f32,
        x: Slice<'_, CudaBuffer>,
        beta: f32,
        y: SliceMut<'_, CudaBuffer>,
    ) -> Result<()> {
        let Axis { outer, dim, inner } = axis;
        CudaBackend::sum_per_channel(
            self, outer, dim, inner, alpha, x.buf, x.off, beta, y.buf, y.off,
        )
    }

    fn im2col(
        &self,
        g: &ConvGeom,
        im: Slice<'_, CudaBuffer>,
        col: SliceMut<'_, CudaBuffer>,
    ) -> Result<()> {
        CudaBackend::im2col(self, g, im.buf, im.off, col.buf, col.off)
    }

    fn col2im(
        &self,
        g: &ConvGeom,
        col: Slice<'_, CudaBuffer>,
        im: SliceMut<'_, CudaBuffer>,
    ) -> Result<()> {
        CudaBackend::col2im(self, g, col.buf, col.off, im.buf, im.off)
    }

    fn pool_forward(
        &self,
        g: &PoolGeom,
        p: Pooling<SliceMut<'_, CudaBuffer>>,
        x: Slice<'_, CudaBuffer>,
        y: SliceMut<'_, CudaBuffer>,
    ) -> Result<()> {
        match p {
            Pooling::Max { mask } => {
                self.max_pool_forward(g, x.buf, x.off, y.buf, y.off, mask.buf, mask.off)
            }
            Pooling::Ave => self.ave_pool_forward(g, x.buf, x.off, y.buf, y.off),
        }
    }

    fn pool_backward(
        &self,
        g: &PoolGeom,
        p: Pooling<Slice<'_, CudaBuffer>>,
        dy: Slice<'_, CudaBuffer>,
        dx: SliceMut<'_, CudaBuffer>,
    ) -> Result<()> {
        match p {
            Pooling::Max { mask } => {
                self.max_pool_backward(g, dy.buf, dy.off, mask.buf, mask.off, dx.buf, dx.off)
            }
            Pooling::Ave => self.ave_pool_backward(g, dy.buf, dy.off, dx.buf, dx.off),
        }
    }

    fn lrn_across_forward(
        &self,
        g: &LrnGeom,
        x: Slice<'_, CudaBuffer>,
        scale: SliceMut<'_, CudaBuffer>,
        y: SliceMut<'_, CudaBuffer>,
    ) -> Result<()> {
        CudaBackend::lrn_across_forward(self, g, x.buf, x.off, scale.buf, scale.off, y.buf, y.off)
    }

    fn lrn_across_backward(
        &self,
        g: &LrnGeom,
        forward: LrnSaved<'_, CudaBuffer>,
        dy: Slice<'_, CudaBuffer>,
        dx: SliceMut<'_, CudaBuffer>,
    ) -> Result<()> {
        let LrnSaved { x, y, scale } = forward;
        CudaBackend::lrn_across_backward(
            self, g, x.buf, x.off, y.buf, y.off, scale.buf, scale.off, dy.buf, dy.off, dx.buf,
            dx.off,
        )
    }

    fn prelu_backward(
        &self,
        axis: Axis,
        slope: Slice<'_, CudaBuffer>,
        x: Slice<'_, CudaBuffer>,
        dy: In<'_>,
        dx: SliceMut<'_, CudaBuffer>,
    ) -> Result<()> {
        let Axis { outer, dim, inner } = axis;
        let dy = input("prelu_backward", "dy", dy, dx.len)?;
        CudaBackend::prelu_backward(
            self, outer, dim, inner, slope.buf, slope.off, x.buf, x.off, dy, dx.buf, dx.off,
        )
    }

    fn prelu_slope_grad(
        &self,
        axis: Axis,
        x: Slice<'_, CudaBuffer>,
        dy: Slice<'_, CudaBuffer>,
        dslope: SliceMut<'_, CudaBuffer>,
    ) -> Result<()> {
        let Axis { outer, dim, inner } = axis;
        CudaBackend::prelu_slope_grad(
            self, outer, dim, inner, x.buf, x.off, dy.buf, dy.off, dslope.buf, dslope.off,
        )
    }

    fn copy_2d(
        &self,
        block: &Block,
        x: Slice<'_, CudaBuffer>,
        y: SliceMut<'_, CudaBuffer>,
    ) -> Result<()> {
        if let Some((x_span, y_span)) = copy_2d_spans(
            "copy_2d",
            (block.rows, block.cols),
            block.x_stride,
            block.y_stride,
        )? {
            within("copy_2d", "x", x, x_span)?;
            within("copy_2d", "y", y.as_slice(), y_span)?;
        }
        CudaBackend::copy_2d(
            self,
            block.rows,
            block.cols,
            x.buf,
            x.off,
            block.x_stride,
            y.buf,
            y.off,
            block.y_stride,
        )
    }

    fn running_argmax(
        &self,
        index: f32,
        x: Slice<'_, CudaBuffer>,
        y: SliceMut<'_, CudaBuffer>,
        mask: SliceMut<'_, CudaBuffer>,
    ) -> Result<()> {
        let n = y.len;
        exact("running_argmax", "x", x, n)?;
        exact("running_argmax", "mask", mask.as_slice(), n)?;
        CudaBackend::running_argmax(
            self, n, index, x.buf, x.off, y.buf, y.off, mask.buf, mask.off,
        )
    }

    fn copy_where_eq(
        &self,
        mask: Slice<'_, CudaBuffer>,
        value: f32,
        x: Slice<'_, CudaBuffer>,
        y: SliceMut<'_, CudaBuffer>,
    ) -> Result<()> {
        let n = y.len;
        exact("copy_where_eq", "x", x, n)?;
        exact("copy_where_eq", "mask", mask, n)?;
        CudaBackend::copy_where_eq(
            self, n, mask.buf, mask.off, value, x.buf, x.off, y.buf, y.off,
        )
    }

    fn top_k_over_axis(
        &self,
        axis: Axis,
        k: usize,
        x: Slice<'_, CudaBuffer>,
        top: [SliceMut<'_, CudaBuffer>; 2],
    ) -> Result<()> {
        let Axis { outer, dim, inner } = axis;
        let [values, indices] = top;
        CudaBackend::top_k_over_axis(
            self,
            outer,
            dim,
            inner,
            k,
            x.buf,
            x.off,
            values.buf,
            values.off,
            indices.buf,
            indices.off,
        )
    }

    fn gather_at_label(
        &self,
        axis: Axis,
        x: Slice<'_, CudaBuffer>,
        labels: Labels<'_, CudaBuffer>,
        fill: f32,
        y: SliceMut<'_, CudaBuffer>,
    ) -> Result<()> {
        let Axis { outer, dim, inner } = axis;
        let l = labels.values;
        CudaBackend::gather_at_label(
            self,
            outer,
            dim,
            inner,
            x.buf,
            x.off,
            l.buf,
            l.off,
            labels.ignore_label,
            fill,
            y.buf,
            y.off,
        )
    }

    fn affine_at_label(
        &self,
        axis: Axis,
        labels: Labels<'_, CudaBuffer>,
        (alpha, beta): (f32, f32),
        y: SliceMut<'_, CudaBuffer>,
    ) -> Result<()> {
        let Axis { outer, dim, inner } = axis;
        let l = labels.values;
        CudaBackend::affine_at_label(
            self,
            outer,
            dim,
            inner,
            l.buf,
            l.off,
            labels.ignore_label,
            alpha,
            beta,
            y.buf,
            y.off,
        )
    }

    fn top_k_hits(
        &self,
        axis: Axis,
        top_k: usize,
        x: Slice<'_, CudaBuffer>,
        labels: Labels<'_, CudaBuffer>,
        y: SliceMut<'_, CudaBuffer>,
    ) -> Result<()> {
        let Axis { outer, dim, inner } = axis;
        let l = labels.values;
        CudaBackend::top_k_hits(
            self,
            outer,
            dim,
            inner,
            top_k,
            x.buf,
            x.off,
            l.buf,
            l.off,
            labels.ignore_label,
            y.buf,
            y.off,
        )
    }

    fn sum_by_label(
        &self,
        x: Slice<'_, CudaBuffer>,
        labels: Labels<'_, CudaBuffer>,
        y: SliceMut<'_, CudaBuffer>,
    ) -> Result<()> {
        let l = exact("sum_by_label", "labels", labels.values, x.len)?;
        CudaBackend::sum_by_label(
            self,
            x.len,
            y.len,
            x.buf,
            x.off,
            l.buf,
            l.off,
            labels.ignore_label,
            y.buf,
            y.off,
        )
    }
}

/// Checks that a view holds the `need` elements an op's geometry addresses from its start.
fn within(
    op: &'static str,
    arg: &'static str,
    x: Slice<'_, CudaBuffer>,
    need: usize,
) -> Result<()> {
    if x.len < need {
        return Err(invalid(
            op,
            format!("{arg} has {} elements, the op needs {need}", x.len),
        ));
    }
    Ok(())
}

/// An input that must be another buffer.
fn no_in_place<'a>(x: At<'a, CudaBuffer>) -> Result<(&'a CudaBuffer, usize)> {
    match x {
        At::At(b, off) => Ok((b, off)),
        At::InPlace => Err(invalid(
            "binary",
            "this op cannot run in place on that input",
        )),
    }
}
