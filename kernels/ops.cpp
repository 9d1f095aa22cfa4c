// The single dispatch point of the kernels layer: every op checks shapes, dtypes and
// devices here, once, with messages that name the op and the expected and found
// shapes, then hands over to the backend of the inputs' device. Backends may assume
// their inputs are valid.
#include "kernels/ops.hpp"

#include <algorithm>
#include <initializer_list>

#include "core/error.hpp"
#include "kernels/cpu/cpu_ops.hpp"
#if STAGECRAFT_HAVE_CUDA
#include "kernels/cuda/cuda_ops.hpp"
#endif

namespace stagecraft::ops {
namespace {

[[noreturn]] void no_cuda(const char* op) {
  SC_FAIL(Errc::unsupported, op << ": input is on a CUDA device but Stagecraft was built without CUDA; "
                                   "rebuild with -DSTAGECRAFT_CUDA=ON or move the tensors to the CPU");
}

// Dispatches to the backend of `dev`; without CUDA support a CUDA device is an error.
#if STAGECRAFT_HAVE_CUDA
#define SC_DISPATCH(dev, op, ...) \
  return (dev).is_cuda() ? ::stagecraft::kernels::cuda::op(__VA_ARGS__) : ::stagecraft::kernels::cpu::op(__VA_ARGS__)
#else
#define SC_DISPATCH(dev, op, ...)        \
  do {                                   \
    if ((dev).is_cuda()) no_cuda(#op);   \
    return ::stagecraft::kernels::cpu::op(__VA_ARGS__); \
  } while (0)
#endif

void check_defined(const char* op, const char* name, const Tensor& t) {
  SC_CHECK(t.defined(), Errc::invalid_argument, op << ": `" << name << "` is an undefined tensor");
}

bool is_compute_dtype(DType t) { return t == DType::f32 || t == DType::f16 || t == DType::bf16; }

void check_float(const char* op, const char* name, const Tensor& t) {
  check_defined(op, name, t);
  SC_CHECK(is_compute_dtype(t.dtype()), Errc::shape_mismatch,
           op << ": `" << name << "` must be f32, f16 or bf16, found " << t.describe()
              << "; cast it with ops::cast first");
}

void check_ndim(const char* op, const char* name, const Tensor& t, int ndim, const char* layout) {
  SC_CHECK(t.ndim() == ndim, Errc::shape_mismatch,
           op << ": `" << name << "` must be " << ndim << "-D " << layout << ", found " << t.shape_str());
}

// Every input of one call lives on the first input's device.
void check_same_device(const char* op, std::initializer_list<const Tensor*> ts) {
  const Tensor* first = nullptr;
  for (const Tensor* t : ts) {
    if (!t || !t->defined()) continue;
    if (!first) {
      first = t;
      continue;
    }
    SC_CHECK(t->device() == first->device(), Errc::invalid_argument,
             op << ": inputs are on different devices (" << first->device().str() << " and " << t->device().str()
                << "); move them with ops::to_device first");
  }
}

void check_same_dtype(const char* op, std::initializer_list<const Tensor*> ts) {
  const Tensor* first = nullptr;
  for (const Tensor* t : ts) {
    if (!t || !t->defined()) continue;
    if (!first) {
      first = t;
      continue;
    }
    SC_CHECK(t->dtype() == first->dtype(), Errc::shape_mismatch,
             op << ": inputs have different dtypes (" << dtype_name(first->dtype()) << " and "
                << dtype_name(t->dtype()) << "); cast them to one dtype with ops::cast");
  }
}

// An optional per-channel parameter ([C]) of a normalisation.
void check_channel_param(const char* op, const char* name, const Tensor* p, int64_t C) {
  if (!p) return;
  check_float(op, name, *p);
  SC_CHECK(p->ndim() == 1 && p->size(0) == C, Errc::shape_mismatch,
           op << ": `" << name << "` must be [" << C << "], found " << p->shape_str());
}

void check_broadcast(const char* op, const Tensor& a, const Tensor& b) {
  const Shape& sa = a.shape();
  const Shape& sb = b.shape();
  const size_t n = std::max(sa.size(), sb.size());
  for (size_t i = 0; i < n; ++i) {
    const int64_t da = i < n - sa.size() ? 1 : sa[i - (n - sa.size())];
    const int64_t db = i < n - sb.size() ? 1 : sb[i - (n - sb.size())];
    SC_CHECK(da == db || da == 1 || db == 1, Errc::shape_mismatch,
             op << ": shapes " << a.shape_str() << " and " << b.shape_str() << " do not broadcast (dim " << i
                << ": " << da << " vs " << db << ")");
  }
}

void check_unary(const char* op, const Tensor& x) { check_float(op, "x", x); }

// shift / scale of an adaLN modulation (and a gate): [B, C], [B, 1, C] or [C] for x [B, L, C].
void check_modulation(const char* op, const char* name, const Tensor& t, int64_t B, int64_t C, const Tensor& x) {
  check_float(op, name, t);
  const Shape& s = t.shape();
  const bool ok = (s.size() == 1 && s[0] == C) || (s.size() == 2 && (s[0] == B || s[0] == 1) && s[1] == C) ||
                  (s.size() == 3 && (s[0] == B || s[0] == 1) && s[1] == 1 && s[2] == C);
  SC_CHECK(ok, Errc::shape_mismatch,
           op << ": `" << name << "` must be [" << B << ", " << C << "], [" << B << ", 1, " << C << "] or [" << C
              << "] for x " << x.shape_str() << ", found " << t.shape_str());
}

}  // namespace

// ---- linear algebra ----

namespace {
void check_linear(const char* op, const Tensor& x, const Tensor& w, const Tensor* bias) {
  check_float(op, "x", x);
  check_float(op, "w", w);
  SC_CHECK(x.ndim() >= 1, Errc::shape_mismatch, op << ": `x` must be [..., K], found a scalar");
  check_ndim(op, "w", w, 2, "[N, K]");
  SC_CHECK(w.size(1) == x.size(-1), Errc::shape_mismatch,
           op << ": x " << x.shape_str() << " has K = " << x.size(-1) << " but w " << w.shape_str()
              << " expects K = " << w.size(1) << " (w is [out, in])");
  if (bias) {
    check_float(op, "bias", *bias);
    SC_CHECK(bias->ndim() == 1 && bias->size(0) == w.size(0), Errc::shape_mismatch,
             op << ": bias must be [" << w.size(0) << "], found " << bias->shape_str());
  }
  check_same_dtype(op, {&x, &w, bias});
  check_same_device(op, {&x, &w, bias});
}
}  // namespace

Tensor linear(const Tensor& x, const Tensor& w, const Tensor* bias) {
  check_linear("linear", x, w, bias);
  SC_DISPATCH(x.device(), linear, x, w, bias);
}

Tensor linear_per_item(const Tensor& x, const Tensor& w, const Tensor* bias) {
  check_linear("linear_per_item", x, w, bias);
  SC_DISPATCH(x.device(), linear_per_item, x, w, bias);
}

Tensor linear_gelu_per_item(const Tensor& x, const Tensor& w, const Tensor* bias, bool tanh_approximation) {
  check_linear("linear_gelu_per_item", x, w, bias);
  // No fused CUDA kernel yet: the two ops, which give the same numbers.
  if (x.device().is_cuda()) return gelu(linear_per_item(x, w, bias), tanh_approximation);
  return kernels::cpu::linear_gelu_per_item(x, w, bias, tanh_approximation);
}

Tensor linear_residual_per_item(const Tensor& x, const Tensor& w, const Tensor* bias, const Tensor& residual,
                                const Tensor* gate) {
  const char* op = "linear_residual_per_item";
  check_linear(op, x, w, bias);
  check_float(op, "residual", residual);
  Shape out = x.shape();
  out.back() = w.size(0);
  SC_CHECK(residual.shape() == out, Errc::shape_mismatch,
           op << ": `residual` must have the output's shape " << shape_str(out) << ", found " << residual.shape_str());
  if (gate) {
    SC_CHECK(x.ndim() >= 2, Errc::shape_mismatch, op << ": a gate needs x as [B, ..., K], found " << x.shape_str());
    check_modulation(op, "gate", *gate, x.size(0), w.size(0), x);
  }
  check_same_dtype(op, {&x, &w, bias, &residual, gate});
  check_same_device(op, {&x, &w, bias, &residual, gate});
  if (x.device().is_cuda()) {  // no fused CUDA kernel yet: the unfused ops
    const Tensor y = linear_per_item(x, w, bias);
    if (!gate) return add(residual, y);
    Shape g(out.size(), 1);  // [B or 1, 1, ..., N] (or [N]), so it broadcasts over each item's rows
    g.back() = w.size(0);
    if (gate->numel() != w.size(0)) g[0] = gate->size(0);
    return add(residual, mul(contiguous(*gate).reshape(gate->numel() == w.size(0) ? Shape{w.size(0)} : g), y));
  }
  return kernels::cpu::linear_residual_per_item(x, w, bias, residual, gate);
}

Tensor matmul(const Tensor& a, const Tensor& b, bool trans_b) {
  check_float("matmul", "a", a);
  check_float("matmul", "b", b);
  SC_CHECK(a.ndim() == 2 || a.ndim() == 3, Errc::shape_mismatch,
           "matmul: `a` must be [M, K] or [B, M, K], found " << a.shape_str());
  SC_CHECK(b.ndim() == 2 || b.ndim() == 3, Errc::shape_mismatch,
           "matmul: `b` must be " << (trans_b ? "[N, K] or [B, N, K]" : "[K, N] or [B, K, N]") << ", found "
                                  << b.shape_str());
  const int64_t kb = trans_b ? b.size(-1) : b.size(-2);
  SC_CHECK(a.size(-1) == kb, Errc::shape_mismatch,
           "matmul: a " << a.shape_str() << " has K = " << a.size(-1) << " but b " << b.shape_str()
                        << (trans_b ? " (transposed)" : "") << " has K = " << kb);
  if (a.ndim() == 3 && b.ndim() == 3)
    SC_CHECK(a.size(0) == b.size(0) || a.size(0) == 1 || b.size(0) == 1, Errc::shape_mismatch,
             "matmul: batch sizes differ: a " << a.shape_str() << ", b " << b.shape_str());
  check_same_dtype("matmul", {&a, &b});
  check_same_device("matmul", {&a, &b});
  SC_DISPATCH(a.device(), matmul, a, b, trans_b);
}

// ---- attention ----

Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionOptions& opt) {
  check_float("attention", "q", q);
  check_float("attention", "k", k);
  check_float("attention", "v", v);
  check_ndim("attention", "q", q, 4, "[B, H, Lq, D]");
  check_ndim("attention", "k", k, 4, "[B, H, Lk, D]");
  check_ndim("attention", "v", v, 4, "[B, H, Lk, D]");
  SC_CHECK(k.size(0) == q.size(0) && k.size(1) == q.size(1) && k.size(3) == q.size(3), Errc::shape_mismatch,
           "attention: k must be [" << q.size(0) << ", " << q.size(1) << ", Lk, " << q.size(3) << "] to match q "
                                    << q.shape_str() << ", found " << k.shape_str());
  SC_CHECK(v.shape() == k.shape(), Errc::shape_mismatch,
           "attention: v must have k's shape " << k.shape_str() << ", found " << v.shape_str());
  if (const Tensor* m = opt.key_padding_mask) {
    check_defined("attention", "key_padding_mask", *m);
    SC_CHECK(m->dtype() != DType::f8_e4m3, Errc::shape_mismatch,
             "attention: key_padding_mask must be u8, i8, i32, i64 or a float dtype, found " << m->describe());
    SC_CHECK(m->ndim() == 2 && m->size(0) == q.size(0) && m->size(1) == k.size(2), Errc::shape_mismatch,
             "attention: key_padding_mask must be [" << q.size(0) << ", " << k.size(2) << "] ([B, Lk]), found "
                                                     << m->shape_str());
  }
  SC_CHECK(opt.scale == opt.scale, Errc::invalid_argument, "attention: scale is NaN");
  check_same_dtype("attention", {&q, &k, &v});
  check_same_device("attention", {&q, &k, &v, opt.key_padding_mask});
#if STAGECRAFT_HAVE_CUDA
  if (q.device().is_cuda() && opt.out_layout == AttentionLayout::tokens_first) {
    // The CUDA kernels write [B, H, Lq, D]; the permuted copy gives the layout asked for.
    AttentionOptions heads_first = opt;
    heads_first.out_layout = AttentionLayout::heads_first;
    return contiguous(kernels::cuda::attention(q, k, v, heads_first).permute({0, 2, 1, 3}));
  }
#endif
  SC_DISPATCH(q.device(), attention, q, k, v, opt);
}

// ---- normalisation and activations ----

Tensor softmax(const Tensor& x) {
  check_unary("softmax", x);
  SC_CHECK(x.ndim() >= 1, Errc::shape_mismatch, "softmax: needs at least 1 dim, found a scalar");
  SC_DISPATCH(x.device(), softmax, x);
}

Tensor layer_norm(const Tensor& x, const Tensor* weight, const Tensor* bias, float eps) {
  check_unary("layer_norm", x);
  SC_CHECK(x.ndim() >= 1 && x.size(-1) > 0, Errc::shape_mismatch,
           "layer_norm: needs a non-empty last dim, found " << x.shape_str());
  check_channel_param("layer_norm", "weight", weight, x.size(-1));
  check_channel_param("layer_norm", "bias", bias, x.size(-1));
  check_same_dtype("layer_norm", {&x, weight, bias});
  check_same_device("layer_norm", {&x, weight, bias});
  SC_DISPATCH(x.device(), layer_norm, x, weight, bias, eps);
}

Tensor group_norm(const Tensor& x, int groups, const Tensor* weight, const Tensor* bias, float eps, bool silu) {
  check_unary("group_norm", x);
  SC_CHECK(x.ndim() >= 2, Errc::shape_mismatch, "group_norm: `x` must be [N, C, ...], found " << x.shape_str());
  SC_CHECK(groups > 0 && x.size(1) % groups == 0, Errc::shape_mismatch,
           "group_norm: " << x.size(1) << " channels of " << x.shape_str() << " do not split into " << groups
                          << " groups");
  check_channel_param("group_norm", "weight", weight, x.size(1));
  check_channel_param("group_norm", "bias", bias, x.size(1));
  check_same_dtype("group_norm", {&x, weight, bias});
  check_same_device("group_norm", {&x, weight, bias});
  SC_DISPATCH(x.device(), group_norm, x, groups, weight, bias, eps, silu);
}

Tensor rms_norm(const Tensor& x, const Tensor* weight, float eps) {
  check_unary("rms_norm", x);
  SC_CHECK(x.ndim() >= 1 && x.size(-1) > 0, Errc::shape_mismatch,
           "rms_norm: needs a non-empty last dim, found " << x.shape_str());
  check_channel_param("rms_norm", "weight", weight, x.size(-1));
  check_same_dtype("rms_norm", {&x, weight});
  check_same_device("rms_norm", {&x, weight});
  SC_DISPATCH(x.device(), rms_norm, x, weight, eps);
}

Tensor gelu(const Tensor& x, bool tanh_approximation) {
  check_unary("gelu", x);
  SC_DISPATCH(x.device(), gelu, x, tanh_approximation);
}

Tensor quick_gelu(const Tensor& x) {
  check_unary("quick_gelu", x);
  SC_DISPATCH(x.device(), quick_gelu, x);
}

Tensor silu(const Tensor& x) {
  check_unary("silu", x);
  SC_DISPATCH(x.device(), silu, x);
}

// ---- element-wise ----

Tensor add(const Tensor& a, const Tensor& b) {
  check_float("add", "a", a);
  check_float("add", "b", b);
  check_broadcast("add", a, b);
  check_same_dtype("add", {&a, &b});
  check_same_device("add", {&a, &b});
  SC_DISPATCH(a.device(), add, a, b);
}

Tensor mul(const Tensor& a, const Tensor& b) {
  check_float("mul", "a", a);
  check_float("mul", "b", b);
  check_broadcast("mul", a, b);
  check_same_dtype("mul", {&a, &b});
  check_same_device("mul", {&a, &b});
  SC_DISPATCH(a.device(), mul, a, b);
}

Tensor axpby(const Tensor& a, float alpha, const Tensor& b, float beta) {
  check_float("axpby", "a", a);
  check_float("axpby", "b", b);
  check_broadcast("axpby", a, b);
  check_same_dtype("axpby", {&a, &b});
  check_same_device("axpby", {&a, &b});
  SC_DISPATCH(a.device(), axpby, a, alpha, b, beta);
}

Tensor scale(const Tensor& x, float s) {
  check_unary("scale", x);
  SC_DISPATCH(x.device(), scale, x, s);
}

Tensor modulate(const Tensor& x, const Tensor& shift, const Tensor& scale) {
  check_float("modulate", "x", x);
  check_ndim("modulate", "x", x, 3, "[B, L, C]");
  const int64_t B = x.size(0), C = x.size(2);
  check_modulation("modulate", "shift", shift, B, C, x);
  check_modulation("modulate", "scale", scale, B, C, x);
  check_same_dtype("modulate", {&x, &shift, &scale});
  check_same_device("modulate", {&x, &shift, &scale});
  SC_DISPATCH(x.device(), modulate, x, shift, scale);
}

Tensor layer_norm_modulate(const Tensor& x, const Tensor* weight, const Tensor* bias, float eps, const Tensor& shift,
                           const Tensor& scale) {
  const char* op = "layer_norm_modulate";
  check_float(op, "x", x);
  check_ndim(op, "x", x, 3, "[B, L, C]");
  const int64_t B = x.size(0), C = x.size(2);
  SC_CHECK(C > 0, Errc::shape_mismatch, op << ": needs a non-empty last dim, found " << x.shape_str());
  check_channel_param(op, "weight", weight, C);
  check_channel_param(op, "bias", bias, C);
  check_modulation(op, "shift", shift, B, C, x);
  check_modulation(op, "scale", scale, B, C, x);
  check_same_dtype(op, {&x, weight, bias, &shift, &scale});
  check_same_device(op, {&x, weight, bias, &shift, &scale});
  // No fused CUDA kernel yet: the two ops (modulate wants its rows dense there).
  if (x.device().is_cuda()) return modulate(layer_norm(x, weight, bias, eps), contiguous(shift), contiguous(scale));
  return kernels::cpu::layer_norm_modulate(x, weight, bias, eps, shift, scale);
}

// ---- convolution and resampling ----

namespace {
// conv2d's checks; `up` 2 checks the conv of x's nearest 2x upsampling (conv2d_upsample2x).
void check_conv2d(const char* op, const Tensor& x, const Tensor& w, const Tensor* bias, int stride, int padding,
                  int64_t up) {
  check_float(op, "x", x);
  check_float(op, "w", w);
  check_ndim(op, "x", x, 4, "NCHW");
  check_ndim(op, "w", w, 4, "[O, I, kh, kw]");
  SC_CHECK(w.size(1) == x.size(1), Errc::shape_mismatch,
           op << ": x " << x.shape_str() << " has " << x.size(1) << " channels but w " << w.shape_str() << " expects "
              << w.size(1));
  SC_CHECK(stride >= 1 && padding >= 0, Errc::invalid_argument,
           op << ": stride must be >= 1 and padding >= 0, found stride " << stride << ", padding " << padding);
  SC_CHECK(w.size(2) >= 1 && w.size(3) >= 1 && up * x.size(2) + 2 * padding >= w.size(2) &&
               up * x.size(3) + 2 * padding >= w.size(3),
           Errc::shape_mismatch,
           op << ": kernel " << w.shape_str() << " does not fit input " << x.shape_str()
              << (up == 2 ? " upsampled 2x" : "") << " with padding " << padding);
  if (bias) {
    check_float(op, "bias", *bias);
    SC_CHECK(bias->ndim() == 1 && bias->size(0) == w.size(0), Errc::shape_mismatch,
             op << ": bias must be [" << w.size(0) << "], found " << bias->shape_str());
  }
  check_same_dtype(op, {&x, &w, bias});
  check_same_device(op, {&x, &w, bias});
  if (x.device().is_cuda()) {
    // What the CUDA kernels implement (kernels/ops.hpp); the CPU path takes any size.
    SC_CHECK(w.size(2) == w.size(3) && (w.size(2) == 1 || w.size(2) == 3) && (stride == 1 || stride == 2),
             Errc::unsupported,
             op << " on CUDA supports 1x1 and 3x3 kernels with stride 1 or 2, found kernel " << w.size(2) << "x"
                << w.size(3) << " stride " << stride << "; run this conv on the CPU");
  }
}
}  // namespace

Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor* bias, int stride, int padding) {
  check_conv2d("conv2d", x, w, bias, stride, padding, 1);
  SC_DISPATCH(x.device(), conv2d, x, w, bias, stride, padding);
}

Tensor conv2d_upsample2x(const Tensor& x, const Tensor& w, const Tensor* bias, int stride, int padding) {
  check_conv2d("conv2d_upsample2x", x, w, bias, stride, padding, 2);
  SC_DISPATCH(x.device(), conv2d_upsample2x, x, w, bias, stride, padding);
}

Tensor upsample_nearest2x(const Tensor& x) {
  check_defined("upsample_nearest2x", "x", x);
  check_ndim("upsample_nearest2x", "x", x, 4, "NCHW");
  SC_DISPATCH(x.device(), upsample_nearest2x, x);
}

// ---- diffusion helpers ----

Tensor timestep_embedding(const Tensor& t, int dim, bool flip_sin_to_cos, float downscale_freq_shift,
                          float max_period) {
  check_float("timestep_embedding", "t", t);
  SC_CHECK(t.ndim() == 1, Errc::shape_mismatch,
           "timestep_embedding: `t` must be [B], found " << t.shape_str() << "; reshape a scalar to [1]");
  SC_CHECK(dim >= 2, Errc::invalid_argument, "timestep_embedding: dim must be >= 2, found " << dim);
  SC_CHECK(static_cast<float>(dim / 2) != downscale_freq_shift, Errc::invalid_argument,
           "timestep_embedding: downscale_freq_shift " << downscale_freq_shift << " equals dim/2 = " << dim / 2
                                                       << " and would divide by zero");
  SC_DISPATCH(t.device(), timestep_embedding, t, dim, flip_sin_to_cos, downscale_freq_shift, max_period);
}

Tensor patchify(const Tensor& x, int p) {
  check_defined("patchify", "x", x);
  check_ndim("patchify", "x", x, 4, "NCHW");
  SC_CHECK(p >= 1 && x.size(2) % p == 0 && x.size(3) % p == 0, Errc::shape_mismatch,
           "patchify: height and width of " << x.shape_str() << " must be multiples of the patch size " << p);
  SC_DISPATCH(x.device(), patchify, x, p);
}

Tensor unpatchify(const Tensor& x, int p, int channels, int height, int width) {
  check_defined("unpatchify", "x", x);
  check_ndim("unpatchify", "x", x, 3, "[B, tokens, p*p*C]");
  SC_CHECK(p >= 1 && channels >= 1 && height % p == 0 && width % p == 0, Errc::invalid_argument,
           "unpatchify: height " << height << " and width " << width << " must be multiples of the patch size " << p);
  const int64_t tokens = static_cast<int64_t>(height / p) * (width / p);
  const int64_t feat = static_cast<int64_t>(p) * p * channels;
  SC_CHECK(x.size(1) == tokens && x.size(2) == feat, Errc::shape_mismatch,
           "unpatchify: expected [" << x.size(0) << ", " << tokens << ", " << feat << "] for " << channels << "x"
                                    << height << "x" << width << " with patch " << p << ", found " << x.shape_str());
  SC_DISPATCH(x.device(), unpatchify, x, p, channels, height, width);
}

// ---- data movement ----

Tensor cast(const Tensor& x, DType dtype) {
  check_defined("cast", "x", x);
  if (x.dtype() == dtype) return x;
  SC_DISPATCH(x.device(), cast, x, dtype);
}

Tensor contiguous(const Tensor& x) {
  check_defined("contiguous", "x", x);
  if (x.is_contiguous()) return x;
  SC_DISPATCH(x.device(), contiguous, x);
}

Tensor to_device(const Tensor& x, Device device) {
  check_defined("to_device", "x", x);
  if (x.device() == device) return x;
  // Any move that touches a GPU is a CUDA copy (host<->device or device<->device).
  const Device gpu_side = x.device().is_cuda() ? x.device() : device;
  SC_DISPATCH(gpu_side, to_device, x, device);
}

Tensor cat(const std::vector<Tensor>& xs, int dim) {
  SC_CHECK(!xs.empty(), Errc::invalid_argument, "cat: needs at least one tensor");
  const Tensor& first = xs.front();
  check_defined("cat", "xs[0]", first);
  const int nd = first.ndim();
  SC_CHECK(nd >= 1, Errc::shape_mismatch, "cat: cannot concatenate scalars; unsqueeze them first");
  const int d = dim < 0 ? dim + nd : dim;
  SC_CHECK(d >= 0 && d < nd, Errc::invalid_argument, "cat: dim " << dim << " is out of range for " << nd << "-D tensors");
  for (size_t i = 0; i < xs.size(); ++i) {
    const Tensor& t = xs[i];
    check_defined("cat", "xs[i]", t);
    SC_CHECK(t.device() == first.device(), Errc::invalid_argument,
             "cat: xs[" << i << "] is on " << t.device().str() << " but xs[0] is on " << first.device().str());
    SC_CHECK(t.dtype() == first.dtype(), Errc::shape_mismatch,
             "cat: xs[" << i << "] is " << dtype_name(t.dtype()) << " but xs[0] is " << dtype_name(first.dtype()));
    bool ok = t.ndim() == nd;
    for (int k = 0; ok && k < nd; ++k) ok = k == d || t.size(k) == first.size(k);
    SC_CHECK(ok, Errc::shape_mismatch,
             "cat: xs[" << i << "] " << t.shape_str() << " must match xs[0] " << first.shape_str()
                        << " in every dim but " << d);
  }
  if (xs.size() == 1) return contiguous(first);
  SC_DISPATCH(first.device(), cat, xs, d);
}

}  // namespace stagecraft::ops
