//! The op set: [`Backend`] for [`CudaBackend`], each op one kernel launch (or a cuBLAS call)
//! through the helpers of the [parent module](super).

use super::*;
use crate::backend::cuda::runtime::{Gemm, Gemv};
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

/// An op `y = f(x)` by the kernel `$kernel (n, x, y)`.
macro_rules! unary {
    ($name:ident, $kernel:ident) => {
        fn $name(
            &self,
            n: usize,
            x: Src<'_, CudaBuffer<R>>,
            y: &mut CudaBuffer<R>,
            y_off: usize,
        ) -> Result<()> {
            self.map1(stringify!($name), n, x, y, y_off, |n, x, y| {
                kernels::$kernel { n, x, y }
            })
        }
    };
}

/// An op `y = f(a, b)` by the kernel `$kernel (n, a, b, y)`.
macro_rules! binary {
    ($name:ident, $kernel:ident) => {
        fn $name(
            &self,
            n: usize,
            a: Src<'_, CudaBuffer<R>>,
            b: Src<'_, CudaBuffer<R>>,
            y: &mut CudaBuffer<R>,
            y_off: usize,
        ) -> Result<()> {
            self.map2(stringify!($name), n, (a, b), y, y_off, |n, a, b, y| {
                kernels::$kernel { n, a, b, y }
            })
        }
    };
}

impl<R: DeviceRuntime> Backend for CudaBackend<R> {
    type Buffer = CudaBuffer<R>;

    fn name(&self) -> &'static str {
        "CUDA"
    }

    fn alloc(&self, len: usize) -> Result<CudaBuffer<R>> {
        // An allocation inside a capture would become graph-owned memory.
        self.host_guard("alloc")?;
        Self::alloc_on(&self.inner.runtime, "alloc", len)
    }

    fn upload(&self, src: &[f32], dst: &mut CudaBuffer<R>, dst_off: usize) -> Result<()> {
        const OP: &str = "upload";
        let p = Self::write(OP, "dst", dst, dst_off, src.len())?;
        self.host_guard(OP)?;
        if src.is_empty() {
            return Ok(());
        }
        // SAFETY: the range was checked.
        unsafe { self.inner.runtime.upload(OP, src, p) }
    }

    fn download(&self, src: &CudaBuffer<R>, src_off: usize, dst: &mut [f32]) -> Result<()> {
        const OP: &str = "download";
        let p = Self::read(OP, "src", src, src_off, dst.len())?;
        self.host_guard(OP)?;
        if dst.is_empty() {
            return Ok(());
        }
        // SAFETY: the range was checked.
        unsafe { self.inner.runtime.download(OP, p, dst) }
    }

    fn copy(
        &self,
        n: usize,
        x: &CudaBuffer<R>,
        x_off: usize,
        y: &mut CudaBuffer<R>,
        y_off: usize,
    ) -> Result<()> {
        self.map1("copy", n, Src::At(x, x_off), y, y_off, |n, x, y| {
            kernels::Copy { n, x, y }
        })
    }

    fn synchronize(&self) -> Result<()> {
        self.host_guard("synchronize")?;
        self.inner.runtime.synchronize("synchronize")
    }

    fn has_fused_updates(&self) -> bool {
        true
    }

    fn fused_update(
        &self,
        rule: &UpdateRule,
        n: usize,
        step: Scalar<'_, CudaBuffer<R>>,
        g: &mut CudaBuffer<R>,
        history: &mut CudaBuffer<R>,
        history2: Option<&mut CudaBuffer<R>>,
    ) -> Result<()> {
        const OP: &str = "fused_update";
        let (step_at, step) = Self::scalar(OP, "step", step)?;
        let g = Self::write(OP, "g", g, 0, n)?;
        let h = Self::write(OP, "history", history, 0, n)?;
        let second_history = || match history2.as_deref() {
            Some(h2) => Self::write(OP, "history2", h2, 0, n),
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

    fn can_capture(&self) -> bool {
        true
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

    fn set(&self, n: usize, value: f32, y: &mut CudaBuffer<R>, y_off: usize) -> Result<()> {
        const OP: &str = "set";
        let y = Self::write(OP, "y", y, y_off, n)?;
        self.grid_stride(OP, n).run(kernels::Set {
            n: int(OP, n)?,
            value,
            y,
        })
    }

    fn add_scalar(&self, n: usize, value: f32, y: &mut CudaBuffer<R>, y_off: usize) -> Result<()> {
        const OP: &str = "add_scalar";
        let y = Self::write(OP, "y", y, y_off, n)?;
        self.grid_stride(OP, n).run(kernels::AddScalar {
            n: int(OP, n)?,
            value,
            y,
        })
    }

    // The fills draw on the host with the CPU backend's generator and upload: only the
    // distribution is specified, and this keeps a net's initialisation identical across
    // backends.
    fn rng_uniform(
        &self,
        n: usize,
        lo: f32,
        hi: f32,
        rng: &mut Rng,
        y: &mut CudaBuffer<R>,
        y_off: usize,
    ) -> Result<()> {
        self.host_guard("rng_uniform")?;
        let mut host = crate::backend::CpuBuffer::from_vec(vec![0.0; n]);
        crate::backend::CpuBackend::new(1)?.rng_uniform(n, lo, hi, rng, &mut host, 0)?;
        self.upload(host.as_slice(), y, y_off)
    }

    fn rng_gaussian(
        &self,
        n: usize,
        mean: f32,
        std: f32,
        rng: &mut Rng,
        y: &mut CudaBuffer<R>,
        y_off: usize,
    ) -> Result<()> {
        self.host_guard("rng_gaussian")?;
        let mut host = crate::backend::CpuBuffer::from_vec(vec![0.0; n]);
        crate::backend::CpuBackend::new(1)?.rng_gaussian(n, mean, std, rng, &mut host, 0)?;
        self.upload(host.as_slice(), y, y_off)
    }

    fn rng_bernoulli_stream(
        &self,
        n: usize,
        p: f32,
        state: &mut CudaBuffer<R>,
        state_off: usize,
        y: &mut CudaBuffer<R>,
        y_off: usize,
    ) -> Result<()> {
        const OP: &str = "rng_bernoulli_stream";
        check_probability(OP, p)?;
        let groups = philox::group_count(OP, n)? as usize;
        let state = Self::write(OP, "state", state, state_off, philox::STATE_LEN)?;
        let y = Self::write(OP, "y", y, y_off, n)?;
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

    fn rng_bernoulli(
        &self,
        n: usize,
        p: f32,
        rng: &mut Rng,
        y: &mut CudaBuffer<R>,
        y_off: usize,
    ) -> Result<()> {
        self.host_guard("rng_bernoulli")?;
        let mut host = crate::backend::CpuBuffer::from_vec(vec![0.0; n]);
        crate::backend::CpuBackend::new(1)?.rng_bernoulli(n, p, rng, &mut host, 0)?;
        self.upload(host.as_slice(), y, y_off)
    }

    fn gemm(
        &self,
        trans_a: Transpose,
        trans_b: Transpose,
        m: usize,
        n: usize,
        k: usize,
        alpha: f32,
        a: &CudaBuffer<R>,
        a_off: usize,
        lda: usize,
        b: &CudaBuffer<R>,
        b_off: usize,
        ldb: usize,
        beta: f32,
        c: &mut CudaBuffer<R>,
        c_off: usize,
        ldc: usize,
    ) -> Result<()> {
        const OP: &str = "gemm";
        let [a_span, b_span, c_span] =
            gemm_spans(OP, (trans_a, trans_b), (m, n, k), (lda, ldb, ldc))?;
        if m == 0 || n == 0 {
            return Ok(());
        }
        let a = Self::read(OP, "a", a, a_off, a_span)?;
        let b = Self::read(OP, "b", b, b_off, b_span)?;
        let c = Self::write(OP, "c", c, c_off, c_span)?;
        // Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: swap the operands.
        let product = Gemm {
            trans_a: trans_b,
            trans_b: trans_a,
            m: int(OP, n)?,
            n: int(OP, m)?,
            k: int(OP, k)?,
            alpha,
            a: b,
            lda: int(OP, ldb)?,
            b: a,
            ldb: int(OP, lda)?,
            beta,
            c,
            ldc: int(OP, ldc)?,
        };
        // SAFETY: the ranges were checked above.
        unsafe { self.inner.runtime.gemm(OP, &product) }
    }

    fn gemv(
        &self,
        trans_a: Transpose,
        m: usize,
        n: usize,
        alpha: f32,
        a: &CudaBuffer<R>,
        a_off: usize,
        x: &CudaBuffer<R>,
        x_off: usize,
        beta: f32,
        y: &mut CudaBuffer<R>,
        y_off: usize,
    ) -> Result<()> {
        const OP: &str = "gemv";
        let (xl, yl) = if trans_a == Transpose::NoTrans {
            (n, m)
        } else {
            (m, n)
        };
        if yl == 0 {
            return Ok(());
        }
        let a = Self::read(OP, "a", a, a_off, m * n)?;
        let x = Self::read(OP, "x", x, x_off, xl)?;
        let y = Self::write(OP, "y", y, y_off, yl)?;
        // Row-major m x n A is column-major n x m A^T: flip the transpose.
        let trans = match trans_a {
            Transpose::NoTrans => Transpose::Trans,
            Transpose::Trans => Transpose::NoTrans,
        };
        let product = Gemv {
            trans,
            m: int(OP, n)?,
            n: int(OP, m)?,
            alpha,
            a,
            lda: int(OP, n.max(1))?,
            x,
            beta,
            y,
        };
        // SAFETY: the ranges were checked above.
        unsafe { self.inner.runtime.gemv(OP, &product) }
    }

    fn axpy(
        &self,
        n: usize,
        alpha: f32,
        x: &CudaBuffer<R>,
        x_off: usize,
        y: &mut CudaBuffer<R>,
        y_off: usize,
    ) -> Result<()> {
        const OP: &str = "axpy";
        let y = Self::write(OP, "y", y, y_off, n)?;
        let x = Self::read(OP, "x", x, x_off, n)?;
        self.grid_stride(OP, n).run(kernels::Axpy {
            n: int(OP, n)?,
            alpha,
            x,
            y,
        })
    }

    fn axpby<'a>(
        &self,
        n: usize,
        alpha: impl Into<Scalar<'a, CudaBuffer<R>>>,
        x: &CudaBuffer<R>,
        x_off: usize,
        beta: f32,
        y: &mut CudaBuffer<R>,
        y_off: usize,
    ) -> Result<()> {
        const OP: &str = "axpby";
        let (alpha_at, alpha) = Self::scalar(OP, "alpha", alpha.into())?;
        let y = Self::write(OP, "y", y, y_off, n)?;
        let x = Self::read(OP, "x", x, x_off, n)?;
        self.grid_stride(OP, n).run(kernels::Axpby {
            n: int(OP, n)?,
            alpha_at,
            alpha,
            x,
            beta,
            y,
        })
    }

    fn scale<'a>(
        &self,
        n: usize,
        alpha: impl Into<Scalar<'a, CudaBuffer<R>>>,
        x: Src<'_, CudaBuffer<R>>,
        y: &mut CudaBuffer<R>,
        y_off: usize,
    ) -> Result<()> {
        const OP: &str = "scale";
        let (alpha_at, alpha) = Self::scalar(OP, "alpha", alpha.into())?;
        let y = Self::write(OP, "y", y, y_off, n)?;
        let x = Self::src(OP, "x", x, n, y)?;
        self.grid_stride(OP, n).run(kernels::Scale {
            n: int(OP, n)?,
            alpha_at,
            alpha,
            x,
            y,
        })
    }

    binary!(add, Add);
    binary!(sub, Sub);
    binary!(mul, Mul);
    binary!(div, DivKernel);
    binary!(max, MaxKernel);

    fn powx(
        &self,
        n: usize,
        x: Src<'_, CudaBuffer<R>>,
        p: f32,
        y: &mut CudaBuffer<R>,
        y_off: usize,
    ) -> Result<()> {
        const OP: &str = "powx";
        let y = Self::write(OP, "y", y, y_off, n)?;
        let x = Self::src(OP, "x", x, n, y)?;
        self.grid_stride(OP, n).run(kernels::Powx {
            n: int(OP, n)?,
            x,
            p,
            y,
        })
    }

    fn power(
        &self,
        n: usize,
        x: Src<'_, CudaBuffer<R>>,
        power: f32,
        scale: f32,
        shift: f32,
        y: &mut CudaBuffer<R>,
        y_off: usize,
    ) -> Result<()> {
        const OP: &str = "power";
        let y = Self::write(OP, "y", y, y_off, n)?;
        let x = Self::src(OP, "x", x, n, y)?;
        self.grid_stride(OP, n).run(kernels::Power {
            n: int(OP, n)?,
            x,
            power,
            scale,
            shift,
            y,
        })
    }

    unary!(exp, ExpKernel);
    unary!(log, LogKernel);
    unary!(abs, AbsKernel);
    unary!(sqr, Sqr);
    unary!(sqrt, SqrtKernel);
    unary!(sign, Sign);

    fn relu_forward(
        &self,
        n: usize,
        slope: f32,
        x: Src<'_, CudaBuffer<R>>,
        y: &mut CudaBuffer<R>,
        y_off: usize,
    ) -> Result<()> {
        self.map1("relu_forward", n, x, y, y_off, |n, x, y| {
            kernels::ReluForward { n, slope, x, y }
        })
    }

    fn relu_backward(
        &self,
        n: usize,
        slope: f32,
        x: &CudaBuffer<R>,
        x_off: usize,
        dy: Src<'_, CudaBuffer<R>>,
        dx: &mut CudaBuffer<R>,
        dx_off: usize,
    ) -> Result<()> {
        self.backward(
            "relu_backward",
            n,
            (x, x_off),
            dy,
            (dx, dx_off),
            |n, fwd, dy, dx| kernels::ReluBackward {
                n,
                slope,
                x: fwd,
                dy,
                dx,
            },
        )
    }

    unary!(sigmoid_forward, SigmoidForward);

    fn sigmoid_backward(
        &self,
        n: usize,
        y: &CudaBuffer<R>,
        y_off: usize,
        dy: Src<'_, CudaBuffer<R>>,
        dx: &mut CudaBuffer<R>,
        dx_off: usize,
    ) -> Result<()> {
        self.backward(
            "sigmoid_backward",
            n,
            (y, y_off),
            dy,
            (dx, dx_off),
            |n, fwd, dy, dx| kernels::SigmoidBackward { n, y: fwd, dy, dx },
        )
    }

    unary!(tanh_forward, TanhForward);

    fn tanh_backward(
        &self,
        n: usize,
        y: &CudaBuffer<R>,
        y_off: usize,
        dy: Src<'_, CudaBuffer<R>>,
        dx: &mut CudaBuffer<R>,
        dx_off: usize,
    ) -> Result<()> {
        self.backward(
            "tanh_backward",
            n,
            (y, y_off),
            dy,
            (dx, dx_off),
            |n, fwd, dy, dx| kernels::TanhBackward { n, y: fwd, dy, dx },
        )
    }

    fn elu_forward(
        &self,
        n: usize,
        alpha: f32,
        x: Src<'_, CudaBuffer<R>>,
        y: &mut CudaBuffer<R>,
        y_off: usize,
    ) -> Result<()> {
        self.map1("elu_forward", n, x, y, y_off, |n, x, y| {
            kernels::EluForward { n, alpha, x, y }
        })
    }

    fn elu_backward(
        &self,
        n: usize,
        alpha: f32,
        x: &CudaBuffer<R>,
        x_off: usize,
        y: &CudaBuffer<R>,
        y_off: usize,
        dy: Src<'_, CudaBuffer<R>>,
        dx: &mut CudaBuffer<R>,
        dx_off: usize,
    ) -> Result<()> {
        const OP: &str = "elu_backward";
        let dx = Self::write(OP, "dx", dx, dx_off, n)?;
        let x = Self::read(OP, "x", x, x_off, n)?;
        let y = Self::read(OP, "y", y, y_off, n)?;
        let dy = Self::src(OP, "dy", dy, n, dx)?;
        self.grid_stride(OP, n).run(kernels::EluBackward {
            n: int(OP, n)?,
            alpha,
            x,
            y,
            dy,
            dx,
        })
    }

    unary!(bnll_forward, BnllForward);

    fn bnll_backward(
        &self,
        n: usize,
        x: &CudaBuffer<R>,
        x_off: usize,
        dy: Src<'_, CudaBuffer<R>>,
        dx: &mut CudaBuffer<R>,
        dx_off: usize,
    ) -> Result<()> {
        self.backward(
            "bnll_backward",
            n,
            (x, x_off),
            dy,
            (dx, dx_off),
            |n, fwd, dy, dx| kernels::BnllBackward { n, x: fwd, dy, dx },
        )
    }

    fn sum(&self, n: usize, x: &CudaBuffer<R>, x_off: usize) -> Result<f32> {
        self.reduce("sum", 0, n, (x, x_off), None)
    }

    fn sum_into(
        &self,
        n: usize,
        alpha: f32,
        x: &CudaBuffer<R>,
        x_off: usize,
        y: &mut CudaBuffer<R>,
        y_off: usize,
    ) -> Result<()> {
        const OP: &str = "sum_into";
        let x = Self::read(OP, "x", x, x_off, n)?;
        let y = Self::write(OP, "y", y, y_off, 1)?;
        let partials = self.partials(OP)?;
        self.reduce_into(OP, 0, n, (x, x), (alpha, y), &partials)
    }

    fn asum(&self, n: usize, x: &CudaBuffer<R>, x_off: usize) -> Result<f32> {
        self.reduce("asum", 1, n, (x, x_off), None)
    }

    fn sumsq(&self, n: usize, x: &CudaBuffer<R>, x_off: usize) -> Result<f32> {
        self.reduce("sumsq", 2, n, (x, x_off), None)
    }

    fn dot(
        &self,
        n: usize,
        x: &CudaBuffer<R>,
        x_off: usize,
        y: &CudaBuffer<R>,
        y_off: usize,
    ) -> Result<f32> {
        self.reduce("dot", 3, n, (x, x_off), Some((y, y_off)))
    }

    fn max_over_axis(
        &self,
        outer: usize,
        dim: usize,
        inner: usize,
        x: &CudaBuffer<R>,
        x_off: usize,
        y: &mut CudaBuffer<R>,
        y_off: usize,
    ) -> Result<()> {
        const OP: &str = "max_over_axis";
        let x = Self::read(OP, "x", x, x_off, outer * dim * inner)?;
        let y = Self::write(OP, "y", y, y_off, outer * inner)?;
        let grid = self.grid_stride(OP, outer * inner);
        let [outer, dim, inner] = Self::axis_ints(OP, outer, dim, inner)?;
        grid.run(kernels::MaxOverAxis {
            outer,
            dim,
            inner,
            x,
            y,
        })
    }

    fn sum_over_axis(
        &self,
        outer: usize,
        dim: usize,
        inner: usize,
        x: &CudaBuffer<R>,
        x_off: usize,
        y: &mut CudaBuffer<R>,
        y_off: usize,
    ) -> Result<()> {
        const OP: &str = "sum_over_axis";
        let x = Self::read(OP, "x", x, x_off, outer * dim * inner)?;
        let y = Self::write(OP, "y", y, y_off, outer * inner)?;
        let grid = self.grid_stride(OP, outer * inner);
        let [outer, dim, inner] = Self::axis_ints(OP, outer, dim, inner)?;
        grid.run(kernels::SumOverAxis {
            outer,
            dim,
            inner,
            x,
            y,
        })
    }

    fn dot_over_axis(
        &self,
        outer: usize,
        dim: usize,
        inner: usize,
        a: &CudaBuffer<R>,
        a_off: usize,
        b: &CudaBuffer<R>,
        b_off: usize,
        y: &mut CudaBuffer<R>,
        y_off: usize,
    ) -> Result<()> {
        const OP: &str = "dot_over_axis";
        let a = Self::read(OP, "a", a, a_off, outer * dim * inner)?;
        let b = Self::read(OP, "b", b, b_off, outer * dim * inner)?;
        let y = Self::write(OP, "y", y, y_off, outer * inner)?;
        let grid = self.grid_stride(OP, outer * inner);
        let [outer, dim, inner] = Self::axis_ints(OP, outer, dim, inner)?;
        grid.run(kernels::DotOverAxis {
            outer,
            dim,
            inner,
            a,
            b,
            y,
        })
    }

    fn sub_along_axis(
        &self,
        outer: usize,
        dim: usize,
        inner: usize,
        v: &CudaBuffer<R>,
        v_off: usize,
        y: &mut CudaBuffer<R>,
        y_off: usize,
    ) -> Result<()> {
        const OP: &str = "sub_along_axis";
        let v = Self::read(OP, "v", v, v_off, outer * inner)?;
        let y = Self::write(OP, "y", y, y_off, outer * dim * inner)?;
        let grid = self.grid_stride(OP, outer * dim * inner);
        let [outer, dim, inner] = Self::axis_ints(OP, outer, dim, inner)?;
        grid.run(kernels::SubAlongAxis {
            outer,
            dim,
            inner,
            v,
            y,
        })
    }

    fn div_along_axis(
        &self,
        outer: usize,
        dim: usize,
        inner: usize,
        v: &CudaBuffer<R>,
        v_off: usize,
        y: &mut CudaBuffer<R>,
        y_off: usize,
    ) -> Result<()> {
        const OP: &str = "div_along_axis";
        let v = Self::read(OP, "v", v, v_off, outer * inner)?;
        let y = Self::write(OP, "y", y, y_off, outer * dim * inner)?;
        let grid = self.grid_stride(OP, outer * dim * inner);
        let [outer, dim, inner] = Self::axis_ints(OP, outer, dim, inner)?;
        grid.run(kernels::DivAlongAxis {
            outer,
            dim,
            inner,
            v,
            y,
        })
    }

    fn add_per_channel(
        &self,
        outer: usize,
        channels: usize,
        inner: usize,
        v: &CudaBuffer<R>,
        v_off: usize,
        y: &mut CudaBuffer<R>,
        y_off: usize,
    ) -> Result<()> {
        const OP: &str = "add_per_channel";
        let len = outer * channels * inner;
        let v = Self::read(OP, "v", v, v_off, channels)?;
        let y = Self::write(OP, "y", y, y_off, len)?;
        let grid = self.grid_stride(OP, len);
        let [outer, channels, inner] = Self::axis_ints(OP, outer, channels, inner)?;
        grid.run(kernels::AddPerChannel {
            outer,
            channels,
            inner,
            v,
            y,
        })
    }

    fn mul_per_channel(
        &self,
        outer: usize,
        channels: usize,
        inner: usize,
        v: &CudaBuffer<R>,
        v_off: usize,
        x: Src<'_, CudaBuffer<R>>,
        y: &mut CudaBuffer<R>,
        y_off: usize,
    ) -> Result<()> {
        const OP: &str = "mul_per_channel";
        let len = outer * channels * inner;
        let v = Self::read(OP, "v", v, v_off, channels)?;
        let y = Self::write(OP, "y", y, y_off, len)?;
        let x = Self::src(OP, "x", x, len, y)?;
        let grid = self.grid_stride(OP, len);
        let [outer, channels, inner] = Self::axis_ints(OP, outer, channels, inner)?;
        grid.run(kernels::MulPerChannel {
            outer,
            channels,
            inner,
            v,
            x,
            y,
        })
    }

    fn sum_per_channel(
        &self,
        outer: usize,
        channels: usize,
        inner: usize,
        alpha: f32,
        x: &CudaBuffer<R>,
        x_off: usize,
        beta: f32,
        y: &mut CudaBuffer<R>,
        y_off: usize,
    ) -> Result<()> {
        const OP: &str = "sum_per_channel";
        let x = Self::read(OP, "x", x, x_off, outer * channels * inner)?;
        let y = Self::write(OP, "y", y, y_off, channels)?;
        // A long channel summed by one thread would leave the device idle (AlexNet's conv1
        // bias gradient: 96 threads of 774400 values): split it into parts first.
        let parts = (CHANNEL_PARTIALS / channels.max(1)).min(outer * inner / VALUES_PER_PART);
        let (per_channel, per_part) = (
            self.grid_stride(OP, channels),
            self.grid_stride(OP, channels * parts),
        );
        let (positions, partial_len) = (outer * inner, channels * parts);
        let [outer, channels, inner] = Self::axis_ints(OP, outer, channels, inner)?;
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
        let partial = Self::write(OP, "partial", &partials, 0, partial_len)?;
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
        im: &CudaBuffer<R>,
        im_off: usize,
        col: &mut CudaBuffer<R>,
        col_off: usize,
    ) -> Result<()> {
        const OP: &str = "im2col";
        g.validate(OP)?;
        let im = Self::read(OP, "im", im, im_off, g.im_len())?;
        let col = Self::write(OP, "col", col, col_off, g.col_len())?;
        let call = conv_call!(kernels::Im2col, ConvInts::new(OP, g)?, { im, col });
        self.grid_stride(OP, g.channels * g.out_h() * g.out_w())
            .run(call)
    }

    fn col2im(
        &self,
        g: &ConvGeom,
        col: &CudaBuffer<R>,
        col_off: usize,
        im: &mut CudaBuffer<R>,
        im_off: usize,
    ) -> Result<()> {
        const OP: &str = "col2im";
        g.validate(OP)?;
        let col = Self::read(OP, "col", col, col_off, g.col_len())?;
        let im = Self::write(OP, "im", im, im_off, g.im_len())?;
        let call = conv_call!(kernels::Col2im, ConvInts::new(OP, g)?, { col, im });
        self.grid_stride(OP, g.im_len()).run(call)
    }

    fn max_pool_forward(
        &self,
        g: &PoolGeom,
        x: &CudaBuffer<R>,
        x_off: usize,
        y: &mut CudaBuffer<R>,
        y_off: usize,
        mask: &mut CudaBuffer<R>,
        mask_off: usize,
    ) -> Result<()> {
        const OP: &str = "max_pool_forward";
        g.validate(OP)?;
        let x = Self::read(OP, "x", x, x_off, g.in_len())?;
        let y = Self::write(OP, "y", y, y_off, g.out_len())?;
        let mask = Self::write(OP, "mask", mask, mask_off, g.out_len())?;
        let call = pool_call!(kernels::MaxPoolForward, PoolInts::new(OP, g)?, { x, y, mask });
        self.grid_stride(OP, g.out_len()).run(call)
    }

    fn max_pool_backward(
        &self,
        g: &PoolGeom,
        dy: &CudaBuffer<R>,
        dy_off: usize,
        mask: &CudaBuffer<R>,
        mask_off: usize,
        dx: &mut CudaBuffer<R>,
        dx_off: usize,
    ) -> Result<()> {
        const OP: &str = "max_pool_backward";
        g.validate(OP)?;
        let dy = Self::read(OP, "dy", dy, dy_off, g.out_len())?;
        let mask = Self::read(OP, "mask", mask, mask_off, g.out_len())?;
        let dx = Self::write(OP, "dx", dx, dx_off, g.in_len())?;
        let call = pool_call!(kernels::MaxPoolBackward, PoolInts::new(OP, g)?, { dy, mask, dx });
        self.grid_stride(OP, g.in_len()).run(call)
    }

    fn ave_pool_forward(
        &self,
        g: &PoolGeom,
        x: &CudaBuffer<R>,
        x_off: usize,
        y: &mut CudaBuffer<R>,
        y_off: usize,
    ) -> Result<()> {
        const OP: &str = "ave_pool_forward";
        g.validate(OP)?;
        let x = Self::read(OP, "x", x, x_off, g.in_len())?;
        let y = Self::write(OP, "y", y, y_off, g.out_len())?;
        let call = pool_call!(kernels::AvePoolForward, PoolInts::new(OP, g)?, { x, y });
        self.grid_stride(OP, g.out_len()).run(call)
    }

    fn ave_pool_backward(
        &self,
        g: &PoolGeom,
        dy: &CudaBuffer<R>,
        dy_off: usize,
        dx: &mut CudaBuffer<R>,
        dx_off: usize,
    ) -> Result<()> {
        const OP: &str = "ave_pool_backward";
        g.validate(OP)?;
        let dy = Self::read(OP, "dy", dy, dy_off, g.out_len())?;
        let dx = Self::write(OP, "dx", dx, dx_off, g.in_len())?;
        let call = pool_call!(kernels::AvePoolBackward, PoolInts::new(OP, g)?, { dy, dx });
        self.grid_stride(OP, g.in_len()).run(call)
    }

    fn lrn_across_forward(
        &self,
        g: &LrnGeom,
        x: &CudaBuffer<R>,
        x_off: usize,
        scale: &mut CudaBuffer<R>,
        scale_off: usize,
        y: &mut CudaBuffer<R>,
        y_off: usize,
    ) -> Result<()> {
        const OP: &str = "lrn_across_forward";
        g.validate(OP)?;
        let x = Self::read(OP, "x", x, x_off, g.len())?;
        let scale = Self::write(OP, "scale", scale, scale_off, g.len())?;
        let y = Self::write(OP, "y", y, y_off, g.len())?;
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
        x: &CudaBuffer<R>,
        x_off: usize,
        y: &CudaBuffer<R>,
        y_off: usize,
        scale: &CudaBuffer<R>,
        scale_off: usize,
        dy: &CudaBuffer<R>,
        dy_off: usize,
        dx: &mut CudaBuffer<R>,
        dx_off: usize,
    ) -> Result<()> {
        const OP: &str = "lrn_across_backward";
        g.validate(OP)?;
        let x = Self::read(OP, "x", x, x_off, g.len())?;
        let y = Self::read(OP, "y", y, y_off, g.len())?;
        let scale = Self::read(OP, "scale", scale, scale_off, g.len())?;
        let dy = Self::read(OP, "dy", dy, dy_off, g.len())?;
        let dx = Self::write(OP, "dx", dx, dx_off, g.len())?;
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

    fn prelu_forward(
        &self,
        outer: usize,
        channels: usize,
        inner: usize,
        slope: &CudaBuffer<R>,
        slope_off: usize,
        x: Src<'_, CudaBuffer<R>>,
        y: &mut CudaBuffer<R>,
        y_off: usize,
    ) -> Result<()> {
        const OP: &str = "prelu_forward";
        let len = outer * channels * inner;
        let slope = Self::read(OP, "slope", slope, slope_off, channels)?;
        let y = Self::write(OP, "y", y, y_off, len)?;
        let x = Self::src(OP, "x", x, len, y)?;
        let grid = self.grid_stride(OP, len);
        let [outer, channels, inner] = Self::axis_ints(OP, outer, channels, inner)?;
        grid.run(kernels::PreluForward {
            outer,
            channels,
            inner,
            slope,
            x,
            y,
        })
    }

    fn prelu_backward(
        &self,
        outer: usize,
        channels: usize,
        inner: usize,
        slope: &CudaBuffer<R>,
        slope_off: usize,
        x: &CudaBuffer<R>,
        x_off: usize,
        dy: Src<'_, CudaBuffer<R>>,
        dx: &mut CudaBuffer<R>,
        dx_off: usize,
    ) -> Result<()> {
        const OP: &str = "prelu_backward";
        let len = outer * channels * inner;
        let slope = Self::read(OP, "slope", slope, slope_off, channels)?;
        let x = Self::read(OP, "x", x, x_off, len)?;
        let dx = Self::write(OP, "dx", dx, dx_off, len)?;
        let dy = Self::src(OP, "dy", dy, len, dx)?;
        let grid = self.grid_stride(OP, len);
        let [outer, channels, inner] = Self::axis_ints(OP, outer, channels, inner)?;
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
        outer: usize,
        channels: usize,
        inner: usize,
        x: &CudaBuffer<R>,
        x_off: usize,
        dy: &CudaBuffer<R>,
        dy_off: usize,
        dslope: &mut CudaBuffer<R>,
        dslope_off: usize,
    ) -> Result<()> {
        const OP: &str = "prelu_slope_grad";
        let len = outer * channels * inner;
        let x = Self::read(OP, "x", x, x_off, len)?;
        let dy = Self::read(OP, "dy", dy, dy_off, len)?;
        let dslope = Self::write(OP, "dslope", dslope, dslope_off, channels)?;
        let grid = self.grid_stride(OP, channels);
        let [outer, channels, inner] = Self::axis_ints(OP, outer, channels, inner)?;
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
        rows: usize,
        cols: usize,
        x: &CudaBuffer<R>,
        x_off: usize,
        x_stride: usize,
        y: &mut CudaBuffer<R>,
        y_off: usize,
        y_stride: usize,
    ) -> Result<()> {
        const OP: &str = "copy_2d";
        let Some((x_span, y_span)) = copy_2d_spans(OP, (rows, cols), x_stride, y_stride)? else {
            return Ok(());
        };
        let x = Self::read(OP, "x", x, x_off, x_span)?;
        let y = Self::write(OP, "y", y, y_off, y_span)?;
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
        n: usize,
        index: f32,
        x: &CudaBuffer<R>,
        x_off: usize,
        y: &mut CudaBuffer<R>,
        y_off: usize,
        mask: &mut CudaBuffer<R>,
        mask_off: usize,
    ) -> Result<()> {
        const OP: &str = "running_argmax";
        let x = Self::read(OP, "x", x, x_off, n)?;
        let y = Self::write(OP, "y", y, y_off, n)?;
        let mask = Self::write(OP, "mask", mask, mask_off, n)?;
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
        n: usize,
        mask: &CudaBuffer<R>,
        mask_off: usize,
        value: f32,
        x: &CudaBuffer<R>,
        x_off: usize,
        y: &mut CudaBuffer<R>,
        y_off: usize,
    ) -> Result<()> {
        const OP: &str = "copy_where_eq";
        let mask = Self::read(OP, "mask", mask, mask_off, n)?;
        let x = Self::read(OP, "x", x, x_off, n)?;
        let y = Self::write(OP, "y", y, y_off, n)?;
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
        outer: usize,
        dim: usize,
        inner: usize,
        k: usize,
        x: &CudaBuffer<R>,
        x_off: usize,
        values: &mut CudaBuffer<R>,
        values_off: usize,
        indices: &mut CudaBuffer<R>,
        indices_off: usize,
    ) -> Result<()> {
        const OP: &str = "top_k_over_axis";
        if k > dim {
            return Err(invalid(
                OP,
                format!("k = {k} exceeds the axis length {dim}"),
            ));
        }
        let x = Self::read(OP, "x", x, x_off, outer * dim * inner)?;
        let values = Self::write(OP, "values", values, values_off, outer * k * inner)?;
        let indices = Self::write(OP, "indices", indices, indices_off, outer * k * inner)?;
        let grid = self.grid_stride(OP, outer * inner);
        let [outer, dim, inner] = Self::axis_ints(OP, outer, dim, inner)?;
        let call = kernels::TopKOverAxis {
            outer,
            dim,
            inner,
            k: int(OP, k)?,
            x,
            values,
            indices,
        };
        if k == 0 {
            return Ok(());
        }
        grid.run(call)
    }

    fn label_mask(
        &self,
        n: usize,
        label: &CudaBuffer<R>,
        label_off: usize,
        ignore_label: Option<i32>,
        y: &mut CudaBuffer<R>,
        y_off: usize,
    ) -> Result<()> {
        const OP: &str = "label_mask";
        let label = Self::read(OP, "label", label, label_off, n)?;
        let y = Self::write(OP, "y", y, y_off, n)?;
        let (has_ignore, ignore_label) = Self::ignore_args(ignore_label);
        self.grid_stride(OP, n).run(kernels::LabelMask {
            n: int(OP, n)?,
            label,
            has_ignore,
            ignore_label,
            y,
        })
    }

    fn gather_at_label(
        &self,
        outer: usize,
        dim: usize,
        inner: usize,
        x: &CudaBuffer<R>,
        x_off: usize,
        label: &CudaBuffer<R>,
        label_off: usize,
        ignore_label: Option<i32>,
        fill: f32,
        y: &mut CudaBuffer<R>,
        y_off: usize,
    ) -> Result<()> {
        const OP: &str = "gather_at_label";
        let x = Self::read(OP, "x", x, x_off, outer * dim * inner)?;
        let y = Self::write(OP, "y", y, y_off, outer * inner)?;
        let error = self.check_labels_unless_capturing(
            OP,
            label,
            label_off,
            outer * inner,
            ignore_label,
            dim,
        )?;
        let label = Self::read(OP, "label", label, label_off, outer * inner)?;
        let (has_ignore, ignore_label) = Self::ignore_args(ignore_label);
        let grid = self.grid_stride(OP, outer * inner);
        let [outer, dim, inner] = Self::axis_ints(OP, outer, dim, inner)?;
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
        outer: usize,
        dim: usize,
        inner: usize,
        label: &CudaBuffer<R>,
        label_off: usize,
        ignore_label: Option<i32>,
        alpha: f32,
        beta: f32,
        y: &mut CudaBuffer<R>,
        y_off: usize,
    ) -> Result<()> {
        const OP: &str = "affine_at_label";
        let y = Self::write(OP, "y", y, y_off, outer * dim * inner)?;
        let error = self.check_labels_unless_capturing(
            OP,
            label,
            label_off,
            outer * inner,
            ignore_label,
            dim,
        )?;
        let label = Self::read(OP, "label", label, label_off, outer * inner)?;
        let (has_ignore, ignore_label) = Self::ignore_args(ignore_label);
        let grid = self.grid_stride(OP, outer * inner);
        let [outer, dim, inner] = Self::axis_ints(OP, outer, dim, inner)?;
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
        outer: usize,
        dim: usize,
        inner: usize,
        top_k: usize,
        x: &CudaBuffer<R>,
        x_off: usize,
        label: &CudaBuffer<R>,
        label_off: usize,
        ignore_label: Option<i32>,
        y: &mut CudaBuffer<R>,
        y_off: usize,
    ) -> Result<()> {
        const OP: &str = "top_k_hits";
        let x = Self::read(OP, "x", x, x_off, outer * dim * inner)?;
        let y = Self::write(OP, "y", y, y_off, outer * inner)?;
        let error = self.check_labels_unless_capturing(
            OP,
            label,
            label_off,
            outer * inner,
            ignore_label,
            dim,
        )?;
        let label = Self::read(OP, "label", label, label_off, outer * inner)?;
        let (has_ignore, ignore_label) = Self::ignore_args(ignore_label);
        let grid = self.grid_stride(OP, outer * inner);
        let top_k = int(OP, top_k.min(dim))?;
        let [outer, dim, inner] = Self::axis_ints(OP, outer, dim, inner)?;
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
        n: usize,
        classes: usize,
        x: &CudaBuffer<R>,
        x_off: usize,
        label: &CudaBuffer<R>,
        label_off: usize,
        ignore_label: Option<i32>,
        y: &mut CudaBuffer<R>,
        y_off: usize,
    ) -> Result<()> {
        const OP: &str = "sum_by_label";
        let x = Self::read(OP, "x", x, x_off, n)?;
        let y = Self::write(OP, "y", y, y_off, classes)?;
        self.check_labels(OP, label, label_off, n, ignore_label, classes)?;
        let label = Self::read(OP, "label", label, label_off, n)?;
        let (has_ignore, ignore_label) = Self::ignore_args(ignore_label);
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

    fn sigmoid_cross_entropy(
        &self,
        n: usize,
        x: &CudaBuffer<R>,
        x_off: usize,
        t: &CudaBuffer<R>,
        t_off: usize,
        y: &mut CudaBuffer<R>,
        y_off: usize,
    ) -> Result<()> {
        const OP: &str = "sigmoid_cross_entropy";
        let x = Self::read(OP, "x", x, x_off, n)?;
        let t = Self::read(OP, "t", t, t_off, n)?;
        let y = Self::write(OP, "y", y, y_off, n)?;
        self.grid_stride(OP, n).run(kernels::SigmoidCrossEntropy {
            n: int(OP, n)?,
            x,
            t,
            y,
        })
    }
}
