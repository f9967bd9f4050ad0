//! Choosing a CUDA device (`-gpu`, `solver_mode: GPU`) and describing it (`rcaffe
//! device-query`).
//!
//! Every function here first checks that the driver library can be loaded at all: cudarc loads
//! CUDA at run time and panics on a missing library, so nothing may call into the driver before
//! [`probe`] has said it is there. Failures come back as [`Unusable`], whose text says why in a
//! user's words (no driver, no device, no such device, no kernel compiler).

use super::{nvrtc, CudaBackend};
use crate::backend::BackendError;
use cudarc::driver::sys::CUdevice_attribute as Attr;
use cudarc::driver::CudaContext;
use std::sync::Arc;

/// What `-gpu` asked for, in Caffe's spellings: `0`, `0,1`, `all`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GpuIds {
    /// Every device the driver reports.
    All,
    /// These device ordinals, in the order given.
    List(Vec<usize>),
}

impl GpuIds {
    /// Parses a `-gpu` value; the error says what was wrong with it.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let spec = spec.trim();
        if spec == "all" {
            return Ok(GpuIds::All);
        }
        let ids = spec
            .split(',')
            .map(|id| {
                id.trim().parse::<usize>().map_err(|_| {
                    format!("'{spec}' is not a device id, a comma-separated list of ids, or 'all'")
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(GpuIds::List(ids))
    }

    /// The device to train on (the first asked for) and, when more than one was asked for, the
    /// warning to log: this build trains on one device only.
    pub fn first(&self) -> Result<(usize, Option<String>), Unusable> {
        let (first, asked) = match self {
            GpuIds::List(ids) => (ids.first().copied().unwrap_or(0), ids.len()),
            GpuIds::All => (0, probe()?),
        };
        let warning = (asked > 1).then(|| {
            format!(
                "multi-GPU training is not supported: {asked} devices were asked for; using \
                 device {first} only"
            )
        });
        Ok((first, warning))
    }
}

/// Why no CUDA device can be used. The text completes "no usable CUDA device: ...".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unusable {
    /// `libcuda.so` is not on this machine (or not on the library path).
    #[error(
        "the CUDA driver library (libcuda.so) cannot be loaded: no NVIDIA driver is installed \
         here, or it is not on the library path"
    )]
    NoDriver,
    /// `cuInit` or the device count failed (e.g. CUDA_ERROR_NO_DEVICE in a container).
    #[error("the CUDA driver cannot be initialised: {0}")]
    Init(String),
    /// The driver loaded and reports no device.
    #[error("the CUDA driver reports no device")]
    NoDevice,
    /// The ordinal asked for is past the last device.
    #[error("there is no device {ordinal}: this machine has {count} (ids 0 to {last})", last = count - 1)]
    NoSuchDevice { ordinal: usize, count: usize },
    /// Neither NVRTC nor precompiled PTX is available to build the kernels.
    #[error(
        "the kernels cannot be built: NVRTC (libnvrtc.so) is not on the library path and {} \
         names no folder of precompiled PTX",
        nvrtc::PTX_DIR_ENV
    )]
    NoCompiler,
    /// cuBLAS, which every convolution and inner product needs, is not on the library path.
    #[error(
        "cuBLAS (libcublas.so) cannot be loaded: install the CUDA toolkit's libraries or put \
         them on the library path"
    )]
    NoCublas,
    /// The device exists but setting it up failed (a context, a stream, kernel compilation).
    #[error("device {ordinal}: {message}")]
    Setup { ordinal: usize, message: String },
}

impl From<Unusable> for BackendError {
    fn from(e: Unusable) -> Self {
        BackendError::Device {
            op: "CUDA device",
            message: format!("no usable CUDA device: {e}"),
        }
    }
}

/// The number of CUDA devices, or why there is none to use.
pub fn probe() -> Result<usize, Unusable> {
    // SAFETY: only tries to open the library by its candidate names.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err(Unusable::NoDriver);
    }
    let count = CudaContext::device_count().map_err(|e| Unusable::Init(format!("{e:?}")))?;
    match usize::try_from(count) {
        Ok(0) | Err(_) => Err(Unusable::NoDevice),
        Ok(n) => Ok(n),
    }
}

/// Checks that device `ordinal` exists.
fn check_ordinal(ordinal: usize) -> Result<(), Unusable> {
    let count = probe()?;
    if ordinal >= count {
        return Err(Unusable::NoSuchDevice { ordinal, count });
    }
    Ok(())
}

/// A [`CudaBackend`] on device `ordinal`, with every kernel file compiled and loaded now (so a
/// compiler problem is reported here, and `rcaffe time` does not time compilation).
pub fn open(ordinal: usize) -> Result<CudaBackend, Unusable> {
    check_ordinal(ordinal)?;
    let ptx_dir = std::env::var_os(nvrtc::PTX_DIR_ENV).is_some();
    if !nvrtc::available() && !ptx_dir {
        return Err(Unusable::NoCompiler);
    }
    // SAFETY: only tries to open the library by its candidate names.
    if !unsafe { cudarc::cublas::sys::is_culib_present() } {
        return Err(Unusable::NoCublas);
    }
    let setup = |e: BackendError| Unusable::Setup {
        ordinal,
        message: e.to_string(),
    };
    let backend = CudaBackend::new(ordinal).map_err(setup)?;
    backend.load_all_kernels().map_err(setup)?;
    Ok(backend)
}

/// The device's name, for "GPU 0: NVIDIA H200" lines.
pub fn name(ordinal: usize) -> Result<String, Unusable> {
    let ctx = context(ordinal)?;
    ctx.name().map_err(|e| Unusable::Setup {
        ordinal,
        message: format!("{e:?}"),
    })
}

fn context(ordinal: usize) -> Result<Arc<CudaContext>, Unusable> {
    check_ordinal(ordinal)?;
    CudaContext::new(ordinal).map_err(|e| Unusable::Setup {
        ordinal,
        message: format!("{e:?}"),
    })
}

/// What `rcaffe device-query` prints: upstream's fields, in its order, as `(label, value)`.
/// Read through the driver's attribute queries (the runtime's `cudaDeviceProp` is not loaded).
pub fn query(ordinal: usize) -> Result<Vec<(&'static str, String)>, Unusable> {
    let ctx = context(ordinal)?;
    let failed = |what: &str, e: cudarc::driver::DriverError| Unusable::Setup {
        ordinal,
        message: format!("reading {what}: {e:?}"),
    };
    let attr = |a: Attr| ctx.attribute(a).map_err(|e| failed(&format!("{a:?}"), e));
    let yes_no = |v: i32| if v != 0 { "Yes" } else { "No" }.to_string();
    let triple = |a: Attr, b: Attr, c: Attr| -> Result<String, Unusable> {
        Ok(format!("{}, {}, {}", attr(a)?, attr(b)?, attr(c)?))
    };
    Ok(vec![
        ("Device id", ordinal.to_string()),
        (
            "Major revision number",
            attr(Attr::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?.to_string(),
        ),
        (
            "Minor revision number",
            attr(Attr::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?.to_string(),
        ),
        ("Name", ctx.name().map_err(|e| failed("the name", e))?),
        (
            "Total global memory",
            ctx.total_mem()
                .map_err(|e| failed("the memory size", e))?
                .to_string(),
        ),
        (
            "Total shared memory per block",
            attr(Attr::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK)?.to_string(),
        ),
        (
            "Total registers per block",
            attr(Attr::CU_DEVICE_ATTRIBUTE_MAX_REGISTERS_PER_BLOCK)?.to_string(),
        ),
        (
            "Warp size",
            attr(Attr::CU_DEVICE_ATTRIBUTE_WARP_SIZE)?.to_string(),
        ),
        (
            "Maximum memory pitch",
            attr(Attr::CU_DEVICE_ATTRIBUTE_MAX_PITCH)?.to_string(),
        ),
        (
            "Maximum threads per block",
            attr(Attr::CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK)?.to_string(),
        ),
        (
            "Maximum dimension of block",
            triple(
                Attr::CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_X,
                Attr::CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Y,
                Attr::CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Z,
            )?,
        ),
        (
            "Maximum dimension of grid",
            triple(
                Attr::CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_X,
                Attr::CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Y,
                Attr::CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Z,
            )?,
        ),
        // kHz, as upstream prints cudaDeviceProp::clockRate.
        (
            "Clock rate",
            attr(Attr::CU_DEVICE_ATTRIBUTE_CLOCK_RATE)?.to_string(),
        ),
        (
            "Total constant memory",
            attr(Attr::CU_DEVICE_ATTRIBUTE_TOTAL_CONSTANT_MEMORY)?.to_string(),
        ),
        (
            "Texture alignment",
            attr(Attr::CU_DEVICE_ATTRIBUTE_TEXTURE_ALIGNMENT)?.to_string(),
        ),
        (
            "Concurrent copy and execution",
            yes_no(attr(Attr::CU_DEVICE_ATTRIBUTE_GPU_OVERLAP)?),
        ),
        (
            "Number of multiprocessors",
            attr(Attr::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?.to_string(),
        ),
        (
            "Kernel execution timeout",
            yes_no(attr(Attr::CU_DEVICE_ATTRIBUTE_KERNEL_EXEC_TIMEOUT)?),
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpu_flag_spellings() {
        assert_eq!(GpuIds::parse("0"), Ok(GpuIds::List(vec![0])));
        assert_eq!(GpuIds::parse("1, 0"), Ok(GpuIds::List(vec![1, 0])));
        assert_eq!(GpuIds::parse("all"), Ok(GpuIds::All));
        assert!(GpuIds::parse("gpu0").unwrap_err().contains("'gpu0'"));
        assert!(GpuIds::parse("").is_err());
    }

    #[test]
    fn a_list_uses_its_first_device_and_warns() {
        let (first, warning) = GpuIds::List(vec![2, 3]).first().unwrap();
        assert_eq!(first, 2);
        assert!(warning.unwrap().contains("using device 2 only"));
        assert_eq!(GpuIds::List(vec![1]).first().unwrap(), (1, None));
    }

    #[test]
    fn no_such_device_names_the_range() {
        let e = Unusable::NoSuchDevice {
            ordinal: 3,
            count: 1,
        };
        assert_eq!(
            e.to_string(),
            "there is no device 3: this machine has 1 (ids 0 to 0)"
        );
    }
}
