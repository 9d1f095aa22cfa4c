// Nearest 2x upsampling; moves elements without converting, so any dtype is exact.
#include <cstring>
#include <memory>

#include "kernels/cpu/common.hpp"
#include "kernels/cpu/cpu_ops.hpp"

namespace stagecraft::kernels::cpu {

template <typename T>
static void upsample_rows(const T* src, T* dst, int64_t planes, int64_t H, int64_t W) {
  parallel_for(planes * H, 64, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const T* s = src + r * W;
      T* d = dst + r * 4 * W;  // input row r -> output rows 2r and 2r+1 of width 2W
      for (int64_t x = 0; x < W; ++x) d[2 * x] = d[2 * x + 1] = s[x];
      std::memcpy(d + 2 * W, d, static_cast<size_t>(2 * W) * sizeof(T));
    }
  });
}

Tensor upsample_nearest2x(const Tensor& x) {
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  Tensor src = x;
  if (!x.is_contiguous()) {
    src = Tensor::empty(x.shape(), x.dtype());
    copy_strided(strided(x), src.data());
  }
  Tensor out = Tensor::empty({N, C, 2 * H, 2 * W}, x.dtype());
  if (out.numel() == 0) return out;
  switch (dtype_size(x.dtype())) {
    case 1: upsample_rows(src.data_as<uint8_t>(), out.data_as<uint8_t>(), N * C, H, W); break;
    case 2: upsample_rows(src.data_as<uint16_t>(), out.data_as<uint16_t>(), N * C, H, W); break;
    case 4: upsample_rows(src.data_as<uint32_t>(), out.data_as<uint32_t>(), N * C, H, W); break;
    default: upsample_rows(src.data_as<uint64_t>(), out.data_as<uint64_t>(), N * C, H, W); break;
  }
  return out;
}

}  // namespace stagecraft::kernels::cpu
