//! [`CudaBackend`]: the op set on an NVIDIA GPU, each op one launch of the kernel of the same
//! name from `kernels/*.cu` (compiled by [`super::nvrtc`] for the device's architecture),
//! GEMM and GEMV through cuBLAS. `rcaffe train/test/time -gpu N` build one through
//! [`super::device::open`].
//!
//! All compute goes to one stream, in issue order, so an op may read what the previous one wrote
//! without further synchronisation; [`Backend::download`] and the reductions wait for the
//! stream. Device pointers are passed to kernels as raw addresses plus the element offset,
//! which also gives the in-place form ([`Src::InPlace`]: the output address for the input).
//!
//! Label-indexed ops validate their labels on the host first (a download of the label blob,
//! `outer * inner` values), so an out-of-range label is the same error as on the CPU. While a
//! graph is captured they cannot: `gather_at_label`, `affine_at_label` and `top_k_hits` then
//! leave the check to their kernels, which report a bad label in a word of device memory that
//! every replay reads back (and fails on).
//! `max_pool_backward` does not validate its mask (the CPU op rejects an index outside the
//! plane): a mask written by `max_pool_forward` is always valid, and any other entry is skipped.
//!
//! Batch uploads ([`Backend::upload`] of at least [`STAGED_MIN`] elements) go through pinned
//! host staging on a copy stream of their own: the host copies into page-locked memory and
//! returns at once, the DMA runs at full speed on the copy stream once the compute stream has
//! finished with the destination (an event), and the compute stream waits for the copy (another
//! event). So the host does not wait for the GPU to drain the previous iteration before it can
//! queue the next one, as a pageable upload would make it.
//!
//! Whole-iteration replay: [`Backend::begin_capture`] starts a CUDA graph capture of the
//! compute stream, [`Backend::end_capture`] instantiates it. While capturing, every op that
//! needs the host (an upload or download, a reduction returning a value, a host-drawn random
//! fill, `sum_by_label`'s label check, an allocation, a synchronisation) fails with a
//! [`BackendError::Device`] naming itself, before touching anything, so the caller can end the
//! capture and run the work directly instead.
//!
//! Whole-buffer reductions run in two launches (per-thread partial sums, then one thread adds
//! them) and leave their result on the device; those that return a value download just it. The
//! fills that take the host's [`Rng`]
//! (weight fillers, at setup) draw on the host and upload; Dropout's masks come from
//! `rng_bernoulli_stream`, drawn on the device.

use super::nvrtc;
use crate::backend::{
    check_probability, check_range, invalid, philox, Backend, BackendError, CapturedWork, ConvGeom,
    DeviceBuffer, LrnGeom, PoolGeom, Result, Rng, Scalar, Transpose, UpdateRule, Views,
};
use cudarc::cublas::sys::cublasOperation_t;
use cudarc::driver::sys::{CUdeviceptr, CUgraphInstantiate_flags, CUstreamCaptureMode};
use cudarc::driver::{CudaContext, CudaEvent, CudaFunction, CudaGraph, CudaSlice, CudaStream};
use cudarc::driver::{DevicePtr, LaunchConfig, PinnedHostSlice, PushKernelArg};
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

mod labels;
mod ops;
mod staging;

use staging::{Staging, StagingSlot};

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
/// Uploads of at least this many elements (256 KiB) go through pinned staging; smaller ones
/// (a label vector, a parameter) are not worth the extra host copy and events.
pub const STAGED_MIN: usize = 64 * 1024;
/// cuBLAS's workspace, set explicitly so that a captured GEMM never allocates (NVIDIA's
/// recommendation for graph capture; 32 MiB is what it suggests for Hopper).
const CUBLAS_WORKSPACE_BYTES: usize = 32 << 20;
/// `{reported, label, dim}`: see [`Inner::label_error`].
const LABEL_ERROR_LEN: usize = 3;

/// `len` f32 on the device.
pub struct CudaBuffer {
    /// At least one element, so that an empty buffer still has a valid address.
    _alloc: CudaSlice<f32>,
    /// The allocation's device address (kept alive by `slice`).
    base: CUdeviceptr,
    len: usize,
}

impl fmt::Debug for CudaBuffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CudaBuffer({} f32 at {:#x})", self.len, self.base)
    }
}

impl DeviceBuffer for CudaBuffer {
    fn len(&self) -> usize {
        self.len
    }
}

struct Inner {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    arch: String,
    blas: Option<cudarc::cublas::CudaBlas>,
    /// cuBLAS's workspace (see [`CUBLAS_WORKSPACE_BYTES`]); kept alive with the handle.
    _blas_workspace: Option<CudaSlice<u8>>,
    functions: Mutex<HashMap<&'static str, CudaFunction>>,
    staging: Mutex<Staging>,
    /// Whether the compute stream is being captured into a graph.
    capturing: AtomicBool,
    /// The whole-buffer reductions' partial sums ([`PARTIALS`] of them), then one slot for a
    /// result the host reads; or a long-channel `sum_per_channel`'s ([`CHANNEL_PARTIALS`] at
    /// most). Allocated once, as an allocation per reduction would cost more than the sum.
    partials: Mutex<CudaBuffer>,
    /// Where the label-indexed kernels report a bad label (`{1, label, dim}`, zeros when none):
    /// the host check cannot run inside a graph, so each replay reads this instead.
    label_error: CudaBuffer,
}

/// An op input in the `(buffer, offset)` form the launch code takes: another buffer, or the
/// op's own output (in place).
pub(super) enum Src<'a, T: ?Sized> {
    At(&'a T, usize),
    InPlace,
}

impl<T: ?Sized> Clone for Src<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T: ?Sized> Copy for Src<'_, T> {}

/// The CUDA backend on one device. Cloning is cheap and shares the context and stream.
#[derive(Clone)]
pub struct CudaBackend {
    inner: Arc<Inner>,
}

impl fmt::Debug for CudaBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CudaBackend")
            .field("device", &self.inner.ctx.ordinal())
            .field("arch", &self.inner.arch)
            .finish()
    }
}

/// One kernel argument.
#[derive(Clone, Copy)]
enum Arg {
    I(i32),
    F(f32),
    P(CUdeviceptr),
}

fn dev_err(op: &'static str, e: impl fmt::Debug) -> BackendError {
    BackendError::Device {
        op,
        message: format!("{e:?}"),
    }
}

fn int(op: &'static str, v: usize) -> Result<i32> {
    i32::try_from(v).map_err(|_| invalid(op, format!("size {v} exceeds a kernel's int range")))
}

fn trans(t: Transpose) -> cublasOperation_t {
    match t {
        Transpose::NoTrans => cublasOperation_t::CUBLAS_OP_N,
        Transpose::Trans => cublasOperation_t::CUBLAS_OP_T,
    }
}

impl CudaBackend {
    /// Whether the CUDA driver library can be loaded and reports at least one device.
    pub fn device_available() -> bool {
        // SAFETY: only opens the library by its candidate names.
        if !unsafe { cudarc::driver::sys::is_culib_present() } {
            return false;
        }
        CudaContext::device_count().is_ok_and(|n| n > 0)
    }

    /// A backend on device `ordinal`: a context, one stream, cuBLAS when its library loads.
    pub fn new(ordinal: usize) -> Result<Self> {
        const OP: &str = "CudaBackend::new";
        if !Self::device_available() {
            return Err(BackendError::Device {
                op: OP,
                message: "no CUDA driver or no CUDA device".into(),
            });
        }
        let ctx = CudaContext::new(ordinal).map_err(|e| dev_err(OP, e))?;
        let (major, minor) = ctx.compute_capability().map_err(|e| dev_err(OP, e))?;
        // A stream of its own rather than the legacy default stream: CUDA graph capture (the
        // planned whole-iteration replay) cannot capture the legacy stream.
        let stream = ctx.new_stream().map_err(|e| dev_err(OP, e))?;
        // SAFETY: only opens the library by its candidate names.
        let (blas, blas_workspace) = if unsafe { cudarc::cublas::sys::is_culib_present() } {
            let blas = cudarc::cublas::CudaBlas::new(stream.clone()).map_err(|e| dev_err(OP, e))?;
            let workspace = stream
                .alloc_zeros::<u8>(CUBLAS_WORKSPACE_BYTES)
                .map_err(|e| dev_err(OP, e))?;
            let address = workspace.device_ptr(&stream).0;
            // SAFETY: the workspace lives as long as the handle (both in `Inner`, the handle
            // dropped first as it is declared first) and is used only on the handle's stream.
            let status = unsafe {
                cudarc::cublas::sys::cublasSetWorkspace_v2(
                    *blas.handle(),
                    address as *mut std::ffi::c_void,
                    CUBLAS_WORKSPACE_BYTES,
                )
            };
            if status != cudarc::cublas::sys::cublasStatus_t::CUBLAS_STATUS_SUCCESS {
                return Err(dev_err(OP, format!("cublasSetWorkspace: {status:?}")));
            }
            (Some(blas), Some(workspace))
        } else {
            (None, None)
        };
        let copy_stream = ctx.new_stream().map_err(|e| dev_err(OP, e))?;
        let slot = || -> Result<StagingSlot> {
            Ok(StagingSlot {
                host: None,
                copied: ctx.new_event(None).map_err(|e| dev_err(OP, e))?,
            })
        };
        let staging = Staging {
            copy_stream,
            slots: [slot()?, slot()?],
            next: 0,
        };
        let label_error = Self::alloc_on(&stream, LABEL_ERROR_LEN)?;
        let partials = Self::alloc_on(&stream, CHANNEL_PARTIALS)?;
        Ok(Self {
            inner: Arc::new(Inner {
                ctx,
                stream,
                arch: format!("sm_{major}{minor}"),
                blas,
                _blas_workspace: blas_workspace,
                functions: Mutex::new(HashMap::new()),
                staging: Mutex::new(staging),
                capturing: AtomicBool::new(false),
                partials: Mutex::new(partials),
                label_error,
            }),
        })
    }

    /// `len` zeroed f32 on `stream`'s device.
    fn alloc_on(stream: &Arc<CudaStream>, len: usize) -> Result<CudaBuffer> {
        const OP: &str = "alloc";
        let slice = stream.alloc_zeros::<f32>(len.max(1)).map_err(|e| {
            if e.0 == cudarc::driver::sys::CUresult::CUDA_ERROR_OUT_OF_MEMORY {
                crate::backend::out_of_memory::<f32>(OP, len)
            } else {
                dev_err(OP, e)
            }
        })?;
        let base = slice.device_ptr(stream).0;
        Ok(CudaBuffer {
            _alloc: slice,
            base,
            len,
        })
    }

    /// Whether the compute stream is being captured into a graph.
    fn capturing(&self) -> bool {
        self.inner.capturing.load(Ordering::Acquire)
    }

    /// The device ordinal.
    pub fn ordinal(&self) -> usize {
        self.inner.ctx.ordinal()
    }

    /// Compiles (or reads precompiled) and loads every kernel file now rather than at each
    /// file's first launch: a compiler problem surfaces here, and timings exclude compilation.
    pub fn load_all_kernels(&self) -> Result<()> {
        for (file, _) in nvrtc::KERNEL_SOURCES {
            if let Some(kernel) = nvrtc::kernel_names(file).first() {
                self.function("load_all_kernels", kernel)?;
            }
        }
        Ok(())
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

    /// The architecture kernels are compiled for, e.g. `sm_90`.
    pub fn arch(&self) -> &str {
        &self.inner.arch
    }

    /// The device function `kernel`, compiling and loading its file on first use.
    fn function(&self, op: &'static str, kernel: &'static str) -> Result<CudaFunction> {
        let mut map = self
            .inner
            .functions
            .lock()
            .map_err(|_| dev_err(op, "kernel table poisoned"))?;
        if let Some(f) = map.get(kernel) {
            return Ok(f.clone());
        }
        let file = nvrtc::KERNEL_SOURCES
            .iter()
            .map(|(name, _)| *name)
            .find(|name| nvrtc::kernel_names(name).contains(&kernel))
            .ok_or_else(|| invalid(op, format!("no kernel named {kernel} in kernels/")))?;
        let ptx = nvrtc::compile(file, &self.inner.arch)?;
        let module = self
            .inner
            .ctx
            .load_module(cudarc::nvrtc::Ptx::from_src(ptx.as_str()))
            .map_err(|e| dev_err(op, e))?;
        // Load every kernel of the file at once.
        for name in nvrtc::kernel_names(file) {
            let f = module.load_function(name).map_err(|e| dev_err(op, e))?;
            map.insert(name, f);
        }
        map.get(kernel)
            .cloned()
            .ok_or_else(|| dev_err(op, format!("{kernel} missing from its module")))
    }

    /// Launches `kernel` over `n` work items (grid-stride) with `args`.
    fn launch(&self, op: &'static str, kernel: &'static str, n: usize, args: &[Arg]) -> Result<()> {
        if n == 0 {
            return Ok(());
        }
        let blocks = n.div_ceil(BLOCK as usize).clamp(1, MAX_BLOCKS);
        self.launch_blocks(op, kernel, blocks, args)
    }

    /// Launches `kernel` on `blocks` blocks of [`BLOCK`] threads with `args`.
    fn launch_blocks(
        &self,
        op: &'static str,
        kernel: &'static str,
        blocks: usize,
        args: &[Arg],
    ) -> Result<()> {
        let f = self.function(op, kernel)?;
        let cfg = LaunchConfig {
            grid_dim: (blocks as u32, 1, 1),
            block_dim: (BLOCK, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut b = self.inner.stream.launch_builder(&f);
        for a in args {
            match a {
                Arg::I(v) => b.arg(v),
                Arg::F(v) => b.arg(v),
                Arg::P(v) => b.arg(v),
            };
        }
        // SAFETY: every pointer argument was bounds-checked against its buffer by the caller
        // for the range the kernel touches; scalars match the kernel's C signature.
        unsafe { b.launch(cfg) }.map_err(|e| dev_err(op, e))?;
        Ok(())
    }

    /// The device address of `buf[off..off + len]`, bounds-checked.
    fn ptr(
        op: &'static str,
        arg: &'static str,
        buf: &CudaBuffer,
        off: usize,
        len: usize,
    ) -> Result<Arg> {
        check_range(op, arg, buf.len(), off, len)?;
        Ok(Arg::P(buf.base + (off * 4) as CUdeviceptr))
    }

    /// An input that may be the output: `out` is the output's address.
    fn src(
        op: &'static str,
        arg: &'static str,
        s: Src<'_, CudaBuffer>,
        len: usize,
        out: Arg,
    ) -> Result<Arg> {
        match s {
            Src::At(b, off) => Self::ptr(op, arg, b, off, len),
            Src::InPlace => Ok(out),
        }
    }

    /// A scalar as the kernel arguments `(const float* at, float value)`: the kernel reads `*at`
    /// when it is not null, `value` otherwise.
    fn scalar(op: &'static str, arg: &'static str, s: Scalar<'_, CudaBuffer>) -> Result<[Arg; 2]> {
        match s {
            Scalar::Value(v) => Ok([Arg::P(0), Arg::F(v)]),
            Scalar::At(buf, off) => Ok([Self::ptr(op, arg, buf, off, 1)?, Arg::F(0.0)]),
        }
    }

    fn map1(
        &self,
        op: &'static str,
        kernel: &'static str,
        n: usize,
        x: Src<'_, CudaBuffer>,
        y: &mut CudaBuffer,
        y_off: usize,
    ) -> Result<()> {
        let yp = Self::ptr(op, "y", y, y_off, n)?;
        let xp = Self::src(op, "x", x, n, yp)?;
        self.launch(op, kernel, n, &[Arg::I(int(op, n)?), xp, yp])
    }

    #[allow(clippy::too_many_arguments)] // until the launch code takes views
    fn map2(
        &self,
        op: &'static str,
        kernel: &'static str,
        n: usize,
        a: Src<'_, CudaBuffer>,
        b: Src<'_, CudaBuffer>,
        y: &mut CudaBuffer,
        y_off: usize,
    ) -> Result<()> {
        let yp = Self::ptr(op, "y", y, y_off, n)?;
        let ap = Self::src(op, "a", a, n, yp)?;
        let bp = Self::src(op, "b", b, n, yp)?;
        self.launch(op, kernel, n, &[Arg::I(int(op, n)?), ap, bp, yp])
    }

    /// `dx = f(fwd, dy)` for the activations' backward kernels `(n, [scalar], fwd, dy, dx)`.
    #[allow(clippy::too_many_arguments)] // until the launch code takes views
    fn backward(
        &self,
        op: &'static str,
        kernel: &'static str,
        n: usize,
        scalar: Option<f32>,
        fwd: &CudaBuffer,
        fwd_off: usize,
        dy: Src<'_, CudaBuffer>,
        dx: &mut CudaBuffer,
        dx_off: usize,
    ) -> Result<()> {
        let dxp = Self::ptr(op, "dx", dx, dx_off, n)?;
        let fp = Self::ptr(op, "x", fwd, fwd_off, n)?;
        let dyp = Self::src(op, "dy", dy, n, dxp)?;
        let mut args = vec![Arg::I(int(op, n)?)];
        args.extend(scalar.map(Arg::F));
        args.extend([fp, dyp, dxp]);
        self.launch(op, kernel, n, &args)
    }

    /// `sum_i f(x[i], y[i])` by per-thread partial sums added on the host in f64.
    /// The whole-buffer reductions' scratch (see [`Inner::partials`]).
    fn partials(&self, op: &'static str) -> Result<MutexGuard<'_, CudaBuffer>> {
        self.inner
            .partials
            .lock()
            .map_err(|_| dev_err(op, "partial sums poisoned"))
    }

    /// `*out = alpha sum_i term(x[i], y[i])` on the device (`kind` as `reduce_partial` takes
    /// it: 0 sum, 1 |x|, 2 x^2, 3 x y): partial sums on at most [`REDUCE_BLOCKS`] blocks, then
    /// one thread adds them in double. `partials` is the locked scratch.
    #[allow(clippy::too_many_arguments)]
    fn reduce_into(
        &self,
        op: &'static str,
        kind: i32,
        n: usize,
        (xp, yp): (Arg, Arg),
        alpha: f32,
        out: Arg,
        partials: &CudaBuffer,
    ) -> Result<()> {
        let blocks = n.div_ceil(BLOCK as usize).clamp(1, REDUCE_BLOCKS);
        let parts = blocks * BLOCK as usize;
        let pp = Self::ptr(op, "partial", partials, 0, parts)?;
        let args = [Arg::I(int(op, n)?), Arg::I(kind), xp, yp, pp];
        self.launch_blocks(op, "reduce_partial", blocks, &args)?;
        let parts = Arg::I(int(op, parts)?);
        self.launch(op, "sum_partials", 1, &[parts, pp, Arg::F(alpha), out])
    }

    /// A reduction returned to the host: [`Self::reduce_into`] the scratch's result slot, then
    /// one value downloaded.
    fn reduce(
        &self,
        op: &'static str,
        kind: i32,
        n: usize,
        x: &CudaBuffer,
        x_off: usize,
        y: Option<(&CudaBuffer, usize)>,
    ) -> Result<f32> {
        self.host_guard(op)?;
        if n == 0 {
            return Ok(0.0);
        }
        let xp = Self::ptr(op, "x", x, x_off, n)?;
        let yp = match y {
            Some((b, off)) => Self::ptr(op, "y", b, off, n)?,
            None => xp,
        };
        let partials = self.partials(op)?;
        let slot = Self::ptr(op, "result", &partials, PARTIALS, 1)?;
        self.reduce_into(op, kind, n, (xp, yp), 1.0, slot, &partials)?;
        let mut value = [0f32];
        Backend::download(self, partials.slice(PARTIALS, 1), &mut value)?;
        Ok(value[0])
    }

    fn blas(&self, op: &'static str) -> Result<&cudarc::cublas::CudaBlas> {
        self.inner
            .blas
            .as_ref()
            .ok_or_else(|| BackendError::Device {
                op,
                message: "cuBLAS (libcublas) cannot be loaded".into(),
            })
    }

    fn ignore_args(ignore: Option<i32>) -> [Arg; 2] {
        [
            Arg::I(i32::from(ignore.is_some())),
            Arg::I(ignore.unwrap_or(0)),
        ]
    }

    fn conv_args(op: &'static str, g: &ConvGeom) -> Result<Vec<Arg>> {
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
        .into_iter()
        .map(|v| int(op, v).map(Arg::I))
        .collect()
    }

    fn pool_args(op: &'static str, g: &PoolGeom) -> Result<Vec<Arg>> {
        [
            g.planes, g.height, g.width, g.kernel_h, g.kernel_w, g.stride_h, g.stride_w, g.pad_h,
            g.pad_w, g.pooled_h, g.pooled_w,
        ]
        .into_iter()
        .map(|v| int(op, v).map(Arg::I))
        .collect()
    }

    fn lrn_args(op: &'static str, g: &LrnGeom) -> Result<Vec<Arg>> {
        Ok(vec![
            Arg::I(int(op, g.num)?),
            Arg::I(int(op, g.channels)?),
            Arg::I(int(op, g.spatial)?),
            Arg::I(int(op, g.size)?),
            Arg::F(g.alpha),
            Arg::F(g.beta),
        ])
    }

    fn ocd(op: &'static str, outer: usize, dim: usize, inner: usize) -> Result<[Arg; 3]> {
        Ok([
            Arg::I(int(op, outer)?),
            Arg::I(int(op, dim)?),
            Arg::I(int(op, inner)?),
        ])
    }
}
