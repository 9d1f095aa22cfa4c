#pragma once
// x.clamp(lo, hi) for DDIM's clip_sample. kernels/ops.hpp has no clamp op, so the
// (small, per-job) latent makes a round trip through the host; results are the same
// on every device because clamping is exact. Replace with ops::clamp if one is added.
#include "core/tensor.hpp"

namespace stagecraft {

Tensor clamp_values(const Tensor& x, float lo, float hi);

}  // namespace stagecraft
