//! Run-time compilation of the kernels in `kernels/*.cu` with NVRTC, cached per process.
//!
//! The sources are embedded in the binary; [`compile`] turns one file into PTX for a GPU
//! architecture (`sm_90` for an H100/H200) and keeps the result for the rest of the process,
//! so each (file, architecture) pair is compiled once. NVRTC's shared library
//! (`libnvrtc.so.13` and its `libnvrtc-builtins`) is loaded on first use; [`available`] says
//! whether it can be.
//!
//! Options: `--fmad=false`, so the device does not contract `a * b + c` into an FMA and rounds
//! each operation as the CPU ops do (the kernels are memory-bound; the tests compare against
//! the CPU op with tolerances that assume this). No fast math: `expf`, `logf`, `tanhf` keep
//! CUDA's documented accuracy of a few ulps.

use super::kernels::Kernel;
use crate::backend::{BackendError, Result};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// The numbers the kernels share with the CPU backend (kernels/constants.h), seen by every
/// kernel file ahead of its own text.
pub const CONSTANTS: &str = include_str!("../../../kernels/constants.h");

/// Every kernel file, by family name: `(name, source)` for `kernels/<name>.cu`.
pub const KERNEL_SOURCES: &[(&str, &str)] = &[
    (
        "activations",
        include_str!("../../../kernels/activations.cu"),
    ),
    ("axis", include_str!("../../../kernels/axis.cu")),
    (
        "elementwise",
        include_str!("../../../kernels/elementwise.cu"),
    ),
    ("im2col", include_str!("../../../kernels/im2col.cu")),
    ("loss", include_str!("../../../kernels/loss.cu")),
    ("lrn", include_str!("../../../kernels/lrn.cu")),
    ("plumbing", include_str!("../../../kernels/plumbing.cu")),
    ("pooling", include_str!("../../../kernels/pooling.cu")),
    ("random", include_str!("../../../kernels/random.cu")),
    ("solver", include_str!("../../../kernels/solver.cu")),
];

const OP: &str = "nvrtc";

/// Whether NVRTC's shared library can be loaded (it is looked up on the library path).
pub fn available() -> bool {
    // SAFETY: only tries to open the library by its candidate names and closes it again.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

/// The source of `kernels/<name>.cu`.
pub fn source(name: &str) -> Result<&'static str> {
    KERNEL_SOURCES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, s)| *s)
        .ok_or_else(|| BackendError::InvalidArgument {
            op: OP,
            message: format!("no kernel file kernels/{name}.cu"),
        })
}

/// The kernels `kernels/<name>.cu` defines, as `build.rs` read them from its prototypes.
pub fn kernel_names(name: &str) -> Vec<&'static str> {
    Kernel::ALL
        .iter()
        .filter(|kernel| kernel.file() == name)
        .map(|kernel| kernel.name())
        .collect()
}

/// PTX by (file name, architecture).
type PtxMap = HashMap<(String, String), Arc<String>>;
type Cache = Mutex<PtxMap>;

fn cache() -> &'static Cache {
    static CACHE: OnceLock<Cache> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

/// PTX of `kernels/<name>.cu` for `arch` (e.g. `"sm_90"`), compiled on first request and
/// cached for the process. Fails with the compiler's log when the source does not compile,
/// and with a device error when NVRTC cannot be loaded.
pub fn compile(name: &str, arch: &str) -> Result<Arc<String>> {
    let key = (name.to_owned(), arch.to_owned());
    if let Some(ptx) = lock(cache())?.get(&key) {
        return Ok(Arc::clone(ptx));
    }
    let src = source(name)?;
    if !available() {
        if let Some(ptx) = precompiled(name, arch)? {
            let mut map = lock(cache())?;
            return Ok(Arc::clone(map.entry(key).or_insert(Arc::new(ptx))));
        }
        return Err(BackendError::Device {
            op: OP,
            message: "NVRTC (libnvrtc.so) cannot be loaded: is the CUDA runtime on the library \
                      path?"
                .into(),
        });
    }
    let opts = cudarc::nvrtc::CompileOptions {
        fmad: Some(false),
        name: Some(format!("{name}.cu")),
        options: vec![format!("--gpu-architecture={arch}")],
        ..Default::default()
    };
    // The shared constants ahead of the file's own text; `#line` keeps the compiler's line
    // numbers those of the file.
    let src = format!("{CONSTANTS}\n#line 1 \"{name}.cu\"\n{src}");
    let ptx = cudarc::nvrtc::compile_ptx_with_opts(src, opts).map_err(|e| {
        let message = match e {
            cudarc::nvrtc::CompileError::CompileError {
                nvrtc,
                options,
                log,
            } => format!(
                "kernels/{name}.cu for {arch}: {nvrtc:?} with options {options:?}:\n{}",
                log.to_string_lossy()
            ),
            other => format!("kernels/{name}.cu for {arch}: {other:?}"),
        };
        BackendError::Device { op: OP, message }
    })?;
    let ptx = Arc::new(ptx.to_src());
    // Two threads may compile the same file at once; the first result stored wins.
    let mut map = lock(cache())?;
    Ok(Arc::clone(map.entry(key).or_insert(ptx)))
}

/// Environment variable naming a folder of PTX compiled beforehand, `<name>.<arch>.ptx`, used
/// when NVRTC cannot be loaded (a GPU machine with the driver but without the CUDA runtime).
pub const PTX_DIR_ENV: &str = "RCAFFE_PTX_DIR";

fn precompiled(name: &str, arch: &str) -> Result<Option<String>> {
    let Some(dir) = std::env::var_os(PTX_DIR_ENV) else {
        return Ok(None);
    };
    let path = std::path::Path::new(&dir).join(format!("{name}.{arch}.ptx"));
    match std::fs::read_to_string(&path) {
        Ok(ptx) => Ok(Some(ptx)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(BackendError::Device {
            op: OP,
            message: format!("reading {}: {e}", path.display()),
        }),
    }
}

fn lock(cache: &Cache) -> Result<std::sync::MutexGuard<'_, PtxMap>> {
    cache.lock().map_err(|_| BackendError::Device {
        op: OP,
        message: "the PTX cache was poisoned by a panic in another thread".into(),
    })
}
