// Public wrappers for conv2d and conv2d_upsample2x (kernels/cuda/cuda_ops.hpp).
#include "kernels/cuda/conv2d.cuh"
#include "kernels/cuda/cuda_ops.hpp"
#include "kernels/cuda/gemm.cuh"

namespace stagecraft::kernels::cuda {

Tensor conv2d(const Tensor& x_in, const Tensor& w_in, const Tensor* bias, int stride, int padding) {
  require_cuda(x_in, "conv2d", "x");
  require_cuda(w_in, "conv2d", "w");
  SC_CHECK(x_in.ndim() == 4 && w_in.ndim() == 4 && x_in.size(1) == w_in.size(1), Errc::shape_mismatch,
           "conv2d wants x [N, C, H, W] and w [O, C, kh, kw], got " << x_in.shape_str() << " and "
                                                                    << w_in.shape_str());
  SC_CHECK(x_in.dtype() == w_in.dtype(), Errc::shape_mismatch,
           "conv2d: x is " << dtype_name(x_in.dtype()) << " but w is " << dtype_name(w_in.dtype()));
  SC_CHECK(stride >= 1 && padding >= 0, Errc::invalid_argument,
           "conv2d: stride must be >= 1 and padding >= 0, got " << stride << ", " << padding);
  DeviceGuard g(x_in.device());
  const Tensor x = contig(x_in), w = contig(w_in);
  ConvShape s{x.size(0), x.size(1), x.size(2), x.size(3), w.size(0), w.size(2), w.size(3), stride, padding, 0, 0};
  s.Ho = (s.H + 2 * s.pad - s.kh) / s.stride + 1;
  s.Wo = (s.W + 2 * s.pad - s.kw) / s.stride + 1;
  SC_CHECK(s.H + 2 * s.pad >= s.kh && s.W + 2 * s.pad >= s.kw, Errc::shape_mismatch,
           "conv2d: kernel " << s.kh << "x" << s.kw << " larger than the padded input " << x.shape_str());
  Tensor y = Tensor::empty({s.N, s.O, s.Ho, s.Wo}, x.dtype(), x.device());
  const int64_t P = s.Ho * s.Wo, IKK = s.C * s.kh * s.kw;
  const size_t es = dtype_size(x.dtype());
  if (y.numel() == 0) return y;
  const bool direct = s.kh == 1 && s.kw == 1 && s.stride == 1 && s.pad == 0;
  const int64_t per_image = IKK * P * static_cast<int64_t>(es);
  const int64_t chunk = direct ? s.N : std::clamp<int64_t>(static_cast<int64_t>(kConvColBytes) / per_image, 1, s.N);
  Tensor col;
  if (!direct) col = Tensor::empty({chunk * IKK * P}, x.dtype(), x.device());
  for (int64_t n0 = 0; n0 < s.N; n0 += chunk) {
    const int64_t nb = std::min(chunk, s.N - n0);
    const char* xin = static_cast<const char*>(x.data()) + static_cast<size_t>(n0 * s.C * s.H * s.W) * es;
    const void* A = xin;
    if (!direct) {
      dispatch_float(x.dtype(), "conv2d", [&](auto tag) {
        using T = decltype(tag);
        im2col<T>(col.data_as<T>(), reinterpret_cast<const T*>(xin), s, nb, stream());
      });
      A = col.data();
    }
    // Row-major y[n][O, P] = w[O, IKK] · col[n][IKK, P]  <=>  column-major yᵀ[P, O] = colᵀ · wᵀ.
    char* yout = static_cast<char*>(y.data()) + static_cast<size_t>(n0 * s.O * P) * es;
    gemm_strided_batched(false, false, P, s.O, IKK, 1.0f, A, P, IKK * P, w.data(), IKK, 0, x.dtype(), 0.0f, yout, P,
                         s.O * P, y.dtype(), nb, stream());
  }
  if (bias && bias->defined()) {
    require_cuda(*bias, "conv2d", "bias");
    SC_CHECK(bias->numel() == s.O, Errc::shape_mismatch,
             "conv2d: bias must have " << s.O << " elements, got " << bias->shape_str());
    const Tensor b = contig(*bias);
    dispatch_float(y.dtype(), "conv2d", [&](auto tag) {
      using T = decltype(tag);
      add_bias<T>(y.data_as<T>(), b.data(), b.dtype(), y.numel(), s.O, P, stream());
    });
  }
  return y;
}

// The CPU folds the upsample into its Winograd gather; here the upsampled map is
// materialised and convolved (the same numbers as the two ops, on every backend).
Tensor conv2d_upsample2x(const Tensor& x, const Tensor& w, const Tensor* bias, int stride, int padding) {
  return conv2d(upsample_nearest2x(x), w, bias, stride, padding);
}

}  // namespace stagecraft::kernels::cuda
