#include "stages/dit/pos_embed.hpp"

#include <cmath>

#include "core/error.hpp"

namespace stagecraft {

namespace {

// diffusers builds the grid in float32 (arange / (grid / base) / scale) and only then
// widens to float64 for the outer product; repeat that rounding order.
float grid_position(int index, int grid, int base_size, double interpolation_scale) {
  const float step = static_cast<float>(static_cast<double>(grid) / static_cast<double>(base_size));
  return static_cast<float>(static_cast<float>(index) / step) / static_cast<float>(interpolation_scale);
}

}  // namespace

std::vector<float> sincos_pos_embed_2d(int embed_dim, int grid_h, int grid_w, int base_size,
                                       double interpolation_scale) {
  SC_CHECK(embed_dim > 0 && embed_dim % 4 == 0, Errc::invalid_argument,
           "the 2-D sin-cos position embedding needs a width divisible by 4, got " << embed_dim
               << ": use num_attention_heads * attention_head_dim divisible by 4");
  SC_CHECK(grid_h > 0 && grid_w > 0 && base_size > 0 && interpolation_scale > 0, Errc::invalid_argument,
           "position grid " << grid_h << "x" << grid_w << " with base size " << base_size << " and scale "
                            << interpolation_scale << " is not positive");
  const int half = embed_dim / 2;     // one half per axis
  const int quarter = embed_dim / 4;  // sin and cos per half
  std::vector<double> omega(quarter);
  for (int k = 0; k < quarter; ++k) omega[k] = 1.0 / std::pow(10000.0, static_cast<double>(k) / quarter);

  std::vector<float> out(static_cast<size_t>(grid_h) * grid_w * embed_dim);
  for (int r = 0; r < grid_h; ++r) {
    const double pr = grid_position(r, grid_h, base_size, interpolation_scale);
    for (int c = 0; c < grid_w; ++c) {
      const double pc = grid_position(c, grid_w, base_size, interpolation_scale);
      float* row = out.data() + (static_cast<size_t>(r) * grid_w + c) * embed_dim;
      for (int k = 0; k < quarter; ++k) {
        row[k] = static_cast<float>(std::sin(pc * omega[k]));
        row[quarter + k] = static_cast<float>(std::cos(pc * omega[k]));
        row[half + k] = static_cast<float>(std::sin(pr * omega[k]));
        row[half + quarter + k] = static_cast<float>(std::cos(pr * omega[k]));
      }
    }
  }
  return out;
}

}  // namespace stagecraft
