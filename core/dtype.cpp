#include "core/dtype.hpp"

#include <cmath>
#include <cstring>
#include <limits>

#include "core/error.hpp"

namespace stagecraft {

namespace {

uint32_t float_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

float bits_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

constexpr DType kAll[] = {DType::f32, DType::f16, DType::bf16, DType::i8,
                          DType::u8,  DType::i32, DType::i64,  DType::f8_e4m3};

}  // namespace

size_t dtype_size(DType t) {
  switch (t) {
    case DType::f32: return 4;
    case DType::f16: return 2;
    case DType::bf16: return 2;
    case DType::i8: return 1;
    case DType::u8: return 1;
    case DType::i32: return 4;
    case DType::i64: return 8;
    case DType::f8_e4m3: return 1;
  }
  SC_FAIL(Errc::internal, "dtype_size: unknown dtype value " << static_cast<int>(t));
}

const char* dtype_name(DType t) {
  switch (t) {
    case DType::f32: return "f32";
    case DType::f16: return "f16";
    case DType::bf16: return "bf16";
    case DType::i8: return "i8";
    case DType::u8: return "u8";
    case DType::i32: return "i32";
    case DType::i64: return "i64";
    case DType::f8_e4m3: return "f8_e4m3";
  }
  return "unknown";
}

const char* dtype_safetensors_name(DType t) {
  switch (t) {
    case DType::f32: return "F32";
    case DType::f16: return "F16";
    case DType::bf16: return "BF16";
    case DType::i8: return "I8";
    case DType::u8: return "U8";
    case DType::i32: return "I32";
    case DType::i64: return "I64";
    case DType::f8_e4m3: return "F8_E4M3";
  }
  return "UNKNOWN";
}

DType parse_dtype(std::string_view name) {
  for (DType t : kAll) {
    if (name == dtype_name(t) || name == dtype_safetensors_name(t)) return t;
  }
  // Common aliases from PyTorch / numpy configs.
  if (name == "float32" || name == "float") return DType::f32;
  if (name == "float16" || name == "half") return DType::f16;
  if (name == "bfloat16") return DType::bf16;
  if (name == "int8") return DType::i8;
  if (name == "uint8") return DType::u8;
  if (name == "int32") return DType::i32;
  if (name == "int64") return DType::i64;
  if (name == "float8_e4m3fn") return DType::f8_e4m3;
  SC_FAIL(Errc::parse, "unknown dtype '" << name
                                          << "'; use one of f32, f16, bf16, i8, u8, i32, i64, f8_e4m3 "
                                             "(or the safetensors spellings F32, F16, BF16, I8, U8, I32, I64, F8_E4M3)");
}

bool is_floating(DType t) {
  return t == DType::f32 || t == DType::f16 || t == DType::bf16 || t == DType::f8_e4m3;
}

uint16_t f32_to_f16(float f) {
  const uint32_t x = float_bits(f);
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  const uint32_t ax = x & 0x7fffffffu;
  if (ax >= 0x7f800000u) {
    // Keep NaN a (quiet) NaN, carrying the top payload bits; infinity stays infinity.
    if (ax > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u | ((ax >> 13) & 0x3ffu));
    return static_cast<uint16_t>(sign | 0x7c00u);
  }
  // 65520 is the halfway point between 65504 (odd mantissa) and 65536: ties go to inf.
  if (ax >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);
  if (ax < 0x38800000u) {
    // Below 2^-14: an f16 subnormal, i.e. an integer multiple of 2^-24. Scaling by a
    // power of two is exact, so nearbyint (round-half-even by default) rounds once.
    const float scaled = bits_float(ax) * 16777216.0f;
    return static_cast<uint16_t>(sign | static_cast<uint16_t>(std::nearbyint(scaled)));
  }
  // Normal: round the 23-bit mantissa to 10 bits, half to even; a carry into the
  // exponent is the correct result. Rebias 127 -> 15.
  const uint32_t rounded = ax + 0xfffu + ((ax >> 13) & 1u);
  return static_cast<uint16_t>(sign | ((rounded - (112u << 23)) >> 13));
}

float f16_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t mant = h & 0x3ffu;
  if (exp == 0x1f) return bits_float(sign | 0x7f800000u | (mant << 13));
  if (exp == 0) {
    const float v = std::ldexp(static_cast<float>(mant), -24);
    return sign ? -v : v;
  }
  return bits_float(sign | ((exp + 112u) << 23) | (mant << 13));
}

uint16_t f32_to_bf16(float f) {
  const uint32_t x = float_bits(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((x >> 16) | 0x40u);  // quiet NaN
  return static_cast<uint16_t>((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

float bf16_to_f32(uint16_t b) { return bits_float(static_cast<uint32_t>(b) << 16); }

// OCP FP8 E4M3 ("e4m3fn"): bias 7, no infinities, S.1111.111 is NaN, max 448.
// Out-of-range values and infinities saturate to +-448 (the __NV_SATFINITE
// behaviour), which is what inference wants for activations and weights.
uint8_t f32_to_e4m3(float f) {
  const uint32_t x = float_bits(f);
  const uint8_t sign = static_cast<uint8_t>((x >> 24) & 0x80u);
  const uint32_t ax = x & 0x7fffffffu;
  if (ax > 0x7f800000u) return static_cast<uint8_t>(sign | 0x7fu);
  if (ax >= 0x43e00000u) return static_cast<uint8_t>(sign | 0x7eu);  // >= 448 (and inf)
  if (ax < 0x3c800000u) {
    // Below 2^-6: subnormal, a multiple of 2^-9. m == 8 encodes as 0x08, the smallest normal.
    const float scaled = bits_float(ax) * 512.0f;
    return static_cast<uint8_t>(sign | static_cast<uint8_t>(std::nearbyint(scaled)));
  }
  const uint32_t rounded = (ax + 0x7ffffu + ((ax >> 20) & 1u)) & ~0xfffffu;
  const uint32_t exp = ((rounded >> 23) & 0xffu) - 127u + 7u;
  const uint32_t code = (exp << 3) | ((rounded >> 20) & 7u);
  return static_cast<uint8_t>(sign | (code > 0x7eu ? 0x7eu : code));
}

float e4m3_to_f32(uint8_t v) {
  const bool neg = v & 0x80u;
  const int exp = (v >> 3) & 0xf;
  const int mant = v & 7;
  float r;
  if (exp == 0xf && mant == 7) {
    r = std::numeric_limits<float>::quiet_NaN();
  } else if (exp == 0) {
    r = std::ldexp(static_cast<float>(mant), -9);
  } else {
    r = std::ldexp(1.0f + static_cast<float>(mant) / 8.0f, exp - 7);
  }
  return neg ? -r : r;
}

}  // namespace stagecraft
