// The CPU attention kernels beyond the shared cases of kernel_cases.hpp: each ISA's kernel
// against the naive reference, the three kernels bit for bit against each other, an item's
// bits alone against inside a larger batch, and the tokens-first output layout as an exact
// permutation of the heads-first one.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include "tests/kernels/kernel_cases.hpp"

#include <cstring>
#include <string>
#include <vector>

#include "kernels/cpu/attention.hpp"

using namespace stagecraft;
namespace kc = stagecraft::kernels::cpu;

namespace {

bool same_bits(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && std::memcmp(ops::contiguous(a).data(), ops::contiguous(b).data(), a.nbytes()) == 0;
}

std::vector<kc::AttnIsa> available_isas() {
  std::vector<kc::AttnIsa> r;
  for (kc::AttnIsa i : {kc::AttnIsa::scalar, kc::AttnIsa::avx2, kc::AttnIsa::avx512})
    if (kc::attn_isa_available(i)) r.push_back(i);
  return r;
}

struct Case {
  int64_t b, h, lq, lk, d;
  bool causal, mask;
};
// Odd sizes around the 64-query block, the tiles (6 or 3 or 4 keys and value elements, 4 or 3
// query vectors of 16, 8 or 1 lanes) and the 64-key chunks of P·V; PixArt's head (72) with
// self (256) and caption (77) keys; more queries than keys under causal (a row sees nothing).
const Case kCases[] = {{1, 1, 1, 1, 1, false, false},   {2, 3, 17, 17, 8, false, true},  {1, 2, 5, 33, 16, true, false},
                       {2, 2, 65, 70, 72, false, true}, {2, 2, 100, 77, 72, false, true}, {1, 1, 129, 129, 13, true, true},
                       {1, 1, 40, 7, 5, true, false},   {2, 1, 64, 256, 72, false, false}};

// Inputs of one case: q, k, v and a mask where item 0 attends to a prefix and the last item
// to nothing (its output must be 0).
kcases::Inputs inputs(const Case& s) {
  std::vector<float> mask(static_cast<size_t>(s.b * s.lk), 1.0f);
  for (int64_t j = 0; j < s.lk; ++j) {
    mask[j] = j < (s.lk + 1) / 2 ? 1.0f : 0.0f;
    if (s.b > 1) mask[(s.b - 1) * s.lk + j] = 0.0f;
  }
  return {kcases::rand_tensor({s.b, s.h, s.lq, s.d}, DType::f32, 2.0f),
          kcases::rand_tensor({s.b, s.h, s.lk, s.d}, DType::f32, 2.0f), kcases::rand_tensor({s.b, s.h, s.lk, s.d}),
          Tensor::from_vector(mask, {s.b, s.lk}).to(DType::u8)};
}

ops::AttentionOptions options(const Case& s, const Tensor& mask) {
  ops::AttentionOptions o;
  o.causal = s.causal;
  if (s.mask) o.key_padding_mask = &mask;
  return o;
}

std::string what(const Case& s) {
  return std::to_string(s.b) + "x" + std::to_string(s.h) + " Lq=" + std::to_string(s.lq) + " Lk=" +
         std::to_string(s.lk) + " D=" + std::to_string(s.d) + (s.causal ? " causal" : "") + (s.mask ? " mask" : "");
}

}  // namespace

TEST_CASE("every CPU attention kernel matches the naive reference and all give the same bits") {
  for (const Case& s : kCases) {
    const kcases::Inputs in = inputs(s);
    const ops::AttentionOptions o = options(s, in[3]);
    const Tensor want = kernels::reference::attention(in[0], in[1], in[2], o);
    const Tensor scalar = kc::attention_with_isa(in[0], in[1], in[2], o, kc::AttnIsa::scalar);
    for (kc::AttnIsa isa : available_isas()) {
      CAPTURE(what(s));
      CAPTURE(static_cast<int>(isa));
      const Tensor got = kc::attention_with_isa(in[0], in[1], in[2], o, isa);
      CHECK(kernels::reference::max_abs_diff(got, want) <= 1e-5 * std::max(1.0, kernels::reference::max_abs(want)));
      CHECK(same_bits(got, scalar));
    }
  }
}

TEST_CASE("attention gives an item the same bits alone and inside a larger batch") {
  for (const Case& s : kCases) {
    if (s.b < 2) continue;
    const kcases::Inputs in = inputs(s);
    const Tensor all = ops::attention(in[0], in[1], in[2], options(s, in[3]));
    for (int64_t b = 0; b < s.b; ++b) {
      CAPTURE(what(s));
      CAPTURE(b);
      auto item = [&](const Tensor& t) { return ops::contiguous(t.slice(0, b, b + 1)); };
      const Tensor mask = item(in[3]);
      const Tensor alone = ops::attention(item(in[0]), item(in[1]), item(in[2]), options(s, mask));
      CHECK(same_bits(alone, all.slice(0, b, b + 1)));
    }
  }
}

TEST_CASE("attention's tokens-first output is the heads-first one permuted, bit for bit") {
  for (const Case& s : kCases) {
    const kcases::Inputs in = inputs(s);
    ops::AttentionOptions o = options(s, in[3]);
    const Tensor heads = ops::attention(in[0], in[1], in[2], o);
    o.out_layout = ops::AttentionLayout::tokens_first;
    const Tensor tokens = ops::attention(in[0], in[1], in[2], o);
    CAPTURE(what(s));
    CHECK(tokens.shape() == Shape{s.b, s.lq, s.h, s.d});
    CHECK(same_bits(tokens, heads.permute({0, 2, 1, 3})));
  }
}

TEST_CASE("attention on heads viewed in place in a stacked projection gives the bits of their dense copies") {
  // PixArt's heads: q, k and v as views of one [B, L, 3, H, D] projection (keys and values
  // then get copied into dense rows per head, attention.cpp), and cross-attention's k and v
  // from a [B, L, 2, H, D] one.
  for (const Case& s : kCases) {
    const kcases::Inputs in = inputs(s);
    auto stacked = [&](int64_t L, int n) { return kcases::rand_tensor({s.b, L, n, s.h, s.d}, DType::f32, 2.0f); };
    auto head_view = [](const Tensor& t, int i) { return t.select(2, i).permute({0, 2, 1, 3}); };
    const Tensor qkv = stacked(s.lq, 3), kv = stacked(s.lk, 2);
    const ops::AttentionOptions o = options(s, in[3]);
    CAPTURE(what(s));
    if (s.lq == s.lk) {
      const Tensor got = ops::attention(head_view(qkv, 0), head_view(qkv, 1), head_view(qkv, 2), o);
      const Tensor want = ops::attention(ops::contiguous(head_view(qkv, 0)), ops::contiguous(head_view(qkv, 1)),
                                         ops::contiguous(head_view(qkv, 2)), o);
      CHECK(same_bits(got, want));
    }
    const Tensor q = head_view(qkv, 0);
    const Tensor got = ops::attention(q, head_view(kv, 0), head_view(kv, 1), o);
    const Tensor want = ops::attention(q, ops::contiguous(head_view(kv, 0)), ops::contiguous(head_view(kv, 1)), o);
    CHECK(same_bits(got, want));
  }
}
