// Naive on purpose: every loop follows the mathematical definition index by index.
#include "kernels/reference/reference.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/error.hpp"

namespace stagecraft::kernels::reference {
namespace {

double read_one(const Tensor& t, int64_t element_offset) {
  const char* base = static_cast<const char*>(t.data());
  switch (t.dtype()) {
    case DType::f32: return reinterpret_cast<const float*>(base)[element_offset];
    case DType::f16: return f16_to_f32(reinterpret_cast<const uint16_t*>(base)[element_offset]);
    case DType::bf16: return bf16_to_f32(reinterpret_cast<const uint16_t*>(base)[element_offset]);
    case DType::i8: return reinterpret_cast<const int8_t*>(base)[element_offset];
    case DType::u8: return reinterpret_cast<const uint8_t*>(base)[element_offset];
    case DType::i32: return reinterpret_cast<const int32_t*>(base)[element_offset];
    case DType::i64: return static_cast<double>(reinterpret_cast<const int64_t*>(base)[element_offset]);
    case DType::f8_e4m3: return e4m3_to_f32(reinterpret_cast<const uint8_t*>(base)[element_offset]);
  }
  return 0.0;
}

double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

// Index of element `flat` of a broadcast source of shape `src` inside output shape `out`.
int64_t broadcast_index(int64_t flat, const Shape& out, const Shape& src) {
  int64_t idx = 0, mult = 1;
  for (int d = static_cast<int>(out.size()) - 1; d >= 0; --d) {
    const int64_t coord = flat % out[d];
    flat /= out[d];
    const int sd = d - static_cast<int>(out.size() - src.size());
    if (sd < 0) continue;
    idx += (src[sd] == 1 ? 0 : coord) * mult;
    mult *= src[sd];
  }
  return idx;
}

Shape broadcast(const Shape& a, const Shape& b) {
  const size_t n = std::max(a.size(), b.size());
  Shape out(n);
  for (size_t i = 0; i < n; ++i) {
    const int64_t da = i < n - a.size() ? 1 : a[i - (n - a.size())];
    const int64_t db = i < n - b.size() ? 1 : b[i - (n - b.size())];
    out[i] = da == 1 ? db : da;
  }
  return out;
}

template <typename Fn>
Tensor binary(const Tensor& a, const Tensor& b, Fn fn) {
  const Shape out = broadcast(a.shape(), b.shape());
  const auto va = values(a), vb = values(b);
  std::vector<double> r(static_cast<size_t>(shape_numel(out)));
  for (int64_t i = 0; i < static_cast<int64_t>(r.size()); ++i)
    r[i] = fn(va[broadcast_index(i, out, a.shape())], vb[broadcast_index(i, out, b.shape())]);
  return make(r, out, a.dtype());
}

template <typename Fn>
Tensor unary(const Tensor& x, Fn fn) {
  auto v = values(x);
  for (double& e : v) e = fn(e);
  return make(v, x.shape(), x.dtype());
}

}  // namespace

std::vector<double> values(const Tensor& t) {
  SC_CHECK(t.device().is_cpu(), Errc::invalid_argument, "reference ops read CPU tensors only, got " << t.describe());
  const int64_t n = t.numel();
  std::vector<double> out(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    int64_t rest = i, off = 0;
    for (int d = t.ndim() - 1; d >= 0; --d) {
      off += (rest % t.shape()[d]) * t.strides()[d];
      rest /= t.shape()[d];
    }
    out[i] = read_one(t, off);
  }
  return out;
}

Tensor make(const std::vector<double>& v, const Shape& shape, DType dtype) {
  Tensor t = Tensor::empty(shape, dtype);
  char* base = static_cast<char*>(t.data());
  for (size_t i = 0; i < v.size(); ++i) {
    const float f = static_cast<float>(v[i]);
    switch (dtype) {
      case DType::f32: reinterpret_cast<float*>(base)[i] = f; break;
      case DType::f16: reinterpret_cast<uint16_t*>(base)[i] = f32_to_f16(f); break;
      case DType::bf16: reinterpret_cast<uint16_t*>(base)[i] = f32_to_bf16(f); break;
      case DType::f8_e4m3: reinterpret_cast<uint8_t*>(base)[i] = f32_to_e4m3(f); break;
      case DType::i8:
        reinterpret_cast<int8_t*>(base)[i] = static_cast<int8_t>(std::clamp(std::trunc(v[i]), -128.0, 127.0));
        break;
      case DType::u8:
        reinterpret_cast<uint8_t*>(base)[i] = static_cast<uint8_t>(std::clamp(std::trunc(v[i]), 0.0, 255.0));
        break;
      case DType::i32:
        reinterpret_cast<int32_t*>(base)[i] =
            static_cast<int32_t>(std::clamp(std::trunc(v[i]), -2147483648.0, 2147483647.0));
        break;
      case DType::i64: reinterpret_cast<int64_t*>(base)[i] = static_cast<int64_t>(std::trunc(v[i])); break;
    }
  }
  return t;
}

double max_abs_diff(const Tensor& a, const Tensor& b) {
  SC_CHECK(a.shape() == b.shape(), Errc::shape_mismatch,
           "max_abs_diff: shapes differ: " << a.shape_str() << " vs " << b.shape_str());
  const auto va = values(a), vb = values(b);
  double m = 0.0;
  for (size_t i = 0; i < va.size(); ++i) {
    const double d = std::fabs(va[i] - vb[i]);
    if (std::isnan(d)) return std::numeric_limits<double>::infinity();
    m = std::max(m, d);
  }
  return m;
}

double max_abs(const Tensor& t) {
  double m = 0.0;
  for (double v : values(t)) m = std::max(m, std::fabs(v));
  return m;
}

namespace {
// x · wᵀ + b in double, rows in x's logical order.
std::vector<double> linear_values(const Tensor& x, const Tensor& w, const Tensor* bias) {
  const int64_t K = x.size(-1), N = w.size(0), M = x.numel() / std::max<int64_t>(1, K);
  const auto vx = values(x), vw = values(w);
  const std::vector<double> vb = bias ? values(*bias) : std::vector<double>(N, 0.0);
  std::vector<double> y(static_cast<size_t>(M * N));
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      double acc = vb[n];
      for (int64_t k = 0; k < K; ++k) acc += vx[m * K + k] * vw[n * K + k];
      y[m * N + n] = acc;
    }
  return y;
}

Shape linear_shape(const Tensor& x, const Tensor& w) {
  Shape shape = x.shape();
  shape.back() = w.size(0);
  return shape;
}

double gelu_value(double e, bool tanh_approximation) {
  if (tanh_approximation) return 0.5 * e * (1.0 + std::tanh(std::sqrt(2.0 / M_PI) * (e + 0.044715 * e * e * e)));
  return 0.5 * e * (1.0 + std::erf(e / std::sqrt(2.0)));
}

// Row b of a modulation parameter ([B, C], [B, 1, C] or [C]) at channel c.
double modulation_at(const std::vector<double>& v, int64_t C, int64_t b, int64_t c) {
  return v[(static_cast<int64_t>(v.size()) == C ? 0 : b) * C + c];
}
}  // namespace

Tensor linear(const Tensor& x, const Tensor& w, const Tensor* bias) {
  return make(linear_values(x, w, bias), linear_shape(x, w), x.dtype());
}

Tensor linear_gelu(const Tensor& x, const Tensor& w, const Tensor* bias, bool tanh_approximation) {
  auto y = linear_values(x, w, bias);
  for (double& e : y) e = gelu_value(e, tanh_approximation);
  return make(y, linear_shape(x, w), x.dtype());
}

Tensor linear_residual(const Tensor& x, const Tensor& w, const Tensor* bias, const Tensor& residual,
                       const Tensor* gate) {
  auto y = linear_values(x, w, bias);
  const auto r = values(residual);
  const std::vector<double> g = gate ? values(*gate) : std::vector<double>();
  const int64_t N = w.size(0), rows = static_cast<int64_t>(y.size()) / std::max<int64_t>(1, N);
  const int64_t per_item = x.ndim() >= 2 ? rows / std::max<int64_t>(1, x.size(0)) : rows;
  for (int64_t m = 0; m < rows; ++m)
    for (int64_t n = 0; n < N; ++n) {
      const double gv = gate ? modulation_at(g, N, m / std::max<int64_t>(1, per_item), n) : 1.0;
      y[m * N + n] = r[m * N + n] + gv * y[m * N + n];
    }
  return make(y, linear_shape(x, w), x.dtype());
}

Tensor matmul(const Tensor& a, const Tensor& b, bool trans_b) {
  const bool batched = a.ndim() == 3 || b.ndim() == 3;
  const int64_t Ba = a.ndim() == 3 ? a.size(0) : 1, Bb = b.ndim() == 3 ? b.size(0) : 1, B = std::max(Ba, Bb);
  const int64_t M = a.size(-2), K = a.size(-1), N = trans_b ? b.size(-2) : b.size(-1);
  const auto va = values(a), vb = values(b);
  std::vector<double> y(static_cast<size_t>(B * M * N));
  for (int64_t i = 0; i < B; ++i)
    for (int64_t m = 0; m < M; ++m)
      for (int64_t n = 0; n < N; ++n) {
        double acc = 0.0;
        for (int64_t k = 0; k < K; ++k) {
          const double av = va[(Ba == 1 ? 0 : i) * M * K + m * K + k];
          const double bv = trans_b ? vb[(Bb == 1 ? 0 : i) * N * K + n * K + k] : vb[(Bb == 1 ? 0 : i) * K * N + k * N + n];
          acc += av * bv;
        }
        y[(i * M + m) * N + n] = acc;
      }
  return make(y, batched ? Shape{B, M, N} : Shape{M, N}, a.dtype());
}

Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, const ops::AttentionOptions& opt) {
  const int64_t B = q.size(0), H = q.size(1), Lq = q.size(2), D = q.size(3), Lk = k.size(2);
  const double scale = opt.scale != 0.0f ? opt.scale : 1.0 / std::sqrt(static_cast<double>(D));
  const auto vq = values(q), vk = values(k), vv = values(v);
  const std::vector<double> mask = opt.key_padding_mask ? values(*opt.key_padding_mask) : std::vector<double>();
  std::vector<double> y(static_cast<size_t>(B * H * Lq * D), 0.0);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < Lq; ++i) {
        const int64_t bh = b * H + h;
        std::vector<double> s(static_cast<size_t>(Lk));
        std::vector<bool> allowed(static_cast<size_t>(Lk));
        double mx = -std::numeric_limits<double>::infinity();
        for (int64_t j = 0; j < Lk; ++j) {
          allowed[j] = (!opt.causal || j <= i + (Lk - Lq)) && (mask.empty() || mask[b * Lk + j] != 0.0);
          double dot = 0.0;
          for (int64_t d = 0; d < D; ++d) dot += vq[(bh * Lq + i) * D + d] * vk[(bh * Lk + j) * D + d];
          s[j] = dot * scale;
          if (allowed[j]) mx = std::max(mx, s[j]);
        }
        if (mx == -std::numeric_limits<double>::infinity()) continue;  // fully masked row stays 0
        double sum = 0.0;
        for (int64_t j = 0; j < Lk; ++j) {
          s[j] = allowed[j] ? std::exp(s[j] - mx) : 0.0;
          sum += s[j];
        }
        for (int64_t d = 0; d < D; ++d) {
          double acc = 0.0;
          for (int64_t j = 0; j < Lk; ++j) acc += s[j] / sum * vv[(bh * Lk + j) * D + d];
          y[(bh * Lq + i) * D + d] = acc;
        }
      }
  return make(y, q.shape(), q.dtype());
}

Tensor softmax(const Tensor& x) {
  const int64_t C = x.size(-1), R = x.numel() / std::max<int64_t>(1, C);
  auto v = values(x);
  for (int64_t r = 0; r < R; ++r) {
    double mx = -std::numeric_limits<double>::infinity();
    for (int64_t j = 0; j < C; ++j) mx = std::max(mx, v[r * C + j]);
    if (mx == -std::numeric_limits<double>::infinity()) {
      for (int64_t j = 0; j < C; ++j) v[r * C + j] = 0.0;
      continue;
    }
    double sum = 0.0;
    for (int64_t j = 0; j < C; ++j) sum += std::exp(v[r * C + j] - mx);
    for (int64_t j = 0; j < C; ++j) v[r * C + j] = std::exp(v[r * C + j] - mx) / sum;
  }
  return make(v, x.shape(), x.dtype());
}

Tensor layer_norm(const Tensor& x, const Tensor* weight, const Tensor* bias, float eps) {
  const int64_t C = x.size(-1), R = x.numel() / std::max<int64_t>(1, C);
  auto v = values(x);
  const std::vector<double> w = weight ? values(*weight) : std::vector<double>(C, 1.0);
  const std::vector<double> bb = bias ? values(*bias) : std::vector<double>(C, 0.0);
  for (int64_t r = 0; r < R; ++r) {
    double mean = 0.0, var = 0.0;
    for (int64_t j = 0; j < C; ++j) mean += v[r * C + j];
    mean /= C;
    for (int64_t j = 0; j < C; ++j) var += (v[r * C + j] - mean) * (v[r * C + j] - mean);
    var /= C;
    for (int64_t j = 0; j < C; ++j) v[r * C + j] = (v[r * C + j] - mean) / std::sqrt(var + eps) * w[j] + bb[j];
  }
  return make(v, x.shape(), x.dtype());
}

Tensor layer_norm_modulate(const Tensor& x, const Tensor* weight, const Tensor* bias, float eps, const Tensor& shift,
                           const Tensor& scale) {
  const int64_t B = x.size(0), L = x.size(1), C = x.size(2);
  auto v = values(x);
  const std::vector<double> w = weight ? values(*weight) : std::vector<double>(C, 1.0);
  const std::vector<double> bb = bias ? values(*bias) : std::vector<double>(C, 0.0);
  const auto vs = values(shift), vc = values(scale);
  for (int64_t r = 0; r < B * L; ++r) {
    double mean = 0.0, var = 0.0;
    for (int64_t j = 0; j < C; ++j) mean += v[r * C + j];
    mean /= C;
    for (int64_t j = 0; j < C; ++j) var += (v[r * C + j] - mean) * (v[r * C + j] - mean);
    var /= C;
    for (int64_t j = 0; j < C; ++j) {
      const double n = (v[r * C + j] - mean) / std::sqrt(var + eps) * w[j] + bb[j];
      v[r * C + j] = n * (1.0 + modulation_at(vc, C, r / L, j)) + modulation_at(vs, C, r / L, j);
    }
  }
  return make(v, x.shape(), x.dtype());
}

Tensor group_norm(const Tensor& x, int groups, const Tensor* weight, const Tensor* bias, float eps, bool silu) {
  const int64_t N = x.size(0), C = x.size(1), S = x.numel() / std::max<int64_t>(1, N * C), cpg = C / groups;
  auto v = values(x);
  const std::vector<double> w = weight ? values(*weight) : std::vector<double>(C, 1.0);
  const std::vector<double> bb = bias ? values(*bias) : std::vector<double>(C, 0.0);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t g = 0; g < groups; ++g) {
      double mean = 0.0, var = 0.0;
      const int64_t count = cpg * S;
      for (int64_t c = g * cpg; c < (g + 1) * cpg; ++c)
        for (int64_t s = 0; s < S; ++s) mean += v[(n * C + c) * S + s];
      mean /= count;
      for (int64_t c = g * cpg; c < (g + 1) * cpg; ++c)
        for (int64_t s = 0; s < S; ++s) var += std::pow(v[(n * C + c) * S + s] - mean, 2);
      var /= count;
      for (int64_t c = g * cpg; c < (g + 1) * cpg; ++c)
        for (int64_t s = 0; s < S; ++s) {
          double& e = v[(n * C + c) * S + s];
          e = (e - mean) / std::sqrt(var + eps) * w[c] + bb[c];
          if (silu) e = e * sigmoid(e);
        }
    }
  return make(v, x.shape(), x.dtype());
}

Tensor rms_norm(const Tensor& x, const Tensor* weight, float eps) {
  const int64_t C = x.size(-1), R = x.numel() / std::max<int64_t>(1, C);
  auto v = values(x);
  const std::vector<double> w = weight ? values(*weight) : std::vector<double>(C, 1.0);
  for (int64_t r = 0; r < R; ++r) {
    double ms = 0.0;
    for (int64_t j = 0; j < C; ++j) ms += v[r * C + j] * v[r * C + j];
    ms /= C;
    for (int64_t j = 0; j < C; ++j) v[r * C + j] = v[r * C + j] / std::sqrt(ms + eps) * w[j];
  }
  return make(v, x.shape(), x.dtype());
}

Tensor gelu(const Tensor& x, bool tanh_approximation) {
  return unary(x, [=](double e) { return gelu_value(e, tanh_approximation); });
}

Tensor quick_gelu(const Tensor& x) { return unary(x, [](double e) { return e * sigmoid(1.702 * e); }); }
Tensor silu(const Tensor& x) { return unary(x, [](double e) { return e * sigmoid(e); }); }

Tensor add(const Tensor& a, const Tensor& b) { return binary(a, b, [](double x, double y) { return x + y; }); }
Tensor mul(const Tensor& a, const Tensor& b) { return binary(a, b, [](double x, double y) { return x * y; }); }
Tensor axpby(const Tensor& a, float alpha, const Tensor& b, float beta) {
  return binary(a, b, [=](double x, double y) { return x * alpha + y * beta; });
}
Tensor scale(const Tensor& x, float s) { return unary(x, [=](double e) { return e * s; }); }

Tensor modulate(const Tensor& x, const Tensor& shift, const Tensor& scale) {
  const int64_t B = x.size(0), L = x.size(1), C = x.size(2);
  auto v = values(x);
  const auto vs = values(shift), vc = values(scale);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t l = 0; l < L; ++l)
      for (int64_t c = 0; c < C; ++c) {
        const double sh = vs[(shift.numel() == C ? 0 : b) * C + c];
        const double sc = vc[(scale.numel() == C ? 0 : b) * C + c];
        double& e = v[(b * L + l) * C + c];
        e = e * (1.0 + sc) + sh;
      }
  return make(v, x.shape(), x.dtype());
}

Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor* bias, int stride, int padding) {
  const int64_t N = x.size(0), I = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t O = w.size(0), kh = w.size(2), kw = w.size(3);
  const int64_t Ho = (H + 2 * padding - kh) / stride + 1, Wo = (W + 2 * padding - kw) / stride + 1;
  const auto vx = values(x), vw = values(w);
  const std::vector<double> vb = bias ? values(*bias) : std::vector<double>(O, 0.0);
  std::vector<double> y(static_cast<size_t>(N * O * Ho * Wo));
  for (int64_t n = 0; n < N; ++n)
    for (int64_t o = 0; o < O; ++o)
      for (int64_t oy = 0; oy < Ho; ++oy)
        for (int64_t ox = 0; ox < Wo; ++ox) {
          double acc = vb[o];
          for (int64_t i = 0; i < I; ++i)
            for (int64_t ky = 0; ky < kh; ++ky)
              for (int64_t kx = 0; kx < kw; ++kx) {
                const int64_t iy = oy * stride - padding + ky, ix = ox * stride - padding + kx;
                if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
                acc += vx[((n * I + i) * H + iy) * W + ix] * vw[((o * I + i) * kh + ky) * kw + kx];
              }
          y[((n * O + o) * Ho + oy) * Wo + ox] = acc;
        }
  return make(y, {N, O, Ho, Wo}, x.dtype());
}

Tensor upsample_nearest2x(const Tensor& x) {
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const auto v = values(x);
  std::vector<double> y(static_cast<size_t>(N * C * 4 * H * W));
  for (int64_t p = 0; p < N * C; ++p)
    for (int64_t oy = 0; oy < 2 * H; ++oy)
      for (int64_t ox = 0; ox < 2 * W; ++ox) y[(p * 2 * H + oy) * 2 * W + ox] = v[(p * H + oy / 2) * W + ox / 2];
  return make(y, {N, C, 2 * H, 2 * W}, x.dtype());
}

Tensor timestep_embedding(const Tensor& t, int dim, bool flip_sin_to_cos, float downscale_freq_shift,
                          float max_period) {
  const auto vt = values(t);
  const int64_t B = t.numel();
  const int half = dim / 2;
  std::vector<double> y(static_cast<size_t>(B * dim), 0.0);  // odd dim: last column stays zero (diffusers pads)
  for (int64_t b = 0; b < B; ++b)
    for (int i = 0; i < half; ++i) {
      const double freq = std::exp(-std::log(static_cast<double>(max_period)) * i / (half - downscale_freq_shift));
      const double arg = vt[b] * freq;
      y[b * dim + i] = flip_sin_to_cos ? std::cos(arg) : std::sin(arg);
      y[b * dim + half + i] = flip_sin_to_cos ? std::sin(arg) : std::cos(arg);
    }
  return make(y, {B, dim}, DType::f32);
}

Tensor patchify(const Tensor& x, int p) {
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), h = H / p, w = W / p;
  const auto v = values(x);
  std::vector<double> y(v.size());
  for (int64_t b = 0; b < B; ++b)
    for (int64_t ty = 0; ty < h; ++ty)
      for (int64_t tx = 0; tx < w; ++tx)
        for (int64_t c = 0; c < C; ++c)
          for (int64_t py = 0; py < p; ++py)
            for (int64_t px = 0; px < p; ++px) {
              const int64_t token = ty * w + tx, feat = (c * p + py) * p + px;
              y[(b * h * w + token) * C * p * p + feat] = v[((b * C + c) * H + ty * p + py) * W + tx * p + px];
            }
  return make(y, {B, h * w, C * p * p}, x.dtype());
}

Tensor unpatchify(const Tensor& x, int p, int channels, int height, int width) {
  const int64_t B = x.size(0), C = channels, h = height / p, w = width / p;
  const auto v = values(x);
  std::vector<double> y(v.size());
  // PixArt: x.reshape(B, h, w, p, p, C) then einsum("nhwpqc->nchpwq").
  for (int64_t b = 0; b < B; ++b)
    for (int64_t ty = 0; ty < h; ++ty)
      for (int64_t tx = 0; tx < w; ++tx)
        for (int64_t py = 0; py < p; ++py)
          for (int64_t px = 0; px < p; ++px)
            for (int64_t c = 0; c < C; ++c)
              y[((b * C + c) * height + ty * p + py) * width + tx * p + px] =
                  v[(((b * h + ty) * w + tx) * p + py) * p * C + px * C + c];
  return make(y, {B, C, static_cast<int64_t>(height), static_cast<int64_t>(width)}, x.dtype());
}

Tensor cast(const Tensor& x, DType dtype) {
  auto v = values(x);
  if (is_floating(x.dtype()) && !is_floating(dtype))
    for (double& e : v) e = std::isnan(e) ? 0.0 : e;
  return make(v, x.shape(), dtype);
}

Tensor contiguous(const Tensor& x) { return make(values(x), x.shape(), x.dtype()); }

Tensor cat(const std::vector<Tensor>& xs, int dim) {
  Shape shape = xs.front().shape();
  const int d = dim < 0 ? dim + static_cast<int>(shape.size()) : dim;
  shape[d] = 0;
  for (const Tensor& t : xs) shape[d] += t.size(d);
  std::vector<double> y(static_cast<size_t>(shape_numel(shape)));
  int64_t offset = 0;
  for (const Tensor& t : xs) {
    const auto v = values(t);
    for (int64_t i = 0; i < t.numel(); ++i) {
      // Unravel i in t's shape, shift along d, ravel in the output shape.
      int64_t rest = i, out = 0, mult = 1;
      for (int k = t.ndim() - 1; k >= 0; --k) {
        int64_t coord = rest % t.size(k);
        rest /= t.size(k);
        if (k == d) coord += offset;
        out += coord * mult;
        mult *= shape[k];
      }
      y[out] = v[i];
    }
    offset += t.size(d);
  }
  return make(y, shape, xs.front().dtype());
}

}  // namespace stagecraft::kernels::reference
