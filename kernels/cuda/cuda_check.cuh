#pragma once
// Error checks for CUDA runtime and cuBLAS(Lt) calls. Both throw
// stagecraft::Error(Errc::cuda) with the failing call, the library's own words and
// file:line, so a failing stage fails its job with a message a user can act on.
//
//   SC_CUDA_CHECK(cudaMemcpyAsync(dst, src, n, cudaMemcpyDefault, stream));
//   SC_CUBLAS_CHECK(cublasLtMatmul(...));
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "core/error.hpp"

#define SC_CUDA_CHECK(expr)                                                                    \
  do {                                                                                         \
    cudaError_t sc_cuda_err_ = (expr);                                                         \
    if (sc_cuda_err_ != cudaSuccess) {                                                         \
      (void)cudaGetLastError(); /* clear a non-sticky error so the next op starts clean */     \
      SC_FAIL(Errc::cuda, #expr " failed: " << cudaGetErrorString(sc_cuda_err_) << " ("         \
                                            << cudaGetErrorName(sc_cuda_err_)                  \
                                            << "); check the device, its free memory and the " \
                                               "shapes passed to this op");                    \
    }                                                                                          \
  } while (0)

#define SC_CUBLAS_CHECK(expr)                                                                 \
  do {                                                                                        \
    cublasStatus_t sc_cublas_st_ = (expr);                                                    \
    if (sc_cublas_st_ != CUBLAS_STATUS_SUCCESS) {                                             \
      SC_FAIL(Errc::cuda, #expr " failed: " << cublasGetStatusString(sc_cublas_st_) << " ("    \
                                            << cublasGetStatusName(sc_cublas_st_)             \
                                            << "); check dtypes, alignment and that the GPU " \
                                               "supports them");                              \
    }                                                                                         \
  } while (0)

/// After a <<<...>>> launch: reports bad launch configurations at the call site.
#define SC_CUDA_CHECK_LAUNCH() SC_CUDA_CHECK(cudaGetLastError())
