#pragma once
// Post-processing: the decoder's image in [-1, 1] to 8-bit RGB, exactly as diffusers'
// VaeImageProcessor does it ((x / 2 + 0.5).clamp(0, 1) · 255, rounded half to even),
// PNG encoding and decoding with libpng, and an optional antialiased bilinear resize.
// These run on the host: the pixels leave the device here anyway to become a file.
//
//   Tensor rgb = to_uint8(image);                // [B, 3, H, W] any device -> u8 [B, H, W, 3] CPU
//   write_png("out.png", rgb.select(0, 0));      // [H, W, 3]
//   Tensor back = read_png("out.png");           // u8 [H, W, 3]
//   Tensor half = resize_bilinear(back, 32, 32);
#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.hpp"

namespace stagecraft {

/// image [B, 3, H, W] (any float dtype, any device) -> u8 [B, H, W, 3] on the CPU.
Tensor to_uint8(const Tensor& image);
/// rgb u8 [H, W, 3] (or [1, H, W, 3]) -> PNG bytes (8-bit RGB, no interlace).
std::vector<uint8_t> encode_png(const Tensor& rgb);
/// Writes encode_png(rgb) to `path`; Error(io) naming the path on failure.
void write_png(const std::string& path, const Tensor& rgb);
/// PNG bytes -> u8 [H, W, 3] (palette, grey and 16-bit expanded or reduced to RGB8, alpha dropped).
Tensor decode_png(const std::vector<uint8_t>& bytes);
Tensor read_png(const std::string& path);
/// u8 [H, W, 3] (or [B, H, W, 3]) -> u8 [out_h, out_w, 3]: separable triangle filter whose
/// support widens with the downscale factor (PIL's BILINEAR), pixel centres aligned.
Tensor resize_bilinear(const Tensor& rgb, int out_h, int out_w);

}  // namespace stagecraft
