#pragma once
// The fixed 2-D sin-cos position table of PixArt's patch embedding, computed as
// diffusers' get_2d_sincos_pos_embed does, so a checkpoint trained there sees
// the same positions here. It is a constant (like a weight), built once per
// latent size on the host and then cached by the caller.
//
//   // 32x32 latent, patch 2, sample_size 64: base_size = 64 / 2 = 32
//   std::vector<float> pos = sincos_pos_embed_2d(1152, 16, 16, 32, 1.0);  // [256 * 1152]
#include <vector>

namespace stagecraft {

/// Row-major [grid_h * grid_w, embed_dim] table; token t = row * grid_w + col.
/// The first embed_dim/2 channels encode the column, the rest the row (diffusers'
/// meshgrid puts w first); each half is [sin(pos·ω), cos(pos·ω)] with
/// ω_k = 10000^(-k / (embed_dim/4)) and pos = index / (grid / base_size) / interpolation_scale.
/// embed_dim must be a multiple of 4 (Error(invalid_argument) otherwise).
std::vector<float> sincos_pos_embed_2d(int embed_dim, int grid_h, int grid_w, int base_size,
                                       double interpolation_scale);

}  // namespace stagecraft
