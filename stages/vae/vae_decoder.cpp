#include "stages/vae/vae_decoder.hpp"
#include "stages/model/config_value.hpp"

#include <algorithm>
#include <set>
#include <sstream>

#include "core/error.hpp"
#include "kernels/ops.hpp"
#include "stages/model/weights.hpp"

namespace stagecraft {

namespace {


bool starts_with(const std::string& s, const char* prefix) { return s.rfind(prefix, 0) == 0; }

Tensor to_model(const Tensor& x, DType dtype, Device device) {
  Tensor y = x.device() == device ? x : ops::to_device(x, device);
  return y.dtype() == dtype ? y : ops::cast(y, dtype);
}

constexpr float kEps = 1e-6f;  // every norm of diffusers' Decoder uses resnet_eps = 1e-6

// The loader plus the decoder's own record of what it asked for: a full AutoencoderKL
// file also holds the encoder, which a decoder must skip but not mistake for a typo.
struct Loader {
  ModelComponent& mc;
  DType dtype;
  Device device;
  std::set<std::string> asked;

  Tensor param(const std::string& name, const Shape& shape) {
    asked.insert(name);
    return mc.param(name, shape, dtype, device);
  }
  VaeDecoder::Conv conv(const std::string& prefix, int64_t out, int64_t in, int k) {
    VaeDecoder::Conv c;
    c.w = param(prefix + ".weight", {out, in, k, k});
    c.b = param(prefix + ".bias", {out});
    c.padding = k / 2;
    return c;
  }
  VaeDecoder::Norm norm(const std::string& prefix, int64_t channels) {
    return {param(prefix + ".weight", {channels}), param(prefix + ".bias", {channels})};
  }
  VaeDecoder::Resnet resnet(const std::string& prefix, int64_t in, int64_t out) {
    VaeDecoder::Resnet r;
    r.norm1 = norm(prefix + ".norm1", in);
    r.conv1 = conv(prefix + ".conv1", out, in, 3);
    r.norm2 = norm(prefix + ".norm2", out);
    r.conv2 = conv(prefix + ".conv2", out, out, 3);
    if (in != out) r.shortcut = conv(prefix + ".conv_shortcut", out, in, 1);
    return r;
  }
  VaeDecoder::Attention attention(const std::string& prefix, int64_t c) {
    VaeDecoder::Attention a;
    a.group_norm = norm(prefix + ".group_norm", c);
    // Checkpoints saved before diffusers 0.14 name the projections query/key/value/proj_attn;
    // diffusers renames them at load, so accept both.
    const bool legacy = !mc.has(prefix + ".to_q.weight") && mc.has(prefix + ".query.weight");
    const std::string q = legacy ? ".query" : ".to_q", k = legacy ? ".key" : ".to_k",
                      v = legacy ? ".value" : ".to_v", o = legacy ? ".proj_attn" : ".to_out.0";
    a.q_w = param(prefix + q + ".weight", {c, c});
    a.q_b = param(prefix + q + ".bias", {c});
    a.k_w = param(prefix + k + ".weight", {c, c});
    a.k_b = param(prefix + k + ".bias", {c});
    a.v_w = param(prefix + v + ".weight", {c, c});
    a.v_b = param(prefix + v + ".bias", {c});
    a.o_w = param(prefix + o + ".weight", {c, c});
    a.o_b = param(prefix + o + ".bias", {c});
    return a;
  }
  // Like ModelComponent::check_all_used, but the encoder half of the autoencoder is expected.
  void check_all_used() const {
    std::vector<std::string> unused;
    for (const auto& name : mc.names())
      if (!asked.count(name) && !starts_with(name, "encoder.") && !starts_with(name, "quant_conv."))
        unused.push_back(name);
    if (unused.empty()) return;
    std::ostringstream os;
    for (size_t i = 0; i < unused.size() && i < 20; ++i)
      os << "\n  unexpected parameter " << unused[i] << " " << shape_str(mc.stored_shape(unused[i]));
    if (unused.size() > 20) os << "\n  ... and " << unused.size() - 20 << " more";
    SC_FAIL(Errc::shape_mismatch, mc.dir() << " has " << unused.size()
                                           << " parameter(s) the AutoencoderKL decoder does not use "
                                              "(is config.json right?):"
                                           << os.str());
  }
};

Tensor run_conv(const VaeDecoder::Conv& c, const Tensor& x) {
  return ops::conv2d(x, c.w, &c.b, 1, c.padding);
}

}  // namespace

std::vector<int> vae_block_out_channels(const ConfigFile& c) {
  return cfg_int_list(c, "block_out_channels", {64}, 1, kMaxVaeLevels, 1, 65536);  // diffusers' default: [64]
}

VaeDecoder VaeDecoder::load(const std::string& dir, DType compute, Device device) {
  SC_CHECK(is_floating(compute) && compute != DType::f8_e4m3, Errc::invalid_argument,
           "VAE compute dtype must be f32, f16 or bf16, got " << dtype_name(compute));
  ModelComponent mc = ModelComponent::open(dir);
  VaeDecoder m;
  m.config_ = mc.config();
  m.dtype_ = compute;
  m.device_ = device;
  const auto& c = m.config_;

  // Every value is range-checked before use: a model folder is untrusted input, and e.g.
  // 34 levels would make the scale 1 << 33 (undefined) or a group count of 0 divide by zero.
  const ConfigFile cf{c, dir + "/config.json"};
  std::vector<int64_t> channels;
  for (int ch : vae_block_out_channels(cf)) channels.push_back(ch);
  const std::vector<std::string> types = cfg_str_list(cf, "up_block_types", {}, kMaxVaeLevels);
  if (cfg(c, "up_block_types")) {
    SC_CHECK(types.size() == channels.size(), Errc::invalid_argument,
             cf.path << ": up_block_types has " << types.size() << " entries but block_out_channels has "
                     << channels.size());
    for (const auto& t : types)
      SC_CHECK(t == "UpDecoderBlock2D", Errc::unsupported,
               cf.path << ": up block type \"" << t << "\" is not supported; AutoencoderKL uses UpDecoderBlock2D");
  }
  const std::string act = cfg_str(cf, "act_fn", "silu");
  SC_CHECK(act == "silu", Errc::unsupported, cf.path << ": act_fn \"" << act << "\" is not supported; use silu");

  m.latent_channels_ = cfg_int(cf, "latent_channels", 4, 1, 4096);
  m.out_channels_ = cfg_int(cf, "out_channels", 3, 1, 4096);
  m.groups_ = cfg_int(cf, "norm_num_groups", 32, 1, 65536);
  const int layers = cfg_int(cf, "layers_per_block", 1, 0, 64);
  m.scaling_factor_ = static_cast<float>(cfg_num(cf, "scaling_factor", 0.18215, -1e6, 1e6));
  m.shift_factor_ = static_cast<float>(cfg_num(cf, "shift_factor", 0.0, -1e6, 1e6));
  m.scale_factor_ = 1 << (channels.size() - 1);
  SC_CHECK(m.scaling_factor_ != 0.0f, Errc::invalid_argument, cf.path << ": scaling_factor is 0");
  for (int64_t ch : channels)
    SC_CHECK(ch % m.groups_ == 0, Errc::invalid_argument,
             cf.path << ": block_out_channels " << ch << " is not divisible by norm_num_groups " << m.groups_);

  Loader ld{mc, compute, device, {}};
  const int64_t zc = m.latent_channels_;
  if (cfg_bool(cf, "use_post_quant_conv", true)) m.post_quant_conv_ = ld.conv("post_quant_conv", zc, zc, 1);

  const int64_t top = channels.back();
  m.conv_in_ = ld.conv("decoder.conv_in", top, zc, 3);
  m.mid_resnet_0_ = ld.resnet("decoder.mid_block.resnets.0", top, top);
  if (cfg_bool(cf, "mid_block_add_attention", true))
    m.mid_attention_ = ld.attention("decoder.mid_block.attentions.0", top);
  m.mid_resnet_1_ = ld.resnet("decoder.mid_block.resnets.1", top, top);

  // Up blocks walk block_out_channels from the widest back to the narrowest.
  int64_t prev = top;
  const size_t n = channels.size();
  for (size_t i = 0; i < n; ++i) {
    const int64_t out = channels[n - 1 - i];
    const std::string p = "decoder.up_blocks." + std::to_string(i);
    UpBlock blk;
    for (int r = 0; r < layers + 1; ++r)
      blk.resnets.push_back(ld.resnet(p + ".resnets." + std::to_string(r), r == 0 ? prev : out, out));
    if (i + 1 < n) blk.upsample = ld.conv(p + ".upsamplers.0.conv", out, out, 3);
    m.up_blocks_.push_back(std::move(blk));
    prev = out;
  }
  m.norm_out_ = ld.norm("decoder.conv_norm_out", channels.front());
  m.conv_out_ = ld.conv("decoder.conv_out", m.out_channels_, channels.front(), 3);
  ld.check_all_used();
  return m;
}

Tensor VaeDecoder::resnet(const Resnet& r, const Tensor& x) const {
  Tensor h = ops::group_norm(x, groups_, &r.norm1.w, &r.norm1.b, kEps, /*silu=*/true);
  h = run_conv(r.conv1, h);
  h = ops::group_norm(h, groups_, &r.norm2.w, &r.norm2.b, kEps, /*silu=*/true);
  h = run_conv(r.conv2, h);
  return ops::add(r.shortcut.w.defined() ? run_conv(r.shortcut, x) : x, h);
}

Tensor VaeDecoder::attention(const Attention& a, const Tensor& x) const {
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  // One head over all H·W positions, tokens as rows: [B, C, H, W] -> [B, 1, HW, C].
  Tensor h = ops::group_norm(x, groups_, &a.group_norm.w, &a.group_norm.b, kEps);
  h = ops::contiguous(h.reshape({B, C, H * W}).transpose(1, 2));
  Tensor q = ops::linear(h, a.q_w, &a.q_b).unsqueeze(1);
  Tensor k = ops::linear(h, a.k_w, &a.k_b).unsqueeze(1);
  Tensor v = ops::linear(h, a.v_w, &a.v_b).unsqueeze(1);
  Tensor o = ops::attention(q, k, v).squeeze(1);  // [B, HW, C]
  o = ops::linear(o, a.o_w, &a.o_b);
  o = ops::contiguous(o.transpose(1, 2)).reshape({B, C, H, W});
  return ops::add(o, x);
}

Tensor VaeDecoder::decode_whole(const Tensor& z) const {
  Tensor x = post_quant_conv_.w.defined() ? run_conv(post_quant_conv_, z) : z;
  x = run_conv(conv_in_, x);
  x = resnet(mid_resnet_0_, x);
  if (mid_attention_) x = attention(*mid_attention_, x);
  x = resnet(mid_resnet_1_, x);
  for (const UpBlock& blk : up_blocks_) {
    for (const Resnet& r : blk.resnets) x = resnet(r, x);
    // Upsample2D: nearest 2x then a 3x3 conv, as one op that never holds the upsampled map
    // (4x x's bytes: 256 MiB at the last up block of a 512x512 decode) where the CPU's
    // Winograd path can fold it; the same bytes as the two ops (docs/kernels.md).
    if (blk.upsample.w.defined())
      x = ops::conv2d_upsample2x(x, blk.upsample.w, &blk.upsample.b, 1, blk.upsample.padding);
  }
  x = ops::group_norm(x, groups_, &norm_out_.w, &norm_out_.b, kEps, /*silu=*/true);
  return run_conv(conv_out_, x);
}

namespace {

// diffusers' blend_v / blend_h: the first `extent` rows (dim 2) or columns (dim 3) of `b`
// become a·(1 - y/extent) + b·(y/extent), with a's last `extent` rows/columns.
Tensor blend(const Tensor& a, const Tensor& b, int64_t extent, int dim, DType dtype, Device device) {
  const int64_t e = std::min({a.size(dim), b.size(dim), extent});
  if (e <= 0) return b;
  std::vector<float> wa(e), wb(e);
  for (int64_t y = 0; y < e; ++y) {
    wb[y] = static_cast<float>(static_cast<double>(y) / static_cast<double>(e));
    wa[y] = static_cast<float>(1.0 - static_cast<double>(y) / static_cast<double>(e));
  }
  const Shape wshape = dim == 2 ? Shape{1, 1, e, 1} : Shape{1, 1, 1, e};
  const Tensor ta = to_model(Tensor::from_vector(wa, wshape), dtype, device);
  const Tensor tb = to_model(Tensor::from_vector(wb, wshape), dtype, device);
  const Tensor a_edge = ops::contiguous(a.slice(dim, a.size(dim) - e, a.size(dim)));
  const Tensor b_edge = ops::contiguous(b.slice(dim, 0, e));
  Tensor mixed = ops::add(ops::mul(a_edge, ta), ops::mul(b_edge, tb));
  if (e == b.size(dim)) return mixed;
  return ops::cat({mixed, ops::contiguous(b.slice(dim, e, b.size(dim)))}, dim);
}

}  // namespace

Tensor VaeDecoder::decode_tiled(const Tensor& z, const TilingOptions& t) const {
  const int s = scale_factor_;
  SC_CHECK(t.tile > 0 && t.overlap >= 0 && t.overlap < t.tile && t.tile % s == 0 && t.overlap % s == 0,
           Errc::invalid_argument,
           "VAE tiling needs 0 <= overlap < tile, both multiples of the scale factor " << s << "; got tile "
               << t.tile << ", overlap " << t.overlap);
  const int64_t tile_latent = t.tile / s, stride = (t.tile - t.overlap) / s;
  const int64_t row_limit = t.tile - t.overlap;  // pixels of each tile kept after blending
  const int64_t h = z.size(2), w = z.size(3);
  if (h <= tile_latent && w <= tile_latent) return decode_whole(z);

  // Only the previous row of decoded tiles is kept (for the vertical blend): the decoder's
  // activations are one tile's, and image memory is two rows of tiles plus the output.
  std::vector<Tensor> prev_row, strips;
  for (int64_t i = 0; i < h; i += stride) {
    std::vector<Tensor> row, crops;
    for (int64_t j = 0, col = 0; j < w; j += stride, ++col) {
      Tensor tile = ops::contiguous(
          z.slice(2, i, std::min(i + tile_latent, h)).slice(3, j, std::min(j + tile_latent, w)));
      Tensor dec = decode_whole(tile);
      if (i > 0) dec = blend(prev_row[col], dec, t.overlap, 2, dtype_, device_);
      if (col > 0) dec = blend(row[col - 1], dec, t.overlap, 3, dtype_, device_);
      crops.push_back(ops::contiguous(dec.slice(2, 0, std::min(row_limit, dec.size(2)))
                                          .slice(3, 0, std::min(row_limit, dec.size(3)))));
      row.push_back(std::move(dec));
    }
    strips.push_back(crops.size() == 1 ? crops[0] : ops::cat(crops, 3));
    prev_row = std::move(row);
  }
  return strips.size() == 1 ? strips[0] : ops::cat(strips, 2);
}

Tensor VaeDecoder::decode(const Tensor& latents, const TilingOptions* tiling) const {
  SC_CHECK(latents.ndim() == 4 && latents.size(1) == latent_channels_, Errc::shape_mismatch,
           "VAE latents must be [B, " << latent_channels_ << ", h, w], got " << latents.shape_str());
  SC_CHECK(latents.size(2) > 0 && latents.size(3) > 0, Errc::shape_mismatch,
           "VAE latents " << latents.shape_str() << " are empty");
  Tensor z = ops::scale(to_model(latents, dtype_, device_), 1.0f / scaling_factor_);
  if (shift_factor_ != 0.0f)
    z = ops::add(z, to_model(Tensor::from_vector({shift_factor_}, {1}), dtype_, device_));
  return tiling ? decode_tiled(z, *tiling) : decode_whole(z);
}

}  // namespace stagecraft
