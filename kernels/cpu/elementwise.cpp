// Broadcasting arithmetic. Operands that already have the output's shape are read in
// place; broadcast ones are expanded once into an f32 buffer, which keeps the inner
// loops plain and vectorisable.
#include <algorithm>

#include "core/error.hpp"
#include "kernels/cpu/common.hpp"
#include "kernels/cpu/cpu_ops.hpp"

namespace stagecraft::kernels::cpu {

// Elements of `t` repeat every `inner` output elements when t is contiguous and only
// broadcast over leading dims (a bias [C] over [N, L, C], an embedding [B, 1, C] ...).
// Returns inner, or 0 when t does not have that form.
static int64_t row_repeat(const Tensor& t, const Shape& out) {
  if (!t.is_contiguous() || t.numel() == 0) return 0;
  const Shape& s = t.shape();
  size_t k = 0;  // first dim of t that is not 1
  while (k < s.size() && s[k] == 1) ++k;
  const size_t lead = out.size() - s.size();
  for (size_t i = k; i < s.size(); ++i)
    if (s[i] != out[lead + i]) return 0;
  return t.numel();
}

template <typename Fn>
static Tensor binary(const Tensor& a, const Tensor& b, const char* op, Fn&& fn) {
  const Shape shape = broadcast_shapes(a.shape(), b.shape(), op);
  const int64_t n = shape_numel(shape);
  if (a.shape() == shape && b.shape() != shape) {
    if (const int64_t inner = row_repeat(b, shape)) {
      F32In fa(a), fb(b);
      F32Out out(shape, a.dtype());
      const float* pa = fa.data();
      const float* pb = fb.data();
      float* py = out.data();
      parallel_for(n / inner, std::max<int64_t>(1, 65536 / inner), [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r)
          for (int64_t j = 0; j < inner; ++j) py[r * inner + j] = fn(pa[r * inner + j], pb[j]);
      });
      return out.finish();
    }
  }
  F32In fa(broadcast_view(a, shape)), fb(broadcast_view(b, shape));
  F32Out out(shape, a.dtype());
  const float* pa = fa.data();
  const float* pb = fb.data();
  float* py = out.data();
  parallel_for(shape_numel(shape), 65536, [&](int64_t s, int64_t e) {
    for (int64_t i = s; i < e; ++i) py[i] = fn(pa[i], pb[i]);
  });
  return out.finish();
}

Tensor add(const Tensor& a, const Tensor& b) {
  return binary(a, b, "add", [](float x, float y) { return x + y; });
}

Tensor mul(const Tensor& a, const Tensor& b) {
  return binary(a, b, "mul", [](float x, float y) { return x * y; });
}

Tensor axpby(const Tensor& a, float alpha, const Tensor& b, float beta) {
  return binary(a, b, "axpby", [alpha, beta](float x, float y) { return x * alpha + y * beta; });
}

Tensor scale(const Tensor& x, float s) {
  F32In in(x);
  F32Out out(x.shape(), x.dtype());
  const float* px = in.data();
  float* py = out.data();
  parallel_for(x.numel(), 65536, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) py[i] = px[i] * s;
  });
  return out.finish();
}

Tensor modulate(const Tensor& x, const Tensor& shift, const Tensor& scale) {
  const int64_t B = x.size(0), L = x.size(1), C = x.size(2);
  F32In in(x), fs(shift), fc(scale);
  // [C] applies to every batch; [B, C] and [B, 1, C] hold one row per batch.
  const int64_t shift_step = shift.numel() == C ? 0 : C;
  const int64_t scale_step = scale.numel() == C ? 0 : C;
  F32Out out(x.shape(), x.dtype());
  const float* px = in.data();
  float* py = out.data();
  parallel_for(B * L, std::max<int64_t>(1, 65536 / std::max<int64_t>(1, C)), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t b = r / L;
      const float* sh = fs.data() + b * shift_step;
      const float* sc = fc.data() + b * scale_step;
      const float* s = px + r * C;
      float* y = py + r * C;
      for (int64_t c = 0; c < C; ++c) y[c] = s[c] * (1.0f + sc[c]) + sh[c];
    }
  });
  return out.finish();
}

}  // namespace stagecraft::kernels::cpu
