// Numbers the kernels and the CPU backend share, written once. build.rs turns each
// `#define NAME VALUEf` here into a Rust `pub const NAME: f32` (rcaffe::backend::kernel_constants),
// and every kernel file sees this file ahead of its own text: NVRTC through the CUDA backend,
// which prepends it, the host emulation through g++'s -include.
// BNLL's backward clamps its input here before exp, as upstream's kBNLL_THRESHOLD
// (src/caffe/layers/bnll_layer.cpp).
#define BNLL_THRESHOLD 50.0f
