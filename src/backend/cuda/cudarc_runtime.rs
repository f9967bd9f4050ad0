//! [`CudarcRuntime`]: the [`DeviceRuntime`] of an NVIDIA GPU through cudarc: one context and
//! one compute stream, the kernels compiled by [`super::nvrtc`] for the device's architecture
//! and loaded on first use, GEMM and GEMV through cuBLAS, recordings as CUDA graphs.
//!
//! All compute goes to the one stream, in issue order. Batch uploads (at least [`STAGED_MIN`]
//! elements) go through pinned host staging on a copy stream of their own: the host copies
//! into page-locked memory and returns at once, the DMA runs at full speed on the copy stream
//! once the compute stream has finished with the destination (an event), and the compute
//! stream waits for the copy (another event). So the host does not wait for the GPU to drain
//! the previous iteration before it can queue the next one, as a pageable upload would make it.

use super::kernels::{Kernel, KernelArg, ReadPtr, WritePtr};
use super::nvrtc;
use super::runtime::{DeviceRuntime, Gemm, Gemv};
use crate::backend::{BackendError, Result, Transpose};
use cudarc::cublas::sys::cublasOperation_t;
use cudarc::driver::sys::{CUgraphInstantiate_flags, CUstreamCaptureMode};
use cudarc::driver::{CudaContext, CudaEvent, CudaFunction, CudaGraph, CudaSlice, CudaStream};
use cudarc::driver::{DevicePtr, DeviceRepr, LaunchConfig, PinnedHostSlice, PushKernelArg};
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

mod staging;

use staging::{Staging, StagingSlot};

/// Uploads of at least this many elements (256 KiB) go through pinned staging; smaller ones
/// (a label vector, a parameter) are not worth the extra host copy and events.
pub const STAGED_MIN: usize = 64 * 1024;
/// cuBLAS's workspace, set explicitly so that a captured GEMM never allocates (NVIDIA's
/// recommendation for graph capture; 32 MiB is what it suggests for Hopper).
const CUBLAS_WORKSPACE_BYTES: usize = 32 << 20;

pub(super) fn dev_err(op: &'static str, e: impl fmt::Debug) -> BackendError {
    BackendError::Device {
        op,
        message: format!("{e:?}"),
    }
}

fn trans(t: Transpose) -> cublasOperation_t {
    match t {
        Transpose::NoTrans => cublasOperation_t::CUBLAS_OP_N,
        Transpose::Trans => cublasOperation_t::CUBLAS_OP_T,
    }
}

/// One device through cudarc (see the module docs).
pub struct CudarcRuntime {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    arch: String,
    blas: Option<cudarc::cublas::CudaBlas>,
    /// cuBLAS's workspace (see [`CUBLAS_WORKSPACE_BYTES`]); kept alive with the handle.
    _blas_workspace: Option<CudaSlice<u8>>,
    functions: Mutex<HashMap<Kernel, CudaFunction>>,
    staging: Mutex<Staging>,
}

impl fmt::Debug for CudarcRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CudarcRuntime")
            .field("device", &self.ctx.ordinal())
            .field("arch", &self.arch)
            .finish()
    }
}

// SAFETY: both are `repr(transparent)` over a u64 device address, which is what a kernel's
// pointer parameter takes.
unsafe impl DeviceRepr for ReadPtr {}
unsafe impl DeviceRepr for WritePtr {}

/// A CUDA graph, instantiated.
pub struct CudaGraphRecording(CudaGraph);

// SAFETY: a CUDA graph may be used from any thread as long as calls on it are serialised
// (NVIDIA's graph thread-safety rules); replaying takes `&mut`, and nothing else reaches the
// graph, so moving it between threads is sound. It is not `Sync`.
unsafe impl Send for CudaGraphRecording {}

impl CudarcRuntime {
    /// Whether the CUDA driver library can be loaded and reports at least one device.
    pub fn device_available() -> bool {
        // SAFETY: only opens the library by its candidate names.
        if !unsafe { cudarc::driver::sys::is_culib_present() } {
            return false;
        }
        CudaContext::device_count().is_ok_and(|n| n > 0)
    }

    /// Device `ordinal`: a context, one stream, cuBLAS when its library loads.
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
        // A stream of its own rather than the legacy default stream: CUDA graph capture cannot
        // capture the legacy stream.
        let stream = ctx.new_stream().map_err(|e| dev_err(OP, e))?;
        // SAFETY: only opens the library by its candidate names.
        let (blas, blas_workspace) = if unsafe { cudarc::cublas::sys::is_culib_present() } {
            let blas = cudarc::cublas::CudaBlas::new(stream.clone()).map_err(|e| dev_err(OP, e))?;
            let workspace = stream
                .alloc_zeros::<u8>(CUBLAS_WORKSPACE_BYTES)
                .map_err(|e| dev_err(OP, e))?;
            let address = workspace.device_ptr(&stream).0;
            // SAFETY: the workspace lives as long as the handle (both in `Self`, the handle
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
        Ok(Self {
            ctx,
            stream,
            arch: format!("sm_{major}{minor}"),
            blas,
            _blas_workspace: blas_workspace,
            functions: Mutex::new(HashMap::new()),
            staging: Mutex::new(staging),
        })
    }

    /// The device ordinal.
    pub fn ordinal(&self) -> usize {
        self.ctx.ordinal()
    }

    /// The architecture kernels are compiled for, e.g. `sm_90`.
    pub fn arch(&self) -> &str {
        &self.arch
    }

    /// The device function `kernel`, compiling and loading its file on first use.
    fn function(&self, op: &'static str, kernel: Kernel) -> Result<CudaFunction> {
        let mut map = self
            .functions
            .lock()
            .map_err(|_| dev_err(op, "kernel table poisoned"))?;
        if let Some(f) = map.get(&kernel) {
            return Ok(f.clone());
        }
        let ptx = nvrtc::compile(kernel.file(), &self.arch)?;
        let module = self
            .ctx
            .load_module(cudarc::nvrtc::Ptx::from_src(ptx.as_str()))
            .map_err(|e| dev_err(op, e))?;
        // Load every kernel of the file at once.
        for &other in Kernel::ALL.iter().filter(|k| k.file() == kernel.file()) {
            let f = module
                .load_function(other.name())
                .map_err(|e| dev_err(op, e))?;
            map.insert(other, f);
        }
        map.get(&kernel)
            .cloned()
            .ok_or_else(|| dev_err(op, format!("{} missing from its module", kernel.name())))
    }

    fn blas(&self, op: &'static str) -> Result<&cudarc::cublas::CudaBlas> {
        self.blas.as_ref().ok_or_else(|| BackendError::Device {
            op,
            message: "cuBLAS (libcublas) cannot be loaded".into(),
        })
    }
}

impl DeviceRuntime for CudarcRuntime {
    type Memory = CudaSlice<f32>;
    type Recording = CudaGraphRecording;

    fn alloc(&self, op: &'static str, len: usize) -> Result<(CudaSlice<f32>, u64)> {
        let slice = self.stream.alloc_zeros::<f32>(len.max(1)).map_err(|e| {
            if e.0 == cudarc::driver::sys::CUresult::CUDA_ERROR_OUT_OF_MEMORY {
                crate::backend::out_of_memory::<f32>(op, len)
            } else {
                dev_err(op, e)
            }
        })?;
        let base = slice.device_ptr(&self.stream).0;
        Ok((slice, base))
    }

    unsafe fn upload(&self, op: &'static str, src: &[f32], dst: WritePtr) -> Result<()> {
        if src.len() >= STAGED_MIN {
            return self.upload_staged(src, dst);
        }
        // SAFETY: the caller vouches for `dst`; for pageable host memory the source has been
        // read when the call returns, and the stream orders the copy before later ops.
        unsafe {
            cudarc::driver::result::memcpy_htod_async(dst.address(), src, self.stream.cu_stream())
        }
        .map_err(|e| dev_err(op, e))
    }

    unsafe fn download(&self, op: &'static str, src: ReadPtr, dst: &mut [f32]) -> Result<()> {
        // SAFETY: the caller vouches for `src`; the stream is synchronised before `dst` is used.
        unsafe {
            cudarc::driver::result::memcpy_dtoh_async(dst, src.address(), self.stream.cu_stream())
        }
        .map_err(|e| dev_err(op, e))?;
        self.synchronize("synchronize")
    }

    fn synchronize(&self, op: &'static str) -> Result<()> {
        self.stream.synchronize().map_err(|e| dev_err(op, e))
    }

    unsafe fn launch(
        &self,
        op: &'static str,
        kernel: Kernel,
        blocks: u32,
        threads: u32,
        args: &[KernelArg],
    ) -> Result<()> {
        let f = self.function(op, kernel)?;
        let cfg = LaunchConfig {
            grid_dim: (blocks, 1, 1),
            block_dim: (threads, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut b = self.stream.launch_builder(&f);
        for arg in args {
            match arg {
                KernelArg::Int(v) => b.arg(v),
                KernelArg::Float(v) => b.arg(v),
                KernelArg::Read(p) => b.arg(p),
                KernelArg::Write(p) => b.arg(p),
            };
        }
        // SAFETY: the caller vouches for every pointer; the arguments follow the kernel's
        // prototype (the generated `KernelCall` impls).
        unsafe { b.launch(cfg) }.map_err(|e| dev_err(op, e))?;
        Ok(())
    }

    unsafe fn gemm(&self, op: &'static str, p: &Gemm) -> Result<()> {
        let blas = self.blas(op)?;
        // SAFETY: the caller vouches for the matrices; cuBLAS runs on the compute stream.
        unsafe {
            cudarc::cublas::result::sgemm(
                *blas.handle(),
                trans(p.trans_a),
                trans(p.trans_b),
                p.m,
                p.n,
                p.k,
                &p.alpha,
                p.a.address() as *const f32,
                p.lda,
                p.b.address() as *const f32,
                p.ldb,
                &p.beta,
                p.c.address() as *mut f32,
                p.ldc,
            )
        }
        .map_err(|e| dev_err(op, e))
    }

    unsafe fn gemv(&self, op: &'static str, p: &Gemv) -> Result<()> {
        let blas = self.blas(op)?;
        // SAFETY: the caller vouches for the matrix and vectors.
        unsafe {
            cudarc::cublas::result::sgemv(
                *blas.handle(),
                trans(p.trans),
                p.m,
                p.n,
                &p.alpha,
                p.a.address() as *const f32,
                p.lda,
                p.x.address() as *const f32,
                1,
                &p.beta,
                p.y.address() as *mut f32,
                1,
            )
        }
        .map_err(|e| dev_err(op, e))
    }

    /// Compiles (or reads precompiled) and loads every kernel file.
    fn load_kernels(&self, op: &'static str) -> Result<()> {
        for (file, _) in nvrtc::KERNEL_SOURCES {
            if let Some(&kernel) = Kernel::ALL.iter().find(|k| k.file() == *file) {
                self.function(op, kernel)?;
            }
        }
        Ok(())
    }

    fn begin_recording(&self, op: &'static str) -> Result<()> {
        // Thread-local mode: only this thread's unsafe calls (an allocation, a synchronous
        // copy) invalidate the capture; a prefetch thread's pinned allocation elsewhere does
        // not.
        self.stream
            .begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
            .map_err(|e| dev_err(op, e))
    }

    fn end_recording(&self, op: &'static str) -> Result<Option<CudaGraphRecording>> {
        let graph = self
            .stream
            .end_capture(CUgraphInstantiate_flags(0))
            .map_err(|e| dev_err(op, e))?;
        Ok(graph.map(CudaGraphRecording))
    }

    fn replay(&self, op: &'static str, recording: &mut CudaGraphRecording) -> Result<()> {
        recording.0.launch().map_err(|e| dev_err(op, e))
    }
}
