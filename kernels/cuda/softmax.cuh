#pragma once
// Row softmax over the last dim: one block per row, an online max/sum pass and a
// write pass, f32 throughout. Rows with no finite entry (all -inf) give zeros
// rather than NaN, matching attention's "fully masked rows are 0" rule.
#include "kernels/cuda/common.cuh"

namespace stagecraft::kernels::cuda {

template <class T>
__global__ void softmax_kernel(T* __restrict__ out, const T* __restrict__ in, int64_t C) {
  __shared__ float scratch[32];
  const T* x = in + blockIdx.x * C;
  T* y = out + blockIdx.x * C;
  float m = -INFINITY, s = 0.0f;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
    const float v = to_f32(x[c]);
    if (v == -INFINITY) continue;
    if (v > m) {
      s = s * expf(m - v) + 1.0f;  // m == -inf gives s * 0 + 1
      m = v;
    } else {
      s += expf(v - m);
    }
  }
  const float M = block_max(m, scratch);
  const float S = block_sum(m == -INFINITY ? 0.0f : s * expf(m - M), scratch);
  const float inv = S > 0.0f ? 1.0f / S : 0.0f;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
    const float v = to_f32(x[c]);
    y[c] = from_f32<T>(inv == 0.0f ? 0.0f : expf(v - M) * inv);
  }
}

/// out/in contiguous [rows, C].
template <class T>
void softmax(T* out, const T* in, int64_t rows, int64_t C, cudaStream_t s) {
  if (rows == 0 || C == 0) return;
  const int threads = C <= 128 ? 32 : C <= 1024 ? 128 : 256;
  for (int64_t r0 = 0; r0 < rows; r0 += 2147483647LL) {  // grid.x limit
    const int64_t nr = std::min<int64_t>(rows - r0, 2147483647LL);
    softmax_kernel<T><<<static_cast<unsigned>(nr), threads, 0, s>>>(out + r0 * C, in + r0 * C, C);
    SC_CUDA_CHECK_LAUNCH();
  }
}

}  // namespace stagecraft::kernels::cuda
