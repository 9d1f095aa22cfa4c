#pragma once
// SC_CUDA_CHECK(call): throws Error(cuda) with the call, the CUDA error name and
// string, and file:line when a CUDA runtime call fails. Include only from code
// compiled with STAGECRAFT_HAVE_CUDA (it needs cuda_runtime_api.h).
//
//   SC_CUDA_CHECK(cudaMemcpyAsync(dst, src, n, cudaMemcpyDefault, stream));
#include <cuda_runtime_api.h>

#include "core/error.hpp"

// kernels/cuda/cuda_check.cuh defines the same check for kernel code; whichever
// comes first wins, so a file may include both.
#ifndef SC_CUDA_CHECK
#define SC_CUDA_CHECK(call)                                                                     \
  do {                                                                                          \
    const cudaError_t sc_cuda_err_ = (call);                                                    \
    if (sc_cuda_err_ != cudaSuccess) {                                                          \
      (void)cudaGetLastError(); /* clear non-sticky errors so the next call starts clean */    \
      SC_FAIL(Errc::cuda, #call << " failed: " << cudaGetErrorName(sc_cuda_err_) << " ("       \
                                << cudaGetErrorString(sc_cuda_err_) << ")");                    \
    }                                                                                           \
  } while (0)
#endif

namespace stagecraft {

/// Makes `device` the calling thread's current CUDA device for a scope and puts the
/// previous one back, so work on device N never changes which device later work on the
/// thread targets. Without a current device (cudaGetDevice fails) nothing is restored.
class DeviceScope {
 public:
  explicit DeviceScope(int device) {
    if (cudaGetDevice(&previous_) != cudaSuccess) previous_ = -1;
    if (previous_ != device) SC_CUDA_CHECK(cudaSetDevice(device));
    changed_ = previous_ >= 0 && previous_ != device;
  }
  ~DeviceScope() {
    if (changed_) (void)cudaSetDevice(previous_);
  }
  DeviceScope(const DeviceScope&) = delete;
  DeviceScope& operator=(const DeviceScope&) = delete;

 private:
  int previous_ = -1;
  bool changed_ = false;
};

}  // namespace stagecraft
