#pragma once
// The CPU backend's one way into BLAS sgemm. OpenBLAS runs single-threaded inside Stagecraft
// and the work is split over our own pool (common.hpp's parallel_for) instead, so one set of
// threads runs every stage: OpenBLAS's workers spin in sched_yield for ~0.1 s after each of
// its threaded calls (its THREAD_TIMEOUT, read only when the library loads), and wherever
// its calls alternate with our pool's loops - the Winograd transforms between its GEMMs, or
// the denoiser's gemm_rows on another lane while the decoder runs - those spinning threads
// took a core from our pool. docs/kernels.md ("Threads") has the measurements.
//
//   sgemm_tiles(false, M, N, K, a, K, b, N, c, N);   // C = A·B on the pool
//   parallel_for(36, 1, [&](int64_t i0, int64_t i1) {  // independent GEMMs: one per task
//     for (int64_t i = i0; i < i1; ++i) sgemm_serial(false, M, N, K, a[i], K, b[i], N, c[i], N);
//   });
#include <cstdint>

namespace stagecraft::kernels::cpu {

/// The thread count OpenBLAS is given the first time the kernels call it: 1, or
/// STAGECRAFT_BLAS_THREADS for A/B runs against OpenBLAS's own threading. Set once per process.
int blas_threads();

/// C[M, N] = A[M, K] · B (B is [K, N], or [N, K] when trans_b), row-major, beta 0: one sgemm
/// call in the calling thread (single-threaded BLAS), for callers that spread independent
/// GEMMs over the pool themselves. K must be > 0.
void sgemm_serial(bool trans_b, int64_t M, int64_t N, int64_t K, const float* a, int64_t lda, const float* b,
                  int64_t ldb, float* c, int64_t ldc);

/// The same product split into tiles of C (columns first, then rows) run as single-threaded
/// sgemm calls over the pool. The tiles depend only on (M, N, K), never on the thread count
/// or on whether the pool is free (a busy pool runs them inline), so the bytes of C are the
/// same however the call was scheduled; each element's reduction over K stays one call's.
void sgemm_tiles(bool trans_b, int64_t M, int64_t N, int64_t K, const float* a, int64_t lda, const float* b,
                 int64_t ldb, float* c, int64_t ldc);

}  // namespace stagecraft::kernels::cpu
