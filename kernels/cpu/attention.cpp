// Attention one (batch, head, query block) at a time: S = Q_blk·Kᵀ and O = P·V are
// sgemm calls, the softmax runs in between on the block only, so memory stays at
// block·Lk floats however long the sequence is.
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <vector>

#include "core/error.hpp"
#include "kernels/cpu/common.hpp"
#include "kernels/cpu/cpu_ops.hpp"

namespace stagecraft::kernels::cpu {
namespace {

// An operand of the attention as rows of D floats: used in place when it is f32 with
// unit stride along D (e.g. a permuted [B, L, H, D] projection), else gathered.
struct Rows {
  std::unique_ptr<float[]> buf;
  const float* base = nullptr;
  int64_t sb = 0, sh = 0, ld = 0;  // strides in floats: batch, head, token

  explicit Rows(const Tensor& t) {
    const int64_t D = t.size(3);
    if (t.dtype() == DType::f32 && (t.strides()[3] == 1 || D == 1)) {
      const int64_t token_stride = t.size(2) == 1 ? std::max<int64_t>(1, D) : t.strides()[2];
      if (token_stride >= std::max<int64_t>(1, D)) {
        base = t.data_as<float>();
        sb = t.strides()[0];
        sh = t.strides()[1];
        ld = token_stride;
        return;
      }
    }
    buf.reset(new float[std::max<int64_t>(1, t.numel())]);
    gather_f32(strided(t), buf.get());
    base = buf.get();
    sh = t.size(2) * D;
    sb = t.size(1) * sh;
    ld = std::max<int64_t>(1, D);
  }
  const float* at(int64_t b, int64_t h) const { return base + b * sb + h * sh; }
};

}  // namespace

Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, const ops::AttentionOptions& opt) {
  const int64_t B = q.size(0), H = q.size(1), Lq = q.size(2), D = q.size(3), Lk = k.size(2);
  const float scale = opt.scale != 0.0f ? opt.scale : 1.0f / std::sqrt(static_cast<float>(D));
  F32Out out(q.shape(), q.dtype());
  float* po = out.data();
  if (B * H * Lq * D == 0) return out.finish();
  if (Lk == 0) {
    std::fill(po, po + B * H * Lq * D, 0.0f);
    return out.finish();
  }

  // Additive key bias per batch: 0 where attended, -inf where masked.
  std::vector<float> key_bias;
  if (opt.key_padding_mask) {
    const Tensor& m = *opt.key_padding_mask;
    key_bias.resize(static_cast<size_t>(B * Lk));
    std::vector<float> mf(static_cast<size_t>(B * Lk));
    gather_f32(strided(m), mf.data());
    for (size_t i = 0; i < mf.size(); ++i)
      key_bias[i] = mf[i] != 0.0f ? 0.0f : -std::numeric_limits<float>::infinity();
  }

  Rows qr(q), kr(k), vr(v);
  // Keep a score block near L2 size (256 KiB) but at least 16 rows for GEMM efficiency.
  const int64_t block = std::clamp<int64_t>(65536 / Lk, 16, 256);
  const int64_t rows_cap = std::min(block, Lq);
  std::unique_ptr<float[]> S(new float[rows_cap * Lk]);
  std::vector<float> inv_sum(static_cast<size_t>(rows_cap));
  const int64_t causal_offset = Lk - Lq;

  for (int64_t b = 0; b < B; ++b) {
    const float* kb_bias = key_bias.empty() ? nullptr : key_bias.data() + b * Lk;
    for (int64_t h = 0; h < H; ++h) {
      const float* Q = qr.at(b, h);
      const float* K = kr.at(b, h);
      const float* V = vr.at(b, h);
      float* O = po + (b * H + h) * Lq * D;
      for (int64_t r0 = 0; r0 < Lq; r0 += block) {
        const int64_t rows = std::min(block, Lq - r0);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(rows), static_cast<int>(Lk),
                    static_cast<int>(D), scale, Q + r0 * qr.ld, static_cast<int>(qr.ld), K,
                    static_cast<int>(kr.ld), 0.0f, S.get(), static_cast<int>(Lk));
        parallel_for(rows, 16, [&](int64_t i0, int64_t i1) {
          for (int64_t i = i0; i < i1; ++i) {
            float* s = S.get() + i * Lk;
            int64_t limit = Lk;
            if (opt.causal) limit = std::clamp<int64_t>(r0 + i + causal_offset + 1, 0, Lk);
            if (kb_bias)
              for (int64_t j = 0; j < limit; ++j) s[j] += kb_bias[j];
            float mx = -std::numeric_limits<float>::infinity();
            for (int64_t j = 0; j < limit; ++j) mx = std::max(mx, s[j]);
            if (limit == 0 || mx == -std::numeric_limits<float>::infinity()) {
              std::fill(s, s + Lk, 0.0f);
              inv_sum[i] = 0.0f;
              continue;
            }
            for (int64_t j = 0; j < limit; ++j) s[j] -= mx;
            exp_inplace(s, limit);
            float sum = 0.0f;
            for (int64_t j = 0; j < limit; ++j) sum += s[j];
            std::fill(s + limit, s + Lk, 0.0f);
            inv_sum[i] = 1.0f / sum;
          }
        });
        float* Ob = O + r0 * D;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(rows), static_cast<int>(D),
                    static_cast<int>(Lk), 1.0f, S.get(), static_cast<int>(Lk), V, static_cast<int>(vr.ld), 0.0f,
                    Ob, static_cast<int>(D));
        for (int64_t i = 0; i < rows; ++i)
          for (int64_t d = 0; d < D; ++d) Ob[i * D + d] *= inv_sum[i];
      }
    }
  }
  return out.finish();
}

}  // namespace stagecraft::kernels::cpu
