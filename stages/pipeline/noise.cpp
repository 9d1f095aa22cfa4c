// Seeded host noise: see noise.hpp.
#include "stages/pipeline/noise.hpp"

#include <cmath>

namespace stagecraft {

std::array<uint32_t, 4> philox4x32_10(std::array<uint32_t, 4> c, std::array<uint32_t, 2> k) {
  constexpr uint32_t M0 = 0xD2511F53u, M1 = 0xCD9E8D57u, W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;
  for (int r = 0; r < 10; ++r) {
    if (r > 0) {
      k[0] += W0;
      k[1] += W1;
    }
    const uint64_t p0 = static_cast<uint64_t>(M0) * c[0];
    const uint64_t p1 = static_cast<uint64_t>(M1) * c[2];
    c = {static_cast<uint32_t>(p1 >> 32) ^ c[1] ^ k[0], static_cast<uint32_t>(p1),
         static_cast<uint32_t>(p0 >> 32) ^ c[3] ^ k[1], static_cast<uint32_t>(p0)};
  }
  return c;
}

Tensor gaussian_noise(const Shape& shape, uint64_t seed) {
  Tensor out = Tensor::empty(shape, DType::f32, Device::cpu());
  float* p = out.data_as<float>();
  const int64_t n = out.numel();
  const std::array<uint32_t, 2> key = {static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32)};
  constexpr double kTwoPi = 6.283185307179586476925286766559;
  constexpr double k2m53 = 1.0 / 9007199254740992.0;
  for (int64_t pair = 0; pair * 2 < n; ++pair) {
    const uint64_t k = static_cast<uint64_t>(pair);
    const auto w = philox4x32_10({static_cast<uint32_t>(k), static_cast<uint32_t>(k >> 32), 0u, 0u}, key);
    const uint64_t a = (static_cast<uint64_t>(w[0]) << 32) | w[1];
    const uint64_t b = (static_cast<uint64_t>(w[2]) << 32) | w[3];
    const double u1 = (static_cast<double>(a >> 11) + 0.5) * k2m53;
    const double u2 = static_cast<double>(b >> 11) * k2m53;
    const double r = std::sqrt(-2.0 * std::log(u1));
    p[2 * pair] = static_cast<float>(r * std::cos(kTwoPi * u2));
    if (2 * pair + 1 < n) p[2 * pair + 1] = static_cast<float>(r * std::sin(kTwoPi * u2));
  }
  return out;
}

}  // namespace stagecraft
