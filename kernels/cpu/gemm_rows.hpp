#pragma once
// Row-invariant f32 GEMM for small products (internal to kernels/cpu/; linear_per_item
// uses it, see linear.cpp): y[M, N] = x[M, K] · w[N, K]ᵀ (+ bias[N]), all contiguous.
// Each output's sum runs in a fixed order that depends only on K, never on M or on the
// other rows of the call.
#include <cstdint>

namespace stagecraft::kernels::cpu {

void gemm_rows(const float* x, const float* w, const float* bias, float* y, int64_t M, int64_t N, int64_t K);

}  // namespace stagecraft::kernels::cpu
