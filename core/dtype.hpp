#pragma once
// Element types and host-side scalar conversions (f16, bf16, fp8 e4m3 <-> f32).
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace stagecraft {

enum class DType : uint8_t { f32, f16, bf16, i8, u8, i32, i64, f8_e4m3 };

size_t dtype_size(DType t);
/// Short lower-case name: "f32", "bf16", "f8_e4m3", ...
const char* dtype_name(DType t);
/// Parses either our names ("f16") or safetensors names ("F16", "BF16", "F8_E4M3").
/// Throws Error(parse) naming the accepted spellings.
DType parse_dtype(std::string_view name);
/// The safetensors header spelling: "F32", "F16", "BF16", "I8", "U8", "I32", "I64", "F8_E4M3".
const char* dtype_safetensors_name(DType t);
bool is_floating(DType t);

// Scalar conversions, round-to-nearest-even; e4m3 saturates to +-448 and keeps NaN.
uint16_t f32_to_f16(float f);
float f16_to_f32(uint16_t h);
uint16_t f32_to_bf16(float f);
float bf16_to_f32(uint16_t b);
uint8_t f32_to_e4m3(float f);
float e4m3_to_f32(uint8_t v);

}  // namespace stagecraft
