#pragma once
// Data movement: strided copies (contiguous, cat) by element size, and dtype casts
// between any two of f32, f16, bf16, i8, u8, i32, i64 and f8 e4m3. Casts go through
// double, which is exact for every source except i64 beyond 2^53; float -> integer
// truncates toward zero and saturates at the integer range (NaN -> 0), as the CPU
// backend does, and e4m3 saturates to +-448 (keeping NaN).
#include "kernels/cuda/common.cuh"

namespace stagecraft::kernels::cuda {

/// idx.sa: source strides, idx.sb: destination strides (elements), over the logical shape.
template <class E>
__global__ void copy_strided_kernel(E* __restrict__ dst, const E* __restrict__ src, Strided2 idx, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    int64_t os, od;
    idx.offsets(i, os, od);
    dst[od] = src[os];
  }
}

/// Copies n elements of `elem_size` bytes between strided layouts.
inline void copy_strided(void* dst, const void* src, size_t elem_size, const Strided2& idx, int64_t n,
                         cudaStream_t s) {
  if (n == 0) return;
  const unsigned g = grid_for(n);
  switch (elem_size) {
    case 1: copy_strided_kernel<uint8_t><<<g, 256, 0, s>>>((uint8_t*)dst, (const uint8_t*)src, idx, n); break;
    case 2: copy_strided_kernel<uint16_t><<<g, 256, 0, s>>>((uint16_t*)dst, (const uint16_t*)src, idx, n); break;
    case 4: copy_strided_kernel<uint32_t><<<g, 256, 0, s>>>((uint32_t*)dst, (const uint32_t*)src, idx, n); break;
    case 8: copy_strided_kernel<uint64_t><<<g, 256, 0, s>>>((uint64_t*)dst, (const uint64_t*)src, idx, n); break;
    default: SC_FAIL(Errc::internal, "copy_strided: element size " << elem_size);
  }
  SC_CUDA_CHECK_LAUNCH();
}

__device__ __forceinline__ double load_as_double(const void* p, int64_t i, int code) {
  switch (static_cast<DType>(code)) {
    case DType::i64: return static_cast<double>(static_cast<const int64_t*>(p)[i]);
    case DType::i32: return static_cast<double>(static_cast<const int32_t*>(p)[i]);
    default: return static_cast<double>(load_any(p, i, code));
  }
}

/// Truncates toward zero and clamps to [lo, hi]; NaN gives 0 (C++ leaves all three undefined).
__device__ __forceinline__ double saturate_trunc(double v, double lo, double hi) {
  return isnan(v) ? 0.0 : fmin(fmax(trunc(v), lo), hi);
}

__device__ __forceinline__ void store_from_double(void* p, int64_t i, int code, double v) {
  switch (static_cast<DType>(code)) {
    case DType::f32: static_cast<float*>(p)[i] = static_cast<float>(v); break;
    case DType::f16: static_cast<__half*>(p)[i] = __float2half_rn(static_cast<float>(v)); break;
    case DType::bf16: static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16_rn(static_cast<float>(v)); break;
    case DType::i8: static_cast<int8_t*>(p)[i] = static_cast<int8_t>(saturate_trunc(v, -128.0, 127.0)); break;
    case DType::u8: static_cast<uint8_t*>(p)[i] = static_cast<uint8_t>(saturate_trunc(v, 0.0, 255.0)); break;
    case DType::i32:
      static_cast<int32_t*>(p)[i] = static_cast<int32_t>(saturate_trunc(v, -2147483648.0, 2147483647.0));
      break;
    case DType::i64:
      // 2^63 itself is not representable in i64; the largest double below it is.
      static_cast<int64_t*>(p)[i] =
          static_cast<int64_t>(saturate_trunc(v, -9223372036854775808.0, 9223372036854774784.0));
      break;
    case DType::f8_e4m3:
      static_cast<__nv_fp8_storage_t*>(p)[i] = __nv_cvt_float_to_fp8(static_cast<float>(v), __NV_SATFINITE, __NV_E4M3);
      break;
  }
}

template <bool FLAT>
__global__ void cast_kernel(void* dst, int dst_code, const void* src, int src_code, Strided2 idx, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    int64_t os = i, od = i;
    if constexpr (!FLAT) idx.offsets(i, os, od);
    store_from_double(dst, od, dst_code, load_as_double(src, os, src_code));
  }
}

/// dst (dtype dst_t) <- src (dtype src_t), n elements; idx.nd == 0 means both contiguous.
inline void cast(void* dst, DType dst_t, const void* src, DType src_t, const Strided2& idx, int64_t n,
                 cudaStream_t s) {
  if (n == 0) return;
  if (idx.nd == 0)
    cast_kernel<true><<<grid_for(n), 256, 0, s>>>(dst, dtype_code(dst_t), src, dtype_code(src_t), idx, n);
  else
    cast_kernel<false><<<grid_for(n), 256, 0, s>>>(dst, dtype_code(dst_t), src, dtype_code(src_t), idx, n);
  SC_CUDA_CHECK_LAUNCH();
}

}  // namespace stagecraft::kernels::cuda
