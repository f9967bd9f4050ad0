// Ops on (outer, dim, inner) views (softmax's axis ops) and on (outer, channels, inner) views
// (per-channel bias and scale), grid-stride. See src/backend/mod.rs for the exact semantics.

// One thread per (o, j): y = max over c, running `v < m ? m : v` from c = 0 (a NaN value
// replaces the running max, as upstream's std::max(value, running)).
extern "C" __global__ void max_over_axis(int outer, int dim, int inner, const float* x,
                                         float* y) {
  int n = outer * inner;
  for (int t = blockIdx.x * blockDim.x + threadIdx.x; t < n; t += blockDim.x * gridDim.x) {
    int o = t / inner, j = t % inner;
    const float* xp = x + (long long)o * dim * inner + j;
    float m = dim > 0 ? xp[0] : __int_as_float((int)0xff800000);  // -inf for an empty axis
    for (int c = 1; c < dim; ++c) {
      float v = xp[(long long)c * inner];
      m = v < m ? m : v;
    }
    y[t] = m;
  }
}

// One thread per (o, j): y = sum over c, in order from zero.
extern "C" __global__ void sum_over_axis(int outer, int dim, int inner, const float* x,
                                         float* y) {
  int n = outer * inner;
  for (int t = blockIdx.x * blockDim.x + threadIdx.x; t < n; t += blockDim.x * gridDim.x) {
    int o = t / inner, j = t % inner;
    const float* xp = x + (long long)o * dim * inner + j;
    float s = 0.0f;
    for (int c = 0; c < dim; ++c) s += xp[(long long)c * inner];
    y[t] = s;
  }
}

// One thread per (o, j): y = sum over c of a b, in order from zero.
extern "C" __global__ void dot_over_axis(int outer, int dim, int inner, const float* a,
                                         const float* b, float* y) {
  int n = outer * inner;
  for (int t = blockIdx.x * blockDim.x + threadIdx.x; t < n; t += blockDim.x * gridDim.x) {
    int o = t / inner, j = t % inner;
    long long base = (long long)o * dim * inner + j;
    float s = 0.0f;
    for (int c = 0; c < dim; ++c) s += a[base + (long long)c * inner] * b[base + (long long)c * inner];
    y[t] = s;
  }
}

// One thread per element: y[o, c, j] -= v[o, j].
extern "C" __global__ void sub_along_axis(int outer, int dim, int inner, const float* v,
                                          float* y) {
  int n = outer * dim * inner;
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x) {
    int j = i % inner, o = i / (dim * inner);
    y[i] -= v[o * inner + j];
  }
}

// One thread per element: y[o, c, j] /= v[o, j].
extern "C" __global__ void div_along_axis(int outer, int dim, int inner, const float* v,
                                          float* y) {
  int n = outer * dim * inner;
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x) {
    int j = i % inner, o = i / (dim * inner);
    y[i] /= v[o * inner + j];
  }
}

// One thread per element: y[o, c, j] += v[c] (bias).
extern "C" __global__ void add_per_channel(int outer, int channels, int inner, const float* v,
                                           float* y) {
  int n = outer * channels * inner;
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x) {
    y[i] += v[(i / inner) % channels];
  }
}

// One thread per element: y[o, c, j] = x[o, c, j] v[c] (scale; x may be y).
extern "C" __global__ void mul_per_channel(int outer, int channels, int inner, const float* v,
                                           const float* x, float* y) {
  int n = outer * channels * inner;
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x) {
    y[i] = x[i] * v[(i / inner) % channels];
  }
}

// The broadcasts without a kernel of their own above: `op` is a Binary op by the code the CUDA
// backend passes (0 add, 1 sub, 2 mul, 3 div, 4 max, 5 PReLU, 6 sigmoid cross-entropy), each
// computed as its element-wise kernel computes it.
static __device__ __forceinline__ float binary_op(int op, float a, float b) {
  switch (op) {
    case 0: return a + b;
    case 1: return a - b;
    case 2: return a * b;
    case 3: return a / b;
    case 4: return a < b ? b : a;
    case 5: return a > 0.0f ? a : b * a;
    default: {
      float positive = a >= 0.0f ? 1.0f : 0.0f;
      return logf(1.0f + expf(a - 2.0f * a * positive)) - a * (b - positive);
    }
  }
}

// One thread per element: y[o, c, j] = op(x[o, c, j], v[o, j]) (x may be y).
extern "C" __global__ void broadcast_over_axis(int op, int outer, int dim, int inner,
                                               const float* v, const float* x, float* y) {
  int n = outer * dim * inner;
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x) {
    int j = i % inner, o = i / (dim * inner);
    y[i] = binary_op(op, x[i], v[o * inner + j]);
  }
}

// One thread per element: y[o, c, j] = op(x[o, c, j], v[c]) (x may be y).
extern "C" __global__ void broadcast_per_channel(int op, int outer, int channels, int inner,
                                                 const float* v, const float* x, float* y) {
  int n = outer * channels * inner;
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x) {
    y[i] = binary_op(op, x[i], v[(i / inner) % channels]);
  }
}

// One thread per channel: y[c] = alpha sum_{o, j} x[o, c, j] + beta y[c], summed in double
// (the CPU op sums in f32 lanes and f64 totals; both are within a few ulps of the exact sum).
// beta == 0 does not read y. For short channels; long ones (a convolution's bias gradient:
// batch x spatial values per channel) take the two steps below.
extern "C" __global__ void sum_per_channel(int outer, int channels, int inner, float alpha,
                                           const float* x, float beta, float* y) {
  for (int c = blockIdx.x * blockDim.x + threadIdx.x; c < channels;
       c += blockDim.x * gridDim.x) {
    double s = 0.0;
    for (int o = 0; o < outer; ++o) {
      const float* row = x + ((long long)o * channels + c) * inner;
      for (int j = 0; j < inner; ++j) s += (double)row[j];
    }
    float sum = (float)((double)alpha * s);
    y[c] = beta == 0.0f ? sum : sum + beta * y[c];
  }
}

// sum_per_channel's first step on long channels: partial[c * parts + k] is the sum, in double
// stored as float, of channel c's values at the flattened positions q = o * inner + j with
// q = k, k + parts, k + 2 parts, ...; neighbouring threads read neighbouring positions.
extern "C" __global__ void sum_per_channel_partial(int outer, int channels, int inner, int parts,
                                                   const float* x, float* partial) {
  int n = channels * parts;
  int positions = outer * inner;
  for (int t = blockIdx.x * blockDim.x + threadIdx.x; t < n; t += blockDim.x * gridDim.x) {
    int c = t / parts;
    double s = 0.0;
    for (int q = t - c * parts; q < positions; q += parts) {
      int o = q / inner;
      s += (double)x[((long long)o * channels + c) * inner + (q - o * inner)];
    }
    partial[t] = (float)s;
  }
}

// sum_per_channel's second step, one thread per channel: y[c] = alpha (partial[c * parts] + ...
// + partial[c * parts + parts - 1]) + beta y[c], added in double; beta == 0 does not read y.
extern "C" __global__ void sum_per_channel_parts(int channels, int parts, const float* partial,
                                                 float alpha, float beta, float* y) {
  for (int c = blockIdx.x * blockDim.x + threadIdx.x; c < channels;
       c += blockDim.x * gridDim.x) {
    double s = 0.0;
    for (int k = 0; k < parts; ++k) s += (double)partial[c * parts + k];
    float sum = (float)((double)alpha * s);
    y[c] = beta == 0.0f ? sum : sum + beta * y[c];
  }
}
