#pragma once
// PixArtTransformer2DModel (diffusers) as a plain compute class: the same
// parameter names, config keys and numbers, so a real PixArt-α/Σ transformer/
// folder loads and predicts what diffusers predicts.
//
// The forward pass: patch embedding (a stride-p conv written as patchify + linear)
// plus the 2-D sin-cos position table for the actual latent size; AdaLayerNormSingle
// turns the timestep into a 6·D modulation shared by all blocks; the caption goes
// through a 2-layer GELU(tanh) projection; every block does
//   x += gate_msa · SelfAttn(LN(x)·(1+scale_msa) + shift_msa)
//   x += CrossAttn(x, caption, caption_mask)          (PixArt skips norm2 here)
//   x += gate_mlp · FF(LN(x)·(1+scale_mlp) + shift_mlp)
// with shift/scale/gate = block.scale_shift_table + t; then the final adaLN
// (scale_shift_table [2, D] + embedded timestep), proj_out and unpatchify. When the
// model predicts a learned variance (out_channels == 2·in_channels) only the first
// in_channels are returned, as PixArt pipelines do.
//
//   auto dit = PixArtTransformer::load("models/tiny-shapes/transformer", DType::f32, Device::cpu());
//   Tensor eps = dit.forward(latents /*[B,4,32,32]*/, t /*[B] f32*/, prompt_embeds /*[B,L,Dc]*/, &mask);
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/device.hpp"
#include "core/dtype.hpp"
#include "core/tensor.hpp"
#include "stages/dit/text_kv_cache.hpp"

namespace stagecraft {

/// Largest transformer sample_size (latent cells per side) a config may give: far above
/// PixArt's 128, and small enough that size x VAE scale fits an int with room to spare.
inline constexpr int kMaxPixArtSampleSize = 16384;

/// The pixel size of the image being generated. PixArt-α's 1024-px model (sample_size 128,
/// use_additional_conditions) is conditioned on it (resolution (h, w) and aspect ratio h / w);
/// other PixArt models ignore it.
struct PixArtImageSize {
  int height = 0;
  int width = 0;
};

class PixArtTransformer {
 public:
  /// Reads `dir`/config.json and the weights (any of f32/f16/bf16, cast to `compute`)
  /// onto `device`. Every parameter's shape is checked against the config, and a
  /// parameter the architecture does not use is an error: both name the parameter.
  /// Error(unsupported) for configs this class does not implement (norm_type other than
  /// ada_norm_single, only_cross_attention, double_self_attention, unknown activation).
  static PixArtTransformer load(const std::string& dir, DType compute, Device device);

  /// latents [B, in_channels, H, W] (H, W multiples of patch_size); timestep [B] or [1]
  /// (f32, the scheduler's model-input timestep, e.g. 0..999); text [B, L, caption_channels];
  /// text_mask [B, L] (nonzero = real token) or nullptr. Inputs may live on the host or on
  /// the model's device and have any float dtype. `image_size` feeds the size conditioning of
  /// models that have it; when null they get latent size × 8 (what diffusers' PixArt pipeline
  /// passes: its VAE scale factor is 8). Returns [B, in_channels, H, W] in the compute dtype on
  /// the model's device.
  Tensor forward(const Tensor& latents, const Tensor& timestep, const Tensor& text, const Tensor* text_mask,
                 const PixArtImageSize* image_size = nullptr) const;
  /// The cross-attention keys and values of recent texts (CPU; stages/dit/text_kv_cache.hpp),
  /// shared by copies of this model. Clearing it makes the next call compute them again, as a
  /// benchmark of one call against another implementation must.
  TextKvCache& text_kv_cache() const { return *text_kv_; }
  /// True for checkpoints with resolution/aspect-ratio conditioning (PixArt-α 1024).
  bool uses_size_conditioning() const { return size_conditioning_; }

  const nlohmann::json& config() const { return config_; }
  int in_channels() const { return in_channels_; }
  int out_channels() const { return out_channels_; }  ///< as stored (2·in with learned sigma)
  int patch_size() const { return patch_; }
  int hidden_size() const { return dim_; }
  int caption_channels() const { return caption_channels_; }
  int sample_size() const { return sample_size_; }  ///< latent cells per side the model was trained at
  DType dtype() const { return dtype_; }
  Device device() const { return device_; }

  struct Linear {
    Tensor w, b;  // b may be undefined
  };
  struct Block {
    Tensor scale_shift_table;  // [6, D]
    Tensor norm1_w, norm1_b, norm2_w, norm2_b;  // only with norm_elementwise_affine
    // to_q, to_k and to_v stacked as one [3D, D] projection, and the cross-attention's to_k
    // and to_v as one [2D, C]: one GEMM (one pass over its input, one parallel region)
    // instead of three or two; each output's bits are those of its own projection.
    Linear qkv1, o1;  // self-attention
    Linear q2, kv2, o2;  // cross-attention
    Linear ff_in, ff_out;
  };

 private:
  /// residual + gate ⊙ o(attention(q, k, v)) for projected queries, keys and values as
  /// [B, H, L, Dh] views (heads()); no gate means 1. The residual is added in the output
  /// projection's epilogue.
  Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, const Linear& o, const Tensor* key_mask,
                   const Tensor& residual, const Tensor* gate) const;
  /// Every block's cross-attention keys and values for a batch's text: on the CPU, per
  /// distinct text of the batch, from the cache or computed (caption projection, then each
  /// block's kv2) and cached; elsewhere the projected text, each block's computed at its turn.
  struct CrossKv {
    std::vector<std::shared_ptr<const TextKvCache::Rows>> rows;  ///< per distinct text
    std::vector<int64_t> of_item;  ///< the distinct text of each item
    Tensor projected;              ///< [B, L, D], off the CPU
  };
  CrossKv cross_kv(const Tensor& context, const Tensor& mask) const;
  /// Block `block`'s keys and values side by side, [B, L, 2D].
  Tensor cross_kv_at(const CrossKv& kv, size_t block) const;
  /// Projection i of t [B, L, n·D] (n projections side by side) as a [B, H, L, Dh] view.
  Tensor heads(const Tensor& t, int n, int i) const;
  /// residual + gate ⊙ feed_forward(x), likewise fused.
  Tensor feed_forward(const Block& blk, const Tensor& x, const Tensor& residual, const Tensor& gate) const;
  Tensor position_table(int grid_h, int grid_w) const;
  Tensor size_embedding(int64_t batch, const PixArtImageSize& size) const;

  nlohmann::json config_;
  DType dtype_ = DType::f32;
  Device device_;
  int in_channels_ = 0, out_channels_ = 0, patch_ = 0, dim_ = 0, heads_ = 0, head_dim_ = 0;
  int caption_channels_ = 0, cross_dim_ = 0, sample_size_ = 0;
  double interpolation_scale_ = 1.0;
  float norm_eps_ = 1e-6f;
  enum class Act { gelu_tanh, gelu, geglu_tanh, geglu } act_ = Act::gelu_tanh;

  Linear patch_embed_;  // conv weight [D, C, p, p] reshaped to [D, C·p·p]
  Linear t_linear_1_, t_linear_2_, adaln_linear_;
  bool size_conditioning_ = false;
  Linear res_linear_1_, res_linear_2_, ar_linear_1_, ar_linear_2_;  // only with size conditioning
  Linear caption_1_, caption_2_;  // undefined when caption_channels is null
  std::vector<Block> blocks_;
  Tensor final_scale_shift_;  // [2, D]
  Linear proj_out_;

  struct PosCache;
  std::shared_ptr<PosCache> pos_cache_;  // position tables per latent size, shared by copies
  std::shared_ptr<TextKvCache> text_kv_;
};

}  // namespace stagecraft
