//! The CUDA backend: [`CudaBackend`] implements the op set with the kernels of `kernels/*.cu`,
//! compiled at run time by [`nvrtc`], and cuBLAS. [`device`] chooses and describes the device
//! for `-gpu`, `solver_mode: GPU` and `rcaffe device-query`. The kernels are checked against the
//! CPU ops under host emulation in `tests/cuda_kernels/`, and the backend itself there too
//! when a device is present.
//!
//! Everything here loads CUDA's libraries at run time (cudarc's `dynamic-loading`), so the
//! binary builds and runs on machines without CUDA.

mod backend;
mod cudarc_runtime;
pub mod device;
pub mod kernels;
pub mod nvrtc;
pub mod runtime;

pub use backend::{CudaBackend, CudaBuffer};
pub use cudarc_runtime::{CudaGraphRecording, CudarcRuntime, STAGED_MIN};
pub use runtime::DeviceRuntime;
