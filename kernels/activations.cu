// Activation kernels (ReLU, Sigmoid, TanH, ELU, BNLL, Clip, Swish, PReLU): forward and backward, one thread
// per element, grid-stride. `dy` may alias `dx` and `x` may alias `y` (in-place layers).
// Semantics: src/backend/mod.rs; upstream: src/caffe/layers/<name>_layer.cu.

// One grid-stride loop per shape: `forward` y = f(x), `backward` dx = g(saved, dy) with `saved`
// the forward input or output the activation's gradient reads; each activation is a functor.
template <class F>
__device__ void forward(int n, const float* x, float* y, F f) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x) {
    y[i] = f(x[i]);
  }
}

template <class G>
__device__ void backward(int n, const float* saved, const float* dy, float* dx, G g) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x) {
    dx[i] = g(saved[i], dy[i]);
  }
}

// Branches rather than fmaxf/fminf so a NaN input stays NaN, as the CPU op.
struct Relu {
  float slope;
  __device__ float operator()(float v) const {
    return slope == 0.0f ? (v < 0.0f ? 0.0f : v) : (v > 0.0f ? v : slope * v);
  }
  __device__ float operator()(float x, float d) const { return x > 0.0f ? d : d * slope; }
};
// 1 / (1 + e^-x) through tanh, which cannot overflow; the gradient reads the output.
struct Sigmoid {
  __device__ float operator()(float v) const { return 0.5f * tanhf(0.5f * v) + 0.5f; }
  __device__ float operator()(float s, float d) const { return d * s * (1.0f - s); }
};
// The gradient reads the output.
struct Tanh {
  __device__ float operator()(float v) const { return tanhf(v); }
  __device__ float operator()(float t, float d) const { return d * (1.0f - t * t); }
};
// Softplus in the form that cannot overflow; the gradient clamps the input at BNLL_THRESHOLD
// (kernels/constants.h) before exp, as upstream.
struct Bnll {
  __device__ float operator()(float v) const {
    return v > 0.0f ? v + log1pf(expf(-v)) : log1pf(expf(v));
  }
  __device__ float operator()(float x, float d) const {
    float e = expf(fminf(x, BNLL_THRESHOLD));
    return d * e / (e + 1.0f);
  }
};
struct Elu {
  float alpha;
  __device__ float operator()(float v) const { return v > 0.0f ? v : alpha * (expf(v) - 1.0f); }
};
// std::min then std::max's comparisons, so a NaN input gives `min` as upstream's CPU loop; the
// gradient reads the input.
struct Clip {
  float min, max;
  __device__ float operator()(float v) const {
    float upper = max < v ? max : v;
    return min < upper ? upper : min;
  }
  __device__ float operator()(float x, float d) const {
    return d * (x >= min && x <= max ? 1.0f : 0.0f);
  }
};
struct Swish {
  float beta;
  __device__ float operator()(float v) const { return v * Sigmoid()(beta * v); }
};

extern "C" __global__ void relu_forward(int n, float slope, const float* x, float* y) {
  forward(n, x, y, Relu{slope});
}
extern "C" __global__ void relu_backward(int n, float slope, const float* x, const float* dy,
                                         float* dx) {
  backward(n, x, dy, dx, Relu{slope});
}
extern "C" __global__ void sigmoid_forward(int n, const float* x, float* y) {
  forward(n, x, y, Sigmoid());
}
extern "C" __global__ void sigmoid_backward(int n, const float* y, const float* dy, float* dx) {
  backward(n, y, dy, dx, Sigmoid());
}
extern "C" __global__ void tanh_forward(int n, const float* x, float* y) {
  forward(n, x, y, Tanh());
}
extern "C" __global__ void tanh_backward(int n, const float* y, const float* dy, float* dx) {
  backward(n, y, dy, dx, Tanh());
}
extern "C" __global__ void bnll_forward(int n, const float* x, float* y) {
  forward(n, x, y, Bnll());
}
extern "C" __global__ void bnll_backward(int n, const float* x, const float* dy, float* dx) {
  backward(n, x, dy, dx, Bnll());
}
extern "C" __global__ void elu_forward(int n, float alpha, const float* x, float* y) {
  forward(n, x, y, Elu{alpha});
}

// ELU's gradient reads both the input and the output.
extern "C" __global__ void elu_backward(int n, float alpha, const float* x, const float* y,
                                        const float* dy, float* dx) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x) {
    float d = dy[i];
    dx[i] = x[i] > 0.0f ? d : d * (alpha + y[i]);
  }
}

extern "C" __global__ void clip_forward(int n, float min, float max, const float* x, float* y) {
  forward(n, x, y, Clip{min, max});
}
extern "C" __global__ void clip_backward(int n, float min, float max, const float* x,
                                         const float* dy, float* dx) {
  backward(n, x, dy, dx, Clip{min, max});
}
extern "C" __global__ void swish_forward(int n, float beta, const float* x, float* y) {
  forward(n, x, y, Swish{beta});
}

// Swish's gradient reads both the input (for the sigmoid) and the output.
extern "C" __global__ void swish_backward(int n, float beta, const float* x, const float* y,
                                          const float* dy, float* dx) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x) {
    float s = Sigmoid()(beta * x[i]);
    float by = beta * y[i];
    dx[i] = dy[i] * (by + s * (1.0f - by));
  }
}

// PReLU over an (outer, channels, inner) view with one slope per channel.
extern "C" __global__ void prelu_forward(int outer, int channels, int inner, const float* slope,
                                         const float* x, float* y) {
  int n = outer * channels * inner;
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x) {
    float v = x[i];
    float a = slope[(i / inner) % channels];
    y[i] = v > 0.0f ? v : a * v;
  }
}

extern "C" __global__ void prelu_backward(int outer, int channels, int inner, const float* slope,
                                          const float* x, const float* dy, float* dx) {
  int n = outer * channels * inner;
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x) {
    float v = x[i];
    float a = slope[(i / inner) % channels];
    dx[i] = dy[i] * ((v > 0.0f ? 1.0f : 0.0f) + a * (v <= 0.0f ? 1.0f : 0.0f));
  }
}

// dslope[c] += sum over (o, j) of dy x [x <= 0]: one thread per channel, accumulating straight
// into dslope in memory order, as the CPU op does (so the two agree exactly).
extern "C" __global__ void prelu_slope_grad(int outer, int channels, int inner, const float* x,
                                            const float* dy, float* dslope) {
  for (int c = blockIdx.x * blockDim.x + threadIdx.x; c < channels;
       c += blockDim.x * gridDim.x) {
    float acc = dslope[c];
    for (int o = 0; o < outer; ++o) {
      const float* xr = x + ((long long)o * channels + c) * inner;
      const float* dr = dy + ((long long)o * channels + c) * inner;
      for (int j = 0; j < inner; ++j) {
        float u = xr[j];
        acc += dr[j] * u * (u <= 0.0f ? 1.0f : 0.0f);
      }
    }
    dslope[c] = acc;
  }
}
