// Host emulation of the few CUDA features the kernels in this folder use, so that each `.cu`
// file also compiles as plain C++ (g++ -x c++ -include emulation.h) and its kernels run on the
// CPU in tests (tests/kernel-emu, tests/cuda_kernels/).
//
// Model: a launch of `grid x block` threads runs every (block, thread) pair one after another
// on the calling OS thread; the launcher sets the index variables below before each call. This
// is exact for the kernels here because they are written grid-stride, with no shared memory,
// no barriers and no atomics: every thread writes only elements no other thread reads or
// writes in the same launch, so the order the threads run in does not matter.
//
// The index variables are thread-local so that tests running in parallel do not interfere.
#ifndef RCAFFE_KERNELS_EMULATION_H
#define RCAFFE_KERNELS_EMULATION_H

#include <math.h>
#include <string.h>

struct dim3 {
  unsigned int x, y, z;
};

extern thread_local dim3 blockIdx;
extern thread_local dim3 blockDim;
extern thread_local dim3 threadIdx;
extern thread_local dim3 gridDim;

#define __global__
#define __device__
#define __forceinline__ inline

// CUDA's integer min and max.
static inline int min(int a, int b) { return a < b ? a : b; }
static inline int max(int a, int b) { return a < b ? b : a; }

// Bit casts (CUDA intrinsics).
static inline int __float_as_int(float f) {
  int i;
  memcpy(&i, &f, sizeof i);
  return i;
}
static inline float __int_as_float(int i) {
  float f;
  memcpy(&f, &i, sizeof f);
  return f;
}

static inline unsigned int __float_as_uint(float f) {
  unsigned int u;
  memcpy(&u, &f, sizeof u);
  return u;
}
static inline float __uint_as_float(unsigned int u) {
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}

// The high 32 bits of a 32 x 32-bit unsigned product (CUDA intrinsic).
static inline unsigned int __umulhi(unsigned int a, unsigned int b) {
  return (unsigned int)(((unsigned long long)a * b) >> 32);
}

#endif
