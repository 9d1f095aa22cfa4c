#pragma once
// Normalisations, f32 statistics with two passes (mean, then centred squares) so
// large-offset activations do not lose precision:
//  - layer_norm / rms_norm: one block per row of the last dim;
//  - group_norm: a partial-statistics pass over chunks of each group (so a VAE
//    group of a million elements still fills the GPU), a Chan combine per group,
//    and an element-wise apply with optional fused SiLU.
// Affine params are contiguous [C] of any float dtype (runtime code), or null.
#include "kernels/cuda/common.cuh"

namespace stagecraft::kernels::cuda {

template <class T, bool RMS>
__global__ void row_norm_kernel(T* __restrict__ out, const T* __restrict__ in, int64_t C, const void* w, int w_code,
                                const void* b, int b_code, float eps) {
  __shared__ float scratch[32];
  const T* x = in + blockIdx.x * C;
  T* y = out + blockIdx.x * C;
  float mean = 0.0f;
  if constexpr (!RMS) {
    float s = 0.0f;
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) s += to_f32(x[c]);
    mean = block_sum(s, scratch) / static_cast<float>(C);
  }
  float q = 0.0f;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
    const float d = to_f32(x[c]) - mean;
    q += d * d;
  }
  const float rstd = rsqrtf(block_sum(q, scratch) / static_cast<float>(C) + eps);
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
    float v = (to_f32(x[c]) - mean) * rstd;
    if (w) v *= load_any(w, c, w_code);
    if (b) v += load_any(b, c, b_code);
    y[c] = from_f32<T>(v);
  }
}

/// layer_norm (rms = false) or rms_norm (rms = true) of contiguous [rows, C].
template <class T>
void row_norm(T* out, const T* in, int64_t rows, int64_t C, const void* w, DType w_dtype, const void* b,
              DType b_dtype, float eps, bool rms, cudaStream_t s) {
  if (rows == 0 || C == 0) return;
  const int threads = C <= 256 ? 64 : C <= 2048 ? 256 : 512;
  for (int64_t r0 = 0; r0 < rows; r0 += 2147483647LL) {
    const unsigned nr = static_cast<unsigned>(std::min<int64_t>(rows - r0, 2147483647LL));
    if (rms)
      row_norm_kernel<T, true><<<nr, threads, 0, s>>>(out + r0 * C, in + r0 * C, C, w, dtype_code(w_dtype), b,
                                                       dtype_code(b_dtype), eps);
    else
      row_norm_kernel<T, false><<<nr, threads, 0, s>>>(out + r0 * C, in + r0 * C, C, w, dtype_code(w_dtype), b,
                                                        dtype_code(b_dtype), eps);
    SC_CUDA_CHECK_LAUNCH();
  }
}

/// Per chunk of a group: count, mean and sum of squared deviations (M2).
struct GroupPartial {
  float count, mean, m2;
};

template <class T>
__global__ void group_partial_kernel(GroupPartial* __restrict__ parts, const T* __restrict__ in, int64_t span,
                                     int64_t chunk) {
  __shared__ float scratch[32];
  const int64_t group = blockIdx.x, part = blockIdx.y;
  const int64_t begin = part * chunk, end = std::min<int64_t>(span, begin + chunk);
  const T* x = in + group * span;
  float s = 0.0f;
  for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) s += to_f32(x[i]);
  const float n = static_cast<float>(end > begin ? end - begin : 0);
  const float total = block_sum(s, scratch);
  const float mean = n > 0.0f ? total / n : 0.0f;
  float q = 0.0f;
  for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) {
    const float d = to_f32(x[i]) - mean;
    q += d * d;
  }
  const float m2 = block_sum(q, scratch);
  if (threadIdx.x == 0) parts[group * gridDim.y + part] = {n, mean, m2};
}

/// One thread per group: Chan's parallel combine of the partials -> (mean, rstd).
__global__ void group_combine_kernel(float2* __restrict__ stats, const GroupPartial* __restrict__ parts,
                                     int64_t groups, int nparts, float eps) {
  const int64_t g = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (g >= groups) return;
  float n = 0.0f, mean = 0.0f, m2 = 0.0f;
  for (int p = 0; p < nparts; ++p) {
    const GroupPartial q = parts[g * nparts + p];
    if (q.count == 0.0f) continue;
    const float tot = n + q.count, delta = q.mean - mean;
    mean += delta * q.count / tot;
    m2 += q.m2 + delta * delta * n * q.count / tot;
    n = tot;
  }
  stats[g] = make_float2(mean, rsqrtf((n > 0.0f ? m2 / n : 0.0f) + eps));
}

template <class T, bool SILU>
__global__ void group_apply_kernel(T* __restrict__ out, const T* __restrict__ in, const float2* __restrict__ stats,
                                   int64_t n, int64_t C, int64_t HW, int64_t cpg, const void* w, int w_code,
                                   const void* b, int b_code) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t nc = i / HW, c = nc % C, group = (nc / C) * (C / cpg) + c / cpg;
    const float2 st = stats[group];
    float v = (to_f32(in[i]) - st.x) * st.y;
    if (w) v *= load_any(w, c, w_code);
    if (b) v += load_any(b, c, b_code);
    if constexpr (SILU) v = v / (1.0f + expf(-v));
    out[i] = from_f32<T>(v);
  }
}

/// group_norm of contiguous [N, C, HW] in `groups` groups. `scratch` holds at least
/// group_norm_scratch_bytes(N, C, HW, groups) bytes of device memory.
inline int group_norm_parts(int64_t span) {
  return static_cast<int>(std::clamp<int64_t>((span + 16383) / 16384, 1, 1024));
}
inline size_t group_norm_scratch_bytes(int64_t N, int64_t groups, int64_t span) {
  const size_t ng = static_cast<size_t>(N * groups);
  return ng * group_norm_parts(span) * sizeof(GroupPartial) + ng * sizeof(float2);
}

template <class T>
void group_norm(T* out, const T* in, int64_t N, int64_t C, int64_t HW, int64_t groups, const void* w,
                DType w_dtype, const void* b, DType b_dtype, float eps, bool silu, void* scratch, cudaStream_t s) {
  const int64_t n = N * C * HW, ng = N * groups, span = (C / groups) * HW;
  if (n == 0) return;
  const int parts = group_norm_parts(span);
  auto* partial = static_cast<GroupPartial*>(scratch);
  auto* stats = reinterpret_cast<float2*>(partial + ng * parts);
  const int64_t chunk = (span + parts - 1) / parts;
  SC_CHECK(ng <= 2147483647LL, Errc::unsupported, "group_norm: too many groups for one launch");
  group_partial_kernel<T><<<dim3(static_cast<unsigned>(ng), parts), 256, 0, s>>>(partial, in, span, chunk);
  SC_CUDA_CHECK_LAUNCH();
  group_combine_kernel<<<grid_for(ng, 128), 128, 0, s>>>(stats, partial, ng, parts, eps);
  SC_CUDA_CHECK_LAUNCH();
  const int64_t cpg = C / groups;
  if (silu)
    group_apply_kernel<T, true><<<grid_for(n), 256, 0, s>>>(out, in, stats, n, C, HW, cpg, w, dtype_code(w_dtype), b,
                                                            dtype_code(b_dtype));
  else
    group_apply_kernel<T, false><<<grid_for(n), 256, 0, s>>>(out, in, stats, n, C, HW, cpg, w, dtype_code(w_dtype),
                                                             b, dtype_code(b_dtype));
  SC_CUDA_CHECK_LAUNCH();
}

}  // namespace stagecraft::kernels::cuda
