// Post-processing: uint8 conversion as diffusers rounds it, PNG round trips through
// libpng, and the bilinear resize.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <fstream>

#include "core/error.hpp"
#include "stages/post/image.hpp"
#include "test_pixart_vae_support.hpp"

using namespace stagecraft;
using sc_test::TempDir;

TEST_CASE("to_uint8 maps [-1, 1] to 0..255 with clamping and half-to-even rounding") {
  // x/2 + 0.5 then * 255: -1 -> 0, 1 -> 255, 0 -> 127.5 -> 128 (even), out-of-range clamps.
  const float tie_low = (0.5f / 255.0f - 0.5f) * 2.0f;  // lands near 0.5 -> rounds to 0 or 1 as f32 gives
  const Tensor img = Tensor::from_vector({-1.0f, 1.0f, 0.0f, -7.0f, 3.0f, tie_low}, {1, 3, 1, 2});
  const Tensor u8 = to_uint8(img);
  REQUIRE(u8.shape() == Shape({1, 1, 2, 3}));
  REQUIRE(u8.dtype() == DType::u8);
  // layout [B, H, W, C]: pixel 0 = channels (img[0,0,0,0], img[0,1,0,0], img[0,2,0,0]) = (-1, 0, 3)
  CHECK(u8.item(0) == 0);
  CHECK(u8.item(1) == 128);
  CHECK(u8.item(2) == 255);
  CHECK(u8.item(3) == 255);  // pixel 1: (1, -7, tie_low)
  CHECK(u8.item(4) == 0);
  const float v = tie_low / 2.0f + 0.5f;
  CHECK(u8.item(5) == static_cast<int>(std::nearbyint(v * 255.0f)));
}

TEST_CASE("a PNG written with libpng reads back to the same pixels") {
  TempDir tmp;
  Tensor rgb = Tensor::empty({5, 7, 3}, DType::u8);
  for (int64_t i = 0; i < rgb.numel(); ++i) rgb.data_as<uint8_t>()[i] = static_cast<uint8_t>((i * 37 + 11) % 256);
  write_png(tmp / "x.png", rgb);
  std::ifstream f(tmp / "x.png", std::ios::binary);
  char sig[8];
  f.read(sig, 8);
  CHECK(std::string(sig + 1, 3) == "PNG");
  const Tensor back = read_png(tmp / "x.png");
  REQUIRE(back.shape() == rgb.shape());
  CHECK(std::equal(rgb.data_as<uint8_t>(), rgb.data_as<uint8_t>() + rgb.numel(), back.data_as<uint8_t>()));
  // A batch of one is accepted too.
  CHECK(decode_png(encode_png(rgb.unsqueeze(0))).to_vector() == rgb.to_vector());
}

TEST_CASE("reading something that is not a PNG is an error naming the file") {
  TempDir tmp;
  std::ofstream(tmp / "bad.png") << "definitely not a png";
  try {
    read_png(tmp / "bad.png");
    FAIL("expected an error");
  } catch (const Error& e) {
    CHECK(std::string(e.what()).find("bad.png") != std::string::npos);
  }
  CHECK_THROWS_AS(write_png(tmp / "f.png", Tensor::zeros({4, 4}, DType::u8)), Error);  // not [H, W, 3]
}

TEST_CASE("bilinear resize keeps flat colours, averages on downscale and is exact at the same size") {
  Tensor flat = Tensor::empty({6, 6, 3}, DType::u8);
  for (int64_t i = 0; i < flat.numel(); ++i) flat.data_as<uint8_t>()[i] = static_cast<uint8_t>(i % 3 == 0 ? 200 : 17);
  const Tensor up = resize_bilinear(flat, 13, 9);
  REQUIRE(up.shape() == Shape({13, 9, 3}));
  for (int64_t i = 0; i < up.numel(); ++i) CHECK(up.item(i) == (i % 3 == 0 ? 200 : 17));

  Tensor checker = Tensor::empty({8, 8, 3}, DType::u8);
  for (int y = 0; y < 8; ++y)
    for (int x = 0; x < 8; ++x)
      for (int c = 0; c < 3; ++c) checker.data_as<uint8_t>()[(y * 8 + x) * 3 + c] = ((x + y) % 2) ? 255 : 0;
  const Tensor down = resize_bilinear(checker, 2, 2);
  for (int64_t i = 0; i < down.numel(); ++i) CHECK(std::abs(down.item(i) - 127.5) <= 1.0);
  CHECK(resize_bilinear(checker, 8, 8).to_vector() == checker.to_vector());

  // A left-to-right ramp stays monotonic when upscaled.
  Tensor ramp = Tensor::empty({1, 4, 3}, DType::u8);
  for (int x = 0; x < 4; ++x)
    for (int c = 0; c < 3; ++c) ramp.data_as<uint8_t>()[x * 3 + c] = static_cast<uint8_t>(x * 80);
  const Tensor wide = resize_bilinear(ramp, 1, 16);
  for (int x = 1; x < 16; ++x) CHECK(wide.item(x * 3) >= wide.item((x - 1) * 3));
}
