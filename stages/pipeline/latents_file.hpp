#pragma once
// Supplied initial noise (`--latents FILE` of `stagecraft generate` and `stagecraft run`):
// the one place that reads and checks such a file, so both commands accept and refuse
// exactly the same files. docs/numerics.md describes the format:
//
//   a safetensors file with exactly ONE tensor, named "latents",
//   shape [N, C, H/s, W/s] (N = jobs: 1 for generate, --n for run; C = the VAE's
//   latent_channels; s = the VAE's scale factor 2^(len(block_out_channels)-1)),
//   dtype f32, f16 or bf16.
//
// The values replace the seeded noise before anything else touches it: they are
// scaled by the scheduler's init_noise_sigma exactly as seeded noise is (1.0 for all
// schedulers here, so the values are used as stored) and cast to the compute dtype.
//
//   const LatentGeometry g = latent_geometry("models/tiny-shapes");
//   Tensor all = read_latents_file("noise.safetensors", g, 2, 32, 32);   // e.g. f32 [2, C, 4, 4]
//   request.initial_latents = latents_row(all, 1);                                     // f32 [1, C, h, w]
#include <string>

#include "core/tensor.hpp"

namespace stagecraft {

/// The tensor name a latents file must use.
inline constexpr const char* kLatentsTensorName = "latents";

/// What decides the latent shape of a model, read from its folder's configs without
/// loading weights (the same values TextToImagePipeline::load derives).
struct LatentGeometry {
  int64_t channels = 4;           ///< vae/config.json latent_channels
  int scale = 8;                  ///< pixels per latent cell: 2^(len(block_out_channels) - 1)
  int default_width = 0;          ///< stagecraft.json defaults, else transformer sample_size × scale
  int default_height = 0;
  /// [n, channels, height/scale, width/scale]; width/height 0 take the defaults.
  Shape shape(int64_t n, int width, int height) const;
};

/// Reads the geometry of the diffusers folder `model_dir` (Error naming the file when a config is missing).
LatentGeometry latent_geometry(const std::string& model_dir);

/// Reads `path` and checks it against g.shape(n, width, height) (width/height 0: the model's
/// defaults). Returns the tensor as stored (f32, f16 or bf16), copied to host memory that
/// does not depend on the file. Error(invalid_argument / shape_mismatch / not_found) saying
/// what was expected when the file is missing or holds another name, more than one tensor,
/// another shape or another dtype.
Tensor read_latents_file(const std::string& path, const LatentGeometry& g, int64_t n, int width, int height);

/// Row `i` of [N, C, h, w] latents as its own contiguous [1, C, h, w] tensor (one job's noise).
Tensor latents_row(const Tensor& latents, int64_t i);

}  // namespace stagecraft
