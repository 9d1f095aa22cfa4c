#pragma once
// Seeded Gaussian noise that is the same on every device and every run: it is drawn
// on the host from a counter-based generator and only then copied to the device.
//
// Definition (so other implementations can reproduce it): element n (row-major) of
// a noise tensor for seed s is
//   k = n / 2;  (w0, w1, w2, w3) = Philox4x32-10(counter = (k mod 2^32, k >> 32, 0, 0),
//                                               key = (s mod 2^32, s >> 32))
//   u1 = ((w0·2^32 + w1) >> 11  + 0.5) · 2^-53        in (0, 1)
//   u2 = ((w2·2^32 + w3) >> 11) · 2^-53               in [0, 1)
//   z  = sqrt(-2 ln u1) · (n even ? cos(2π u2) : sin(2π u2))     (Box–Muller, in double)
// rounded to f32. Philox4x32-10 is Random123's (Salmon et al., SC'11).
//
//   Tensor z = gaussian_noise({1, 4, 8, 8}, 42);   // f32, CPU
#include <array>
#include <cstdint>

#include "core/tensor.hpp"

namespace stagecraft {

/// One Philox4x32-10 block.
std::array<uint32_t, 4> philox4x32_10(std::array<uint32_t, 4> counter, std::array<uint32_t, 2> key);

/// Standard normal f32 noise of `shape` on the CPU, as defined above.
Tensor gaussian_noise(const Shape& shape, uint64_t seed);

}  // namespace stagecraft
