#pragma once
// GEMM on cuBLAS / cuBLASLt with f32 accumulation (CUBLAS_COMPUTE_32F; f32
// inputs stay true f32, no TF32). One cuBLAS and one cuBLASLt handle per device
// and host thread; one workspace per (thread, device, stream) so concurrent
// streams never share scratch. Handles and workspaces live until the process
// exits on purpose: destroying them from thread_local destructors races the CUDA
// context teardown at exit.
//
// Matrices here follow cuBLAS (column-major); the row-major ops map onto them
// by computing the transposed product (see gemm.cu).
#include "kernels/cuda/common.cuh"

namespace stagecraft::kernels::cuda {

cudaDataType_t cuda_data_type(DType t);

/// The calling thread's cuBLAS handle for the current device, bound to `s`.
cublasHandle_t cublas_handle(cudaStream_t s);
/// The calling thread's cuBLASLt handle for the current device.
cublasLtHandle_t cublaslt_handle();
/// Workspace for cuBLASLt on the current device and stream; `bytes` receives its size.
void* gemm_workspace(cudaStream_t s, size_t* bytes);

/// Column-major strided batched C = alpha·op(A)·op(B) + beta·C with f32 compute.
/// A and B share a dtype; C may differ (f32 scores from bf16 inputs, for example).
/// A stride of 0 broadcasts that operand over the batch.
void gemm_strided_batched(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const void* A,
                          int64_t lda, int64_t stride_a, const void* B, int64_t ldb, int64_t stride_b, DType ab_dtype,
                          float beta, void* C, int64_t ldc, int64_t stride_c, DType c_dtype, int64_t batch,
                          cudaStream_t s);

/// Row-major y[M, N] = x[M, K] · w[N, K]ᵀ (+ bias[N]) on cuBLASLt with the bias fused
/// in the epilogue; falls back to cuBLAS + a bias kernel when Lt offers no algorithm.
/// x, w, y (and bias) share `dtype`; all contiguous. `align_cap` (a power of two, 0 = none)
/// caps the pointer alignments the algorithm is chosen for, so that calls on x, y pointers
/// of different alignment (the items of linear_per_item) get the same algorithm and bits.
void linear_gemm(void* y, const void* x, const void* w, const void* bias, DType dtype, int64_t M, int64_t N,
                 int64_t K, cudaStream_t s, uint32_t align_cap = 0);

template <class T>
__global__ void add_bias_kernel(T* __restrict__ y, const void* bias, int bias_code, int64_t n, int64_t C,
                                int64_t inner) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t c = (i / inner) % C;
    y[i] = from_f32<T>(to_f32(y[i]) + load_any(bias, c, bias_code));
  }
}

/// y viewed as [outer, C, inner] (contiguous): y += bias[C]. inner = 1 for rows of a
/// linear, inner = H·W for NCHW conv output.
template <class T>
void add_bias(T* y, const void* bias, DType bias_dtype, int64_t n, int64_t C, int64_t inner, cudaStream_t s) {
  if (n == 0) return;
  add_bias_kernel<T><<<grid_for(n), 256, 0, s>>>(y, bias, dtype_code(bias_dtype), n, C, inner);
  SC_CUDA_CHECK_LAUNCH();
}

}  // namespace stagecraft::kernels::cuda
