#!/usr/bin/env bash
# The device checks of issue 9, in one script for the GPU machine, which may have no Rust
# toolchain and no network: everything it runs is built beforehand into target/gpu/.
#
#   scripts/gpu-check.sh --build   # here: rcaffe, the cuda_kernels test binary and PTX into target/gpu/
#   scripts/gpu-check.sh           # there, in the repository root, with target/gpu/ carried along
#
# The device run, each step under its own timeout and all of it within 8 minutes on an H200:
#   1. nvidia-smi and `rcaffe device-query -gpu 0`;
#   2. every backend op on the GPU against the CPU backend, CUDA graph capture and replay, the
#      solver replaying iterations as a graph against the CPU, pinned staged uploads
#      (tests/cuda_kernels/, the `*_on_device` tests, run with --ignored; all must pass);
#   3. LMDBs of the bundled data made by rcaffe itself (convert-mnist, convert-cifar), then 300
#      training iterations of LeNet (sgd_inv) and cifar10_quick (sgd_fixed) from upstream's
#      initial weights (shared/reference/upstream/*/init.caffemodel), on the GPU and on the CPU,
#      comparing the loss of every iteration (and with upstream's log where it has one);
#   4. `rcaffe time -gpu 0` on LeNet, cifar10_quick, cifar10_full and AlexNet (batch 256): with
#      -model, forward and backward layer by layer (upstream's `caffe time`); with -solver, whole
#      training iterations as `rcaffe train` runs them (a replayed CUDA graph where captured);
#   5. when `python3 -c "import torch"` works there, the same nets in PyTorch, timed both ways
#      (scripts/torch_time.py);
# then one table: per net, ours and PyTorch's ms/iter and their ratio, forward-backward and
# training iteration; and the loss comparisons.
# The exit status is non-zero when a check failed (a missing PyTorch is not a failure).
set -uo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
gpu_dir=$repo/target/gpu

# The driver comes with the machine; NVRTC (and cuBLAS) from a CUDA toolkit or NVIDIA's wheels
# where present (here, for --build's PTX, as .ci/run installs it); there, else the PTX built
# beforehand.
for folder in /usr/local/cuda-13.0/targets/x86_64-linux/lib /usr/local/cuda/lib64; do
  if [ -d "$folder" ]; then
    export LD_LIBRARY_PATH="$folder${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    break
  fi
done
wheel=$(python3 -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cu13", "lib"))' 2>/dev/null || true)
if [ -n "$wheel" ] && [ -d "$wheel" ]; then
  export LD_LIBRARY_PATH="$wheel${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi

if [ "${1:-}" = "--build" ]; then
  set -e
  cargo build --release --bin rcaffe
  built=$(cargo test --release --test cuda_kernels --no-run 2>&1 |
    grep -o 'target/release/deps/cuda_kernels-[0-9a-f]*' | head -n 1)
  [ -n "$built" ] || { echo "gpu-check: the cuda_kernels test binary was not built" >&2; exit 1; }
  mkdir -p "$gpu_dir/ptx"
  cp "$built" "$gpu_dir/cuda_kernels"
  cp target/release/rcaffe "$gpu_dir/rcaffe"
  # Line tables are not needed there, and the carried folder must stay small.
  strip "$gpu_dir/cuda_kernels" "$gpu_dir/rcaffe" 2>/dev/null || true
  # PTX for a device machine without NVRTC (used only when libnvrtc cannot be loaded there).
  RCAFFE_PTX_OUT="$gpu_dir/ptx" "$gpu_dir/cuda_kernels" --ignored --exact \
    every_kernel_file_compiles_with_nvrtc --nocapture >/dev/null 2>&1 ||
    echo "gpu-check: no PTX written (NVRTC missing here?); the device then needs NVRTC" >&2
  # The reference files the device run needs, in shared/'s layout, in case the device machine
  # gets the working tree without the shared folder.
  for candidate in shared ../shared; do
    if [ -d "$candidate/reference/upstream" ]; then
      from=$candidate to=$gpu_dir/shared
      rm -rf "$to"
      for run in lenet/sgd_inv cifar10_quick/sgd_fixed cifar10_full/sgd_fixed; do
        net=${run%/*}
        mkdir -p "$to/reference/upstream/$net"
        cp "$from/reference/upstream/$net/"*_train_test.prototxt "$from/reference/upstream/$run".* \
          "$from/reference/upstream/$net/init.caffemodel" "$to/reference/upstream/$net/"
      done
      cp "$from/reference/upstream/fcifar_mini_mean.binaryproto" "$to/reference/upstream/"
      mkdir -p "$to/caffe-zoo/models/bvlc_alexnet"
      cp "$from/caffe-zoo/models/bvlc_alexnet/deploy.prototxt" "$to/caffe-zoo/models/bvlc_alexnet/"
      break
    fi
  done
  [ -d "$gpu_dir/shared" ] || echo "gpu-check: no shared/ or ../shared here: the device run will skip training" >&2
  du -sh "$gpu_dir"
  echo "built $gpu_dir (carry target/gpu to the device machine)"
  exit 0
fi

# GPU_CHECK_RCAFFE / GPU_CHECK_KERNELS replace the binaries, for a dry run of this script's own
# logic on a machine without a GPU (a wrapper that drops `-gpu 0`).
rcaffe=${GPU_CHECK_RCAFFE:-$gpu_dir/rcaffe}
kernels=${GPU_CHECK_KERNELS:-$gpu_dir/cuda_kernels}
for binary in "$rcaffe" "$kernels"; do
  [ -x "$binary" ] || { echo "gpu-check: no $binary; run scripts/gpu-check.sh --build first" >&2; exit 1; }
done
export RCAFFE_PTX_DIR=$gpu_dir/ptx

# The repository's shared/ folder travels with the working tree as shared/; beside a checkout
# it is ../shared; else the copy --build made in target/gpu/shared.
if [ -d shared/reference/upstream ]; then shared=$repo/shared
elif [ -d ../shared/reference/upstream ]; then shared=$(cd ../shared && pwd)
elif [ -d "$gpu_dir/shared/reference/upstream" ]; then shared=$gpu_dir/shared
else shared=""
fi
echo "reference files: ${shared:-none}"

# Every step gets at most its own limit and never more than what is left of the 8 minutes
# (less a reserve for the table).
start=$SECONDS
total_budget=470
failures=()
step_limit() {
  local want=$1 left=$((total_budget - (SECONDS - start)))
  [ "$left" -lt "$want" ] && want=$left
  [ "$want" -lt 1 ] && want=1
  echo "$want"
}
# run_step NAME LIMIT COMMAND...: runs COMMAND under the timeout, records a failure. With
# STEP_DIR set it runs there, with STEP_LOG set its stderr goes there and stdout is dropped.
run_step() {
  local name=$1 limit; limit=$(step_limit "$2"); shift 2
  echo "== $name (limit ${limit}s) =="
  if [ -n "${STEP_LOG:-}" ]; then
    (cd "${STEP_DIR:-.}" && timeout "$limit" "$@" 2>"$STEP_LOG" >/dev/null)
  else
    (cd "${STEP_DIR:-.}" && timeout "$limit" "$@")
  fi
  local status=$?
  if [ $status -ne 0 ]; then
    [ $status -eq 124 ] && echo "gpu-check: $name timed out after ${limit}s"
    failures+=("$name (exit $status)")
  fi
  return $status
}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "== the device =="
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
run_step "device-query" 30 "$rcaffe" device-query -gpu 0

# The `*_on_device` tests are ignored in a plain run; here every one of them must run and pass
# (each fails, never skips, without a device), so the count passed must be the count listed.
run_step "ops, graphs and staging on the device" 200 bash -c '
  expected=$("$0" --list --ignored on_device | grep -c ": test$")
  output=$("$0" --ignored --nocapture --test-threads 1 on_device 2>&1); status=$?
  echo "$output"
  passed=$(echo "$output" | sed -n "s/^test result: ok\. \([0-9]*\) passed.*/\1/p")
  if [ "$status" -ne 0 ] || [ "$expected" -eq 0 ] || [ "${passed:-0}" -ne "$expected" ]; then
    echo "device tests: $expected listed, ${passed:-0} passed" >&2
    exit 1
  fi' "$kernels"

# ---- 3. training: GPU against CPU, from upstream's initial weights -------------------------
declare -A loss_rows
if [ -z "$shared" ]; then
  echo "gpu-check: no shared/reference/upstream (here, ../shared, target/gpu/shared): training skipped"
  failures+=("training comparison (no shared/ folder)")
else
  data=$work/data
  mkdir -p "$data"
  run_step "LMDBs from the bundled data" 60 bash -c "
    set -e
    '$rcaffe' convert-mnist data/fashion-mnist-mini/train-images-idx3-ubyte.gz \
      data/fashion-mnist-mini/train-labels-idx1-ubyte.gz '$data/fmnist_mini_train_lmdb' >/dev/null
    '$rcaffe' convert-mnist data/fashion-mnist-mini/t10k-images-idx3-ubyte.gz \
      data/fashion-mnist-mini/t10k-labels-idx1-ubyte.gz '$data/fmnist_mini_test_lmdb' >/dev/null
    mkdir -p '$data/cifar'
    '$rcaffe' convert-cifar data/fashion-cifar-mini '$data/cifar' >/dev/null
    mv '$data/cifar/cifar10_train_lmdb' '$data/fcifar_mini_train_lmdb'
    mv '$data/cifar/cifar10_test_lmdb' '$data/fcifar_mini_test_lmdb'
    cp '$shared/reference/upstream/fcifar_mini_mean.binaryproto' '$data/'"

  # Runs one net's solver for 300 iterations on the GPU and the CPU in its own folder; prints
  # the comparison line.
  train_pair() { # net solver cpu-limit gpu-limit
    local net=$1 solver=$2 dir=$work/$1
    mkdir -p "$dir"
    cp "$shared/reference/upstream/$net/"*.prototxt "$shared/reference/upstream/$net/init.caffemodel" "$dir/"
    ln -sf "$data"/fmnist_mini_* "$data"/fcifar_mini_* "$dir/"
    STEP_DIR=$dir STEP_LOG=$dir/gpu.log run_step "$net: 300 iterations on the GPU" "$4" \
      "$rcaffe" train -solver "$solver" -weights init.caffemodel -gpu 0 --max-iter 300 \
      --display 1 --test-interval 1000 -sighup_effect none
    tail -n 2 "$dir/gpu.log"
    STEP_DIR=$dir STEP_LOG=$dir/cpu.log run_step "$net: 300 iterations on the CPU" "$3" \
      "$rcaffe" train -solver "$solver" -weights init.caffemodel --max-iter 300 \
      --display 1 --test-interval 1000 -sighup_effect none
    tail -n 1 "$dir/cpu.log"
    grep -h "CUDA graph" "$dir/gpu.log" || true
    loss_rows[$net]=$(compare_losses "$dir/gpu.log" "$dir/cpu.log" "$shared/reference/upstream/$net/${solver%.solver.prototxt}.log")
    echo "${loss_rows[$net]}"
  }
  # "Iteration N (...), loss = L" per iteration, compared: GPU vs CPU and GPU vs upstream.
  compare_losses() { # gpu.log cpu.log upstream.log
    python3 - "$@" <<'EOF'
import re, sys
def losses(path):
    out = {}
    try:
        for line in open(path, errors="replace"):
            m = re.search(r"Iteration (\d+) \(.*\), loss = ([-+0-9.eEnaif]+)", line)
            if m:
                out[int(m.group(1))] = float(m.group(2))
    except OSError:
        pass
    return out
gpu, cpu, up = (losses(p) for p in sys.argv[1:4])
def compare(a, b):
    common = sorted(set(a) & set(b))
    if not common:
        return None
    rel = [abs(a[i] - b[i]) / max(abs(b[i]), 1e-12) for i in common]
    return len(common), rel[0], max(rel), rel[-1], a[common[-1]], b[common[-1]]
vs_cpu, vs_up = compare(gpu, cpu), compare(gpu, up)
ok = vs_cpu is not None and vs_cpu[0] >= 300 and vs_cpu[1] < 1e-4 and vs_cpu[3] < 0.05
text = "FAIL"
if vs_cpu:
    n, first, worst, last, g, c = vs_cpu
    text = ("PASS" if ok else "FAIL") + (f" GPU vs CPU: {n} iterations, loss rel. diff first {first:.1e}, "
            f"max {worst:.1e}, last {last:.1e} (GPU {g:.5g}, CPU {c:.5g})")
if vs_up:
    n, first, worst, last, g, u = vs_up
    text += f"; GPU vs upstream log: {n} iterations, first {first:.1e}, max {worst:.1e}, last {last:.1e}"
print(text)
EOF
  }
  train_pair lenet sgd_inv.solver.prototxt 120 60
  train_pair cifar10_quick sgd_fixed.solver.prototxt 180 60
  for net in lenet cifar10_quick; do
    case "${loss_rows[$net]:-}" in PASS*) ;; *) failures+=("$net GPU-vs-CPU loss") ;; esac
  done
fi

# ---- 4. rcaffe time -gpu 0: layer by layer (-model), whole training iterations (-solver) --
declare -A ours ours_train theirs theirs_train
time_ours() { # net model solver iterations
  local net=$1 dir; dir=$(dirname "$2")
  STEP_DIR=$dir STEP_LOG=$work/time-$net.log run_step "time -gpu 0 -model: $net" 60 \
    "$rcaffe" time -model "$2" -gpu 0 -iterations "$4"
  grep -E "GPU|Average Forward-Backward|error" "$work/time-$net.log" | tail -n 4
  ours[$net]=$(sed -n 's/.*Average Forward-Backward: \([0-9.]*\) ms.*/\1/p' "$work/time-$net.log" | tail -n 1)
  STEP_DIR=$dir STEP_LOG=$work/train-time-$net.log run_step "time -gpu 0 -solver: $net" 60 \
    "$rcaffe" time -solver "$3" -gpu 0 -iterations "$((4 * $4))"
  grep -E "CUDA graph|Average training iteration|error" "$work/train-time-$net.log" | tail -n 4
  ours_train[$net]=$(sed -n 's/.*Average training iteration: \([0-9.]*\) ms.*/\1/p' "$work/train-time-$net.log" | tail -n 1)
}
if [ -n "$shared" ]; then
  for net in lenet cifar10_quick cifar10_full; do
    mkdir -p "$work/$net"
    cp "$shared/reference/upstream/$net/"*_train_test.prototxt \
      "$shared/reference/upstream/$net/"*.solver.prototxt "$work/$net/"
    ln -sf "$work/data"/fmnist_mini_* "$work/data"/fcifar_mini_* "$work/$net/"
  done
  time_ours lenet "$work/lenet/lenet_train_test.prototxt" "$work/lenet/sgd_inv.solver.prototxt" 50
  time_ours cifar10_quick "$work/cifar10_quick/cifar10_quick_train_test.prototxt" \
    "$work/cifar10_quick/sgd_fixed.solver.prototxt" 50
  time_ours cifar10_full "$work/cifar10_full/cifar10_full_train_test.prototxt" \
    "$work/cifar10_full/sgd_fixed.solver.prototxt" 50
  # AlexNet: deploy.prototxt at batch 256; for training, the same net from constant DummyData
  # (the zoo's train_val reads ImageNet) into a SoftmaxWithLoss, with the zoo's weight filler
  # and solver (SGD, momentum, weight decay; a lower rate for the constant input).
  mkdir -p "$work/alexnet"
  sed 's/dim: 10 dim: 3 dim: 227 dim: 227/dim: 256 dim: 3 dim: 227 dim: 227/' \
    "$shared/caffe-zoo/models/bvlc_alexnet/deploy.prototxt" > "$work/alexnet/deploy.prototxt"
  grep -q "dim: 256" "$work/alexnet/deploy.prototxt" || failures+=("AlexNet batch 256 edit")
  python3 - "$work/alexnet/deploy.prototxt" > "$work/alexnet/train.prototxt" <<'EOF' ||
import re, sys
text = open(sys.argv[1]).read()
data = """layer {
  name: "data"
  type: "DummyData"
  top: "data"
  top: "label"
  dummy_data_param {
    shape { dim: 256 dim: 3 dim: 227 dim: 227 }
    shape { dim: 256 }
    data_filler { type: "constant" value: 0.5 }
    data_filler { type: "constant" value: 0 }
  }
}"""
loss = """layer {
  name: "loss"
  type: "SoftmaxWithLoss"
  bottom: "fc8"
  bottom: "label"
  top: "loss"
}"""
text, inputs = re.subn(r'layer \{\s*name: "data"\s*type: "Input".*?\n\}', data, text, count=1,
                       flags=re.S)
text, outputs = re.subn(r'layer \{\s*name: "prob"\s*type: "Softmax"[^}]*\}', loss, text)
# deploy.prototxt has no fillers (its weights come from a .caffemodel): the zoo's.
text = re.sub(r'(convolution_param|inner_product_param) \{',
              r'\1 {\n    weight_filler { type: "gaussian" std: 0.01 }', text)
if (inputs, outputs) != (1, 1):
    sys.exit(f"deploy.prototxt: {inputs} Input and {outputs} Softmax layers replaced, not 1 and 1")
print(text, end="")
EOF
    failures+=("AlexNet training net")
  cat > "$work/alexnet/solver.prototxt" <<'EOF'
net: "train.prototxt"
base_lr: 0.001
lr_policy: "step"
gamma: 0.1
stepsize: 100000
momentum: 0.9
weight_decay: 0.0005
max_iter: 450000
EOF
  time_ours alexnet "$work/alexnet/deploy.prototxt" "$work/alexnet/solver.prototxt" 10
fi

# ---- 5. PyTorch, when the machine has it ---------------------------------------------------
torch_note="PyTorch: not installed here"
if python3 -c "import torch; assert torch.cuda.is_available()" 2>/dev/null; then
  torch_note="PyTorch $(python3 -c 'import torch; print(torch.__version__)'): FP32, TF32 off, cuDNN autotuned, random input on the device"
  STEP_LOG=$work/torch.err run_step "the same nets in PyTorch" 150 \
    bash -c "python3 scripts/torch_time.py --iterations 20 > '$work/torch.out'"
  tail -n 3 "$work/torch.err"
  cat "$work/torch.out"
  while IFS=$'\t' read -r net ms train_ms; do
    [ -n "$net" ] && theirs[$net]=$ms && theirs_train[$net]=$train_ms
  done < <(grep -E $'^[a-z0-9_]+\t[0-9.]+\t[0-9.]+$' "$work/torch.out")
fi

# ---- the table -----------------------------------------------------------------------------
echo
echo "== summary ($((SECONDS - start)) s) =="
ratio() { # ours theirs
  if [ -n "$1" ] && [ -n "$2" ]; then awk -v o="$1" -v t="$2" 'BEGIN { printf "%.2f", o / t }'; else echo -; fi
}
printf '%-14s | %-31s | %-31s\n' "" "forward-backward, ms/iter" "training iteration, ms/iter"
printf '%-14s | %9s %9s %11s | %9s %9s %11s\n' net ours PyTorch ours/PyTorch ours PyTorch ours/PyTorch
for net in lenet cifar10_quick cifar10_full alexnet; do
  o=${ours[$net]:-} t=${theirs[$net]:-} ot=${ours_train[$net]:-} tt=${theirs_train[$net]:-}
  printf '%-14s | %9s %9s %11s | %9s %9s %11s\n' "$net" "${o:-n/a}" "${t:-n/a}" "$(ratio "$o" "$t")" \
    "${ot:-n/a}" "${tt:-n/a}" "$(ratio "$ot" "$tt")"
done
echo "(forward-backward: rcaffe time -gpu 0 -model, Average Forward-Backward, synchronised after"
echo " every layer; AlexNet: deploy.prototxt at batch 256. Training iteration: rcaffe time -gpu 0"
echo " -solver, Average training iteration: forward, backward and SGD update, a replayed CUDA graph"
echo " where captured; AlexNet from constant DummyData into SoftmaxWithLoss. Data layers upload an"
echo " LMDB batch each iteration. $torch_note)"
for net in lenet cifar10_quick; do
  echo "training $net: ${loss_rows[$net]:-not run}"
done
if [ ${#failures[@]} -gt 0 ]; then
  printf 'FAILED: %s\n' "${failures[@]}"
  exit 1
fi
echo "all device checks passed"
