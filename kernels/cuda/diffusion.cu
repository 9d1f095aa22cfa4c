// Public wrappers for timestep_embedding, patchify, unpatchify and
// upsample_nearest2x (kernels/cuda/cuda_ops.hpp).
#include <cmath>

#include "kernels/cuda/cuda_ops.hpp"
#include "kernels/cuda/diffusion.cuh"

namespace stagecraft::kernels::cuda {

Tensor timestep_embedding(const Tensor& t_in, int dim, bool flip_sin_to_cos, float downscale_freq_shift,
                          float max_period) {
  require_cuda(t_in, "timestep_embedding", "t");
  SC_CHECK(t_in.ndim() == 1, Errc::shape_mismatch, "timestep_embedding wants t [B], got " << t_in.shape_str());
  SC_CHECK(dim >= 2, Errc::invalid_argument, "timestep_embedding: dim must be >= 2, got " << dim);
  DeviceGuard g(t_in.device());
  const Tensor t = contig(t_in);
  Tensor out = Tensor::empty({t.size(0), dim}, DType::f32, t.device());
  const int64_t n = out.numel();
  if (n == 0) return out;
  const float neg_log = static_cast<float>(-std::log(static_cast<double>(max_period)));
  timestep_embedding_kernel<<<grid_for(n), 256, 0, stream()>>>(out.data_as<float>(), t.data(),
                                                               dtype_code(t.dtype()), t.size(0), dim,
                                                               flip_sin_to_cos, neg_log,
                                                               static_cast<float>(dim / 2) - downscale_freq_shift);
  SC_CUDA_CHECK_LAUNCH();
  return out;
}

Tensor patchify(const Tensor& x_in, int p) {
  require_cuda(x_in, "patchify", "x");
  SC_CHECK(x_in.ndim() == 4 && p >= 1 && x_in.size(2) % p == 0 && x_in.size(3) % p == 0, Errc::shape_mismatch,
           "patchify wants x [B, C, H, W] with H and W divisible by p = " << p << ", got " << x_in.shape_str());
  DeviceGuard g(x_in.device());
  const Tensor x = contig(x_in);
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  Tensor out = Tensor::empty({B, (H / p) * (W / p), C * p * p}, x.dtype(), x.device());
  dispatch_bytes(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    patchify<T>(out.data_as<T>(), x.data_as<const T>(), B, C, H, W, p, stream());
  });
  return out;
}

Tensor unpatchify(const Tensor& x_in, int p, int channels, int height, int width) {
  require_cuda(x_in, "unpatchify", "x");
  SC_CHECK(p >= 1 && height % p == 0 && width % p == 0, Errc::invalid_argument,
           "unpatchify: height " << height << " and width " << width << " must be divisible by p = " << p);
  const int64_t tokens = static_cast<int64_t>(height / p) * (width / p), K = static_cast<int64_t>(p) * p * channels;
  SC_CHECK(x_in.ndim() == 3 && x_in.size(1) == tokens && x_in.size(2) == K, Errc::shape_mismatch,
           "unpatchify wants x [B, " << tokens << ", " << K << "], got " << x_in.shape_str());
  DeviceGuard g(x_in.device());
  const Tensor x = contig(x_in);
  const int64_t B = x.size(0);
  Tensor out = Tensor::empty({B, channels, height, width}, x.dtype(), x.device());
  dispatch_bytes(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    unpatchify<T>(out.data_as<T>(), x.data_as<const T>(), B, channels, height, width, p, stream());
  });
  return out;
}

Tensor upsample_nearest2x(const Tensor& x_in) {
  require_cuda(x_in, "upsample_nearest2x", "x");
  SC_CHECK(x_in.ndim() == 4, Errc::shape_mismatch, "upsample_nearest2x wants NCHW, got " << x_in.shape_str());
  DeviceGuard g(x_in.device());
  const Tensor x = contig(x_in);
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  Tensor out = Tensor::empty({N, C, 2 * H, 2 * W}, x.dtype(), x.device());
  dispatch_bytes(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    upsample_nearest2x<T>(out.data_as<T>(), x.data_as<const T>(), N * C, H, W, stream());
  });
  return out;
}

}  // namespace stagecraft::kernels::cuda
