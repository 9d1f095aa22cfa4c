#pragma once
// CUDA backend: cuBLAS(Lt) for GEMM, own fused kernels for the rest, each a .cu/.cuh
// pair under kernels/cuda/. Called only by kernels/ops.cpp after it has checked shapes,
// dtypes and devices; same contracts as kernels/ops.hpp. Everything enqueues on
// current_stream() and allocates outputs with the stream-ordered pool.
#include "kernels/ops.hpp"

namespace stagecraft::kernels::cuda {


// ---- linear algebra ----
/// y = x · wᵀ + b. x [..., K], w [N, K], b [N] (optional). Output dtype = x dtype.
Tensor linear(const Tensor& x, const Tensor& w, const Tensor* bias);
/// linear() as one GEMM of the same shape per item of x's first dimension (batch invariant).
Tensor linear_per_item(const Tensor& x, const Tensor& w, const Tensor* bias);
/// Batched matmul: a [B, M, K] · b [B, K, N] (or b [B, N, K] with trans_b) -> [B, M, N].
/// 2-D inputs are treated as B = 1.
Tensor matmul(const Tensor& a, const Tensor& b, bool trans_b);

// ---- attention ----
/// softmax(q·kᵀ·scale + masks)·v. q [B, H, Lq, D], k/v [B, H, Lk, D] -> [B, H, Lq, D].
/// Fully masked rows give zeros. CUDA: fused flash-style kernel for D in {64, 72, 128}
/// (other D fall back to a materialising path).
Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, const ops::AttentionOptions& opt);

// ---- normalisation and activations ----
Tensor softmax(const Tensor& x);  ///< over the last dim
/// Over the last dim; weight/bias [C] optional.
Tensor layer_norm(const Tensor& x, const Tensor* weight, const Tensor* bias, float eps);
/// x [N, C, ...] in `groups` groups; weight/bias [C] optional; then SiLU when `silu`.
Tensor group_norm(const Tensor& x, int groups, const Tensor* weight, const Tensor* bias, float eps,
                  bool silu);
Tensor rms_norm(const Tensor& x, const Tensor* weight, float eps);  ///< over the last dim
Tensor gelu(const Tensor& x, bool tanh_approximation);
Tensor quick_gelu(const Tensor& x);  ///< x * sigmoid(1.702 x)
Tensor silu(const Tensor& x);

// ---- element-wise with numpy broadcasting ----
Tensor add(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
/// y = a * alpha + b * beta (same shape or broadcast b); used by schedulers and guidance.
Tensor axpby(const Tensor& a, float alpha, const Tensor& b, float beta);
Tensor scale(const Tensor& x, float s);
/// adaLN: x * (1 + scale) + shift. x [B, L, C]; shift, scale [B, C] or [B, 1, C] or [C].
Tensor modulate(const Tensor& x, const Tensor& shift, const Tensor& scale);

// ---- convolution and resampling (NCHW) ----
/// w [O, I, kh, kw] with kh = kw in {1, 3} (any odd k works on CPU), stride 1 or 2, zero padding.
Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor* bias, int stride, int padding);
Tensor upsample_nearest2x(const Tensor& x);
/// upsample_nearest2x then conv2d (the CPU folds them; here the two ops, same numbers).
Tensor conv2d_upsample2x(const Tensor& x, const Tensor& w, const Tensor* bias, int stride, int padding);

// ---- diffusion helpers ----
/// Sinusoidal embedding as diffusers' get_timestep_embedding: t [B] (f32) -> [B, dim] f32.
Tensor timestep_embedding(const Tensor& t, int dim, bool flip_sin_to_cos, float downscale_freq_shift,
                          float max_period);
/// x [B, C, H, W] -> [B, (H/p)(W/p), C·p·p]; the last dim in (c, py, px) order, which
/// matches a conv2d(kernel = stride = p) weight reshaped to [O, C·p·p].
Tensor patchify(const Tensor& x, int p);
/// x [B, (H/p)(W/p), p·p·C] in (py, px, c) order (PixArt's final layer) -> [B, C, H, W].
Tensor unpatchify(const Tensor& x, int p, int channels, int height, int width);

// ---- data movement ----
Tensor cast(const Tensor& x, DType dtype);
/// Contiguous copy (any device); returns x itself when already contiguous.
Tensor contiguous(const Tensor& x);
/// Copy to another device, enqueued on current_stream(); host sources should be
/// pinned for the copy to overlap. Returns x when already there.
Tensor to_device(const Tensor& x, Device device);
/// Concatenate along `dim` (same device and dtype).
Tensor cat(const std::vector<Tensor>& xs, int dim);


}  // namespace stagecraft::kernels::cuda
