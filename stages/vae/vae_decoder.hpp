#pragma once
// The decoder half of diffusers' AutoencoderKL as a plain compute class, with
// its parameter names and config keys, so the vae/ folder of a real Stable
// Diffusion / PixArt checkpoint loads and decodes to the same pixels.
//
// decode() takes the pipeline's latents and applies z / scaling_factor + shift_factor
// itself, then post_quant_conv (when the config uses it), conv_in, the mid block
// (ResNet, single-head spatial self-attention, ResNet), the up blocks (reversed
// block_out_channels; layers_per_block + 1 ResNets each, nearest 2x + conv on all but
// the last), group norm + SiLU and conv_out. The image is unclamped (about [-1, 1]).
//
// Tiled decoding splits the latent into overlapping tiles, decodes them one at a
// time and blends the seams linearly, exactly as diffusers' tiled_decode, so the
// decoder's activations never exceed one tile's whatever the image size.
//
//   auto vae = VaeDecoder::load("models/tiny-shapes/vae", DType::f32, Device::cpu());
//   Tensor image = vae.decode(latents);                  // [B, 3, H·8, W·8]
//   TilingOptions t;  t.tile = 512;  t.overlap = 128;    // = diffusers' enable_tiling()
//   Tensor big = vae.decode(big_latents, &t);
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/device.hpp"
#include "core/dtype.hpp"
#include "core/tensor.hpp"
#include "stages/model/config_value.hpp"

namespace stagecraft {

/// Most levels (entries of block_out_channels) a VAE may have: a scale factor of up to 2^7.
inline constexpr size_t kMaxVaeLevels = 8;

/// block_out_channels of an AutoencoderKL config.json: 1 to kMaxVaeLevels channel counts of
/// 1 to 65536 (diffusers' default [64] when absent); Error(parse) naming the file and key.
/// The decoder's scale factor is 2^(size - 1).
std::vector<int> vae_block_out_channels(const ConfigFile& c);

/// Tile geometry in image pixels. Both must be multiples of the VAE's scale factor and
/// 0 <= overlap < tile. Consecutive tiles start (tile - overlap) pixels apart; the
/// `overlap` pixels where they meet are blended linearly. diffusers' defaults
/// (tile_sample_min_size 512, tile_overlap_factor 0.25) are tile = 512, overlap = 128.
struct TilingOptions {
  int tile = 512;
  int overlap = 64;
};

class VaeDecoder {
 public:
  /// Reads `dir`/config.json and the decoder's weights (encoder.* and quant_conv.* are
  /// ignored; any other parameter the decoder does not use is an error naming it), cast to
  /// `compute` on `device`. A missing or wrongly shaped parameter is an error naming it.
  static VaeDecoder load(const std::string& dir, DType compute, Device device);

  /// latents [B, latent_channels, h, w] as the pipeline holds them (before / scaling_factor);
  /// host or device, any float dtype. Returns [B, out_channels, h·s, w·s] (s = scale_factor())
  /// in the compute dtype on the decoder's device. With `tiling`, a latent larger than one tile
  /// in either dimension is decoded tile by tile; one that fits is decoded whole (same result).
  Tensor decode(const Tensor& latents, const TilingOptions* tiling = nullptr) const;

  int scale_factor() const { return scale_factor_; }
  int latent_channels() const { return latent_channels_; }
  int out_channels() const { return out_channels_; }
  float scaling_factor() const { return scaling_factor_; }
  float shift_factor() const { return shift_factor_; }
  const nlohmann::json& config() const { return config_; }
  DType dtype() const { return dtype_; }
  Device device() const { return device_; }

  struct Conv {
    Tensor w, b;
    int padding = 0;
  };
  struct Norm {
    Tensor w, b;
  };
  struct Resnet {
    Norm norm1, norm2;
    Conv conv1, conv2, shortcut;  // shortcut.w undefined when channels do not change
  };
  struct Attention {
    Norm group_norm;
    Tensor q_w, q_b, k_w, k_b, v_w, v_b, o_w, o_b;
  };
  struct UpBlock {
    std::vector<Resnet> resnets;
    Conv upsample;  // undefined on the last block
  };

 private:
  /// post_quant_conv + decoder on already scaled latents.
  Tensor decode_whole(const Tensor& z) const;
  Tensor decode_tiled(const Tensor& z, const TilingOptions& tiling) const;
  Tensor resnet(const Resnet& r, const Tensor& x) const;
  Tensor attention(const Attention& a, const Tensor& x) const;

  nlohmann::json config_;
  DType dtype_ = DType::f32;
  Device device_;
  int scale_factor_ = 8, latent_channels_ = 4, out_channels_ = 3, groups_ = 32;
  float scaling_factor_ = 0.18215f, shift_factor_ = 0.0f;

  Conv post_quant_conv_;  // undefined when use_post_quant_conv is false
  Conv conv_in_, conv_out_;
  Resnet mid_resnet_0_, mid_resnet_1_;
  std::optional<Attention> mid_attention_;  // empty when mid_block_add_attention is false
  std::vector<UpBlock> up_blocks_;
  Norm norm_out_;
};

}  // namespace stagecraft
