// Element-wise kernels: copies, fills, BLAS level 1 and the unary/binary maps of
// src/backend/mod.rs. One thread per element, grid-stride; every pointer is already offset by
// the host and inputs may alias the output (in-place ops), so no pointer is `__restrict__`.
//
// Kernel names are the op names, except where the op name is a C or CUDA math function
// (exp, log, abs, sqrt, max, div): those get a `_kernel` suffix.

extern "C" __global__ void copy(int n, const float* x, float* y) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x) {
    y[i] = x[i];
  }
}

extern "C" __global__ void set(int n, float value, float* y) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x) {
    y[i] = value;
  }
}

extern "C" __global__ void add_scalar(int n, float value, float* y) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x) {
    y[i] += value;
  }
}

extern "C" __global__ void axpy(int n, float alpha, const float* x, float* y) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x) {
    y[i] = alpha * x[i] + y[i];
  }
}

// A scalar argument passed as (alpha_at, alpha) is *alpha_at when alpha_at is not null (a value
// the host writes before a recorded graph is replayed), alpha otherwise.

// beta == 0 does not read y (BLAS convention).
extern "C" __global__ void axpby(int n, const float* alpha_at, float alpha, const float* x,
                                 float beta, float* y) {
  if (alpha_at) alpha = *alpha_at;
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x) {
    y[i] = beta == 0.0f ? alpha * x[i] : alpha * x[i] + beta * y[i];
  }
}

extern "C" __global__ void scale(int n, const float* alpha_at, float alpha, const float* x,
                                 float* y) {
  if (alpha_at) alpha = *alpha_at;
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x) {
    y[i] = alpha * x[i];
  }
}

// The element-wise maps: one grid-stride loop per shape of op (`map1`: y = f(x), `map2`:
// y = f(a, b)), each op a functor. Inputs are read before the output is written, so in-place
// calls are exact.
template <class F>
__device__ void map1(int n, const float* x, float* y, F f) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x) {
    y[i] = f(x[i]);
  }
}

template <class F>
__device__ void map2(int n, const float* a, const float* b, float* y, F f) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x) {
    y[i] = f(a[i], b[i]);
  }
}

struct Add {
  __device__ float operator()(float p, float q) const { return p + q; }
};
struct Sub {
  __device__ float operator()(float p, float q) const { return p - q; }
};
struct Mul {
  __device__ float operator()(float p, float q) const { return p * q; }
};
struct Div {
  __device__ float operator()(float p, float q) const { return p / q; }
};
// `a < b ? b : a`: a NaN in b is dropped, a NaN in a kept, as the CPU op.
struct Max {
  __device__ float operator()(float p, float q) const { return p < q ? q : p; }
};

extern "C" __global__ void add(int n, const float* a, const float* b, float* y) {
  map2(n, a, b, y, Add());
}
extern "C" __global__ void sub(int n, const float* a, const float* b, float* y) {
  map2(n, a, b, y, Sub());
}
extern "C" __global__ void mul(int n, const float* a, const float* b, float* y) {
  map2(n, a, b, y, Mul());
}
extern "C" __global__ void div_kernel(int n, const float* a, const float* b, float* y) {
  map2(n, a, b, y, Div());
}
extern "C" __global__ void max_kernel(int n, const float* a, const float* b, float* y) {
  map2(n, a, b, y, Max());
}

// p == 2 and p == 1 are exact, as the CPU op special-cases them.
struct Powx {
  float p;
  __device__ float operator()(float v) const {
    return p == 2.0f ? v * v : (p == 1.0f ? v : powf(v, p));
  }
};
// Upstream's PowerLayer: (shift + scale x)^power.
struct Power {
  float power, scale, shift;
  __device__ float operator()(float v) const { return powf(shift + scale * v, power); }
};
struct Exp {
  __device__ float operator()(float v) const { return expf(v); }
};
struct Log {
  __device__ float operator()(float v) const { return logf(v); }
};
struct Abs {
  __device__ float operator()(float v) const { return fabsf(v); }
};
struct Sqr {
  __device__ float operator()(float v) const { return v * v; }
};
struct Sqrt {
  __device__ float operator()(float v) const { return sqrtf(v); }
};
// 1, 0 or -1; 0 for NaN (upstream's caffe_sign).
struct Sign {
  __device__ float operator()(float v) const {
    return v > 0.0f ? 1.0f : (v < 0.0f ? -1.0f : 0.0f);
  }
};

// 1 above the threshold, else 0 (NaN included): upstream's ThresholdLayer.
struct Threshold {
  float threshold;
  __device__ float operator()(float v) const { return v > threshold ? 1.0f : 0.0f; }
};

extern "C" __global__ void powx(int n, const float* x, float p, float* y) {
  map1(n, x, y, Powx{p});
}
extern "C" __global__ void power(int n, const float* x, float power, float scale, float shift,
                                 float* y) {
  map1(n, x, y, Power{power, scale, shift});
}
extern "C" __global__ void exp_kernel(int n, const float* x, float* y) { map1(n, x, y, Exp()); }
extern "C" __global__ void log_kernel(int n, const float* x, float* y) { map1(n, x, y, Log()); }
extern "C" __global__ void abs_kernel(int n, const float* x, float* y) { map1(n, x, y, Abs()); }
extern "C" __global__ void sqr(int n, const float* x, float* y) { map1(n, x, y, Sqr()); }
extern "C" __global__ void sqrt_kernel(int n, const float* x, float* y) {
  map1(n, x, y, Sqrt());
}
extern "C" __global__ void sign(int n, const float* x, float* y) { map1(n, x, y, Sign()); }
extern "C" __global__ void threshold(int n, float threshold, const float* x, float* y) {
  map1(n, x, y, Threshold{threshold});
}

// Reductions (sum, asum, sumsq, dot, sum_into) in two steps without shared memory: each thread
// of the launch adds its grid-stride share of the input in double and writes it to
// partial[thread] (the partial buffer holds gridDim.x * blockDim.x floats); a second launch
// with one thread (sum_partials) adds the partials. `kind`: 0 sum, 1 |x|, 2 x^2, 3 x*y.
extern "C" __global__ void reduce_partial(int n, int kind, const float* x, const float* y,
                                          float* partial) {
  int t = blockIdx.x * blockDim.x + threadIdx.x;
  double acc = 0.0;
  for (int i = t; i < n; i += blockDim.x * gridDim.x) {
    float v = x[i];
    float term = kind == 0 ? v : (kind == 1 ? fabsf(v) : (kind == 2 ? v * v : v * y[i]));
    acc += (double)term;
  }
  partial[t] = (float)acc;
}

// y[0] = alpha * (partial[0] + ... + partial[parts - 1]), added in double by one thread: the
// second step of every reduction (the host reads y when it wants the value). Launched for 1
// item.
extern "C" __global__ void sum_partials(int parts, const float* partial, float alpha, float* y) {
  if (blockIdx.x * blockDim.x + threadIdx.x != 0) return;
  double s = 0.0;
  for (int i = 0; i < parts; ++i) s += (double)partial[i];
  y[0] = (float)((double)alpha * s);
}
