//! The kernels of `kernels/*.cu`, compiled for the host with `kernels/emulation.h` (the
//! `rcaffe-kernel-emu` dev-dependency): the CUDA backend's own op code run on them against the
//! CPU backend, op by op (`backend.rs`; on a GPU, `device.rs`); kernel-level checks of what
//! that does not reach (grid-stride loops on a small grid, in-place forms, geometries and
//! splits the backend does not choose, the update rules against upstream's formulas); and the
//! NVRTC compile check of every kernel file.
//!
//! Kernel-level launches use a small grid (3 blocks of 32 threads) and inputs larger than it,
//! so every grid-stride loop goes round several times.
//!
//! Tolerances. Emulated and CPU ops run the same IEEE f32 arithmetic (no FMA contraction on
//! either side), so ops made of +, -, *, /, comparisons and copies must agree exactly, and they
//! do where the kernel adds in the CPU op's order (col2im, pooling backward, LRN, the axis
//! reductions). Transcendental functions (exp, log, tanh, pow, log1p) get a relative 2e-6
//! (~16 ulps): on the host both sides call the same libm, but the tolerance is what the device
//! check will need, where CUDA's expf/logf/tanhf are within 2 ulps and powf within 4, composed
//! through a few operations. Sums whose order differs from the CPU op's (whole-buffer
//! reductions, sum_per_channel, sum_by_label) get 1e-6 of the sum of magnitudes, both sides
//! being within a few ulps of the exact sum.

use rcaffe::backend::cuda::{nvrtc, CudaBackend};
use rcaffe::backend::{
    rng_from_seed, Activation, Axis, AxisReduction, Backend, Binary, Block, Broadcast, ConvBatch,
    ConvGeom, ConvGrads, CpuBackend, CpuBuffer, Distribution, Gemm, Gemv, Labels, LrnGeom,
    LrnSaved, LrnWithin, PoolGeom, Pooling, Reduction, RoundMode, Scalar, SliceMut, Src, Transpose,
    Unary, Views,
};
use rcaffe_kernel_emu::{k, launch};
use std::os::raw::c_int;

const GRID: u32 = 3;
const BLOCK: u32 = 32;

/// Runs one kernel call as an emulated `GRID x BLOCK` launch.
macro_rules! emu {
    ($call:expr) => {
        // SAFETY: every pointer passed comes from a live Vec at least as long as the range the
        // kernel touches (the sizes passed are the Vec's dimensions).
        unsafe {
            launch(GRID, BLOCK, || {
                $call;
            })
        }
    };
}

#[derive(Clone, Copy, Debug)]
enum Tol {
    /// Bit-for-bit (NaN equals NaN).
    Exact,
    /// `|got - want| <= r |want|`, plus the tiniest normal for values near zero.
    Rel(f32),
    /// `|got - want| <= a`.
    Abs(f32),
    /// `|got - want| <= r |want| + a`.
    RelAbs(f32, f32),
}

fn check(op: &str, got: &[f32], want: &[f32], tol: Tol) {
    assert_eq!(got.len(), want.len(), "{op}: lengths differ");
    let mut worst = 0f32;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        if g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()) {
            continue;
        }
        let err = (g - w).abs();
        let ok = match tol {
            Tol::Exact => false,
            Tol::Rel(r) => err <= r * w.abs() + f32::MIN_POSITIVE,
            Tol::Abs(a) => err <= a,
            Tol::RelAbs(r, a) => err <= r * w.abs() + a,
        };
        assert!(
            ok,
            "{op}: element {i}: emulated kernel {g} vs CPU {w} (error {err}, tolerance {tol:?})"
        );
        worst = worst.max(err / w.abs().max(f32::MIN_POSITIVE));
    }
    eprintln!("{op}: {} elements, max relative error {worst:e}", got.len());
}

fn cpu() -> CpuBackend {
    CpuBackend::new(1).expect("CPU backend")
}

/// `n` values uniform on `[lo, hi]`, from `seed`.
fn rand_vec(seed: u64, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    let mut rng = rng_from_seed(seed);
    let mut b = CpuBuffer::from_vec(vec![0.0; n]);
    cpu()
        .random(Distribution::Uniform { lo, hi }, &mut rng, b.whole_mut())
        .unwrap();
    b.into_vec()
}

fn buf(v: &[f32]) -> CpuBuffer {
    CpuBuffer::from_vec(v.to_vec())
}

fn int(v: usize) -> c_int {
    c_int::try_from(v).expect("size fits an int")
}

/// Every kernel file compiles with NVRTC for sm_90, through the code path the CUDA backend
/// uses. Needs NVRTC's shared library, so it is ignored in a plain `cargo test`; `.ci/run`
/// installs NVIDIA's wheel and runs it with `--ignored`, and it fails without NVRTC.
#[test]
#[ignore = "needs NVRTC (libnvrtc.so.13 on the library path): .ci/run installs it and runs this"]
fn every_kernel_file_compiles_with_nvrtc() {
    assert!(
        nvrtc::available(),
        "NVRTC not available: libnvrtc.so.13 is not on the library path"
    );
    for (name, _) in nvrtc::KERNEL_SOURCES {
        let ptx = nvrtc::compile(name, "sm_90")
            .unwrap_or_else(|e| panic!("kernels/{name}.cu does not compile with NVRTC: {e}"));
        // Every extern "C" kernel of the file is an entry point of the PTX.
        for kernel in nvrtc::kernel_names(name) {
            assert!(
                ptx.contains(&format!(".entry {kernel}(")),
                "kernels/{name}.cu: no PTX entry for {kernel}"
            );
        }
        eprintln!(
            "kernels/{name}.cu: compiled for sm_90 ({} bytes of PTX)",
            ptx.len()
        );
        // For a GPU machine without NVRTC: the PTX, for `RCAFFE_PTX_DIR` there.
        if let Some(dir) = std::env::var_os("RCAFFE_PTX_OUT") {
            let path = std::path::Path::new(&dir).join(format!("{name}.sm_90.ptx"));
            std::fs::write(path, ptx.as_str()).unwrap();
        }
    }
    // Cached per process: a second request returns the same PTX without compiling.
    let first = nvrtc::compile("elementwise", "sm_90").unwrap();
    let again = nvrtc::compile("elementwise", "sm_90").unwrap();
    assert!(std::sync::Arc::ptr_eq(&first, &again));
}

mod backend;
mod device;
mod elementwise;
mod loss_solver_random;
mod vision;
