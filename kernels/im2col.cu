// im2col and col2im for one image (upstream: src/caffe/util/im2col.cu), grid-stride.
// Column layout: row (c kh kw + i kw + j), column (oh out_w + ow), as src/backend/mod.rs.

// One thread per (c, oh, ow): writes that position's kernel_h x kernel_w column entries.
extern "C" __global__ void im2col(int channels, int height, int width, int kernel_h,
                                  int kernel_w, int pad_h, int pad_w, int stride_h,
                                  int stride_w, int dilation_h, int dilation_w, int out_h,
                                  int out_w, const float* im, float* col) {
  int n = channels * out_h * out_w;
  int out_len = out_h * out_w;
  for (int t = blockIdx.x * blockDim.x + threadIdx.x; t < n; t += blockDim.x * gridDim.x) {
    int ow = t % out_w;
    int oh = (t / out_w) % out_h;
    int c = t / out_len;
    int h0 = oh * stride_h - pad_h;
    int w0 = ow * stride_w - pad_w;
    const float* plane = im + (long long)c * height * width;
    float* dst = col + (long long)c * kernel_h * kernel_w * out_len + oh * out_w + ow;
    for (int i = 0; i < kernel_h; ++i) {
      int h = h0 + i * dilation_h;
      for (int j = 0; j < kernel_w; ++j) {
        int w = w0 + j * dilation_w;
        bool inside = h >= 0 && h < height && w >= 0 && w < width;
        dst[(long long)(i * kernel_w + j) * out_len] = inside ? plane[h * width + w] : 0.0f;
      }
    }
  }
}

// One thread per image pixel: gathers every column entry copied from it, in the order
// (i, j) ascending, the order the CPU op adds them in, starting from zero.
extern "C" __global__ void col2im(int channels, int height, int width, int kernel_h,
                                  int kernel_w, int pad_h, int pad_w, int stride_h,
                                  int stride_w, int dilation_h, int dilation_w, int out_h,
                                  int out_w, const float* col, float* im) {
  int n = channels * height * width;
  int out_len = out_h * out_w;
  for (int t = blockIdx.x * blockDim.x + threadIdx.x; t < n; t += blockDim.x * gridDim.x) {
    int w = t % width;
    int h = (t / width) % height;
    int c = t / (width * height);
    const float* src = col + (long long)c * kernel_h * kernel_w * out_len;
    float acc = 0.0f;
    for (int i = 0; i < kernel_h; ++i) {
      int hp = h + pad_h - i * dilation_h;
      if (hp < 0 || hp % stride_h != 0) continue;
      int oh = hp / stride_h;
      if (oh >= out_h) continue;
      for (int j = 0; j < kernel_w; ++j) {
        int wp = w + pad_w - j * dilation_w;
        if (wp < 0 || wp % stride_w != 0) continue;
        int ow = wp / stride_w;
        if (ow >= out_w) continue;
        acc += src[(long long)(i * kernel_w + j) * out_len + oh * out_w + ow];
      }
    }
    im[t] = acc;
  }
}
