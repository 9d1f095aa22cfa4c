#pragma once
// conv2d as im2col + GEMM: the im2col buffer [I·kh·kw, Ho·Wo] per image feeds one
// strided-batched cuBLAS call per chunk of images (the weight is broadcast with
// stride 0). 1×1 convolutions with stride 1 and no padding skip im2col entirely.
// Images are processed in chunks so the buffer stays under kConvColBytes.
#include "kernels/cuda/common.cuh"

namespace stagecraft::kernels::cuda {

constexpr size_t kConvColBytes = size_t{256} << 20;

struct ConvShape {
  int64_t N, C, H, W;  // input
  int64_t O, kh, kw;   // weight
  int64_t stride, pad;
  int64_t Ho, Wo;      // output
};

template <class T>
__global__ void im2col_kernel(T* __restrict__ col, const T* __restrict__ x, ConvShape s, int64_t images) {
  const int64_t P = s.Ho * s.Wo, rows = s.C * s.kh * s.kw, n_total = images * rows * P;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n_total;
       i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t p = i % P, r = (i / P) % rows, img = i / (P * rows);
    const int64_t kx = r % s.kw, ky = (r / s.kw) % s.kh, c = r / (s.kw * s.kh);
    const int64_t oy = p / s.Wo, ox = p % s.Wo;
    const int64_t iy = oy * s.stride - s.pad + ky, ix = ox * s.stride - s.pad + kx;
    T v = from_f32<T>(0.0f);
    if (iy >= 0 && iy < s.H && ix >= 0 && ix < s.W) v = x[((img * s.C + c) * s.H + iy) * s.W + ix];
    col[i] = v;
  }
}

/// col [images, C·kh·kw, Ho·Wo] from x [images, C, H, W] (both contiguous).
template <class T>
void im2col(T* col, const T* x, const ConvShape& s, int64_t images, cudaStream_t st) {
  const int64_t n = images * s.C * s.kh * s.kw * s.Ho * s.Wo;
  if (n == 0) return;
  im2col_kernel<T><<<grid_for(n), 256, 0, st>>>(col, x, s, images);
  SC_CUDA_CHECK_LAUNCH();
}

}  // namespace stagecraft::kernels::cuda
