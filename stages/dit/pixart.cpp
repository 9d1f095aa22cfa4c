#include "stages/dit/pixart.hpp"
#include "stages/model/config_value.hpp"

#include <cstring>
#include <map>
#include <mutex>
#include <utility>

#include "core/error.hpp"
#include "kernels/ops.hpp"
#include "stages/dit/pos_embed.hpp"
#include "stages/model/weights.hpp"

namespace stagecraft {

struct PixArtTransformer::PosCache {
  std::mutex mu;
  std::map<std::pair<int, int>, Tensor> tables;  // (grid_h, grid_w) -> [1, N, D] on device
};

namespace {


// Moves a caller's tensor to the model's device and dtype (a no-op when it already is).
Tensor to_model(const Tensor& x, DType dtype, Device device) {
  Tensor y = x.device() == device ? x : ops::to_device(x, device);
  return y.dtype() == dtype ? y : ops::cast(y, dtype);
}

// Every projection runs item by item (ops::linear_per_item): the engine batches jobs at a
// step, and a job must give the same bytes in a batch as alone. Everything else in the
// forward pass already works row by row or per (item, head).
Tensor apply(const PixArtTransformer::Linear& l, const Tensor& x) {
  return ops::linear_per_item(x, l.w, l.b.defined() ? &l.b : nullptr);
}

// Projections over the same input as one: weights (and biases) stacked along the outputs.
PixArtTransformer::Linear stacked(const std::vector<PixArtTransformer::Linear>& parts) {
  std::vector<Tensor> w, b;
  for (const auto& l : parts) {
    w.push_back(l.w);
    if (l.b.defined()) b.push_back(l.b);
  }
  PixArtTransformer::Linear r;
  r.w = ops::cat(w, 0);
  if (!b.empty()) r.b = ops::cat(b, 0);
  return r;
}

// Chunk `i` of a [B, n, D] modulation tensor as a [B, 1, D] view: the fused ops read it in
// place (a copy would be a pass and an allocation for nothing).
Tensor chunk(const Tensor& mod, int i) { return mod.slice(1, i, i + 1); }

}  // namespace

PixArtTransformer PixArtTransformer::load(const std::string& dir, DType compute, Device device) {
  SC_CHECK(is_floating(compute) && compute != DType::f8_e4m3, Errc::invalid_argument,
           "PixArt compute dtype must be f32, f16 or bf16, got " << dtype_name(compute));
  ModelComponent mc = ModelComponent::open(dir);
  PixArtTransformer m;
  m.config_ = mc.config();
  m.dtype_ = compute;
  m.device_ = device;
  m.pos_cache_ = std::make_shared<PosCache>();
  m.text_kv_ = std::make_shared<TextKvCache>(TextKvCache::budget_from_env());
  const auto& c = m.config_;
  // Every value is range-checked before use: a model folder is untrusted input, and e.g.
  // num_layers 4294967296 or 1e300 must not reach an int, nor heads x head_dim overflow one.
  const ConfigFile cf{c, dir + "/config.json"};

  const std::string norm_type = cfg_str(cf, "norm_type", "ada_norm_single");
  SC_CHECK(norm_type == "ada_norm_single", Errc::unsupported,
           dir << "/config.json: norm_type \"" << norm_type
               << "\" is not PixArt's; only \"ada_norm_single\" is implemented");
  SC_CHECK(!cfg_bool(cf, "only_cross_attention", false), Errc::unsupported,
           dir << "/config.json: only_cross_attention = true is not supported by the PixArt stage");
  SC_CHECK(!cfg_bool(cf, "double_self_attention", false), Errc::unsupported,
           dir << "/config.json: double_self_attention = true is not supported by the PixArt stage");
  const std::string attention_type = cfg_str(cf, "attention_type", "default");
  SC_CHECK(attention_type == "default", Errc::unsupported,
           dir << "/config.json: attention_type \"" << attention_type << "\" is not supported; use \"default\"");

  m.heads_ = cfg_int(cf, "num_attention_heads", 16, 1, 1024);
  m.head_dim_ = cfg_int(cf, "attention_head_dim", 72, 1, 4096);
  m.dim_ = m.heads_ * m.head_dim_;  // at most 2^22: 6·D and 4·D still fit an int
  m.patch_ = cfg_int(cf, "patch_size", 0, 0, 64);
  m.in_channels_ = cfg_int(cf, "in_channels", 0, 0, 4096);
  m.out_channels_ = cfg_int(cf, "out_channels", m.in_channels_, 1, 8192);
  m.sample_size_ = cfg_int(cf, "sample_size", 0, 0, kMaxPixArtSampleSize);
  SC_CHECK(m.patch_ > 0 && m.in_channels_ > 0 && m.sample_size_ > 0 && m.dim_ > 0, Errc::invalid_argument,
           dir << "/config.json must set positive patch_size, in_channels, sample_size, num_attention_heads "
                  "and attention_head_dim");
  const int layers = cfg_int(cf, "num_layers", 28, 1, 1024);
  m.cross_dim_ = cfg_int(cf, "cross_attention_dim", 1152, 1, 1 << 20);
  m.caption_channels_ = cfg_int(cf, "caption_channels", 0, 0, 1 << 20);
  m.norm_eps_ = static_cast<float>(cfg_num(cf, "norm_eps", 1e-6, 0.0, 1.0));
  m.interpolation_scale_ = cfg_num(cf, "interpolation_scale", std::max(m.sample_size_ / 64, 1), 1e-6, 1e6);
  const bool affine = cfg_bool(cf, "norm_elementwise_affine", false);
  const bool attn_bias = cfg_bool(cf, "attention_bias", true);

  // diffusers switches the resolution/aspect-ratio embedding on by itself for sample_size 128 (PixArt-α 1024).
  m.size_conditioning_ = cfg_bool(cf, "use_additional_conditions", m.sample_size_ == 128);
  SC_CHECK(!m.size_conditioning_ || m.dim_ % 3 == 0, Errc::invalid_argument,
           dir << "/config.json: use_additional_conditions needs a hidden size divisible by 3 (two resolution "
                  "embeddings and one aspect-ratio embedding of D/3 each), got " << m.dim_);

  const std::string act = cfg_str(cf, "activation_fn", "gelu-approximate");
  if (act == "gelu-approximate") m.act_ = Act::gelu_tanh;
  else if (act == "gelu") m.act_ = Act::gelu;
  else if (act == "geglu-approximate") m.act_ = Act::geglu_tanh;
  else if (act == "geglu") m.act_ = Act::geglu;
  else
    SC_FAIL(Errc::unsupported, dir << "/config.json: activation_fn \"" << act
                                   << "\" is not supported; use gelu-approximate, gelu, geglu or geglu-approximate");

  const int64_t D = m.dim_, p = m.patch_, C = m.in_channels_;
  auto P = [&](const std::string& name, const Shape& shape) { return mc.param(name, shape, compute, device); };
  auto L = [&](const std::string& prefix, int64_t out, int64_t in, bool bias = true) {
    Linear l;
    l.w = P(prefix + ".weight", {out, in});
    if (bias) l.b = P(prefix + ".bias", {out});
    return l;
  };

  // The patch conv has kernel = stride = p, so it is a linear map of each flattened (c, py, px) patch.
  m.patch_embed_.w = P("pos_embed.proj.weight", {D, C, p, p}).reshape({D, C * p * p});
  m.patch_embed_.b = P("pos_embed.proj.bias", {D});

  m.t_linear_1_ = L("adaln_single.emb.timestep_embedder.linear_1", D, 256);
  m.t_linear_2_ = L("adaln_single.emb.timestep_embedder.linear_2", D, D);
  m.adaln_linear_ = L("adaln_single.linear", 6 * D, D);
  if (m.size_conditioning_) {
    m.res_linear_1_ = L("adaln_single.emb.resolution_embedder.linear_1", D / 3, 256);
    m.res_linear_2_ = L("adaln_single.emb.resolution_embedder.linear_2", D / 3, D / 3);
    m.ar_linear_1_ = L("adaln_single.emb.aspect_ratio_embedder.linear_1", D / 3, 256);
    m.ar_linear_2_ = L("adaln_single.emb.aspect_ratio_embedder.linear_2", D / 3, D / 3);
  }

  int64_t context_dim = D;
  if (m.caption_channels_ > 0) {
    m.caption_1_ = L("caption_projection.linear_1", D, m.caption_channels_);
    m.caption_2_ = L("caption_projection.linear_2", D, D);
  } else {
    context_dim = m.cross_dim_;  // the text goes to the cross-attention unprojected
  }

  // PixArtTransformer2DModel never passes ff_inner_dim, so the feed-forward is always 4·D wide.
  const int64_t ff_inner = 4 * D;
  const bool geglu = m.act_ == Act::geglu || m.act_ == Act::geglu_tanh;
  for (int i = 0; i < layers; ++i) {
    const std::string b = "transformer_blocks." + std::to_string(i) + ".";
    Block blk;
    blk.scale_shift_table = P(b + "scale_shift_table", {6, D});
    if (affine) {
      blk.norm1_w = P(b + "norm1.weight", {D});
      blk.norm1_b = P(b + "norm1.bias", {D});
      blk.norm2_w = P(b + "norm2.weight", {D});
      blk.norm2_b = P(b + "norm2.bias", {D});
    }
    blk.qkv1 = stacked({L(b + "attn1.to_q", D, D, attn_bias), L(b + "attn1.to_k", D, D, attn_bias),
                        L(b + "attn1.to_v", D, D, attn_bias)});
    blk.o1 = L(b + "attn1.to_out.0", D, D);
    // diffusers builds attn2's key/value input width from cross_attention_dim; with a caption
    // projection that width must equal D, and the shape check below says so if it does not.
    blk.q2 = L(b + "attn2.to_q", D, D, attn_bias);
    blk.kv2 = stacked({L(b + "attn2.to_k", D, context_dim, attn_bias), L(b + "attn2.to_v", D, context_dim, attn_bias)});
    blk.o2 = L(b + "attn2.to_out.0", D, D);
    blk.ff_in = L(b + "ff.net.0.proj", geglu ? 2 * ff_inner : ff_inner, D);
    blk.ff_out = L(b + "ff.net.2", D, ff_inner);
    m.blocks_.push_back(std::move(blk));
  }

  m.final_scale_shift_ = P("scale_shift_table", {2, D});
  m.proj_out_ = L("proj_out", p * p * m.out_channels_, D);
  mc.check_all_used();
  return m;
}

Tensor PixArtTransformer::position_table(int grid_h, int grid_w) const {
  std::lock_guard<std::mutex> lock(pos_cache_->mu);
  auto& slot = pos_cache_->tables[{grid_h, grid_w}];
  if (!slot.defined()) {
    const int base_size = sample_size_ / patch_;
    std::vector<float> host = sincos_pos_embed_2d(dim_, grid_h, grid_w, base_size, interpolation_scale_);
    slot = to_model(Tensor::from_vector(host, {1, static_cast<int64_t>(grid_h) * grid_w, dim_}), dtype_, device_);
  }
  return slot;
}

Tensor PixArtTransformer::size_embedding(int64_t B, const PixArtImageSize& size) const {
  SC_CHECK(size.height > 0 && size.width > 0, Errc::invalid_argument,
           "PixArt image size " << size.height << "x" << size.width << " must be positive");
  // diffusers embeds resolution.flatten() = (h, w) per item as two "timesteps", each through the
  // resolution embedder to D/3, and h / w through the aspect-ratio embedder: [B, 2D/3] ++ [B, D/3].
  std::vector<float> res, ar;
  for (int64_t b = 0; b < B; ++b) {
    res.push_back(static_cast<float>(size.height));
    res.push_back(static_cast<float>(size.width));
    ar.push_back(static_cast<float>(static_cast<double>(size.height) / size.width));
  }
  auto embed = [&](const std::vector<float>& v, const Linear& l1, const Linear& l2) {
    Tensor t = to_model(Tensor::from_vector(v, {static_cast<int64_t>(v.size())}), DType::f32, device_);
    Tensor f = to_model(ops::timestep_embedding(t, 256, true, 0.0f), dtype_, device_);
    return apply(l2, ops::silu(apply(l1, f)));
  };
  Tensor r = embed(res, res_linear_1_, res_linear_2_).reshape({B, 2 * (dim_ / 3)});
  Tensor a = embed(ar, ar_linear_1_, ar_linear_2_);
  return ops::cat({r, a}, 1);  // [B, D]
}

Tensor PixArtTransformer::heads(const Tensor& t, int n, int i) const {
  // A view: both backends' attention reads strided heads in place (only the head dim must
  // be dense), so copying them out would be a pass for nothing.
  return t.reshape({t.size(0), t.size(1), n, heads_, head_dim_}).select(2, i).permute({0, 2, 1, 3});
}

Tensor PixArtTransformer::attention(const Tensor& q, const Tensor& k, const Tensor& v, const Linear& o,
                                    const Tensor* key_mask, const Tensor& residual, const Tensor* gate) const {
  const int64_t B = q.size(0), Lq = q.size(2);
  ops::AttentionOptions opt;
  opt.key_padding_mask = key_mask;
  // Written as [B, Lq, H, Dh], the rows the output projection reads: no copy between them.
  opt.out_layout = ops::AttentionLayout::tokens_first;
  Tensor a = ops::attention(q, k, v, opt).reshape({B, Lq, dim_});
  // The output projection adds itself (gated) to the residual stream in its epilogue.
  return ops::linear_residual_per_item(a, o.w, o.b.defined() ? &o.b : nullptr, residual, gate);
}

namespace {

// The distinct items of a CPU batch's text: first[u] is the first item of the u-th distinct
// (text rows, mask row) content, of_item[b] the distinct index of item b. Jobs batched at a
// step mostly share their negative prompt (and often their prompt), and the caption
// projection and the cross-attention keys and values depend on nothing else, so they are
// computed once per distinct content and copied to the items that share it: the same rows
// through the same row-invariant kernel, hence the same bits, for less work as the batch
// grows. Other devices keep one computation per item (comparing would need a copy back).
void distinct_items(const Tensor& text, const Tensor& mask, std::vector<int64_t>& first, std::vector<int64_t>& of_item) {
  const int64_t B = text.size(0);
  first.clear();
  of_item.assign(static_cast<size_t>(B), 0);
  const Tensor t = ops::contiguous(text);
  const Tensor m = mask.defined() ? ops::contiguous(mask) : Tensor();
  const size_t tb = t.nbytes() / static_cast<size_t>(B), mb = m.defined() ? m.nbytes() / static_cast<size_t>(B) : 0;
  const auto* tp = static_cast<const unsigned char*>(t.data());
  const auto* mp = m.defined() ? static_cast<const unsigned char*>(m.data()) : nullptr;
  for (int64_t b = 0; b < B; ++b) {
    size_t u = 0;
    for (; u < first.size(); ++u) {
      const int64_t f = first[u];
      if (std::memcmp(tp + b * tb, tp + f * tb, tb) == 0 && (!mp || std::memcmp(mp + b * mb, mp + f * mb, mb) == 0))
        break;
    }
    if (u == first.size()) first.push_back(b);
    of_item[static_cast<size_t>(b)] = static_cast<int64_t>(u);
  }
}

// Rows `idx` of t along dim 0, in that order.
Tensor take(const Tensor& t, const std::vector<int64_t>& idx) {
  std::vector<Tensor> rows;
  for (int64_t i : idx) rows.push_back(t.slice(0, i, i + 1));
  return rows.size() == 1 ? ops::contiguous(rows[0]) : ops::cat(rows, 0);
}

}  // namespace

Tensor PixArtTransformer::feed_forward(const Block& blk, const Tensor& x, const Tensor& residual,
                                       const Tensor& gate) const {
  const Tensor* in_b = blk.ff_in.b.defined() ? &blk.ff_in.b : nullptr;
  Tensor h;
  switch (act_) {  // GELU in the first projection's epilogue
    case Act::gelu_tanh: h = ops::linear_gelu_per_item(x, blk.ff_in.w, in_b, true); break;
    case Act::gelu: h = ops::linear_gelu_per_item(x, blk.ff_in.w, in_b, false); break;
    case Act::geglu_tanh:
    case Act::geglu: {
      // diffusers' GEGLU: hidden, gate = proj(x).chunk(2, -1); hidden * gelu(gate).
      h = apply(blk.ff_in, x);
      const int64_t inner = h.size(-1) / 2;
      const int last = h.ndim() - 1;
      Tensor value = ops::contiguous(h.slice(last, 0, inner));
      Tensor gate = ops::contiguous(h.slice(last, inner, 2 * inner));
      h = ops::mul(value, ops::gelu(gate, act_ == Act::geglu_tanh));
      break;
    }
  }
  // x + gate ⊙ ff_out(h), the gated residual in the projection's epilogue.
  return ops::linear_residual_per_item(h, blk.ff_out.w, blk.ff_out.b.defined() ? &blk.ff_out.b : nullptr, residual,
                                       &gate);
}

PixArtTransformer::CrossKv PixArtTransformer::cross_kv(const Tensor& context, const Tensor& mask) const {
  auto project = [&](Tensor c) {
    return caption_1_.w.defined() ? apply(caption_2_, ops::gelu(apply(caption_1_, c), true)) : c;
  };
  CrossKv kv;
  if (!device_.is_cpu()) {  // comparing texts would need a copy back: computed per item, per block
    kv.projected = project(context);
    return kv;
  }
  // A text's key: its shape, dtypes, then its embedding rows' bytes and its mask row's (the
  // weights are this model's).
  const Tensor t = ops::contiguous(context);
  const Tensor m = mask.defined() ? ops::contiguous(mask) : Tensor();
  std::vector<int64_t> first;
  distinct_items(t, m, first, kv.of_item);
  const int64_t B = context.size(0);
  const size_t tb = t.nbytes() / size_t(B), mb = m.defined() ? m.nbytes() / size_t(B) : 0;
  const std::string head = std::to_string(t.size(1)) + "x" + std::to_string(t.size(2)) + dtype_name(t.dtype()) +
                           (m.defined() ? dtype_name(m.dtype()) : "-") + ":";  // per item: not the batch size
  std::vector<std::string> keys(first.size());
  kv.rows.resize(first.size());
  std::vector<size_t> missing;
  std::vector<int64_t> missing_items;
  for (size_t u = 0; u < first.size(); ++u) {
    keys[u] = head;
    keys[u].append(static_cast<const char*>(t.data()) + size_t(first[u]) * tb, tb);
    if (m.defined()) keys[u].append(static_cast<const char*>(m.data()) + size_t(first[u]) * mb, mb);
    kv.rows[u] = text_kv_->find(keys[u]);
    if (!kv.rows[u]) {
      missing.push_back(u);
      missing_items.push_back(first[u]);
    }
  }
  if (!missing.empty()) {
    // The missing texts together through each projection (row-invariant: a text's rows are
    // the bits it gets alone), then one cache entry per text.
    const Tensor c = project(take(context, missing_items));
    std::vector<TextKvCache::Rows> per_text(missing.size());
    for (const Block& blk : blocks_) {
      const Tensor all = apply(blk.kv2, c);  // [missing, Lt, 2D]
      for (size_t i = 0; i < missing.size(); ++i)
        per_text[i].push_back(ops::contiguous(all.slice(0, int64_t(i), int64_t(i) + 1)));
    }
    for (size_t i = 0; i < missing.size(); ++i)
      kv.rows[missing[i]] = text_kv_->put(keys[missing[i]], std::move(per_text[i]));
  }
  return kv;
}

Tensor PixArtTransformer::cross_kv_at(const CrossKv& kv, size_t block) const {
  if (kv.projected.defined()) return apply(blocks_[block].kv2, kv.projected);
  std::vector<Tensor> items;
  for (int64_t u : kv.of_item) items.push_back((*kv.rows[size_t(u)])[block]);
  return items.size() == 1 ? items[0] : ops::cat(items, 0);
}

Tensor PixArtTransformer::forward(const Tensor& latents, const Tensor& timestep, const Tensor& text,
                                  const Tensor* text_mask, const PixArtImageSize* image_size) const {
  SC_CHECK(latents.ndim() == 4 && latents.size(1) == in_channels_, Errc::shape_mismatch,
           "PixArt latents must be [B, " << in_channels_ << ", H, W], got " << latents.shape_str());
  const int64_t B = latents.size(0), H = latents.size(2), W = latents.size(3);
  SC_CHECK(H % patch_ == 0 && W % patch_ == 0 && H > 0 && W > 0, Errc::shape_mismatch,
           "PixArt latent size " << H << "x" << W << " is not a multiple of patch_size " << patch_
                                 << ": choose an image size divisible by vae_scale_factor * " << patch_);
  SC_CHECK(timestep.ndim() == 1 && (timestep.size(0) == B || timestep.size(0) == 1), Errc::shape_mismatch,
           "PixArt timestep must be [" << B << "] or [1], got " << timestep.shape_str());
  const int64_t context_dim = caption_1_.w.defined() ? caption_channels_ : cross_dim_;
  SC_CHECK(text.ndim() == 3 && text.size(0) == B && text.size(2) == context_dim, Errc::shape_mismatch,
           "PixArt text embeddings must be [" << B << ", L, " << context_dim << "], got " << text.shape_str());
  const int64_t Lt = text.size(1);
  if (text_mask)
    SC_CHECK(text_mask->ndim() == 2 && text_mask->size(0) == B && text_mask->size(1) == Lt, Errc::shape_mismatch,
             "PixArt text mask must be [" << B << ", " << Lt << "], got " << text_mask->shape_str());

  const int gh = static_cast<int>(H / patch_), gw = static_cast<int>(W / patch_);
  const int64_t D = dim_;

  // 1. Patch embedding + positions.
  Tensor x = ops::patchify(to_model(latents, dtype_, device_), patch_);
  x = ops::add(apply(patch_embed_, x), position_table(gh, gw));  // [B, N, D]

  // 2. Timestep conditioning (AdaLayerNormSingle): embedded_timestep [B, D] and its 6·D modulation.
  Tensor t = to_model(timestep, DType::f32, device_);
  if (t.size(0) != B) t = ops::contiguous(t.expand({B}));
  Tensor t_freq = to_model(ops::timestep_embedding(t, 256, true, 0.0f), dtype_, device_);
  Tensor embedded_t = apply(t_linear_2_, ops::silu(apply(t_linear_1_, t_freq)));
  if (size_conditioning_) {
    const PixArtImageSize fallback{static_cast<int>(H * 8), static_cast<int>(W * 8)};
    embedded_t = ops::add(embedded_t, size_embedding(B, image_size ? *image_size : fallback));
  }
  Tensor t6 = apply(adaln_linear_, ops::silu(embedded_t)).reshape({B, 6, D});

  // 3. Caption projection and the cross-attention's keys and values: once per distinct text
  // of the batch (distinct_items), and on the CPU once per text while it stays cached.
  Tensor context = to_model(text, dtype_, device_);
  Tensor mask;
  if (text_mask) mask = text_mask->device() == device_ ? *text_mask : ops::to_device(*text_mask, device_);
  const CrossKv text_kv = cross_kv(context, mask);

  // 4. Blocks.
  for (size_t bi = 0; bi < blocks_.size(); ++bi) {
    const Block& blk = blocks_[bi];
    Tensor mod = ops::add(t6, blk.scale_shift_table);  // [B, 6, D]: shift, scale, gate (msa), shift, scale, gate (mlp)
    const Tensor* n1w = blk.norm1_w.defined() ? &blk.norm1_w : nullptr;
    const Tensor* n1b = blk.norm1_b.defined() ? &blk.norm1_b : nullptr;
    const Tensor* n2w = blk.norm2_w.defined() ? &blk.norm2_w : nullptr;
    const Tensor* n2b = blk.norm2_b.defined() ? &blk.norm2_b : nullptr;

    // Self-attention: x + gate_msa ⊙ attn(adaLN(x)), the residual added in o1's epilogue.
    const Tensor gate_msa = chunk(mod, 2), gate_mlp = chunk(mod, 5);
    Tensor h = ops::layer_norm_modulate(x, n1w, n1b, norm_eps_, chunk(mod, 0), chunk(mod, 1));
    const Tensor qkv = apply(blk.qkv1, h);  // [B, N, 3D]
    x = attention(heads(qkv, 3, 0), heads(qkv, 3, 1), heads(qkv, 3, 2), blk.o1, nullptr, x, &gate_msa);

    // PixArt's cross-attention reads the residual stream directly (no norm2, no modulation).
    const Tensor kv = cross_kv_at(text_kv, bi);  // [B, Lt, 2D]
    x = attention(heads(apply(blk.q2, x), 1, 0), heads(kv, 2, 0), heads(kv, 2, 1), blk.o2,
                  mask.defined() ? &mask : nullptr, x, nullptr);

    h = ops::layer_norm_modulate(x, n2w, n2b, norm_eps_, chunk(mod, 3), chunk(mod, 4));
    x = feed_forward(blk, h, x, gate_mlp);
  }

  // 5. Final adaLN (norm_out has a fixed eps of 1e-6 in diffusers), projection, unpatchify.
  Tensor fmod = ops::add(embedded_t.reshape({B, 1, D}), final_scale_shift_);  // [B, 2, D]: shift, scale
  x = ops::layer_norm_modulate(x, nullptr, nullptr, 1e-6f, chunk(fmod, 0), chunk(fmod, 1));
  x = apply(proj_out_, x);
  Tensor out = ops::unpatchify(x, patch_, out_channels_, static_cast<int>(H), static_cast<int>(W));
  if (out_channels_ == 2 * in_channels_) out = ops::contiguous(out.slice(1, 0, in_channels_));
  return out;
}

}  // namespace stagecraft
