//! [`CudaBackend`]: the op set on an NVIDIA GPU, each op one launch of the kernel of the same
//! name from `kernels/*.cu` (compiled by [`super::nvrtc`] for the device's architecture),
//! GEMM and GEMV through cuBLAS. `rcaffe train/test/time -gpu N` build one through
//! [`super::device::open`].
//!
//! The op code is generic over the [`DeviceRuntime`] it issues its work to: on a GPU that is
//! [`CudarcRuntime`]; the tests run the same op code on the kernels compiled for the host
//! (`tests/kernel-emu`). Launches go through the generated argument structs of
//! [`super::kernels`], typed as the kernels' prototypes.
//!
//! All work is issued in order, so an op may read what the previous one wrote without further
//! synchronisation; [`Backend::download`] and the reductions wait for it. Device pointers are
//! passed to kernels as raw addresses plus the element offset, which also gives the in-place
//! form ([`Src::InPlace`]: the output address for the input).
//!
//! Label-indexed ops validate their labels on the host first (a download of the label blob,
//! `outer * inner` values), so an out-of-range label is the same error as on the CPU. While a
//! graph is captured they cannot: `gather_at_label`, `affine_at_label` and `top_k_hits` then
//! leave the check to their kernels, which report a bad label in a word of device memory that
//! every replay reads back (and fails on).
//! Max pooling's `pool_backward` does not validate its mask (the CPU op rejects an index
//! outside the plane): a mask written by `pool_forward` is always valid, and any other entry is
//! skipped.
//!
//! Whole-iteration replay: [`Backend::begin_capture`] starts a recording (on a GPU, a CUDA graph
//! capture of the compute stream), [`Backend::end_capture`] ends it. While capturing, every op that
//! needs the host (an upload or download, a reduction returning a value, a host-drawn random
//! fill, `sum_by_label`'s label check, an allocation, a synchronisation) fails with a
//! [`BackendError::Device`] naming itself, before touching anything, so the caller can end the
//! capture and run the work directly instead.
//!
//! Whole-buffer reductions run in two launches (per-thread partial sums, then one thread adds
//! them) and leave their result on the device; those that return a value download just it. The
//! fills that take the host's [`Rng`]
//! (weight fillers, at setup) draw on the host and upload; Dropout's masks come from
//! `bernoulli_stream`, drawn on the device.

use super::cudarc_runtime::{dev_err, CudarcRuntime};
use super::kernels::{self, KernelCall, ReadPtr, WritePtr};
use super::runtime::DeviceRuntime;
use crate::backend::view::{touched, Extent};
use crate::backend::{
    check_probability, invalid, philox, Activation, Axis, AxisReduction, Backend, BackendError,
    Binary, Block, Broadcast, Capabilities, CapturedWork, ConvGeom, DeviceBuffer, Distribution,
    Gemm, Gemv, Labels, LrnGeom, LrnSaved, PoolGeom, Pooling, Reduction, Result, Rng, Scalar,
    Slice, SliceMut, Src, Transpose, Unary, UpdateRule, Views,
};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, MutexGuard};

mod labels;
mod ops;

/// Threads per block of every launch.
const BLOCK: u32 = 256;
/// The most blocks a launch uses; grid-stride loops cover the rest.
const MAX_BLOCKS: usize = 4096;
/// The most blocks of a whole-buffer reduction's first step: its second step, one thread, adds
/// one partial sum per thread of the first.
const REDUCE_BLOCKS: usize = 32;
/// Partial sums of a reduction's first step at most.
const PARTIALS: usize = REDUCE_BLOCKS * BLOCK as usize;
/// Partial sums of a long-channel `sum_per_channel`'s first step at most (one thread each):
/// enough threads to keep the device's memory busy on a convolution's bias gradient.
const CHANNEL_PARTIALS: usize = 1 << 16;
/// Values a thread of that first step sums at least; fewer per channel take one thread each.
const VALUES_PER_PART: usize = 256;
const _: () = assert!(PARTIALS < CHANNEL_PARTIALS);
/// `{reported, label, dim}`: see [`Inner::label_error`].
const LABEL_ERROR_LEN: usize = 3;

/// `len` f32 on the device.
pub struct CudaBuffer<R: DeviceRuntime = CudarcRuntime> {
    /// At least one element, so that an empty buffer still has a valid address.
    _memory: R::Memory,
    /// The allocation's device address (kept alive by `_memory`).
    base: u64,
    len: usize,
}

impl<R: DeviceRuntime> fmt::Debug for CudaBuffer<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CudaBuffer({} f32 at {:#x})", self.len, self.base)
    }
}

impl<R: DeviceRuntime> DeviceBuffer for CudaBuffer<R> {
    fn len(&self) -> usize {
        self.len
    }
}

struct Inner<R: DeviceRuntime> {
    /// Whether the runtime is recording (a graph capture under way).
    capturing: AtomicBool,
    /// The whole-buffer reductions' partial sums ([`PARTIALS`] of them), then one slot for a
    /// result the host reads; or a long-channel `sum_per_channel`'s ([`CHANNEL_PARTIALS`] at
    /// most). Allocated once, as an allocation per reduction would cost more than the sum.
    partials: std::sync::Mutex<CudaBuffer<R>>,
    /// Where the label-indexed kernels report a bad label (`{1, label, dim}`, zeros when none):
    /// the host check cannot run inside a graph, so each replay reads this instead.
    label_error: CudaBuffer<R>,
    runtime: R,
}

/// The CUDA backend on one device. Cloning is cheap and shares the device and its stream.
pub struct CudaBackend<R: DeviceRuntime = CudarcRuntime> {
    inner: Arc<Inner<R>>,
}

impl<R: DeviceRuntime> Clone for CudaBackend<R> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<R: DeviceRuntime> fmt::Debug for CudaBackend<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CudaBackend")
            .field("runtime", &self.inner.runtime)
            .finish()
    }
}

fn int(op: &'static str, v: usize) -> Result<i32> {
    i32::try_from(v).map_err(|_| invalid(op, format!("size {v} exceeds a kernel's int range")))
}

/// Launches of one op on a grid of `blocks` blocks of [`BLOCK`] threads; none when `blocks`
/// is 0.
struct Grid<'a, R> {
    runtime: &'a R,
    op: &'static str,
    blocks: usize,
}

impl<R: DeviceRuntime> Grid<'_, R> {
    /// Launches `call`'s kernel with its arguments.
    fn run<K: KernelCall>(&self, call: K) -> Result<()> {
        if self.blocks == 0 {
            return Ok(());
        }
        // SAFETY: every pointer argument was bounds-checked against its buffer by the op (the
        // `read`/`write` helpers) for the range the kernel touches.
        unsafe {
            self.runtime.launch(
                self.op,
                K::KERNEL,
                self.blocks as u32,
                BLOCK,
                call.args().as_ref(),
            )
        }
    }
}

/// A convolution's geometry as the im2col kernels take it.
struct ConvInts {
    channels: i32,
    height: i32,
    width: i32,
    kernel_h: i32,
    kernel_w: i32,
    pad_h: i32,
    pad_w: i32,
    stride_h: i32,
    stride_w: i32,
    dilation_h: i32,
    dilation_w: i32,
    out_h: i32,
    out_w: i32,
}

impl ConvInts {
    fn new(op: &'static str, g: &ConvGeom) -> Result<Self> {
        Ok(Self {
            channels: int(op, g.channels)?,
            height: int(op, g.height)?,
            width: int(op, g.width)?,
            kernel_h: int(op, g.kernel_h)?,
            kernel_w: int(op, g.kernel_w)?,
            pad_h: int(op, g.pad_h)?,
            pad_w: int(op, g.pad_w)?,
            stride_h: int(op, g.stride_h)?,
            stride_w: int(op, g.stride_w)?,
            dilation_h: int(op, g.dilation_h)?,
            dilation_w: int(op, g.dilation_w)?,
            out_h: int(op, g.out_h())?,
            out_w: int(op, g.out_w())?,
        })
    }
}

/// A pooling geometry as the pooling kernels take it.
struct PoolInts {
    planes: i32,
    height: i32,
    width: i32,
    kernel_h: i32,
    kernel_w: i32,
    stride_h: i32,
    stride_w: i32,
    pad_h: i32,
    pad_w: i32,
    pooled_h: i32,
    pooled_w: i32,
}

impl PoolInts {
    fn new(op: &'static str, g: &PoolGeom) -> Result<Self> {
        Ok(Self {
            planes: int(op, g.planes)?,
            height: int(op, g.height)?,
            width: int(op, g.width)?,
            kernel_h: int(op, g.kernel_h)?,
            kernel_w: int(op, g.kernel_w)?,
            stride_h: int(op, g.stride_h)?,
            stride_w: int(op, g.stride_w)?,
            pad_h: int(op, g.pad_h)?,
            pad_w: int(op, g.pad_w)?,
            pooled_h: int(op, g.pooled_h)?,
            pooled_w: int(op, g.pooled_w)?,
        })
    }
}

/// The kernel argument struct `$kernel`, its leading `int` parameters the fields of the same
/// names of `$geometry` (a [`ConvInts`] or [`PoolInts`]), then `$rest`.
macro_rules! with_geometry {
    ($kernel:path, $geometry:expr, [$($field:ident),*], { $($rest:tt)* }) => {{
        let g = $geometry;
        $kernel { $($field: g.$field,)* $($rest)* }
    }};
}

/// [`with_geometry`] for the im2col kernels.
macro_rules! conv_call {
    ($kernel:path, $geometry:expr, { $($rest:tt)* }) => {
        with_geometry!(
            $kernel,
            $geometry,
            [
                channels, height, width, kernel_h, kernel_w, pad_h, pad_w, stride_h, stride_w,
                dilation_h, dilation_w, out_h, out_w
            ],
            { $($rest)* }
        )
    };
}

/// [`with_geometry`] for the pooling kernels.
macro_rules! pool_call {
    ($kernel:path, $geometry:expr, { $($rest:tt)* }) => {
        with_geometry!(
            $kernel,
            $geometry,
            [
                planes, height, width, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w,
                pooled_h, pooled_w
            ],
            { $($rest)* }
        )
    };
}

use {conv_call, pool_call, with_geometry};

impl CudaBackend<CudarcRuntime> {
    /// Whether the CUDA driver library can be loaded and reports at least one device.
    pub fn device_available() -> bool {
        CudarcRuntime::device_available()
    }

    /// A backend on device `ordinal`: a context, one stream, cuBLAS when its library loads.
    pub fn new(ordinal: usize) -> Result<Self> {
        Self::on(CudarcRuntime::new(ordinal)?)
    }

    /// The device ordinal.
    pub fn ordinal(&self) -> usize {
        self.inner.runtime.ordinal()
    }

    /// The architecture kernels are compiled for, e.g. `sm_90`.
    pub fn arch(&self) -> &str {
        self.inner.runtime.arch()
    }

    /// Compiles (or reads precompiled) and loads every kernel file now rather than at each
    /// file's first launch: a compiler problem surfaces here, and timings exclude compilation.
    pub fn load_all_kernels(&self) -> Result<()> {
        self.inner.runtime.load_kernels("load_all_kernels")
    }
}

impl<R: DeviceRuntime> CudaBackend<R> {
    /// The backend issuing its work to `runtime`.
    pub fn on(runtime: R) -> Result<Self> {
        let label_error = Self::alloc_on(&runtime, "CudaBackend::new", LABEL_ERROR_LEN)?;
        let partials = Self::alloc_on(&runtime, "CudaBackend::new", CHANNEL_PARTIALS)?;
        Ok(Self {
            inner: Arc::new(Inner {
                capturing: AtomicBool::new(false),
                partials: std::sync::Mutex::new(partials),
                label_error,
                runtime,
            }),
        })
    }

    /// The runtime the backend issues its work to.
    pub fn runtime(&self) -> &R {
        &self.inner.runtime
    }

    /// `len` zeroed f32 on `runtime`'s device.
    fn alloc_on(runtime: &R, op: &'static str, len: usize) -> Result<CudaBuffer<R>> {
        let (memory, base) = runtime.alloc(op, len)?;
        Ok(CudaBuffer {
            _memory: memory,
            base,
            len,
        })
    }

    /// Whether the runtime is recording.
    fn capturing(&self) -> bool {
        self.inner.capturing.load(Ordering::Acquire)
    }

    /// Fails when a graph capture is under way: `op` needs the host, which a graph cannot
    /// record. Called before the op changes anything (a host RNG draw included).
    fn host_guard(&self, op: &'static str) -> Result<()> {
        if self.capturing() {
            return Err(BackendError::Device {
                op,
                message: "needs the host in the middle of the work being captured (a CUDA \
                          graph records device work only)"
                    .into(),
            });
        }
        Ok(())
    }

    /// `op`'s launches over `n` work items, grid-stride.
    fn grid_stride(&self, op: &'static str, n: usize) -> Grid<'_, R> {
        let blocks = if n == 0 {
            0
        } else {
            n.div_ceil(BLOCK as usize).clamp(1, MAX_BLOCKS)
        };
        self.blocks(op, blocks)
    }

    /// `op`'s launches on `blocks` blocks.
    fn blocks(&self, op: &'static str, blocks: usize) -> Grid<'_, R> {
        Grid {
            runtime: &self.inner.runtime,
            op,
            blocks,
        }
    }

    /// The device address of the view `buf[off..off + len]` once it is checked to lie inside
    /// its buffer and to hold what `extent` says the op touches.
    fn address(
        op: &'static str,
        arg: &'static str,
        (buf, off, len): (&CudaBuffer<R>, usize, usize),
        extent: Extent,
    ) -> Result<u64> {
        let range = touched(op, arg, (buf.len(), off, len), extent)?;
        // In range: `range.start <= buf.len`, so the byte offset cannot overflow.
        Ok(buf.base + (range.start * 4) as u64)
    }

    /// The device address of the view `x`, checked, for a kernel to read.
    fn read(
        op: &'static str,
        arg: &'static str,
        x: Slice<'_, CudaBuffer<R>>,
        extent: Extent,
    ) -> Result<ReadPtr> {
        Self::address(op, arg, (x.buf, x.off, x.len), extent).map(ReadPtr::new)
    }

    /// The device address of the view `y`, checked, for a kernel to write.
    fn write(
        op: &'static str,
        arg: &'static str,
        y: &SliceMut<'_, CudaBuffer<R>>,
        extent: Extent,
    ) -> Result<WritePtr> {
        Self::address(op, arg, (&*y.buf, y.off, y.len), extent).map(WritePtr::new)
    }

    /// The address of `len` elements of a buffer of the backend's own (scratch, reports),
    /// written behind `&self`.
    fn scratch(
        op: &'static str,
        arg: &'static str,
        buf: &CudaBuffer<R>,
        off: usize,
        len: usize,
    ) -> Result<WritePtr> {
        Self::address(op, arg, (buf, off, len), Extent::Whole).map(WritePtr::new)
    }

    /// An input that may be the output: `out` is the output's address.
    fn src(
        op: &'static str,
        arg: &'static str,
        s: Src<'_, CudaBuffer<R>>,
        extent: Extent,
        out: WritePtr,
    ) -> Result<ReadPtr> {
        match s {
            Src::Slice(x) => Self::read(op, arg, x, extent),
            Src::InPlace => Ok(out.as_read()),
        }
    }

    /// A scalar as the kernel arguments `(const float* at, float value)`: the kernel reads `*at`
    /// when it is not null, `value` otherwise.
    fn scalar(
        op: &'static str,
        arg: &'static str,
        s: Scalar<'_, CudaBuffer<R>>,
    ) -> Result<(ReadPtr, f32)> {
        match s {
            Scalar::Value(v) => Ok((ReadPtr::NULL, v)),
            Scalar::At(buf, off) => {
                Ok((Self::read(op, arg, buf.slice(off, 1), Extent::Whole)?, 0.0))
            }
        }
    }

    /// `y = f(x)` element-wise by a kernel `(n, x, y)`; `call` builds its arguments.
    fn map1<K: KernelCall>(
        &self,
        op: &'static str,
        x: Src<'_, CudaBuffer<R>>,
        y: SliceMut<'_, CudaBuffer<R>>,
        call: impl FnOnce(i32, ReadPtr, WritePtr) -> K,
    ) -> Result<()> {
        let n = y.len;
        let yp = Self::write(op, "y", &y, Extent::Whole)?;
        let xp = Self::src(op, "x", x, Extent::Exactly(n), yp)?;
        self.grid_stride(op, n).run(call(int(op, n)?, xp, yp))
    }

    /// `y = f(a, b)` element-wise by a kernel `(n, a, b, y)`; `call` builds its arguments.
    fn map2<K: KernelCall>(
        &self,
        op: &'static str,
        (a, b): (Src<'_, CudaBuffer<R>>, Src<'_, CudaBuffer<R>>),
        y: SliceMut<'_, CudaBuffer<R>>,
        call: impl FnOnce(i32, ReadPtr, ReadPtr, WritePtr) -> K,
    ) -> Result<()> {
        let n = y.len;
        let yp = Self::write(op, "y", &y, Extent::Whole)?;
        let ap = Self::src(op, "a", a, Extent::Exactly(n), yp)?;
        let bp = Self::src(op, "b", b, Extent::Exactly(n), yp)?;
        self.grid_stride(op, n).run(call(int(op, n)?, ap, bp, yp))
    }

    /// The whole-buffer reductions' scratch (see [`Inner::partials`]).
    fn partials(&self, op: &'static str) -> Result<MutexGuard<'_, CudaBuffer<R>>> {
        self.inner
            .partials
            .lock()
            .map_err(|_| dev_err(op, "partial sums poisoned"))
    }

    /// `*out = alpha sum_i term(x[i], y[i])` on the device (`kind` as `reduce_partial` takes
    /// it: 0 sum, 1 |x|, 2 x^2, 3 x y): partial sums on at most [`REDUCE_BLOCKS`] blocks, then
    /// one thread adds them in double. `partials` is the locked scratch.
    fn reduce_into(
        &self,
        op: &'static str,
        kind: i32,
        n: usize,
        (x, y): (ReadPtr, ReadPtr),
        (alpha, out): (f32, WritePtr),
        partials: &CudaBuffer<R>,
    ) -> Result<()> {
        let blocks = n.div_ceil(BLOCK as usize).clamp(1, REDUCE_BLOCKS);
        let parts = blocks * BLOCK as usize;
        let partial = Self::scratch(op, "partial", partials, 0, parts)?;
        self.blocks(op, blocks).run(kernels::ReducePartial {
            n: int(op, n)?,
            kind,
            x,
            y,
            partial,
        })?;
        self.grid_stride(op, 1).run(kernels::SumPartials {
            parts: int(op, parts)?,
            partial: partial.as_read(),
            alpha,
            y: out,
        })
    }

    /// A reduction returned to the host: [`Self::reduce_into`] the scratch's result slot, then
    /// one value downloaded. `y` is the second operand (`x` itself for one-operand sums).
    fn reduce_to_host(
        &self,
        op: &'static str,
        kind: i32,
        n: usize,
        (x, y): (ReadPtr, ReadPtr),
    ) -> Result<f32> {
        self.host_guard(op)?;
        if n == 0 {
            return Ok(0.0);
        }
        let partials = self.partials(op)?;
        let slot = Self::scratch(op, "result", &partials, PARTIALS, 1)?;
        self.reduce_into(op, kind, n, (x, y), (1.0, slot), &partials)?;
        let mut value = [0f32];
        Backend::download(self, partials.slice(PARTIALS, 1), &mut value)?;
        Ok(value[0])
    }

    /// A label-indexed kernel's `(has_ignore, ignore_label)`.
    fn ignore_args(ignore: Option<i32>) -> (i32, i32) {
        (i32::from(ignore.is_some()), ignore.unwrap_or(0))
    }

    /// `(outer, dim, inner)` as the axis kernels take them.
    fn axis_ints(op: &'static str, axis: Axis) -> Result<[i32; 3]> {
        Ok([
            int(op, axis.outer)?,
            int(op, axis.dim)?,
            int(op, axis.inner)?,
        ])
    }
}
