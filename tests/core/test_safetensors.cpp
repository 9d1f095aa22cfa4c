#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

#include "core/error.hpp"
#include "core/safetensors.hpp"
#include "tests/support/temp_dir.hpp"

using namespace stagecraft;
namespace fs = std::filesystem;

namespace {

// One folder per test process, made by the first test that writes a file and removed at exit.
const stagecraft::testing::TempDir& tmp() {
  static const stagecraft::testing::TempDir dir;
  return dir;
}

// Writes a raw safetensors file: header JSON exactly as given, then `data_bytes` bytes.
std::string write_raw(const std::string& name, const std::string& header, size_t data_bytes,
                      uint64_t claimed_header_len = UINT64_MAX) {
  const std::string path = tmp() / name;
  std::ofstream out(path, std::ios::binary);
  uint64_t n = claimed_header_len == UINT64_MAX ? header.size() : claimed_header_len;
  for (int i = 0; i < 8; ++i) out.put(static_cast<char>((n >> (8 * i)) & 0xff));
  out << header;
  for (size_t i = 0; i < data_bytes; ++i) out.put(static_cast<char>(i));
  return path;
}

// Opens `path` expecting Error(parse); returns the message.
std::string parse_error(const std::string& path) {
  try {
    SafetensorsFile::open(path);
  } catch (const Error& e) {
    CHECK(e.code() == Errc::parse);
    return e.what();
  }
  FAIL("expected " << path << " to be refused");
  return "";
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// A hostile file of the test data (tests/data/untrusted/safetensors/README.md says what each holds).
std::string untrusted(const std::string& name) {
  return std::string(STAGECRAFT_SOURCE_DIR) + "/tests/data/untrusted/safetensors/" + name;
}

}  // namespace

TEST_CASE("every dtype round-trips through save and open with identical bytes") {
  std::map<std::string, Tensor> in;
  const DType all[] = {DType::f32, DType::f16, DType::bf16, DType::i8, DType::u8, DType::i32, DType::i64, DType::f8_e4m3};
  int k = 0;
  for (DType t : all) {
    Tensor x = Tensor::empty({2, 3 + k}, t);
    auto* p = static_cast<unsigned char*>(x.data());
    for (size_t i = 0; i < x.nbytes(); ++i) p[i] = static_cast<unsigned char>(i * 7 + k);
    if (t == DType::f8_e4m3) p[0] = 0x7e;  // keep NaN codes out so byte identity is meaningful either way
    in[std::string("w.") + dtype_name(t)] = x;
    ++k;
  }
  in["scalar"] = Tensor::from_vector({3.5f}, {});
  in["empty"] = Tensor::empty({0, 4}, DType::f16);
  const std::string path = tmp() / "all.safetensors";
  save_safetensors(path, in, {{"format", "pt"}, {"note", "round trip"}});

  auto f = SafetensorsFile::open(path);
  CHECK(f.path() == path);
  CHECK(f.metadata().at("format") == "pt");
  CHECK(f.metadata().at("note") == "round trip");
  CHECK(f.names().size() == in.size());
  for (const auto& [name, want] : in) {
    REQUIRE(f.contains(name));
    Tensor got = f.get(name);
    CHECK(got.dtype() == want.dtype());
    CHECK(got.shape() == want.shape());
    CHECK(got.device() == Device::cpu());
    CHECK(got.nbytes() == want.nbytes());
    if (want.nbytes()) CHECK(std::memcmp(got.data(), want.data(), want.nbytes()) == 0);
  }
  CHECK(f.get("scalar").item() == 3.5);
  // The writer pads the header so the data starts 8-byte aligned.
  std::ifstream raw(path, std::ios::binary);
  uint64_t n = 0;
  raw.read(reinterpret_cast<char*>(&n), 8);
  CHECK(n % 8 == 0);
  CHECK_FALSE(fs::exists(path + ".tmp." + std::to_string(::getpid())));
}

TEST_CASE("names come back in the order of their data and saving writes one dtype sorted by name") {
  const std::string path = tmp() / "order.safetensors";
  save_safetensors(path, {{"b", Tensor::from_vector({1, 2}, {2})}, {"a", Tensor::from_vector({3}, {1})}});
  auto f = SafetensorsFile::open(path);
  REQUIRE(f.names().size() == 2);
  CHECK(f.names()[0] == "a");
  CHECK(f.names()[1] == "b");
  CHECK(f.get("b").to_vector() == std::vector<float>{1, 2});
}

TEST_CASE("opened tensors are zero-copy views that keep the mapping alive after the file object is gone") {
  const std::string path = tmp() / "alive.safetensors";
  save_safetensors(path, {{"x", Tensor::from_vector({1, 2, 3, 4}, {2, 2})}, {"y", Tensor::from_vector({5}, {1})}});
  Tensor x, y;
  {
    auto f = SafetensorsFile::open(path);
    x = f.get("x");
    y = f.get("y");
    // Both views share one storage: the mapped data section.
    CHECK(x.storage() == y.storage());
    CHECK(static_cast<char*>(y.data()) - static_cast<char*>(x.data()) == 16);
  }
  CHECK(x.to_vector() == std::vector<float>{1, 2, 3, 4});
  x.fill(9.0);  // private mapping: writes never reach the file
  auto again = SafetensorsFile::open(path);
  CHECK(again.get("x").to_vector() == std::vector<float>{1, 2, 3, 4});
}

TEST_CASE("saving a non-contiguous view writes its logical contents") {
  Tensor m = Tensor::from_vector({0, 1, 2, 3, 4, 5}, {2, 3});
  const std::string path = tmp() / "view.safetensors";
  save_safetensors(path, {{"t", m.transpose(0, 1)}});
  auto f = SafetensorsFile::open(path);
  CHECK(f.get("t").shape() == Shape{3, 2});
  CHECK(f.get("t").to_vector() == std::vector<float>{0, 3, 1, 4, 2, 5});
}

TEST_CASE("asking for a missing tensor names the file and the tensor") {
  const std::string path = tmp() / "missing.safetensors";
  save_safetensors(path, {{"present", Tensor::from_vector({1}, {1})}});
  auto f = SafetensorsFile::open(path);
  try {
    f.get("absent");
    FAIL("expected not_found");
  } catch (const Error& e) {
    CHECK(e.code() == Errc::not_found);
    CHECK(contains(e.what(), path));
    CHECK(contains(e.what(), "'absent'"));
    CHECK(contains(e.what(), "present"));
  }
}

TEST_CASE("a file that does not exist is reported as not found") {
  try {
    SafetensorsFile::open(tmp() / "nope.safetensors");
    FAIL("expected not_found");
  } catch (const Error& e) {
    CHECK(e.code() == Errc::not_found);
    CHECK(contains(e.what(), "nope.safetensors"));
  }
}

TEST_CASE("a truncated file is refused with a message naming it") {
  const std::string good = tmp() / "full.safetensors";
  save_safetensors(good, {{"w", Tensor::from_vector({1, 2, 3, 4}, {4})}});
  const auto size = fs::file_size(good);

  SUBCASE("data cut short") {
    const std::string cut = tmp() / "cut_data.safetensors";
    fs::copy_file(good, cut, fs::copy_options::overwrite_existing);
    fs::resize_file(cut, size - 3);
    const std::string msg = parse_error(cut);
    CHECK(contains(msg, cut));
    CHECK(contains(msg, "truncated"));
    CHECK(contains(msg, "'w'"));
  }
  SUBCASE("header cut short") {
    const std::string cut = tmp() / "cut_header.safetensors";
    fs::copy_file(good, cut, fs::copy_options::overwrite_existing);
    fs::resize_file(cut, 20);
    const std::string msg = parse_error(cut);
    CHECK(contains(msg, cut));
    CHECK(contains(msg, "runs past the end"));
  }
  SUBCASE("not even the length prefix") {
    const std::string cut = tmp() / "cut_len.safetensors";
    fs::copy_file(good, cut, fs::copy_options::overwrite_existing);
    fs::resize_file(cut, 5);
    const std::string msg = parse_error(cut);
    CHECK(contains(msg, cut));
    CHECK(contains(msg, "too short"));
  }
}

TEST_CASE("a header longer than 100 MB is refused before anything is read") {
  const std::string path = write_raw("huge_header.safetensors", "{}", 0, 200ull * 1000 * 1000);
  const std::string msg = parse_error(path);
  CHECK(contains(msg, path));
  CHECK(contains(msg, "100 MB"));
}

TEST_CASE("a header that is not JSON is refused") {
  const std::string path = write_raw("bad_json.safetensors", "{\"a\": {\"dtype\": ", 0);
  const std::string msg = parse_error(path);
  CHECK(contains(msg, path));
  CHECK(contains(msg, "not valid JSON"));
}

TEST_CASE("overlapping data offsets are refused naming both tensors") {
  const std::string path = write_raw(
      "overlap.safetensors",
      R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
      12);
  const std::string msg = parse_error(path);
  CHECK(contains(msg, path));
  CHECK(contains(msg, "overlaps"));
  CHECK(contains(msg, "'a'"));
  CHECK(contains(msg, "'b'"));
}

TEST_CASE("a gap between tensors is refused naming the tensor after it") {
  const std::string path = write_raw(
      "gap.safetensors",
      R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
      12);
  const std::string msg = parse_error(path);
  CHECK(contains(msg, path));
  CHECK(contains(msg, "'b'"));
  CHECK(contains(msg, "gaps"));
}

TEST_CASE("data that does not start at offset 0 is refused") {
  const std::string path =
      write_raw("late_start.safetensors", R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[4,8]}})", 8);
  const std::string msg = parse_error(path);
  CHECK(contains(msg, path));
  CHECK(contains(msg, "'a' starts at data offset 4"));
}

TEST_CASE("bytes after the last tensor are refused") {
  const std::string path =
      write_raw("trailing.safetensors", R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}})", 6);
  const std::string msg = parse_error(path);
  CHECK(contains(msg, path));
  CHECK(contains(msg, "trailing bytes"));
}

TEST_CASE("a shape whose byte size differs from its offsets is refused") {
  const std::string path =
      write_raw("size.safetensors", R"({"a":{"dtype":"F16","shape":[3],"data_offsets":[0,8]}})", 8);
  const std::string msg = parse_error(path);
  CHECK(contains(msg, path));
  CHECK(contains(msg, "'a'"));
  CHECK(contains(msg, "6 bytes"));
  CHECK(contains(msg, "span 8 bytes"));
}

TEST_CASE("an unknown dtype is refused naming the tensor and the supported ones") {
  const std::string path =
      write_raw("dtype.safetensors", R"({"a":{"dtype":"F64","shape":[1],"data_offsets":[0,8]}})", 8);
  const std::string msg = parse_error(path);
  CHECK(contains(msg, path));
  CHECK(contains(msg, "'a'"));
  CHECK(contains(msg, "F64"));
  CHECK(contains(msg, "BF16"));
}

TEST_CASE("more than 8 dims and malformed entries are refused") {
  SUBCASE("nine dims") {
    const std::string path = write_raw(
        "dims.safetensors", R"({"a":{"dtype":"U8","shape":[1,1,1,1,1,1,1,1,1],"data_offsets":[0,1]}})", 1);
    const std::string msg = parse_error(path);
    CHECK(contains(msg, "9 dims"));
  }
  SUBCASE("negative shape") {
    const std::string path =
        write_raw("neg.safetensors", R"({"a":{"dtype":"U8","shape":[-1],"data_offsets":[0,1]}})", 1);
    CHECK(contains(parse_error(path), "non-negative"));
  }
  SUBCASE("missing data_offsets") {
    const std::string path = write_raw("nooff.safetensors", R"({"a":{"dtype":"U8","shape":[1]}})", 1);
    CHECK(contains(parse_error(path), "data_offsets"));
  }
  SUBCASE("metadata that is not strings") {
    const std::string path = write_raw("meta.safetensors", R"({"__metadata__":{"n":1}})", 0);
    CHECK(contains(parse_error(path), "__metadata__"));
  }
}

TEST_CASE("saving refuses undefined tensors and the reserved __metadata__ name") {
  CHECK_THROWS_AS(save_safetensors(tmp() / "u.safetensors", {{"x", Tensor()}}), Error);
  CHECK_THROWS_AS(save_safetensors(tmp() / "m.safetensors", {{"__metadata__", Tensor::from_vector({1}, {1})}}),
                  Error);
  CHECK_FALSE(fs::exists(tmp() / "u.safetensors"));
}

TEST_CASE("a shape whose byte size wraps around 64 bits is refused instead of loading 2^62 elements over 0 bytes") {
  // Before the fix elements x 4 wrapped to 0 = the 0-byte span, and converting the
  // tensor wrote far out of bounds.
  const std::string path = untrusted("f32_size_wraps_to_zero.safetensors");
  const std::string msg = parse_error(path);
  CHECK(contains(msg, path));
  CHECK(contains(msg, "'x'"));
  CHECK(contains(msg, "overflows 64 bits"));
}

TEST_CASE("a shape whose element count overflows int64 is refused, even when a zero dim follows") {
  for (const char* name : {"f16_numel_overflows.safetensors", "zero_dim_after_overflow.safetensors"}) {
    CAPTURE(name);
    const std::string msg = parse_error(untrusted(name));
    CHECK(contains(msg, "overflows 64 bits"));
    CHECK(contains(msg, "4611686018427387904"));
  }
}

TEST_CASE("a tensor whose data is not aligned to its element size is refused naming its file offset") {
  std::string msg = parse_error(untrusted("misaligned_f32.safetensors"));
  CHECK(contains(msg, "tensor 'b' (F32) starts at file offset"));
  CHECK(contains(msg, "not a multiple of its 4-byte element size"));
  CHECK(contains(msg, "save_safetensors"));
  // Offsets aligned within the data do not help when the header leaves the data at an odd file offset.
  msg = parse_error(untrusted("misaligned_header.safetensors"));
  CHECK(contains(msg, "tensor 'b' (F32) starts at file offset 114"));
}

TEST_CASE("the writer puts the widest dtypes first so every tensor it writes is aligned and loads back") {
  std::map<std::string, Tensor> in;
  in["a.u8"] = Tensor::empty({3}, DType::u8);
  in["b.f32"] = Tensor::empty({2}, DType::f32);
  in["c.i64"] = Tensor::empty({1}, DType::i64);
  in["d.f16"] = Tensor::empty({3}, DType::f16);
  in["e.i8"] = Tensor::empty({1}, DType::i8);
  in["f.i32"] = Tensor::empty({5}, DType::i32);
  int k = 1;
  for (auto& [name, t] : in) {
    auto* p = static_cast<unsigned char*>(t.data());
    for (size_t i = 0; i < t.nbytes(); ++i) p[i] = static_cast<unsigned char>(k * 31 + i);
    ++k;
  }
  const std::string path = tmp() / "mixed.safetensors";
  save_safetensors(path, in);
  auto f = SafetensorsFile::open(path);
  CHECK(f.names() == std::vector<std::string>{"c.i64", "b.f32", "f.i32", "d.f16", "a.u8", "e.i8"});
  for (const auto& [name, want] : in) {
    const Tensor got = f.get(name);
    CHECK(reinterpret_cast<uintptr_t>(got.data()) % dtype_size(got.dtype()) == 0);
    CHECK(std::memcmp(got.data(), want.data(), want.nbytes()) == 0);
  }
}

TEST_CASE("the shipped model's weight files load: every tensor is aligned") {
  for (const char* rel : {"text_encoder/model.safetensors", "transformer/diffusion_pytorch_model.safetensors",
                          "vae/diffusion_pytorch_model.safetensors"}) {
    CAPTURE(rel);
    const auto f = SafetensorsFile::open(std::string(STAGECRAFT_SOURCE_DIR) + "/models/tiny-shapes/" + rel);
    CHECK(!f.names().empty());
    for (const auto& n : f.names()) {
      const Tensor t = f.get(n);
      CHECK(reinterpret_cast<uintptr_t>(t.data()) % dtype_size(t.dtype()) == 0);
    }
  }
}

TEST_CASE("a header entry nested a million levels deep is refused without recursing into it") {
  const std::string deep = std::string(1000000, '[') + std::string(1000000, ']');
  const std::string path = write_raw("deep.safetensors", R"({"x": {"dtype": "F32", "shape": )" + deep +
                                                             R"(, "data_offsets": [0, 0]}})", 0);
  CHECK(contains(parse_error(path), "tensor 'x': shape must hold non-negative integers, got a list of 1 values"));
}
