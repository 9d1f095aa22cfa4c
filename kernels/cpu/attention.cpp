// Attention one (batch, head, block of 64 queries) at a time: S = Q_blk·Kᵀ, a masked
// softmax over the block, O = P·V. Memory stays at 64·Lk floats per worker however
// long the sequence is. Each task runs single-threaded register-blocked AVX2 kernels
// and the tasks are spread over the pool with one parallel_for per call: on two
// shared cores, one synchronisation per attention beats one per GEMM (a multithreaded
// sgemm per block stalls whenever its helper thread is descheduled).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <vector>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define SC_ATTN_AVX2 1
#else
#define SC_ATTN_AVX2 0
#endif

#include "core/error.hpp"
#include "kernels/cpu/common.hpp"
#include "kernels/cpu/cpu_ops.hpp"

namespace stagecraft::kernels::cpu {
namespace {

constexpr int64_t kRowsPerTask = 64;
// Keys per inner chunk: a 64 x 384 slice of Kᵀ and a 384-row slice of V (96 KiB each)
// stay in L2 while every row group of the task uses them. A multiple of 24 and 8.
constexpr int64_t kKeyChunk = 384;

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

int64_t round8(int64_t n) { return (n + 7) / 8 * 8; }

// S[r][0..n) = scale · Q[r]·KT for R query rows; KT is [D][ldk] (keys transposed, zero
// padded to a multiple of 8), n a multiple of 8.
template <int R>
void qk_rows(const float* const* q, const float* KT, int64_t ldk, int64_t D, int64_t n, float scale, float* S,
             int64_t lds) {
#if SC_ATTN_AVX2
  const __m256 vs = _mm256_set1_ps(scale);
  int64_t j = 0;
  for (; j + 24 <= n; j += 24) {
    __m256 acc[R][3];
    for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = acc[r][2] = _mm256_setzero_ps();
    for (int64_t d = 0; d < D; ++d) {
      const float* kt = KT + d * ldk + j;
      const __m256 k0 = _mm256_loadu_ps(kt), k1 = _mm256_loadu_ps(kt + 8), k2 = _mm256_loadu_ps(kt + 16);
      for (int r = 0; r < R; ++r) {
        const __m256 qv = _mm256_broadcast_ss(q[r] + d);
        acc[r][0] = _mm256_fmadd_ps(qv, k0, acc[r][0]);
        acc[r][1] = _mm256_fmadd_ps(qv, k1, acc[r][1]);
        acc[r][2] = _mm256_fmadd_ps(qv, k2, acc[r][2]);
      }
    }
    for (int r = 0; r < R; ++r)
      for (int c = 0; c < 3; ++c) _mm256_storeu_ps(S + r * lds + j + 8 * c, _mm256_mul_ps(acc[r][c], vs));
  }
  for (; j < n; j += 8) {
    __m256 acc[R];
    for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps();
    for (int64_t d = 0; d < D; ++d) {
      const __m256 k0 = _mm256_loadu_ps(KT + d * ldk + j);
      for (int r = 0; r < R; ++r) acc[r] = _mm256_fmadd_ps(_mm256_broadcast_ss(q[r] + d), k0, acc[r]);
    }
    for (int r = 0; r < R; ++r) _mm256_storeu_ps(S + r * lds + j, _mm256_mul_ps(acc[r], vs));
  }
#else
  for (int r = 0; r < R; ++r) {
    float* s = S + r * lds;
    std::fill(s, s + n, 0.0f);
    for (int64_t d = 0; d < D; ++d) {
      const float qd = q[r][d];
      const float* kt = KT + d * ldk;
      for (int64_t j = 0; j < n; ++j) s[j] += qd * kt[j];
    }
    for (int64_t j = 0; j < n; ++j) s[j] *= scale;
  }
#endif
}

// O[r][0..ldo) = Σ_j P[r][j] · Vp[j] for R rows over j < limit; Vp is [Lk][ldo], ldo a multiple of 8.
template <int R>
void pv_rows(const float* P, int64_t lds, const float* Vp, int64_t ldo, int64_t limit, float* O, bool accumulate) {
#if SC_ATTN_AVX2
  int64_t d0 = 0;
  for (; d0 + 16 <= ldo; d0 += 16) {
    __m256 acc[R][2];
    for (int r = 0; r < R; ++r) {
      acc[r][0] = accumulate ? _mm256_loadu_ps(O + r * ldo + d0) : _mm256_setzero_ps();
      acc[r][1] = accumulate ? _mm256_loadu_ps(O + r * ldo + d0 + 8) : _mm256_setzero_ps();
    }
    for (int64_t j = 0; j < limit; ++j) {
      const __m256 v0 = _mm256_loadu_ps(Vp + j * ldo + d0), v1 = _mm256_loadu_ps(Vp + j * ldo + d0 + 8);
      for (int r = 0; r < R; ++r) {
        const __m256 p = _mm256_broadcast_ss(P + r * lds + j);
        acc[r][0] = _mm256_fmadd_ps(p, v0, acc[r][0]);
        acc[r][1] = _mm256_fmadd_ps(p, v1, acc[r][1]);
      }
    }
    for (int r = 0; r < R; ++r) {
      _mm256_storeu_ps(O + r * ldo + d0, acc[r][0]);
      _mm256_storeu_ps(O + r * ldo + d0 + 8, acc[r][1]);
    }
  }
  for (; d0 < ldo; d0 += 8) {
    __m256 acc[R];
    for (int r = 0; r < R; ++r) acc[r] = accumulate ? _mm256_loadu_ps(O + r * ldo + d0) : _mm256_setzero_ps();
    for (int64_t j = 0; j < limit; ++j) {
      const __m256 v0 = _mm256_loadu_ps(Vp + j * ldo + d0);
      for (int r = 0; r < R; ++r) acc[r] = _mm256_fmadd_ps(_mm256_broadcast_ss(P + r * lds + j), v0, acc[r]);
    }
    for (int r = 0; r < R; ++r) _mm256_storeu_ps(O + r * ldo + d0, acc[r]);
  }
#else
  for (int r = 0; r < R; ++r) {
    float* o = O + r * ldo;
    if (!accumulate) std::fill(o, o + ldo, 0.0f);
    for (int64_t j = 0; j < limit; ++j) {
      const float p = P[r * lds + j];
      const float* v = Vp + j * ldo;
      for (int64_t d = 0; d < ldo; ++d) o[d] += p * v[d];
    }
  }
#endif
}

template <typename Fn>
void by_rows(int64_t rows, Fn&& fn) {  // fn.template operator()<R>(first_row) in groups of 4, then the tail
  int64_t i = 0;
  for (; i + 4 <= rows; i += 4) fn(std::integral_constant<int, 4>{}, i);
  switch (rows - i) {
    case 3: fn(std::integral_constant<int, 3>{}, i); break;
    case 2: fn(std::integral_constant<int, 2>{}, i); break;
    case 1: fn(std::integral_constant<int, 1>{}, i); break;
    default: break;
  }
}

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
    key_bias.resize(static_cast<size_t>(B * Lk));
    gather_f32(strided(*opt.key_padding_mask), key_bias.data());
    for (float& m : key_bias) m = m != 0.0f ? 0.0f : -std::numeric_limits<float>::infinity();
  }

  const Rows qr(q), kr(k), vr(v);
  const int64_t Lkp = round8(Lk), Dp = round8(D);
  const int64_t blocks = (Lq + kRowsPerTask - 1) / kRowsPerTask;
  const int64_t causal_offset = Lk - Lq;
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();

  parallel_for(B * H * blocks, 1, [&](int64_t t0, int64_t t1) {
    // Per-worker scratch; K and V are packed once per head this worker visits.
    std::vector<float> KT(static_cast<size_t>(D * Lkp), 0.0f), Vp(static_cast<size_t>(Lk * Dp), 0.0f);
    std::vector<float> S(static_cast<size_t>(kRowsPerTask * Lkp)), Ot(static_cast<size_t>(kRowsPerTask * Dp));
    std::vector<float> inv_sum(static_cast<size_t>(kRowsPerTask));
    int64_t packed = -1;
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t bh = t / blocks, b = bh / H, h = bh % H, r0 = (t % blocks) * kRowsPerTask;
      const int64_t rows = std::min(kRowsPerTask, Lq - r0);
      if (packed != bh) {
        for (int64_t j = 0; j < Lk; ++j) {
          const float* kj = kr.row(b, h, j);
          for (int64_t d = 0; d < D; ++d) KT[d * Lkp + j] = kj[d];
          std::memcpy(&Vp[j * Dp], vr.row(b, h, j), static_cast<size_t>(D) * 4);
        }
        packed = bh;
      }
      // Keys past the causal limit of the block's last row are never needed.
      int64_t block_limit = Lk;
      if (opt.causal) block_limit = std::clamp<int64_t>(r0 + rows + causal_offset, 0, Lk);
      const int64_t n = round8(block_limit);
      const float* kb_bias = key_bias.empty() ? nullptr : key_bias.data() + b * Lk;

      for (int64_t j0 = 0; j0 < n; j0 += kKeyChunk) {
        const int64_t nn = std::min(kKeyChunk, n - j0);
        by_rows(rows, [&](auto R, int64_t i) {
          const float* qp[4];
          for (int r = 0; r < R; ++r) qp[r] = qr.row(b, h, r0 + i + r);
          qk_rows<R>(qp, KT.data() + j0, Lkp, D, nn, scale, S.data() + i * Lkp + j0, Lkp);
        });
      }
      for (int64_t i = 0; i < rows; ++i) {
        float* s = S.data() + i * Lkp;
        int64_t limit = block_limit;
        if (opt.causal) limit = std::clamp<int64_t>(r0 + i + causal_offset + 1, 0, Lk);
        if (kb_bias)
          for (int64_t j = 0; j < limit; ++j) s[j] += kb_bias[j];
        float mx = kNegInf;
        for (int64_t j = 0; j < limit; ++j) mx = std::max(mx, s[j]);
        std::fill(s + limit, s + Lkp, 0.0f);
        if (mx == kNegInf) {  // nothing to attend to: the row's output is 0
          std::fill(s, s + limit, 0.0f);
          inv_sum[i] = 0.0f;
          continue;
        }
        for (int64_t j = 0; j < limit; ++j) s[j] -= mx;
        exp_inplace(s, limit);
        float sum = 0.0f;
        for (int64_t j = 0; j < limit; ++j) sum += s[j];
        inv_sum[i] = 1.0f / sum;
      }
      float* O = po + ((b * H + h) * Lq + r0) * D;
      if (block_limit == 0) std::fill(Ot.begin(), Ot.end(), 0.0f);
      for (int64_t j0 = 0; j0 < block_limit; j0 += kKeyChunk) {
        const int64_t nn = std::min(kKeyChunk, block_limit - j0);
        by_rows(rows, [&](auto R, int64_t i) {
          pv_rows<R>(S.data() + i * Lkp + j0, Lkp, Vp.data() + j0 * Dp, Dp, nn, Ot.data() + i * Dp, j0 > 0);
        });
      }
      for (int64_t i = 0; i < rows; ++i)
        for (int64_t d = 0; d < D; ++d) O[i * D + d] = Ot[i * Dp + d] * inv_sum[i];
    }
  });
  return out.finish();
}

}  // namespace stagecraft::kernels::cpu
