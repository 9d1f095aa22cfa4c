#pragma once
// The machine's GEMM rate, measured in the same run as the figures set against it:
// cblas_sgemm at n^3 with OpenBLAS's own threads (BaselineBlasThreads: the kernels keep
// OpenBLAS single-threaded on their own pool, kernels/cpu/blas.hpp).
#include <chrono>
#include <vector>

#include <cblas.h>

#include "bench/support/baseline_blas.hpp"
#include "bench/support/bench_util.hpp"

namespace stagecraft::bench {

/// GFLOP/s of cblas_sgemm at n^3 with `threads` OpenBLAS threads: the median of `reps` runs
/// after one warm-up.
inline double sgemm_rate(int n, int reps, int threads) {
  const BaselineBlasThreads baseline(threads);
  std::vector<float> a(size_t(n) * n), b(size_t(n) * n), c(size_t(n) * n);
  for (size_t i = 0; i < a.size(); ++i) {
    a[i] = float((i * 7) % 13) * 0.01f;
    b[i] = float((i * 5) % 11) * 0.01f;
  }
  std::vector<double> rates;
  for (int r = 0; r < reps + 1; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (r > 0) rates.push_back(2.0 * n * n * n / s * 1e-9);
  }
  return median(rates);
}

}  // namespace stagecraft::bench
