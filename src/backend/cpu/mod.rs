//! The CPU backend: the reference implementation of every op.
//!
//! Ops run on the backend's own rayon pool (one per [`CpuBackend`], `threads` workers).
//! Small tensors run serially on the calling thread: parallel dispatch costs microseconds.
//!
//! Determinism: element-wise ops, pooling, im2col/col2im and LRN compute each output from the
//! same inputs in the same order whatever the thread count. GEMM comes from the `gemm` crate and
//! is deterministic for a given thread count. Full reductions (`sum`, `asum`, `sumsq`, `dot`,
//! `sum_per_channel`) add in a fixed order that depends only on the length, not on the thread
//! count, but that differs from a naive left-to-right loop: see `reductions`.

#![allow(clippy::too_many_arguments)]

mod conv;
mod direct;
mod elementwise;
mod gemm;
mod im2col;
mod loss;
mod lrn;
mod neuron;
mod pooling;
mod reductions;
mod rng;
mod simd;

use super::{
    check_probability, check_range, gemm_spans, invalid, kernel_constants, philox, Backend,
    ConvBatch, ConvGeom, DeviceBuffer, LrnGeom, PoolGeom, Result, Rng, Scalar, Src, Transpose,
};
use elementwise::Operand;
use rayon::prelude::*;
use std::sync::{Arc, Mutex};

/// Element-wise ops on fewer elements than this run serially.
const PAR_MIN_ELEMS: usize = 1 << 15;
/// Element-wise parallel work is split in chunks of this many elements.
const PAR_CHUNK: usize = 1 << 14;
const _: () = assert!(
    PAR_CHUNK.is_multiple_of(4),
    "stream draws split chunks into groups of 4"
);
/// Row-structured ops (pooling, im2col, per-channel) with less estimated work than this run
/// serially; parallel tasks get at least a quarter of it each.
const PAR_MIN_WORK: usize = 1 << 15;

/// Host memory: a plain vector of f32. Unlike a generic [`Backend::Buffer`] it can be read and
/// written in place through [`CpuBuffer::as_slice`] and [`CpuBuffer::as_mut_slice`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CpuBuffer {
    data: Vec<f32>,
}

impl CpuBuffer {
    /// Takes ownership of host values.
    pub fn from_vec(data: Vec<f32>) -> Self {
        Self { data }
    }
    /// The values, without copying.
    pub fn as_slice(&self) -> &[f32] {
        &self.data
    }
    /// The values, writable, without copying.
    pub fn as_mut_slice(&mut self) -> &mut [f32] {
        &mut self.data
    }
    /// Gives the values back.
    pub fn into_vec(self) -> Vec<f32> {
        self.data
    }
}

impl DeviceBuffer for CpuBuffer {
    fn len(&self) -> usize {
        self.data.len()
    }
}

/// The CPU backend. Cloning is cheap and shares the thread pool.
#[derive(Clone)]
pub struct CpuBackend {
    threads: usize,
    pool: Option<Arc<rayon::ThreadPool>>,
    /// Scratch of the batch convolutions (column buffers, partial weight gradients), shared by
    /// every layer since ops run one at a time: it grows to the largest layer's need and stays,
    /// so a warm net allocates nothing and holds one set of buffers, not one per layer.
    scratch: Arc<Mutex<Vec<f32>>>,
}

impl std::fmt::Debug for CpuBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CpuBackend")
            .field("threads", &self.threads)
            .finish()
    }
}

impl Default for CpuBackend {
    /// One worker per available core.
    fn default() -> Self {
        Self::new(0).expect("building a rayon pool with the default thread count")
    }
}

impl CpuBackend {
    /// A backend running its ops on `threads` workers (0: one per available core; 1: all ops
    /// on the calling thread, no pool).
    pub fn new(threads: usize) -> Result<Self> {
        let threads = if threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            threads
        };
        let pool = if threads > 1 {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .thread_name(|i| format!("rcaffe-cpu-{i}"))
                .build()
                .map_err(|e| super::BackendError::Device {
                    op: "CpuBackend::new",
                    message: format!("cannot start {threads} worker threads: {e}"),
                })?;
            Some(Arc::new(pool))
        } else {
            None
        };
        Ok(Self {
            threads,
            pool,
            scratch: Arc::default(),
        })
    }

    /// Number of worker threads.
    pub fn threads(&self) -> usize {
        self.threads
    }

    fn par(&self) -> Par<'_> {
        Par {
            pool: self.pool.as_deref(),
            threads: self.threads,
        }
    }
}

/// Calls `f` with `slot`'s buffer of this thread, `len` zeros long: per-thread scratch that
/// only grows, so the hot loops allocate nothing once warm.
fn with_zeroed<R>(
    slot: &'static std::thread::LocalKey<std::cell::RefCell<Vec<f32>>>,
    len: usize,
    f: impl FnOnce(&mut [f32]) -> R,
) -> R {
    slot.with(|cell| {
        let mut buf = cell.borrow_mut();
        buf.clear();
        buf.resize(len, 0.0);
        f(&mut buf)
    })
}

/// How a kernel may spread its work: the pool (if any) and its size.
#[derive(Clone, Copy)]
pub(crate) struct Par<'a> {
    pool: Option<&'a rayon::ThreadPool>,
    threads: usize,
}

impl Par<'_> {
    /// Runs `f` inside the pool (so nested rayon calls use it), or directly without one.
    fn install<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        match self.pool {
            Some(pool) => pool.install(f),
            None => f(),
        }
    }

    /// Calls `f(start, chunk)` over `y` split in fixed-size chunks; serial when `y` is small.
    fn chunks_mut<F>(&self, y: &mut [f32], f: F)
    where
        F: Fn(usize, &mut [f32]) + Sync + Send,
    {
        match self.pool {
            Some(pool) if y.len() >= PAR_MIN_ELEMS => pool.install(|| {
                y.par_chunks_mut(PAR_CHUNK)
                    .enumerate()
                    .for_each(|(i, c)| f(i * PAR_CHUNK, c))
            }),
            _ => f(0, y),
        }
    }

    /// Calls `f(row, slice)` for each `row_len`-long row of `y`; `work` estimates the cost of one
    /// row and decides whether to go parallel.
    fn rows_mut<F>(&self, y: &mut [f32], row_len: usize, work: usize, f: F)
    where
        F: Fn(usize, &mut [f32]) + Sync + Send,
    {
        if row_len == 0 {
            return;
        }
        let rows = y.len() / row_len;
        match self.pool {
            Some(pool) if rows > 1 && rows.saturating_mul(work) >= PAR_MIN_WORK => {
                let min_rows = (PAR_MIN_WORK / 4 / work.max(1)).max(1);
                pool.install(|| {
                    y.par_chunks_mut(row_len)
                        .enumerate()
                        .with_min_len(min_rows)
                        .for_each(|(r, c)| f(r, c))
                })
            }
            _ => y.chunks_mut(row_len).enumerate().for_each(|(r, c)| f(r, c)),
        }
    }

    /// As [`Par::rows_mut`] over two outputs with the same number of rows.
    fn rows2_mut<F>(
        &self,
        y: &mut [f32],
        y_row: usize,
        z: &mut [f32],
        z_row: usize,
        work: usize,
        f: F,
    ) where
        F: Fn(usize, &mut [f32], &mut [f32]) + Sync + Send,
    {
        if y_row == 0 || z_row == 0 {
            return;
        }
        let rows = y.len() / y_row;
        match self.pool {
            Some(pool) if rows > 1 && rows.saturating_mul(work) >= PAR_MIN_WORK => {
                let min_rows = (PAR_MIN_WORK / 4 / work.max(1)).max(1);
                pool.install(|| {
                    y.par_chunks_mut(y_row)
                        .zip(z.par_chunks_mut(z_row))
                        .enumerate()
                        .with_min_len(min_rows)
                        .for_each(|(r, (a, b))| f(r, a, b))
                })
            }
            _ => y
                .chunks_mut(y_row)
                .zip(z.chunks_mut(z_row))
                .enumerate()
                .for_each(|(r, (a, b))| f(r, a, b)),
        }
    }
}

/// `(shift + scale x)^power` in upstream's steps (src/caffe/layers/power_layer.cpp): scale,
/// shift, then power, each skipped when it is the identity, so that `-0` stays `-0` and
/// `pow(x, 1)`, a libm call, is never made.
#[inline(always)]
fn power_step(v: f32, power: f32, scale: f32, shift: f32) -> f32 {
    let scaled = if scale == 1.0 { v } else { v * scale };
    let shifted = if shift == 0.0 { scaled } else { scaled + shift };
    if power == 1.0 {
        shifted
    } else {
        shifted.powf(power)
    }
}

/// The range `off..off + len` of `buf` for reading.
fn rd<'a>(
    op: &'static str,
    arg: &'static str,
    buf: &'a CpuBuffer,
    off: usize,
    len: usize,
) -> Result<&'a [f32]> {
    Ok(&buf.data[check_range(op, arg, buf.len(), off, len)?])
}

/// The value of a scalar argument.
fn scalar(op: &'static str, arg: &'static str, s: Scalar<'_, CpuBuffer>) -> Result<f32> {
    match s {
        Scalar::Value(v) => Ok(v),
        Scalar::At(buf, off) => Ok(rd(op, arg, buf, off, 1)?[0]),
    }
}

/// The range `off..off + len` of `buf` for writing.
fn wr<'a>(
    op: &'static str,
    arg: &'static str,
    buf: &'a mut CpuBuffer,
    off: usize,
    len: usize,
) -> Result<&'a mut [f32]> {
    let range = check_range(op, arg, buf.len(), off, len)?;
    Ok(&mut buf.data[range])
}

/// Resolves a [`Src`] of `len` elements.
fn operand<'a>(
    op: &'static str,
    arg: &'static str,
    src: Src<'a, CpuBuffer>,
    len: usize,
) -> Result<Operand<'a>> {
    Ok(match src {
        Src::At(buf, off) => Operand::Slice(rd(op, arg, buf, off, len)?),
        Src::InPlace => Operand::Same,
    })
}

macro_rules! unary_op {
    ($name:ident, $op:literal, |$v:ident| $body:expr) => {
        fn $name(
            &self,
            n: usize,
            x: Src<'_, CpuBuffer>,
            y: &mut CpuBuffer,
            y_off: usize,
        ) -> Result<()> {
            let x = operand($op, "x", x, n)?;
            let y = wr($op, "y", y, y_off, n)?;
            elementwise::map1(self.par(), x, y, |$v| $body);
            Ok(())
        }
    };
}

macro_rules! binary_op {
    ($name:ident, $op:literal, |$a:ident, $b:ident| $body:expr) => {
        fn $name(
            &self,
            n: usize,
            a: Src<'_, CpuBuffer>,
            b: Src<'_, CpuBuffer>,
            y: &mut CpuBuffer,
            y_off: usize,
        ) -> Result<()> {
            let a = operand($op, "a", a, n)?;
            let b = operand($op, "b", b, n)?;
            let y = wr($op, "y", y, y_off, n)?;
            elementwise::map2(self.par(), a, b, y, |$a, $b| $body);
            Ok(())
        }
    };
}

impl Backend for CpuBackend {
    type Buffer = CpuBuffer;

    fn name(&self) -> &'static str {
        "CPU"
    }

    fn alloc(&self, len: usize) -> Result<CpuBuffer> {
        Ok(CpuBuffer {
            data: crate::backend::zeroed_host_buffer("alloc", len)?,
        })
    }

    fn upload(&self, src: &[f32], dst: &mut CpuBuffer, dst_off: usize) -> Result<()> {
        wr("upload", "dst", dst, dst_off, src.len())?.copy_from_slice(src);
        Ok(())
    }

    fn download(&self, src: &CpuBuffer, src_off: usize, dst: &mut [f32]) -> Result<()> {
        dst.copy_from_slice(rd("download", "src", src, src_off, dst.len())?);
        Ok(())
    }

    fn copy(
        &self,
        n: usize,
        x: &CpuBuffer,
        x_off: usize,
        y: &mut CpuBuffer,
        y_off: usize,
    ) -> Result<()> {
        let x = rd("copy", "x", x, x_off, n)?;
        let y = wr("copy", "y", y, y_off, n)?;
        self.par()
            .chunks_mut(y, |s, c| c.copy_from_slice(&x[s..s + c.len()]));
        Ok(())
    }

    fn set(&self, n: usize, value: f32, y: &mut CpuBuffer, y_off: usize) -> Result<()> {
        let y = wr("set", "y", y, y_off, n)?;
        self.par().chunks_mut(y, |_, c| c.fill(value));
        Ok(())
    }

    fn add_scalar(&self, n: usize, value: f32, y: &mut CpuBuffer, y_off: usize) -> Result<()> {
        let y = wr("add_scalar", "y", y, y_off, n)?;
        elementwise::map1(self.par(), Operand::Same, y, |v| v + value);
        Ok(())
    }

    fn rng_uniform(
        &self,
        n: usize,
        lo: f32,
        hi: f32,
        rng: &mut Rng,
        y: &mut CpuBuffer,
        y_off: usize,
    ) -> Result<()> {
        if lo.is_nan() || hi.is_nan() || lo > hi {
            return Err(invalid(
                "rng_uniform",
                format!("needs lo <= hi, got [{lo}, {hi}]"),
            ));
        }
        rng::uniform(rng, lo, hi, wr("rng_uniform", "y", y, y_off, n)?);
        Ok(())
    }

    fn rng_gaussian(
        &self,
        n: usize,
        mean: f32,
        std: f32,
        rng: &mut Rng,
        y: &mut CpuBuffer,
        y_off: usize,
    ) -> Result<()> {
        if std.is_nan() || std < 0.0 {
            return Err(invalid(
                "rng_gaussian",
                format!("needs std >= 0, got {std}"),
            ));
        }
        rng::gaussian(rng, mean, std, wr("rng_gaussian", "y", y, y_off, n)?);
        Ok(())
    }

    fn rng_bernoulli(
        &self,
        n: usize,
        p: f32,
        rng: &mut Rng,
        y: &mut CpuBuffer,
        y_off: usize,
    ) -> Result<()> {
        check_probability("rng_bernoulli", p)?;
        rng::bernoulli(rng, p, wr("rng_bernoulli", "y", y, y_off, n)?);
        Ok(())
    }

    fn rng_bernoulli_stream(
        &self,
        n: usize,
        p: f32,
        state: &mut CpuBuffer,
        state_off: usize,
        y: &mut CpuBuffer,
        y_off: usize,
    ) -> Result<()> {
        const OP: &str = "rng_bernoulli_stream";
        check_probability(OP, p)?;
        let state = wr(OP, "state", state, state_off, philox::STATE_LEN)?;
        let y = wr(OP, "y", y, y_off, n)?;
        philox::group_count(OP, n)?;
        let (key, draw) = philox::read_state(state);
        // Chunks start at multiples of 4 (PAR_CHUNK is), so each holds whole groups.
        self.par().chunks_mut(y, |start, chunk| {
            for (g, out) in chunk.chunks_mut(4).enumerate() {
                let group = ((start / 4) + g) as u32;
                let draws = philox::uniform_group(key, draw, group);
                for (v, u) in out.iter_mut().zip(draws) {
                    *v = if u < p { 1.0 } else { 0.0 };
                }
            }
        });
        philox::advance(state);
        Ok(())
    }

    fn gemm(
        &self,
        trans_a: Transpose,
        trans_b: Transpose,
        m: usize,
        n: usize,
        k: usize,
        alpha: f32,
        a: &CpuBuffer,
        a_off: usize,
        lda: usize,
        b: &CpuBuffer,
        b_off: usize,
        ldb: usize,
        beta: f32,
        c: &mut CpuBuffer,
        c_off: usize,
        ldc: usize,
    ) -> Result<()> {
        const OP: &str = "gemm";
        let [a_span, b_span, c_span] =
            gemm_spans(OP, (trans_a, trans_b), (m, n, k), (lda, ldb, ldc))?;
        let a = rd(OP, "a", a, a_off, a_span)?;
        let b = rd(OP, "b", b, b_off, b_span)?;
        let c = wr(OP, "c", c, c_off, c_span)?;
        gemm::gemm(
            self.par(),
            trans_a,
            trans_b,
            m,
            n,
            k,
            alpha,
            a,
            lda,
            b,
            ldb,
            beta,
            c,
            ldc,
        );
        Ok(())
    }

    fn gemv(
        &self,
        trans_a: Transpose,
        m: usize,
        n: usize,
        alpha: f32,
        a: &CpuBuffer,
        a_off: usize,
        x: &CpuBuffer,
        x_off: usize,
        beta: f32,
        y: &mut CpuBuffer,
        y_off: usize,
    ) -> Result<()> {
        const OP: &str = "gemv";
        let (xl, yl) = if trans_a == Transpose::NoTrans {
            (n, m)
        } else {
            (m, n)
        };
        let a = rd(OP, "a", a, a_off, m * n)?;
        let x = rd(OP, "x", x, x_off, xl)?;
        let y = wr(OP, "y", y, y_off, yl)?;
        gemm::gemv(self.par(), trans_a, m, n, alpha, a, x, beta, y);
        Ok(())
    }

    fn axpy(
        &self,
        n: usize,
        alpha: f32,
        x: &CpuBuffer,
        x_off: usize,
        y: &mut CpuBuffer,
        y_off: usize,
    ) -> Result<()> {
        let x = rd("axpy", "x", x, x_off, n)?;
        let y = wr("axpy", "y", y, y_off, n)?;
        elementwise::map2(self.par(), Operand::Slice(x), Operand::Same, y, |x, y| {
            alpha * x + y
        });
        Ok(())
    }

    fn axpby<'a>(
        &self,
        n: usize,
        alpha: impl Into<Scalar<'a, CpuBuffer>>,
        x: &CpuBuffer,
        x_off: usize,
        beta: f32,
        y: &mut CpuBuffer,
        y_off: usize,
    ) -> Result<()> {
        let alpha = scalar("axpby", "alpha", alpha.into())?;
        let x = rd("axpby", "x", x, x_off, n)?;
        let y = wr("axpby", "y", y, y_off, n)?;
        if beta == 0.0 {
            elementwise::map1(self.par(), Operand::Slice(x), y, |x| alpha * x);
        } else {
            elementwise::map2(self.par(), Operand::Slice(x), Operand::Same, y, |x, y| {
                alpha * x + beta * y
            });
        }
        Ok(())
    }

    fn scale<'a>(
        &self,
        n: usize,
        alpha: impl Into<Scalar<'a, CpuBuffer>>,
        x: Src<'_, CpuBuffer>,
        y: &mut CpuBuffer,
        y_off: usize,
    ) -> Result<()> {
        let alpha = scalar("scale", "alpha", alpha.into())?;
        let x = operand("scale", "x", x, n)?;
        let y = wr("scale", "y", y, y_off, n)?;
        elementwise::map1(self.par(), x, y, |v| alpha * v);
        Ok(())
    }

    binary_op!(add, "add", |a, b| a + b);
    binary_op!(sub, "sub", |a, b| a - b);
    binary_op!(mul, "mul", |a, b| a * b);
    binary_op!(div, "div", |a, b| a / b);
    binary_op!(max, "max", |a, b| if a < b { b } else { a });

    fn powx(
        &self,
        n: usize,
        x: Src<'_, CpuBuffer>,
        p: f32,
        y: &mut CpuBuffer,
        y_off: usize,
    ) -> Result<()> {
        let x = operand("powx", "x", x, n)?;
        let y = wr("powx", "y", y, y_off, n)?;
        if p == 2.0 {
            elementwise::map1(self.par(), x, y, |v| v * v);
        } else if p == 1.0 {
            elementwise::map1(self.par(), x, y, |v| v);
        } else {
            elementwise::map1(self.par(), x, y, |v| v.powf(p));
        }
        Ok(())
    }

    fn power(
        &self,
        n: usize,
        x: Src<'_, CpuBuffer>,
        power: f32,
        scale: f32,
        shift: f32,
        y: &mut CpuBuffer,
        y_off: usize,
    ) -> Result<()> {
        let x = operand("power", "x", x, n)?;
        let y = wr("power", "y", y, y_off, n)?;
        if power == 1.0 {
            elementwise::map1(self.par(), x, y, |v| power_step(v, 1.0, scale, shift));
        } else {
            elementwise::map1(self.par(), x, y, |v| power_step(v, power, scale, shift));
        }
        Ok(())
    }

    unary_op!(exp, "exp", |v| v.exp());
    unary_op!(log, "log", |v| v.ln());
    unary_op!(abs, "abs", |v| v.abs());
    unary_op!(sqr, "sqr", |v| v * v);
    unary_op!(sqrt, "sqrt", |v| v.sqrt());
    unary_op!(sign, "sign", |v| if v > 0.0 {
        1.0
    } else if v < 0.0 {
        -1.0
    } else {
        0.0
    });

    fn relu_forward(
        &self,
        n: usize,
        slope: f32,
        x: Src<'_, CpuBuffer>,
        y: &mut CpuBuffer,
        y_off: usize,
    ) -> Result<()> {
        let x = operand("relu_forward", "x", x, n)?;
        let y = wr("relu_forward", "y", y, y_off, n)?;
        // Branches rather than max/min so that a NaN input stays NaN.
        if slope == 0.0 {
            elementwise::map1(self.par(), x, y, |v| if v < 0.0 { 0.0 } else { v });
        } else {
            elementwise::map1(self.par(), x, y, |v| if v > 0.0 { v } else { slope * v });
        }
        Ok(())
    }

    fn relu_backward(
        &self,
        n: usize,
        slope: f32,
        x: &CpuBuffer,
        x_off: usize,
        dy: Src<'_, CpuBuffer>,
        dx: &mut CpuBuffer,
        dx_off: usize,
    ) -> Result<()> {
        const OP: &str = "relu_backward";
        let x = rd(OP, "x", x, x_off, n)?;
        let dy = operand(OP, "dy", dy, n)?;
        let dx = wr(OP, "dx", dx, dx_off, n)?;
        elementwise::map2(self.par(), Operand::Slice(x), dy, dx, |x, d| {
            if x > 0.0 {
                d
            } else {
                d * slope
            }
        });
        Ok(())
    }

    fn sigmoid_forward(
        &self,
        n: usize,
        x: Src<'_, CpuBuffer>,
        y: &mut CpuBuffer,
        y_off: usize,
    ) -> Result<()> {
        let x = operand("sigmoid_forward", "x", x, n)?;
        let y = wr("sigmoid_forward", "y", y, y_off, n)?;
        elementwise::map1(self.par(), x, y, |v| 0.5 * (0.5 * v).tanh() + 0.5);
        Ok(())
    }

    fn sigmoid_backward(
        &self,
        n: usize,
        y: &CpuBuffer,
        y_off: usize,
        dy: Src<'_, CpuBuffer>,
        dx: &mut CpuBuffer,
        dx_off: usize,
    ) -> Result<()> {
        const OP: &str = "sigmoid_backward";
        let y = rd(OP, "y", y, y_off, n)?;
        let dy = operand(OP, "dy", dy, n)?;
        let dx = wr(OP, "dx", dx, dx_off, n)?;
        elementwise::map2(self.par(), Operand::Slice(y), dy, dx, |y, d| {
            d * y * (1.0 - y)
        });
        Ok(())
    }

    fn tanh_forward(
        &self,
        n: usize,
        x: Src<'_, CpuBuffer>,
        y: &mut CpuBuffer,
        y_off: usize,
    ) -> Result<()> {
        let x = operand("tanh_forward", "x", x, n)?;
        let y = wr("tanh_forward", "y", y, y_off, n)?;
        elementwise::map1(self.par(), x, y, f32::tanh);
        Ok(())
    }

    fn tanh_backward(
        &self,
        n: usize,
        y: &CpuBuffer,
        y_off: usize,
        dy: Src<'_, CpuBuffer>,
        dx: &mut CpuBuffer,
        dx_off: usize,
    ) -> Result<()> {
        const OP: &str = "tanh_backward";
        let y = rd(OP, "y", y, y_off, n)?;
        let dy = operand(OP, "dy", dy, n)?;
        let dx = wr(OP, "dx", dx, dx_off, n)?;
        elementwise::map2(self.par(), Operand::Slice(y), dy, dx, |y, d| {
            d * (1.0 - y * y)
        });
        Ok(())
    }

    fn elu_forward(
        &self,
        n: usize,
        alpha: f32,
        x: Src<'_, CpuBuffer>,
        y: &mut CpuBuffer,
        y_off: usize,
    ) -> Result<()> {
        let x = operand("elu_forward", "x", x, n)?;
        let y = wr("elu_forward", "y", y, y_off, n)?;
        elementwise::map1(self.par(), x, y, |v| {
            if v > 0.0 {
                v
            } else {
                alpha * (v.exp() - 1.0)
            }
        });
        Ok(())
    }

    fn elu_backward(
        &self,
        n: usize,
        alpha: f32,
        x: &CpuBuffer,
        x_off: usize,
        y: &CpuBuffer,
        y_off: usize,
        dy: Src<'_, CpuBuffer>,
        dx: &mut CpuBuffer,
        dx_off: usize,
    ) -> Result<()> {
        const OP: &str = "elu_backward";
        let x = rd(OP, "x", x, x_off, n)?;
        let y = rd(OP, "y", y, y_off, n)?;
        let dy = operand(OP, "dy", dy, n)?;
        let dx = wr(OP, "dx", dx, dx_off, n)?;
        elementwise::map3(self.par(), x, y, dy, dx, |x, y, d| {
            if x > 0.0 {
                d
            } else {
                d * (alpha + y)
            }
        });
        Ok(())
    }

    fn bnll_forward(
        &self,
        n: usize,
        x: Src<'_, CpuBuffer>,
        y: &mut CpuBuffer,
        y_off: usize,
    ) -> Result<()> {
        let x = operand("bnll_forward", "x", x, n)?;
        let y = wr("bnll_forward", "y", y, y_off, n)?;
        elementwise::map1(self.par(), x, y, |v| {
            if v > 0.0 {
                v + (-v).exp().ln_1p()
            } else {
                v.exp().ln_1p()
            }
        });
        Ok(())
    }

    fn bnll_backward(
        &self,
        n: usize,
        x: &CpuBuffer,
        x_off: usize,
        dy: Src<'_, CpuBuffer>,
        dx: &mut CpuBuffer,
        dx_off: usize,
    ) -> Result<()> {
        const OP: &str = "bnll_backward";
        let x = rd(OP, "x", x, x_off, n)?;
        let dy = operand(OP, "dy", dy, n)?;
        let dx = wr(OP, "dx", dx, dx_off, n)?;
        elementwise::map2(self.par(), Operand::Slice(x), dy, dx, |x, d| {
            let e = x.min(kernel_constants::BNLL_THRESHOLD).exp();
            d * e / (e + 1.0)
        });
        Ok(())
    }

    fn sum(&self, n: usize, x: &CpuBuffer, x_off: usize) -> Result<f32> {
        let x = rd("sum", "x", x, x_off, n)?;
        Ok(reductions::reduce(self.par(), x, x, |a, _| a) as f32)
    }

    fn sum_into(
        &self,
        n: usize,
        alpha: f32,
        x: &CpuBuffer,
        x_off: usize,
        y: &mut CpuBuffer,
        y_off: usize,
    ) -> Result<()> {
        let x = rd("sum_into", "x", x, x_off, n)?;
        let sum = reductions::reduce(self.par(), x, x, |a, _| a);
        wr("sum_into", "y", y, y_off, 1)?[0] = (f64::from(alpha) * sum) as f32;
        Ok(())
    }

    fn asum(&self, n: usize, x: &CpuBuffer, x_off: usize) -> Result<f32> {
        let x = rd("asum", "x", x, x_off, n)?;
        Ok(reductions::reduce(self.par(), x, x, |a, _| a.abs()) as f32)
    }

    fn sumsq(&self, n: usize, x: &CpuBuffer, x_off: usize) -> Result<f32> {
        let x = rd("sumsq", "x", x, x_off, n)?;
        Ok(reductions::reduce(self.par(), x, x, |a, _| a * a) as f32)
    }

    fn dot(
        &self,
        n: usize,
        x: &CpuBuffer,
        x_off: usize,
        y: &CpuBuffer,
        y_off: usize,
    ) -> Result<f32> {
        let x = rd("dot", "x", x, x_off, n)?;
        let y = rd("dot", "y", y, y_off, n)?;
        Ok(reductions::reduce(self.par(), x, y, |a, b| a * b) as f32)
    }

    fn max_over_axis(
        &self,
        outer: usize,
        dim: usize,
        inner: usize,
        x: &CpuBuffer,
        x_off: usize,
        y: &mut CpuBuffer,
        y_off: usize,
    ) -> Result<()> {
        const OP: &str = "max_over_axis";
        let x = rd(OP, "x", x, x_off, outer * dim * inner)?;
        let y = wr(OP, "y", y, y_off, outer * inner)?;
        reductions::over_axis(
            self.par(),
            dim,
            inner,
            x,
            None,
            y,
            reductions::AxisReduce::Max,
        );
        Ok(())
    }

    fn sum_over_axis(
        &self,
        outer: usize,
        dim: usize,
        inner: usize,
        x: &CpuBuffer,
        x_off: usize,
        y: &mut CpuBuffer,
        y_off: usize,
    ) -> Result<()> {
        const OP: &str = "sum_over_axis";
        let x = rd(OP, "x", x, x_off, outer * dim * inner)?;
        let y = wr(OP, "y", y, y_off, outer * inner)?;
        reductions::over_axis(
            self.par(),
            dim,
            inner,
            x,
            None,
            y,
            reductions::AxisReduce::Sum,
        );
        Ok(())
    }

    fn dot_over_axis(
        &self,
        outer: usize,
        dim: usize,
        inner: usize,
        a: &CpuBuffer,
        a_off: usize,
        b: &CpuBuffer,
        b_off: usize,
        y: &mut CpuBuffer,
        y_off: usize,
    ) -> Result<()> {
        const OP: &str = "dot_over_axis";
        let a = rd(OP, "a", a, a_off, outer * dim * inner)?;
        let b = rd(OP, "b", b, b_off, outer * dim * inner)?;
        let y = wr(OP, "y", y, y_off, outer * inner)?;
        reductions::over_axis(
            self.par(),
            dim,
            inner,
            a,
            Some(b),
            y,
            reductions::AxisReduce::Dot,
        );
        Ok(())
    }

    fn sub_along_axis(
        &self,
        outer: usize,
        dim: usize,
        inner: usize,
        v: &CpuBuffer,
        v_off: usize,
        y: &mut CpuBuffer,
        y_off: usize,
    ) -> Result<()> {
        const OP: &str = "sub_along_axis";
        let v = rd(OP, "v", v, v_off, outer * inner)?;
        let y = wr(OP, "y", y, y_off, outer * dim * inner)?;
        reductions::along_axis(self.par(), dim, inner, v, y, |y, v| y - v);
        Ok(())
    }

    fn div_along_axis(
        &self,
        outer: usize,
        dim: usize,
        inner: usize,
        v: &CpuBuffer,
        v_off: usize,
        y: &mut CpuBuffer,
        y_off: usize,
    ) -> Result<()> {
        const OP: &str = "div_along_axis";
        let v = rd(OP, "v", v, v_off, outer * inner)?;
        let y = wr(OP, "y", y, y_off, outer * dim * inner)?;
        reductions::along_axis(self.par(), dim, inner, v, y, |y, v| y / v);
        Ok(())
    }

    fn add_per_channel(
        &self,
        outer: usize,
        channels: usize,
        inner: usize,
        v: &CpuBuffer,
        v_off: usize,
        y: &mut CpuBuffer,
        y_off: usize,
    ) -> Result<()> {
        const OP: &str = "add_per_channel";
        let v = rd(OP, "v", v, v_off, channels)?;
        let y = wr(OP, "y", y, y_off, outer * channels * inner)?;
        reductions::per_channel(self.par(), channels, inner, v, Operand::Same, y, |x, v| {
            x + v
        });
        Ok(())
    }

    fn mul_per_channel(
        &self,
        outer: usize,
        channels: usize,
        inner: usize,
        v: &CpuBuffer,
        v_off: usize,
        x: Src<'_, CpuBuffer>,
        y: &mut CpuBuffer,
        y_off: usize,
    ) -> Result<()> {
        const OP: &str = "mul_per_channel";
        let len = outer * channels * inner;
        let v = rd(OP, "v", v, v_off, channels)?;
        let x = operand(OP, "x", x, len)?;
        let y = wr(OP, "y", y, y_off, len)?;
        reductions::per_channel(self.par(), channels, inner, v, x, y, |x, v| x * v);
        Ok(())
    }

    fn sum_per_channel(
        &self,
        outer: usize,
        channels: usize,
        inner: usize,
        alpha: f32,
        x: &CpuBuffer,
        x_off: usize,
        beta: f32,
        y: &mut CpuBuffer,
        y_off: usize,
    ) -> Result<()> {
        const OP: &str = "sum_per_channel";
        let x = rd(OP, "x", x, x_off, outer * channels * inner)?;
        let y = wr(OP, "y", y, y_off, channels)?;
        reductions::sum_per_channel(self.par(), outer, channels, inner, alpha, x, beta, y);
        Ok(())
    }

    fn im2col(
        &self,
        g: &ConvGeom,
        im: &CpuBuffer,
        im_off: usize,
        col: &mut CpuBuffer,
        col_off: usize,
    ) -> Result<()> {
        g.validate("im2col")?;
        let im = rd("im2col", "im", im, im_off, g.im_len())?;
        let col = wr("im2col", "col", col, col_off, g.col_len())?;
        im2col::im2col(self.par(), g, im, col);
        Ok(())
    }

    fn col2im(
        &self,
        g: &ConvGeom,
        col: &CpuBuffer,
        col_off: usize,
        im: &mut CpuBuffer,
        im_off: usize,
    ) -> Result<()> {
        g.validate("col2im")?;
        let col = rd("col2im", "col", col, col_off, g.col_len())?;
        let im = wr("col2im", "im", im, im_off, g.im_len())?;
        im2col::col2im(self.par(), g, col, im);
        Ok(())
    }

    fn conv_workspace_len(&self, _c: &ConvBatch) -> usize {
        // The backend's own scratch is used instead (see `CpuBackend::scratch`).
        0
    }

    fn conv_forward(
        &self,
        c: &ConvBatch,
        x: &CpuBuffer,
        x_off: usize,
        w: &CpuBuffer,
        w_off: usize,
        bias: Option<(&CpuBuffer, usize)>,
        y: &mut CpuBuffer,
        y_off: usize,
        _workspace: &mut CpuBuffer,
    ) -> Result<()> {
        const OP: &str = "conv_forward";
        c.validate(OP)?;
        let x = rd(OP, "x", x, x_off, c.num * c.in_len())?;
        let w = rd(OP, "w", w, w_off, c.weight_len())?;
        let bias = match bias {
            Some((b, b_off)) => Some(rd(OP, "bias", b, b_off, c.out_channels)?),
            None => None,
        };
        let y = wr(OP, "y", y, y_off, c.num * c.out_len())?;
        let mut scratch = self.scratch.lock().unwrap_or_else(|e| e.into_inner());
        conv::forward(self.par(), &mut scratch, c, x, w, bias, y)
    }

    fn conv_backward(
        &self,
        c: &ConvBatch,
        x: &CpuBuffer,
        x_off: usize,
        w: &CpuBuffer,
        w_off: usize,
        dy: &CpuBuffer,
        dy_off: usize,
        dw: Option<(&mut CpuBuffer, usize)>,
        dx: Option<(&mut CpuBuffer, usize)>,
        _workspace: &mut CpuBuffer,
    ) -> Result<()> {
        const OP: &str = "conv_backward";
        c.validate(OP)?;
        // `x` is read only for the weight gradient.
        let x_len = if dw.is_some() { c.num * c.in_len() } else { 0 };
        let x = rd(OP, "x", x, x_off, x_len)?;
        let w = rd(OP, "w", w, w_off, c.weight_len())?;
        let dy = rd(OP, "dy", dy, dy_off, c.num * c.out_len())?;
        let dw = match dw {
            Some((b, off)) => Some(wr(OP, "dw", b, off, c.weight_len())?),
            None => None,
        };
        let dx = match dx {
            Some((b, off)) => Some(wr(OP, "dx", b, off, c.num * c.in_len())?),
            None => None,
        };
        let mut scratch = self.scratch.lock().unwrap_or_else(|e| e.into_inner());
        conv::backward(self.par(), &mut scratch, c, x, w, dy, dw, dx)
    }

    fn max_pool_forward(
        &self,
        g: &PoolGeom,
        x: &CpuBuffer,
        x_off: usize,
        y: &mut CpuBuffer,
        y_off: usize,
        mask: &mut CpuBuffer,
        mask_off: usize,
    ) -> Result<()> {
        const OP: &str = "max_pool_forward";
        g.validate(OP)?;
        let x = rd(OP, "x", x, x_off, g.in_len())?;
        let y = wr(OP, "y", y, y_off, g.out_len())?;
        let mask = wr(OP, "mask", mask, mask_off, g.out_len())?;
        pooling::max_forward(self.par(), g, x, y, mask)
    }

    fn max_pool_backward(
        &self,
        g: &PoolGeom,
        dy: &CpuBuffer,
        dy_off: usize,
        mask: &CpuBuffer,
        mask_off: usize,
        dx: &mut CpuBuffer,
        dx_off: usize,
    ) -> Result<()> {
        const OP: &str = "max_pool_backward";
        g.validate(OP)?;
        let dy = rd(OP, "dy", dy, dy_off, g.out_len())?;
        let mask = rd(OP, "mask", mask, mask_off, g.out_len())?;
        let dx = wr(OP, "dx", dx, dx_off, g.in_len())?;
        if !pooling::max_backward(self.par(), g, dy, mask, dx) {
            return Err(invalid(
                OP,
                format!(
                    "mask holds an index outside the {}x{} plane",
                    g.height, g.width
                ),
            ));
        }
        Ok(())
    }

    fn ave_pool_forward(
        &self,
        g: &PoolGeom,
        x: &CpuBuffer,
        x_off: usize,
        y: &mut CpuBuffer,
        y_off: usize,
    ) -> Result<()> {
        const OP: &str = "ave_pool_forward";
        g.validate(OP)?;
        let x = rd(OP, "x", x, x_off, g.in_len())?;
        let y = wr(OP, "y", y, y_off, g.out_len())?;
        pooling::ave_forward(self.par(), g, x, y)
    }

    fn ave_pool_backward(
        &self,
        g: &PoolGeom,
        dy: &CpuBuffer,
        dy_off: usize,
        dx: &mut CpuBuffer,
        dx_off: usize,
    ) -> Result<()> {
        const OP: &str = "ave_pool_backward";
        g.validate(OP)?;
        let dy = rd(OP, "dy", dy, dy_off, g.out_len())?;
        let dx = wr(OP, "dx", dx, dx_off, g.in_len())?;
        pooling::ave_backward(self.par(), g, dy, dx)
    }

    fn lrn_across_forward(
        &self,
        g: &LrnGeom,
        x: &CpuBuffer,
        x_off: usize,
        scale: &mut CpuBuffer,
        scale_off: usize,
        y: &mut CpuBuffer,
        y_off: usize,
    ) -> Result<()> {
        const OP: &str = "lrn_across_forward";
        g.validate(OP)?;
        let x = rd(OP, "x", x, x_off, g.len())?;
        let scale = wr(OP, "scale", scale, scale_off, g.len())?;
        let y = wr(OP, "y", y, y_off, g.len())?;
        lrn::across_forward(self.par(), g, x, scale, y);
        Ok(())
    }

    fn lrn_across_backward(
        &self,
        g: &LrnGeom,
        x: &CpuBuffer,
        x_off: usize,
        y: &CpuBuffer,
        y_off: usize,
        scale: &CpuBuffer,
        scale_off: usize,
        dy: &CpuBuffer,
        dy_off: usize,
        dx: &mut CpuBuffer,
        dx_off: usize,
    ) -> Result<()> {
        const OP: &str = "lrn_across_backward";
        g.validate(OP)?;
        let x = rd(OP, "x", x, x_off, g.len())?;
        let y = rd(OP, "y", y, y_off, g.len())?;
        let scale = rd(OP, "scale", scale, scale_off, g.len())?;
        let dy = rd(OP, "dy", dy, dy_off, g.len())?;
        let dx = wr(OP, "dx", dx, dx_off, g.len())?;
        lrn::across_backward(self.par(), g, x, y, scale, dy, dx);
        Ok(())
    }

    fn lrn_within_forward(
        &self,
        g: &PoolGeom,
        alpha: f32,
        beta: f32,
        x: &CpuBuffer,
        mean: &mut CpuBuffer,
        power: &mut CpuBuffer,
        y: &mut CpuBuffer,
        _sq: &mut CpuBuffer,
    ) -> Result<()> {
        const OP: &str = "lrn_within_forward";
        g.validate_lrn_window(OP)?;
        let n = g.in_len();
        let x = rd(OP, "x", x, 0, n)?;
        let mean = wr(OP, "mean", mean, 0, n)?;
        let power = wr(OP, "power", power, 0, n)?;
        lrn::within_forward(self.par(), g, alpha, beta, x, mean, power);
        let y = wr(OP, "y", y, 0, n)?;
        elementwise::map2(
            self.par(),
            Operand::Slice(x),
            Operand::Slice(power),
            y,
            |a, b| a * b,
        );
        Ok(())
    }

    fn lrn_within_backward(
        &self,
        g: &PoolGeom,
        alpha: f32,
        beta: f32,
        x: &CpuBuffer,
        mean: &CpuBuffer,
        power: &CpuBuffer,
        dy: &CpuBuffer,
        dx: &mut CpuBuffer,
        _a: &mut CpuBuffer,
        _b: &mut CpuBuffer,
    ) -> Result<()> {
        const OP: &str = "lrn_within_backward";
        g.validate_lrn_window(OP)?;
        let n = g.in_len();
        let x = rd(OP, "x", x, 0, n)?;
        let mean = rd(OP, "mean", mean, 0, n)?;
        let power = rd(OP, "power", power, 0, n)?;
        let dy = rd(OP, "dy", dy, 0, n)?;
        let dx = wr(OP, "dx", dx, 0, n)?;
        lrn::within_backward(self.par(), g, alpha, beta, x, mean, power, dy, dx);
        Ok(())
    }

    // ---- ops added for the neuron and plumbing layers: see neuron.rs ----

    fn prelu_forward(
        &self,
        outer: usize,
        channels: usize,
        inner: usize,
        slope: &CpuBuffer,
        slope_off: usize,
        x: Src<'_, CpuBuffer>,
        y: &mut CpuBuffer,
        y_off: usize,
    ) -> Result<()> {
        self.prelu_forward_cpu((outer, channels, inner), slope, slope_off, x, y, y_off)
    }

    fn prelu_backward(
        &self,
        outer: usize,
        channels: usize,
        inner: usize,
        slope: &CpuBuffer,
        slope_off: usize,
        x: &CpuBuffer,
        x_off: usize,
        dy: Src<'_, CpuBuffer>,
        dx: &mut CpuBuffer,
        dx_off: usize,
    ) -> Result<()> {
        let geom = (outer, channels, inner);
        self.prelu_backward_cpu(geom, slope, slope_off, x, x_off, dy, dx, dx_off)
    }

    fn prelu_slope_grad(
        &self,
        outer: usize,
        channels: usize,
        inner: usize,
        x: &CpuBuffer,
        x_off: usize,
        dy: &CpuBuffer,
        dy_off: usize,
        dslope: &mut CpuBuffer,
        dslope_off: usize,
    ) -> Result<()> {
        let geom = (outer, channels, inner);
        self.prelu_slope_grad_cpu(geom, x, x_off, dy, dy_off, dslope, dslope_off)
    }

    fn copy_2d(
        &self,
        rows: usize,
        cols: usize,
        x: &CpuBuffer,
        x_off: usize,
        x_stride: usize,
        y: &mut CpuBuffer,
        y_off: usize,
        y_stride: usize,
    ) -> Result<()> {
        self.copy_2d_cpu((rows, cols), x, x_off, x_stride, y, y_off, y_stride)
    }

    fn running_argmax(
        &self,
        n: usize,
        index: f32,
        x: &CpuBuffer,
        x_off: usize,
        y: &mut CpuBuffer,
        y_off: usize,
        mask: &mut CpuBuffer,
        mask_off: usize,
    ) -> Result<()> {
        self.running_argmax_cpu(n, index, x, x_off, y, y_off, mask, mask_off)
    }

    fn copy_where_eq(
        &self,
        n: usize,
        mask: &CpuBuffer,
        mask_off: usize,
        value: f32,
        x: &CpuBuffer,
        x_off: usize,
        y: &mut CpuBuffer,
        y_off: usize,
    ) -> Result<()> {
        self.copy_where_eq_cpu(n, mask, mask_off, value, x, x_off, y, y_off)
    }

    fn top_k_over_axis(
        &self,
        outer: usize,
        dim: usize,
        inner: usize,
        k: usize,
        x: &CpuBuffer,
        x_off: usize,
        values: &mut CpuBuffer,
        values_off: usize,
        indices: &mut CpuBuffer,
        indices_off: usize,
    ) -> Result<()> {
        let geom = (outer, dim, inner, k);
        self.top_k_over_axis_cpu(geom, x, x_off, values, values_off, indices, indices_off)
    }

    // ---- ops added for the loss and accuracy layers: see loss.rs ----

    fn label_mask(
        &self,
        n: usize,
        label: &CpuBuffer,
        label_off: usize,
        ignore_label: Option<i32>,
        y: &mut CpuBuffer,
        y_off: usize,
    ) -> Result<()> {
        self.label_mask_cpu(n, label, label_off, ignore_label, y, y_off)
    }

    fn gather_at_label(
        &self,
        outer: usize,
        dim: usize,
        inner: usize,
        x: &CpuBuffer,
        x_off: usize,
        label: &CpuBuffer,
        label_off: usize,
        ignore_label: Option<i32>,
        fill: f32,
        y: &mut CpuBuffer,
        y_off: usize,
    ) -> Result<()> {
        let geom = (outer, dim, inner);
        self.gather_at_label_cpu(
            geom,
            x,
            x_off,
            label,
            label_off,
            ignore_label,
            fill,
            y,
            y_off,
        )
    }

    fn affine_at_label(
        &self,
        outer: usize,
        dim: usize,
        inner: usize,
        label: &CpuBuffer,
        label_off: usize,
        ignore_label: Option<i32>,
        alpha: f32,
        beta: f32,
        y: &mut CpuBuffer,
        y_off: usize,
    ) -> Result<()> {
        let geom = (outer, dim, inner);
        let ab = (alpha, beta);
        self.affine_at_label_cpu(geom, label, label_off, ignore_label, ab, y, y_off)
    }

    fn top_k_hits(
        &self,
        outer: usize,
        dim: usize,
        inner: usize,
        top_k: usize,
        x: &CpuBuffer,
        x_off: usize,
        label: &CpuBuffer,
        label_off: usize,
        ignore_label: Option<i32>,
        y: &mut CpuBuffer,
        y_off: usize,
    ) -> Result<()> {
        let geom = (outer, dim, inner, top_k);
        self.top_k_hits_cpu(geom, x, x_off, label, label_off, ignore_label, y, y_off)
    }

    fn sum_by_label(
        &self,
        n: usize,
        classes: usize,
        x: &CpuBuffer,
        x_off: usize,
        label: &CpuBuffer,
        label_off: usize,
        ignore_label: Option<i32>,
        y: &mut CpuBuffer,
        y_off: usize,
    ) -> Result<()> {
        let geom = (n, classes);
        self.sum_by_label_cpu(geom, x, x_off, label, label_off, ignore_label, y, y_off)
    }

    fn sigmoid_cross_entropy(
        &self,
        n: usize,
        x: &CpuBuffer,
        x_off: usize,
        t: &CpuBuffer,
        t_off: usize,
        y: &mut CpuBuffer,
        y_off: usize,
    ) -> Result<()> {
        self.sigmoid_cross_entropy_cpu(n, x, x_off, t, t_off, y, y_off)
    }
}
