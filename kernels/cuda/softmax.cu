// Public wrapper for softmax (kernels/cuda/cuda_ops.hpp).
#include "kernels/cuda/cuda_ops.hpp"
#include "kernels/cuda/softmax.cuh"

namespace stagecraft::kernels::cuda {

Tensor softmax(const Tensor& x_in) {
  require_cuda(x_in, "softmax", "x");
  SC_CHECK(x_in.ndim() >= 1, Errc::shape_mismatch, "softmax wants at least 1 dim, got a scalar");
  DeviceGuard g(x_in.device());
  const Tensor x = contig(x_in);
  Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
  const int64_t C = x.size(-1), rows = C == 0 ? 0 : x.numel() / C;
  dispatch_float(x.dtype(), "softmax", [&](auto tag) {
    using T = decltype(tag);
    softmax<T>(out.data_as<T>(), x.data_as<const T>(), rows, C, stream());
  });
  return out;
}

}  // namespace stagecraft::kernels::cuda
