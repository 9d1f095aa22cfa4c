// The diffusers component loader: config + single-file or sharded safetensors, shape
// checks and unused-parameter reports that name the parameter, dtype casts at load;
// and model_index.json parsing.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <fstream>
#include <sstream>

#include "core/error.hpp"
#include "core/safetensors.hpp"
#include "stages/model/config_value.hpp"
#include "stages/model/model_index.hpp"
#include "stages/model/weights.hpp"
#include "stages/pipeline/latents_file.hpp"
#include "test_pixart_vae_support.hpp"

using namespace stagecraft;
using sc_test::TempDir;

namespace {

void write_text(const std::string& path, const std::string& text) {
  std::ofstream f(path);
  f << text;
}

// A component folder with config.json and `model.safetensors` holding `tensors`.
std::string make_component(const TempDir& tmp, const std::string& name, const std::map<std::string, Tensor>& tensors) {
  const std::string dir = tmp / name;
  std::filesystem::create_directories(dir);
  write_text(dir + "/config.json", R"({"hidden_size": 4})");
  save_safetensors(dir + "/model.safetensors", tensors);
  return dir;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

}  // namespace

TEST_CASE("a component loads its config and a parameter of the expected shape") {
  TempDir tmp;
  const auto w = Tensor::from_vector({1, 2, 3, 4, 5, 6}, {2, 3});
  auto c = ModelComponent::open(make_component(tmp, "c", {{"layer.weight", w}}));
  CHECK(c.config().at("hidden_size") == 4);
  CHECK(c.has("layer.weight"));
  CHECK_FALSE(c.has("layer.bias"));
  const Tensor p = c.param("layer.weight", {2, 3}, DType::f32, Device::cpu());
  CHECK(p.to_vector() == w.to_vector());
  CHECK_NOTHROW(c.check_all_used());
}

TEST_CASE("a missing parameter is an error naming it and the expected shape") {
  TempDir tmp;
  auto c = ModelComponent::open(make_component(tmp, "c", {{"a", Tensor::zeros({2}, DType::f32)}}));
  const std::string msg = error_of([&] { c.param("encoder.layers.0.fc1.weight", {8, 4}, DType::f32, Device::cpu()); });
  CHECK(contains(msg, "missing parameter encoder.layers.0.fc1.weight"));
  CHECK(contains(msg, "[8, 4]"));
}

TEST_CASE("a wrongly shaped parameter is an error naming it, both shapes and the file") {
  TempDir tmp;
  auto c = ModelComponent::open(make_component(tmp, "c", {{"proj.weight", Tensor::zeros({3, 5}, DType::f32)}}));
  const std::string msg = error_of([&] { c.param("proj.weight", {5, 3}, DType::f32, Device::cpu()); });
  CHECK(contains(msg, "proj.weight"));
  CHECK(contains(msg, "[3, 5]"));
  CHECK(contains(msg, "[5, 3]"));
  CHECK(contains(msg, "model.safetensors"));
}

TEST_CASE("an unexpected parameter is reported by check_all_used with its name") {
  TempDir tmp;
  auto c = ModelComponent::open(make_component(
      tmp, "c", {{"used", Tensor::zeros({2}, DType::f32)}, {"stray.extra_bias", Tensor::zeros({7}, DType::f32)}}));
  c.param("used", {2}, DType::f32, Device::cpu());
  const std::string msg = error_of([&] { c.check_all_used(); });
  CHECK(contains(msg, "unexpected parameter stray.extra_bias [7]"));
  CHECK_FALSE(contains(msg, "unexpected parameter used"));
}

TEST_CASE("f16 and bf16 weights are cast to the compute dtype at load") {
  TempDir tmp;
  const auto w = Tensor::from_vector({0.5f, -1.25f, 3.0f, 1024.0f}, {4});
  auto c = ModelComponent::open(make_component(tmp, "c", {{"h", w.to(DType::f16)}, {"b", w.to(DType::bf16)}}));
  const Tensor h = c.param("h", {4}, DType::f32, Device::cpu());
  const Tensor b = c.param("b", {4}, DType::f32, Device::cpu());
  CHECK(h.dtype() == DType::f32);
  CHECK(b.dtype() == DType::f32);
  CHECK(h.to_vector() == w.to_vector());  // all four values are exact in f16 and bf16
  CHECK(b.to_vector() == w.to_vector());
  const Tensor back = c.param("h", {4}, DType::bf16, Device::cpu());
  CHECK(back.dtype() == DType::bf16);
  CHECK(back.to_vector() == w.to_vector());
}

TEST_CASE("a sharded checkpoint loads through its safetensors index") {
  TempDir tmp;
  const std::string dir = tmp / "sharded";
  std::filesystem::create_directories(dir);
  write_text(dir + "/config.json", "{}");
  save_safetensors(dir + "/model-00001-of-00002.safetensors", {{"a.weight", Tensor::from_vector({1, 2}, {2})}});
  save_safetensors(dir + "/model-00002-of-00002.safetensors", {{"b.weight", Tensor::from_vector({3, 4, 5}, {3})}});
  write_text(dir + "/model.safetensors.index.json",
             R"({"metadata": {"total_size": 20}, "weight_map": {"a.weight": "model-00001-of-00002.safetensors",
                 "b.weight": "model-00002-of-00002.safetensors"}})");
  auto c = ModelComponent::open(dir);
  CHECK(c.names() == std::vector<std::string>{"a.weight", "b.weight"});
  CHECK(c.param("b.weight", {3}, DType::f32, Device::cpu()).to_vector() == std::vector<float>{3, 4, 5});
  CHECK(c.param("a.weight", {2}, DType::f32, Device::cpu()).to_vector() == std::vector<float>{1, 2});
  CHECK_NOTHROW(c.check_all_used());
}

TEST_CASE("an index naming a shard that lacks the parameter is an error naming both") {
  TempDir tmp;
  const std::string dir = tmp / "bad";
  std::filesystem::create_directories(dir);
  write_text(dir + "/config.json", "{}");
  save_safetensors(dir + "/s1.safetensors", {{"a", Tensor::zeros({1}, DType::f32)}});
  write_text(dir + "/x.safetensors.index.json", R"({"weight_map": {"ghost": "s1.safetensors"}})");
  const std::string msg = error_of([&] { ModelComponent::open(dir); });
  CHECK(contains(msg, "ghost"));
  CHECK(contains(msg, "s1.safetensors"));
}

TEST_CASE("a folder without config.json is an error that names the folder") {
  TempDir tmp;
  std::filesystem::create_directories(tmp / "empty");
  const std::string msg = error_of([&] { ModelComponent::open(tmp / "empty"); });
  CHECK(contains(msg, "config.json"));
  CHECK(contains(msg, "empty"));
}

TEST_CASE("model_index.json lists components with their classes and skips null entries") {
  TempDir tmp;
  const std::string root = tmp / "m";
  std::filesystem::create_directories(root + "/vae");
  std::filesystem::create_directories(root + "/transformer");
  write_text(root + "/model_index.json", R"({"_class_name": "PixArtAlphaPipeline", "_diffusers_version": "0.30.0",
      "vae": ["diffusers", "AutoencoderKL"], "transformer": ["diffusers", "PixArtTransformer2DModel"],
      "safety_checker": [null, null], "requires_safety_checker": false})");
  const ModelIndex idx = ModelIndex::open(root);
  CHECK(idx.pipeline_class() == "PixArtAlphaPipeline");
  CHECK(idx.components() == std::vector<std::string>{"transformer", "vae"});
  CHECK(idx.component("vae").class_name == "AutoencoderKL");
  CHECK(idx.component("vae").library == "diffusers");
  CHECK(idx.component_dir("vae") == root + "/vae");
  CHECK_FALSE(idx.has("safety_checker"));
  CHECK(contains(error_of([&] { idx.component("text_encoder"); }), "text_encoder"));
}

// ---- hostile model folders (issue 10, finding 6); tests/data/untrusted/models/README.md ----

TEST_CASE("a shard named with a folder or .. is refused: shards live beside their index") {
  TempDir tmp;
  const std::string dir = make_component(tmp, "c", {{"w", Tensor::from_vector({1, 2}, {2})}});
  std::filesystem::remove(dir + "/model.safetensors");
  write_text(dir + "/model.safetensors.index.json", R"({"weight_map": {"w": "../other/model.safetensors"}})");
  const std::string msg = error_of([&] { ModelComponent::open(dir); });
  CHECK(contains(msg, "weight_map[\"w\"] is \"../other/model.safetensors\"; a shard must be a file name in"));
}

TEST_CASE("a config.json that is not an object is refused naming it") {
  TempDir tmp;
  const std::string dir = make_component(tmp, "c", {{"w", Tensor::from_vector({1, 2}, {2})}});
  write_text(dir + "/config.json", "[1, 2, 3]");
  CHECK(contains(error_of([&] { ModelComponent::open(dir); }), dir + "/config.json must hold a JSON object"));
}

TEST_CASE("latent_geometry checks stagecraft.json defaults and the configs it reads like the loaders do") {
  // Before the fix latent_geometry took width -7 and height 13 from stagecraft.json as they were.
  TempDir tmp;
  const std::string root = tmp / "m";
  std::filesystem::create_directories(root + "/vae");
  std::filesystem::create_directories(root + "/transformer");
  write_text(root + "/model_index.json", R"({"vae": ["diffusers", "AutoencoderKL"], "transformer": ["diffusers", "PixArtTransformer2DModel"]})");
  write_text(root + "/vae/config.json", R"({"block_out_channels": [32, 64], "latent_channels": 4})");
  write_text(root + "/transformer/config.json", R"({"sample_size": 16})");
  CHECK(latent_geometry(root).default_width == 32);

  write_text(root + "/stagecraft.json", R"({"defaults": {"width": -7, "height": 13}})");
  CHECK(contains(error_of([&] { latent_geometry(root); }),
                 root + "/stagecraft.json: defaults.width is -7, out of range"));

  std::filesystem::remove(root + "/stagecraft.json");
  std::ifstream in(std::string(STAGECRAFT_SOURCE_DIR) + "/tests/data/untrusted/models/vae_34_levels/config.json");
  std::stringstream vae;
  vae << in.rdbuf();
  write_text(root + "/vae/config.json", vae.str());
  CHECK(contains(error_of([&] { latent_geometry(root); }),
                 root + "/vae/config.json: \"block_out_channels\" must be a list of 1 to 8 integers"));
}

TEST_CASE("a config value nested a million levels deep is refused without recursing into it") {
  // nlohmann parses it iteratively, but dumping it into the message recursed once per level.
  TempDir tmp;
  const std::string dir = make_component(tmp, "c", {{"w", Tensor::from_vector({1, 2}, {2})}});
  const std::string deep = std::string(1000000, '[') + std::string(1000000, ']');
  write_text(dir + "/config.json", R"({"block_out_channels": )" + deep + "}");
  const ModelComponent mc = ModelComponent::open(dir);
  const ConfigFile c{mc.config(), dir + "/config.json"};
  const std::string msg = error_of([&] { cfg_int_list(c, "block_out_channels", {64}, 1, 8, 1, 65536); });
  INFO(msg.substr(0, 300));
  CHECK(contains(msg, dir + "/config.json: \"block_out_channels[0]\" must be a whole number, got a list of 1 values"));
}

TEST_CASE("a model folder's JSON file over 64 MiB is refused before it is read") {
  TempDir tmp;
  const std::string path = tmp / "config.json";
  write_text(path, "{}");
  std::filesystem::resize_file(path, (64ull << 20) + 1);  // sparse: costs no disk
  CHECK(contains(error_of([&] { read_json_file(path); }),
                 path + " is 67108865 bytes; a JSON file of a model folder may hold at most 64 MiB"));
}
