// The emulated CUDA index variables (declared in kernels/emulation.h) and the setter the
// Rust launcher calls before running each emulated thread.
#include "../../../kernels/emulation.h"

thread_local dim3 blockIdx;
thread_local dim3 blockDim;
thread_local dim3 threadIdx;
thread_local dim3 gridDim;

extern "C" void rcaffe_emu_set_index(unsigned int block, unsigned int thread,
                                     unsigned int grid_dim, unsigned int block_dim) {
  blockIdx = dim3{block, 0, 0};
  threadIdx = dim3{thread, 0, 0};
  gridDim = dim3{grid_dim, 1, 1};
  blockDim = dim3{block_dim, 1, 1};
}
