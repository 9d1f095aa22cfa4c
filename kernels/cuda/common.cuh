#pragma once
// Shared plumbing for the CUDA ops: the current stream, a device guard, dtype
// dispatch over float/__half/__nv_bfloat16, f32 load/store helpers, block
// reductions and a broadcast/strided indexer (up to kMaxDims dims).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "core/stream.hpp"
#include "core/tensor.hpp"
#include "kernels/cuda/cuda_check.cuh"

namespace stagecraft::kernels::cuda {

// ---- host side ----

inline cudaStream_t stream() { return static_cast<cudaStream_t>(current_stream()); }

/// Makes `device` current for the launches of one op and restores the caller's.
class DeviceGuard {
 public:
  explicit DeviceGuard(const Device& d) {
    SC_CUDA_CHECK(cudaGetDevice(&previous_));
    if (d.is_cuda() && d.index != previous_) {
      SC_CUDA_CHECK(cudaSetDevice(d.index));
      changed_ = true;
    }
  }
  ~DeviceGuard() {
    if (changed_) cudaSetDevice(previous_);
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = 0;
  bool changed_ = false;
};

/// Calls f(T{}) with T the CUDA element type of a floating dtype.
template <class F>
void dispatch_float(DType t, const char* op, F&& f) {
  switch (t) {
    case DType::f32: f(float{}); break;
    case DType::f16: f(__half{}); break;
    case DType::bf16: f(__nv_bfloat16{}); break;
    default:
      SC_FAIL(Errc::unsupported, op << " on CUDA supports f32, f16 and bf16, got " << dtype_name(t)
                                    << "; cast the input first");
  }
}

/// Calls f(E{}) with E an unsigned integer of the dtype's size: for ops that only move
/// elements (patchify, upsampling), which then work for every dtype.
template <class F>
void dispatch_bytes(DType t, F&& f) {
  switch (dtype_size(t)) {
    case 1: f(uint8_t{}); break;
    case 2: f(uint16_t{}); break;
    case 4: f(uint32_t{}); break;
    case 8: f(uint64_t{}); break;
    default: SC_FAIL(Errc::internal, "no element type of " << dtype_size(t) << " bytes");
  }
}

/// Enough blocks for n elements with grid-stride loops, capped so huge tensors do not
/// launch millions of tiny blocks.
inline unsigned grid_for(int64_t n, int threads = 256) {
  int64_t b = (n + threads - 1) / threads;
  return static_cast<unsigned>(std::clamp<int64_t>(b, 1, 65536));
}

/// Requires a CUDA tensor; names the op so the message says where it came from.
inline void require_cuda(const Tensor& t, const char* op, const char* what) {
  SC_CHECK(t.defined(), Errc::invalid_argument, op << ": " << what << " is undefined");
  SC_CHECK(t.device().is_cuda(), Errc::invalid_argument,
           op << ": " << what << " must be on CUDA, got " << t.describe() << "; move it with ops::to_device");
}

Tensor contiguous(const Tensor& x);  // kernels/cuda/copy.cu
Tensor cast(const Tensor& x, DType dtype);

/// The tensor itself when contiguous, else a contiguous device copy.
inline Tensor contig(const Tensor& x) { return x.is_contiguous() ? x : contiguous(x); }

/// Numeric code of a dtype for kernels that read "any" dtype (masks, params).
inline int dtype_code(DType t) { return static_cast<int>(t); }

// ---- device side ----

__device__ __forceinline__ float to_f32(float v) { return v; }
__device__ __forceinline__ float to_f32(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_f32(__nv_bfloat16 v) { return __bfloat162float(v); }

template <class T>
__device__ __forceinline__ T from_f32(float v);
template <>
__device__ __forceinline__ float from_f32<float>(float v) { return v; }
template <>
__device__ __forceinline__ __half from_f32<__half>(float v) { return __float2half_rn(v); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

/// Reads element i of a contiguous array of runtime dtype `code` (a DType value) as float.
/// The branch is uniform across a launch, so the switch costs nothing measurable.
__device__ __forceinline__ float load_any(const void* p, int64_t i, int code) {
  switch (static_cast<DType>(code)) {
    case DType::f32: return static_cast<const float*>(p)[i];
    case DType::f16: return __half2float(static_cast<const __half*>(p)[i]);
    case DType::bf16: return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
    case DType::i8: return static_cast<float>(static_cast<const int8_t*>(p)[i]);
    case DType::u8: return static_cast<float>(static_cast<const uint8_t*>(p)[i]);
    case DType::i32: return static_cast<float>(static_cast<const int32_t*>(p)[i]);
    case DType::i64: return static_cast<float>(static_cast<const int64_t*>(p)[i]);
    case DType::f8_e4m3: {
      __nv_fp8_e4m3 v;
      v.__x = static_cast<const __nv_fp8_storage_t*>(p)[i];
      return static_cast<float>(v);
    }
  }
  return 0.0f;
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

/// Sum over the block (blockDim.x a multiple of 32, <= 1024); every thread gets the result.
/// `scratch` holds 32 floats; callers reuse it only after this returns.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  v = warp_sum(v);
  __syncthreads();  // scratch may still be read by a previous reduction
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < nwarps ? scratch[lane] : 0.0f;
  return warp_sum(v);
}
__device__ __forceinline__ float block_max(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < nwarps ? scratch[lane] : -INFINITY;
  return warp_max(v);
}

/// Logical index -> element offsets of up to two strided operands. Dims are
/// coalesced on the host, so the usual case walks one or two dims.
struct Strided2 {
  int nd = 0;
  int64_t size[kMaxDims];
  int64_t sa[kMaxDims];
  int64_t sb[kMaxDims];

  __device__ __forceinline__ void offsets(int64_t i, int64_t& oa, int64_t& ob) const {
    oa = 0;
    ob = 0;
    for (int d = nd - 1; d >= 0; --d) {
      const int64_t c = i % size[d];
      i /= size[d];
      oa += c * sa[d];
      ob += c * sb[d];
    }
  }
};

/// Builds a Strided2 for `shape` with operand strides `a`, `b` (same rank; stride 0
/// where broadcast), dropping size-1 dims and merging dims that are contiguous
/// with their neighbour in both operands.
inline Strided2 make_strided2(const Shape& shape, const Shape& a, const Shape& b) {
  Strided2 s;
  for (size_t d = 0; d < shape.size(); ++d) {
    if (shape[d] == 1) continue;
    if (s.nd > 0 && s.sa[s.nd - 1] == a[d] * shape[d] && s.sb[s.nd - 1] == b[d] * shape[d]) {
      s.size[s.nd - 1] *= shape[d];
      s.sa[s.nd - 1] = a[d];
      s.sb[s.nd - 1] = b[d];
      continue;
    }
    s.size[s.nd] = shape[d];
    s.sa[s.nd] = a[d];
    s.sb[s.nd] = b[d];
    ++s.nd;
  }
  return s;
}

}  // namespace stagecraft::kernels::cuda
