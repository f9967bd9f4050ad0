#!/usr/bin/env bash
# The device checks, in one script for the GPU machine (which may have no Rust toolchain).
#
#   scripts/gpu-check.sh --build   # here: build the test binary into target/gpu/
#   scripts/gpu-check.sh           # there, with target/gpu/ carried along
#
# Today it runs every backend op on the GPU against the CPU backend on the same random inputs
# and prints each op's largest relative error. Still to come (issue 9): 300 training iterations
# of LeNet and cifar10_quick on the GPU against the CPU run, `rcaffe time -gpu 0` on the zoo
# nets, and the PyTorch comparison table.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--build" ]; then
  built=$(cargo test --release --test cuda_kernels --no-run 2>&1 |
    grep -o 'target/release/deps/cuda_kernels-[0-9a-f]*' | head -n 1)
  [ -n "$built" ] || { echo "gpu-check: the cuda_kernels test binary was not built" >&2; exit 1; }
  mkdir -p target/gpu
  cp "$built" target/gpu/cuda_kernels
  echo "built target/gpu/cuda_kernels (carry target/gpu to the device machine)"
  exit 0
fi

binary=target/gpu/cuda_kernels
[ -x "$binary" ] || { echo "gpu-check: no $binary; run scripts/gpu-check.sh --build first" >&2; exit 1; }
# The driver comes with the machine; NVRTC from the CUDA toolkit if one is installed.
for folder in /usr/local/cuda-13.0/targets/x86_64-linux/lib /usr/local/cuda/lib64; do
  if [ -d "$folder" ]; then
    export LD_LIBRARY_PATH="$folder${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    break
  fi
done
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true

echo "== every backend op, GPU vs CPU =="
timeout 300 "$binary" --nocapture --test-threads 1 cuda_backend
