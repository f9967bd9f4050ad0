//! The kernels of rcaffe's `kernels/*.cu`, compiled as C++ for the host (see `build.rs` and
//! `kernels/emulation.h`); [`launch`], which runs one emulated CUDA grid; and
//! [`EmulatedRuntime`], a [`DeviceRuntime`] on host memory that runs them, so that rcaffe's
//! CUDA backend (its op code unchanged) runs without a GPU.
//!
//! The declarations in [`k`] are generated from the kernels' `extern "C" __global__`
//! prototypes by the parser rcaffe's build script uses for the CUDA backend's launch
//! arguments. Calling a kernel function directly runs one emulated thread, with the indices
//! [`launch`] set.

use rcaffe::backend::cuda::kernels::{Kernel, KernelArg, ReadPtr, WritePtr};
use rcaffe::backend::cuda::runtime::{DeviceRuntime, Gemm, Gemv};
use rcaffe::backend::{BackendError, Result, Transpose};
use std::alloc::Layout;
use std::os::raw::c_float;
use std::ptr::NonNull;
use std::sync::Mutex;

extern "C" {
    fn rcaffe_emu_set_index(block: u32, thread: u32, grid_dim: u32, block_dim: u32);
}

/// Runs `kernel` once for every `(block, thread)` of a `grid x block` launch, one after another
/// on this OS thread, with `blockIdx`, `threadIdx`, `gridDim` and `blockDim` set for each.
///
/// # Safety
///
/// `kernel` calls a kernel from [`k`] with pointers valid for every element the kernel touches.
pub unsafe fn launch(grid: u32, block: u32, mut kernel: impl FnMut()) {
    for b in 0..grid {
        for t in 0..block {
            // SAFETY: sets thread-local integers only.
            unsafe { rcaffe_emu_set_index(b, t, grid, block) };
            kernel();
        }
    }
}

/// The kernels, by file. Pointers are already offset; sizes are `int`. (Their parameter lists
/// are the kernels' prototypes, however long.)
#[allow(clippy::too_many_arguments)]
pub mod k {
    use std::os::raw::{c_float, c_int};

    include!(concat!(env!("OUT_DIR"), "/declarations.rs"));
}

include!(concat!(env!("OUT_DIR"), "/dispatch.rs"));

/// Arguments the backend's generated launch structs cannot produce.
fn mismatch(kernel: Kernel, args: &[KernelArg]) -> ! {
    panic!(
        "{}: arguments {args:?} do not match its prototype",
        kernel.name()
    )
}

/// Zeroed host memory standing in for a device allocation; its address is the "device"
/// address the kernels get. Raw rather than a `Box`, as the kernels write through that address
/// while the buffer holding this moves about.
pub struct HostMemory {
    start: NonNull<f32>,
    layout: Layout,
}

// SAFETY: plain memory, accessed through its address by the runtime's ops, which the backend
// orders as a device stream would.
unsafe impl Send for HostMemory {}
// SAFETY: as above; `&HostMemory` gives no access to the memory.
unsafe impl Sync for HostMemory {}

impl Drop for HostMemory {
    fn drop(&mut self) {
        // SAFETY: allocated in `EmulatedRuntime::alloc` with this layout.
        unsafe { std::alloc::dealloc(self.start.as_ptr().cast(), self.layout) }
    }
}

/// One recorded piece of work.
#[derive(Debug)]
pub enum Recorded {
    Launch {
        kernel: Kernel,
        blocks: u32,
        threads: u32,
        args: Vec<KernelArg>,
    },
    Gemm(Gemm),
    Gemv(Gemv),
}

/// A device on the host: memory is host memory, a launch runs the kernel compiled for the host
/// on every thread of the grid in turn ([`launch`]), GEMM and GEMV are plain loops over the
/// column-major operands as cuBLAS takes them, and a recording is the list of launches and
/// products to issue again. Everything runs at once, on the calling thread, so it is always in
/// issue order.
#[derive(Debug, Default)]
pub struct EmulatedRuntime {
    /// The work recorded so far, while recording.
    recording: Mutex<Option<Vec<Recorded>>>,
}

impl EmulatedRuntime {
    pub fn new() -> Self {
        Self::default()
    }

    fn recording(
        &self,
        op: &'static str,
    ) -> Result<std::sync::MutexGuard<'_, Option<Vec<Recorded>>>> {
        self.recording.lock().map_err(|_| BackendError::Device {
            op,
            message: "the recording was poisoned".into(),
        })
    }

    /// Runs `work` now.
    ///
    /// # Safety
    ///
    /// As the [`DeviceRuntime`] call that issued it.
    unsafe fn run(work: &Recorded) {
        match work {
            Recorded::Launch {
                kernel,
                blocks,
                threads,
                args,
            } => {
                // SAFETY: the caller's.
                unsafe { run_grid(*kernel, *blocks, *threads, args) }
            }
            // SAFETY: the caller's.
            Recorded::Gemm(product) => unsafe { gemm(product) },
            // SAFETY: the caller's.
            Recorded::Gemv(product) => unsafe { gemv(product) },
        }
    }

    /// Records `work` while recording, else runs it.
    ///
    /// # Safety
    ///
    /// As the [`DeviceRuntime`] call that issued it.
    unsafe fn issue(&self, op: &'static str, work: Recorded) -> Result<()> {
        if let Some(recorded) = self.recording(op)?.as_mut() {
            recorded.push(work);
            return Ok(());
        }
        // SAFETY: the caller's.
        unsafe { Self::run(&work) };
        Ok(())
    }
}

fn read(p: ReadPtr) -> *const f32 {
    p.address() as *const f32
}

fn write(p: WritePtr) -> *mut f32 {
    p.address() as *mut f32
}

/// Element `(row, col)` of column-major `a` with leading dimension `ld`, as `op(a)` sees it.
///
/// # Safety
///
/// The element lies in valid memory.
unsafe fn element(a: ReadPtr, ld: i32, trans: Transpose, row: usize, col: usize) -> f64 {
    let (r, c) = match trans {
        Transpose::NoTrans => (row, col),
        Transpose::Trans => (col, row),
    };
    // SAFETY: the caller's.
    f64::from(unsafe { *read(a).add(r + c * ld as usize) })
}

/// cuBLAS's `sgemm` on host memory, summing in f64. `beta == 0` does not read `c`.
///
/// # Safety
///
/// As [`DeviceRuntime::gemm`].
unsafe fn gemm(p: &Gemm) {
    for j in 0..p.n as usize {
        for i in 0..p.m as usize {
            let mut sum = 0f64;
            for l in 0..p.k as usize {
                // SAFETY: the caller's.
                sum += unsafe {
                    element(p.a, p.lda, p.trans_a, i, l) * element(p.b, p.ldb, p.trans_b, l, j)
                };
            }
            // SAFETY: the caller's.
            let c = unsafe { &mut *write(p.c).add(i + j * p.ldc as usize) };
            let product = p.alpha * sum as f32;
            *c = if p.beta == 0.0 {
                product
            } else {
                product + p.beta * *c
            };
        }
    }
}

/// cuBLAS's `sgemv` with unit strides on host memory, summing in f64. `beta == 0` does not read
/// `y`.
///
/// # Safety
///
/// As [`DeviceRuntime::gemv`].
unsafe fn gemv(p: &Gemv) {
    let (rows, cols) = match p.trans {
        Transpose::NoTrans => (p.m as usize, p.n as usize),
        Transpose::Trans => (p.n as usize, p.m as usize),
    };
    for i in 0..rows {
        let mut sum = 0f64;
        for j in 0..cols {
            // SAFETY: the caller's.
            sum += unsafe { element(p.a, p.lda, p.trans, i, j) * f64::from(*read(p.x).add(j)) };
        }
        // SAFETY: the caller's.
        let y = unsafe { &mut *write(p.y).add(i) };
        let product = p.alpha * sum as f32;
        *y = if p.beta == 0.0 {
            product
        } else {
            product + p.beta * *y
        };
    }
}

impl DeviceRuntime for EmulatedRuntime {
    type Memory = HostMemory;
    type Recording = Vec<Recorded>;

    fn alloc(&self, op: &'static str, len: usize) -> Result<(HostMemory, u64)> {
        let layout = Layout::array::<c_float>(len.max(1))
            .map_err(|_| rcaffe::backend::out_of_memory::<f32>(op, len))?;
        // SAFETY: the layout is not zero-sized.
        let start = NonNull::new(unsafe { std::alloc::alloc_zeroed(layout) }.cast::<f32>())
            .ok_or_else(|| rcaffe::backend::out_of_memory::<f32>(op, len))?;
        let address = start.as_ptr() as u64;
        Ok((HostMemory { start, layout }, address))
    }

    unsafe fn upload(&self, _op: &'static str, src: &[f32], dst: WritePtr) -> Result<()> {
        // SAFETY: the caller vouches for `dst`; host memory of another allocation than `src`.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), write(dst), src.len()) };
        Ok(())
    }

    unsafe fn download(&self, _op: &'static str, src: ReadPtr, dst: &mut [f32]) -> Result<()> {
        // SAFETY: the caller vouches for `src`.
        unsafe { std::ptr::copy_nonoverlapping(read(src), dst.as_mut_ptr(), dst.len()) };
        Ok(())
    }

    fn synchronize(&self, _op: &'static str) -> Result<()> {
        Ok(())
    }

    unsafe fn launch(
        &self,
        op: &'static str,
        kernel: Kernel,
        blocks: u32,
        threads: u32,
        args: &[KernelArg],
    ) -> Result<()> {
        let work = Recorded::Launch {
            kernel,
            blocks,
            threads,
            args: args.to_vec(),
        };
        // SAFETY: the caller's.
        unsafe { self.issue(op, work) }
    }

    unsafe fn gemm(&self, op: &'static str, product: &Gemm) -> Result<()> {
        // SAFETY: the caller's.
        unsafe { self.issue(op, Recorded::Gemm(*product)) }
    }

    unsafe fn gemv(&self, op: &'static str, product: &Gemv) -> Result<()> {
        // SAFETY: the caller's.
        unsafe { self.issue(op, Recorded::Gemv(*product)) }
    }

    fn load_kernels(&self, _op: &'static str) -> Result<()> {
        Ok(())
    }

    fn begin_recording(&self, op: &'static str) -> Result<()> {
        *self.recording(op)? = Some(Vec::new());
        Ok(())
    }

    fn end_recording(&self, op: &'static str) -> Result<Option<Vec<Recorded>>> {
        Ok(self.recording(op)?.take())
    }

    fn replay(&self, _op: &'static str, recording: &mut Vec<Recorded>) -> Result<()> {
        for work in recording.iter() {
            // SAFETY: the recorded calls were vouched for when issued, and the backend keeps
            // the buffers they address alive as long as the recording.
            unsafe { Self::run(work) };
        }
        Ok(())
    }
}
