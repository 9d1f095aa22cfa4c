// Point-wise activations, split over the pool in cache-sized chunks.
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

Tensor gelu(const Tensor& x, bool tanh_approximation) {
  return pointwise(x, [&](const float* s, float* y, int64_t n) {
    if (tanh_approximation) {
      const float k = 0.7978845608028654f;  // sqrt(2/pi)
      for (int64_t i = 0; i < n; ++i) {
        const float v = s[i];
        y[i] = 0.5f * v * (1.0f + std::tanh(k * (v + 0.044715f * v * v * v)));
      }
    } else {
      for (int64_t i = 0; i < n; ++i) y[i] = 0.5f * s[i] * (1.0f + std::erf(s[i] * 0.7071067811865476f));
    }
  });
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
