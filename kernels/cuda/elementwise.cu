// Public wrappers for the element-wise ops (kernels/cuda/cuda_ops.hpp).
#include "kernels/cuda/cuda_ops.hpp"
#include "kernels/cuda/elementwise.cuh"

namespace stagecraft::kernels::cuda {
namespace {

/// numpy broadcasting of two shapes; names the op in the error.
Shape broadcast_shape(const Shape& a, const Shape& b, const char* op) {
  const size_t nd = std::max(a.size(), b.size());
  SC_CHECK(nd <= static_cast<size_t>(kMaxDims), Errc::unsupported, op << ": more than " << kMaxDims << " dims");
  Shape out(nd);
  for (size_t i = 0; i < nd; ++i) {
    const int64_t da = i < nd - a.size() ? 1 : a[i - (nd - a.size())];
    const int64_t db = i < nd - b.size() ? 1 : b[i - (nd - b.size())];
    SC_CHECK(da == db || da == 1 || db == 1, Errc::shape_mismatch,
             op << ": shapes " << shape_str(a) << " and " << shape_str(b) << " do not broadcast");
    out[i] = da == 1 ? db : da;
  }
  return out;
}

/// Strides of `t` aligned right to `shape`, 0 on broadcast dims.
Shape broadcast_strides(const Tensor& t, const Shape& shape) {
  const size_t nd = shape.size(), off = nd - t.shape().size();
  Shape s(nd, 0);
  for (size_t i = off; i < nd; ++i) s[i] = t.shape()[i - off] == 1 ? 0 : t.strides()[i - off];
  return s;
}

Tensor binary_op(const Tensor& a, const Tensor& b, BinaryOp op, float alpha, float beta, const char* name) {
  require_cuda(a, name, "a");
  require_cuda(b, name, "b");
  SC_CHECK(a.dtype() == b.dtype(), Errc::shape_mismatch,
           name << ": dtypes differ (" << dtype_name(a.dtype()) << " vs " << dtype_name(b.dtype())
                << "); cast one input first");
  SC_CHECK(a.device() == b.device(), Errc::invalid_argument, name << ": inputs on different devices");
  DeviceGuard g(a.device());
  const Shape shape = broadcast_shape(a.shape(), b.shape(), name);
  Tensor out = Tensor::empty(shape, a.dtype(), a.device());
  const int64_t n = out.numel();
  Strided2 idx;  // nd == 0: both flat
  if (!(a.shape() == shape && b.shape() == shape && a.is_contiguous() && b.is_contiguous()))
    idx = make_strided2(shape, broadcast_strides(a, shape), broadcast_strides(b, shape));
  dispatch_float(a.dtype(), name, [&](auto tag) {
    using T = decltype(tag);
    binary<T>(out.data_as<T>(), a.data_as<const T>(), b.data_as<const T>(), idx, n, op, alpha, beta, stream());
  });
  return out;
}

Tensor unary_op(const Tensor& x_in, UnaryOp op, float s, const char* name) {
  require_cuda(x_in, name, "x");
  DeviceGuard g(x_in.device());
  const Tensor x = contig(x_in);
  Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
  dispatch_float(x.dtype(), name, [&](auto tag) {
    using T = decltype(tag);
    unary<T>(out.data_as<T>(), x.data_as<const T>(), x.numel(), op, s, stream());
  });
  return out;
}

}  // namespace

Tensor add(const Tensor& a, const Tensor& b) { return binary_op(a, b, BinaryOp::add, 1.0f, 1.0f, "add"); }
Tensor mul(const Tensor& a, const Tensor& b) { return binary_op(a, b, BinaryOp::mul, 1.0f, 1.0f, "mul"); }
Tensor axpby(const Tensor& a, float alpha, const Tensor& b, float beta) {
  return binary_op(a, b, BinaryOp::axpby, alpha, beta, "axpby");
}
Tensor scale(const Tensor& x, float s) { return unary_op(x, UnaryOp::scale, s, "scale"); }
Tensor gelu(const Tensor& x, bool tanh_approximation) {
  return unary_op(x, tanh_approximation ? UnaryOp::gelu_tanh : UnaryOp::gelu, 0.0f, "gelu");
}
Tensor quick_gelu(const Tensor& x) { return unary_op(x, UnaryOp::quick_gelu, 0.0f, "quick_gelu"); }
Tensor silu(const Tensor& x) { return unary_op(x, UnaryOp::silu, 0.0f, "silu"); }

Tensor modulate(const Tensor& x_in, const Tensor& shift_in, const Tensor& scale_in) {
  require_cuda(x_in, "modulate", "x");
  require_cuda(shift_in, "modulate", "shift");
  require_cuda(scale_in, "modulate", "scale");
  SC_CHECK(x_in.ndim() >= 2, Errc::shape_mismatch, "modulate wants x [B, L, C], got " << x_in.shape_str());
  DeviceGuard g(x_in.device());
  const Tensor x = contig(x_in), shift = contig(shift_in), sc = contig(scale_in);
  const int64_t B = x.size(0), C = x.size(-1), L = B * C == 0 ? 0 : x.numel() / (B * C);
  auto per_batch = [&](const Tensor& p, const char* what) {
    if (p.numel() == C) return false;  // [C], [1, C], [1, 1, C]: shared by every batch (as on the CPU)
    SC_CHECK(p.numel() == B * C && p.size(-1) == C && p.size(0) == B, Errc::shape_mismatch,
             "modulate: " << what << " must be [B, C], [B, 1, C] or [C] for x " << x.shape_str() << ", got "
                          << p.shape_str());
    return true;
  };
  const bool shift_pb = per_batch(shift, "shift"), scale_pb = per_batch(sc, "scale");
  Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
  dispatch_float(x.dtype(), "modulate", [&](auto tag) {
    using T = decltype(tag);
    modulate<T>(out.data_as<T>(), x.data_as<const T>(), shift.data(), shift.dtype(), shift_pb, sc.data(), sc.dtype(),
                scale_pb, B, L, C, stream());
  });
  return out;
}

}  // namespace stagecraft::kernels::cuda
