// Sinusoidal timestep embedding, computed in the same f32 order as diffusers'
// get_timestep_embedding so that trained weights see the embedding they were trained on.
#include <cmath>

#include "kernels/cpu/common.hpp"
#include "kernels/cpu/cpu_ops.hpp"

namespace stagecraft::kernels::cpu {

Tensor timestep_embedding(const Tensor& t, int dim, bool flip_sin_to_cos, float downscale_freq_shift,
                          float max_period) {
  const int64_t B = t.numel();
  const int half = dim / 2;
  F32In tf(t);
  Tensor out = Tensor::zeros({B, dim}, DType::f32);
  float* y = out.data_as<float>();
  const float neg_log = static_cast<float>(-std::log(static_cast<double>(max_period)));
  const float denom = static_cast<float>(half) - downscale_freq_shift;
  for (int64_t b = 0; b < B; ++b) {
    for (int i = 0; i < half; ++i) {
      const float freq = std::exp(neg_log * static_cast<float>(i) / denom);
      const float arg = tf.data()[b] * freq;
      const float s = std::sin(arg), c = std::cos(arg);
      y[b * dim + i] = flip_sin_to_cos ? c : s;
      y[b * dim + half + i] = flip_sin_to_cos ? s : c;
    }
  }
  return out;
}

}  // namespace stagecraft::kernels::cpu
