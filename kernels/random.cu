// Counter-based random streams (Philox4x32-10), the same function as src/backend/philox.rs:
// every output depends only on a key and a counter, so a draw runs one thread per 4 elements,
// matches the CPU backend value for value, and a replayed CUDA graph draws anew, reading the
// stream's state from device memory.
//
// A stream's state: 4 floats holding u32 bit patterns {key0, key1, draw_lo, draw_hi}. Element
// i of a draw is word i % 4 of philox(counter = {i / 4, 0, draw_lo, draw_hi}, key).

static __device__ __forceinline__ void philox4x32_10(unsigned int c[4], unsigned int k0,
                                                     unsigned int k1) {
  for (int round = 0; round < 10; ++round) {
    if (round > 0) {
      k0 += 0x9E3779B9u;
      k1 += 0xBB67AE85u;
    }
    unsigned int hi0 = __umulhi(0xD2511F53u, c[0]), lo0 = 0xD2511F53u * c[0];
    unsigned int hi1 = __umulhi(0xCD9E8D57u, c[2]), lo1 = 0xCD9E8D57u * c[2];
    unsigned int next0 = hi1 ^ c[1] ^ k0, next2 = hi0 ^ c[3] ^ k1;
    c[0] = next0;
    c[1] = lo1;
    c[2] = next2;
    c[3] = lo0;
  }
}

// y[i] = 1 when element i's uniform draw on [0, 1) (24 random bits) is below p, else 0.
// `groups` = ceil(n / 4); one thread per group.
extern "C" __global__ void bernoulli_stream(int n, int groups, float p, const float* state,
                                            float* y) {
  unsigned int k0 = __float_as_uint(state[0]), k1 = __float_as_uint(state[1]);
  unsigned int draw_lo = __float_as_uint(state[2]), draw_hi = __float_as_uint(state[3]);
  for (int g = blockIdx.x * blockDim.x + threadIdx.x; g < groups; g += blockDim.x * gridDim.x) {
    unsigned int c[4] = {(unsigned int)g, 0u, draw_lo, draw_hi};
    philox4x32_10(c, k0, k1);
    for (int w = 0; w < 4; ++w) {
      int i = 4 * g + w;
      if (i < n) y[i] = (float)(c[w] >> 8) * (1.0f / 16777216.0f) < p ? 1.0f : 0.0f;
    }
  }
}

// Advances a stream's draw counter by one; launched after the draw that read it (n = 1).
extern "C" __global__ void advance_stream(int n, float* state) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x) {
    unsigned int lo = __float_as_uint(state[2]) + 1u;
    unsigned int hi = __float_as_uint(state[3]) + (lo == 0u ? 1u : 0u);
    state[2] = __uint_as_float(lo);
    state[3] = __uint_as_float(hi);
  }
}
