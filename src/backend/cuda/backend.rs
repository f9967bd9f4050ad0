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
//! Still to do for speed: the whole-buffer reductions download one partial sum per thread (a
//! block reduction in shared memory would avoid that). The fills that take the host's [`Rng`]
//! (weight fillers, at setup) draw on the host and upload; Dropout's masks come from
//! `rng_bernoulli_stream`, drawn on the device.

use super::nvrtc;
use crate::backend::{
    check_probability, check_range, invalid, philox, Backend, BackendError, CapturedWork, ConvGeom,
    DeviceBuffer, LrnGeom, PoolGeom, Result, Rng, Scalar, Src, Transpose,
};
use crate::solver::UpdateRule;
use cudarc::cublas::sys::cublasOperation_t;
use cudarc::driver::sys::{CUdeviceptr, CUgraphInstantiate_flags, CUstreamCaptureMode};
use cudarc::driver::{CudaContext, CudaEvent, CudaFunction, CudaGraph, CudaSlice, CudaStream};
use cudarc::driver::{DevicePtr, LaunchConfig, PinnedHostSlice, PushKernelArg};
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Threads per block of every launch.
const BLOCK: u32 = 256;
/// The most blocks a launch uses; grid-stride loops cover the rest.
const MAX_BLOCKS: usize = 4096;
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

/// One pinned staging buffer and the event marking the end of the last copy out of it.
struct StagingSlot {
    host: Option<PinnedHostSlice<f32>>,
    copied: CudaEvent,
}

/// Pinned staging for large uploads: two slots used in turn, so filling one can overlap the
/// copy out of the other.
struct Staging {
    copy_stream: Arc<CudaStream>,
    slots: [StagingSlot; 2],
    next: usize,
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
    /// The per-thread partial sums of the host-returning reductions (one launch's worth of
    /// threads), allocated once: an allocation per reduction would cost more than the sum.
    partials: Mutex<CudaBuffer>,
    /// Where the label-indexed kernels report a bad label (`{1, label, dim}`, zeros when none):
    /// the host check cannot run inside a graph, so each replay reads this instead.
    label_error: CudaBuffer,
}

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
        let partials = Self::alloc_on(&stream, MAX_BLOCKS * BLOCK as usize)?;
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
        let slice = stream
            .alloc_zeros::<f32>(len.max(1))
            .map_err(|e| dev_err("alloc", e))?;
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

    /// `dst[p..]` = `src` through pinned staging on the copy stream (see the module docs).
    fn upload_staged(&self, src: &[f32], p: CUdeviceptr) -> Result<()> {
        const OP: &str = "upload";
        let mut staging = self
            .inner
            .staging
            .lock()
            .map_err(|_| dev_err(OP, "staging poisoned"))?;
        let index = staging.next;
        staging.next = (index + 1) % staging.slots.len();
        let copy_stream = Arc::clone(&staging.copy_stream);
        let slot = &mut staging.slots[index];
        // The last copy out of this slot must be done before the host overwrites it.
        slot.copied.synchronize().map_err(|e| dev_err(OP, e))?;
        if slot.host.as_ref().is_none_or(|h| h.len() < src.len()) {
            // Free the smaller buffer before allocating the larger one.
            slot.host = None;
            // SAFETY: the memory is written below before any of it is read.
            let host = unsafe { self.inner.ctx.alloc_pinned::<f32>(src.len()) }
                .map_err(|e| dev_err(OP, e))?;
            slot.host = Some(host);
        }
        let host = slot.host.as_mut().expect("allocated above");
        let staged = &mut host.as_mut_slice().map_err(|e| dev_err(OP, e))?[..src.len()];
        staged.copy_from_slice(src);
        // Write-after-read: kernels already queued on the compute stream may still read the
        // destination (the previous batch); the copy waits for them.
        copy_stream
            .join(&self.inner.stream)
            .map_err(|e| dev_err(OP, e))?;
        // SAFETY: `p` was bounds-checked by the caller for `src.len()` elements; the pinned
        // buffer stays untouched until `copied` has completed (synchronised above on reuse,
        // and by PinnedHostSlice's drop).
        unsafe { cudarc::driver::result::memcpy_htod_async(p, staged, copy_stream.cu_stream()) }
            .map_err(|e| dev_err(OP, e))?;
        slot.copied
            .record(&copy_stream)
            .map_err(|e| dev_err(OP, e))?;
        // Read-after-write: later kernels on the compute stream see the new data.
        self.inner
            .stream
            .wait(&slot.copied)
            .map_err(|e| dev_err(OP, e))
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
        let f = self.function(op, kernel)?;
        let blocks = n.div_ceil(BLOCK as usize).clamp(1, MAX_BLOCKS) as u32;
        let cfg = LaunchConfig {
            grid_dim: (blocks, 1, 1),
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
        // `launch` runs this many threads for `n` items, each writing its partial sum.
        let threads = n.div_ceil(BLOCK as usize).clamp(1, MAX_BLOCKS) * BLOCK as usize;
        let partials = self
            .inner
            .partials
            .lock()
            .map_err(|_| dev_err(op, "partial sums poisoned"))?;
        let pp = Self::ptr(op, "partial", &partials, 0, threads)?;
        self.launch(
            op,
            "reduce_partial",
            n,
            &[Arg::I(int(op, n)?), Arg::I(kind), xp, yp, pp],
        )?;
        let mut host = vec![0f32; threads];
        self.download(&partials, 0, &mut host)?;
        Ok(host.iter().map(|&v| f64::from(v)).sum::<f64>() as f32)
    }

    /// Labels of `labels[off..off + n]` on the host, each checked to be ignored or in `0..dim`.
    fn check_labels(
        &self,
        op: &'static str,
        label: &CudaBuffer,
        off: usize,
        n: usize,
        ignore: Option<i32>,
        dim: usize,
    ) -> Result<()> {
        self.host_guard(op)?;
        check_range(op, "label", label.len(), off, n)?;
        let mut host = vec![0f32; n];
        self.download(label, off, &mut host)?;
        for (p, &l) in host.iter().enumerate() {
            let class = l as i32;
            if ignore == Some(class) {
                continue;
            }
            if class < 0 || class as usize >= dim {
                return Err(invalid(
                    op,
                    format!("label {l} at position {p} is outside 0..{dim}"),
                ));
            }
        }
        Ok(())
    }

    /// For the kernels that report a bad label themselves: [`Self::check_labels`], except
    /// while capturing, when the kernel's report stands in for it (see [`Inner::label_error`]).
    /// Returns the report's address, the kernel's last argument.
    fn check_labels_unless_capturing(
        &self,
        op: &'static str,
        label: &CudaBuffer,
        off: usize,
        n: usize,
        ignore: Option<i32>,
        dim: usize,
    ) -> Result<Arg> {
        if !self.capturing() {
            self.check_labels(op, label, off, n, ignore, dim)?;
        }
        Self::ptr(
            op,
            "label_error",
            &self.inner.label_error,
            0,
            LABEL_ERROR_LEN,
        )
    }

    /// Fails when a label-indexed kernel reported a bad label since the last call, and clears
    /// the report. Waits for the stream.
    fn take_label_error(&self, op: &'static str) -> Result<()> {
        let mut report = [0f32; LABEL_ERROR_LEN];
        self.download(&self.inner.label_error, 0, &mut report)?;
        if report[0] == 0.0 {
            return Ok(());
        }
        let [_, label, dim] = report;
        let word = Self::ptr(
            op,
            "label_error",
            &self.inner.label_error,
            0,
            LABEL_ERROR_LEN,
        )?;
        let len = Arg::I(LABEL_ERROR_LEN as i32);
        self.launch(op, "set", LABEL_ERROR_LEN, &[len, Arg::F(0.0), word])?;
        Err(invalid(
            op,
            format!("label {label} is outside 0..{dim} (found by a kernel of the replayed graph)"),
        ))
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

impl Backend for CudaBackend {
    type Buffer = CudaBuffer;

    fn name(&self) -> &'static str {
        "CUDA"
    }

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
    ) -> Result<bool> {
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
        self.launch(OP, kernel, n, &args)?;
        Ok(true)
    }

    fn begin_capture(&self) -> Result<bool> {
        const OP: &str = "begin_capture";
        if self.inner.capturing.load(Ordering::Acquire) {
            return Err(invalid(OP, "a capture is already under way"));
        }
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
    fn rng_uniform(
        &self,
        n: usize,
        lo: f32,
        hi: f32,
        rng: &mut Rng,
        y: &mut CudaBuffer,
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
        y: &mut CudaBuffer,
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

    fn rng_bernoulli(
        &self,
        n: usize,
        p: f32,
        rng: &mut Rng,
        y: &mut CudaBuffer,
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
        if m == 0 || n == 0 {
            return Ok(());
        }
        // Stored extents (rows x cols) of A and B as the row-major operands are laid out.
        let (ar, ac) = if trans_a == Transpose::NoTrans {
            (m, k)
        } else {
            (k, m)
        };
        let (br, bc) = if trans_b == Transpose::NoTrans {
            (k, n)
        } else {
            (n, k)
        };
        let span = |rows: usize, cols: usize, ld: usize| {
            if rows == 0 {
                0
            } else {
                (rows - 1) * ld + cols
            }
        };
        if lda < ac.max(1) || ldb < bc.max(1) || ldc < n {
            return Err(invalid(
                OP,
                format!("leading dimensions {lda}, {ldb}, {ldc} too small"),
            ));
        }
        let Arg::P(ap) = Self::ptr(OP, "a", a, a_off, span(ar, ac, lda))? else {
            unreachable!()
        };
        let Arg::P(bp) = Self::ptr(OP, "b", b, b_off, span(br, bc, ldb))? else {
            unreachable!()
        };
        let Arg::P(cp) = Self::ptr(OP, "c", c, c_off, span(m, n, ldc))? else {
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
        let mut args = Self::ocd(OP, outer, channels, inner)?.to_vec();
        args.extend([Arg::F(alpha), xp, Arg::F(beta), yp]);
        self.launch(OP, OP, channels, &args)
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
        if rows == 0 || cols == 0 {
            return Ok(());
        }
        if rows > 1 && y_stride < cols {
            return Err(invalid(
                OP,
                format!("y_stride {y_stride} is less than the {cols} columns copied per row"),
            ));
        }
        let xp = Self::ptr(OP, "x", x, x_off, (rows - 1) * x_stride + cols)?;
        let yp = Self::ptr(OP, "y", y, y_off, (rows - 1) * y_stride + cols)?;
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
