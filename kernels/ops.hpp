#pragma once
// The one header stages include for compute. Every op dispatches on the
// device of its inputs to kernels/cpu/ or kernels/cuda/ (see kernels/backend.hpp),
// returns a new tensor on the same device, and exists on both backends with a
// CPU reference test. Inputs may be f32, f16 or bf16 (all inputs of one call
// share a dtype unless stated); accumulation is always f32. CUDA ops enqueue on
// current_stream() (core/stream.hpp) and return without synchronising.
//
// Layout conventions follow PyTorch: Linear weights are [out, in]; images are NCHW;
// attention tensors are [batch, heads, tokens, head_dim].
#include <optional>

#include "core/tensor.hpp"

namespace stagecraft::ops {

// ---- linear algebra ----
/// y = x · wᵀ + b. x [..., K], w [N, K], b [N] (optional). Output dtype = x dtype.
Tensor linear(const Tensor& x, const Tensor& w, const Tensor* bias = nullptr);
/// linear() computed item by item: x [B, ..., K] runs as B GEMMs of the same shape, one per
/// x[i], so an item's result is bit-for-bit the same whether it is alone or shares the call
/// with any number of others (a single GEMM's blocking, and so its rounding, depends on the
/// row count). The denoiser uses it so that a job batched with other jobs at a step gives
/// the same bytes as the job alone. Costs nothing when each item has many rows; with few
/// rows per item it trades some GEMM efficiency for reproducibility.
Tensor linear_per_item(const Tensor& x, const Tensor& w, const Tensor* bias = nullptr);
/// Batched matmul: a [B, M, K] · b [B, K, N] (or b [B, N, K] with trans_b) -> [B, M, N].
/// 2-D inputs are treated as B = 1.
Tensor matmul(const Tensor& a, const Tensor& b, bool trans_b = false);
/// gelu(linear_per_item(x, w, bias), tanh_approximation) in one pass over the output (a
/// feed-forward's first layer); batch invariant like linear_per_item. CUDA runs the two ops.
Tensor linear_gelu_per_item(const Tensor& x, const Tensor& w, const Tensor* bias, bool tanh_approximation);
/// residual + gate ⊙ linear_per_item(x, w, bias) in one pass over the output: an adaLN
/// block's gated residual. x [B, ..., K]; residual the output's shape [B, ..., N]; gate
/// [B, N], [B, 1, N] or [N] (any strides, e.g. a slice of a [B, 6, N] table), one row per
/// item of x; no gate means 1 (a plain residual). Batch invariant; CUDA runs the unfused ops.
Tensor linear_residual_per_item(const Tensor& x, const Tensor& w, const Tensor* bias, const Tensor& residual,
                                const Tensor* gate = nullptr);

// ---- attention ----
enum class AttentionLayout {
  heads_first,   ///< [B, H, Lq, D], the inputs' layout
  tokens_first,  ///< [B, Lq, H, D]: reshaped to [B, Lq, H·D] (free), the rows an output projection reads
};
struct AttentionOptions {
  bool causal = false;  ///< query i attends to keys j <= i (+ Lk - Lq offset)
  /// Optional [B, Lk] mask, u8 or i32/i64 or float: nonzero = attend, 0 = ignore.
  const Tensor* key_padding_mask = nullptr;
  float scale = 0.0f;   ///< 0 means 1/sqrt(head_dim)
  /// The output's layout. The CPU writes either directly; CUDA computes heads_first and
  /// copies (an exact permutation), so both give the same numbers in the same layout.
  AttentionLayout out_layout = AttentionLayout::heads_first;
};
/// softmax(q·kᵀ·scale + masks)·v. q [B, H, Lq, D], k/v [B, H, Lk, D] -> [B, H, Lq, D] (or
/// [B, Lq, H, D], opt.out_layout). Fully masked rows give zeros. CUDA: fused flash-style
/// kernel for D in {64, 72, 128} (other D fall back to a materialising path).
Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionOptions& opt = {});

// ---- normalisation and activations ----
Tensor softmax(const Tensor& x);  ///< over the last dim
/// Over the last dim; weight/bias [C] optional.
Tensor layer_norm(const Tensor& x, const Tensor* weight, const Tensor* bias, float eps);
/// x [N, C, ...] in `groups` groups; weight/bias [C] optional; then SiLU when `silu`.
Tensor group_norm(const Tensor& x, int groups, const Tensor* weight, const Tensor* bias, float eps,
                  bool silu = false);
Tensor rms_norm(const Tensor& x, const Tensor* weight, float eps);  ///< over the last dim
/// modulate(layer_norm(x, weight, bias, eps), shift, scale) in one pass (adaLN): x [B, L, C];
/// shift, scale [B, C], [B, 1, C] or [C], any strides. CUDA runs the two ops.
Tensor layer_norm_modulate(const Tensor& x, const Tensor* weight, const Tensor* bias, float eps, const Tensor& shift,
                           const Tensor& scale);
Tensor gelu(const Tensor& x, bool tanh_approximation = false);
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
/// conv2d(upsample_nearest2x(x), w, bias, stride, padding), bit for bit, without the
/// upsampled map where the backend can (a VAE decoder's Upsample2D). The CPU folds the
/// upsample into the Winograd input gather whenever the conv of the upsampled map takes
/// Winograd (docs/kernels.md says when); otherwise, and on CUDA, it runs the two ops.
Tensor conv2d_upsample2x(const Tensor& x, const Tensor& w, const Tensor* bias, int stride, int padding);

// ---- diffusion helpers ----
/// Sinusoidal embedding as diffusers' get_timestep_embedding: t [B] (f32) -> [B, dim] f32.
Tensor timestep_embedding(const Tensor& t, int dim, bool flip_sin_to_cos, float downscale_freq_shift,
                          float max_period = 10000.0f);
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

}  // namespace stagecraft::ops
