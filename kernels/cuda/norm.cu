// Public wrappers for layer_norm, rms_norm and group_norm (kernels/cuda/cuda_ops.hpp).
#include "kernels/cuda/cuda_ops.hpp"
#include "kernels/cuda/norm.cuh"

namespace stagecraft::kernels::cuda {
namespace {

/// A contiguous affine parameter of C elements, or an undefined tensor for "none".
Tensor param(const Tensor* p, int64_t C, const char* op, const char* what) {
  if (!p || !p->defined()) return {};
  require_cuda(*p, op, what);
  SC_CHECK(p->numel() == C, Errc::shape_mismatch,
           op << ": " << what << " must have " << C << " elements, got " << p->shape_str());
  SC_CHECK(is_floating(p->dtype()), Errc::shape_mismatch, op << ": " << what << " must be a float tensor");
  return contig(*p);
}

const void* ptr(const Tensor& t) { return t.defined() ? t.data() : nullptr; }
DType dt(const Tensor& t) { return t.defined() ? t.dtype() : DType::f32; }

Tensor row_norm_op(const Tensor& x_in, const Tensor* weight, const Tensor* bias, float eps, bool rms,
                   const char* name) {
  require_cuda(x_in, name, "x");
  SC_CHECK(x_in.ndim() >= 1, Errc::shape_mismatch, name << " wants at least 1 dim");
  DeviceGuard g(x_in.device());
  const Tensor x = contig(x_in);
  const int64_t C = x.size(-1), rows = C == 0 ? 0 : x.numel() / C;
  const Tensor w = param(weight, C, name, "weight"), b = param(bias, C, name, "bias");
  Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
  dispatch_float(x.dtype(), name, [&](auto tag) {
    using T = decltype(tag);
    row_norm<T>(out.data_as<T>(), x.data_as<const T>(), rows, C, ptr(w), dt(w), ptr(b), dt(b), eps, rms, stream());
  });
  return out;
}

}  // namespace

Tensor layer_norm(const Tensor& x, const Tensor* weight, const Tensor* bias, float eps) {
  return row_norm_op(x, weight, bias, eps, false, "layer_norm");
}

Tensor rms_norm(const Tensor& x, const Tensor* weight, float eps) {
  return row_norm_op(x, weight, nullptr, eps, true, "rms_norm");
}

Tensor group_norm(const Tensor& x_in, int groups, const Tensor* weight, const Tensor* bias, float eps, bool silu) {
  require_cuda(x_in, "group_norm", "x");
  SC_CHECK(x_in.ndim() >= 2, Errc::shape_mismatch, "group_norm wants x [N, C, ...], got " << x_in.shape_str());
  const int64_t N = x_in.size(0), C = x_in.size(1);
  SC_CHECK(groups > 0 && C % groups == 0, Errc::invalid_argument,
           "group_norm: " << C << " channels do not split into " << groups << " groups");
  DeviceGuard g(x_in.device());
  const Tensor x = contig(x_in);
  const int64_t HW = N * C == 0 ? 0 : x.numel() / (N * C);
  const Tensor w = param(weight, C, "group_norm", "weight"), b = param(bias, C, "group_norm", "bias");
  Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
  if (x.numel() == 0) return out;
  const size_t scratch_bytes = group_norm_scratch_bytes(N, groups, (C / groups) * HW);
  Tensor scratch = Tensor::empty({static_cast<int64_t>(scratch_bytes)}, DType::u8, x.device());
  dispatch_float(x.dtype(), "group_norm", [&](auto tag) {
    using T = decltype(tag);
    group_norm<T>(out.data_as<T>(), x.data_as<const T>(), N, C, HW, groups, ptr(w), dt(w), ptr(b), dt(b), eps, silu,
                  scratch.data(), stream());
  });
  return out;
}

}  // namespace stagecraft::kernels::cuda
