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
//!
//! Each op checks its views once (`HostView`) and then runs a loop over plain slices; the
//! element-wise op families dispatch their op enum to one loop per function.

mod batch_norm;
mod conv;
mod direct;
mod elementwise;
mod gemm;
mod im2col;
mod lane_sums;
mod loss;
mod lrn;
mod neuron;
mod pooling;
mod reductions;
mod rng;
mod scale;
mod simd;

use super::view::Extent;
use super::{
    check_probability, copy_2d_spans, gemm_spans, invalid, philox, Activation, Axis, AxisReduction,
    Backend, BatchNormOutput, BatchStatistics, Binary, Block, Broadcast, Capabilities, ConvBatch,
    ConvGeom, ConvGrads, DeviceBuffer, Distribution, Gemm, Gemv, Labels, LrnGeom, LrnSaved,
    LrnWithin, PoolGeom, Pooling, Reduction, Result, Rng, Scalar, Slice, SliceMut, Src, Transpose,
    Unary, Views,
};
use elementwise::Operand;
use lane_sums::Term;
use rayon::prelude::*;
use std::ops::Range;
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

/// Host memory: `len` f32 values. Unlike a generic [`Backend::Buffer`] it can be read and
/// written in place through [`CpuBuffer::as_slice`] and [`CpuBuffer::as_mut_slice`].
///
/// The allocation is reference-counted so that a view of it outside the engine (the numpy
/// arrays of the Python package, through [`CpuBuffer::share`]) keeps it alive after the buffer
/// itself is gone: a blob reshaped beyond its capacity, or a net dropped, leaves such a view
/// pointing at the old values, detached from the engine. Inside the engine a `CpuBuffer` is the
/// allocation's only owner (cloning one copies its values), except for the buffers that
/// [`CpuBuffer::alias`] makes for nets sharing their weights.
#[derive(Default)]
pub struct CpuBuffer {
    memory: Arc<HostMemory>,
}

impl CpuBuffer {
    /// Takes ownership of host values.
    pub fn from_vec(data: Vec<f32>) -> Self {
        Self {
            memory: Arc::new(HostMemory::from_vec(data)),
        }
    }
    /// The values, without copying.
    pub fn as_slice(&self) -> &[f32] {
        // SAFETY: the memory is `len` initialised f32 values, alive while `self.memory` is.
        // Inside the engine only this buffer reaches them, and writes need `&mut self`; a
        // `SharedHostMemory` holder writing through its pointer must not do so while the
        // engine uses the buffer (see `CpuBuffer::share`).
        unsafe { std::slice::from_raw_parts(self.memory.ptr, self.memory.len) }
    }
    /// The values, writable, without copying.
    pub fn as_mut_slice(&mut self) -> &mut [f32] {
        // SAFETY: as `as_slice`; `&mut self` excludes every other reference from the engine.
        unsafe { std::slice::from_raw_parts_mut(self.memory.ptr, self.memory.len) }
    }
    /// Gives the values back (copied when the memory is shared).
    pub fn into_vec(self) -> Vec<f32> {
        match Arc::try_unwrap(self.memory) {
            Ok(memory) => memory.into_vec(),
            Err(shared) => {
                // SAFETY: as `as_slice`.
                unsafe { std::slice::from_raw_parts(shared.ptr, shared.len) }.to_vec()
            }
        }
    }
    /// A second buffer over the same memory (upstream's `ShareData`): writes through either
    /// are seen by both.
    ///
    /// # Safety
    ///
    /// The two buffers alias: neither may be read or written while the other is borrowed
    /// mutably, which the borrow checker no longer sees (they live in different blobs).
    pub(crate) unsafe fn alias(&self) -> CpuBuffer {
        CpuBuffer {
            memory: Arc::clone(&self.memory),
        }
    }
    /// A second owner of the values, for a view outside the engine (a numpy array): it keeps
    /// the memory alive however long it lives, and its pointer reads and writes the same values
    /// the engine does, as long as this buffer is not replaced (a blob reshaped beyond its
    /// capacity gets new buffers). Whoever reads or writes through it must do so only while
    /// the engine is not using the buffer (the Python package: only while it holds the GIL and
    /// no engine call is running).
    pub fn share(&self) -> SharedHostMemory {
        SharedHostMemory {
            memory: Arc::clone(&self.memory),
        }
    }
}

impl Clone for CpuBuffer {
    /// A new buffer holding a copy of the values.
    fn clone(&self) -> Self {
        Self::from_vec(self.as_slice().to_vec())
    }
}

impl PartialEq for CpuBuffer {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl std::fmt::Debug for CpuBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CpuBuffer")
            .field("data", &self.as_slice())
            .finish()
    }
}

impl DeviceBuffer for CpuBuffer {
    fn len(&self) -> usize {
        self.memory.len
    }
}

/// A boxed slice of f32 held through a raw pointer, so that views of it may coexist (see
/// [`CpuBuffer::share`]).
struct HostMemory {
    ptr: *mut f32,
    len: usize,
}

// SAFETY: `HostMemory` owns its allocation like a `Box<[f32]>`; access to the values goes
// through `CpuBuffer`, whose `&`/`&mut` methods give the engine Rust's usual guarantees, and
// through `SharedHostMemory`'s raw pointer, whose users take on the rule its docs state.
unsafe impl Send for HostMemory {}
// SAFETY: as for `Send`.
unsafe impl Sync for HostMemory {}

impl HostMemory {
    fn from_vec(data: Vec<f32>) -> Self {
        let len = data.len();
        let ptr = Box::into_raw(data.into_boxed_slice()).cast::<f32>();
        Self { ptr, len }
    }

    fn into_vec(self) -> Vec<f32> {
        let this = std::mem::ManuallyDrop::new(self);
        // SAFETY: `ptr`/`len` came from `Box::into_raw` of a `Box<[f32]>` of `len` values, and
        // `ManuallyDrop` keeps `Drop` from freeing it a second time.
        unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(this.ptr, this.len)) }.into_vec()
    }
}

impl Default for HostMemory {
    fn default() -> Self {
        Self::from_vec(Vec::new())
    }
}

impl Drop for HostMemory {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` came from `Box::into_raw` of a `Box<[f32]>` of `len` values and
        // are freed only here.
        drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(self.ptr, self.len)) });
    }
}

/// A [`CpuBuffer`]'s memory as a view outside the engine holds it: see [`CpuBuffer::share`].
#[derive(Clone)]
pub struct SharedHostMemory {
    memory: Arc<HostMemory>,
}

impl SharedHostMemory {
    /// The first value. Reading or writing through it is the holder's responsibility: only
    /// while the engine is not using the buffer, and only `len` values.
    pub fn as_ptr(&self) -> *mut f32 {
        self.memory.ptr
    }
    /// The number of values.
    pub fn len(&self) -> usize {
        self.memory.len
    }
    /// Whether there are no values.
    pub fn is_empty(&self) -> bool {
        self.memory.len == 0
    }
}

impl std::fmt::Debug for SharedHostMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SharedHostMemory({} values)", self.memory.len)
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

/// Kernels running on the calling thread only: a task's own kernels, and loops that stay serial.
const SERIAL: Par<'static> = Par {
    pool: None,
    threads: 1,
};

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

/// The host values behind a view of CPU memory: each op checks a view once, here, and then
/// works on plain slices.
trait HostView<'a>: Sized {
    /// `&[f32]` for a [`Slice`], `&mut [f32]` for a [`SliceMut`].
    type Values;
    /// The buffer range an op touches in the view, checked ([`Extent`]).
    fn touched(&self, op: &'static str, arg: &'static str, extent: Extent) -> Result<Range<usize>>;
    /// The buffer's values in `range`.
    fn at(self, range: Range<usize>) -> Self::Values;

    /// All the view's values.
    fn values(self, op: &'static str, arg: &'static str) -> Result<Self::Values> {
        let range = self.touched(op, arg, Extent::Whole)?;
        Ok(self.at(range))
    }
    /// All the values of an element-wise operand, which must be exactly as long as the output.
    fn exactly(self, op: &'static str, arg: &'static str, len: usize) -> Result<Self::Values> {
        let range = self.touched(op, arg, Extent::Exactly(len))?;
        Ok(self.at(range))
    }
    /// The first `len` values: what a geometry addresses in a view that may hold more.
    fn leading(self, op: &'static str, arg: &'static str, len: usize) -> Result<Self::Values> {
        let range = self.touched(op, arg, Extent::AtLeast(len))?;
        Ok(self.at(range))
    }
}

impl<'a> HostView<'a> for Slice<'a, CpuBuffer> {
    type Values = &'a [f32];
    fn touched(&self, op: &'static str, arg: &'static str, extent: Extent) -> Result<Range<usize>> {
        Slice::touched(self, op, arg, extent)
    }
    fn at(self, range: Range<usize>) -> &'a [f32] {
        &self.buf.as_slice()[range]
    }
}

impl<'a> HostView<'a> for SliceMut<'a, CpuBuffer> {
    type Values = &'a mut [f32];
    fn touched(&self, op: &'static str, arg: &'static str, extent: Extent) -> Result<Range<usize>> {
        SliceMut::touched(self, op, arg, extent)
    }
    fn at(self, range: Range<usize>) -> &'a mut [f32] {
        &mut self.buf.as_mut_slice()[range]
    }
}

/// An element-wise op's input: the output itself, or a view as long as the output (`len`).
fn operand<'a>(
    op: &'static str,
    arg: &'static str,
    src: Src<'a, CpuBuffer>,
    len: usize,
) -> Result<Operand<'a>> {
    Ok(match src.resolve(op, arg, len)? {
        None => Operand::Same,
        Some(view) => Operand::Slice(view.values(op, arg)?),
    })
}

/// A geometry op's input that may be its output: the output itself, or the first `len`
/// values of a view holding at least that many.
fn leading_operand<'a>(
    op: &'static str,
    arg: &'static str,
    src: Src<'a, CpuBuffer>,
    len: usize,
) -> Result<Operand<'a>> {
    Ok(match src {
        Src::InPlace => Operand::Same,
        Src::Slice(view) => Operand::Slice(view.leading(op, arg, len)?),
    })
}

/// The value of a scalar argument.
fn scalar(op: &'static str, arg: &'static str, s: Scalar<'_, CpuBuffer>) -> Result<f32> {
    match s {
        Scalar::Value(v) => Ok(v),
        Scalar::At(buf, off) => Ok(buf.slice(off, 1).values(op, arg)?[0]),
    }
}

/// Evaluates `$body` with `$f` bound to the element function of the [`Binary`] op `$op`: one
/// closure per op, so each loop is compiled for its function.
macro_rules! with_binary_fn {
    ($op:expr, |$f:ident| $body:expr) => {
        match $op {
            Binary::Add => {
                let $f = |a: f32, b: f32| a + b;
                $body
            }
            Binary::Sub => {
                let $f = |a: f32, b: f32| a - b;
                $body
            }
            Binary::Mul => {
                let $f = |a: f32, b: f32| a * b;
                $body
            }
            Binary::Div => {
                let $f = |a: f32, b: f32| a / b;
                $body
            }
            Binary::Max => {
                let $f = |a: f32, b: f32| if a < b { b } else { a };
                $body
            }
            Binary::PRelu => {
                let $f = neuron::prelu;
                $body
            }
            Binary::SigmoidCrossEntropy => {
                let $f = loss::sigmoid_cross_entropy;
                $body
            }
        }
    };
}

impl Backend for CpuBackend {
    type Buffer = CpuBuffer;

    const NAME: &'static str = "CPU";

    fn alloc(&self, len: usize) -> Result<CpuBuffer> {
        Ok(CpuBuffer::from_vec(crate::backend::zeroed_host_buffer(
            "alloc", len,
        )?))
    }

    fn upload(&self, src: &[f32], dst: SliceMut<'_, CpuBuffer>) -> Result<()> {
        dst.exactly("upload", "dst", src.len())?
            .copy_from_slice(src);
        Ok(())
    }

    fn download(&self, src: Slice<'_, CpuBuffer>, dst: &mut [f32]) -> Result<()> {
        dst.copy_from_slice(src.exactly("download", "src", dst.len())?);
        Ok(())
    }

    fn copy(&self, x: Slice<'_, CpuBuffer>, y: SliceMut<'_, CpuBuffer>) -> Result<()> {
        let y = y.values("copy", "y")?;
        let x = x.exactly("copy", "x", y.len())?;
        self.par()
            .chunks_mut(y, |s, c| c.copy_from_slice(&x[s..s + c.len()]));
        Ok(())
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            // The batch convolutions use the backend's own scratch (`CpuBackend::scratch`).
            conv_scratch: true,
            fused_batch_norm: true,
            fused_scale: true,
            ..Capabilities::default()
        }
    }

    fn fill(&self, value: f32, y: SliceMut<'_, CpuBuffer>) -> Result<()> {
        let y = y.values("fill", "y")?;
        self.par().chunks_mut(y, |_, c| c.fill(value));
        Ok(())
    }

    fn random(&self, dist: Distribution, rng: &mut Rng, y: SliceMut<'_, CpuBuffer>) -> Result<()> {
        const OP: &str = "random";
        // The parameters are checked before anything is drawn, so a refused fill leaves the
        // generator as it was.
        match dist {
            Distribution::Uniform { lo, hi } => {
                if lo.is_nan() || hi.is_nan() || lo > hi {
                    return Err(invalid(
                        OP,
                        format!("Uniform needs lo <= hi, got [{lo}, {hi}]"),
                    ));
                }
                rng::uniform(rng, lo, hi, y.values(OP, "y")?);
            }
            Distribution::Gaussian { mean, std } => {
                if std.is_nan() || std < 0.0 {
                    return Err(invalid(OP, format!("Gaussian needs std >= 0, got {std}")));
                }
                rng::gaussian(rng, mean, std, y.values(OP, "y")?);
            }
            Distribution::Bernoulli { p } => {
                check_probability(OP, p)?;
                rng::bernoulli(rng, p, y.values(OP, "y")?);
            }
        }
        Ok(())
    }

    fn bernoulli_stream(
        &self,
        p: f32,
        state: SliceMut<'_, CpuBuffer>,
        y: SliceMut<'_, CpuBuffer>,
    ) -> Result<()> {
        const OP: &str = "bernoulli_stream";
        check_probability(OP, p)?;
        let state = state.leading(OP, "state", philox::STATE_LEN)?;
        let y = y.values(OP, "y")?;
        philox::group_count(OP, y.len())?;
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
        g: &Gemm,
        a: Slice<'_, CpuBuffer>,
        b: Slice<'_, CpuBuffer>,
        c: SliceMut<'_, CpuBuffer>,
    ) -> Result<()> {
        const OP: &str = "gemm";
        let [a_span, b_span, c_span] = gemm_spans(
            OP,
            (g.trans_a, g.trans_b),
            (g.m, g.n, g.k),
            (g.lda, g.ldb, g.ldc),
        )?;
        let a = a.leading(OP, "a", a_span)?;
        let b = b.leading(OP, "b", b_span)?;
        let c = c.leading(OP, "c", c_span)?;
        gemm::gemm(self.par(), g, a, b, c);
        Ok(())
    }

    fn gemv(
        &self,
        g: &Gemv,
        a: Slice<'_, CpuBuffer>,
        x: Slice<'_, CpuBuffer>,
        y: SliceMut<'_, CpuBuffer>,
    ) -> Result<()> {
        const OP: &str = "gemv";
        let (x_len, y_len) = match g.trans {
            Transpose::NoTrans => (g.n, g.m),
            Transpose::Trans => (g.m, g.n),
        };
        let a = a.leading(OP, "a", g.m * g.n)?;
        let x = x.leading(OP, "x", x_len)?;
        let y = y.leading(OP, "y", y_len)?;
        gemm::gemv(self.par(), g, a, x, y);
        Ok(())
    }

    fn axpby(
        &self,
        alpha: Scalar<'_, CpuBuffer>,
        x: Slice<'_, CpuBuffer>,
        beta: f32,
        y: SliceMut<'_, CpuBuffer>,
    ) -> Result<()> {
        const OP: &str = "axpby";
        let alpha = scalar(OP, "alpha", alpha)?;
        let y = y.values(OP, "y")?;
        let x = Operand::Slice(x.exactly(OP, "x", y.len())?);
        let par = self.par();
        // Upstream's axpy (no multiply by 1), its scale (y not read), then the general form.
        if beta == 1.0 {
            elementwise::map2(par, x, Operand::Same, y, move |x, y| alpha * x + y);
        } else if beta == 0.0 {
            elementwise::map1(par, x, y, move |x| alpha * x);
        } else {
            elementwise::map2(par, x, Operand::Same, y, move |x, y| alpha * x + beta * y);
        }
        Ok(())
    }

    fn scale(
        &self,
        alpha: Scalar<'_, CpuBuffer>,
        x: Src<'_, CpuBuffer>,
        y: SliceMut<'_, CpuBuffer>,
    ) -> Result<()> {
        let alpha = scalar("scale", "alpha", alpha)?;
        let y = y.values("scale", "y")?;
        let x = operand("scale", "x", x, y.len())?;
        elementwise::map1(self.par(), x, y, move |v| alpha * v);
        Ok(())
    }

    fn unary(&self, op: Unary, x: Src<'_, CpuBuffer>, y: SliceMut<'_, CpuBuffer>) -> Result<()> {
        let y = y.values("unary", "y")?;
        let x = operand("unary", "x", x, y.len())?;
        let par = self.par();
        match op {
            Unary::Exp => elementwise::map1(par, x, y, move |v| v.exp()),
            Unary::Log => elementwise::map1(par, x, y, move |v| v.ln()),
            Unary::Abs => elementwise::map1(par, x, y, move |v| v.abs()),
            Unary::Sqr => elementwise::map1(par, x, y, move |v| v * v),
            Unary::Sqrt => elementwise::map1(par, x, y, move |v| v.sqrt()),
            Unary::Sign => elementwise::map1(par, x, y, move |v| {
                if v > 0.0 {
                    1.0
                } else if v < 0.0 {
                    -1.0
                } else {
                    0.0
                }
            }),
            // The common exponents without a libm call.
            Unary::Powx(2.0) => elementwise::map1(par, x, y, move |v| v * v),
            Unary::Powx(1.0) => elementwise::map1(par, x, y, move |v| v),
            Unary::Powx(p) => elementwise::map1(par, x, y, move |v| v.powf(p)),
            // A constant power of 1 lets the loop drop the power step's branch.
            Unary::Power {
                power: 1.0,
                scale,
                shift,
            } => {
                elementwise::map1(par, x, y, move |v| power_step(v, 1.0, scale, shift));
            }
            Unary::Power {
                power,
                scale,
                shift,
            } => elementwise::map1(par, x, y, move |v| power_step(v, power, scale, shift)),
            Unary::AddScalar(value) => elementwise::map1(par, x, y, move |v| v + value),
            Unary::LabelMask { ignore_label } => loss::label_mask(x, ignore_label, y),
            Unary::Threshold(threshold) => {
                elementwise::map1(par, x, y, move |v| if v > threshold { 1.0 } else { 0.0 })
            }
        }
        Ok(())
    }

    fn binary(
        &self,
        op: Binary,
        a: Src<'_, CpuBuffer>,
        b: Src<'_, CpuBuffer>,
        y: SliceMut<'_, CpuBuffer>,
    ) -> Result<()> {
        let y = y.values("binary", "y")?;
        let a = operand("binary", "a", a, y.len())?;
        let b = operand("binary", "b", b, y.len())?;
        let par = self.par();
        with_binary_fn!(op, |f| elementwise::map2(par, a, b, y, f));
        Ok(())
    }

    fn activation_forward(
        &self,
        f: Activation,
        x: Src<'_, CpuBuffer>,
        y: SliceMut<'_, CpuBuffer>,
    ) -> Result<()> {
        let y = y.values("activation_forward", "y")?;
        let x = operand("activation_forward", "x", x, y.len())?;
        neuron::activation_forward(self.par(), f, x, y);
        Ok(())
    }

    fn activation_backward(
        &self,
        f: Activation,
        x: Slice<'_, CpuBuffer>,
        y: Slice<'_, CpuBuffer>,
        dy: Src<'_, CpuBuffer>,
        dx: SliceMut<'_, CpuBuffer>,
    ) -> Result<()> {
        const OP: &str = "activation_backward";
        let dx = dx.values(OP, "dx")?;
        let n = dx.len();
        let dy = operand(OP, "dy", dy, n)?;
        let x = || x.exactly(OP, "x", n);
        let y = || y.exactly(OP, "y", n);
        neuron::activation_backward(self.par(), f, x, y, dy, dx)
    }

    fn reduce(&self, r: Reduction<'_, CpuBuffer>, x: Slice<'_, CpuBuffer>) -> Result<f32> {
        let x = x.values("reduce", "x")?;
        let par = self.par();
        let total = match r {
            Reduction::Sum => reductions::reduce(par, x, x, Term::First),
            Reduction::Asum => reductions::reduce(par, x, x, Term::Abs),
            Reduction::Sumsq => reductions::reduce(par, x, x, Term::Square),
            Reduction::Dot(b) => {
                let b = b.exactly("reduce", "b", x.len())?;
                reductions::reduce(par, x, b, Term::Product)
            }
        };
        Ok(total as f32)
    }

    fn sum_into(
        &self,
        alpha: f32,
        x: Slice<'_, CpuBuffer>,
        y: SliceMut<'_, CpuBuffer>,
    ) -> Result<()> {
        let x = x.values("sum_into", "x")?;
        let y = y.leading("sum_into", "y", 1)?;
        let sum = reductions::reduce(self.par(), x, x, Term::First);
        y[0] = (f64::from(alpha) * sum) as f32;
        Ok(())
    }

    fn reduce_over_axis(
        &self,
        r: AxisReduction<'_, CpuBuffer>,
        axis: Axis,
        x: Slice<'_, CpuBuffer>,
        y: SliceMut<'_, CpuBuffer>,
    ) -> Result<()> {
        const OP: &str = "reduce_over_axis";
        let len = axis.len(OP)?;
        let x = x.leading(OP, "x", len)?;
        let y = y.leading(OP, "y", axis.reduced_len(OP)?)?;
        let kind = match r {
            AxisReduction::Max => reductions::AxisReduce::Max,
            AxisReduction::Sum => reductions::AxisReduce::Sum,
            AxisReduction::Dot(b) => reductions::AxisReduce::Dot(b.leading(OP, "b", len)?),
        };
        reductions::over_axis(self.par(), axis, x, y, kind);
        Ok(())
    }

    fn broadcast(
        &self,
        op: Binary,
        how: Broadcast,
        axis: Axis,
        v: Slice<'_, CpuBuffer>,
        x: Src<'_, CpuBuffer>,
        y: SliceMut<'_, CpuBuffer>,
    ) -> Result<()> {
        const OP: &str = "broadcast";
        let len = axis.len(OP)?;
        let v_len = match how {
            Broadcast::OverAxis => axis.reduced_len(OP)?,
            Broadcast::PerChannel => axis.dim,
        };
        let v = v.leading(OP, "v", v_len)?;
        let y = y.leading(OP, "y", len)?;
        let x = leading_operand(OP, "x", x, len)?;
        let par = self.par();
        match how {
            // PReLU keeps its own loop, a task per row of `inner`.
            Broadcast::PerChannel if op == Binary::PRelu => {
                neuron::prelu_forward(par, axis, v, x, y)
            }
            Broadcast::PerChannel => {
                with_binary_fn!(op, |f| reductions::per_channel(par, axis, v, x, y, f))
            }
            Broadcast::OverAxis => {
                with_binary_fn!(op, |f| reductions::along_axis(par, axis, v, x, y, f))
            }
        }
        Ok(())
    }

    fn sum_per_channel(
        &self,
        axis: Axis,
        alpha: f32,
        x: Slice<'_, CpuBuffer>,
        beta: f32,
        y: SliceMut<'_, CpuBuffer>,
    ) -> Result<()> {
        const OP: &str = "sum_per_channel";
        let x = x.leading(OP, "x", axis.len(OP)?)?;
        let y = y.leading(OP, "y", axis.dim)?;
        reductions::sum_per_channel(self.par(), axis, alpha, x, beta, y);
        Ok(())
    }

    fn batch_norm_forward(
        &self,
        axis: Axis,
        eps: f32,
        statistics: BatchStatistics<'_, CpuBuffer>,
        x: Src<'_, CpuBuffer>,
        out: BatchNormOutput<'_, CpuBuffer>,
    ) -> Result<()> {
        const OP: &str = "batch_norm_forward";
        let (count, channels) = (axis.len(OP)?, axis.dim);
        let out = batch_norm::Output {
            y: out.y.leading(OP, "y", count)?,
            x_norm: out.x_norm.leading(OP, "x_norm", count)?,
            std: out.std.leading(OP, "std", channels)?,
        };
        let x = match leading_operand(OP, "x", x, count)? {
            Operand::Same => None,
            Operand::Slice(x) => Some(x),
        };
        let statistics = match statistics {
            BatchStatistics::Batch {
                inv_count,
                mean,
                variance,
            } => batch_norm::Statistics::Batch {
                inv_count,
                mean: mean.leading(OP, "mean", channels)?,
                variance: variance.leading(OP, "variance", channels)?,
            },
            BatchStatistics::Given { mean, variance } => batch_norm::Statistics::Given {
                mean: mean.leading(OP, "mean", channels)?,
                variance: variance.leading(OP, "variance", channels)?,
            },
        };
        batch_norm::forward(self.par(), axis, eps, statistics, x, out);
        Ok(())
    }

    fn scale_forward(
        &self,
        axis: Axis,
        scale: Slice<'_, CpuBuffer>,
        bias: Option<Slice<'_, CpuBuffer>>,
        x: Src<'_, CpuBuffer>,
        y: SliceMut<'_, CpuBuffer>,
        keep: Option<SliceMut<'_, CpuBuffer>>,
    ) -> Result<()> {
        const OP: &str = "scale_forward";
        let (count, channels) = (axis.len(OP)?, axis.dim);
        let scale = scale.leading(OP, "scale", channels)?;
        let bias = bias.map(|b| b.leading(OP, "bias", channels)).transpose()?;
        let y = y.leading(OP, "y", count)?;
        let keep = keep.map(|k| k.leading(OP, "keep", count)).transpose()?;
        let x = leading_operand(OP, "x", x, count)?;
        scale::forward(self.par(), axis, (scale, bias), x, y, keep);
        Ok(())
    }

    fn scale_gradients(
        &self,
        axis: Axis,
        x: Slice<'_, CpuBuffer>,
        dy: Slice<'_, CpuBuffer>,
        scale_diff: Option<(SliceMut<'_, CpuBuffer>, f32)>,
        bias_diff: Option<SliceMut<'_, CpuBuffer>>,
    ) -> Result<()> {
        const OP: &str = "scale_gradients";
        let (count, channels) = (axis.len(OP)?, axis.dim);
        let x = x.leading(OP, "x", count)?;
        let dy = dy.leading(OP, "dy", count)?;
        let scale_diff = scale_diff
            .map(|(d, beta)| d.leading(OP, "scale_diff", channels).map(|d| (d, beta)))
            .transpose()?;
        let bias_diff = bias_diff
            .map(|d| d.leading(OP, "bias_diff", channels))
            .transpose()?;
        scale::gradients(self.par(), axis, x, dy, scale_diff, bias_diff);
        Ok(())
    }

    fn batch_norm_backward(
        &self,
        axis: Axis,
        inv_count: f32,
        y: Slice<'_, CpuBuffer>,
        std: Slice<'_, CpuBuffer>,
        dy: Src<'_, CpuBuffer>,
        dx: SliceMut<'_, CpuBuffer>,
    ) -> Result<()> {
        const OP: &str = "batch_norm_backward";
        let count = axis.len(OP)?;
        let dx = dx.leading(OP, "dx", count)?;
        let dy = match leading_operand(OP, "dy", dy, count)? {
            Operand::Same => None,
            Operand::Slice(dy) => Some(dy),
        };
        let y = y.leading(OP, "y", count)?;
        let std = std.leading(OP, "std", axis.dim)?;
        batch_norm::backward(self.par(), axis, inv_count, y, std, dy, dx);
        Ok(())
    }

    fn im2col(
        &self,
        g: &ConvGeom,
        im: Slice<'_, CpuBuffer>,
        col: SliceMut<'_, CpuBuffer>,
    ) -> Result<()> {
        g.validate("im2col")?;
        let im = im.leading("im2col", "im", g.im_len())?;
        let col = col.leading("im2col", "col", g.col_len())?;
        im2col::im2col(self.par(), g, im, col);
        Ok(())
    }

    fn col2im(
        &self,
        g: &ConvGeom,
        col: Slice<'_, CpuBuffer>,
        im: SliceMut<'_, CpuBuffer>,
    ) -> Result<()> {
        g.validate("col2im")?;
        let col = col.leading("col2im", "col", g.col_len())?;
        let im = im.leading("col2im", "im", g.im_len())?;
        im2col::col2im(self.par(), g, col, im);
        Ok(())
    }

    /// The images spread over the workers, with the backend's own scratch: `workspace` is not
    /// used (see [`Capabilities::conv_scratch`]).
    fn conv_forward(
        &self,
        c: &ConvBatch,
        x: Slice<'_, CpuBuffer>,
        w: Slice<'_, CpuBuffer>,
        bias: Option<Slice<'_, CpuBuffer>>,
        y: SliceMut<'_, CpuBuffer>,
        _workspace: SliceMut<'_, CpuBuffer>,
    ) -> Result<()> {
        const OP: &str = "conv_forward";
        c.validate(OP)?;
        let x = x.leading(OP, "x", c.num * c.in_len())?;
        let w = w.leading(OP, "w", c.weight_len())?;
        let bias = match bias {
            Some(b) => Some(b.leading(OP, "bias", c.out_channels)?),
            None => None,
        };
        let y = y.leading(OP, "y", c.num * c.out_len())?;
        let mut scratch = self.scratch.lock().unwrap_or_else(|e| e.into_inner());
        conv::forward(self.par(), &mut scratch, c, x, w, bias, y)
    }

    /// As `conv_forward`, the images over the workers; the weight gradient is summed in fixed parts of the
    /// batch (see `conv`'s module docs).
    fn conv_backward(
        &self,
        c: &ConvBatch,
        x: Slice<'_, CpuBuffer>,
        w: Slice<'_, CpuBuffer>,
        dy: Slice<'_, CpuBuffer>,
        grads: ConvGrads<'_, CpuBuffer>,
        _workspace: SliceMut<'_, CpuBuffer>,
    ) -> Result<()> {
        const OP: &str = "conv_backward";
        c.validate(OP)?;
        // `x` is read only for the weight gradient.
        let x_len = if grads.dw.is_some() {
            c.num * c.in_len()
        } else {
            0
        };
        let x = x.leading(OP, "x", x_len)?;
        let w = w.leading(OP, "w", c.weight_len())?;
        let dy = dy.leading(OP, "dy", c.num * c.out_len())?;
        let dw = match grads.dw {
            Some(dw) => Some(dw.leading(OP, "dw", c.weight_len())?),
            None => None,
        };
        let dx = match grads.dx {
            Some(dx) => Some(dx.leading(OP, "dx", c.num * c.in_len())?),
            None => None,
        };
        let mut scratch = self.scratch.lock().unwrap_or_else(|e| e.into_inner());
        conv::backward(
            self.par(),
            &mut scratch,
            c,
            x,
            w,
            dy,
            conv::Grads { dw, dx },
        )
    }

    fn pool_forward(
        &self,
        g: &PoolGeom,
        p: Pooling<SliceMut<'_, CpuBuffer>>,
        x: Slice<'_, CpuBuffer>,
        y: SliceMut<'_, CpuBuffer>,
    ) -> Result<()> {
        const OP: &str = "pool_forward";
        g.validate(OP)?;
        let x = x.leading(OP, "x", g.in_len())?;
        let y = y.leading(OP, "y", g.out_len())?;
        match p {
            Pooling::Max { mask } => {
                let mask = mask.leading(OP, "mask", g.out_len())?;
                pooling::max_forward(self.par(), g, x, y, mask)
            }
            Pooling::Ave => pooling::ave_forward(self.par(), g, x, y),
        }
    }

    fn pool_backward(
        &self,
        g: &PoolGeom,
        p: Pooling<Slice<'_, CpuBuffer>>,
        dy: Slice<'_, CpuBuffer>,
        dx: SliceMut<'_, CpuBuffer>,
    ) -> Result<()> {
        const OP: &str = "pool_backward";
        g.validate(OP)?;
        let dy = dy.leading(OP, "dy", g.out_len())?;
        let dx = dx.leading(OP, "dx", g.in_len())?;
        match p {
            Pooling::Max { mask } => {
                let mask = mask.leading(OP, "mask", g.out_len())?;
                if !pooling::max_backward(self.par(), g, dy, mask, dx) {
                    let (h, w) = (g.height, g.width);
                    let message = format!("mask holds an index outside the {h}x{w} plane");
                    return Err(invalid(OP, message));
                }
                Ok(())
            }
            Pooling::Ave => pooling::ave_backward(self.par(), g, dy, dx),
        }
    }

    fn lrn_across_forward(
        &self,
        g: &LrnGeom,
        x: Slice<'_, CpuBuffer>,
        scale: SliceMut<'_, CpuBuffer>,
        y: SliceMut<'_, CpuBuffer>,
    ) -> Result<()> {
        const OP: &str = "lrn_across_forward";
        g.validate(OP)?;
        let x = x.leading(OP, "x", g.len())?;
        let scale = scale.leading(OP, "scale", g.len())?;
        let y = y.leading(OP, "y", g.len())?;
        lrn::across_forward(self.par(), g, x, scale, y);
        Ok(())
    }

    fn lrn_across_backward(
        &self,
        g: &LrnGeom,
        forward: LrnSaved<'_, CpuBuffer>,
        dy: Slice<'_, CpuBuffer>,
        dx: SliceMut<'_, CpuBuffer>,
    ) -> Result<()> {
        const OP: &str = "lrn_across_backward";
        g.validate(OP)?;
        let saved = lrn::Saved {
            x: forward.x.leading(OP, "x", g.len())?,
            y: forward.y.leading(OP, "y", g.len())?,
            scale: forward.scale.leading(OP, "scale", g.len())?,
        };
        let dy = dy.leading(OP, "dy", g.len())?;
        let dx = dx.leading(OP, "dx", g.len())?;
        lrn::across_backward(self.par(), g, saved, dy, dx);
        Ok(())
    }

    /// Upstream's composition fused into one pass per plane, with its arithmetic (the same
    /// bits as the default); `sq` is not used.
    fn lrn_within_forward(
        &self,
        l: &LrnWithin,
        x: Slice<'_, CpuBuffer>,
        [mean, power]: [SliceMut<'_, CpuBuffer>; 2],
        y: SliceMut<'_, CpuBuffer>,
        _sq: SliceMut<'_, CpuBuffer>,
    ) -> Result<()> {
        const OP: &str = "lrn_within_forward";
        l.window.validate_lrn_window(OP)?;
        let n = l.window.in_len();
        let x = x.leading(OP, "x", n)?;
        let mean = mean.leading(OP, "mean", n)?;
        let power = power.leading(OP, "power", n)?;
        let y = y.leading(OP, "y", n)?;
        lrn::within_forward(self.par(), l, x, mean, power);
        let (x, power) = (Operand::Slice(x), Operand::Slice(power));
        elementwise::map2(self.par(), x, power, y, move |a, b| a * b);
        Ok(())
    }

    /// The composition's backward pass fused as its forward pass; `scratch` is not used.
    fn lrn_within_backward(
        &self,
        l: &LrnWithin,
        forward: LrnSaved<'_, CpuBuffer>,
        dy: Slice<'_, CpuBuffer>,
        dx: SliceMut<'_, CpuBuffer>,
        _scratch: [SliceMut<'_, CpuBuffer>; 2],
    ) -> Result<()> {
        const OP: &str = "lrn_within_backward";
        l.window.validate_lrn_window(OP)?;
        let n = l.window.in_len();
        let saved = lrn::Saved {
            x: forward.x.leading(OP, "x", n)?,
            y: forward.y.leading(OP, "mean", n)?,
            scale: forward.scale.leading(OP, "power", n)?,
        };
        let dy = dy.leading(OP, "dy", n)?;
        let dx = dx.leading(OP, "dx", n)?;
        lrn::within_backward(self.par(), l, saved, dy, dx);
        Ok(())
    }

    fn prelu_backward(
        &self,
        axis: Axis,
        slope: Slice<'_, CpuBuffer>,
        x: Slice<'_, CpuBuffer>,
        dy: Src<'_, CpuBuffer>,
        dx: SliceMut<'_, CpuBuffer>,
    ) -> Result<()> {
        const OP: &str = "prelu_backward";
        let len = axis.len(OP)?;
        let slope = slope.leading(OP, "slope", axis.dim)?;
        let x = x.leading(OP, "x", len)?;
        let dx = dx.leading(OP, "dx", len)?;
        let dy = leading_operand(OP, "dy", dy, len)?;
        neuron::prelu_backward(self.par(), axis, slope, x, dy, dx);
        Ok(())
    }

    fn prelu_slope_grad(
        &self,
        axis: Axis,
        x: Slice<'_, CpuBuffer>,
        dy: Slice<'_, CpuBuffer>,
        dslope: SliceMut<'_, CpuBuffer>,
    ) -> Result<()> {
        const OP: &str = "prelu_slope_grad";
        let len = axis.len(OP)?;
        let x = x.leading(OP, "x", len)?;
        let dy = dy.leading(OP, "dy", len)?;
        let dslope = dslope.leading(OP, "dslope", axis.dim)?;
        neuron::prelu_slope_grad(axis, x, dy, dslope);
        Ok(())
    }

    fn copy_2d(
        &self,
        block: &Block,
        x: Slice<'_, CpuBuffer>,
        y: SliceMut<'_, CpuBuffer>,
    ) -> Result<()> {
        const OP: &str = "copy_2d";
        let extent = (block.rows, block.cols);
        let Some((x_span, y_span)) = copy_2d_spans(OP, extent, block.x_stride, block.y_stride)?
        else {
            return Ok(());
        };
        let x = x.leading(OP, "x", x_span)?;
        let y = y.leading(OP, "y", y_span)?;
        neuron::copy_2d(block, x, y);
        Ok(())
    }

    fn running_argmax(
        &self,
        index: f32,
        x: Slice<'_, CpuBuffer>,
        y: SliceMut<'_, CpuBuffer>,
        mask: SliceMut<'_, CpuBuffer>,
    ) -> Result<()> {
        const OP: &str = "running_argmax";
        let y = y.values(OP, "y")?;
        let x = x.exactly(OP, "x", y.len())?;
        let mask = mask.exactly(OP, "mask", y.len())?;
        neuron::running_argmax(index, x, y, mask);
        Ok(())
    }

    fn copy_where_eq(
        &self,
        mask: Slice<'_, CpuBuffer>,
        value: f32,
        x: Slice<'_, CpuBuffer>,
        y: SliceMut<'_, CpuBuffer>,
    ) -> Result<()> {
        const OP: &str = "copy_where_eq";
        let y = y.values(OP, "y")?;
        let mask = Operand::Slice(mask.exactly(OP, "mask", y.len())?);
        let x = Operand::Slice(x.exactly(OP, "x", y.len())?);
        elementwise::map2(
            self.par(),
            mask,
            x,
            y,
            |m, v| if m == value { v } else { 0.0 },
        );
        Ok(())
    }

    fn top_k_over_axis(
        &self,
        axis: Axis,
        k: usize,
        x: Slice<'_, CpuBuffer>,
        [values, indices]: [SliceMut<'_, CpuBuffer>; 2],
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
        let x = x.leading(OP, "x", axis.len(OP)?)?;
        let top_len = Axis { dim: k, ..axis }.len(OP)?;
        let values = values.leading(OP, "values", top_len)?;
        let indices = indices.leading(OP, "indices", top_len)?;
        neuron::top_k_over_axis(axis, k, x, values, indices);
        Ok(())
    }

    fn gather_at_label(
        &self,
        axis: Axis,
        x: Slice<'_, CpuBuffer>,
        labels: Labels<'_, CpuBuffer>,
        fill: f32,
        y: SliceMut<'_, CpuBuffer>,
    ) -> Result<()> {
        const OP: &str = "gather_at_label";
        let positions = axis.reduced_len(OP)?;
        let x = x.leading(OP, "x", axis.len(OP)?)?;
        let labels = host_labels(OP, labels, positions)?;
        let y = y.leading(OP, "y", positions)?;
        loss::gather_at_label(OP, axis, x, labels, fill, y)
    }

    fn affine_at_label(
        &self,
        axis: Axis,
        labels: Labels<'_, CpuBuffer>,
        alpha_beta: (f32, f32),
        y: SliceMut<'_, CpuBuffer>,
    ) -> Result<()> {
        const OP: &str = "affine_at_label";
        let labels = host_labels(OP, labels, axis.reduced_len(OP)?)?;
        let y = y.leading(OP, "y", axis.len(OP)?)?;
        loss::affine_at_label(OP, axis, labels, alpha_beta, y)
    }

    fn top_k_hits(
        &self,
        axis: Axis,
        top_k: usize,
        x: Slice<'_, CpuBuffer>,
        labels: Labels<'_, CpuBuffer>,
        y: SliceMut<'_, CpuBuffer>,
    ) -> Result<()> {
        const OP: &str = "top_k_hits";
        let positions = axis.reduced_len(OP)?;
        let x = x.leading(OP, "x", axis.len(OP)?)?;
        let labels = host_labels(OP, labels, positions)?;
        let y = y.leading(OP, "y", positions)?;
        loss::top_k_hits(OP, (axis, top_k), x, labels, y)
    }

    fn sum_by_label(
        &self,
        x: Slice<'_, CpuBuffer>,
        labels: Labels<'_, CpuBuffer>,
        y: SliceMut<'_, CpuBuffer>,
    ) -> Result<()> {
        const OP: &str = "sum_by_label";
        let x = x.values(OP, "x")?;
        let labels = loss::HostLabels {
            values: labels.values.exactly(OP, "labels", x.len())?,
            ignore_label: labels.ignore_label,
        };
        let y = y.values(OP, "y")?;
        loss::sum_by_label(OP, x, labels, y)
    }
}

/// The first `positions` labels of `labels`, on the host.
fn host_labels<'a>(
    op: &'static str,
    labels: Labels<'a, CpuBuffer>,
    positions: usize,
) -> Result<loss::HostLabels<'a>> {
    Ok(loss::HostLabels {
        values: labels.values.leading(op, "labels", positions)?,
        ignore_label: labels.ignore_label,
    })
}
