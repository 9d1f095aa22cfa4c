// dtype conversion. Float sources go through f32 (exact for f16/bf16/e4m3); integer
// sources through double so i32/i64 values survive; float -> int truncates and saturates.
#include <memory>

#include "kernels/cpu/common.hpp"
#include "kernels/cpu/cpu_ops.hpp"

namespace stagecraft::kernels::cpu {

Tensor cast(const Tensor& x, DType dtype) {
  if (x.dtype() == dtype) return x;
  Tensor out = Tensor::empty(x.shape(), dtype);
  const int64_t n = x.numel();
  if (n == 0) return out;
  if (is_floating(x.dtype())) {
    F32In in(x);
    parallel_for(n, 65536, [&](int64_t b, int64_t e) {
      from_f32(in.data() + b, static_cast<char*>(out.data()) + b * dtype_size(dtype), dtype, e - b);
    });
    return out;
  }
  Tensor src = x;
  if (!x.is_contiguous()) {
    src = Tensor::empty(x.shape(), x.dtype());
    copy_strided(strided(x), src.data());
  }
  for (int64_t i = 0; i < n; ++i) store_scalar(out.data(), i, dtype, load_scalar(src.data(), i, x.dtype()));
  return out;
}

}  // namespace stagecraft::kernels::cpu
