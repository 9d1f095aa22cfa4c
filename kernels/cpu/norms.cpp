// softmax, layer_norm, rms_norm and group_norm (with optional fused SiLU). Statistics are
// accumulated in double so that large groups (128x128 maps) keep f32-level accuracy.
#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>

#include "kernels/cpu/common.hpp"
#include "kernels/cpu/cpu_ops.hpp"

namespace stagecraft::kernels::cpu {

static int64_t rows_grain(int64_t C) { return std::max<int64_t>(1, 16384 / std::max<int64_t>(1, C)); }

Tensor softmax(const Tensor& x) {
  const int64_t C = x.ndim() == 0 ? 1 : x.size(-1);
  const int64_t R = C == 0 ? 0 : x.numel() / C;
  F32In in(x);
  F32Out out(x.shape(), x.dtype());
  const float* px = in.data();
  float* py = out.data();
  parallel_for(R, rows_grain(C), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float* s = px + r * C;
      float* y = py + r * C;
      float mx = -std::numeric_limits<float>::infinity();
      for (int64_t j = 0; j < C; ++j) mx = std::max(mx, s[j]);
      if (mx == -std::numeric_limits<float>::infinity()) {  // every entry masked: no distribution
        std::fill(y, y + C, 0.0f);
        continue;
      }
      for (int64_t j = 0; j < C; ++j) y[j] = s[j] - mx;
      exp_inplace(y, C);
      float sum = 0.0f;
      for (int64_t j = 0; j < C; ++j) sum += y[j];
      const float inv = 1.0f / sum;
      for (int64_t j = 0; j < C; ++j) y[j] *= inv;
    }
  });
  return out.finish();
}

// Mean and 1/std of n floats (two passes; partial sums vectorised, totals in double).
static void moments(const float* x, int64_t n, float eps, float& mean, float& rstd) {
  const double m = sum_f32(x, n) / static_cast<double>(n);
  mean = static_cast<float>(m);
  const double v = sum_sq_dev_f32(x, n, mean) / static_cast<double>(n);
  rstd = static_cast<float>(1.0 / std::sqrt(v + eps));
}

// One row of a layer norm: y[j] = post(j, (s[j] - mean) * rstd * w[j] + b[j]) (w, b optional),
// so layer_norm and the fused adaLN share the same arithmetic up to their last step.
template <class Post>
static void norm_row(const float* s, float* y, int64_t C, float eps, const float* w, const float* b, Post post) {
  float mean, rstd;
  moments(s, C, eps, mean, rstd);
  for (int64_t j = 0; j < C; ++j) {
    float v = (s[j] - mean) * rstd;
    if (w) v *= w[j];
    if (b) v += b[j];
    y[j] = post(j, v);
  }
}

Tensor layer_norm(const Tensor& x, const Tensor* weight, const Tensor* bias, float eps) {
  const int64_t C = x.size(-1);
  const int64_t R = C == 0 ? 0 : x.numel() / C;
  F32In in(x);
  std::unique_ptr<F32In> wf, bf;
  if (weight) wf = std::make_unique<F32In>(*weight);
  if (bias) bf = std::make_unique<F32In>(*bias);
  F32Out out(x.shape(), x.dtype());
  const float* px = in.data();
  float* py = out.data();
  const float* w = wf ? wf->data() : nullptr;
  const float* b = bf ? bf->data() : nullptr;
  parallel_for(R, rows_grain(C), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r)
      norm_row(px + r * C, py + r * C, C, eps, w, b, [](int64_t, float v) { return v; });
  });
  return out.finish();
}

// adaLN in one pass: the modulated row is written straight from the normalised values, so
// the normalised tensor never exists (one read and one write of x instead of two of each).
Tensor layer_norm_modulate(const Tensor& x, const Tensor* weight, const Tensor* bias, float eps, const Tensor& shift,
                           const Tensor& scale) {
  const int64_t B = x.size(0), L = x.size(1), C = x.size(2);
  F32In in(x), fs(shift), fc(scale);  // shift/scale: B·C floats at most, gathered from any view
  std::unique_ptr<F32In> wf, bf;
  if (weight) wf = std::make_unique<F32In>(*weight);
  if (bias) bf = std::make_unique<F32In>(*bias);
  const int64_t shift_step = shift.numel() == C ? 0 : C, scale_step = scale.numel() == C ? 0 : C;
  F32Out out(x.shape(), x.dtype());
  const float* px = in.data();
  float* py = out.data();
  const float* w = wf ? wf->data() : nullptr;
  const float* b = bf ? bf->data() : nullptr;
  parallel_for(B * L, rows_grain(C), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float* sh = fs.data() + (r / L) * shift_step;
      const float* sc = fc.data() + (r / L) * scale_step;
      norm_row(px + r * C, py + r * C, C, eps, w, b, [&](int64_t j, float v) { return v * (1.0f + sc[j]) + sh[j]; });
    }
  });
  return out.finish();
}

Tensor rms_norm(const Tensor& x, const Tensor* weight, float eps) {
  const int64_t C = x.size(-1);
  const int64_t R = C == 0 ? 0 : x.numel() / C;
  F32In in(x);
  std::unique_ptr<F32In> wf;
  if (weight) wf = std::make_unique<F32In>(*weight);
  F32Out out(x.shape(), x.dtype());
  const float* px = in.data();
  float* py = out.data();
  const float* w = wf ? wf->data() : nullptr;
  parallel_for(R, rows_grain(C), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float* s = px + r * C;
      float* y = py + r * C;
      const double ss = sum_sq_dev_f32(s, C, 0.0f);
      const float rstd = static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(C) + eps));
      for (int64_t j = 0; j < C; ++j) y[j] = w ? s[j] * rstd * w[j] : s[j] * rstd;
    }
  });
  return out.finish();
}

Tensor group_norm(const Tensor& x, int groups, const Tensor* weight, const Tensor* bias, float eps, bool silu) {
  const int64_t N = x.size(0), C = x.size(1);
  const int64_t S = N * C == 0 ? 0 : x.numel() / (N * C);
  const int64_t cpg = C / groups;
  F32In in(x);
  std::unique_ptr<F32In> wf, bf;
  if (weight) wf = std::make_unique<F32In>(*weight);
  if (bias) bf = std::make_unique<F32In>(*bias);
  F32Out out(x.shape(), x.dtype());
  const float* px = in.data();
  float* py = out.data();
  const float* w = wf ? wf->data() : nullptr;
  const float* b = bf ? bf->data() : nullptr;
  parallel_for(N * groups, 1, [&](int64_t g0, int64_t g1) {
    for (int64_t ng = g0; ng < g1; ++ng) {
      const int64_t g = ng % groups;
      const float* s = px + ng * cpg * S;
      float* y = py + ng * cpg * S;
      float mean, rstd;
      moments(s, cpg * S, eps, mean, rstd);
      for (int64_t ci = 0; ci < cpg; ++ci) {
        const int64_t c = g * cpg + ci;
        const float a = rstd * (w ? w[c] : 1.0f);
        const float sh = b ? b[c] : 0.0f;
        const float* sc = s + ci * S;
        float* yc = y + ci * S;
        // (x - mean) first: folding mean into the shift cancels badly when rstd is large.
        for (int64_t i = 0; i < S; ++i) yc[i] = (sc[i] - mean) * a + sh;
      }
      if (silu) swish_inplace(y, cpg * S, 1.0f);
    }
  });
  return out.finish();
}

}  // namespace stagecraft::kernels::cpu
