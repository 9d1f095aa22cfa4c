#pragma once
// Element-wise kernels: binary ops with numpy broadcasting (add, mul, axpby),
// unary activations (scale, gelu erf/tanh, quick_gelu, silu) and adaLN modulate.
// All math in f32; T is float, __half or __nv_bfloat16.
#include "kernels/cuda/common.cuh"

namespace stagecraft::kernels::cuda {

enum class BinaryOp { add, mul, axpby };
enum class UnaryOp { scale, gelu, gelu_tanh, quick_gelu, silu };

template <class T, BinaryOp OP, bool FLAT>
__global__ void binary_kernel(T* __restrict__ out, const T* __restrict__ a, const T* __restrict__ b,
                              Strided2 idx, int64_t n, float alpha, float beta) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    int64_t oa = i, ob = i;
    if constexpr (!FLAT) idx.offsets(i, oa, ob);
    const float x = to_f32(a[oa]), y = to_f32(b[ob]);
    float r;
    if constexpr (OP == BinaryOp::add) r = x + y;
    else if constexpr (OP == BinaryOp::mul) r = x * y;
    else r = x * alpha + y * beta;
    out[i] = from_f32<T>(r);
  }
}

/// out (contiguous, n elements) = a op b, operands addressed through `idx`
/// (idx.nd == 0 means both are contiguous with n elements).
template <class T>
void binary(T* out, const T* a, const T* b, const Strided2& idx, int64_t n, BinaryOp op, float alpha,
            float beta, cudaStream_t s) {
  if (n == 0) return;
  const unsigned g = grid_for(n);
  const bool flat = idx.nd <= 1 && (idx.nd == 0 || (idx.sa[0] == 1 && idx.sb[0] == 1));
#define SC_BIN(OPV)                                                                        \
  if (flat) binary_kernel<T, OPV, true><<<g, 256, 0, s>>>(out, a, b, idx, n, alpha, beta); \
  else binary_kernel<T, OPV, false><<<g, 256, 0, s>>>(out, a, b, idx, n, alpha, beta);
  switch (op) {
    case BinaryOp::add: SC_BIN(BinaryOp::add) break;
    case BinaryOp::mul: SC_BIN(BinaryOp::mul) break;
    case BinaryOp::axpby: SC_BIN(BinaryOp::axpby) break;
  }
#undef SC_BIN
  SC_CUDA_CHECK_LAUNCH();
}

__device__ __forceinline__ float gelu_erf(float x) { return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f)); }
__device__ __forceinline__ float gelu_tanh(float x) {
  const float k = 0.79788456080286536f;  // sqrt(2/pi)
  return 0.5f * x * (1.0f + tanhf(k * (x + 0.044715f * x * x * x)));
}
__device__ __forceinline__ float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

template <class T, UnaryOp OP>
__global__ void unary_kernel(T* __restrict__ out, const T* __restrict__ in, int64_t n, float s) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    const float x = to_f32(in[i]);
    float r;
    if constexpr (OP == UnaryOp::scale) r = x * s;
    else if constexpr (OP == UnaryOp::gelu) r = gelu_erf(x);
    else if constexpr (OP == UnaryOp::gelu_tanh) r = gelu_tanh(x);
    else if constexpr (OP == UnaryOp::quick_gelu) r = x * sigmoid(1.702f * x);
    else r = x * sigmoid(x);
    out[i] = from_f32<T>(r);
  }
}

template <class T>
void unary(T* out, const T* in, int64_t n, UnaryOp op, float s, cudaStream_t st) {
  if (n == 0) return;
  const unsigned g = grid_for(n);
  switch (op) {
    case UnaryOp::scale: unary_kernel<T, UnaryOp::scale><<<g, 256, 0, st>>>(out, in, n, s); break;
    case UnaryOp::gelu: unary_kernel<T, UnaryOp::gelu><<<g, 256, 0, st>>>(out, in, n, s); break;
    case UnaryOp::gelu_tanh: unary_kernel<T, UnaryOp::gelu_tanh><<<g, 256, 0, st>>>(out, in, n, s); break;
    case UnaryOp::quick_gelu: unary_kernel<T, UnaryOp::quick_gelu><<<g, 256, 0, st>>>(out, in, n, s); break;
    case UnaryOp::silu: unary_kernel<T, UnaryOp::silu><<<g, 256, 0, st>>>(out, in, n, s); break;
  }
  SC_CUDA_CHECK_LAUNCH();
}

/// adaLN: out = x * (1 + scale) + shift for x [B, L, C] (contiguous). shift/scale are
/// contiguous, of any float dtype (codes), with `*_per_batch` true for [B, C] / [B, 1, C]
/// and false for [C].
template <class T>
__global__ void modulate_kernel(T* __restrict__ out, const T* __restrict__ x, const void* shift, int shift_code,
                                bool shift_per_batch, const void* scale, int scale_code, bool scale_per_batch,
                                int64_t n, int64_t L, int64_t C) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t c = i % C, b = i / (L * C);
    const float sh = load_any(shift, shift_per_batch ? b * C + c : c, shift_code);
    const float sc = load_any(scale, scale_per_batch ? b * C + c : c, scale_code);
    out[i] = from_f32<T>(to_f32(x[i]) * (1.0f + sc) + sh);
  }
}

template <class T>
void modulate(T* out, const T* x, const void* shift, DType shift_dtype, bool shift_per_batch, const void* scale,
              DType scale_dtype, bool scale_per_batch, int64_t B, int64_t L, int64_t C, cudaStream_t s) {
  const int64_t n = B * L * C;
  if (n == 0) return;
  modulate_kernel<T><<<grid_for(n), 256, 0, s>>>(out, x, shift, dtype_code(shift_dtype), shift_per_batch, scale,
                                                 dtype_code(scale_dtype), scale_per_batch, n, L, C);
  SC_CUDA_CHECK_LAUNCH();
}

}  // namespace stagecraft::kernels::cuda
