// Kernels for the plumbing layers: Concat/Slice (copy_2d), Eltwise MAX (running_argmax,
// copy_where_eq) and ArgMax (top_k_over_axis), grid-stride. Semantics: src/backend/mod.rs.

// y[r y_stride + j] = x[r x_stride + j] for r < rows, j < cols: one thread per element.
extern "C" __global__ void copy_2d(int rows, int cols, const float* x, int x_stride, float* y,
                                   int y_stride) {
  int n = rows * cols;
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x) {
    int r = i / cols, j = i % cols;
    y[(long long)r * y_stride + j] = x[(long long)r * x_stride + j];
  }
}

// Where x > y: y = x and mask = index (a running max and its argmax).
extern "C" __global__ void running_argmax(int n, float index, const float* x, float* y,
                                          float* mask) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x) {
    float v = x[i];
    if (v > y[i]) {
      y[i] = v;
      mask[i] = index;
    }
  }
}

extern "C" __global__ void copy_where_eq(int n, const float* mask, float value, const float* x,
                                         float* y) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x) {
    y[i] = mask[i] == value ? x[i] : 0.0f;
  }
}

// A key whose signed integer order is the IEEE total order of the floats (Rust's
// f32::total_cmp): negative floats have their magnitude bits flipped.
static __device__ __forceinline__ int total_order_key(float v) {
  int b = __float_as_int(v);
  return b ^ (int)((unsigned int)(b >> 31) >> 1);
}

// One thread per (o, j): the k largest x[o, c, j] over c, descending by (value, c) in total
// order (equal values: larger c first; NaN above everything), by k selection passes of dim
// each: pass r picks the largest element ranked below pass r - 1's pick.
extern "C" __global__ void top_k_over_axis(int outer, int dim, int inner, int k, const float* x,
                                           float* values, float* indices) {
  int n = outer * inner;
  for (int t = blockIdx.x * blockDim.x + threadIdx.x; t < n; t += blockDim.x * gridDim.x) {
    int o = t / inner, j = t % inner;
    const float* xp = x + (long long)o * dim * inner + j;
    int prev_key = 0, prev_c = -1;
    for (int r = 0; r < k; ++r) {
      int best_key = 0, best_c = -1;
      for (int c = 0; c < dim; ++c) {
        int key = total_order_key(xp[(long long)c * inner]);
        bool below_prev = prev_c < 0 || key < prev_key || (key == prev_key && c < prev_c);
        bool above_best = best_c < 0 || key > best_key || (key == best_key && c > best_c);
        if (below_prev && above_best) {
          best_key = key;
          best_c = c;
        }
      }
      long long at = ((long long)o * k + r) * inner + j;
      values[at] = xp[(long long)best_c * inner];
      indices[at] = (float)best_c;
      prev_key = best_key;
      prev_c = best_c;
    }
  }
}
