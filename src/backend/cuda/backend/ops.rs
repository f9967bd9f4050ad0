//! The op set: [`Backend`] for [`CudaBackend`], each op one kernel launch (or a cuBLAS call)
//! through the helpers of the [parent module](super).

use super::*;
use crate::backend::{copy_2d_spans, gemm_spans};

/// A captured CUDA graph, instantiated, with the backend whose buffers it addresses.
struct CudaReplay {
    graph: CudaGraph,
    /// Keeps the context, the stream and the kernels' modules alive as long as the graph.
    backend: CudaBackend,
}

// SAFETY: a CUDA graph may be used from any thread as long as calls on it are serialised
// (NVIDIA's graph thread-safety rules); `replay` takes `&mut self`, and nothing else reaches
// the graph, so moving it between threads is sound. It is not `Sync`.
unsafe impl Send for CudaReplay {}

impl CapturedWork for CudaReplay {
    /// Launches the graph and waits for it: the labels its kernels met are checked then, as
    /// the host checks them before each op outside a graph. (The caller reads the loss next,
    /// which waits anyway.)
    fn replay(&mut self) -> Result<()> {
        self.graph.launch().map_err(|e| dev_err("replay", e))?;
        self.backend.take_label_error("replay")
    }
}

macro_rules! unary {
    ($name:ident, $kernel:literal) => {
        fn $name(
            &self,
            n: usize,
            x: Src<'_, CudaBuffer>,
            y: &mut CudaBuffer,
            y_off: usize,
        ) -> Result<()> {
            self.map1(stringify!($name), $kernel, n, x, y, y_off)
        }
    };
}

macro_rules! binary {
    ($name:ident, $kernel:literal) => {
        fn $name(
            &self,
            n: usize,
            a: Src<'_, CudaBuffer>,
            b: Src<'_, CudaBuffer>,
            y: &mut CudaBuffer,
            y_off: usize,
        ) -> Result<()> {
            self.map2(stringify!($name), $kernel, n, a, b, y, y_off)
        }
    };
}

mod trait_impl;

/// The ops in the `(buffer, offset)` form the launch code takes; [`trait_impl`] checks the
/// views of [`Backend`]'s ops and calls these. (Their long argument lists go when the launch
/// code takes views itself.)
#[allow(clippy::too_many_arguments)]
impl CudaBackend {
    fn alloc(&self, len: usize) -> Result<CudaBuffer> {
        // An allocation inside a capture would become graph-owned memory.
        self.host_guard("alloc")?;
        Self::alloc_on(&self.inner.stream, len)
    }

    fn upload(&self, src: &[f32], dst: &mut CudaBuffer, dst_off: usize) -> Result<()> {
        const OP: &str = "upload";
        let Arg::P(p) = Self::ptr(OP, "dst", dst, dst_off, src.len())? else {
            unreachable!()
        };
        self.host_guard(OP)?;
        if src.is_empty() {
            return Ok(());
        }
        if src.len() >= STAGED_MIN {
            return self.upload_staged(src, p);
        }
        // SAFETY: the range was checked; for pageable host memory the source has been read
        // when the call returns, and the stream orders the copy before later ops.
        unsafe { cudarc::driver::result::memcpy_htod_async(p, src, self.inner.stream.cu_stream()) }
            .map_err(|e| dev_err(OP, e))
    }

    fn download(&self, src: &CudaBuffer, src_off: usize, dst: &mut [f32]) -> Result<()> {
        const OP: &str = "download";
        let Arg::P(p) = Self::ptr(OP, "src", src, src_off, dst.len())? else {
            unreachable!()
        };
        self.host_guard(OP)?;
        if dst.is_empty() {
            return Ok(());
        }
        // SAFETY: the range was checked; the stream is synchronised before `dst` is used.
        unsafe { cudarc::driver::result::memcpy_dtoh_async(dst, p, self.inner.stream.cu_stream()) }
            .map_err(|e| dev_err(OP, e))?;
        self.synchronize()
    }

    fn copy(
        &self,
        n: usize,
        x: &CudaBuffer,
        x_off: usize,
        y: &mut CudaBuffer,
        y_off: usize,
    ) -> Result<()> {
        self.map1("copy", "copy", n, Src::At(x, x_off), y, y_off)
    }

    fn synchronize(&self) -> Result<()> {
        self.host_guard("synchronize")?;
        self.inner
            .stream
            .synchronize()
            .map_err(|e| dev_err("synchronize", e))
    }

    fn fused_update(
        &self,
        rule: &UpdateRule,
        n: usize,
        step: Scalar<'_, CudaBuffer>,
        g: &mut CudaBuffer,
        history: &mut CudaBuffer,
        history2: Option<&mut CudaBuffer>,
    ) -> Result<()> {
        const OP: &str = "fused_update";
        let [step_at, step] = Self::scalar(OP, "step", step)?;
        let gp = Self::ptr(OP, "g", g, 0, n)?;
        let hp = Self::ptr(OP, "history", history, 0, n)?;
        let second_history = || match history2.as_deref() {
            Some(h2) => Self::ptr(OP, "history2", h2, 0, n),
            None => Err(invalid(
                OP,
                format!("{} needs a second history", rule.type_name()),
            )),
        };
        // (n, g, h, [h2,] the rule's hyper-parameters, step_at, step): kernels/solver.cu.
        let mut args = vec![Arg::I(int(OP, n)?), gp, hp];
        let kernel = match *rule {
            UpdateRule::Sgd { momentum } => {
                args.push(Arg::F(momentum));
                "sgd_update"
            }
            UpdateRule::Nesterov { momentum } => {
                args.push(Arg::F(momentum));
                "nesterov_update"
            }
            UpdateRule::AdaGrad { delta } => {
                args.push(Arg::F(delta));
                "adagrad_update"
            }
            UpdateRule::RmsProp { delta, rms_decay } => {
                args.extend([Arg::F(rms_decay), Arg::F(delta)]);
                "rmsprop_update"
            }
            UpdateRule::AdaDelta { delta, momentum } => {
                args.extend([second_history()?, Arg::F(momentum), Arg::F(delta)]);
                "adadelta_update"
            }
            UpdateRule::Adam {
                beta1,
                beta2,
                eps_hat,
            } => {
                let h2 = second_history()?;
                args.extend([h2, Arg::F(beta1), Arg::F(beta2), Arg::F(eps_hat)]);
                "adam_update"
            }
        };
        args.extend([step_at, step]);
        self.launch(OP, kernel, n, &args)
    }

    fn begin_capture(&self) -> Result<bool> {
        const OP: &str = "begin_capture";
        if self.inner.capturing.load(Ordering::Acquire) {
            return Err(invalid(OP, "a capture is already under way"));
        }
        // Loading a module cannot be recorded: every kernel file is loaded before (a no-op
        // once they are).
        self.load_all_kernels()?;
        // Thread-local mode: only this thread's unsafe calls (an allocation, a synchronous
        // copy) invalidate the capture; a prefetch thread's pinned allocation elsewhere does
        // not.
        self.inner
            .stream
            .begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
            .map_err(|e| dev_err(OP, e))?;
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
        let graph = self
            .inner
            .stream
            .end_capture(CUgraphInstantiate_flags(0))
            .map_err(|e| dev_err(OP, e))?;
        Ok(graph.map(|graph| {
            Box::new(CudaReplay {
                graph,
                backend: self.clone(),
            }) as Box<dyn CapturedWork>
        }))
    }

    fn set(&self, n: usize, value: f32, y: &mut CudaBuffer, y_off: usize) -> Result<()> {
        const OP: &str = "set";
        let yp = Self::ptr(OP, "y", y, y_off, n)?;
        self.launch(OP, "set", n, &[Arg::I(int(OP, n)?), Arg::F(value), yp])
    }

    fn add_scalar(&self, n: usize, value: f32, y: &mut CudaBuffer, y_off: usize) -> Result<()> {
        const OP: &str = "add_scalar";
        let yp = Self::ptr(OP, "y", y, y_off, n)?;
        self.launch(
            OP,
            "add_scalar",
            n,
            &[Arg::I(int(OP, n)?), Arg::F(value), yp],
        )
    }

    // The fills draw on the host with the CPU backend's generator and upload: only the
    // distribution is specified, and this keeps a net's initialisation identical across
    // backends.
    fn rng_bernoulli_stream(
        &self,
        n: usize,
        p: f32,
        state: &mut CudaBuffer,
        state_off: usize,
        y: &mut CudaBuffer,
        y_off: usize,
    ) -> Result<()> {
        const OP: &str = "rng_bernoulli_stream";
        check_probability(OP, p)?;
        let groups = philox::group_count(OP, n)? as usize;
        let sp = Self::ptr(OP, "state", state, state_off, philox::STATE_LEN)?;
        let yp = Self::ptr(OP, "y", y, y_off, n)?;
        let (n_arg, groups_arg) = (Arg::I(int(OP, n)?), Arg::I(int(OP, groups)?));
        self.launch(
            OP,
            "bernoulli_stream",
            groups,
            &[n_arg, groups_arg, Arg::F(p), sp, yp],
        )?;
        self.launch(OP, "advance_stream", 1, &[Arg::I(1), sp])
    }

    fn gemm(
        &self,
        trans_a: Transpose,
        trans_b: Transpose,
        m: usize,
        n: usize,
        k: usize,
        alpha: f32,
        a: &CudaBuffer,
        a_off: usize,
        lda: usize,
        b: &CudaBuffer,
        b_off: usize,
        ldb: usize,
        beta: f32,
        c: &mut CudaBuffer,
        c_off: usize,
        ldc: usize,
    ) -> Result<()> {
        const OP: &str = "gemm";
        let [a_span, b_span, c_span] =
            gemm_spans(OP, (trans_a, trans_b), (m, n, k), (lda, ldb, ldc))?;
        if m == 0 || n == 0 {
            return Ok(());
        }
        let Arg::P(ap) = Self::ptr(OP, "a", a, a_off, a_span)? else {
            unreachable!()
        };
        let Arg::P(bp) = Self::ptr(OP, "b", b, b_off, b_span)? else {
            unreachable!()
        };
        let Arg::P(cp) = Self::ptr(OP, "c", c, c_off, c_span)? else {
            unreachable!()
        };
        let blas = self.blas(OP)?;
        // Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: swap the operands.
        // SAFETY: the ranges were checked above; cuBLAS runs on the backend's stream.
        unsafe {
            cudarc::cublas::result::sgemm(
                *blas.handle(),
                trans(trans_b),
                trans(trans_a),
                int(OP, n)?,
                int(OP, m)?,
                int(OP, k)?,
                &alpha,
                bp as *const f32,
                int(OP, ldb)?,
                ap as *const f32,
                int(OP, lda)?,
                &beta,
                cp as *mut f32,
                int(OP, ldc)?,
            )
        }
        .map_err(|e| dev_err(OP, e))
    }

    fn gemv(
        &self,
        trans_a: Transpose,
        m: usize,
        n: usize,
        alpha: f32,
        a: &CudaBuffer,
        a_off: usize,
        x: &CudaBuffer,
        x_off: usize,
        beta: f32,
        y: &mut CudaBuffer,
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
        let Arg::P(ap) = Self::ptr(OP, "a", a, a_off, m * n)? else {
            unreachable!()
        };
        let Arg::P(xp) = Self::ptr(OP, "x", x, x_off, xl)? else {
            unreachable!()
        };
        let Arg::P(yp) = Self::ptr(OP, "y", y, y_off, yl)? else {
            unreachable!()
        };
        let blas = self.blas(OP)?;
        // Row-major m x n A is column-major n x m A^T: flip the transpose.
        let t = match trans_a {
            Transpose::NoTrans => cublasOperation_t::CUBLAS_OP_T,
            Transpose::Trans => cublasOperation_t::CUBLAS_OP_N,
        };
        // SAFETY: the ranges were checked above.
        unsafe {
            cudarc::cublas::result::sgemv(
                *blas.handle(),
                t,
                int(OP, n)?,
                int(OP, m)?,
                &alpha,
                ap as *const f32,
                int(OP, n.max(1))?,
                xp as *const f32,
                1,
                &beta,
                yp as *mut f32,
                1,
            )
        }
        .map_err(|e| dev_err(OP, e))
    }

    fn axpy(
        &self,
        n: usize,
        alpha: f32,
        x: &CudaBuffer,
        x_off: usize,
        y: &mut CudaBuffer,
        y_off: usize,
    ) -> Result<()> {
        const OP: &str = "axpy";
        let yp = Self::ptr(OP, "y", y, y_off, n)?;
        let xp = Self::ptr(OP, "x", x, x_off, n)?;
        self.launch(OP, "axpy", n, &[Arg::I(int(OP, n)?), Arg::F(alpha), xp, yp])
    }

    fn axpby<'a>(
        &self,
        n: usize,
        alpha: impl Into<Scalar<'a, CudaBuffer>>,
        x: &CudaBuffer,
        x_off: usize,
        beta: f32,
        y: &mut CudaBuffer,
        y_off: usize,
    ) -> Result<()> {
        const OP: &str = "axpby";
        let [alpha_at, alpha] = Self::scalar(OP, "alpha", alpha.into())?;
        let yp = Self::ptr(OP, "y", y, y_off, n)?;
        let xp = Self::ptr(OP, "x", x, x_off, n)?;
        self.launch(
            OP,
            "axpby",
            n,
            &[Arg::I(int(OP, n)?), alpha_at, alpha, xp, Arg::F(beta), yp],
        )
    }

    fn scale<'a>(
        &self,
        n: usize,
        alpha: impl Into<Scalar<'a, CudaBuffer>>,
        x: Src<'_, CudaBuffer>,
        y: &mut CudaBuffer,
        y_off: usize,
    ) -> Result<()> {
        const OP: &str = "scale";
        let [alpha_at, alpha] = Self::scalar(OP, "alpha", alpha.into())?;
        let yp = Self::ptr(OP, "y", y, y_off, n)?;
        let xp = Self::src(OP, "x", x, n, yp)?;
        self.launch(
            OP,
            "scale",
            n,
            &[Arg::I(int(OP, n)?), alpha_at, alpha, xp, yp],
        )
    }

    binary!(add, "add");
    binary!(sub, "sub");
    binary!(mul, "mul");
    binary!(div, "div_kernel");
    binary!(max, "max_kernel");

    fn powx(
        &self,
        n: usize,
        x: Src<'_, CudaBuffer>,
        p: f32,
        y: &mut CudaBuffer,
        y_off: usize,
    ) -> Result<()> {
        const OP: &str = "powx";
        let yp = Self::ptr(OP, "y", y, y_off, n)?;
        let xp = Self::src(OP, "x", x, n, yp)?;
        self.launch(OP, "powx", n, &[Arg::I(int(OP, n)?), xp, Arg::F(p), yp])
    }

    fn power(
        &self,
        n: usize,
        x: Src<'_, CudaBuffer>,
        power: f32,
        scale: f32,
        shift: f32,
        y: &mut CudaBuffer,
        y_off: usize,
    ) -> Result<()> {
        const OP: &str = "power";
        let yp = Self::ptr(OP, "y", y, y_off, n)?;
        let xp = Self::src(OP, "x", x, n, yp)?;
        self.launch(
            OP,
            "power",
            n,
            &[
                Arg::I(int(OP, n)?),
                xp,
                Arg::F(power),
                Arg::F(scale),
                Arg::F(shift),
                yp,
            ],
        )
    }

    unary!(exp, "exp_kernel");
    unary!(log, "log_kernel");
    unary!(abs, "abs_kernel");
    unary!(sqr, "sqr");
    unary!(sqrt, "sqrt_kernel");
    unary!(sign, "sign");

    fn relu_forward(
        &self,
        n: usize,
        slope: f32,
        x: Src<'_, CudaBuffer>,
        y: &mut CudaBuffer,
        y_off: usize,
    ) -> Result<()> {
        const OP: &str = "relu_forward";
        let yp = Self::ptr(OP, "y", y, y_off, n)?;
        let xp = Self::src(OP, "x", x, n, yp)?;
        self.launch(OP, OP, n, &[Arg::I(int(OP, n)?), Arg::F(slope), xp, yp])
    }

    fn relu_backward(
        &self,
        n: usize,
        slope: f32,
        x: &CudaBuffer,
        x_off: usize,
        dy: Src<'_, CudaBuffer>,
        dx: &mut CudaBuffer,
        dx_off: usize,
    ) -> Result<()> {
        self.backward(
            "relu_backward",
            "relu_backward",
            n,
            Some(slope),
            x,
            x_off,
            dy,
            dx,
            dx_off,
        )
    }

    unary!(sigmoid_forward, "sigmoid_forward");

    fn sigmoid_backward(
        &self,
        n: usize,
        y: &CudaBuffer,
        y_off: usize,
        dy: Src<'_, CudaBuffer>,
        dx: &mut CudaBuffer,
        dx_off: usize,
    ) -> Result<()> {
        self.backward(
            "sigmoid_backward",
            "sigmoid_backward",
            n,
            None,
            y,
            y_off,
            dy,
            dx,
            dx_off,
        )
    }

    unary!(tanh_forward, "tanh_forward");

    fn tanh_backward(
        &self,
        n: usize,
        y: &CudaBuffer,
        y_off: usize,
        dy: Src<'_, CudaBuffer>,
        dx: &mut CudaBuffer,
        dx_off: usize,
    ) -> Result<()> {
        self.backward(
            "tanh_backward",
            "tanh_backward",
            n,
            None,
            y,
            y_off,
            dy,
            dx,
            dx_off,
        )
    }

    fn elu_forward(
        &self,
        n: usize,
        alpha: f32,
        x: Src<'_, CudaBuffer>,
        y: &mut CudaBuffer,
        y_off: usize,
    ) -> Result<()> {
        const OP: &str = "elu_forward";
        let yp = Self::ptr(OP, "y", y, y_off, n)?;
        let xp = Self::src(OP, "x", x, n, yp)?;
        self.launch(OP, OP, n, &[Arg::I(int(OP, n)?), Arg::F(alpha), xp, yp])
    }

    fn elu_backward(
        &self,
        n: usize,
        alpha: f32,
        x: &CudaBuffer,
        x_off: usize,
        y: &CudaBuffer,
        y_off: usize,
        dy: Src<'_, CudaBuffer>,
        dx: &mut CudaBuffer,
        dx_off: usize,
    ) -> Result<()> {
        const OP: &str = "elu_backward";
        let dxp = Self::ptr(OP, "dx", dx, dx_off, n)?;
        let xp = Self::ptr(OP, "x", x, x_off, n)?;
        let yp = Self::ptr(OP, "y", y, y_off, n)?;
        let dyp = Self::src(OP, "dy", dy, n, dxp)?;
        self.launch(
            OP,
            OP,
            n,
            &[Arg::I(int(OP, n)?), Arg::F(alpha), xp, yp, dyp, dxp],
        )
    }

    unary!(bnll_forward, "bnll_forward");

    fn bnll_backward(
        &self,
        n: usize,
        x: &CudaBuffer,
        x_off: usize,
        dy: Src<'_, CudaBuffer>,
        dx: &mut CudaBuffer,
        dx_off: usize,
    ) -> Result<()> {
        self.backward(
            "bnll_backward",
            "bnll_backward",
            n,
            None,
            x,
            x_off,
            dy,
            dx,
            dx_off,
        )
    }

    fn sum(&self, n: usize, x: &CudaBuffer, x_off: usize) -> Result<f32> {
        self.reduce("sum", 0, n, x, x_off, None)
    }

    fn sum_into(
        &self,
        n: usize,
        alpha: f32,
        x: &CudaBuffer,
        x_off: usize,
        y: &mut CudaBuffer,
        y_off: usize,
    ) -> Result<()> {
        const OP: &str = "sum_into";
        let xp = Self::ptr(OP, "x", x, x_off, n)?;
        let yp = Self::ptr(OP, "y", y, y_off, 1)?;
        let partials = self.partials(OP)?;
        self.reduce_into(OP, 0, n, (xp, xp), alpha, yp, &partials)
    }

    fn asum(&self, n: usize, x: &CudaBuffer, x_off: usize) -> Result<f32> {
        self.reduce("asum", 1, n, x, x_off, None)
    }

    fn sumsq(&self, n: usize, x: &CudaBuffer, x_off: usize) -> Result<f32> {
        self.reduce("sumsq", 2, n, x, x_off, None)
    }

    fn dot(
        &self,
        n: usize,
        x: &CudaBuffer,
        x_off: usize,
        y: &CudaBuffer,
        y_off: usize,
    ) -> Result<f32> {
        self.reduce("dot", 3, n, x, x_off, Some((y, y_off)))
    }

    fn max_over_axis(
        &self,
        outer: usize,
        dim: usize,
        inner: usize,
        x: &CudaBuffer,
        x_off: usize,
        y: &mut CudaBuffer,
        y_off: usize,
    ) -> Result<()> {
        const OP: &str = "max_over_axis";
        let xp = Self::ptr(OP, "x", x, x_off, outer * dim * inner)?;
        let yp = Self::ptr(OP, "y", y, y_off, outer * inner)?;
        let mut args = Self::ocd(OP, outer, dim, inner)?.to_vec();
        args.extend([xp, yp]);
        self.launch(OP, OP, outer * inner, &args)
    }

    fn sum_over_axis(
        &self,
        outer: usize,
        dim: usize,
        inner: usize,
        x: &CudaBuffer,
        x_off: usize,
        y: &mut CudaBuffer,
        y_off: usize,
    ) -> Result<()> {
        const OP: &str = "sum_over_axis";
        let xp = Self::ptr(OP, "x", x, x_off, outer * dim * inner)?;
        let yp = Self::ptr(OP, "y", y, y_off, outer * inner)?;
        let mut args = Self::ocd(OP, outer, dim, inner)?.to_vec();
        args.extend([xp, yp]);
        self.launch(OP, OP, outer * inner, &args)
    }

    fn dot_over_axis(
        &self,
        outer: usize,
        dim: usize,
        inner: usize,
        a: &CudaBuffer,
        a_off: usize,
        b: &CudaBuffer,
        b_off: usize,
        y: &mut CudaBuffer,
        y_off: usize,
    ) -> Result<()> {
        const OP: &str = "dot_over_axis";
        let ap = Self::ptr(OP, "a", a, a_off, outer * dim * inner)?;
        let bp = Self::ptr(OP, "b", b, b_off, outer * dim * inner)?;
        let yp = Self::ptr(OP, "y", y, y_off, outer * inner)?;
        let mut args = Self::ocd(OP, outer, dim, inner)?.to_vec();
        args.extend([ap, bp, yp]);
        self.launch(OP, OP, outer * inner, &args)
    }

    fn sub_along_axis(
        &self,
        outer: usize,
        dim: usize,
        inner: usize,
        v: &CudaBuffer,
        v_off: usize,
        y: &mut CudaBuffer,
        y_off: usize,
    ) -> Result<()> {
        const OP: &str = "sub_along_axis";
        let vp = Self::ptr(OP, "v", v, v_off, outer * inner)?;
        let yp = Self::ptr(OP, "y", y, y_off, outer * dim * inner)?;
        let mut args = Self::ocd(OP, outer, dim, inner)?.to_vec();
        args.extend([vp, yp]);
        self.launch(OP, OP, outer * dim * inner, &args)
    }

    fn div_along_axis(
        &self,
        outer: usize,
        dim: usize,
        inner: usize,
        v: &CudaBuffer,
        v_off: usize,
        y: &mut CudaBuffer,
        y_off: usize,
    ) -> Result<()> {
        const OP: &str = "div_along_axis";
        let vp = Self::ptr(OP, "v", v, v_off, outer * inner)?;
        let yp = Self::ptr(OP, "y", y, y_off, outer * dim * inner)?;
        let mut args = Self::ocd(OP, outer, dim, inner)?.to_vec();
        args.extend([vp, yp]);
        self.launch(OP, OP, outer * dim * inner, &args)
    }

    fn add_per_channel(
        &self,
        outer: usize,
        channels: usize,
        inner: usize,
        v: &CudaBuffer,
        v_off: usize,
        y: &mut CudaBuffer,
        y_off: usize,
    ) -> Result<()> {
        const OP: &str = "add_per_channel";
        let vp = Self::ptr(OP, "v", v, v_off, channels)?;
        let yp = Self::ptr(OP, "y", y, y_off, outer * channels * inner)?;
        let mut args = Self::ocd(OP, outer, channels, inner)?.to_vec();
        args.extend([vp, yp]);
        self.launch(OP, OP, outer * channels * inner, &args)
    }

    fn mul_per_channel(
        &self,
        outer: usize,
        channels: usize,
        inner: usize,
        v: &CudaBuffer,
        v_off: usize,
        x: Src<'_, CudaBuffer>,
        y: &mut CudaBuffer,
        y_off: usize,
    ) -> Result<()> {
        const OP: &str = "mul_per_channel";
        let len = outer * channels * inner;
        let vp = Self::ptr(OP, "v", v, v_off, channels)?;
        let yp = Self::ptr(OP, "y", y, y_off, len)?;
        let xp = Self::src(OP, "x", x, len, yp)?;
        let mut args = Self::ocd(OP, outer, channels, inner)?.to_vec();
        args.extend([vp, xp, yp]);
        self.launch(OP, OP, len, &args)
    }

    fn sum_per_channel(
        &self,
        outer: usize,
        channels: usize,
        inner: usize,
        alpha: f32,
        x: &CudaBuffer,
        x_off: usize,
        beta: f32,
        y: &mut CudaBuffer,
        y_off: usize,
    ) -> Result<()> {
        const OP: &str = "sum_per_channel";
        let xp = Self::ptr(OP, "x", x, x_off, outer * channels * inner)?;
        let yp = Self::ptr(OP, "y", y, y_off, channels)?;
        let ocd = Self::ocd(OP, outer, channels, inner)?;
        // A long channel summed by one thread would leave the device idle (AlexNet's conv1
        // bias gradient: 96 threads of 774400 values): split it into parts first.
        let parts = (CHANNEL_PARTIALS / channels.max(1)).min(outer * inner / VALUES_PER_PART);
        if parts < 2 {
            let mut args = ocd.to_vec();
            args.extend([Arg::F(alpha), xp, Arg::F(beta), yp]);
            return self.launch(OP, OP, channels, &args);
        }
        int(OP, outer * inner)?; // the kernel counts a channel's positions in an int
        let partials = self.partials(OP)?;
        let pp = Self::ptr(OP, "partial", &partials, 0, channels * parts)?;
        let parts_arg = Arg::I(int(OP, parts)?);
        let mut args = ocd.to_vec();
        args.extend([parts_arg, xp, pp]);
        self.launch(OP, "sum_per_channel_partial", channels * parts, &args)?;
        let args = [ocd[1], parts_arg, pp, Arg::F(alpha), Arg::F(beta), yp];
        self.launch(OP, "sum_per_channel_parts", channels, &args)
    }

    fn im2col(
        &self,
        g: &ConvGeom,
        im: &CudaBuffer,
        im_off: usize,
        col: &mut CudaBuffer,
        col_off: usize,
    ) -> Result<()> {
        const OP: &str = "im2col";
        g.validate(OP)?;
        let ip = Self::ptr(OP, "im", im, im_off, g.im_len())?;
        let cp = Self::ptr(OP, "col", col, col_off, g.col_len())?;
        let mut args = Self::conv_args(OP, g)?;
        args.extend([ip, cp]);
        self.launch(OP, OP, g.channels * g.out_h() * g.out_w(), &args)
    }

    fn col2im(
        &self,
        g: &ConvGeom,
        col: &CudaBuffer,
        col_off: usize,
        im: &mut CudaBuffer,
        im_off: usize,
    ) -> Result<()> {
        const OP: &str = "col2im";
        g.validate(OP)?;
        let cp = Self::ptr(OP, "col", col, col_off, g.col_len())?;
        let ip = Self::ptr(OP, "im", im, im_off, g.im_len())?;
        let mut args = Self::conv_args(OP, g)?;
        args.extend([cp, ip]);
        self.launch(OP, OP, g.im_len(), &args)
    }

    fn max_pool_forward(
        &self,
        g: &PoolGeom,
        x: &CudaBuffer,
        x_off: usize,
        y: &mut CudaBuffer,
        y_off: usize,
        mask: &mut CudaBuffer,
        mask_off: usize,
    ) -> Result<()> {
        const OP: &str = "max_pool_forward";
        g.validate(OP)?;
        let xp = Self::ptr(OP, "x", x, x_off, g.in_len())?;
        let yp = Self::ptr(OP, "y", y, y_off, g.out_len())?;
        let mp = Self::ptr(OP, "mask", mask, mask_off, g.out_len())?;
        let mut args = Self::pool_args(OP, g)?;
        args.extend([xp, yp, mp]);
        self.launch(OP, OP, g.out_len(), &args)
    }

    fn max_pool_backward(
        &self,
        g: &PoolGeom,
        dy: &CudaBuffer,
        dy_off: usize,
        mask: &CudaBuffer,
        mask_off: usize,
        dx: &mut CudaBuffer,
        dx_off: usize,
    ) -> Result<()> {
        const OP: &str = "max_pool_backward";
        g.validate(OP)?;
        let dyp = Self::ptr(OP, "dy", dy, dy_off, g.out_len())?;
        let mp = Self::ptr(OP, "mask", mask, mask_off, g.out_len())?;
        let dxp = Self::ptr(OP, "dx", dx, dx_off, g.in_len())?;
        let mut args = Self::pool_args(OP, g)?;
        args.extend([dyp, mp, dxp]);
        self.launch(OP, OP, g.in_len(), &args)
    }

    fn ave_pool_forward(
        &self,
        g: &PoolGeom,
        x: &CudaBuffer,
        x_off: usize,
        y: &mut CudaBuffer,
        y_off: usize,
    ) -> Result<()> {
        const OP: &str = "ave_pool_forward";
        g.validate(OP)?;
        let xp = Self::ptr(OP, "x", x, x_off, g.in_len())?;
        let yp = Self::ptr(OP, "y", y, y_off, g.out_len())?;
        let mut args = Self::pool_args(OP, g)?;
        args.extend([xp, yp]);
        self.launch(OP, OP, g.out_len(), &args)
    }

    fn ave_pool_backward(
        &self,
        g: &PoolGeom,
        dy: &CudaBuffer,
        dy_off: usize,
        dx: &mut CudaBuffer,
        dx_off: usize,
    ) -> Result<()> {
        const OP: &str = "ave_pool_backward";
        g.validate(OP)?;
        let dyp = Self::ptr(OP, "dy", dy, dy_off, g.out_len())?;
        let dxp = Self::ptr(OP, "dx", dx, dx_off, g.in_len())?;
        let mut args = Self::pool_args(OP, g)?;
        args.extend([dyp, dxp]);
        self.launch(OP, OP, g.in_len(), &args)
    }

    fn lrn_across_forward(
        &self,
        g: &LrnGeom,
        x: &CudaBuffer,
        x_off: usize,
        scale: &mut CudaBuffer,
        scale_off: usize,
        y: &mut CudaBuffer,
        y_off: usize,
    ) -> Result<()> {
        const OP: &str = "lrn_across_forward";
        g.validate(OP)?;
        let xp = Self::ptr(OP, "x", x, x_off, g.len())?;
        let sp = Self::ptr(OP, "scale", scale, scale_off, g.len())?;
        let yp = Self::ptr(OP, "y", y, y_off, g.len())?;
        let mut args = Self::lrn_args(OP, g)?;
        args.extend([Arg::F(g.k), xp, sp, yp]);
        self.launch(OP, OP, g.num * g.spatial, &args)
    }

    fn lrn_across_backward(
        &self,
        g: &LrnGeom,
        x: &CudaBuffer,
        x_off: usize,
        y: &CudaBuffer,
        y_off: usize,
        scale: &CudaBuffer,
        scale_off: usize,
        dy: &CudaBuffer,
        dy_off: usize,
        dx: &mut CudaBuffer,
        dx_off: usize,
    ) -> Result<()> {
        const OP: &str = "lrn_across_backward";
        g.validate(OP)?;
        let xp = Self::ptr(OP, "x", x, x_off, g.len())?;
        let yp = Self::ptr(OP, "y", y, y_off, g.len())?;
        let sp = Self::ptr(OP, "scale", scale, scale_off, g.len())?;
        let dyp = Self::ptr(OP, "dy", dy, dy_off, g.len())?;
        let dxp = Self::ptr(OP, "dx", dx, dx_off, g.len())?;
        let mut args = Self::lrn_args(OP, g)?;
        args.extend([xp, yp, sp, dyp, dxp]);
        self.launch(OP, OP, g.num * g.spatial, &args)
    }

    fn prelu_forward(
        &self,
        outer: usize,
        channels: usize,
        inner: usize,
        slope: &CudaBuffer,
        slope_off: usize,
        x: Src<'_, CudaBuffer>,
        y: &mut CudaBuffer,
        y_off: usize,
    ) -> Result<()> {
        const OP: &str = "prelu_forward";
        let len = outer * channels * inner;
        let sp = Self::ptr(OP, "slope", slope, slope_off, channels)?;
        let yp = Self::ptr(OP, "y", y, y_off, len)?;
        let xp = Self::src(OP, "x", x, len, yp)?;
        let mut args = Self::ocd(OP, outer, channels, inner)?.to_vec();
        args.extend([sp, xp, yp]);
        self.launch(OP, OP, len, &args)
    }

    fn prelu_backward(
        &self,
        outer: usize,
        channels: usize,
        inner: usize,
        slope: &CudaBuffer,
        slope_off: usize,
        x: &CudaBuffer,
        x_off: usize,
        dy: Src<'_, CudaBuffer>,
        dx: &mut CudaBuffer,
        dx_off: usize,
    ) -> Result<()> {
        const OP: &str = "prelu_backward";
        let len = outer * channels * inner;
        let sp = Self::ptr(OP, "slope", slope, slope_off, channels)?;
        let xp = Self::ptr(OP, "x", x, x_off, len)?;
        let dxp = Self::ptr(OP, "dx", dx, dx_off, len)?;
        let dyp = Self::src(OP, "dy", dy, len, dxp)?;
        let mut args = Self::ocd(OP, outer, channels, inner)?.to_vec();
        args.extend([sp, xp, dyp, dxp]);
        self.launch(OP, OP, len, &args)
    }

    fn prelu_slope_grad(
        &self,
        outer: usize,
        channels: usize,
        inner: usize,
        x: &CudaBuffer,
        x_off: usize,
        dy: &CudaBuffer,
        dy_off: usize,
        dslope: &mut CudaBuffer,
        dslope_off: usize,
    ) -> Result<()> {
        const OP: &str = "prelu_slope_grad";
        let len = outer * channels * inner;
        let xp = Self::ptr(OP, "x", x, x_off, len)?;
        let dyp = Self::ptr(OP, "dy", dy, dy_off, len)?;
        let dsp = Self::ptr(OP, "dslope", dslope, dslope_off, channels)?;
        let mut args = Self::ocd(OP, outer, channels, inner)?.to_vec();
        args.extend([xp, dyp, dsp]);
        self.launch(OP, OP, channels, &args)
    }

    fn copy_2d(
        &self,
        rows: usize,
        cols: usize,
        x: &CudaBuffer,
        x_off: usize,
        x_stride: usize,
        y: &mut CudaBuffer,
        y_off: usize,
        y_stride: usize,
    ) -> Result<()> {
        const OP: &str = "copy_2d";
        let Some((x_span, y_span)) = copy_2d_spans(OP, (rows, cols), x_stride, y_stride)? else {
            return Ok(());
        };
        let xp = Self::ptr(OP, "x", x, x_off, x_span)?;
        let yp = Self::ptr(OP, "y", y, y_off, y_span)?;
        let args = [
            Arg::I(int(OP, rows)?),
            Arg::I(int(OP, cols)?),
            xp,
            Arg::I(int(OP, x_stride)?),
            yp,
            Arg::I(int(OP, y_stride)?),
        ];
        self.launch(OP, OP, rows * cols, &args)
    }

    fn running_argmax(
        &self,
        n: usize,
        index: f32,
        x: &CudaBuffer,
        x_off: usize,
        y: &mut CudaBuffer,
        y_off: usize,
        mask: &mut CudaBuffer,
        mask_off: usize,
    ) -> Result<()> {
        const OP: &str = "running_argmax";
        let xp = Self::ptr(OP, "x", x, x_off, n)?;
        let yp = Self::ptr(OP, "y", y, y_off, n)?;
        let mp = Self::ptr(OP, "mask", mask, mask_off, n)?;
        self.launch(OP, OP, n, &[Arg::I(int(OP, n)?), Arg::F(index), xp, yp, mp])
    }

    fn copy_where_eq(
        &self,
        n: usize,
        mask: &CudaBuffer,
        mask_off: usize,
        value: f32,
        x: &CudaBuffer,
        x_off: usize,
        y: &mut CudaBuffer,
        y_off: usize,
    ) -> Result<()> {
        const OP: &str = "copy_where_eq";
        let mp = Self::ptr(OP, "mask", mask, mask_off, n)?;
        let xp = Self::ptr(OP, "x", x, x_off, n)?;
        let yp = Self::ptr(OP, "y", y, y_off, n)?;
        self.launch(OP, OP, n, &[Arg::I(int(OP, n)?), mp, Arg::F(value), xp, yp])
    }

    fn top_k_over_axis(
        &self,
        outer: usize,
        dim: usize,
        inner: usize,
        k: usize,
        x: &CudaBuffer,
        x_off: usize,
        values: &mut CudaBuffer,
        values_off: usize,
        indices: &mut CudaBuffer,
        indices_off: usize,
    ) -> Result<()> {
        const OP: &str = "top_k_over_axis";
        if k > dim {
            return Err(invalid(
                OP,
                format!("k = {k} exceeds the axis length {dim}"),
            ));
        }
        let xp = Self::ptr(OP, "x", x, x_off, outer * dim * inner)?;
        let vp = Self::ptr(OP, "values", values, values_off, outer * k * inner)?;
        let ip = Self::ptr(OP, "indices", indices, indices_off, outer * k * inner)?;
        let mut args = Self::ocd(OP, outer, dim, inner)?.to_vec();
        args.extend([Arg::I(int(OP, k)?), xp, vp, ip]);
        if k == 0 {
            return Ok(());
        }
        self.launch(OP, OP, outer * inner, &args)
    }

    fn label_mask(
        &self,
        n: usize,
        label: &CudaBuffer,
        label_off: usize,
        ignore_label: Option<i32>,
        y: &mut CudaBuffer,
        y_off: usize,
    ) -> Result<()> {
        const OP: &str = "label_mask";
        let lp = Self::ptr(OP, "label", label, label_off, n)?;
        let yp = Self::ptr(OP, "y", y, y_off, n)?;
        let [h, il] = Self::ignore_args(ignore_label);
        self.launch(OP, OP, n, &[Arg::I(int(OP, n)?), lp, h, il, yp])
    }

    fn gather_at_label(
        &self,
        outer: usize,
        dim: usize,
        inner: usize,
        x: &CudaBuffer,
        x_off: usize,
        label: &CudaBuffer,
        label_off: usize,
        ignore_label: Option<i32>,
        fill: f32,
        y: &mut CudaBuffer,
        y_off: usize,
    ) -> Result<()> {
        const OP: &str = "gather_at_label";
        let xp = Self::ptr(OP, "x", x, x_off, outer * dim * inner)?;
        let yp = Self::ptr(OP, "y", y, y_off, outer * inner)?;
        let error = self.check_labels_unless_capturing(
            OP,
            label,
            label_off,
            outer * inner,
            ignore_label,
            dim,
        )?;
        let lp = Self::ptr(OP, "label", label, label_off, outer * inner)?;
        let [h, il] = Self::ignore_args(ignore_label);
        let mut args = Self::ocd(OP, outer, dim, inner)?.to_vec();
        args.extend([xp, lp, h, il, Arg::F(fill), yp, error]);
        self.launch(OP, OP, outer * inner, &args)
    }

    fn affine_at_label(
        &self,
        outer: usize,
        dim: usize,
        inner: usize,
        label: &CudaBuffer,
        label_off: usize,
        ignore_label: Option<i32>,
        alpha: f32,
        beta: f32,
        y: &mut CudaBuffer,
        y_off: usize,
    ) -> Result<()> {
        const OP: &str = "affine_at_label";
        let yp = Self::ptr(OP, "y", y, y_off, outer * dim * inner)?;
        let error = self.check_labels_unless_capturing(
            OP,
            label,
            label_off,
            outer * inner,
            ignore_label,
            dim,
        )?;
        let lp = Self::ptr(OP, "label", label, label_off, outer * inner)?;
        let [h, il] = Self::ignore_args(ignore_label);
        let mut args = Self::ocd(OP, outer, dim, inner)?.to_vec();
        args.extend([lp, h, il, Arg::F(alpha), Arg::F(beta), yp, error]);
        self.launch(OP, OP, outer * inner, &args)
    }

    fn top_k_hits(
        &self,
        outer: usize,
        dim: usize,
        inner: usize,
        top_k: usize,
        x: &CudaBuffer,
        x_off: usize,
        label: &CudaBuffer,
        label_off: usize,
        ignore_label: Option<i32>,
        y: &mut CudaBuffer,
        y_off: usize,
    ) -> Result<()> {
        const OP: &str = "top_k_hits";
        let xp = Self::ptr(OP, "x", x, x_off, outer * dim * inner)?;
        let yp = Self::ptr(OP, "y", y, y_off, outer * inner)?;
        let error = self.check_labels_unless_capturing(
            OP,
            label,
            label_off,
            outer * inner,
            ignore_label,
            dim,
        )?;
        let lp = Self::ptr(OP, "label", label, label_off, outer * inner)?;
        let [h, il] = Self::ignore_args(ignore_label);
        let mut args = Self::ocd(OP, outer, dim, inner)?.to_vec();
        args.extend([Arg::I(int(OP, top_k.min(dim))?), xp, lp, h, il, yp, error]);
        self.launch(OP, OP, outer * inner, &args)
    }

    fn sum_by_label(
        &self,
        n: usize,
        classes: usize,
        x: &CudaBuffer,
        x_off: usize,
        label: &CudaBuffer,
        label_off: usize,
        ignore_label: Option<i32>,
        y: &mut CudaBuffer,
        y_off: usize,
    ) -> Result<()> {
        const OP: &str = "sum_by_label";
        let xp = Self::ptr(OP, "x", x, x_off, n)?;
        let yp = Self::ptr(OP, "y", y, y_off, classes)?;
        self.check_labels(OP, label, label_off, n, ignore_label, classes)?;
        let lp = Self::ptr(OP, "label", label, label_off, n)?;
        let [h, il] = Self::ignore_args(ignore_label);
        self.launch(
            OP,
            OP,
            classes,
            &[
                Arg::I(int(OP, n)?),
                Arg::I(int(OP, classes)?),
                xp,
                lp,
                h,
                il,
                yp,
            ],
        )
    }

    fn sigmoid_cross_entropy(
        &self,
        n: usize,
        x: &CudaBuffer,
        x_off: usize,
        t: &CudaBuffer,
        t_off: usize,
        y: &mut CudaBuffer,
        y_off: usize,
    ) -> Result<()> {
        const OP: &str = "sigmoid_cross_entropy";
        let xp = Self::ptr(OP, "x", x, x_off, n)?;
        let tp = Self::ptr(OP, "t", t, t_off, n)?;
        let yp = Self::ptr(OP, "y", y, y_off, n)?;
        self.launch(OP, OP, n, &[Arg::I(int(OP, n)?), xp, tp, yp])
    }
}
