#pragma once
// FLOP counts of the model stages from their diffusers config.json, for benchmarks that
// print achieved GFLOP/s or a bound set by the machine's GEMM rate (bench_realwidth,
// bench_pipeline --batching). Multiply-adds count 2; norms, activations and modulations
// are left out, so the counts are what the GEMMs and attention products must do.
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace stagecraft::bench {

/// A linear layer over `rows` rows.
inline double linear_flops(double rows, double in, double out) { return 2.0 * rows * in * out; }

/// One PixArt transformer call: batch B (2 with CFG), latent h x w, text length L. Linear
/// layers (patch embedding, timestep and caption MLPs, q/k/v/out, feed-forward, adaLN,
/// proj_out) and the attention products (QK^T and PV).
inline double transformer_flops(const nlohmann::json& c, double B, double h, double w, double L) {
  const auto lin = linear_flops;
  const double heads = c.at("num_attention_heads").get<double>(), hd = c.at("attention_head_dim").get<double>();
  const double D = heads * hd, p = c.value("patch_size", 2);
  const double N = (h / p) * (w / p);
  const double cin = c.value("in_channels", 4);
  const double cout = c.contains("out_channels") && !c["out_channels"].is_null() ? c["out_channels"].get<double>() : cin;
  const double cap = c.at("caption_channels").get<double>();
  const double xdim = c.contains("cross_attention_dim") && !c["cross_attention_dim"].is_null()
                          ? c["cross_attention_dim"].get<double>()
                          : D;
  const double layers = c.at("num_layers").get<double>();
  double f = lin(B * N, cin * p * p, D);                     // patch embedding
  f += lin(B, 256, D) + lin(B, D, D) + lin(B, D, 6 * D);     // timestep MLP + adaLN-single
  f += lin(B * L, cap, D) + lin(B * L, D, D);                // caption projection
  double blk = 4 * lin(B * N, D, D) + 2 * (2 * B * N * N * D);                                  // self-attention
  blk += 2 * lin(B * N, D, D) + 2 * lin(B * L, xdim, D) + 2 * (2 * B * N * L * D);              // cross-attention
  blk += lin(B * N, D, 4 * D) + lin(B * N, 4 * D, D);                                           // feed-forward
  f += layers * blk;
  f += lin(B * N, D, p * p * cout);                          // proj_out
  return f;
}

/// The part of transformer_flops that depends only on the text: the caption projection and
/// every block's cross-attention keys and values. Stagecraft computes it once per text and
/// keeps it across steps (stages/dit/text_kv_cache.hpp).
inline double transformer_text_flops(const nlohmann::json& c, double B, double L) {
  const auto lin = linear_flops;
  const double D = c.at("num_attention_heads").get<double>() * c.at("attention_head_dim").get<double>();
  const double cap = c.at("caption_channels").get<double>();
  const double xdim = c.contains("cross_attention_dim") && !c["cross_attention_dim"].is_null()
                          ? c["cross_attention_dim"].get<double>()
                          : D;
  return lin(B * L, cap, D) + lin(B * L, D, D) + c.at("num_layers").get<double>() * 2 * lin(B * L, xdim, D);
}

/// The VAE decoder's convolutions as direct convolution (2·O·I·k²·Hout·Wout), latent h x w;
/// the mid block's attention (< 1% at real widths), norms and activations are left out.
inline double vae_decoder_flops(const nlohmann::json& c, double h, double w) {
  auto conv = [](double o, double i, double k, double hh, double ww) { return 2.0 * o * i * k * k * hh * ww; };
  const std::vector<double> boc = c.at("block_out_channels").get<std::vector<double>>();
  const double lc = c.value("latent_channels", 4), lpb = c.value("layers_per_block", 2);
  const double outc = c.value("out_channels", 3);
  double f = c.value("use_post_quant_conv", true) ? conv(lc, lc, 1, h, w) : 0.0;
  f += conv(boc.back(), lc, 3, h, w);                               // conv_in
  f += 4 * conv(boc.back(), boc.back(), 3, h, w);                   // mid block: 2 resnets
  double ch = boc.back();
  for (size_t i = 0; i < boc.size(); ++i) {
    const double out = boc[boc.size() - 1 - i];
    for (int r = 0; r < lpb + 1; ++r) {
      const double in = r == 0 ? ch : out;
      f += conv(out, in, 3, h, w) + conv(out, out, 3, h, w);
      if (in != out) f += conv(out, in, 1, h, w);                   // shortcut
    }
    ch = out;
    if (i + 1 != boc.size()) {
      h *= 2;
      w *= 2;
      f += conv(out, out, 3, h, w);                                 // upsampler
    }
  }
  f += conv(outc, boc.front(), 3, h, w);                            // conv_out
  return f;
}

/// CLIP text encoder, one prompt of L tokens: q/k/v/out, MLP and the attention products.
inline double text_encoder_flops(const nlohmann::json& c, double L) {
  const auto lin = linear_flops;
  const double D = c.at("hidden_size").get<double>(), I = c.at("intermediate_size").get<double>();
  const double layers = c.at("num_hidden_layers").get<double>();
  return layers * (4 * lin(L, D, D) + lin(L, D, I) + lin(L, I, D) + 2 * (2 * L * L * D));
}

}  // namespace stagecraft::bench
