#pragma once
// Diffusion helpers: sinusoidal timestep embedding (diffusers'
// get_timestep_embedding), patchify / unpatchify in the layouts of kernels/ops.hpp,
// and nearest-neighbour 2× upsampling. Pure index maps, one thread per output; the
// movers are instantiated per element size, so they take any dtype.
#include "kernels/cuda/common.cuh"

namespace stagecraft::kernels::cuda {

/// out [B, dim] f32. Computed in f32 like diffusers: freq_j = exp(-ln(max_period)·j /
/// (half - shift)), arg = t·freq_j, [sin | cos] (or [cos | sin] when flipped), zero pad
/// for odd dim. Uses precise sinf/cosf: arguments reach ~1000 rad.
/// `neg_log` is -ln(max_period) rounded from double on the host and `denom` is half - shift,
/// both as the CPU backend computes them, so the two backends agree to the last bit of
/// the frequency.
__global__ void timestep_embedding_kernel(float* __restrict__ out, const void* t, int t_code, int64_t B, int dim,
                                          bool flip, float neg_log, float denom) {
  const int half = dim / 2;
  const int64_t n = B * dim;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t b = i / dim;
    const int j = static_cast<int>(i % dim);
    float v = 0.0f;
    if (j < 2 * half) {
      const int f = j % half;
      const bool first_half = j < half;
      const float exponent = neg_log * static_cast<float>(f) / denom;
      const float arg = load_any(t, b, t_code) * expf(exponent);
      const bool use_sin = flip ? !first_half : first_half;
      v = use_sin ? sinf(arg) : cosf(arg);
    }
    out[i] = v;
  }
}

/// out [B, (H/p)(W/p), C·p·p] with the last dim in (c, py, px) order, from x [B, C, H, W].
template <class T>
__global__ void patchify_kernel(T* __restrict__ out, const T* __restrict__ x, int64_t B, int64_t C, int64_t H,
                                int64_t W, int p) {
  const int64_t Hp = H / p, Wp = W / p, n = B * C * H * W, K = C * p * p;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t k = i % K, tok = (i / K) % (Hp * Wp), b = i / (K * Hp * Wp);
    const int64_t px = k % p, py = (k / p) % p, c = k / (p * p);
    const int64_t hy = tok / Wp, wx = tok % Wp;
    out[i] = x[((b * C + c) * H + hy * p + py) * W + wx * p + px];
  }
}

/// out [B, C, H, W] from x [B, (H/p)(W/p), p·p·C] in (py, px, c) order.
template <class T>
__global__ void unpatchify_kernel(T* __restrict__ out, const T* __restrict__ x, int64_t B, int64_t C, int64_t H,
                                  int64_t W, int p) {
  const int64_t Wp = W / p, n = B * C * H * W;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t xw = i % W, yh = (i / W) % H, c = (i / (W * H)) % C, b = i / (W * H * C);
    const int64_t hy = yh / p, py = yh % p, wx = xw / p, px = xw % p;
    out[i] = x[(b * (H / p) * Wp + hy * Wp + wx) * (p * p * C) + (py * p + px) * C + c];
  }
}

/// out [N, C, 2H, 2W] from x [N, C, H, W].
template <class T>
__global__ void upsample_nearest2x_kernel(T* __restrict__ out, const T* __restrict__ x, int64_t planes, int64_t H,
                                          int64_t W) {
  const int64_t W2 = 2 * W, n = planes * 4 * H * W;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t ox = i % W2, oy = (i / W2) % (2 * H), plane = i / (W2 * 2 * H);
    out[i] = x[(plane * H + oy / 2) * W + ox / 2];
  }
}

template <class T>
void patchify(T* out, const T* x, int64_t B, int64_t C, int64_t H, int64_t W, int p, cudaStream_t s) {
  const int64_t n = B * C * H * W;
  if (n == 0) return;
  patchify_kernel<T><<<grid_for(n), 256, 0, s>>>(out, x, B, C, H, W, p);
  SC_CUDA_CHECK_LAUNCH();
}
template <class T>
void unpatchify(T* out, const T* x, int64_t B, int64_t C, int64_t H, int64_t W, int p, cudaStream_t s) {
  const int64_t n = B * C * H * W;
  if (n == 0) return;
  unpatchify_kernel<T><<<grid_for(n), 256, 0, s>>>(out, x, B, C, H, W, p);
  SC_CUDA_CHECK_LAUNCH();
}
template <class T>
void upsample_nearest2x(T* out, const T* x, int64_t planes, int64_t H, int64_t W, cudaStream_t s) {
  const int64_t n = planes * 4 * H * W;
  if (n == 0) return;
  upsample_nearest2x_kernel<T><<<grid_for(n), 256, 0, s>>>(out, x, planes, H, W);
  SC_CUDA_CHECK_LAUNCH();
}

}  // namespace stagecraft::kernels::cuda
