#pragma once
// CPU backend: OpenBLAS for GEMM, own loops (OpenMP-free, multithreaded where it pays)
// for everything else. Called only by kernels/ops.cpp after it has checked shapes,
// dtypes and devices; same contracts as kernels/ops.hpp.
#include "kernels/ops.hpp"

namespace stagecraft::kernels::cpu {


// ---- linear algebra ----
/// y = x · wᵀ + b. x [..., K], w [N, K], b [N] (optional). Output dtype = x dtype.
Tensor linear(const Tensor& x, const Tensor& w, const Tensor* bias);
/// linear() as one GEMM of the same shape per item of x's first dimension (batch invariant).
Tensor linear_per_item(const Tensor& x, const Tensor& w, const Tensor* bias);
/// Batched matmul: a [B, M, K] · b [B, K, N] (or b [B, N, K] with trans_b) -> [B, M, N].
/// 2-D inputs are treated as B = 1.
Tensor matmul(const Tensor& a, const Tensor& b, bool trans_b);
/// gelu(linear_per_item(x, w, bias)) with the GELU in gemm_rows's epilogue (linear_fused.cpp).
Tensor linear_gelu_per_item(const Tensor& x, const Tensor& w, const Tensor* bias, bool tanh_approximation);
/// residual + gate ⊙ linear_per_item(x, w, bias) in gemm_rows's epilogue; gate null means 1.
Tensor linear_residual_per_item(const Tensor& x, const Tensor& w, const Tensor* bias, const Tensor& residual,
                                const Tensor* gate);

// ---- attention ----
/// softmax(q·kᵀ·scale + masks)·v. q [B, H, Lq, D], k/v [B, H, Lk, D] -> [B, H, Lq, D] or
/// [B, Lq, H, D] (opt.out_layout), written directly. Fully masked rows give zeros.
Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, const ops::AttentionOptions& opt);

// ---- normalisation and activations ----
Tensor softmax(const Tensor& x);  ///< over the last dim
/// Over the last dim; weight/bias [C] optional.
Tensor layer_norm(const Tensor& x, const Tensor* weight, const Tensor* bias, float eps);
/// x [N, C, ...] in `groups` groups; weight/bias [C] optional; then SiLU when `silu`.
Tensor group_norm(const Tensor& x, int groups, const Tensor* weight, const Tensor* bias, float eps,
                  bool silu);
Tensor rms_norm(const Tensor& x, const Tensor* weight, float eps);  ///< over the last dim
/// layer_norm then x * (1 + scale) + shift in one pass. x [B, L, C]; shift, scale [B, C], [B, 1, C] or [C].
Tensor layer_norm_modulate(const Tensor& x, const Tensor* weight, const Tensor* bias, float eps, const Tensor& shift,
                           const Tensor& scale);
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
/// conv2d without the direct 3x3 kernel (always 1x1 GEMM or im2col + sgemm): the baseline
/// bench_kernels measures the direct kernel against; not dispatched by ops.
Tensor conv2d_gemm(const Tensor& x, const Tensor& w, const Tensor* bias, int stride, int padding);
Tensor upsample_nearest2x(const Tensor& x);
/// conv2d(upsample_nearest2x(x), ...) bit for bit; folded into the Winograd gather where
/// conv2d would take Winograd on the upsampled map (conv2d.cpp), else the two ops.
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


}  // namespace stagecraft::kernels::cpu
