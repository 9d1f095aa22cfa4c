// VaeDecoder against tools/reference.py (an independent PyTorch AutoencoderKL) on the same
// random weights; tiled decoding against a literal re-statement of diffusers' tiled_decode;
// the load-time checks that name bad parameters.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <fstream>
#include <functional>

#include "core/error.hpp"
#include "core/safetensors.hpp"
#include "stages/vae/vae_decoder.hpp"
#include "test_pixart_vae_support.hpp"

using namespace stagecraft;
using namespace sc_test;

namespace {

double parity(const std::string& model_root, const VaeDecoder& vae, const Shape& shape, const TempDir& tmp,
              unsigned seed) {
  const Tensor latents = randn(shape, seed);
  const std::string in_path = tmp / ("in" + std::to_string(seed) + ".safetensors");
  const std::string out_path = tmp / ("out" + std::to_string(seed) + ".safetensors");
  save_safetensors(in_path, {{"latents", latents}});
  run_reference("run --model " + model_root + " --component vae_decoder --inputs " + in_path + " --out " + out_path,
                tmp);
  const Tensor expected = SafetensorsFile::open(out_path).get("sample");
  const Tensor got = vae.decode(latents);
  const int s = vae.scale_factor();
  REQUIRE(got.shape() == Shape{shape[0], vae.out_channels(), shape[2] * s, shape[3] * s});
  REQUIRE(expected.shape() == got.shape());
  CHECK(all_finite(got));
  const double err = max_abs_diff(got, expected);
  MESSAGE("VAE " << shape_str(shape) << ": max |C++ - PyTorch| = " << err << " (output max " << max_abs(expected)
                 << ")");
  return err;
}

// diffusers' AutoencoderKL.tiled_decode written out on host arrays: decode every tile on its
// own, blend each tile in place with the (already blended) tile above and to the left, keep
// the top-left (tile - overlap) pixels of each.
Tensor diffusers_tiled_decode(const VaeDecoder& vae, const Tensor& latents, const TilingOptions& t) {
  const int s = vae.scale_factor();
  const int64_t L = t.tile / s, stride = (t.tile - t.overlap) / s, E = t.overlap, R = t.tile - t.overlap;
  const int64_t B = latents.size(0), h = latents.size(2), w = latents.size(3), C = vae.out_channels();
  struct Tile {
    int64_t th, tw;
    std::vector<float> v;  // [B, C, th, tw]
    float& at(int64_t b, int64_t c, int64_t y, int64_t x) { return v[((b * C_ + c) * th + y) * tw + x]; }
    int64_t C_;
  };
  std::vector<std::vector<Tile>> rows;
  for (int64_t i = 0; i < h; i += stride) {
    rows.emplace_back();
    for (int64_t j = 0; j < w; j += stride) {
      Tensor sub = latents.slice(2, i, std::min(i + L, h)).slice(3, j, std::min(j + L, w)).contiguous();
      Tensor d = vae.decode(sub);
      rows.back().push_back(Tile{d.size(2), d.size(3), d.to_vector(), C});
    }
  }
  for (size_t i = 0; i < rows.size(); ++i)
    for (size_t j = 0; j < rows[i].size(); ++j) {
      Tile& b = rows[i][j];
      if (i > 0) {
        Tile& a = rows[i - 1][j];
        const int64_t e = std::min({a.th, b.th, E});
        for (int64_t y = 0; y < e; ++y)
          for (int64_t n = 0; n < B; ++n)
            for (int64_t c = 0; c < C; ++c)
              for (int64_t x = 0; x < b.tw; ++x)
                b.at(n, c, y, x) = a.at(n, c, a.th - e + y, x) * static_cast<float>(1.0 - double(y) / e) +
                                   b.at(n, c, y, x) * static_cast<float>(double(y) / e);
      }
      if (j > 0) {
        Tile& a = rows[i][j - 1];
        const int64_t e = std::min({a.tw, b.tw, E});
        for (int64_t x = 0; x < e; ++x)
          for (int64_t n = 0; n < B; ++n)
            for (int64_t c = 0; c < C; ++c)
              for (int64_t y = 0; y < b.th; ++y)
                b.at(n, c, y, x) = a.at(n, c, y, a.tw - e + x) * static_cast<float>(1.0 - double(x) / e) +
                                   b.at(n, c, y, x) * static_cast<float>(double(x) / e);
      }
    }
  Tensor out = Tensor::zeros({B, C, h * s, w * s}, DType::f32);
  float* po = out.data_as<float>();
  int64_t oy = 0;
  for (auto& row : rows) {
    int64_t ox = 0, kept_h = 0;
    for (auto& tile : row) {
      const int64_t kh = std::min(R, tile.th), kw = std::min(R, tile.tw);
      for (int64_t n = 0; n < B; ++n)
        for (int64_t c = 0; c < C; ++c)
          for (int64_t y = 0; y < kh; ++y)
            for (int64_t x = 0; x < kw; ++x)
              po[((n * C + c) * (h * s) + oy + y) * (w * s) + ox + x] = tile.at(n, c, y, x);
      ox += kw;
      kept_h = kh;
    }
    REQUIRE(ox == w * s);
    oy += kept_h;
  }
  REQUIRE(oy == h * s);
  return out;
}

void write_json(const std::string& path, const std::string& text) {
  std::ofstream out(path);
  out << text;
}

const char* kTinyConfig = R"({
  "_class_name": "AutoencoderKL", "in_channels": 3, "out_channels": 3, "latent_channels": 4,
  "block_out_channels": [8, 16], "layers_per_block": 1, "norm_num_groups": 4,
  "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D"], "scaling_factor": 0.5, "shift_factor": null
})";

}  // namespace

TEST_CASE("VAE decode matches the PyTorch reference on the tiny preset") {
  if (!torch_missing_reason().empty()) {
    MESSAGE("skipped: " << torch_missing_reason());
    return;
  }
  TempDir tmp;
  const std::string root = tiny_model_root();
  const auto vae = VaeDecoder::load(root + "/vae", DType::f32, Device::cpu());
  CHECK(parity(root, vae, {2, vae.latent_channels(), 8, 6}, tmp, 31) <= 1e-3);
  CHECK(parity(root, vae, {1, vae.latent_channels(), 5, 9}, tmp, 32) <= 1e-3);
}

TEST_CASE("VAE decode matches the PyTorch reference at Stable Diffusion widths") {
  if (!torch_missing_reason().empty()) {
    MESSAGE("skipped: " << torch_missing_reason());
    return;
  }
  TempDir tmp;
  run_reference("random-model --preset real-vae --seed 5 --out " + (tmp / "model"), tmp);
  const std::string dir = tmp / "model/vae";
  const auto vae = VaeDecoder::load(dir, DType::f32, Device::cpu());
  CHECK(vae.scale_factor() == 8);
  CHECK(parity(tmp / "model", vae, {1, vae.latent_channels(), 8, 8}, tmp, 41) <= 1e-3);
}

TEST_CASE("tiled decode of a latent that fits one tile equals the plain decode") {
  std::string root;
  if (!tiny_model_or_skip(root)) return;
  const auto vae = VaeDecoder::load(root + "/vae", DType::f32, Device::cpu());
  const int s = vae.scale_factor();
  const TilingOptions t{8 * s, 2 * s};
  for (const Shape& shape : {Shape{1, vae.latent_channels(), 8, 8}, Shape{2, vae.latent_channels(), 5, 8}}) {
    const Tensor z = randn(shape, 51);
    CHECK(max_abs_diff(vae.decode(z, &t), vae.decode(z)) == 0.0);
  }
}

TEST_CASE("tiled decode blends seams exactly as diffusers' tiled_decode") {
  std::string root;
  if (!tiny_model_or_skip(root)) return;
  const auto vae = VaeDecoder::load(root + "/vae", DType::f32, Device::cpu());
  const int s = vae.scale_factor();
  const Tensor z = randn({2, vae.latent_channels(), 11, 9}, 61);
  // Several rows and columns of tiles, a last tile narrower than the overlap, diffusers' 1/4 overlap.
  for (const TilingOptions& t : {TilingOptions{4 * s, 1 * s}, TilingOptions{6 * s, 2 * s}, TilingOptions{8 * s, 2 * s}}) {
    const Tensor got = vae.decode(z, &t);
    const Tensor want = diffusers_tiled_decode(vae, z, t);
    REQUIRE(got.shape() == want.shape());
    const double err = max_abs_diff(got, want);
    MESSAGE("tile " << t.tile << " overlap " << t.overlap << ": max |ours - diffusers' algorithm| = " << err);
    CHECK(err <= 1e-5);
  }
}

TEST_CASE("tiled decode stays close to the plain decode") {
  std::string root;
  if (!tiny_model_or_skip(root)) return;
  const auto vae = VaeDecoder::load(root + "/vae", DType::f32, Device::cpu());
  const int s = vae.scale_factor();
  const Tensor z = randn({1, vae.latent_channels(), 24, 24}, 71);
  const TilingOptions t{16 * s, 4 * s};
  const Tensor tiled = vae.decode(z, &t), plain = vae.decode(z);
  REQUIRE(tiled.shape() == plain.shape());
  const auto a = tiled.to_vector(), b = plain.to_vector();
  double max_err = 0, sum_err = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    max_err = std::max(max_err, std::fabs(double(a[i]) - b[i]));
    sum_err += std::fabs(double(a[i]) - b[i]);
  }
  const double range = max_abs(plain), mean_err = sum_err / a.size();
  MESSAGE("tiled vs plain: max err " << max_err << ", mean err " << mean_err << ", output max " << range);
  CHECK(all_finite(tiled));
  CHECK(max_err > 0.0);  // tiles normalise and attend over themselves only, so they cannot be identical
  CHECK(mean_err <= 0.03 * range);
  CHECK(max_err <= 0.3 * range);
}

TEST_CASE("bad tiling options are refused with the rule") {
  std::string root;
  if (!tiny_model_or_skip(root)) return;
  const auto vae = VaeDecoder::load(root + "/vae", DType::f32, Device::cpu());
  const int s = vae.scale_factor();
  const Tensor z = randn({1, vae.latent_channels(), 12, 12}, 81);
  const TilingOptions overlap_too_big{4 * s, 4 * s};
  CHECK(error_of([&] { vae.decode(z, &overlap_too_big); }).find("overlap < tile") != std::string::npos);
  if (s > 1) {
    const TilingOptions unaligned{4 * s + 1, s};
    CHECK(error_of([&] { vae.decode(z, &unaligned); }).find("multiples of the scale factor") != std::string::npos);
  }
}

TEST_CASE("a missing or wrongly shaped VAE parameter is an error that names it") {
  TempDir tmp;
  write_json(tmp / "config.json", kTinyConfig);
  save_safetensors(tmp / "diffusion_pytorch_model.safetensors", {{"post_quant_conv.weight", randn({4, 4, 1, 1}, 1)}});
  std::string msg = error_of([&] { VaeDecoder::load(tmp.path.string(), DType::f32, Device::cpu()); });
  CHECK(msg.find("post_quant_conv.bias") != std::string::npos);

  save_safetensors(tmp / "diffusion_pytorch_model.safetensors",
                   {{"post_quant_conv.weight", randn({4, 4, 1, 1}, 1)}, {"post_quant_conv.bias", randn({4}, 2)},
                    {"decoder.conv_in.weight", randn({16, 4, 1, 1}, 3)}});
  msg = error_of([&] { VaeDecoder::load(tmp.path.string(), DType::f32, Device::cpu()); });
  CHECK(msg.find("decoder.conv_in.weight") != std::string::npos);
  CHECK(msg.find("[16, 4, 1, 1]") != std::string::npos);
  CHECK(msg.find("[16, 4, 3, 3]") != std::string::npos);
}

TEST_CASE("the VAE decoder ignores the encoder but names any other stray parameter") {
  std::string root;
  if (!tiny_model_or_skip(root)) return;
  TempDir tmp;
  const std::string dir = copy_tiny_component("vae", tmp);
  const std::string file = dir + "/diffusion_pytorch_model.safetensors";
  std::map<std::string, Tensor> params;
  bool has_encoder = false;
  {
    const auto st = SafetensorsFile::open(file);
    for (const auto& name : st.names()) {
      params[name] = st.get(name).clone();
      has_encoder = has_encoder || name.rfind("encoder.", 0) == 0;
    }
  }
  CHECK(has_encoder);
  CHECK_NOTHROW(VaeDecoder::load(dir, DType::f32, Device::cpu()));
  params["decoder.mid_block.attentions.0.rotary"] = randn({2}, 3);
  save_safetensors(file, params);
  const std::string msg = error_of([&] { VaeDecoder::load(dir, DType::f32, Device::cpu()); });
  CHECK(msg.find("decoder.mid_block.attentions.0.rotary") != std::string::npos);
}

TEST_CASE("the VAE loads f16 weights into f32 compute and still matches the reference") {
  if (!torch_missing_reason().empty()) {
    MESSAGE("skipped: " << torch_missing_reason());
    return;
  }
  TempDir tmp;
  run_reference("random-model --preset tiny --seed 9 --dtype float16 --out " + (tmp / "model"), tmp);
  const auto vae = VaeDecoder::load(tmp / "model/vae", DType::f32, Device::cpu());
  CHECK(parity(tmp / "model", vae, {1, vae.latent_channels(), 6, 6}, tmp, 111) <= 1e-3);
}

TEST_CASE("the VAE in bf16 compute stays close to f32") {
  std::string root;
  if (!tiny_model_or_skip(root)) return;
  const std::string dir = root + "/vae";
  const auto ref = VaeDecoder::load(dir, DType::f32, Device::cpu());
  const auto low = VaeDecoder::load(dir, DType::bf16, Device::cpu());
  const Tensor z = randn({1, ref.latent_channels(), 6, 6}, 121);
  const Tensor want = ref.decode(z), got = low.decode(z);
  CHECK(got.dtype() == DType::bf16);
  const double err = max_abs_diff(got.to(DType::f32), want), range = max_abs(want);
  MESSAGE("bf16: max |bf16 - f32| = " << err << " (output max " << range << ")");
  CHECK(err <= 0.1 * range);
}

// ---- hostile config.json files (issue 10, finding 6); tests/data/untrusted/models/README.md ----

namespace {
std::string untrusted_model(const std::string& name) {
  return std::string(STAGECRAFT_SOURCE_DIR) + "/tests/data/untrusted/models/" + name;
}
bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }
}  // namespace

TEST_CASE("34 VAE levels are refused naming the file and key instead of shifting 1 << 33") {
  // Before the fix the scale 1 << 33 was undefined and the folder was accepted as 32x32.
  const std::string dir = untrusted_model("vae_34_levels");
  const std::string msg = error_of([&] { VaeDecoder::load(dir, DType::f32, Device::cpu()); });
  CHECK(contains(msg, dir + "/config.json: \"block_out_channels\" must be a list of 1 to 8 integers"));
}

TEST_CASE("a VAE norm_num_groups of 0 is refused instead of dividing by it") {
  const std::string dir = untrusted_model("vae_zero_groups");
  const std::string msg = error_of([&] { VaeDecoder::load(dir, DType::f32, Device::cpu()); });
  CHECK(contains(msg, dir + "/config.json: \"norm_num_groups\" is 0, out of range (allowed: 1 to 65536)"));
}

TEST_CASE("VAE config values of the wrong JSON type are refused naming the key, not as raw JSON errors") {
  const std::string dir = untrusted_model("vae_string_channels");
  const std::string msg = error_of([&] { VaeDecoder::load(dir, DType::f32, Device::cpu()); });
  CHECK(contains(msg, dir + "/config.json: \"block_out_channels[1]\" must be a whole number, got \"64\""));
}
