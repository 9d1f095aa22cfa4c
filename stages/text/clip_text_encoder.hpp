#pragma once
// transformers' CLIPTextModel forward: token + position embeddings, pre-norm
// transformer layers with causal self-attention (plus an optional key padding
// mask), quick_gelu or gelu MLPs, final layer norm; returns last_hidden_state.
// Parameter names are Hugging Face's (text_model.embeddings.token_embedding.weight,
// text_model.encoder.layers.N.self_attn.q_proj.weight, ...), so a real CLIP text
// encoder checkpoint loads.
//
//   auto enc = ClipTextEncoder::load("models/tiny-shapes/text_encoder", DType::f32, Device::cpu());
//   Tensor ids = ...;                        // [B, L] i32 (or i64), L <= max_position_embeddings
//   Tensor h = enc.forward(ids, nullptr);    // [B, L, hidden_size], compute dtype
#include <vector>

#include <nlohmann/json.hpp>

#include "core/device.hpp"
#include "core/tensor.hpp"

namespace stagecraft {

class ClipTextEncoder {
 public:
  /// Reads config.json + weights from `dir`; every parameter is checked (shape, none missing,
  /// none unexpected) and cast to `dtype` on `device`.
  static ClipTextEncoder load(const std::string& dir, DType dtype, Device device);

  /// ids [B, L] integer tensor (any device; values are read on the host);
  /// attention_mask [B, L] (1 = token, 0 = padding) or null. Returns [B, L, hidden] on device().
  Tensor forward(const Tensor& ids, const Tensor* attention_mask = nullptr) const;

  const nlohmann::json& config() const { return config_; }
  int hidden_size() const { return hidden_; }
  int max_positions() const { return max_positions_; }
  DType dtype() const { return dtype_; }
  Device device() const { return device_; }

 private:
  struct Layer {
    Tensor ln1_w, ln1_b, ln2_w, ln2_b;
    Tensor q_w, q_b, k_w, k_b, v_w, v_b, o_w, o_b;
    Tensor fc1_w, fc1_b, fc2_w, fc2_b;
  };
  nlohmann::json config_;
  DType dtype_ = DType::f32;
  Device device_;
  int hidden_ = 0, heads_ = 0, intermediate_ = 0, vocab_ = 0, max_positions_ = 0;
  float eps_ = 1e-5f;
  enum class Act { quick_gelu, gelu, gelu_tanh } act_ = Act::quick_gelu;
  Tensor token_embedding_, position_embedding_, final_ln_w_, final_ln_b_;
  std::vector<Layer> layers_;
};

}  // namespace stagecraft
