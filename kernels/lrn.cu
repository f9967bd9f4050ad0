// Local response normalisation across channels (upstream: src/caffe/layers/lrn_layer.cu),
// one thread per (image, spatial position), grid-stride. Each thread slides the window sum
// along the channels as the CPU op does (add the entering channel, subtract the leaving one),
// in the same order, so the two agree term for term.

// s^-beta, with the same shortcut the CPU op takes for AlexNet's beta = 0.75.
static __device__ __forceinline__ float lrn_pow_neg_beta(float s, float beta) {
  if (beta == 0.75f) {
    float r = sqrtf(s);
    return 1.0f / (r * sqrtf(r));
  }
  return powf(s, -beta);
}

// scale[n, c, s] = k + alpha / size sum_{|c' - c| <= size / 2} x[n, c', s]^2;
// y = x scale^-beta.
extern "C" __global__ void lrn_across_forward(int num, int channels, int spatial, int size,
                                              float alpha, float beta, float k, const float* x,
                                              float* scale, float* y) {
  int n = num * spatial;
  int pre = (size - 1) / 2;
  float a = alpha / (float)size;
  for (int t = blockIdx.x * blockDim.x + threadIdx.x; t < n; t += blockDim.x * gridDim.x) {
    int img = t / spatial, s = t % spatial;
    long long base = (long long)img * channels * spatial + s;
    const float* xp = x + base;
    float* sp = scale + base;
    float* yp = y + base;
    float acc = k;
    for (int c = 0; c <= pre && c < channels; ++c) {
      float v = xp[(long long)c * spatial];
      acc += a * (v * v);
    }
    for (int c = 0; c < channels; ++c) {
      if (c > 0) {
        if (c + pre < channels) {
          float v = xp[(long long)(c + pre) * spatial];
          acc += a * (v * v);
        }
        if (c > pre) {
          float v = xp[(long long)(c - pre - 1) * spatial];
          acc -= a * (v * v);
        }
      }
      sp[(long long)c * spatial] = acc;
    }
    for (int c = 0; c < channels; ++c) {
      long long at = (long long)c * spatial;
      yp[at] = xp[at] * lrn_pow_neg_beta(sp[at], beta);
    }
  }
}

// dx[c] = dy[c] scale[c]^-beta - (2 alpha beta / size) x[c] sum_{|c' - c| <= size / 2}
// dy[c'] y[c'] / scale[c'].
extern "C" __global__ void lrn_across_backward(int num, int channels, int spatial, int size,
                                               float alpha, float beta, const float* x,
                                               const float* y, const float* scale,
                                               const float* dy, float* dx) {
  int n = num * spatial;
  int pre = (size - 1) / 2;
  float cache_ratio = 2.0f * alpha * beta / (float)size;
  for (int t = blockIdx.x * blockDim.x + threadIdx.x; t < n; t += blockDim.x * gridDim.x) {
    int img = t / spatial, s = t % spatial;
    long long base = (long long)img * channels * spatial + s;
    float acc = 0.0f;
    for (int c = 0; c < pre && c < channels; ++c) {
      long long at = base + (long long)c * spatial;
      acc += dy[at] * y[at] / scale[at];
    }
    for (int c = 0; c < channels; ++c) {
      if (c + pre < channels) {
        long long at = base + (long long)(c + pre) * spatial;
        acc += dy[at] * y[at] / scale[at];
      }
      long long here = base + (long long)c * spatial;
      dx[here] = dy[here] * lrn_pow_neg_beta(scale[here], beta) - cache_ratio * (x[here] * acc);
      if (c >= pre) {
        long long at = base + (long long)(c - pre) * spatial;
        acc -= dy[at] * y[at] / scale[at];
      }
    }
  }
}
