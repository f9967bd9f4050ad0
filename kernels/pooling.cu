// Max and average pooling over `planes` planes (upstream: src/caffe/layers/pooling_layer.cu),
// grid-stride. Window of output (ph, pw): rows from ph stride_h - pad_h for kernel_h rows,
// columns likewise. The mask holds the argmax as a plane index h width + w, as a float.
//
// The backward kernels run one thread per input pixel and gather from the outputs whose window
// holds it, in (ph, pw) row-major order: the order the CPU op scatters in, so sums agree.

// One thread per output: max over the window clipped to the image; first maximum in row-major
// order wins; -FLT_MAX and -1 when nothing in the window exceeds -FLT_MAX.
extern "C" __global__ void max_pool_forward(int planes, int height, int width, int kernel_h,
                                            int kernel_w, int stride_h, int stride_w, int pad_h,
                                            int pad_w, int pooled_h, int pooled_w, const float* x,
                                            float* y, float* mask) {
  int n = planes * pooled_h * pooled_w;
  for (int t = blockIdx.x * blockDim.x + threadIdx.x; t < n; t += blockDim.x * gridDim.x) {
    int pw = t % pooled_w;
    int ph = (t / pooled_w) % pooled_h;
    int p = t / (pooled_w * pooled_h);
    int hs = ph * stride_h - pad_h;
    int ws = pw * stride_w - pad_w;
    int he = min(hs + kernel_h, height);
    int we = min(ws + kernel_w, width);
    hs = max(hs, 0);
    ws = max(ws, 0);
    const float* xp = x + (long long)p * height * width;
    float best = -3.402823466e+38f;
    int arg = -1;
    for (int h = hs; h < he; ++h) {
      for (int w = ws; w < we; ++w) {
        float v = xp[h * width + w];
        if (v > best) {
          best = v;
          arg = h * width + w;
        }
      }
    }
    y[t] = best;
    mask[t] = (float)arg;
  }
}

// The first and one-past-last pooled index along one axis whose window can hold `pos`.
static __device__ __forceinline__ void pooled_range(int pos, int pad, int kernel, int stride,
                                                    int pooled, int* start, int* end) {
  int q = pos + pad;
  *start = q < kernel ? 0 : (q - kernel) / stride + 1;
  *end = min(q / stride + 1, pooled);
}

// One thread per input pixel: dx = sum of dy over the outputs whose mask names the pixel.
extern "C" __global__ void max_pool_backward(int planes, int height, int width, int kernel_h,
                                             int kernel_w, int stride_h, int stride_w, int pad_h,
                                             int pad_w, int pooled_h, int pooled_w,
                                             const float* dy, const float* mask, float* dx) {
  int n = planes * height * width;
  for (int t = blockIdx.x * blockDim.x + threadIdx.x; t < n; t += blockDim.x * gridDim.x) {
    int w = t % width;
    int h = (t / width) % height;
    int p = t / (width * height);
    int phs, phe, pws, pwe;
    pooled_range(h, pad_h, kernel_h, stride_h, pooled_h, &phs, &phe);
    pooled_range(w, pad_w, kernel_w, stride_w, pooled_w, &pws, &pwe);
    long long base = (long long)p * pooled_h * pooled_w;
    float here = (float)(h * width + w);
    float acc = 0.0f;
    for (int ph = phs; ph < phe; ++ph) {
      for (int pw = pws; pw < pwe; ++pw) {
        long long q = base + ph * pooled_w + pw;
        if (mask[q] == here) acc += dy[q];
      }
    }
    dx[t] = acc;
  }
}

// The window of output (ph, pw) clipped to the image, and the divisor: the window's size
// clipped only to the padded image (upstream counts padded positions inside the pad).
static __device__ __forceinline__ float ave_window(int ph, int pw, int height, int width,
                                                   int kernel_h, int kernel_w, int stride_h,
                                                   int stride_w, int pad_h, int pad_w, int* hs,
                                                   int* he, int* ws, int* we) {
  int h0 = ph * stride_h - pad_h;
  int w0 = pw * stride_w - pad_w;
  int h1 = min(h0 + kernel_h, height + pad_h);
  int w1 = min(w0 + kernel_w, width + pad_w);
  float size = (float)((h1 - h0) * (w1 - w0));
  *hs = max(h0, 0);
  *ws = max(w0, 0);
  *he = min(h1, height);
  *we = min(w1, width);
  return size;
}

// One thread per output: window sum / divisor; 0 for a window entirely in the padding.
extern "C" __global__ void ave_pool_forward(int planes, int height, int width, int kernel_h,
                                            int kernel_w, int stride_h, int stride_w, int pad_h,
                                            int pad_w, int pooled_h, int pooled_w, const float* x,
                                            float* y) {
  int n = planes * pooled_h * pooled_w;
  for (int t = blockIdx.x * blockDim.x + threadIdx.x; t < n; t += blockDim.x * gridDim.x) {
    int pw = t % pooled_w;
    int ph = (t / pooled_w) % pooled_h;
    int p = t / (pooled_w * pooled_h);
    int hs, he, ws, we;
    float size = ave_window(ph, pw, height, width, kernel_h, kernel_w, stride_h, stride_w, pad_h,
                            pad_w, &hs, &he, &ws, &we);
    const float* xp = x + (long long)p * height * width;
    float sum = 0.0f;
    for (int h = hs; h < he; ++h) {
      for (int w = ws; w < we; ++w) {
        sum += xp[h * width + w];
      }
    }
    y[t] = (hs < he && ws < we) ? sum / size : 0.0f;
  }
}

// One thread per input pixel: the sum of dy / divisor over the windows that hold it.
extern "C" __global__ void ave_pool_backward(int planes, int height, int width, int kernel_h,
                                             int kernel_w, int stride_h, int stride_w, int pad_h,
                                             int pad_w, int pooled_h, int pooled_w,
                                             const float* dy, float* dx) {
  int n = planes * height * width;
  for (int t = blockIdx.x * blockDim.x + threadIdx.x; t < n; t += blockDim.x * gridDim.x) {
    int w = t % width;
    int h = (t / width) % height;
    int p = t / (width * height);
    int phs, phe, pws, pwe;
    pooled_range(h, pad_h, kernel_h, stride_h, pooled_h, &phs, &phe);
    pooled_range(w, pad_w, kernel_w, stride_w, pooled_w, &pws, &pwe);
    const float* dyp = dy + (long long)p * pooled_h * pooled_w;
    float acc = 0.0f;
    for (int ph = phs; ph < phe; ++ph) {
      for (int pw = pws; pw < pwe; ++pw) {
        int hs, he, ws, we;
        float size = ave_window(ph, pw, height, width, kernel_h, kernel_w, stride_h, stride_w,
                                pad_h, pad_w, &hs, &he, &ws, &we);
        if (h >= hs && h < he && w >= ws && w < we) acc += dyp[ph * pooled_w + pw] / size;
      }
    }
    dx[t] = acc;
  }
}
