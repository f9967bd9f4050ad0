// Label-indexed kernels for the loss and accuracy layers and the sigmoid cross-entropy,
// grid-stride. Labels are floats read as upstream's static_cast<int> (truncation); positions
// p = o inner + j of an (outer, dim, inner) view index the labels. `has_ignore` says whether
// `ignore_label` is set. Labels outside 0..dim that are not ignored are an error the host
// checks before launching (the CPU op's error); the kernels skip such positions. Inside a
// CUDA graph the host cannot check, so the kernels that index by label also report a bad one
// in `error` ({1, label, dim}), which the host reads after each replay. Threads that meet bad
// labels race on `error`: harmless, as any one bad label makes the report (and the emulation,
// running threads in turn, keeps the last).

static __device__ __forceinline__ bool is_ignored(int cls, int has_ignore, int ignore_label) {
  return has_ignore != 0 && cls == ignore_label;
}

static __device__ __forceinline__ void report_label(float* error, float label, int dim) {
  error[0] = 1.0f;
  error[1] = label;
  error[2] = (float)dim;
}

extern "C" __global__ void label_mask(int n, const float* label, int has_ignore,
                                      int ignore_label, float* y) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x) {
    y[i] = is_ignored((int)label[i], has_ignore, ignore_label) ? 0.0f : 1.0f;
  }
}

// y[o, j] = x[o, l, j], or `fill` where l is ignored.
extern "C" __global__ void gather_at_label(int outer, int dim, int inner, const float* x,
                                           const float* label, int has_ignore, int ignore_label,
                                           float fill, float* y, float* error) {
  int n = outer * inner;
  for (int p = blockIdx.x * blockDim.x + threadIdx.x; p < n; p += blockDim.x * gridDim.x) {
    int cls = (int)label[p];
    if (is_ignored(cls, has_ignore, ignore_label)) {
      y[p] = fill;
    } else if (cls >= 0 && cls < dim) {
      int o = p / inner, j = p % inner;
      y[p] = x[((long long)o * dim + cls) * inner + j];
    } else {
      report_label(error, label[p], dim);
    }
  }
}

// y[o, l, j] = alpha y[o, l, j] + beta; the whole axis zeroed where l is ignored. Each thread
// owns one position's column, so no two threads write the same element.
extern "C" __global__ void affine_at_label(int outer, int dim, int inner, const float* label,
                                           int has_ignore, int ignore_label, float alpha,
                                           float beta, float* y, float* error) {
  int n = outer * inner;
  for (int p = blockIdx.x * blockDim.x + threadIdx.x; p < n; p += blockDim.x * gridDim.x) {
    int cls = (int)label[p];
    int o = p / inner, j = p % inner;
    long long base = (long long)o * dim * inner + j;
    if (is_ignored(cls, has_ignore, ignore_label)) {
      for (int c = 0; c < dim; ++c) y[base + (long long)c * inner] = 0.0f;
    } else if (cls >= 0 && cls < dim) {
      float* v = y + base + (long long)cls * inner;
      *v = alpha * *v + beta;
    } else {
      report_label(error, label[p], dim);
    }
  }
}

// y[o, j] = 1 when at most top_k classes (the label's own included) score >= the label's
// score, else 0; 0 where ignored (upstream: src/caffe/layers/accuracy_layer.cu).
extern "C" __global__ void top_k_hits(int outer, int dim, int inner, int top_k, const float* x,
                                      const float* label, int has_ignore, int ignore_label,
                                      float* y, float* error) {
  int n = outer * inner;
  for (int p = blockIdx.x * blockDim.x + threadIdx.x; p < n; p += blockDim.x * gridDim.x) {
    int cls = (int)label[p];
    if (is_ignored(cls, has_ignore, ignore_label)) {
      y[p] = 0.0f;
      continue;
    }
    if (cls < 0 || cls >= dim) {
      report_label(error, label[p], dim);
      continue;
    }
    int o = p / inner, j = p % inner;
    const float* xp = x + (long long)o * dim * inner + j;
    float truth = xp[(long long)cls * inner];
    int at_least = 0;
    for (int c = 0; c < dim && at_least <= top_k; ++c) {
      if (xp[(long long)c * inner] >= truth) ++at_least;
    }
    y[p] = at_least <= top_k ? 1.0f : 0.0f;
  }
}

// y[c] = sum of x[i] over the i labelled c (ignored labels skipped), one thread per class,
// summed in double in index order as the CPU op does.
extern "C" __global__ void sum_by_label(int n, int classes, const float* x, const float* label,
                                        int has_ignore, int ignore_label, float* y) {
  for (int c = blockIdx.x * blockDim.x + threadIdx.x; c < classes;
       c += blockDim.x * gridDim.x) {
    double s = 0.0;
    for (int i = 0; i < n; ++i) {
      int cls = (int)label[i];
      if (cls == c && !is_ignored(cls, has_ignore, ignore_label)) s += (double)x[i];
    }
    y[c] = (float)s;
  }
}

// ln(1 + exp(x - 2 x [x >= 0])) - x (t - [x >= 0]): the cross-entropy of sigmoid(x) against
// t in a form that cannot overflow, term by term as upstream's
// src/caffe/layers/sigmoid_cross_entropy_loss_layer.cu.
extern "C" __global__ void sigmoid_cross_entropy(int n, const float* x, const float* t,
                                                 float* y) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x) {
    float v = x[i];
    float positive = v >= 0.0f ? 1.0f : 0.0f;
    float log_term = logf(1.0f + expf(v - 2.0f * v * positive));
    y[i] = log_term - v * (t[i] - positive);
  }
}
