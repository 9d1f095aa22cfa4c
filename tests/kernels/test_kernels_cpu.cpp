// Every op of kernels/ops.hpp on the CPU backend against its naive reference, over odd
// sizes, f32/f16/bf16, masks and strided views; plus the dispatch point's checks.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include "tests/kernels/kernel_cases.hpp"

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "kernels/cpu/blas.hpp"
#include "kernels/cpu/common.hpp"
#include "kernels/cpu/conv3x3_direct.hpp"
#include "kernels/cpu/gemm_rows.hpp"
#include "kernels/cpu/winograd.hpp"

using namespace stagecraft;
const Device cpu = Device::cpu();

TEST_CASE("linear matches the naive reference for odd sizes, every dtype and a transposed input") {
  kcases::linear(cpu);
}
TEST_CASE("linear_per_item matches the reference and gives an item the same bits alone or in any batch") {
  kcases::linear_per_item(cpu);
}
TEST_CASE("the fused linear ops (bias + GELU, gated residual) match their references and are batch invariant") {
  kcases::fused_linear(cpu);
}
TEST_CASE("layer_norm_modulate matches its reference for every shift and scale layout, strided slices too") {
  kcases::layer_norm_modulate(cpu);
}
TEST_CASE("matmul matches the naive reference with and without trans_b and a broadcast batch") {
  kcases::matmul(cpu);
}
TEST_CASE("attention matches the naive reference with causal and padding masks across query blocks") {
  kcases::attention(cpu);
}
TEST_CASE("softmax and the norms match the naive reference, group_norm with and without fused SiLU") {
  kcases::norms(cpu);
}
TEST_CASE("gelu, quick_gelu and silu match the naive reference including large magnitudes") {
  kcases::activations(cpu);
}
TEST_CASE("element-wise ops broadcast like numpy and modulate takes every documented shift shape") {
  kcases::elementwise(cpu);
}
TEST_CASE("conv2d matches the naive reference for 1x1, 3x3 and 5x5 kernels, stride 1 and 2, with padding") {
  kcases::conv(cpu);
}
TEST_CASE("conv2d_upsample2x matches conv2d of the reference upsampling, folded or not, strided input too") {
  kcases::conv_upsample2x(cpu);
}
TEST_CASE("timestep_embedding, patchify and unpatchify match their diffusers-layout references") {
  kcases::diffusion_helpers(cpu);
}
TEST_CASE("cast, contiguous and cat copy exactly") { kcases::data_movement(cpu); }

TEST_CASE("a fully masked attention row gives zeros, not NaN") {
  Tensor q = kcases::rand_tensor({1, 1, 2, 4}), k = kcases::rand_tensor({1, 1, 3, 4}), v = kcases::rand_tensor({1, 1, 3, 4});
  Tensor mask = Tensor::zeros({1, 3}, DType::u8);
  ops::AttentionOptions o;
  o.key_padding_mask = &mask;
  for (float e : ops::attention(q, k, v, o).to_vector()) CHECK(e == 0.0f);
  // Causal with more queries than keys: the first query sees no key.
  o.key_padding_mask = nullptr;
  o.causal = true;
  Tensor q3 = kcases::rand_tensor({1, 1, 5, 4});
  const auto y = ops::attention(q3, k, v, o).to_vector();
  for (int d = 0; d < 4; ++d) CHECK(y[d] == 0.0f);
}

TEST_CASE("patchify followed by unpatchify in matching order restores the image") {
  Tensor x = kcases::rand_tensor({2, 4, 8, 6});
  // patchify gives (c, py, px); reorder to (py, px, c) as PixArt's final layer emits.
  Tensor tokens = ops::patchify(x, 2).reshape({2, 12, 4, 2, 2}).permute({0, 1, 3, 4, 2}).contiguous().reshape({2, 12, 16});
  CHECK(kernels::reference::max_abs_diff(ops::unpatchify(tokens, 2, 4, 8, 6), x) == 0.0);
}

TEST_CASE("the dispatch point rejects bad shapes, dtypes and devices with the op name in the message") {
  auto message_of = [](auto&& fn) {
    try {
      fn();
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  Tensor x = kcases::rand_tensor({3, 5}), w = kcases::rand_tensor({4, 6});
  std::string m = message_of([&] { ops::linear(x, w); });
  CHECK(m.find("linear") != std::string::npos);
  CHECK(m.find("[4, 6]") != std::string::npos);
  m = message_of([&] { ops::add(x, kcases::rand_tensor({3, 5}, DType::f16)); });
  CHECK(m.find("different dtypes") != std::string::npos);
  m = message_of([&] { ops::add(x, kcases::rand_tensor({2, 5})); });
  CHECK(m.find("do not broadcast") != std::string::npos);
  m = message_of([&] { ops::group_norm(kcases::rand_tensor({1, 6, 2, 2}), 4, nullptr, nullptr, 1e-5f); });
  CHECK(m.find("groups") != std::string::npos);
  Tensor q = kcases::rand_tensor({1, 2, 3, 8}), kk = kcases::rand_tensor({1, 2, 4, 8});
  Tensor bad_mask = Tensor::zeros({1, 3}, DType::u8);
  ops::AttentionOptions o;
  o.key_padding_mask = &bad_mask;
  m = message_of([&] { ops::attention(q, kk, kk, o); });
  CHECK(m.find("key_padding_mask must be [1, 4]") != std::string::npos);
  m = message_of([&] { ops::linear(Tensor::zeros({2, 3}, DType::i32), Tensor::zeros({2, 3}, DType::i32)); });
  CHECK(m.find("f32, f16 or bf16") != std::string::npos);
  m = message_of([&] { ops::unpatchify(kcases::rand_tensor({1, 5, 16}), 2, 4, 8, 6); });
  CHECK(m.find("unpatchify") != std::string::npos);
#if !STAGECRAFT_HAVE_CUDA
  m = message_of([&] { ops::to_device(x, Device::cuda(0)); });
  CHECK(m.find("built without CUDA") != std::string::npos);
#endif
}

TEST_CASE("ops return their input unchanged when there is nothing to do") {
  Tensor x = kcases::rand_tensor({2, 3});
  CHECK(ops::contiguous(x).data() == x.data());
  CHECK(ops::cast(x, DType::f32).data() == x.data());
  CHECK(ops::to_device(x, Device::cpu()).data() == x.data());
}

// ---------------------------------------------------------------- Winograd (CPU only)

namespace {
// Max |got - ref| relative to max(1, max |ref|), as check_op measures it.
double rel_err(const Tensor& got, const Tensor& ref) {
  return kernels::reference::max_abs_diff(got, ref) / std::max(1.0, kernels::reference::max_abs(ref));
}
}  // namespace

TEST_CASE("Winograd F(4x4) and F(2x2) 3x3 convs match the naive reference over odd shapes, bands and chunks") {
  struct S { int64_t n, i, h, w, o; int64_t scratch; };
  // scratch 0 is the default budget (one band); small budgets force many bands of tile rows,
  // some uneven. W = 263 gives 66 tiles per row, more than one 64-tile transform chunk.
  const S shapes[] = {{1, 1, 1, 1, 1, 0},      {2, 5, 9, 7, 3, 0},       {1, 17, 13, 11, 9, 0},
                      {3, 33, 18, 17, 31, 0},  {1, 64, 16, 16, 64, 0},   {2, 3, 6, 263, 5, 0},
                      {2, 7, 37, 10, 6, 4000}, {1, 9, 23, 29, 11, 1},    {1, 40, 8, 130, 24, 200000}};
  for (int m : {4, 2})
    for (const S& s : shapes)
      for (bool with_bias : {false, true}) {
        const Tensor x = kcases::rand_tensor({s.n, s.i, s.h, s.w}), w = kcases::rand_tensor({s.o, s.i, 3, 3}),
                     b = kcases::rand_tensor({s.o});
        const Tensor* bp = with_bias ? &b : nullptr;
        const Tensor got = kernels::cpu::conv2d_winograd(x, w, bp, m, s.scratch);
        const Tensor want = kernels::reference::conv2d(x, w, bp, 1, 1);
        CAPTURE(m);
        CAPTURE(shape_str(x.shape()));
        CAPTURE(s.o);
        CAPTURE(s.scratch);
        CAPTURE(with_bias);
        REQUIRE(got.shape() == want.shape());
        CHECK(rel_err(got, want) <= kcases::tolerance(DType::f32));
      }
}

TEST_CASE("Winograd takes f16 and bf16 tensors and a batch gives each image the bits of its lone run") {
  for (DType dt : {DType::f16, DType::bf16}) {
    const Tensor x = kcases::rand_tensor({2, 24, 14, 15}, dt), w = kcases::rand_tensor({20, 24, 3, 3}, dt),
                 b = kcases::rand_tensor({20}, dt);
    const Tensor got = kernels::cpu::conv2d_winograd(x, w, &b);
    CHECK(got.dtype() == dt);
    CHECK(rel_err(got, kernels::reference::conv2d(x, w, &b, 1, 1)) <= kcases::tolerance(dt));
  }
  const Tensor x = kcases::rand_tensor({3, 16, 21, 18}), w = kcases::rand_tensor({12, 16, 3, 3});
  const Tensor all = kernels::cpu::conv2d_winograd(x, w, nullptr);
  for (int64_t n = 0; n < 3; ++n) {
    const Tensor one = kernels::cpu::conv2d_winograd(x.slice(0, n, n + 1).contiguous(), w, nullptr);
    CHECK(kernels::reference::max_abs_diff(one, all.slice(0, n, n + 1)) == 0.0);
  }
}

TEST_CASE("the Winograd weight cache hits on the same weights and never serves stale ones") {
  kernels::cpu::winograd_cache_clear();
  const Tensor x = kcases::rand_tensor({1, 8, 12, 12});
  Tensor w = kcases::rand_tensor({6, 8, 3, 3});
  const auto s0 = kernels::cpu::winograd_cache_stats();
  const Tensor y1 = kernels::cpu::conv2d_winograd(x, w, nullptr);
  const Tensor y2 = kernels::cpu::conv2d_winograd(x, w, nullptr);
  const auto s1 = kernels::cpu::winograd_cache_stats();
  CHECK(s1.entries == 1);
  CHECK(s1.misses - s0.misses == 1);
  CHECK(s1.hits - s0.hits == 1);
  CHECK(kernels::reference::max_abs_diff(y1, y2) == 0.0);
  // Weights rewritten in place: the sampled values differ, so the transform is redone.
  w.fill(0.25);
  CHECK(rel_err(kernels::cpu::conv2d_winograd(x, w, nullptr), kernels::reference::conv2d(x, w, nullptr, 1, 1)) <=
        1e-4);
  // Weights freed and new ones of the same shape made, likely at the recycled address: the
  // entry of the freed storage must not answer for them.
  for (int k = 0; k < 4; ++k) {
    w = Tensor();
    w = kcases::rand_tensor({6, 8, 3, 3});
    CHECK(rel_err(kernels::cpu::conv2d_winograd(x, w, nullptr), kernels::reference::conv2d(x, w, nullptr, 1, 1)) <=
          1e-4);
  }
  // A view at another offset of the same storage is another weight.
  const Tensor both = kcases::rand_tensor({2, 6, 8, 3, 3});
  for (int64_t k = 0; k < 2; ++k) {
    const Tensor wk = both.select(0, k);
    CHECK(rel_err(kernels::cpu::conv2d_winograd(x, wk, nullptr), kernels::reference::conv2d(x, wk, nullptr, 1, 1)) <=
          1e-4);
  }
  // A non-contiguous weight (a transposed view) bypasses the cache and is gathered first.
  const Tensor wt = kcases::rand_tensor({8, 6, 3, 3}).transpose(0, 1);
  REQUIRE(!wt.is_contiguous());
  const int64_t before = kernels::cpu::winograd_cache_stats().entries;
  CHECK(rel_err(kernels::cpu::conv2d_winograd(x, wt, nullptr), kernels::reference::conv2d(x, wt, nullptr, 1, 1)) <=
        1e-4);
  CHECK(kernels::cpu::winograd_cache_stats().entries == before);
  kernels::cpu::winograd_cache_clear();
  CHECK(kernels::cpu::winograd_cache_stats().entries == 0);
}

TEST_CASE("a Winograd call with enough tiles to amortize the transform uses a cached one but adds none") {
  // 128x128 with F(4x4) is 32 x 32 = 1024 tiles (kWinogradAmortizedTiles): transformed for the
  // call alone, so a large decode does not hold 4x-sized copies of weights it barely reuses.
  kernels::cpu::winograd_cache_clear();
  const Tensor w = kcases::rand_tensor({6, 8, 3, 3});
  const Tensor big = kcases::rand_tensor({1, 8, 128, 128}), small = kcases::rand_tensor({1, 8, 12, 12});
  REQUIRE(!kernels::cpu::winograd_worth_caching(32 * 32));
  REQUIRE(kernels::cpu::winograd_worth_caching(3 * 3));
  const auto s0 = kernels::cpu::winograd_cache_stats();
  CHECK(rel_err(kernels::cpu::conv2d_winograd(big, w, nullptr), kernels::reference::conv2d(big, w, nullptr, 1, 1)) <=
        1e-4);
  CHECK(kernels::cpu::winograd_cache_stats().entries == 0);
  // One 12x12 image is 3 x 3 = 9 tiles: kept; then the large call hits that entry.
  const Tensor y_small = kernels::cpu::conv2d_winograd(small, w, nullptr);
  CHECK(kernels::cpu::winograd_cache_stats().entries == 1);
  const Tensor y_big = kernels::cpu::conv2d_winograd(big, w, nullptr);
  const auto s1 = kernels::cpu::winograd_cache_stats();
  CHECK(s1.entries == 1);
  CHECK(s1.hits - s0.hits == 1);
  CHECK(s1.misses - s0.misses == 2);
  CHECK(rel_err(y_big, kernels::reference::conv2d(big, w, nullptr, 1, 1)) <= 1e-4);
  // Many images of a small map add up to many tiles: the batch amortizes it too.
  kernels::cpu::winograd_cache_clear();
  const Tensor batch = kcases::rand_tensor({120, 8, 12, 12});  // 120 x 9 = 1080 tiles
  CHECK(rel_err(kernels::cpu::conv2d_winograd(batch, w, nullptr), kernels::reference::conv2d(batch, w, nullptr, 1, 1)) <=
        1e-4);
  CHECK(kernels::cpu::winograd_cache_stats().entries == 0);
  kernels::cpu::winograd_cache_clear();
}

TEST_CASE("conv2d routes 3x3 convs by shape: Winograd where im2col ran before, the direct kernel keeps small maps") {
  if (const char* e = std::getenv("STAGECRAFT_WINOGRAD"); e && std::string(e) == "0") return;  // path turned off
  struct S { int64_t i, h, w, o; int stride; bool winograd; };
  const S cases[] = {
      {33, 41, 39, 35, 1, true},   // > 32 MFLOP: was im2col
      {64, 64, 64, 4, 1, true},    // padded image > 1 MiB: was im2col; few outputs on a large map
      {32, 16, 16, 32, 1, !kernels::cpu::conv3x3_direct_available()},  // the direct kernel's (AVX2 builds)
      {4, 32, 32, 40, 1, false},   // 4 input channels (the VAE's conv_in): im2col
      {40, 12, 40, 40, 1, false},  // a map under 16 px high
      {40, 33, 33, 40, 2, false},  // strided
  };
  for (const S& s : cases) {
    kernels::cpu::winograd_cache_clear();
    const Tensor x = kcases::rand_tensor({1, s.i, s.h, s.w}), w = kcases::rand_tensor({s.o, s.i, 3, 3});
    ops::conv2d(x, w, nullptr, s.stride, 1);
    CAPTURE(shape_str(x.shape()));
    CAPTURE(s.o);
    CHECK((kernels::cpu::winograd_cache_stats().entries == 1) == s.winograd);
  }
  kernels::cpu::winograd_cache_clear();
}

// ------------------------------------------- Winograd with the 2x upsample folded (CPU only)

namespace {
// The same shape, dtype and bytes (both contiguous, as every op's output is).
bool same_bytes(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && a.dtype() == b.dtype() && a.is_contiguous() && b.is_contiguous() &&
         std::memcmp(a.data(), b.data(), a.nbytes()) == 0;
}
}  // namespace

TEST_CASE("conv2d_upsample2x gives the bytes of upsample_nearest2x then conv2d, on the folded path and off it") {
  if (const char* e = std::getenv("STAGECRAFT_WINOGRAD"); e && std::string(e) == "0") return;  // path turned off
  // `folded`: conv2d takes Winograd on the upsampled map (>= 32 input channels, a map of at
  // least 16x16, more than the direct kernel's 32 MFLOP), so the op folds; else it runs the two
  // ops. Sides that are not multiples of the 4x4 tile, odd channel counts, batches.
  struct S { int64_t n, i, h, w, o, k; int stride, pad; bool folded; };
  const S cases[] = {
      {2, 33, 21, 20, 35, 3, 1, 1, true},   // 42x40 map, 35 MFLOP per image
      {1, 64, 33, 9, 24, 3, 1, 1, true},    // 66x18: one partial tile column and row
      {2, 40, 40, 37, 3, 3, 1, 1, true},    // 3 outputs on an 80x74 map: a padded image > 1 MiB
      {1, 32, 8, 8, 32, 3, 1, 1, !kernels::cpu::conv3x3_direct_available()},  // 16x16: the direct kernel's
      {2, 31, 24, 24, 40, 3, 1, 1, false},  // 31 input channels: im2col
      {1, 48, 7, 30, 40, 3, 1, 1, false},   // a 14-px-high map: im2col
      {1, 40, 12, 12, 24, 1, 1, 0, false},  // 1x1
      {1, 40, 17, 17, 24, 3, 2, 1, false},  // strided
  };
  for (const S& s : cases)
    for (DType dt : kcases::kFloatTypes)
      for (bool with_bias : {false, true}) {
        const Tensor x = kcases::rand_tensor({s.n, s.i, s.h, s.w}, dt), w = kcases::rand_tensor({s.o, s.i, s.k, s.k}, dt),
                     b = kcases::rand_tensor({s.o}, dt);
        const Tensor* bp = with_bias ? &b : nullptr;
        CAPTURE(shape_str(x.shape()));
        CAPTURE(s.o);
        CAPTURE(s.k);
        CAPTURE(dtype_name(dt));
        CAPTURE(with_bias);
        kernels::cpu::winograd_cache_clear();
        const Tensor got = ops::conv2d_upsample2x(x, w, bp, s.stride, s.pad);
        // Few tiles: a Winograd call keeps its transform, so the cache says which path ran.
        const bool folded = kernels::cpu::winograd_cache_stats().entries == 1;
        CHECK(folded == s.folded);
        const Tensor want = ops::conv2d(ops::upsample_nearest2x(x), w, bp, s.stride, s.pad);
        CHECK(same_bytes(got, want));
      }
  kernels::cpu::winograd_cache_clear();
}

TEST_CASE("the folded Winograd gather gives the unfolded bytes over F(4x4) and F(2x2), bands, chunks and batches") {
  struct S { int64_t n, i, h, w, o; int64_t scratch; };
  // Upsampled maps of 2x2 to 66x266 (67 tiles per row: more than one 64-tile chunk), one
  // input channel to 40, small scratch budgets that force many (uneven) bands of tile rows.
  const S shapes[] = {{1, 1, 1, 1, 1, 0},     {2, 5, 5, 4, 3, 0},      {1, 17, 7, 6, 9, 0},
                      {3, 33, 9, 9, 31, 0},   {2, 3, 3, 133, 5, 0},    {2, 7, 19, 5, 6, 4000},
                      {1, 9, 12, 15, 11, 1},  {1, 40, 4, 65, 24, 200000}};
  for (int m : {4, 2})
    for (const S& s : shapes)
      for (bool with_bias : {false, true}) {
        const Tensor x = kcases::rand_tensor({s.n, s.i, s.h, s.w}), w = kcases::rand_tensor({s.o, s.i, 3, 3}),
                     b = kcases::rand_tensor({s.o});
        const Tensor* bp = with_bias ? &b : nullptr;
        CAPTURE(m);
        CAPTURE(shape_str(x.shape()));
        CAPTURE(s.o);
        CAPTURE(s.scratch);
        CAPTURE(with_bias);
        const Tensor up = kernels::reference::upsample_nearest2x(x);
        const Tensor got = kernels::cpu::conv2d_winograd_upsample2x(x, w, bp, m, s.scratch);
        CHECK(same_bytes(got, kernels::cpu::conv2d_winograd(up, w, bp, m, s.scratch)));
        CHECK(rel_err(got, kernels::reference::conv2d(up, w, bp, 1, 1)) <= kcases::tolerance(DType::f32));
      }
  // An image's bytes do not depend on the batch it shares.
  const Tensor x = kcases::rand_tensor({3, 16, 11, 9}), w = kcases::rand_tensor({12, 16, 3, 3});
  const Tensor all = kernels::cpu::conv2d_winograd_upsample2x(x, w, nullptr);
  for (int64_t n = 0; n < 3; ++n) {
    const Tensor one = kernels::cpu::conv2d_winograd_upsample2x(x.slice(0, n, n + 1).contiguous(), w, nullptr);
    CHECK(same_bytes(one, all.slice(0, n, n + 1).contiguous()));
  }
}

TEST_CASE("a folded Winograd call keeps its weight transform exactly when the unfolded call would") {
  // The tile count is the upsampled map's: 64x64 -> 128x128 is 1024 tiles, transformed for the
  // call alone; 6x6 -> 12x12 is 9 tiles, kept.
  kernels::cpu::winograd_cache_clear();
  const Tensor w = kcases::rand_tensor({6, 8, 3, 3});
  const Tensor big = kcases::rand_tensor({1, 8, 64, 64}), small = kcases::rand_tensor({1, 8, 6, 6});
  kernels::cpu::conv2d_winograd_upsample2x(big, w, nullptr);
  CHECK(kernels::cpu::winograd_cache_stats().entries == 0);
  kernels::cpu::conv2d_winograd_upsample2x(small, w, nullptr);
  CHECK(kernels::cpu::winograd_cache_stats().entries == 1);
  const auto s0 = kernels::cpu::winograd_cache_stats();
  const Tensor y = kernels::cpu::conv2d_winograd_upsample2x(big, w, nullptr);
  CHECK(kernels::cpu::winograd_cache_stats().hits - s0.hits == 1);
  CHECK(same_bytes(y, kernels::cpu::conv2d_winograd(ops::upsample_nearest2x(big), w, nullptr)));
  kernels::cpu::winograd_cache_clear();
}

// ---------------------------------------------------------------- gemm_rows (CPU only)

namespace {
// gemm_rows through its public pieces: w packed (uncached), y [M, N] as a tensor.
Tensor gemm_rows_of(const Tensor& x, const Tensor& w, const Tensor* b,
                    kernels::cpu::GemmRowsIsa isa = kernels::cpu::GemmRowsIsa::best) {
  const int64_t M = x.size(0), N = w.size(0);
  Tensor y = Tensor::empty({M, N}, DType::f32);
  const auto pw = kernels::cpu::pack_weight(w);
  kernels::cpu::gemm_rows(x.data_as<float>(), *pw, b ? b->data_as<float>() : nullptr, y.data_as<float>(), M, isa);
  return y;
}
// Both kernels where the CPU has AVX-512 (best is then the AVX-512 one), else AVX2 alone.
std::vector<kernels::cpu::GemmRowsIsa> isas() {
  if (kernels::cpu::gemm_rows_avx512_available())
    return {kernels::cpu::GemmRowsIsa::best, kernels::cpu::GemmRowsIsa::avx2};
  return {kernels::cpu::GemmRowsIsa::avx2};
}
bool same_bits(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && std::memcmp(ops::contiguous(a).data(), ops::contiguous(b).data(), a.nbytes()) == 0;
}
}  // namespace

TEST_CASE("gemm_rows matches the naive reference and its documented order (one fma chain over k) bit for bit") {
  // Odd shapes around the tile (6 rows x 16 outputs), the 48-row task block and the 8-wide
  // vectors, K = 1 and K with no multiple of 8, and a product large enough to be split
  // across threads (M = 200, N = 100, K = 193).
  // (With AVX-512, tasks of pairs of panels here, 8-row tiles: N = 33 and 100 leave a lone
  // last panel.) K = 1200 crosses the AVX-512 path's k blocks of 1152 (its chains resume
  // from y) with a tail. The wide cases take the AVX-512 path's groups of 4 panels (6-row
  // tiles, and a last group of 1, 2 or 3 panels in 8-row tiles), which it uses once a call
  // has 16 (row block, group) tasks.
  struct Case {
    int64_t M, N, K;
  };
  std::vector<Case> cases;
  const int64_t Ms[] = {1, 5, 6, 7, 8, 9, 10, 11, 12, 13, 23, 47, 49, 200}, Ns[] = {1, 7, 16, 17, 32, 33, 100},
                Ks[] = {1, 7, 9, 64, 193, 1200};
  for (int64_t M : Ms)
    for (int64_t N : Ns)
      for (int64_t K : Ks) cases.push_back({M, N, K});
  for (int64_t M : {97, 150, 190, 195, 200})  // last 6-row tile of 6, 4, 3, 2 rows
    for (int64_t N : {208, 216, 230, 260})
      for (int64_t K : {7, 193}) cases.push_back({M, N, K});
  for (auto isa : isas())
    for (const Case& c : cases)
      for (bool with_bias : {false, true}) {
          const int64_t M = c.M, N = c.N, K = c.K;
          const Tensor x = kcases::rand_tensor({M, K}), w = kcases::rand_tensor({N, K}), b = kcases::rand_tensor({N});
          const Tensor* bp = with_bias ? &b : nullptr;
          const Tensor got = gemm_rows_of(x, w, bp, isa);
          CAPTURE(static_cast<int>(isa));
          CAPTURE(M);
          CAPTURE(N);
          CAPTURE(K);
          CAPTURE(with_bias);
          CHECK(rel_err(got, kernels::reference::linear(x, w, bp)) <= kcases::tolerance(DType::f32));
          // The order is the contract that makes rows batch-invariant: s = fma(x[k], w[n][k], s)
          // for k = 0..K-1 from 0, then + bias. Every vector lane must give exactly that.
          const float *px = x.data_as<float>(), *pw = w.data_as<float>(), *pb = b.data_as<float>();
          const float* py = got.data_as<float>();
          int64_t differ = 0;
          for (int64_t m = 0; m < M; ++m)
            for (int64_t n = 0; n < N; ++n) {
              float s = 0.0f;
              for (int64_t k = 0; k < K; ++k) s = std::fma(px[m * K + k], pw[n * K + k], s);
              if (with_bias) s += pb[n];
              differ += std::memcmp(&s, &py[m * N + n], 4) != 0;
            }
          CHECK(differ == 0);
        }
}

TEST_CASE("gemm_rows gives a row the same bits alone and inside any larger call") {
  // The shipped denoiser's shapes (16 tokens per item, width 192, feed-forward 768) and odd
  // ones; calls of 1..200 rows put a row at every position of a tile, a task block and a
  // thread's chunk.
  struct S { int64_t n, k; };
  for (auto isa : isas())
  for (const S& s : {S{192, 192}, S{768, 192}, S{192, 768}, S{37, 29}, S{70, 1200}}) {
    const Tensor pool = kcases::rand_tensor({200, s.k}), w = kcases::rand_tensor({s.n, s.k}),
                 b = kcases::rand_tensor({s.n});
    const Tensor all = gemm_rows_of(pool, w, &b, isa);
    CAPTURE(static_cast<int>(isa));
    CAPTURE(s.n);
    CAPTURE(s.k);
    for (int64_t r = 0; r < 200; r += 13) {
      CAPTURE(r);
      const Tensor alone = gemm_rows_of(pool.slice(0, r, r + 1), w, &b, isa);
      CHECK(same_bits(alone, all.slice(0, r, r + 1)));
    }
    for (int64_t start : {0, 5, 47}) {
      for (int64_t len : {1, 7, 32, 96, 150}) {
        if (start + len > 200) continue;
        CAPTURE(start);
        CAPTURE(len);
        const Tensor part = gemm_rows_of(pool.slice(0, start, start + len), w, &b, isa);
        CHECK(same_bits(part, all.slice(0, start, start + len)));
      }
    }
  }
}

TEST_CASE("gemm_rows's AVX-512 and AVX2 kernels give the same bits") {
  if (!kernels::cpu::gemm_rows_avx512_available()) return;  // one kernel only on this CPU
  for (int64_t n : {1, 16, 31, 48, 200})
    for (int64_t m : {1, 8, 17, 96}) {
      const Tensor x = kcases::rand_tensor({m, 77}), w = kcases::rand_tensor({n, 77}), b = kcases::rand_tensor({n});
      CAPTURE(n);
      CAPTURE(m);
      CHECK(same_bits(gemm_rows_of(x, w, &b, kernels::cpu::GemmRowsIsa::best),
                      gemm_rows_of(x, w, &b, kernels::cpu::GemmRowsIsa::avx2)));
    }
}

TEST_CASE("the packed-weight cache hits on the same weights and never serves stale ones") {
  namespace kc = kernels::cpu;
  kc::packed_weight_cache_clear();
  const Tensor x = kcases::rand_tensor({3, 5, 40});
  Tensor w = kcases::rand_tensor({21, 40});
  const Tensor y1 = ops::linear_per_item(x, w);
  const Tensor y2 = ops::linear_per_item(x, w);
  const auto s = kc::packed_weight_cache_stats();
  CHECK(s.entries == 1);
  CHECK(s.misses == 1);
  CHECK(s.hits == 1);
  CHECK(same_bits(y1, y2));
  CHECK(kc::packed_weight_cached(w) == kc::packed_weight_cached(w));
  // Rewritten in place: the sampled values differ, so the weight is packed again.
  w.fill(0.25);
  CHECK(rel_err(ops::linear_per_item(x, w), kernels::reference::linear(x, w, nullptr)) <= 1e-4);
  // Freed and remade at a likely recycled address: the freed storage's entry must not answer.
  for (int k = 0; k < 4; ++k) {
    w = Tensor();
    w = kcases::rand_tensor({21, 40});
    CHECK(rel_err(ops::linear_per_item(x, w), kernels::reference::linear(x, w, nullptr)) <= 1e-4);
  }
  // Views at other offsets of one storage are other weights.
  const Tensor both = kcases::rand_tensor({2, 21, 40});
  for (int64_t k = 0; k < 2; ++k) {
    const Tensor wk = both.select(0, k);
    CHECK(rel_err(ops::linear_per_item(x, wk), kernels::reference::linear(x, wk, nullptr)) <= 1e-4);
  }
  // A transposed (non-contiguous) weight is packed per call and not kept.
  const Tensor wt = kcases::rand_tensor({40, 21}).transpose(0, 1);
  REQUIRE(!wt.is_contiguous());
  const int64_t before = kc::packed_weight_cache_stats().entries;
  CHECK(rel_err(ops::linear_per_item(x, wt), kernels::reference::linear(x, wt, nullptr)) <= 1e-4);
  CHECK(kc::packed_weight_cache_stats().entries == before);
  kc::packed_weight_cache_clear();
  CHECK(kc::packed_weight_cache_stats().entries == 0);
}

// ---------------------------------------------------------------- sgemm over the pool (CPU only)

TEST_CASE("sgemm_tiles matches the naive product and gives the same bytes when the pool is busy") {
  // Shapes that split into tiles of columns (on 16-column boundaries, N odd), of rows (N too
  // narrow for a column split), both, and none; with B as [K, N] and as [N, K].
  struct S { int64_t m, n, k; };
  for (bool trans_b : {false, true})
    for (const S& s : {S{130, 1000, 129}, S{200, 3001, 77}, S{257, 300, 515}, S{97, 2050, 301}, S{5, 7, 3}}) {
      CAPTURE(trans_b);
      CAPTURE(s.m);
      CAPTURE(s.n);
      CAPTURE(s.k);
      const Tensor a = kcases::rand_tensor({s.m, s.k}), b = kcases::rand_tensor(trans_b ? Shape{s.n, s.k} : Shape{s.k, s.n});
      const float *pa = a.data_as<float>(), *pb = b.data_as<float>();
      const int64_t ldb = trans_b ? s.k : s.n;
      std::vector<float> c(static_cast<size_t>(s.m * s.n)), inl(c.size()), spare(c.size());
      kernels::cpu::sgemm_tiles(trans_b, s.m, s.n, s.k, pa, s.k, pb, ldb, c.data(), s.n);
      double worst = 0.0, scale = 0.0;
      for (int64_t i = 0; i < s.m; ++i)
        for (int64_t j = 0; j < s.n; ++j) {
          double ref = 0.0;
          for (int64_t k = 0; k < s.k; ++k)
            ref += static_cast<double>(pa[i * s.k + k]) * (trans_b ? pb[j * s.k + k] : pb[k * s.n + j]);
          worst = std::max(worst, std::abs(ref - c[i * s.n + j]));
          scale = std::max(scale, std::abs(ref));
        }
      CHECK(worst <= 1e-5 * std::max(1.0, scale));
      // Inside a parallel_for the pool is taken, so both calls run their tiles inline: the
      // tiles, and so the bytes, must not depend on that (a decoder lane whose pool is busy
      // with the denoiser's loops must give a lone job's bytes).
      kernels::cpu::parallel_for(2, 1, [&](int64_t i0, int64_t i1) {
        for (int64_t i = i0; i < i1; ++i)
          kernels::cpu::sgemm_tiles(trans_b, s.m, s.n, s.k, pa, s.k, pb, ldb, (i == 0 ? inl : spare).data(), s.n);
      });
      CHECK(std::memcmp(c.data(), inl.data(), c.size() * 4) == 0);
      CHECK(std::memcmp(c.data(), spare.data(), c.size() * 4) == 0);
    }
}

TEST_CASE("parallel_for covers every index once under back-to-back calls from several threads") {
  // Workers spin between regions and sleep after STAGECRAFT_CPU_SPIN_US: regions that follow
  // each other at once, regions after a pause (workers asleep) and callers that find the pool
  // taken (inline) must all cover [0, n) exactly once; so must regions cut into several
  // chunks per thread, which the caller and the workers claim as they come free.
  auto hammer = [](int rounds, int pause_every, int64_t* bad) {
    for (int r = 0; r < rounds; ++r) {
      const int64_t n = 1 + r % 97;
      std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
      kernels::cpu::parallel_for(
          n, 1,
          [&](int64_t b, int64_t e) {
            for (int64_t i = b; i < e; ++i) hits[static_cast<size_t>(i)].fetch_add(1);
          },
          1 + r % 5);
      for (auto& h : hits) *bad += h.load() != 1;
      if (pause_every > 0 && r % pause_every == 0) std::this_thread::sleep_for(std::chrono::microseconds(500));
    }
  };
  int64_t bad_a = 0, bad_b = 0, bad_c = 0;
  std::thread a(hammer, 3000, 0, &bad_a), b(hammer, 3000, 0, &bad_b);
  hammer(300, 7, &bad_c);
  a.join();
  b.join();
  CHECK(bad_a == 0);
  CHECK(bad_b == 0);
  CHECK(bad_c == 0);
}
