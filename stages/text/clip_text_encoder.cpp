// ClipTextEncoder: see clip_text_encoder.hpp. Follows transformers' modeling_clip.py.
#include "stages/text/clip_text_encoder.hpp"
#include "stages/model/config_value.hpp"

#include <string>

#include "core/error.hpp"
#include "kernels/ops.hpp"
#include "stages/model/weights.hpp"

namespace stagecraft {
namespace {


// [B, L, H*Dh] -> [B, H, L, Dh], contiguous for the attention kernel.
Tensor split_heads(const Tensor& x, int heads) {
  const int64_t b = x.size(0), l = x.size(1), d = x.size(2);
  return ops::contiguous(x.reshape({b, l, heads, d / heads}).permute({0, 2, 1, 3}));
}

Tensor merge_heads(const Tensor& x) {
  const int64_t b = x.size(0), h = x.size(1), l = x.size(2), dh = x.size(3);
  return ops::contiguous(x.permute({0, 2, 1, 3})).reshape({b, l, h * dh});
}

}  // namespace

ClipTextEncoder ClipTextEncoder::load(const std::string& dir, DType dtype, Device device) {
  ModelComponent mc = ModelComponent::open(dir);
  ClipTextEncoder e;
  e.config_ = mc.config();
  // A CLIPModel config nests the text tower; accept both shapes of file.
  const bool nested = e.config_.is_object() && e.config_.contains("text_config");
  const nlohmann::json& c = nested ? e.config_["text_config"] : e.config_;
  const ConfigFile cf{c, dir + "/config.json" + (nested ? std::string(" (text_config)") : std::string())};
  SC_CHECK(c.is_object(), Errc::parse, cf.path << " must hold a JSON object, got " << c.type_name());
  e.dtype_ = dtype;
  e.device_ = device;
  // Range-checked before use: a model folder is untrusted input.
  e.hidden_ = cfg_int(cf, "hidden_size", 512, 1, 1 << 16);
  e.heads_ = cfg_int(cf, "num_attention_heads", 8, 1, 1024);
  e.intermediate_ = cfg_int(cf, "intermediate_size", 2048, 1, 1 << 18);
  e.vocab_ = cfg_int(cf, "vocab_size", 49408, 1, 1 << 22);
  e.max_positions_ = cfg_int(cf, "max_position_embeddings", 77, 2, 1 << 16);
  const int layers = cfg_int(cf, "num_hidden_layers", 12, 1, 1024);
  e.eps_ = static_cast<float>(cfg_num(cf, "layer_norm_eps", 1e-5, 0.0, 1.0));
  const std::string act = cfg_str(cf, "hidden_act", "quick_gelu");
  if (act == "quick_gelu") e.act_ = Act::quick_gelu;
  else if (act == "gelu") e.act_ = Act::gelu;
  else if (act == "gelu_new" || act == "gelu_pytorch_tanh" || act == "gelu_fast") e.act_ = Act::gelu_tanh;
  else SC_FAIL(Errc::unsupported, dir << "/config.json: hidden_act \"" << act
                                      << "\" is not supported (use quick_gelu, gelu or gelu_pytorch_tanh)");
  SC_CHECK(e.hidden_ % e.heads_ == 0, Errc::invalid_argument,
           dir << "/config.json: hidden_size " << e.hidden_ << " is not divisible by num_attention_heads " << e.heads_);

  const int64_t d = e.hidden_, f = e.intermediate_;
  auto P = [&](const std::string& name, const Shape& shape) { return mc.param(name, shape, dtype, device); };
  e.token_embedding_ = P("text_model.embeddings.token_embedding.weight", {e.vocab_, d});
  e.position_embedding_ = P("text_model.embeddings.position_embedding.weight", {e.max_positions_, d});
  for (int i = 0; i < layers; ++i) {
    const std::string p = "text_model.encoder.layers." + std::to_string(i) + ".";
    Layer L;
    L.ln1_w = P(p + "layer_norm1.weight", {d});
    L.ln1_b = P(p + "layer_norm1.bias", {d});
    L.ln2_w = P(p + "layer_norm2.weight", {d});
    L.ln2_b = P(p + "layer_norm2.bias", {d});
    L.q_w = P(p + "self_attn.q_proj.weight", {d, d});
    L.q_b = P(p + "self_attn.q_proj.bias", {d});
    L.k_w = P(p + "self_attn.k_proj.weight", {d, d});
    L.k_b = P(p + "self_attn.k_proj.bias", {d});
    L.v_w = P(p + "self_attn.v_proj.weight", {d, d});
    L.v_b = P(p + "self_attn.v_proj.bias", {d});
    L.o_w = P(p + "self_attn.out_proj.weight", {d, d});
    L.o_b = P(p + "self_attn.out_proj.bias", {d});
    L.fc1_w = P(p + "mlp.fc1.weight", {f, d});
    L.fc1_b = P(p + "mlp.fc1.bias", {f});
    L.fc2_w = P(p + "mlp.fc2.weight", {d, f});
    L.fc2_b = P(p + "mlp.fc2.bias", {d});
    e.layers_.push_back(std::move(L));
  }
  e.final_ln_w_ = P("text_model.final_layer_norm.weight", {d});
  e.final_ln_b_ = P("text_model.final_layer_norm.bias", {d});
  // Older transformers versions saved the position_ids buffer; it is arange(max_positions), nothing to load.
  mc.ignore("text_model.embeddings.position_ids");
  mc.check_all_used();
  return e;
}

Tensor ClipTextEncoder::forward(const Tensor& ids_in, const Tensor* attention_mask) const {
  SC_CHECK(ids_in.ndim() == 2, Errc::shape_mismatch, "text encoder wants ids [B, L], got " << ids_in.shape_str());
  const int64_t B = ids_in.size(0), L = ids_in.size(1), D = hidden_;
  SC_CHECK(L <= max_positions_, Errc::shape_mismatch,
           "text encoder got " << L << " tokens but max_position_embeddings is " << max_positions_
                               << ": tokenize with truncation to model_max_length");
  const Tensor ids = ops::to_device(ids_in, Device::cpu()).contiguous().to(DType::i64);
  const int64_t* idp = ids.data_as<int64_t>();

  // Embedding lookup as row views of the table (no gather op needed): the rows are
  // concatenated on the table's device.
  std::vector<Tensor> rows;
  rows.reserve(B * L);
  for (int64_t i = 0; i < B * L; ++i) {
    SC_CHECK(idp[i] >= 0 && idp[i] < vocab_, Errc::invalid_argument,
             "token id " << idp[i] << " is outside the vocabulary of " << vocab_ << " entries");
    rows.push_back(token_embedding_.slice(0, idp[i], idp[i] + 1));
  }
  Tensor h = ops::cat(rows, 0).reshape({B, L, D});
  h = ops::add(h, position_embedding_.slice(0, 0, L));

  Tensor mask_dev;
  ops::AttentionOptions opt;
  opt.causal = true;
  if (attention_mask) {
    SC_CHECK(attention_mask->shape() == Shape({B, L}), Errc::shape_mismatch,
             "attention mask must be [B, L] = " << shape_str({B, L}) << ", got " << attention_mask->shape_str());
    mask_dev = ops::to_device(*attention_mask, device_);
    opt.key_padding_mask = &mask_dev;
  }

  // Projections per prompt (ops::linear_per_item): a prompt's L <= 77 rows take the CPU's
  // row-invariant kernel on our own pool rather than OpenBLAS, whose threads then stay
  // asleep while the engine's other lanes compute (in a 32-job run at 2 threads the text
  // stage was busy 430-520 ms against 5-8 ms with 1 thread, and starved the denoiser's
  // batches); a prompt also gets the same bits whatever else is encoded with it.
  auto linear = [](const Tensor& x, const Tensor& w, const Tensor& b) { return ops::linear_per_item(x, w, &b); };
  for (const Layer& l : layers_) {
    Tensor x = ops::layer_norm(h, &l.ln1_w, &l.ln1_b, eps_);
    Tensor q = split_heads(linear(x, l.q_w, l.q_b), heads_);
    Tensor k = split_heads(linear(x, l.k_w, l.k_b), heads_);
    Tensor v = split_heads(linear(x, l.v_w, l.v_b), heads_);
    Tensor a = merge_heads(ops::attention(q, k, v, opt));
    h = ops::add(h, linear(a, l.o_w, l.o_b));

    x = ops::layer_norm(h, &l.ln2_w, &l.ln2_b, eps_);
    x = linear(x, l.fc1_w, l.fc1_b);
    x = act_ == Act::quick_gelu ? ops::quick_gelu(x) : ops::gelu(x, act_ == Act::gelu_tanh);
    h = ops::add(h, linear(x, l.fc2_w, l.fc2_b));
  }
  return ops::layer_norm(h, &final_ln_w_, &final_ln_b_, eps_);
}

}  // namespace stagecraft
