//! [`DeviceRuntime`]: what the CUDA backend's op code needs from a device, so that the same op
//! code (argument marshalling, bounds checks, multi-launch sequences) runs on a GPU through
//! cudarc ([`CudarcRuntime`](super::CudarcRuntime)) and, in tests, on the kernels compiled for
//! the host (`tests/kernel-emu`).
//!
//! Work is issued in order: a launch, copy or product sees everything issued before it.

use super::kernels::{Kernel, KernelArg, ReadPtr, WritePtr};
use crate::backend::{Result, Transpose};
use std::fmt;

/// `c = alpha op(a) op(b) + beta c` on column-major matrices, as cuBLAS's `sgemm` takes it:
/// `op(a)` is `m x k`, `op(b)` is `k x n`, `c` is `m x n`, each with its leading dimension.
#[derive(Clone, Copy, Debug)]
pub struct Gemm {
    pub trans_a: Transpose,
    pub trans_b: Transpose,
    pub m: i32,
    pub n: i32,
    pub k: i32,
    pub alpha: f32,
    pub a: ReadPtr,
    pub lda: i32,
    pub b: ReadPtr,
    pub ldb: i32,
    pub beta: f32,
    pub c: WritePtr,
    pub ldc: i32,
}

/// `y = alpha op(a) x + beta y` for a column-major `m x n` matrix `a` of leading dimension
/// `lda` and contiguous vectors, as cuBLAS's `sgemv` takes it.
#[derive(Clone, Copy, Debug)]
pub struct Gemv {
    pub trans: Transpose,
    pub m: i32,
    pub n: i32,
    pub alpha: f32,
    pub a: ReadPtr,
    pub lda: i32,
    pub x: ReadPtr,
    pub beta: f32,
    pub y: WritePtr,
}

/// A device the CUDA backend runs on: memory, copies, kernel launches, GEMM and GEMV, and the
/// recording of work for replay. `op` arguments name the backend op for error messages.
pub trait DeviceRuntime: Send + Sync + fmt::Debug + Sized + 'static {
    /// One allocation; dropping it frees the memory.
    type Memory: Send + Sync + 'static;
    /// Work recorded between [`Self::begin_recording`] and [`Self::end_recording`].
    type Recording: Send + 'static;

    /// `len.max(1)` zeroed f32 (so that an empty buffer still has an address), and its address.
    fn alloc(&self, op: &'static str, len: usize) -> Result<(Self::Memory, u64)>;

    /// Copies `src` to `dst`.
    ///
    /// # Safety
    ///
    /// `dst` is valid for `src.len()` elements.
    unsafe fn upload(&self, op: &'static str, src: &[f32], dst: WritePtr) -> Result<()>;

    /// Copies from `src` into `dst` once the work issued before is done; returns when it is.
    ///
    /// # Safety
    ///
    /// `src` is valid for `dst.len()` elements.
    unsafe fn download(&self, op: &'static str, src: ReadPtr, dst: &mut [f32]) -> Result<()>;

    /// Waits for all work issued.
    fn synchronize(&self, op: &'static str) -> Result<()>;

    /// Runs `kernel` on `blocks` blocks of `threads` threads with `args`, which are in the
    /// order and of the types of its prototype ([`super::kernels::KernelCall::args`]).
    ///
    /// # Safety
    ///
    /// Every pointer argument is valid for every element the kernel touches given the others.
    unsafe fn launch(
        &self,
        op: &'static str,
        kernel: Kernel,
        blocks: u32,
        threads: u32,
        args: &[KernelArg],
    ) -> Result<()>;

    /// [`Gemm`].
    ///
    /// # Safety
    ///
    /// The matrices lie within valid memory, as their sizes and leading dimensions say.
    unsafe fn gemm(&self, op: &'static str, product: &Gemm) -> Result<()>;

    /// [`Gemv`].
    ///
    /// # Safety
    ///
    /// The matrix and vectors lie within valid memory, as their sizes say.
    unsafe fn gemv(&self, op: &'static str, product: &Gemv) -> Result<()>;

    /// Makes every kernel ready to launch now (compiling and loading them where that applies):
    /// a recording cannot load a kernel.
    fn load_kernels(&self, op: &'static str) -> Result<()>;

    /// Starts recording: the launches and products issued until [`Self::end_recording`] are
    /// recorded, not run. Copies, allocations and waits are not issued meanwhile (the backend
    /// refuses them).
    fn begin_recording(&self, op: &'static str) -> Result<()>;

    /// Ends the recording; `None` when nothing could be recorded.
    fn end_recording(&self, op: &'static str) -> Result<Option<Self::Recording>>;

    /// Issues the recorded work again, on the memory's current contents.
    fn replay(&self, op: &'static str, recording: &mut Self::Recording) -> Result<()>;
}
