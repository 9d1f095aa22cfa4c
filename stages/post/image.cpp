// Post-processing: see image.hpp.
#include "stages/post/image.hpp"

#include <png.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>

#include "core/error.hpp"
#include "kernels/ops.hpp"

namespace stagecraft {

Tensor to_uint8(const Tensor& image) {
  SC_CHECK(image.ndim() == 4 && image.size(1) == 3, Errc::shape_mismatch,
           "to_uint8 wants an image [B, 3, H, W], got " << image.shape_str());
  const Tensor host = ops::to_device(image, Device::cpu()).contiguous().to(DType::f32);
  const int64_t B = image.size(0), H = image.size(2), W = image.size(3);
  Tensor out = Tensor::empty({B, H, W, 3}, DType::u8, Device::cpu());
  const float* src = host.data_as<float>();
  uint8_t* dst = out.data_as<uint8_t>();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t c = 0; c < 3; ++c)
      for (int64_t y = 0; y < H; ++y)
        for (int64_t x = 0; x < W; ++x) {
          float v = src[((b * 3 + c) * H + y) * W + x] / 2.0f + 0.5f;
          v = std::clamp(v, 0.0f, 1.0f);  // NaN stays NaN here, and becomes 0 below
          const float s = std::nearbyint(v * 255.0f);
          dst[((b * H + y) * W + x) * 3 + c] = s >= 0.0f ? static_cast<uint8_t>(s) : 0;
        }
  return out;
}

namespace {

Tensor as_hwc3(const Tensor& rgb, const char* what) {
  Tensor t = rgb;
  if (t.ndim() == 4 && t.size(0) == 1) t = t.select(0, 0);
  SC_CHECK(t.ndim() == 3 && t.size(2) == 3 && t.dtype() == DType::u8, Errc::shape_mismatch,
           what << " wants u8 [H, W, 3], got " << rgb.describe());
  return ops::to_device(t, Device::cpu()).contiguous();
}

void png_write_to_vector(png_structp png, png_bytep data, png_size_t len) {
  auto* out = static_cast<std::vector<uint8_t>*>(png_get_io_ptr(png));
  out->insert(out->end(), data, data + len);
}

void png_error_throw(png_structp, png_const_charp msg) { throw Error(Errc::io, std::string("libpng: ") + msg); }
void png_warning_ignore(png_structp, png_const_charp) {}

struct ReadCursor {
  const std::vector<uint8_t>* bytes;
  size_t pos;
};

void png_read_from_vector(png_structp png, png_bytep data, png_size_t len) {
  auto* cur = static_cast<ReadCursor*>(png_get_io_ptr(png));
  if (cur->pos + len > cur->bytes->size()) png_error(png, "truncated PNG data");
  std::memcpy(data, cur->bytes->data() + cur->pos, len);
  cur->pos += len;
}

}  // namespace

std::vector<uint8_t> encode_png(const Tensor& rgb_in) {
  const Tensor rgb = as_hwc3(rgb_in, "encode_png");
  const auto H = static_cast<png_uint_32>(rgb.size(0)), W = static_cast<png_uint_32>(rgb.size(1));
  std::vector<uint8_t> out;
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, png_error_throw, png_warning_ignore);
  SC_CHECK(png, Errc::internal, "png_create_write_struct failed");
  png_infop info = png_create_info_struct(png);
  try {
    SC_CHECK(info, Errc::internal, "png_create_info_struct failed");
    png_set_write_fn(png, &out, png_write_to_vector, nullptr);
    png_set_IHDR(png, info, W, H, 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
                 PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    const auto* base = rgb.data_as<uint8_t>();
    for (png_uint_32 y = 0; y < H; ++y) png_write_row(png, const_cast<png_bytep>(base + size_t(y) * W * 3));
    png_write_end(png, nullptr);
  } catch (...) {
    png_destroy_write_struct(&png, &info);
    throw;
  }
  png_destroy_write_struct(&png, &info);
  return out;
}

void write_png(const std::string& path, const Tensor& rgb) {
  const std::vector<uint8_t> bytes = encode_png(rgb);
  std::ofstream f(path, std::ios::binary);
  SC_CHECK(f.good(), Errc::io, "cannot open " << path << " for writing: check the folder exists and is writable");
  f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  SC_CHECK(f.good(), Errc::io, "writing " << path << " failed (disk full?)");
}

Tensor decode_png(const std::vector<uint8_t>& bytes) {
  SC_CHECK(bytes.size() >= 8 && png_sig_cmp(bytes.data(), 0, 8) == 0, Errc::parse, "not a PNG (bad signature)");
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, nullptr, png_error_throw, png_warning_ignore);
  SC_CHECK(png, Errc::internal, "png_create_read_struct failed");
  png_infop info = png_create_info_struct(png);
  Tensor out;
  try {
    SC_CHECK(info, Errc::internal, "png_create_info_struct failed");
    ReadCursor cur{&bytes, 0};
    png_set_read_fn(png, &cur, png_read_from_vector);
    png_read_info(png, info);
    const png_byte color = png_get_color_type(png, info);
    const png_byte depth = png_get_bit_depth(png, info);
    if (color == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
    if (color == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
    if (color == PNG_COLOR_TYPE_GRAY || color == PNG_COLOR_TYPE_GRAY_ALPHA) png_set_gray_to_rgb(png);
    if (depth == 16) png_set_strip_16(png);
    if (color & PNG_COLOR_MASK_ALPHA) png_set_strip_alpha(png);
    if (png_get_valid(png, info, PNG_INFO_tRNS)) png_set_tRNS_to_alpha(png), png_set_strip_alpha(png);
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
    const png_uint_32 W = png_get_image_width(png, info), H = png_get_image_height(png, info);
    SC_CHECK(png_get_rowbytes(png, info) == size_t(W) * 3, Errc::parse, "PNG did not convert to 8-bit RGB");
    out = Tensor::empty({int64_t(H), int64_t(W), 3}, DType::u8, Device::cpu());
    std::vector<png_bytep> rows(H);
    for (png_uint_32 y = 0; y < H; ++y) rows[y] = out.data_as<uint8_t>() + size_t(y) * W * 3;
    png_read_image(png, rows.data());
    png_read_end(png, nullptr);
  } catch (...) {
    png_destroy_read_struct(&png, &info, nullptr);
    throw;
  }
  png_destroy_read_struct(&png, &info, nullptr);
  return out;
}

Tensor read_png(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  SC_CHECK(f.good(), Errc::io, "cannot read " << path);
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  try {
    return decode_png(bytes);
  } catch (const Error& e) {
    SC_FAIL(Errc::parse, path << ": " << e.what());
  }
}

namespace {

// Weights of a 1-D triangle filter resampling `in` samples to `out` (PIL's BILINEAR):
// for each output index, the first input index and normalised weights.
struct Taps {
  std::vector<int> first;
  std::vector<std::vector<float>> w;
};

Taps triangle_taps(int in, int out) {
  Taps t;
  const double scale = static_cast<double>(in) / out;
  const double support = std::max(1.0, scale);
  for (int o = 0; o < out; ++o) {
    const double center = (o + 0.5) * scale;
    const int lo = std::max(0, static_cast<int>(std::floor(center - support)));
    const int hi = std::min(in, static_cast<int>(std::ceil(center + support)));
    std::vector<float> w;
    double sum = 0;
    for (int i = lo; i < hi; ++i) {
      const double d = std::abs((i + 0.5 - center) / support);
      const double v = d < 1.0 ? 1.0 - d : 0.0;
      w.push_back(static_cast<float>(v));
      sum += v;
    }
    if (sum > 0)
      for (float& v : w) v = static_cast<float>(v / sum);
    t.first.push_back(lo);
    t.w.push_back(std::move(w));
  }
  return t;
}

}  // namespace

Tensor resize_bilinear(const Tensor& rgb_in, int out_h, int out_w) {
  SC_CHECK(out_h > 0 && out_w > 0, Errc::invalid_argument, "resize target must be positive, got " << out_w << "x" << out_h);
  const Tensor rgb = as_hwc3(rgb_in, "resize_bilinear");
  const int H = static_cast<int>(rgb.size(0)), W = static_cast<int>(rgb.size(1));
  const Taps tx = triangle_taps(W, out_w), ty = triangle_taps(H, out_h);
  const uint8_t* src = rgb.data_as<uint8_t>();
  std::vector<float> mid(size_t(H) * out_w * 3);
  for (int y = 0; y < H; ++y)
    for (int x = 0; x < out_w; ++x)
      for (int c = 0; c < 3; ++c) {
        float acc = 0;
        for (size_t k = 0; k < tx.w[x].size(); ++k) acc += tx.w[x][k] * src[(size_t(y) * W + tx.first[x] + k) * 3 + c];
        mid[(size_t(y) * out_w + x) * 3 + c] = acc;
      }
  Tensor out = Tensor::empty({out_h, out_w, 3}, DType::u8, Device::cpu());
  uint8_t* dst = out.data_as<uint8_t>();
  for (int y = 0; y < out_h; ++y)
    for (int x = 0; x < out_w; ++x)
      for (int c = 0; c < 3; ++c) {
        float acc = 0;
        for (size_t k = 0; k < ty.w[y].size(); ++k) acc += ty.w[y][k] * mid[((ty.first[y] + k) * out_w + x) * 3 + c];
        dst[(size_t(y) * out_w + x) * 3 + c] = static_cast<uint8_t>(std::clamp(std::nearbyint(acc), 0.0f, 255.0f));
      }
  return out;
}

}  // namespace stagecraft
