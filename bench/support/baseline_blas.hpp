#pragma once
// Baselines that call cblas_sgemm directly must run it with OpenBLAS's own threads: the
// kernels keep OpenBLAS single-threaded and split its work over their pool
// (kernels/cpu/blas.hpp), so a baseline called after them would otherwise run on one core
// and flatter every ratio against it.
//
//   { BaselineBlasThreads t(2); cblas_sgemm(...); }   // OpenBLAS with 2 threads, then as before
#include <cblas.h>

namespace stagecraft::bench {

/// For its scope, OpenBLAS runs with `threads` threads; the count it had comes back after.
/// With a BLAS other than OpenBLAS (no thread control) it does nothing.
class BaselineBlasThreads {
 public:
  explicit BaselineBlasThreads(int threads) {
#ifdef OPENBLAS_VERSION
    before_ = openblas_get_num_threads();
    openblas_set_num_threads(threads);
#else
    (void)threads;
#endif
  }
  ~BaselineBlasThreads() {
#ifdef OPENBLAS_VERSION
    openblas_set_num_threads(before_);
#endif
  }
  BaselineBlasThreads(const BaselineBlasThreads&) = delete;
  BaselineBlasThreads& operator=(const BaselineBlasThreads&) = delete;

 private:
  int before_ = 1;
};

}  // namespace stagecraft::bench
