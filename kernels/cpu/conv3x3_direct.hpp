#pragma once
// Direct 3x3 / stride 1 / padding 1 convolution on AVX2 for small maps (internal to
// kernels/cpu/; conv2d picks it, see conv2d.cpp). Contiguous f32 NCHW input x
// [N, I, H, W], weights [O, I, 3, 3], optional bias [O], output y [N, O, H, W].
// Every output is summed over (channel, ky, kx) in that fixed order, whatever N is.
#include <cstdint>

namespace stagecraft::kernels::cpu {

/// False when the build has no AVX2/FMA; conv3x3_direct must not be called then.
bool conv3x3_direct_available();
void conv3x3_direct(const float* x, const float* w, const float* bias, float* y, int64_t N, int64_t I, int64_t H,
                    int64_t W, int64_t O);

}  // namespace stagecraft::kernels::cpu
