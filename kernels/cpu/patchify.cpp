// patchify / unpatchify are pure permutations: each is one strided copy of a view, so
// they are exact in every dtype.
#include "kernels/cpu/common.hpp"
#include "kernels/cpu/cpu_ops.hpp"

namespace stagecraft::kernels::cpu {

Tensor patchify(const Tensor& x, int p) {
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t h = H / p, w = W / p;
  const Shape& s = x.strides();
  // [B, h, w, C, py, px] over the NCHW input.
  Strided v{x.data(), x.dtype(), {B, h, w, C, p, p}, {s[0], s[2] * p, s[3] * p, s[1], s[2], s[3]}};
  Tensor out = Tensor::empty({B, h * w, C * p * p}, x.dtype());
  copy_strided(v, out.data());
  return out;
}

Tensor unpatchify(const Tensor& x, int p, int channels, int height, int width) {
  const int64_t B = x.size(0), C = channels, h = height / p, w = width / p;
  const Shape& s = x.strides();
  // Input tokens are [B, h, w, py, px, C]; the output walks them as [B, C, h, py, w, px].
  Strided v{x.data(), x.dtype(), {B, C, h, p, w, p}, {s[0], s[2], s[1] * w, s[2] * p * C, s[1], s[2] * C}};
  Tensor out = Tensor::empty({B, C, static_cast<int64_t>(height), static_cast<int64_t>(width)}, x.dtype());
  copy_strided(v, out.data());
  return out;
}

}  // namespace stagecraft::kernels::cpu
