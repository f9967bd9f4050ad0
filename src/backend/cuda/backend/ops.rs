//! The op set: [`Backend`] for [`CudaBackend`], each op one kernel launch (or a cuBLAS call)
//! through the helpers of the [parent module](super).

use super::*;
use crate::backend::cuda::runtime;
use crate::backend::{copy_2d_spans, gemm_spans};

/// Recorded work (a CUDA graph on a GPU) with the backend whose buffers it addresses.
struct Replay<R: DeviceRuntime> {
    recording: R::Recording,
    /// Keeps the device, its stream and the kernels alive as long as the recording.
    backend: CudaBackend<R>,
}

impl<R: DeviceRuntime> CapturedWork for Replay<R> {
    /// Issues the recording and waits for it: the labels its kernels met are checked then, as
    /// the host checks them before each op outside a graph. (The caller reads the loss next,
    /// which waits anyway.)
    fn replay(&mut self) -> Result<()> {
        self.backend
            .inner
            .runtime
            .replay("replay", &mut self.recording)?;
        self.backend.take_label_error("replay")
    }
}

/// The code of a [`Binary`] op as `broadcast_over_axis` and `broadcast_per_channel` take it
/// (kernels/axis.cu).
fn binary_code(op: Binary) -> i32 {
    match op {
        Binary::Add => 0,
        Binary::Sub => 1,
        Binary::Mul => 2,
        Binary::Div => 3,
        Binary::Max => 4,
        Binary::PRelu => 5,
        Binary::SigmoidCrossEntropy => 6,
    }
}

impl<R: DeviceRuntime> Backend for CudaBackend<R> {
    type Buffer = CudaBuffer<R>;

    const NAME: &'static str = "CUDA";

    fn alloc(&self, len: usize) -> Result<CudaBuffer<R>> {
        // An allocation inside a capture would become graph-owned memory.
        self.host_guard("alloc")?;
        Self::alloc_on(&self.inner.runtime, "alloc", len)
    }

    fn upload(&self, src: &[f32], dst: SliceMut<'_, CudaBuffer<R>>) -> Result<()> {
        const OP: &str = "upload";
        let p = Self::write(OP, "dst", &dst, Extent::Exactly(src.len()))?;
        self.host_guard(OP)?;
        if src.is_empty() {
            return Ok(());
        }
        // SAFETY: the range was checked.
        unsafe { self.inner.runtime.upload(OP, src, p) }
    }

    fn download(&self, src: Slice<'_, CudaBuffer<R>>, dst: &mut [f32]) -> Result<()> {
        const OP: &str = "download";
        let p = Self::read(OP, "src", src, Extent::Exactly(dst.len()))?;
        self.host_guard(OP)?;
        if dst.is_empty() {
            return Ok(());
        }
        // SAFETY: the range was checked.
        unsafe { self.inner.runtime.download(OP, p, dst) }
    }

    fn copy(&self, x: Slice<'_, CudaBuffer<R>>, y: SliceMut<'_, CudaBuffer<R>>) -> Result<()> {
        self.map1("copy", x.src(), y, |n, x, y| kernels::Copy { n, x, y })
    }

    fn synchronize(&self) -> Result<()> {
        self.host_guard("synchronize")?;
        self.inner.runtime.synchronize("synchronize")
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            fused_updates: true,
            capture: true,
            conv_scratch: false,
            // BatchNorm and Scale compose their passes from the other kernels here.
            fused_batch_norm: false,
            fused_scale: false,
        }
    }

    fn fused_update(
        &self,
        rule: &UpdateRule,
        step: Scalar<'_, CudaBuffer<R>>,
        g: SliceMut<'_, CudaBuffer<R>>,
        history: SliceMut<'_, CudaBuffer<R>>,
        history2: Option<SliceMut<'_, CudaBuffer<R>>>,
    ) -> Result<()> {
        const OP: &str = "fused_update";
        let n = g.len;
        let (step_at, step) = Self::scalar(OP, "step", step)?;
        let g = Self::write(OP, "g", &g, Extent::Whole)?;
        let h = Self::write(OP, "history", &history, Extent::Exactly(n))?;
        let second_history = || match &history2 {
            Some(h2) => Self::write(OP, "history2", h2, Extent::Exactly(n)),
            None => Err(invalid(
                OP,
                format!("{} needs a second history", rule.type_name()),
            )),
        };
        let grid = self.grid_stride(OP, n);
        let n = int(OP, n)?;
        match *rule {
            UpdateRule::Sgd { momentum } => grid.run(kernels::SgdUpdate {
                n,
                g,
                h,
                momentum,
                step_at,
                step,
            }),
            UpdateRule::Nesterov { momentum } => grid.run(kernels::NesterovUpdate {
                n,
                g,
                h,
                momentum,
                step_at,
                step,
            }),
            UpdateRule::AdaGrad { delta } => grid.run(kernels::AdagradUpdate {
                n,
                g,
                h,
                delta,
                step_at,
                step,
            }),
            UpdateRule::RmsProp { delta, rms_decay } => grid.run(kernels::RmspropUpdate {
                n,
                g,
                h,
                rms_decay,
                delta,
                step_at,
                step,
            }),
            UpdateRule::AdaDelta { delta, momentum } => grid.run(kernels::AdadeltaUpdate {
                n,
                g,
                h,
                h2: second_history()?,
                momentum,
                delta,
                step_at,
                step,
            }),
            UpdateRule::Adam {
                beta1,
                beta2,
                eps_hat,
            } => grid.run(kernels::AdamUpdate {
                n,
                g,
                m: h,
                v: second_history()?,
                beta1,
                beta2,
                eps_hat,
                step_at,
                step,
            }),
        }
    }

    fn begin_capture(&self) -> Result<bool> {
        const OP: &str = "begin_capture";
        if self.capturing() {
            return Err(invalid(OP, "a capture is already under way"));
        }
        // Loading a module cannot be recorded: every kernel file is loaded before (a no-op
        // once they are).
        self.inner.runtime.load_kernels(OP)?;
        self.inner.runtime.begin_recording(OP)?;
        self.inner.capturing.store(true, Ordering::Release);
        Ok(true)
    }

    fn end_capture(&self) -> Result<Option<Box<dyn CapturedWork>>> {
        const OP: &str = "end_capture";
        if !self.inner.capturing.swap(false, Ordering::AcqRel) {
            return Ok(None);
        }
        // Ends the capture even when the work failed part-way (the caller discards the
        // graph then), so the stream is usable again either way.
        let recording = self.inner.runtime.end_recording(OP)?;
        Ok(recording.map(|recording| {
            Box::new(Replay {
                recording,
                backend: self.clone(),
            }) as Box<dyn CapturedWork>
        }))
    }

    fn fill(&self, value: f32, y: SliceMut<'_, CudaBuffer<R>>) -> Result<()> {
        const OP: &str = "fill";
        let n = y.len;
        let y = Self::write(OP, "y", &y, Extent::Whole)?;
        self.grid_stride(OP, n).run(kernels::Set {
            n: int(OP, n)?,
            value,
            y,
        })
    }

    // Drawn on the host with the CPU backend's generator and uploaded, as upstream's GPU
    // fillers: only the distribution is specified, and this keeps a net's initialisation
    // identical across backends.
    fn random(
        &self,
        dist: Distribution,
        rng: &mut Rng,
        y: SliceMut<'_, CudaBuffer<R>>,
    ) -> Result<()> {
        const OP: &str = "random";
        Self::write(OP, "y", &y, Extent::Whole)?;
        self.host_guard(OP)?;
        let mut host = crate::backend::CpuBuffer::from_vec(vec![0.0; y.len]);
        crate::backend::CpuBackend::new(1)?.random(dist, rng, host.whole_mut())?;
        self.upload(host.as_slice(), y)
    }

    fn bernoulli_stream(
        &self,
        p: f32,
        state: SliceMut<'_, CudaBuffer<R>>,
        y: SliceMut<'_, CudaBuffer<R>>,
    ) -> Result<()> {
        const OP: &str = "bernoulli_stream";
        check_probability(OP, p)?;
        let state = Self::write(OP, "state", &state, Extent::AtLeast(philox::STATE_LEN))?;
        let n = y.len;
        let y = Self::write(OP, "y", &y, Extent::Whole)?;
        let groups = philox::group_count(OP, n)? as usize;
        self.grid_stride(OP, groups).run(kernels::BernoulliStream {
            n: int(OP, n)?,
            groups: int(OP, groups)?,
            p,
            state: state.as_read(),
            y,
        })?;
        self.grid_stride(OP, 1)
            .run(kernels::AdvanceStream { n: 1, state })
    }

    fn gemm(
        &self,
        g: &Gemm,
        a: Slice<'_, CudaBuffer<R>>,
        b: Slice<'_, CudaBuffer<R>>,
        c: SliceMut<'_, CudaBuffer<R>>,
    ) -> Result<()> {
        const OP: &str = "gemm";
        let [a_span, b_span, c_span] = gemm_spans(
            OP,
            (g.trans_a, g.trans_b),
            (g.m, g.n, g.k),
            (g.lda, g.ldb, g.ldc),
        )?;
        let a = Self::read(OP, "a", a, Extent::AtLeast(a_span))?;
        let b = Self::read(OP, "b", b, Extent::AtLeast(b_span))?;
        let c = Self::write(OP, "c", &c, Extent::AtLeast(c_span))?;
        if g.m == 0 || g.n == 0 {
            return Ok(());
        }
        // Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: swap the operands.
        let product = runtime::Gemm {
            trans_a: g.trans_b,
            trans_b: g.trans_a,
            m: int(OP, g.n)?,
            n: int(OP, g.m)?,
            k: int(OP, g.k)?,
            alpha: g.alpha,
            a: b,
            lda: int(OP, g.ldb)?,
            b: a,
            ldb: int(OP, g.lda)?,
            beta: g.beta,
            c,
            ldc: int(OP, g.ldc)?,
        };
        // SAFETY: the ranges were checked above.
        unsafe { self.inner.runtime.gemm(OP, &product) }
    }

    fn gemv(
        &self,
        g: &Gemv,
        a: Slice<'_, CudaBuffer<R>>,
        x: Slice<'_, CudaBuffer<R>>,
        y: SliceMut<'_, CudaBuffer<R>>,
    ) -> Result<()> {
        const OP: &str = "gemv";
        let (x_len, y_len) = match g.trans {
            Transpose::NoTrans => (g.n, g.m),
            Transpose::Trans => (g.m, g.n),
        };
        let a = Self::read(OP, "a", a, Extent::AtLeast(g.m * g.n))?;
        let x = Self::read(OP, "x", x, Extent::AtLeast(x_len))?;
        let y = Self::write(OP, "y", &y, Extent::AtLeast(y_len))?;
        if y_len == 0 {
            return Ok(());
        }
        // Row-major m x n A is column-major n x m A^T: flip the transpose.
        let trans = match g.trans {
            Transpose::NoTrans => Transpose::Trans,
            Transpose::Trans => Transpose::NoTrans,
        };
        let product = runtime::Gemv {
            trans,
            m: int(OP, g.n)?,
            n: int(OP, g.m)?,
            alpha: g.alpha,
            a,
            lda: int(OP, g.n.max(1))?,
            x,
            beta: g.beta,
            y,
        };
        // SAFETY: the ranges were checked above.
        unsafe { self.inner.runtime.gemv(OP, &product) }
    }

    fn axpby(
        &self,
        alpha: Scalar<'_, CudaBuffer<R>>,
        x: Slice<'_, CudaBuffer<R>>,
        beta: f32,
        y: SliceMut<'_, CudaBuffer<R>>,
    ) -> Result<()> {
        const OP: &str = "axpby";
        let n = y.len;
        let (alpha_at, alpha) = Self::scalar(OP, "alpha", alpha)?;
        let y = Self::write(OP, "y", &y, Extent::Whole)?;
        let x = Self::read(OP, "x", x, Extent::Exactly(n))?;
        let grid = self.grid_stride(OP, n);
        let n = int(OP, n)?;
        // Upstream's axpy, without the multiply by 1 (the CPU op's form, to the bit).
        if alpha_at == ReadPtr::NULL && beta == 1.0 {
            return grid.run(kernels::Axpy { n, alpha, x, y });
        }
        grid.run(kernels::Axpby {
            n,
            alpha_at,
            alpha,
            x,
            beta,
            y,
        })
    }

    fn scale(
        &self,
        alpha: Scalar<'_, CudaBuffer<R>>,
        x: Src<'_, CudaBuffer<R>>,
        y: SliceMut<'_, CudaBuffer<R>>,
    ) -> Result<()> {
        const OP: &str = "scale";
        let (alpha_at, alpha) = Self::scalar(OP, "alpha", alpha)?;
        self.map1(OP, x, y, |n, x, y| kernels::Scale {
            n,
            alpha_at,
            alpha,
            x,
            y,
        })
    }

    fn unary(
        &self,
        op: Unary,
        x: Src<'_, CudaBuffer<R>>,
        mut y: SliceMut<'_, CudaBuffer<R>>,
    ) -> Result<()> {
        const OP: &str = "unary";
        match op {
            Unary::Exp => self.map1(OP, x, y, |n, x, y| kernels::ExpKernel { n, x, y }),
            Unary::Log => self.map1(OP, x, y, |n, x, y| kernels::LogKernel { n, x, y }),
            Unary::Abs => self.map1(OP, x, y, |n, x, y| kernels::AbsKernel { n, x, y }),
            Unary::Sqr => self.map1(OP, x, y, |n, x, y| kernels::Sqr { n, x, y }),
            Unary::Sqrt => self.map1(OP, x, y, |n, x, y| kernels::SqrtKernel { n, x, y }),
            Unary::Sign => self.map1(OP, x, y, |n, x, y| kernels::Sign { n, x, y }),
            Unary::Powx(p) => self.map1(OP, x, y, |n, x, y| kernels::Powx { n, x, p, y }),
            Unary::Power {
                power,
                scale,
                shift,
            } => self.map1(OP, x, y, |n, x, y| kernels::Power {
                n,
                x,
                power,
                scale,
                shift,
                y,
            }),
            Unary::AddScalar(value) => {
                // The kernel adds in place: an input elsewhere is copied to the output first.
                if let Src::Slice(x) = x {
                    self.map1(OP, x.src(), y.reborrow(), |n, x, y| kernels::Copy {
                        n,
                        x,
                        y,
                    })?;
                }
                self.map1(OP, Src::InPlace, y, |n, _, y| kernels::AddScalar {
                    n,
                    value,
                    y,
                })
            }
            Unary::LabelMask { ignore_label } => {
                let (has_ignore, ignore_label) = Self::ignore_args(ignore_label);
                self.map1(OP, x, y, |n, label, y| kernels::LabelMask {
                    n,
                    label,
                    has_ignore,
                    ignore_label,
                    y,
                })
            }
            Unary::Threshold(threshold) => self.map1(OP, x, y, |n, x, y| kernels::Threshold {
                n,
                threshold,
                x,
                y,
            }),
        }
    }

    fn binary(
        &self,
        op: Binary,
        a: Src<'_, CudaBuffer<R>>,
        b: Src<'_, CudaBuffer<R>>,
        y: SliceMut<'_, CudaBuffer<R>>,
    ) -> Result<()> {
        const OP: &str = "binary";
        let ab = (a, b);
        match op {
            Binary::Add => self.map2(OP, ab, y, |n, a, b, y| kernels::Add { n, a, b, y }),
            Binary::Sub => self.map2(OP, ab, y, |n, a, b, y| kernels::Sub { n, a, b, y }),
            Binary::Mul => self.map2(OP, ab, y, |n, a, b, y| kernels::Mul { n, a, b, y }),
            Binary::Div => self.map2(OP, ab, y, |n, a, b, y| kernels::DivKernel { n, a, b, y }),
            Binary::Max => self.map2(OP, ab, y, |n, a, b, y| kernels::MaxKernel { n, a, b, y }),
            // A slope per element: PReLU's kernel with every element its own channel.
            Binary::PRelu => self.map2(OP, ab, y, |n, x, slope, y| kernels::PreluForward {
                outer: 1,
                channels: n,
                inner: 1,
                slope,
                x,
                y,
            }),
            Binary::SigmoidCrossEntropy => self.map2(OP, ab, y, |n, x, t, y| {
                kernels::SigmoidCrossEntropy { n, x, t, y }
            }),
        }
    }

    fn activation_forward(
        &self,
        f: Activation,
        x: Src<'_, CudaBuffer<R>>,
        y: SliceMut<'_, CudaBuffer<R>>,
    ) -> Result<()> {
        const OP: &str = "activation_forward";
        match f {
            Activation::Relu { slope } => {
                self.map1(OP, x, y, |n, x, y| kernels::ReluForward { n, slope, x, y })
            }
            Activation::Sigmoid => {
                self.map1(OP, x, y, |n, x, y| kernels::SigmoidForward { n, x, y })
            }
            Activation::Tanh => self.map1(OP, x, y, |n, x, y| kernels::TanhForward { n, x, y }),
            Activation::Elu { alpha } => {
                self.map1(OP, x, y, |n, x, y| kernels::EluForward { n, alpha, x, y })
            }
            Activation::Bnll => self.map1(OP, x, y, |n, x, y| kernels::BnllForward { n, x, y }),
            Activation::Clip { min, max } => self.map1(OP, x, y, |n, x, y| kernels::ClipForward {
                n,
                min,
                max,
                x,
                y,
            }),
            Activation::Swish { beta } => {
                self.map1(OP, x, y, |n, x, y| kernels::SwishForward { n, beta, x, y })
            }
        }
    }

    fn activation_backward(
        &self,
        f: Activation,
        x: Slice<'_, CudaBuffer<R>>,
        y: Slice<'_, CudaBuffer<R>>,
        dy: Src<'_, CudaBuffer<R>>,
        dx: SliceMut<'_, CudaBuffer<R>>,
    ) -> Result<()> {
        const OP: &str = "activation_backward";
        let n = dx.len;
        let dx = Self::write(OP, "dx", &dx, Extent::Whole)?;
        let dy = Self::src(OP, "dy", dy, Extent::Exactly(n), dx)?;
        // Only the forward values the activation reads are checked, as on the CPU.
        let x = || Self::read(OP, "x", x, Extent::Exactly(n));
        let y = || Self::read(OP, "y", y, Extent::Exactly(n));
        let grid = self.grid_stride(OP, n);
        let n = int(OP, n)?;
        match f {
            Activation::Relu { slope } => grid.run(kernels::ReluBackward {
                n,
                slope,
                x: x()?,
                dy,
                dx,
            }),
            Activation::Sigmoid => grid.run(kernels::SigmoidBackward { n, y: y()?, dy, dx }),
            Activation::Tanh => grid.run(kernels::TanhBackward { n, y: y()?, dy, dx }),
            Activation::Elu { alpha } => grid.run(kernels::EluBackward {
                n,
                alpha,
                x: x()?,
                y: y()?,
                dy,
                dx,
            }),
            Activation::Bnll => grid.run(kernels::BnllBackward { n, x: x()?, dy, dx }),
            Activation::Clip { min, max } => grid.run(kernels::ClipBackward {
                n,
                min,
                max,
                x: x()?,
                dy,
                dx,
            }),
            Activation::Swish { beta } => grid.run(kernels::SwishBackward {
                n,
                beta,
                x: x()?,
                y: y()?,
                dy,
                dx,
            }),
        }
    }

    fn reduce(&self, r: Reduction<'_, CudaBuffer<R>>, x: Slice<'_, CudaBuffer<R>>) -> Result<f32> {
        const OP: &str = "reduce";
        let n = x.len;
        let x = Self::read(OP, "x", x, Extent::Whole)?;
        // `kind` as `reduce_partial` takes it: 0 sum, 1 |x|, 2 x^2, 3 x b.
        let (kind, b) = match r {
            Reduction::Sum => (0, x),
            Reduction::Asum => (1, x),
            Reduction::Sumsq => (2, x),
            Reduction::Dot(b) => (3, Self::read(OP, "b", b, Extent::Exactly(n))?),
        };
        self.reduce_to_host(OP, kind, n, (x, b))
    }

    fn sum_into(
        &self,
        alpha: f32,
        x: Slice<'_, CudaBuffer<R>>,
        y: SliceMut<'_, CudaBuffer<R>>,
    ) -> Result<()> {
        const OP: &str = "sum_into";
        let n = x.len;
        let x = Self::read(OP, "x", x, Extent::Whole)?;
        let y = Self::write(OP, "y", &y, Extent::AtLeast(1))?;
        let partials = self.partials(OP)?;
        self.reduce_into(OP, 0, n, (x, x), (alpha, y), &partials)
    }

    fn reduce_over_axis(
        &self,
        r: AxisReduction<'_, CudaBuffer<R>>,
        axis: Axis,
        x: Slice<'_, CudaBuffer<R>>,
        y: SliceMut<'_, CudaBuffer<R>>,
    ) -> Result<()> {
        const OP: &str = "reduce_over_axis";
        let (len, positions) = (axis.len(OP)?, axis.reduced_len(OP)?);
        let x = Self::read(OP, "x", x, Extent::AtLeast(len))?;
        let y = Self::write(OP, "y", &y, Extent::AtLeast(positions))?;
        let grid = self.grid_stride(OP, positions);
        let [outer, dim, inner] = Self::axis_ints(OP, axis)?;
        match r {
            AxisReduction::Max => grid.run(kernels::MaxOverAxis {
                outer,
                dim,
                inner,
                x,
                y,
            }),
            AxisReduction::Sum => grid.run(kernels::SumOverAxis {
                outer,
                dim,
                inner,
                x,
                y,
            }),
            AxisReduction::Dot(b) => grid.run(kernels::DotOverAxis {
                outer,
                dim,
                inner,
                a: x,
                b: Self::read(OP, "b", b, Extent::AtLeast(len))?,
                y,
            }),
        }
    }

    fn broadcast(
        &self,
        op: Binary,
        how: Broadcast,
        axis: Axis,
        v: Slice<'_, CudaBuffer<R>>,
        x: Src<'_, CudaBuffer<R>>,
        y: SliceMut<'_, CudaBuffer<R>>,
    ) -> Result<()> {
        const OP: &str = "broadcast";
        let len = axis.len(OP)?;
        let v_len = match how {
            Broadcast::OverAxis => axis.reduced_len(OP)?,
            Broadcast::PerChannel => axis.dim,
        };
        let v = Self::read(OP, "v", v, Extent::AtLeast(v_len))?;
        let y = Self::write(OP, "y", &y, Extent::AtLeast(len))?;
        let in_place = matches!(x, Src::InPlace);
        let x = Self::src(OP, "x", x, Extent::AtLeast(len), y)?;
        let grid = self.grid_stride(OP, len);
        let [outer, dim, inner] = Self::axis_ints(OP, axis)?;
        // The layers' broadcasts (softmax, bias, Scale, PReLU) have kernels of their own; the
        // rest share one per way of spreading `v`.
        match (op, how) {
            (Binary::Sub, Broadcast::OverAxis) if in_place => grid.run(kernels::SubAlongAxis {
                outer,
                dim,
                inner,
                v,
                y,
            }),
            (Binary::Div, Broadcast::OverAxis) if in_place => grid.run(kernels::DivAlongAxis {
                outer,
                dim,
                inner,
                v,
                y,
            }),
            (Binary::Add, Broadcast::PerChannel) if in_place => grid.run(kernels::AddPerChannel {
                outer,
                channels: dim,
                inner,
                v,
                y,
            }),
            (Binary::Mul, Broadcast::PerChannel) => grid.run(kernels::MulPerChannel {
                outer,
                channels: dim,
                inner,
                v,
                x,
                y,
            }),
            (Binary::PRelu, Broadcast::PerChannel) => grid.run(kernels::PreluForward {
                outer,
                channels: dim,
                inner,
                slope: v,
                x,
                y,
            }),
            (_, Broadcast::OverAxis) => grid.run(kernels::BroadcastOverAxis {
                op: binary_code(op),
                outer,
                dim,
                inner,
                v,
                x,
                y,
            }),
            (_, Broadcast::PerChannel) => grid.run(kernels::BroadcastPerChannel {
                op: binary_code(op),
                outer,
                channels: dim,
                inner,
                v,
                x,
                y,
            }),
        }
    }

    fn sum_per_channel(
        &self,
        axis: Axis,
        alpha: f32,
        x: Slice<'_, CudaBuffer<R>>,
        beta: f32,
        y: SliceMut<'_, CudaBuffer<R>>,
    ) -> Result<()> {
        const OP: &str = "sum_per_channel";
        let x = Self::read(OP, "x", x, Extent::AtLeast(axis.len(OP)?))?;
        let y = Self::write(OP, "y", &y, Extent::AtLeast(axis.dim))?;
        // A long channel summed by one thread would leave the device idle (AlexNet's conv1
        // bias gradient: 96 threads of 774400 values): split it into parts first.
        let positions = axis.reduced_len(OP)?;
        let parts = (CHANNEL_PARTIALS / axis.dim.max(1)).min(positions / VALUES_PER_PART);
        let (per_channel, per_part) = (
            self.grid_stride(OP, axis.dim),
            self.grid_stride(OP, axis.dim * parts),
        );
        let partial_len = axis.dim * parts;
        let [outer, channels, inner] = Self::axis_ints(OP, axis)?;
        if parts < 2 {
            return per_channel.run(kernels::SumPerChannel {
                outer,
                channels,
                inner,
                alpha,
                x,
                beta,
                y,
            });
        }
        int(OP, positions)?; // the kernel counts a channel's positions in an int
        let partials = self.partials(OP)?;
        let partial = Self::scratch(OP, "partial", &partials, 0, partial_len)?;
        let parts = int(OP, parts)?;
        per_part.run(kernels::SumPerChannelPartial {
            outer,
            channels,
            inner,
            parts,
            x,
            partial,
        })?;
        per_channel.run(kernels::SumPerChannelParts {
            channels,
            parts,
            partial: partial.as_read(),
            alpha,
            beta,
            y,
        })
    }

    fn im2col(
        &self,
        g: &ConvGeom,
        im: Slice<'_, CudaBuffer<R>>,
        col: SliceMut<'_, CudaBuffer<R>>,
    ) -> Result<()> {
        const OP: &str = "im2col";
        g.validate(OP)?;
        let im = Self::read(OP, "im", im, Extent::AtLeast(g.im_len()))?;
        let col = Self::write(OP, "col", &col, Extent::AtLeast(g.col_len()))?;
        let call = conv_call!(kernels::Im2col, ConvInts::new(OP, g)?, { im, col });
        self.grid_stride(OP, g.channels * g.out_h() * g.out_w())
            .run(call)
    }

    fn col2im(
        &self,
        g: &ConvGeom,
        col: Slice<'_, CudaBuffer<R>>,
        im: SliceMut<'_, CudaBuffer<R>>,
    ) -> Result<()> {
        const OP: &str = "col2im";
        g.validate(OP)?;
        let col = Self::read(OP, "col", col, Extent::AtLeast(g.col_len()))?;
        let im = Self::write(OP, "im", &im, Extent::AtLeast(g.im_len()))?;
        let call = conv_call!(kernels::Col2im, ConvInts::new(OP, g)?, { col, im });
        self.grid_stride(OP, g.im_len()).run(call)
    }

    fn pool_forward(
        &self,
        g: &PoolGeom,
        p: Pooling<SliceMut<'_, CudaBuffer<R>>>,
        x: Slice<'_, CudaBuffer<R>>,
        y: SliceMut<'_, CudaBuffer<R>>,
    ) -> Result<()> {
        const OP: &str = "pool_forward";
        g.validate(OP)?;
        let x = Self::read(OP, "x", x, Extent::AtLeast(g.in_len()))?;
        let y = Self::write(OP, "y", &y, Extent::AtLeast(g.out_len()))?;
        let ints = PoolInts::new(OP, g)?;
        let grid = self.grid_stride(OP, g.out_len());
        match p {
            Pooling::Max { mask } => {
                let mask = Self::write(OP, "mask", &mask, Extent::AtLeast(g.out_len()))?;
                grid.run(pool_call!(kernels::MaxPoolForward, ints, { x, y, mask }))
            }
            Pooling::Ave => grid.run(pool_call!(kernels::AvePoolForward, ints, { x, y })),
        }
    }

    fn pool_backward(
        &self,
        g: &PoolGeom,
        p: Pooling<Slice<'_, CudaBuffer<R>>>,
        dy: Slice<'_, CudaBuffer<R>>,
        dx: SliceMut<'_, CudaBuffer<R>>,
    ) -> Result<()> {
        const OP: &str = "pool_backward";
        g.validate(OP)?;
        let dy = Self::read(OP, "dy", dy, Extent::AtLeast(g.out_len()))?;
        let dx = Self::write(OP, "dx", &dx, Extent::AtLeast(g.in_len()))?;
        let ints = PoolInts::new(OP, g)?;
        let grid = self.grid_stride(OP, g.in_len());
        match p {
            Pooling::Max { mask } => {
                let mask = Self::read(OP, "mask", mask, Extent::AtLeast(g.out_len()))?;
                grid.run(pool_call!(kernels::MaxPoolBackward, ints, { dy, mask, dx }))
            }
            Pooling::Ave => grid.run(pool_call!(kernels::AvePoolBackward, ints, { dy, dx })),
        }
    }

    fn lrn_across_forward(
        &self,
        g: &LrnGeom,
        x: Slice<'_, CudaBuffer<R>>,
        scale: SliceMut<'_, CudaBuffer<R>>,
        y: SliceMut<'_, CudaBuffer<R>>,
    ) -> Result<()> {
        const OP: &str = "lrn_across_forward";
        g.validate(OP)?;
        let len = Extent::AtLeast(g.len());
        let x = Self::read(OP, "x", x, len)?;
        let scale = Self::write(OP, "scale", &scale, len)?;
        let y = Self::write(OP, "y", &y, len)?;
        self.grid_stride(OP, g.num * g.spatial)
            .run(kernels::LrnAcrossForward {
                num: int(OP, g.num)?,
                channels: int(OP, g.channels)?,
                spatial: int(OP, g.spatial)?,
                size: int(OP, g.size)?,
                alpha: g.alpha,
                beta: g.beta,
                k: g.k,
                x,
                scale,
                y,
            })
    }

    fn lrn_across_backward(
        &self,
        g: &LrnGeom,
        forward: LrnSaved<'_, CudaBuffer<R>>,
        dy: Slice<'_, CudaBuffer<R>>,
        dx: SliceMut<'_, CudaBuffer<R>>,
    ) -> Result<()> {
        const OP: &str = "lrn_across_backward";
        g.validate(OP)?;
        let len = Extent::AtLeast(g.len());
        let x = Self::read(OP, "x", forward.x, len)?;
        let y = Self::read(OP, "y", forward.y, len)?;
        let scale = Self::read(OP, "scale", forward.scale, len)?;
        let dy = Self::read(OP, "dy", dy, len)?;
        let dx = Self::write(OP, "dx", &dx, len)?;
        self.grid_stride(OP, g.num * g.spatial)
            .run(kernels::LrnAcrossBackward {
                num: int(OP, g.num)?,
                channels: int(OP, g.channels)?,
                spatial: int(OP, g.spatial)?,
                size: int(OP, g.size)?,
                alpha: g.alpha,
                beta: g.beta,
                x,
                y,
                scale,
                dy,
                dx,
            })
    }

    fn prelu_backward(
        &self,
        axis: Axis,
        slope: Slice<'_, CudaBuffer<R>>,
        x: Slice<'_, CudaBuffer<R>>,
        dy: Src<'_, CudaBuffer<R>>,
        dx: SliceMut<'_, CudaBuffer<R>>,
    ) -> Result<()> {
        const OP: &str = "prelu_backward";
        let len = axis.len(OP)?;
        let slope = Self::read(OP, "slope", slope, Extent::AtLeast(axis.dim))?;
        let x = Self::read(OP, "x", x, Extent::AtLeast(len))?;
        let dx = Self::write(OP, "dx", &dx, Extent::AtLeast(len))?;
        let dy = Self::src(OP, "dy", dy, Extent::AtLeast(len), dx)?;
        let grid = self.grid_stride(OP, len);
        let [outer, channels, inner] = Self::axis_ints(OP, axis)?;
        grid.run(kernels::PreluBackward {
            outer,
            channels,
            inner,
            slope,
            x,
            dy,
            dx,
        })
    }

    fn prelu_slope_grad(
        &self,
        axis: Axis,
        x: Slice<'_, CudaBuffer<R>>,
        dy: Slice<'_, CudaBuffer<R>>,
        dslope: SliceMut<'_, CudaBuffer<R>>,
    ) -> Result<()> {
        const OP: &str = "prelu_slope_grad";
        let len = axis.len(OP)?;
        let x = Self::read(OP, "x", x, Extent::AtLeast(len))?;
        let dy = Self::read(OP, "dy", dy, Extent::AtLeast(len))?;
        let dslope = Self::write(OP, "dslope", &dslope, Extent::AtLeast(axis.dim))?;
        let grid = self.grid_stride(OP, axis.dim);
        let [outer, channels, inner] = Self::axis_ints(OP, axis)?;
        grid.run(kernels::PreluSlopeGrad {
            outer,
            channels,
            inner,
            x,
            dy,
            dslope,
        })
    }

    fn copy_2d(
        &self,
        block: &Block,
        x: Slice<'_, CudaBuffer<R>>,
        y: SliceMut<'_, CudaBuffer<R>>,
    ) -> Result<()> {
        const OP: &str = "copy_2d";
        let Block {
            rows,
            cols,
            x_stride,
            y_stride,
        } = *block;
        let Some((x_span, y_span)) = copy_2d_spans(OP, (rows, cols), x_stride, y_stride)? else {
            return Ok(());
        };
        let x = Self::read(OP, "x", x, Extent::AtLeast(x_span))?;
        let y = Self::write(OP, "y", &y, Extent::AtLeast(y_span))?;
        self.grid_stride(OP, rows * cols).run(kernels::Copy2d {
            rows: int(OP, rows)?,
            cols: int(OP, cols)?,
            x,
            x_stride: int(OP, x_stride)?,
            y,
            y_stride: int(OP, y_stride)?,
        })
    }

    fn running_argmax(
        &self,
        index: f32,
        x: Slice<'_, CudaBuffer<R>>,
        y: SliceMut<'_, CudaBuffer<R>>,
        mask: SliceMut<'_, CudaBuffer<R>>,
    ) -> Result<()> {
        const OP: &str = "running_argmax";
        let n = y.len;
        let y = Self::write(OP, "y", &y, Extent::Whole)?;
        let x = Self::read(OP, "x", x, Extent::Exactly(n))?;
        let mask = Self::write(OP, "mask", &mask, Extent::Exactly(n))?;
        self.grid_stride(OP, n).run(kernels::RunningArgmax {
            n: int(OP, n)?,
            index,
            x,
            y,
            mask,
        })
    }

    fn copy_where_eq(
        &self,
        mask: Slice<'_, CudaBuffer<R>>,
        value: f32,
        x: Slice<'_, CudaBuffer<R>>,
        y: SliceMut<'_, CudaBuffer<R>>,
    ) -> Result<()> {
        const OP: &str = "copy_where_eq";
        let n = y.len;
        let y = Self::write(OP, "y", &y, Extent::Whole)?;
        let mask = Self::read(OP, "mask", mask, Extent::Exactly(n))?;
        let x = Self::read(OP, "x", x, Extent::Exactly(n))?;
        self.grid_stride(OP, n).run(kernels::CopyWhereEq {
            n: int(OP, n)?,
            mask,
            value,
            x,
            y,
        })
    }

    fn top_k_over_axis(
        &self,
        axis: Axis,
        k: usize,
        x: Slice<'_, CudaBuffer<R>>,
        [values, indices]: [SliceMut<'_, CudaBuffer<R>>; 2],
    ) -> Result<()> {
        const OP: &str = "top_k_over_axis";
        if k > axis.dim {
            let message = format!("k = {k} exceeds the axis length {}", axis.dim);
            return Err(invalid(OP, message));
        }
        if axis.dim > 1 << 24 {
            let message = format!("an axis of {} is too long for exact f32 indices", axis.dim);
            return Err(invalid(OP, message));
        }
        let x = Self::read(OP, "x", x, Extent::AtLeast(axis.len(OP)?))?;
        let top_len = Extent::AtLeast(Axis { dim: k, ..axis }.len(OP)?);
        let values = Self::write(OP, "values", &values, top_len)?;
        let indices = Self::write(OP, "indices", &indices, top_len)?;
        if k == 0 {
            return Ok(());
        }
        let grid = self.grid_stride(OP, axis.reduced_len(OP)?);
        let [outer, dim, inner] = Self::axis_ints(OP, axis)?;
        grid.run(kernels::TopKOverAxis {
            outer,
            dim,
            inner,
            k: int(OP, k)?,
            x,
            values,
            indices,
        })
    }

    fn gather_at_label(
        &self,
        axis: Axis,
        x: Slice<'_, CudaBuffer<R>>,
        labels: Labels<'_, CudaBuffer<R>>,
        fill: f32,
        y: SliceMut<'_, CudaBuffer<R>>,
    ) -> Result<()> {
        const OP: &str = "gather_at_label";
        let positions = axis.reduced_len(OP)?;
        let x = Self::read(OP, "x", x, Extent::AtLeast(axis.len(OP)?))?;
        let (label, error) = self.labels(OP, labels, positions, axis.dim)?;
        let y = Self::write(OP, "y", &y, Extent::AtLeast(positions))?;
        let (has_ignore, ignore_label) = Self::ignore_args(labels.ignore_label);
        let grid = self.grid_stride(OP, positions);
        let [outer, dim, inner] = Self::axis_ints(OP, axis)?;
        grid.run(kernels::GatherAtLabel {
            outer,
            dim,
            inner,
            x,
            label,
            has_ignore,
            ignore_label,
            fill,
            y,
            error,
        })
    }

    fn affine_at_label(
        &self,
        axis: Axis,
        labels: Labels<'_, CudaBuffer<R>>,
        (alpha, beta): (f32, f32),
        y: SliceMut<'_, CudaBuffer<R>>,
    ) -> Result<()> {
        const OP: &str = "affine_at_label";
        let positions = axis.reduced_len(OP)?;
        let (label, error) = self.labels(OP, labels, positions, axis.dim)?;
        let y = Self::write(OP, "y", &y, Extent::AtLeast(axis.len(OP)?))?;
        let (has_ignore, ignore_label) = Self::ignore_args(labels.ignore_label);
        let grid = self.grid_stride(OP, positions);
        let [outer, dim, inner] = Self::axis_ints(OP, axis)?;
        grid.run(kernels::AffineAtLabel {
            outer,
            dim,
            inner,
            label,
            has_ignore,
            ignore_label,
            alpha,
            beta,
            y,
            error,
        })
    }

    fn top_k_hits(
        &self,
        axis: Axis,
        top_k: usize,
        x: Slice<'_, CudaBuffer<R>>,
        labels: Labels<'_, CudaBuffer<R>>,
        y: SliceMut<'_, CudaBuffer<R>>,
    ) -> Result<()> {
        const OP: &str = "top_k_hits";
        let positions = axis.reduced_len(OP)?;
        let x = Self::read(OP, "x", x, Extent::AtLeast(axis.len(OP)?))?;
        let (label, error) = self.labels(OP, labels, positions, axis.dim)?;
        let y = Self::write(OP, "y", &y, Extent::AtLeast(positions))?;
        let (has_ignore, ignore_label) = Self::ignore_args(labels.ignore_label);
        let grid = self.grid_stride(OP, positions);
        let top_k = int(OP, top_k.min(axis.dim))?;
        let [outer, dim, inner] = Self::axis_ints(OP, axis)?;
        grid.run(kernels::TopKHits {
            outer,
            dim,
            inner,
            top_k,
            x,
            label,
            has_ignore,
            ignore_label,
            y,
            error,
        })
    }

    fn sum_by_label(
        &self,
        x: Slice<'_, CudaBuffer<R>>,
        labels: Labels<'_, CudaBuffer<R>>,
        y: SliceMut<'_, CudaBuffer<R>>,
    ) -> Result<()> {
        const OP: &str = "sum_by_label";
        let (n, classes) = (x.len, y.len);
        let x = Self::read(OP, "x", x, Extent::Whole)?;
        let label = Self::read(OP, "labels", labels.values, Extent::Exactly(n))?;
        let y = Self::write(OP, "y", &y, Extent::Whole)?;
        self.check_labels(OP, labels.values, labels.ignore_label, classes)?;
        let (has_ignore, ignore_label) = Self::ignore_args(labels.ignore_label);
        self.grid_stride(OP, classes).run(kernels::SumByLabel {
            n: int(OP, n)?,
            classes: int(OP, classes)?,
            x,
            label,
            has_ignore,
            ignore_label,
            y,
        })
    }
}

impl<R: DeviceRuntime> CudaBackend<R> {
    /// The first `positions` labels of `labels`, checked (see
    /// [`Self::check_labels_unless_capturing`]), and the address of the kernels' report of a
    /// bad label.
    fn labels(
        &self,
        op: &'static str,
        labels: Labels<'_, CudaBuffer<R>>,
        positions: usize,
        dim: usize,
    ) -> Result<(ReadPtr, WritePtr)> {
        let label = Self::read(op, "labels", labels.values, Extent::AtLeast(positions))?;
        let values = labels.values.part(0, positions);
        let error = self.check_labels_unless_capturing(op, values, labels.ignore_label, dim)?;
        Ok((label, error))
    }
}
