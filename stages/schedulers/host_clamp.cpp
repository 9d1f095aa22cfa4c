// clamp_values: see host_clamp.hpp.
#include "stages/schedulers/host_clamp.hpp"

#include <algorithm>

#include "kernels/ops.hpp"

namespace stagecraft {

Tensor clamp_values(const Tensor& x, float lo, float hi) {
  Tensor h = ops::to_device(x, Device::cpu()).contiguous().to(DType::f32).clone();
  float* p = h.data_as<float>();
  for (int64_t i = 0, n = h.numel(); i < n; ++i) p[i] = std::clamp(p[i], lo, hi);
  Tensor back = h.to(x.dtype());
  return x.device().is_cpu() ? back : ops::to_device(back, x.device());
}

}  // namespace stagecraft
