// Attention one (item, head, block of 64 queries) at a time (attention_block.hpp says how a
// block is computed and why its bits are the query's own). Memory stays at ~64·Lk floats
// per worker however long the sequence is. The tasks are spread over the pool with one
// parallel_for per call: on two shared cores, one synchronisation per attention beats one
// per GEMM (a multithreaded sgemm per block stalls whenever its helper thread is descheduled).
//
// The output is written in either layout the caller asks for, [B, H, Lq, D] or [B, Lq, H, D]:
// the latter is the [B, Lq, H·D] rows a transformer's output projection reads, so the copy
// from one to the other after the op is gone.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <memory>
#include <new>
#include <vector>

#include "core/error.hpp"
#include "kernels/cpu/attention.hpp"
#include "kernels/cpu/attention_block.hpp"
#include "kernels/cpu/common.hpp"
#include "kernels/cpu/cpu_ops.hpp"

namespace stagecraft::kernels::cpu {
namespace {

// An operand as rows of D floats: used in place when it is f32 with unit stride along
// D (e.g. a permuted [B, L, H, D] projection), else gathered once.
struct Rows {
  std::unique_ptr<float[]> buf;
  const float* base = nullptr;
  int64_t sb = 0, sh = 0, ld = 0;  // strides in floats: batch, head, token

  explicit Rows(const Tensor& t) {
    const int64_t D = t.size(3);
    if (t.dtype() == DType::f32 && (t.strides()[3] == 1 || D == 1)) {
      base = t.data_as<float>();
      sb = t.strides()[0];
      sh = t.strides()[1];
      ld = t.strides()[2];
      return;
    }
    buf.reset(new float[std::max<int64_t>(1, t.numel())]);
    gather_f32(strided(t), buf.get());
    base = buf.get();
    ld = D;
    sh = t.size(2) * D;
    sb = t.size(1) * sh;
  }
  const float* row(int64_t b, int64_t h, int64_t i) const { return base + b * sb + h * sh + i * ld; }
};

struct AlignedFree {
  void operator()(float* p) const { std::free(p); }
};

}  // namespace

Tensor attention_with_isa(const Tensor& q, const Tensor& k, const Tensor& v, const ops::AttentionOptions& opt,
                          AttnIsa isa) {
  const int64_t B = q.size(0), H = q.size(1), Lq = q.size(2), D = q.size(3), Lk = k.size(2);
  const float scale = opt.scale != 0.0f ? opt.scale : 1.0f / std::sqrt(static_cast<float>(D));
  const bool tokens_first = opt.out_layout == ops::AttentionLayout::tokens_first;
  F32Out out(tokens_first ? Shape{B, Lq, H, D} : q.shape(), q.dtype());
  float* po = out.data();
  if (B * H * Lq * D == 0) return out.finish();

  // Additive key bias per batch: 0 where attended, -inf where masked.
  std::vector<float> key_bias;
  if (opt.key_padding_mask) {
    key_bias.resize(static_cast<size_t>(B * Lk));
    gather_f32(strided(*opt.key_padding_mask), key_bias.data());
    for (float& m : key_bias) m = m != 0.0f ? 0.0f : -std::numeric_limits<float>::infinity();
  }

  const Rows qr(q), kr(k), vr(v);
  const int64_t blocks = (Lq + kAttnQueries - 1) / kAttnQueries;
  const int64_t causal_offset = Lk - Lq;
  // Output row (b, h, i): its D floats, and the distance to row i + 1.
  const int64_t ldo = tokens_first ? H * D : D;
  auto out_row = [&](int64_t b, int64_t h, int64_t i) {
    return po + (tokens_first ? (b * Lq + i) * H + h : (b * H + h) * Lq + i) * D;
  };

  // The next task's query rows, brought into L2 while this task computes: they are a fresh
  // projection's output, strided by the model width, and packing them waited on memory.
  auto prefetch_queries = [&](int64_t t) {
    const int64_t bh = t / blocks, r0 = (t % blocks) * kAttnQueries, rows = std::min(kAttnQueries, Lq - r0);
    for (int64_t i = 0; i < rows; ++i) {
      const char* row = reinterpret_cast<const char*>(qr.row(bh / H, bh % H, r0 + i));
      for (int64_t off = 0; off < D * 4; off += 64) __builtin_prefetch(row + off, 0, 2);
      __builtin_prefetch(row + D * 4 - 1, 0, 2);
    }
  };
  // Keys and values strided by more than a row (heads viewed in place in a [B, L, n·H·D]
  // projection, PixArt's qkv and cross kv) are copied into dense rows once per (item, head)
  // a worker meets: a block reads every key and value row several times, and at a stride of
  // 13.8 KB (PixArt-alpha's qkv) each row sat on a page of its own. Same values, so the
  // same bits; measured in docs/kernels.md.
  const bool pack_k = kr.ld != D, pack_v = vr.ld != D;
  parallel_for(B * H * blocks, 1, [&](int64_t t0, int64_t t1) {
    const size_t floats = attn_scratch_floats(D, Lk);
    std::unique_ptr<float, AlignedFree> scratch(static_cast<float*>(std::aligned_alloc(64, (floats * 4 + 63) / 64 * 64)));
    if (!scratch) throw std::bad_alloc();
    const size_t kv_floats = static_cast<size_t>((pack_k + pack_v) * Lk * D);
    std::unique_ptr<float[]> kv_dense(kv_floats ? new float[kv_floats] : nullptr);
    float* k_dense = kv_dense.get();
    float* v_dense = kv_dense.get() + (pack_k ? Lk * D : 0);
    int64_t dense_bh = -1;
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t bh = t / blocks, b = bh / H, h = bh % H, r0 = (t % blocks) * kAttnQueries;
      if ((pack_k || pack_v) && bh != dense_bh) {
        for (int64_t j = 0; j < Lk; ++j) {
          if (pack_k) std::copy_n(kr.row(b, h, j), D, k_dense + j * D);
          if (pack_v) std::copy_n(vr.row(b, h, j), D, v_dense + j * D);
        }
        dense_bh = bh;
      }
      AttnTask task;
      task.rows = std::min(kAttnQueries, Lq - r0);
      task.D = D;
      task.q = qr.row(b, h, r0);
      task.k = pack_k ? k_dense : kr.row(b, h, 0);
      task.v = pack_v ? v_dense : vr.row(b, h, 0);
      task.ldq = qr.ld;
      task.ldk = pack_k ? D : kr.ld;
      task.ldv = pack_v ? D : vr.ld;
      task.scale = scale;
      task.key_bias = key_bias.empty() ? nullptr : key_bias.data() + b * Lk;
      task.n = Lk;
      if (opt.causal) {
        // Keys past the block's last row's limit are never needed (0 keys: the rows are 0).
        task.causal = true;
        task.causal_first = r0 + causal_offset;
        task.n = std::clamp<int64_t>(r0 + task.rows + causal_offset, 0, Lk);
      }
      task.out = out_row(b, h, r0);
      task.ldo = ldo;
      if (t + 1 < t1) prefetch_queries(t + 1);
      attn_block(isa, task, scratch.get());
    }
  }, /*chunks_per_thread=*/4);  // blocks are independent: any split gives the same bits
  return out.finish();
}

Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, const ops::AttentionOptions& opt) {
  return attention_with_isa(q, k, v, opt, attn_best_isa());
}

}  // namespace stagecraft::kernels::cpu
