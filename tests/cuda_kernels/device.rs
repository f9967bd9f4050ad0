//! On a CUDA device: the backend's ops against the CPU, CUDA graphs, the solver replaying
//! iterations, staged uploads. Ignored in a plain `cargo test` (the reason says so), and failing,
//! not skipping, when run without a device. `scripts/gpu-check.sh` runs these (the tests whose
//! names end in `on_device`) with `--ignored --test-threads 1`: they share the device's
//! primary context, and a backend created or dropped on one thread synchronises that context,
//! which another thread's capture cannot survive.

use super::backend::{
    a_bad_label_inside_a_replayed_graph_is_reported, check_battery,
    graph_capture_records_replays_and_refuses_host_ops, op_battery,
    solver_replays_iterations_as_a_graph,
};
use super::*;

/// Fails, never skips, without a usable device: these tests run only when asked for
/// (`--ignored`), and a run on a machine without one must not pass.
fn require_device() {
    if let Err(reason) = rcaffe::backend::cuda::device::probe() {
        panic!("this test needs a CUDA device: {reason}");
    }
}

/// Every op of the battery on the GPU against the CPU backend. Runs only where a CUDA device
/// is present (never in CI); prints one line per op with its largest relative error.
#[test]
#[ignore = "needs a CUDA device: scripts/gpu-check.sh runs it with --ignored"]
fn cuda_backend_matches_cpu_on_device() {
    require_device();
    let gpu = CudaBackend::new(0).expect("CUDA backend on device 0");
    eprintln!(
        "device 0, kernels for {}, NVRTC loadable: {}, {}: {:?}",
        gpu.arch(),
        nvrtc::available(),
        nvrtc::PTX_DIR_ENV,
        std::env::var_os(nvrtc::PTX_DIR_ENV)
    );
    let want = op_battery(&cpu());
    let start = std::time::Instant::now();
    let got = op_battery(&gpu);
    eprintln!(
        "GPU battery took {:?} (including NVRTC compilation)",
        start.elapsed()
    );
    check_battery("GPU", &got, &want);
}

/// [`graph_capture_records_replays_and_refuses_host_ops`] on a CUDA graph.
#[test]
#[ignore = "needs a CUDA device: scripts/gpu-check.sh runs it with --ignored"]
fn cuda_graph_capture_records_replays_and_refuses_host_ops_on_device() {
    require_device();
    graph_capture_records_replays_and_refuses_host_ops(
        &CudaBackend::new(0).expect("CUDA backend on device 0"),
    );
}

/// [`a_bad_label_inside_a_replayed_graph_is_reported`] on a CUDA graph.
#[test]
#[ignore = "needs a CUDA device: scripts/gpu-check.sh runs it with --ignored"]
fn a_bad_label_inside_a_replayed_graph_is_reported_on_device() {
    require_device();
    a_bad_label_inside_a_replayed_graph_is_reported(
        &CudaBackend::new(0).expect("CUDA backend on device 0"),
    );
}

/// [`solver_replays_iterations_as_a_graph`] as a CUDA graph.
#[test]
#[ignore = "needs a CUDA device: scripts/gpu-check.sh runs it with --ignored"]
fn solver_replays_iterations_as_a_cuda_graph_on_device() {
    require_device();
    solver_replays_iterations_as_a_graph(&CudaBackend::new(0).expect("CUDA backend on device 0"));
}

/// A batch-sized upload (pinned staging on the copy stream) lands before the next kernel reads
/// it, and a second one into the same buffer waits for the kernels reading the first. Device
/// only.
#[test]
#[ignore = "needs a CUDA device: scripts/gpu-check.sh runs it with --ignored"]
fn staged_uploads_are_ordered_with_the_compute_stream_on_device() {
    require_device();
    let gpu = CudaBackend::new(0).expect("CUDA backend on device 0");
    let n = 3 * rcaffe::backend::cuda::STAGED_MIN + 5;
    let mut x = gpu.alloc(n).unwrap();
    let mut sum = gpu.alloc(n).unwrap();
    let mut want = vec![0f32; n];
    for round in 0..6 {
        let batch = rand_vec(100 + round, n, -1.0, 1.0);
        gpu.upload(&batch, x.whole_mut()).unwrap();
        gpu.axpby(Scalar::Value(1.0), x.whole(), 1.0, sum.whole_mut())
            .unwrap();
        for (w, b) in want.iter_mut().zip(&batch) {
            *w += b;
        }
    }
    let mut got = vec![0f32; n];
    gpu.download(sum.whole(), &mut got).unwrap();
    check("staged uploads summed", &got, &want, Tol::Exact);
}
