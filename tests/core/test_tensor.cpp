#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>

#include "core/error.hpp"
#include "core/tensor.hpp"

using namespace stagecraft;

namespace {

float bits_to_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

std::vector<float> iota(int n) {
  std::vector<float> v(n);
  std::iota(v.begin(), v.end(), 0.0f);
  return v;
}

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

}  // namespace

// ------------------------------------------------------------------ dtypes

TEST_CASE("dtype names, sizes and parsing agree for all eight dtypes") {
  const DType all[] = {DType::f32, DType::f16, DType::bf16, DType::i8, DType::u8, DType::i32, DType::i64, DType::f8_e4m3};
  const size_t sizes[] = {4, 2, 2, 1, 1, 4, 8, 1};
  for (int i = 0; i < 8; ++i) {
    CHECK(dtype_size(all[i]) == sizes[i]);
    CHECK(parse_dtype(dtype_name(all[i])) == all[i]);
    CHECK(parse_dtype(dtype_safetensors_name(all[i])) == all[i]);
  }
  CHECK(is_floating(DType::bf16));
  CHECK_FALSE(is_floating(DType::i32));
  const std::string msg = error_of([] { parse_dtype("f64"); });
  CHECK(contains(msg, "'f64'"));
  CHECK(contains(msg, "bf16"));
}

TEST_CASE("f16 conversion rounds to nearest even, handles subnormals, overflow and NaN") {
  CHECK(f32_to_f16(1.0f) == 0x3c00);
  CHECK(f32_to_f16(-2.0f) == 0xc000);
  CHECK(f32_to_f16(65504.0f) == 0x7bff);
  // 1 + 2^-11 is exactly halfway between 1 and 1 + 2^-10: ties go to the even mantissa (1.0).
  CHECK(f32_to_f16(1.0f + std::ldexp(1.0f, -11)) == 0x3c00);
  // 1 + 3*2^-11 is halfway between odd 0x3c01 and even 0x3c02: rounds up to even.
  CHECK(f32_to_f16(1.0f + 3 * std::ldexp(1.0f, -11)) == 0x3c02);
  CHECK(f32_to_f16(1.0f + std::ldexp(1.0f, -11) + std::ldexp(1.0f, -20)) == 0x3c01);  // just above half
  CHECK(f32_to_f16(65519.0f) == 0x7bff);
  CHECK(f32_to_f16(65520.0f) == 0x7c00);  // the tie above the largest finite value rounds to inf
  CHECK(f32_to_f16(std::numeric_limits<float>::infinity()) == 0x7c00);
  CHECK(f32_to_f16(std::ldexp(1.0f, -24)) == 0x0001);  // smallest subnormal
  CHECK(f32_to_f16(std::ldexp(1.0f, -25)) == 0x0000);  // half of it: tie to even zero
  CHECK(f32_to_f16(std::ldexp(3.0f, -25)) == 0x0002);  // 1.5 ulps: tie to even 2
  CHECK(f32_to_f16(-0.0f) == 0x8000);
  const uint16_t nan = f32_to_f16(std::numeric_limits<float>::quiet_NaN());
  CHECK((nan & 0x7c00) == 0x7c00);
  CHECK((nan & 0x03ff) != 0);
  CHECK(f16_to_f32(0x0001) == std::ldexp(1.0f, -24));
  CHECK(f16_to_f32(0x7bff) == 65504.0f);
  CHECK(std::isinf(f16_to_f32(0xfc00)));
  CHECK(std::isnan(f16_to_f32(0x7e00)));
  // Every finite f16 survives the round trip through f32.
  for (uint32_t h = 0; h < 0x10000; ++h) {
    if ((h & 0x7c00) == 0x7c00) continue;
    REQUIRE(f32_to_f16(f16_to_f32(static_cast<uint16_t>(h))) == h);
  }
}

TEST_CASE("bf16 conversion rounds to nearest even and keeps NaN a NaN") {
  CHECK(f32_to_bf16(1.0f) == 0x3f80);
  CHECK(f32_to_bf16(bits_to_float(0x3f808000)) == 0x3f80);  // tie, even stays
  CHECK(f32_to_bf16(bits_to_float(0x3f818000)) == 0x3f82);  // tie, odd rounds up
  CHECK(f32_to_bf16(bits_to_float(0x3f808001)) == 0x3f81);  // above tie
  CHECK(f32_to_bf16(bits_to_float(0x7f7fffff)) == 0x7f80);  // max float rounds to inf
  // A NaN whose payload lives only in the low bits must not truncate to infinity.
  const uint16_t nan = f32_to_bf16(bits_to_float(0x7f800001));
  CHECK(std::isnan(bf16_to_f32(nan)));
  CHECK(bf16_to_f32(0xc040) == -3.0f);
}

TEST_CASE("f8 e4m3 conversion rounds to nearest even, saturates at 448 and keeps NaN") {
  CHECK(f32_to_e4m3(1.0f) == 0x38);
  CHECK(f32_to_e4m3(448.0f) == 0x7e);
  CHECK(f32_to_e4m3(449.0f) == 0x7e);
  CHECK(f32_to_e4m3(1e9f) == 0x7e);
  CHECK(f32_to_e4m3(-1e9f) == 0xfe);
  CHECK(f32_to_e4m3(std::numeric_limits<float>::infinity()) == 0x7e);
  CHECK(f32_to_e4m3(-std::numeric_limits<float>::infinity()) == 0xfe);
  CHECK((f32_to_e4m3(std::numeric_limits<float>::quiet_NaN()) & 0x7f) == 0x7f);
  CHECK(std::isnan(e4m3_to_f32(0x7f)));
  CHECK(std::isnan(e4m3_to_f32(0xff)));
  CHECK(e4m3_to_f32(0x7e) == 448.0f);
  CHECK(e4m3_to_f32(0x01) == std::ldexp(1.0f, -9));  // smallest subnormal
  CHECK(f32_to_e4m3(1.0625f) == 0x38);               // halfway 1 .. 1.125: even (1.0)
  CHECK(f32_to_e4m3(1.1875f) == 0x3a);               // halfway 1.125 .. 1.25: even (1.25)
  CHECK(f32_to_e4m3(std::ldexp(1.0f, -10)) == 0x00);  // half the smallest subnormal: even zero
  CHECK(f32_to_e4m3(std::ldexp(3.0f, -10)) == 0x02);
  CHECK(f32_to_e4m3(std::ldexp(15.0f, -10)) == 0x08);  // rounds up into the smallest normal
  for (int c = 0; c < 256; ++c) {
    if ((c & 0x7f) == 0x7f) continue;
    REQUIRE(f32_to_e4m3(e4m3_to_f32(static_cast<uint8_t>(c))) == c);
  }
}

TEST_CASE("casting between all dtypes converts values, truncating and saturating into integers") {
  Tensor x = Tensor::from_vector({-300.7f, -1.5f, 0.0f, 2.5f, 127.9f, 300.0f}, {6});
  CHECK(x.to(DType::i8).to_vector() == std::vector<float>{-128, -1, 0, 2, 127, 127});
  CHECK(x.to(DType::u8).to_vector() == std::vector<float>{0, 0, 0, 2, 127, 255});
  CHECK(x.to(DType::i32).to_vector() == std::vector<float>{-300, -1, 0, 2, 127, 300});
  CHECK(x.to(DType::i64).to_vector() == std::vector<float>{-300, -1, 0, 2, 127, 300});
  CHECK(x.to(DType::f8_e4m3).to_vector() == std::vector<float>{-288, -1.5f, 0, 2.5f, 128, 288});
  CHECK(x.to(DType::bf16).to_vector() == std::vector<float>{-300.0f, -1.5f, 0, 2.5f, 128.0f, 300.0f});
  CHECK(x.to(DType::f16).to_vector() == std::vector<float>{-300.75f, -1.5f, 0, 2.5f, 127.875f, 300.0f});
  // Integer to float and integer to integer.
  Tensor i = x.to(DType::i32);
  CHECK(i.to(DType::i8).to_vector() == std::vector<float>{-128, -1, 0, 2, 127, 127});
  CHECK(i.to(DType::f16).to(DType::i64).to_vector() == std::vector<float>{-300, -1, 0, 2, 127, 300});
  Tensor nan = Tensor::from_vector({std::numeric_limits<float>::quiet_NaN()}, {1});
  CHECK(nan.to(DType::i32).item() == 0);
  CHECK(std::isnan(nan.to(DType::f8_e4m3).item()));
  CHECK(x.to(DType::f32).storage() == x.storage());  // same dtype: no copy
  Tensor big = Tensor::zeros({1}, DType::i64);
  big.data_as<int64_t>()[0] = (int64_t{1} << 53) + 1;
  CHECK(big.to(DType::i64).item() == static_cast<double>(int64_t{1} << 53));  // item reads through double
  CHECK(big.clone().data_as<int64_t>()[0] == (int64_t{1} << 53) + 1);        // copies keep every bit
}

// ------------------------------------------------------------------ tensors

TEST_CASE("empty, zeros, from_vector and describe") {
  Tensor z = Tensor::zeros({2, 3}, DType::bf16);
  CHECK(z.defined());
  CHECK(z.ndim() == 2);
  CHECK(z.numel() == 6);
  CHECK(z.nbytes() == 12);
  CHECK(z.strides() == Shape{3, 1});
  CHECK(z.describe() == "bf16[2, 3] cpu");
  CHECK(z.size(-1) == 3);
  for (int64_t i = 0; i < 6; ++i) CHECK(z.item(i) == 0.0);
  CHECK(reinterpret_cast<uintptr_t>(Tensor::empty({5}, DType::u8).data()) % 64 == 0);
  CHECK_FALSE(Tensor().defined());
  CHECK(Tensor().describe() == "undefined tensor");
  Tensor s = Tensor::from_vector({4.0f}, {});
  CHECK(s.ndim() == 0);
  CHECK(s.numel() == 1);
  CHECK(s.item() == 4.0);
  const std::string msg = error_of([] { Tensor::from_vector({1, 2, 3}, {2, 2}); });
  CHECK(contains(msg, "[2, 2]"));
  CHECK(contains(msg, "needs 4 values, got 3"));
}

TEST_CASE("more than eight dims are refused with the offending shape") {
  CHECK_NOTHROW(Tensor::empty(Shape(8, 1), DType::f32));
  const std::string msg = error_of([] { Tensor::empty(Shape(9, 1), DType::f32); });
  CHECK(contains(msg, "9 dims"));
  CHECK(contains(msg, "at most 8"));
  CHECK(contains(error_of([] { Tensor::empty(Shape(8, 1), DType::f32).unsqueeze(0); }), "already 8 dims"));
  CHECK(contains(error_of([] { Tensor::empty({2, -1}, DType::f32); }), "negative"));
}

TEST_CASE("reshape shares storage, infers one dim and explains mismatches") {
  Tensor x = Tensor::from_vector(iota(24), {2, 3, 4});
  Tensor r = x.reshape({4, -1});
  CHECK(r.shape() == Shape{4, 6});
  CHECK(r.storage() == x.storage());
  CHECK(r.item(23) == 23);
  const std::string msg = error_of([&] { x.reshape({5, 5}); });
  CHECK(contains(msg, "f32[2, 3, 4] cpu"));
  CHECK(contains(msg, "24 elements"));
  CHECK(contains(error_of([&] { x.transpose(0, 2).reshape({24}); }), "contiguous"));
  CHECK(contains(error_of([&] { x.reshape({-1, -1}); }), "only one dim may be -1"));
}

TEST_CASE("slice with a step, negative bounds and clamping is a view") {
  Tensor x = Tensor::from_vector(iota(10), {10});
  Tensor s = x.slice(0, 1, 8, 3);
  CHECK(s.shape() == Shape{3});
  CHECK(s.strides() == Shape{3});
  CHECK(s.to_vector() == std::vector<float>{1, 4, 7});
  CHECK(s.storage() == x.storage());
  CHECK(x.slice(0, -3, 100).to_vector() == std::vector<float>{7, 8, 9});
  CHECK(x.slice(0, 5, 2).numel() == 0);
  Tensor m = Tensor::from_vector(iota(12), {3, 4});
  Tensor cols = m.slice(1, 1, 4, 2);
  CHECK(cols.shape() == Shape{3, 2});
  CHECK(cols.to_vector() == std::vector<float>{1, 3, 5, 7, 9, 11});
  CHECK_FALSE(cols.is_contiguous());
  // Writing through the view lands in the original.
  cols.fill(-1.0);
  CHECK(m.to_vector() == std::vector<float>{0, -1, 2, -1, 4, -1, 6, -1, 8, -1, 10, -1});
  CHECK(contains(error_of([&] { x.slice(0, 0, 5, 0); }), "step must be > 0"));
  CHECK(contains(error_of([&] { x.slice(1, 0, 5); }), "dim 1 is out of range"));
}

TEST_CASE("select, unsqueeze and squeeze move between ranks") {
  Tensor m = Tensor::from_vector(iota(6), {2, 3});
  CHECK(m.select(0, 1).to_vector() == std::vector<float>{3, 4, 5});
  CHECK(m.select(1, -1).to_vector() == std::vector<float>{2, 5});
  CHECK(contains(error_of([&] { m.select(0, 2); }), "expected an index in [-2, 1]"));
  Tensor u = m.unsqueeze(1);
  CHECK(u.shape() == Shape{2, 1, 3});
  CHECK(u.is_contiguous());
  CHECK(m.unsqueeze(-1).shape() == Shape{2, 3, 1});
  CHECK(u.squeeze(1).shape() == Shape{2, 3});
  CHECK(contains(error_of([&] { m.squeeze(0); }), "expected 1"));
}

TEST_CASE("permute and transpose reorder dims without copying, contiguous copies once") {
  Tensor x = Tensor::from_vector(iota(24), {2, 3, 4});
  Tensor p = x.permute({2, 0, 1});
  CHECK(p.shape() == Shape{4, 2, 3});
  CHECK(p.strides() == Shape{1, 12, 4});
  CHECK(p.storage() == x.storage());
  CHECK_FALSE(p.is_contiguous());
  // p[k][i][j] == x[i][j][k]
  for (int k = 0; k < 4; ++k)
    for (int i = 0; i < 2; ++i)
      for (int j = 0; j < 3; ++j) CHECK(p.item(k * 6 + i * 3 + j) == i * 12 + j * 4 + k);
  Tensor c = p.contiguous();
  CHECK(c.is_contiguous());
  CHECK(c.storage() != x.storage());
  CHECK(c.to_vector() == p.to_vector());
  CHECK(x.contiguous().storage() == x.storage());
  CHECK(x.transpose(0, -1).shape() == Shape{4, 3, 2});
  CHECK(contains(error_of([&] { x.permute({0, 0, 1}); }), "not a permutation"));
  CHECK(contains(error_of([&] { x.permute({0, 1}); }), "expected 3 dims"));
}

TEST_CASE("expand broadcasts with zero strides following numpy rules") {
  Tensor b = Tensor::from_vector({1, 2, 3}, {3});
  Tensor e = b.expand({2, 3});
  CHECK(e.shape() == Shape{2, 3});
  CHECK(e.strides() == Shape{0, 1});
  CHECK(e.to_vector() == std::vector<float>{1, 2, 3, 1, 2, 3});
  Tensor col = Tensor::from_vector({1, 2}, {2, 1});
  CHECK(col.expand({2, -1}).shape() == Shape{2, 1});
  CHECK(col.expand({3, 2, 4}).to_vector().size() == 24);
  CHECK(col.expand({2, 4}).contiguous().to_vector() == std::vector<float>{1, 1, 1, 1, 2, 2, 2, 2});
  const std::string msg = error_of([&] { b.expand({2, 4}); });
  CHECK(contains(msg, "f32[3] cpu"));
  CHECK(contains(msg, "[2, 4]"));
  CHECK(contains(error_of([&] { b.expand({}); }), "at least 1 dims"));
}

TEST_CASE("copy_from converts dtypes across strided views and checks shapes") {
  Tensor dst = Tensor::zeros({3, 2}, DType::f16);
  Tensor src = Tensor::from_vector(iota(6), {2, 3});
  dst.copy_from(src.transpose(0, 1));
  CHECK(dst.to_vector() == std::vector<float>{0, 3, 1, 4, 2, 5});
  const std::string msg = error_of([&] { dst.copy_from(src); });
  CHECK(contains(msg, "f16[3, 2] cpu"));
  CHECK(contains(msg, "needs a source of shape [3, 2]"));
  CHECK(contains(msg, "f32[2, 3] cpu"));
  Tensor e4 = Tensor::empty({4}, DType::f8_e4m3);
  e4.fill(1000.0);
  CHECK(e4.to_vector() == std::vector<float>{448, 448, 448, 448});
  Tensor i64 = Tensor::empty({2, 2}, DType::i64);
  i64.fill(-7.9);
  CHECK(i64.to_vector() == std::vector<float>{-7, -7, -7, -7});
}

TEST_CASE("clone deep-copies while views keep the storage alive after the original is gone") {
  Tensor view;
  std::weak_ptr<Storage> weak;
  {
    Tensor x = Tensor::from_vector(iota(8), {8});
    weak = x.storage();
    view = x.slice(0, 4, 8);
    Tensor copy = x.clone();
    copy.fill(0.0);
    CHECK(x.item(5) == 5);
  }
  CHECK_FALSE(weak.expired());
  CHECK(view.to_vector() == std::vector<float>{4, 5, 6, 7});
  view = Tensor();
  CHECK(weak.expired());
}

TEST_CASE("from_blob wraps memory without copying and holds its owner") {
  auto buffer = std::make_shared<std::vector<float>>(std::vector<float>{1, 2, 3, 4, 5, 6});
  std::weak_ptr<std::vector<float>> weak = buffer;
  Tensor t = Tensor::from_blob(buffer->data(), {2, 3}, DType::f32, Device::cpu(), buffer);
  CHECK(t.data() == buffer->data());
  (*buffer)[4] = 50;
  CHECK(t.item(4) == 50);
  buffer.reset();
  CHECK_FALSE(weak.expired());  // the tensor's storage holds the owner
  CHECK(t.to_vector() == std::vector<float>{1, 2, 3, 4, 50, 6});
  t = Tensor();
  CHECK(weak.expired());
}

TEST_CASE("from_storage places a tensor at a byte offset and checks it fits") {
  Tensor base = Tensor::from_vector(iota(8), {8});
  Tensor t = Tensor::from_storage(base.storage(), 16, {2, 2}, DType::f32);
  CHECK(t.to_vector() == std::vector<float>{4, 5, 6, 7});
  CHECK(t.byte_offset() == 16);
  const std::string msg = error_of([&] { Tensor::from_storage(base.storage(), 16, {5}, DType::f32); });
  CHECK(contains(msg, "needs 20 bytes at offset 16"));
  CHECK(contains(msg, "only 32 bytes"));
}

TEST_CASE("CPU-only operations refuse CUDA tensors and undefined tensors with a hint") {
  if (cuda_available()) {
    Tensor g = Tensor::empty({2}, DType::f32, Device::cuda(0));
    CHECK(contains(error_of([&] { g.to_vector(); }), "kernels/ops.hpp"));
  } else {
    MESSAGE("CUDA part skipped: " << cuda_unavailable_reason());
    CHECK(contains(error_of([] { Tensor::empty({2}, DType::f32, Device::cuda(0)); }), cuda_unavailable_reason()));
  }
  CHECK(contains(error_of([] { Tensor().clone(); }), "undefined"));
}
