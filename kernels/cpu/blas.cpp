// sgemm through single-threaded OpenBLAS calls on our pool (blas.hpp says why).
#include "kernels/cpu/blas.hpp"

#include <cblas.h>

#include <algorithm>
#include <cstdlib>
#include <mutex>

#include "kernels/cpu/common.hpp"

namespace stagecraft::kernels::cpu {
namespace {

// OpenBLAS's cblas.h pulls in openblas_config.h, which defines OPENBLAS_VERSION; another
// BLAS (reference CBLAS, BLIS's cblas) has no openblas_set_num_threads, and is left with
// whatever threading it was built or configured with.
void configure_blas_once() {
  static std::once_flag once;
  std::call_once(once, [] {
#ifdef OPENBLAS_VERSION
    openblas_set_num_threads(blas_threads());
#endif
  });
}

}  // namespace

int blas_threads() {
  static const int n = [] {
    if (const char* e = std::getenv("STAGECRAFT_BLAS_THREADS")) {
      const int v = std::atoi(e);
      if (v > 0) return v;
    }
    return 1;
  }();
  return n;
}

void sgemm_serial(bool trans_b, int64_t M, int64_t N, int64_t K, const float* a, int64_t lda, const float* b,
                  int64_t ldb, float* c, int64_t ldc) {
  configure_blas_once();
  cblas_sgemm(CblasRowMajor, CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, static_cast<int>(M),
              static_cast<int>(N), static_cast<int>(K), 1.0f, a, static_cast<int>(lda), b, static_cast<int>(ldb),
              0.0f, c, static_cast<int>(ldc));
}

void sgemm_tiles(bool trans_b, int64_t M, int64_t N, int64_t K, const float* a, int64_t lda, const float* b,
                 int64_t ldb, float* c, int64_t ldc) {
  if (M <= 0 || N <= 0) return;
  // About 16 MFLOP per tile, at most 64 tiles: enough of them to even out 2-8 threads, each
  // large enough that the pool's hand-off (microseconds) and the call's packing of its A and
  // B slices stay small against its multiply. Columns are split first (blocks of >= 256, on
  // 16-column boundaries, so OpenBLAS's vector kernels see whole panels), rows after (>= 64).
  const double flops = 2.0 * static_cast<double>(M) * static_cast<double>(N) * static_cast<double>(K);
  const int64_t tiles = std::clamp<int64_t>(static_cast<int64_t>(flops / 16e6), 1, 64);
  const int64_t nb = std::clamp<int64_t>(std::min(tiles, N / 256), 1, tiles);
  const int64_t mb = std::clamp<int64_t>(std::min((tiles + nb - 1) / nb, M / 64), 1, tiles);
  if (nb * mb == 1) {
    sgemm_serial(trans_b, M, N, K, a, lda, b, ldb, c, ldc);
    return;
  }
  auto col = [&](int64_t j) { return j == nb ? N : (N * j / nb) / 16 * 16; };
  parallel_for(nb * mb, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t i = t / nb, j = t % nb;
      const int64_t r0 = M * i / mb, r1 = M * (i + 1) / mb, c0 = col(j), c1 = col(j + 1);
      if (r1 <= r0 || c1 <= c0) continue;
      sgemm_serial(trans_b, r1 - r0, c1 - c0, K, a + r0 * lda, lda, b + (trans_b ? c0 * ldb : c0), ldb,
                   c + r0 * ldc + c0, ldc);
    }
  });
}

}  // namespace stagecraft::kernels::cpu
