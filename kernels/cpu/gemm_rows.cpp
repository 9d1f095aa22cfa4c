// A row-invariant GEMM for small products: y = x · wᵀ (+ b) where each output is a dot
// product of a row of x and a row of w (both contiguous along K), summed in 8 lanes over
// k in order, then reduced across lanes in one fixed pattern, then the K % 8 tail. The
// arithmetic of an output never depends on M, on its tile or on the other rows of the
// call, so a job's rows give the same bits alone or batched with others. Tiles of 3 rows
// x 3 weight rows (9 accumulators, 6 loads per 9 FMAs) need no packing, which matters
// because at these sizes packing w would cost as much as the product.
#include "kernels/cpu/gemm_rows.hpp"

#include <algorithm>
#include <cmath>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define SC_GEMM_ROWS_AVX2 1
#else
#define SC_GEMM_ROWS_AVX2 0
#endif

#include "kernels/cpu/common.hpp"

namespace stagecraft::kernels::cpu {
namespace {

constexpr int kR = 3;            // rows of x per tile
constexpr int kC = 3;            // rows of w (output columns) per tile
constexpr int64_t kBlock = 48;   // rows / columns per task: a 48 x K panel of each stays in L2

#if SC_GEMM_ROWS_AVX2
float hsum(__m256 v) {  // ((0+4) + (2+6)) + ((1+5) + (3+7)): the same for every output
  const __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(t, _mm_shuffle_ps(t, t, 1)));
}
#endif

template <int R, int C>
void tile(const float* x, const float* w, float* y, int64_t K, int64_t N, const float* bias) {
#if SC_GEMM_ROWS_AVX2
  __m256 acc[R][C];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) acc[r][c] = _mm256_setzero_ps();
  const int64_t K8 = K / 8 * 8;
  for (int64_t k = 0; k < K8; k += 8) {
    __m256 xv[R], wv[C];
    for (int r = 0; r < R; ++r) xv[r] = _mm256_loadu_ps(x + r * K + k);
    for (int c = 0; c < C; ++c) wv[c] = _mm256_loadu_ps(w + c * K + k);
    for (int r = 0; r < R; ++r)
      for (int c = 0; c < C; ++c) acc[r][c] = _mm256_fmadd_ps(xv[r], wv[c], acc[r][c]);
  }
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) {
      float s = hsum(acc[r][c]);
      for (int64_t k = K8; k < K; ++k) s = std::fma(x[r * K + k], w[c * K + k], s);
      y[r * N + c] = bias ? s + bias[c] : s;
    }
#else
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) {
      float s = 0.0f;
      for (int64_t k = 0; k < K; ++k) s = std::fma(x[r * K + k], w[c * K + k], s);
      y[r * N + c] = bias ? s + bias[c] : s;
    }
#endif
}

template <int R>
void row_tile(const float* x, const float* w, float* y, int64_t K, int64_t N, const float* bias, int64_t n0,
              int64_t n1) {
  int64_t n = n0;
  for (; n + kC <= n1; n += kC) tile<R, kC>(x, w + n * K, y + n, K, N, bias ? bias + n : nullptr);
  for (; n < n1; ++n) tile<R, 1>(x, w + n * K, y + n, K, N, bias ? bias + n : nullptr);
}

}  // namespace

void gemm_rows(const float* x, const float* w, const float* bias, float* y, int64_t M, int64_t N, int64_t K) {
  const int64_t mb = (M + kBlock - 1) / kBlock, nb = (N + kBlock - 1) / kBlock;
  // One task per 48 x 48 block of y; split only when a task has ~1 MFLOP of work, so small
  // products do not pay a thread hand-off (which costs more than they do on a busy machine).
  const int64_t flops_per_task = 2 * std::min(kBlock, M) * std::min(kBlock, N) * K;
  const int64_t grain = std::max<int64_t>(1, (1 << 20) / std::max<int64_t>(1, flops_per_task));
  parallel_for(mb * nb, grain, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t m0 = (t / nb) * kBlock, m1 = std::min(M, m0 + kBlock);
      const int64_t n0 = (t % nb) * kBlock, n1 = std::min(N, n0 + kBlock);
      int64_t m = m0;
      for (; m + kR <= m1; m += kR) row_tile<kR>(x + m * K, w, y + m * N, K, N, bias, n0, n1);
      for (; m < m1; ++m) row_tile<1>(x + m * K, w, y + m * N, K, N, bias, n0, n1);
    }
  });
}

}  // namespace stagecraft::kernels::cpu
