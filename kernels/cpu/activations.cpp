// Point-wise activations, split over the pool in cache-sized chunks.
#include <algorithm>
#include <cmath>

#include "kernels/cpu/common.hpp"
#include "kernels/cpu/cpu_ops.hpp"

namespace stagecraft::kernels::cpu {

template <typename Fn>
static Tensor pointwise(const Tensor& x, Fn&& fn) {
  F32In in(x);
  F32Out out(x.shape(), x.dtype());
  const float* px = in.data();
  float* py = out.data();
  parallel_for(x.numel(), 32768, [&](int64_t b, int64_t e) { fn(px + b, py + b, e - b); });
  return out.finish();
}

// Both GELU forms go through the vectorised exp in chunks: tanh-GELU is exactly
// x·sigmoid(2u) with u = sqrt(2/pi)(x + 0.044715x^3); erf-GELU uses Abramowitz-Stegun
// 7.1.26 (|error| <= 1.5e-7, below f32 resolution of the result).
void gelu_f32(const float* s, float* y, int64_t n, bool tanh_approximation) {
  constexpr int64_t kChunk = 256;
  float e[kChunk];
  for (int64_t c0 = 0; c0 < n; c0 += kChunk) {
    const int64_t m = std::min(kChunk, n - c0);
    const float* x = s + c0;
    float* out = y + c0;
    if (tanh_approximation) {
      const float k2 = 2.0f * 0.7978845608028654f;
      for (int64_t i = 0; i < m; ++i) e[i] = -k2 * (x[i] + 0.044715f * x[i] * x[i] * x[i]);
      exp_inplace(e, m);
      for (int64_t i = 0; i < m; ++i) out[i] = x[i] / (1.0f + e[i]);
    } else {
      for (int64_t i = 0; i < m; ++i) e[i] = -0.5f * x[i] * x[i];
      exp_inplace(e, m);
      for (int64_t i = 0; i < m; ++i) {
        const float z = std::fabs(x[i]) * 0.7071067811865476f;
        const float t = 1.0f / (1.0f + 0.3275911f * z);
        const float poly =
            t * (0.254829592f + t * (-0.284496736f + t * (1.421413741f + t * (-1.453152027f + t * 1.061405429f))));
        const float erf_abs = 1.0f - poly * e[i];
        const float erf = x[i] < 0.0f ? -erf_abs : erf_abs;
        out[i] = 0.5f * x[i] * (1.0f + erf);
      }
    }
  }
}

Tensor gelu(const Tensor& x, bool tanh_approximation) {
  return pointwise(x, [&](const float* s, float* y, int64_t n) { gelu_f32(s, y, n, tanh_approximation); });
}

Tensor quick_gelu(const Tensor& x) {
  return pointwise(x, [](const float* s, float* y, int64_t n) {
    if (s != y) std::copy(s, s + n, y);
    swish_inplace(y, n, 1.702f);
  });
}

Tensor silu(const Tensor& x) {
  return pointwise(x, [](const float* s, float* y, int64_t n) {
    if (s != y) std::copy(s, s + n, y);
    swish_inplace(y, n, 1.0f);
  });
}

}  // namespace stagecraft::kernels::cpu
