// The solvers' update rules, in place on the gradient g and the history buffers, as upstream's
// *_update_gpu kernels compute them (src/caffe/solvers/<name>_solver.cu): one thread per
// parameter, grid-stride. The step scale (the learning rate times the parameter's lr_mult; for
// Adam with the bias correction folded in by the host) is passed as (step_at, step): *step_at
// when step_at is not null (the solver keeps it in device memory, so that a replayed CUDA graph
// reads each iteration's value), step otherwise.

// h = momentum h + local_rate g; g = h.
extern "C" __global__ void sgd_update(int n, float* g, float* h, float momentum,
                                      const float* step_at, float step) {
  const float local_rate = step_at ? *step_at : step;
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x) {
    float v = momentum * h[i] + local_rate * g[i];
    h[i] = v;
    g[i] = v;
  }
}

// h' = momentum h + local_rate g; g = (1 + momentum) h' - momentum h.
extern "C" __global__ void nesterov_update(int n, float* g, float* h, float momentum,
                                           const float* step_at, float step) {
  const float local_rate = step_at ? *step_at : step;
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x) {
    float old = h[i];
    float v = momentum * old + local_rate * g[i];
    h[i] = v;
    g[i] = (1.0f + momentum) * v - momentum * old;
  }
}

// h += g^2; g = local_rate g / (sqrt(h) + delta).
extern "C" __global__ void adagrad_update(int n, float* g, float* h, float delta,
                                          const float* step_at, float step) {
  const float local_rate = step_at ? *step_at : step;
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x) {
    float gi = g[i];
    float hi = h[i] + gi * gi;
    h[i] = hi;
    g[i] = local_rate * gi / (sqrtf(hi) + delta);
  }
}

// h = rms_decay h + (1 - rms_decay) g^2; g = local_rate g / (sqrt(h) + delta).
extern "C" __global__ void rmsprop_update(int n, float* g, float* h, float rms_decay,
                                          float delta, const float* step_at, float step) {
  const float local_rate = step_at ? *step_at : step;
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x) {
    float gi = g[i];
    float hi = rms_decay * h[i] + (1.0f - rms_decay) * gi * gi;
    h[i] = hi;
    g[i] = local_rate * gi / (sqrtf(hi) + delta);
  }
}

// h = momentum h + (1 - momentum) g^2; u = g sqrt((h2 + delta) / (h + delta));
// h2 = momentum h2 + (1 - momentum) u^2; g = local_rate u.
extern "C" __global__ void adadelta_update(int n, float* g, float* h, float* h2, float momentum,
                                           float delta, const float* step_at, float step) {
  const float local_rate = step_at ? *step_at : step;
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x) {
    float gi = g[i];
    float hi = momentum * h[i] + (1.0f - momentum) * gi * gi;
    h[i] = hi;
    float u = gi * sqrtf((h2[i] + delta) / (hi + delta));
    h2[i] = momentum * h2[i] + (1.0f - momentum) * u * u;
    g[i] = local_rate * u;
  }
}

// m = beta1 m + (1 - beta1) g; v = beta2 v + (1 - beta2) g^2;
// g = local_rate m / (sqrt(v) + eps_hat), the bias correction folded into the step scale.
extern "C" __global__ void adam_update(int n, float* g, float* m, float* v, float beta1,
                                       float beta2, float eps_hat, const float* step_at,
                                       float step) {
  const float local_rate = step_at ? *step_at : step;
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x) {
    float gi = g[i];
    float mi = beta1 * m[i] + (1.0f - beta1) * gi;
    float vi = beta2 * v[i] + (1.0f - beta2) * gi * gi;
    m[i] = mi;
    v[i] = vi;
    g[i] = local_rate * mi / (sqrtf(vi) + eps_hat);
  }
}
