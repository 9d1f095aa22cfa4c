#pragma once
// Deliberately naive reference implementations of every op in kernels/ops.hpp:
// plain loops over logical indices, double accumulation, one rounding to the output
// dtype at the end. They exist to be obviously correct, not fast — tests, the
// self-test and benchmark validation compare the real backends against them.
// CPU tensors only (any strides, any float dtype).
//
//   Tensor y = ops::linear(x, w, &b);
//   Tensor r = kernels::reference::linear(x, w, &b);
//   double err = kernels::reference::max_abs_diff(y, r);
#include <vector>

#include "kernels/ops.hpp"

namespace stagecraft::kernels::reference {

// ---- helpers ----
/// Every element in logical (row-major) order as double, whatever the strides and dtype.
std::vector<double> values(const Tensor& t);
/// A contiguous CPU tensor of `dtype` holding `v` (rounded once).
Tensor make(const std::vector<double>& v, const Shape& shape, DType dtype);
/// max |a - b| over all elements (shapes must match; either may live on any CPU dtype).
double max_abs_diff(const Tensor& a, const Tensor& b);
/// max |t| (for relative tolerances).
double max_abs(const Tensor& t);

// ---- the ops (same contracts as kernels/ops.hpp) ----
Tensor linear(const Tensor& x, const Tensor& w, const Tensor* bias);
Tensor linear_gelu(const Tensor& x, const Tensor& w, const Tensor* bias, bool tanh_approximation);  ///< ops::linear_gelu_per_item
Tensor linear_residual(const Tensor& x, const Tensor& w, const Tensor* bias, const Tensor& residual,
                       const Tensor* gate);  ///< ops::linear_residual_per_item
Tensor matmul(const Tensor& a, const Tensor& b, bool trans_b);
Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, const ops::AttentionOptions& opt);
Tensor softmax(const Tensor& x);
Tensor layer_norm(const Tensor& x, const Tensor* weight, const Tensor* bias, float eps);
Tensor layer_norm_modulate(const Tensor& x, const Tensor* weight, const Tensor* bias, float eps, const Tensor& shift,
                           const Tensor& scale);
Tensor group_norm(const Tensor& x, int groups, const Tensor* weight, const Tensor* bias, float eps, bool silu);
Tensor rms_norm(const Tensor& x, const Tensor* weight, float eps);
Tensor gelu(const Tensor& x, bool tanh_approximation);
Tensor quick_gelu(const Tensor& x);
Tensor silu(const Tensor& x);
Tensor add(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor axpby(const Tensor& a, float alpha, const Tensor& b, float beta);
Tensor scale(const Tensor& x, float s);
Tensor modulate(const Tensor& x, const Tensor& shift, const Tensor& scale);
Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor* bias, int stride, int padding);
Tensor upsample_nearest2x(const Tensor& x);
Tensor timestep_embedding(const Tensor& t, int dim, bool flip_sin_to_cos, float downscale_freq_shift,
                          float max_period);
Tensor patchify(const Tensor& x, int p);
Tensor unpatchify(const Tensor& x, int p, int channels, int height, int width);
Tensor cast(const Tensor& x, DType dtype);
Tensor contiguous(const Tensor& x);
Tensor cat(const std::vector<Tensor>& xs, int dim);

}  // namespace stagecraft::kernels::reference
