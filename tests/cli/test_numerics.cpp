// Numerics you can check from outside (docs/numerics.md), through the real `stagecraft`
// binary: stage dumps of generate and run, `stagecraft compare`, and supplied noise
// (--latents). Uses reference.py's random `tiny` model (32x32 images, latents [1, 4, 8, 8])
// at 2 steps with guidance on, so every documented tensor exists and each case takes seconds.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include "tests/support/temp_dir.hpp"
#include <doctest/doctest.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>

#include <unistd.h>

#include <nlohmann/json.hpp>

#include "core/dump.hpp"
#include "core/error.hpp"
#include "core/safetensors.hpp"
#include "core/tensor.hpp"
#include "stages/pipeline/latents_file.hpp"
#include "stages/post/image.hpp"

using namespace stagecraft;
namespace fs = std::filesystem;

namespace {

const char* kPython = "/usr/bin/python3";
const std::string kSteps = "2";
const std::string kPrompt = "a red circle in the center on a blue background";

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

using stagecraft::testing::TempDir;

struct Run {
  int rc = -1;
  std::string out;  ///< stdout and stderr together
};

/// Runs `cmd` through /bin/sh with stdout+stderr captured.
Run sh(const std::string& cmd, const TempDir& tmp) {
  const std::string log = tmp / "cmd.log";
  const int status = std::system((cmd + " >" + log + " 2>&1").c_str());
  Run r;
  r.rc = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.out = slurp(log);
  return r;
}

std::string exe(const std::string& args) { return std::string(STAGECRAFT_EXE) + " " + args; }

/// The tiny model, made once and kept in the build tree under a hash of reference.py (ctest
/// runs each case in its own process); "" when /usr/bin/python3 has no torch.
std::string tiny_model() {
  static const std::string root = []() -> std::string {
    std::ostringstream name;
    name << "numerics-tiny-" << std::hex << std::hash<std::string>{}(slurp(std::string(STAGECRAFT_SOURCE_DIR) + "/tools/reference.py"));
    const fs::path cache = fs::path(STAGECRAFT_BINARY_DIR) / "tests" / "cli" / name.str();
    if (fs::is_directory(cache)) return cache.string();
    if (std::system((std::string(kPython) + " -c 'import torch' >/dev/null 2>&1").c_str()) != 0) return "";
    TempDir logs;
    const fs::path staging = cache.string() + ".tmp-" + std::to_string(::getpid());
    const Run r = sh(std::string(kPython) + " " + STAGECRAFT_SOURCE_DIR + "/tools/reference.py random-model --preset tiny --seed 3 --out " +
                         staging.string(),
                     logs);
    if (r.rc != 0) FAIL("reference.py random-model failed: " << r.out);
    std::error_code ec;
    fs::create_directories(cache.parent_path(), ec);
    fs::rename(staging, cache, ec);
    if (ec) fs::remove_all(staging, ec);  // another process published it first
    return cache.string();
  }();
  return root;
}

#define NEED_TINY_MODEL(var)                                                         \
  const std::string var = tiny_model();                                              \
  if (var.empty()) {                                                                 \
    MESSAGE("skipped: /usr/bin/python3 cannot import torch to write the tiny model"); \
    return;                                                                          \
  }

std::string generate_args(const std::string& model, const std::string& extra) {
  return exe("generate --quiet --model " + model + " --prompt '" + kPrompt + "' --seed 11 --steps " + kSteps +
                    " --guidance 4 " + extra);
}

/// A one-process pipeline file over `model` with the four model stages.
std::string write_pipeline(const std::string& model, const TempDir& tmp) {
  const std::string path = tmp / "pipe.yaml";
  std::ofstream(path) << "model: " << model << "\n"
                      << "stages:\n"
                      << "  - {name: text, type: clip_text_encoder, device: cpu, cache: {entries: 8}}\n"
                      << "  - {name: denoise, type: pixart_denoiser, device: cpu, batching: {max_batch: 4}}\n"
                      << "  - {name: decode, type: vae_decoder, device: cpu}\n"
                      << "  - {name: png, type: postprocess, device: cpu}\n";
  return path;
}

std::string run_args(const std::string& pipeline, const std::string& extra) {
  return exe("run " + pipeline + " --quiet --prompt '" + kPrompt + "' --seed 11 --steps " + kSteps +
                    " --guidance 4 --width 32 --height 32 " + extra);
}

Tensor tensor_of(const std::string& file, const std::string& name) {
  return SafetensorsFile::open(file).get(name).clone();
}

void save_latents(const std::string& path, const std::string& name, const Tensor& t) {
  save_safetensors(path, {{name, t}});
}

}  // namespace

TEST_CASE("a generate dump holds every documented tensor with the request's shapes and the manifest") {
  NEED_TINY_MODEL(model);
  TempDir tmp;
  const Run g = sh(generate_args(model, "--dump " + tmp / "dump" + " --out " + tmp / "x.png"), tmp);
  REQUIRE_MESSAGE(g.rc == 0, g.out);

  const nlohmann::json m = nlohmann::json::parse(slurp(tmp / "dump/manifest.json"));
  CHECK(m["format"] == "stagecraft-dump/1");
  CHECK(m["pipeline"] == "sequential");
  CHECK(m["model"] == model);
  REQUIRE(m["files"].size() == 4);
  CHECK(m["files"][0]["file"] == "00-text.safetensors");
  CHECK(m["files"][1]["file"] == "01-denoise.safetensors");
  CHECK(m["files"][2]["file"] == "02-decode.safetensors");
  CHECK(m["files"][3]["file"] == "03-postprocess.safetensors");
  CHECK(m["scheduler"]["name"] == "flow_match_euler");
  CHECK(m["scheduler"]["config"]["_class_name"] == "FlowMatchEulerDiscreteScheduler");
  CHECK(m["timesteps"].size() == 2);
  CHECK(m["sigmas"].size() == 3);
  CHECK(m["model_timesteps"].size() == 2);
  CHECK(m["request"]["seed"] == 11);
  CHECK(m["request"]["steps"] == 2);
  CHECK(m["request"]["width"] == 32);
  CHECK(m["request"]["prompt"] == kPrompt);

  struct Want {
    const char* file;
    const char* name;
    Shape shape;
    DType dtype;
  };
  const Want want[] = {
      {"00-text", "token_ids", {1, 16}, DType::i32},
      {"00-text", "attention_mask", {1, 16}, DType::i32},
      {"00-text", "prompt_embeds", {1, 16, 32}, DType::f32},
      {"00-text", "negative_token_ids", {1, 16}, DType::i32},
      {"00-text", "negative_attention_mask", {1, 16}, DType::i32},
      {"00-text", "negative_prompt_embeds", {1, 16, 32}, DType::f32},
      {"01-denoise", "latents.initial", {1, 4, 8, 8}, DType::f32},
      {"01-denoise", "latents.step_000", {1, 4, 8, 8}, DType::f32},
      {"01-denoise", "latents.step_001", {1, 4, 8, 8}, DType::f32},
      {"01-denoise", "model_output.step_000", {2, 4, 8, 8}, DType::f32},  // [uncond, cond], learned sigma dropped
      {"01-denoise", "noise_pred.step_000", {1, 4, 8, 8}, DType::f32},
      {"02-decode", "image", {1, 3, 32, 32}, DType::f32},
      {"03-postprocess", "image_u8", {1, 32, 32, 3}, DType::u8},
  };
  for (const auto& w : want) {
    const std::string where = std::string(w.file) + "/" + w.name;
    CAPTURE(where);
    const SafetensorsFile f = SafetensorsFile::open(tmp / "dump/" + w.file + ".safetensors");
    REQUIRE(f.contains(w.name));
    CHECK(f.get(w.name).shape() == w.shape);
    CHECK(f.get(w.name).dtype() == w.dtype);
  }
  // Nothing undocumented in the denoise file (2 steps: initial + 2 latents + 2 first-step tensors).
  CHECK(SafetensorsFile::open(tmp / "dump/01-denoise.safetensors").names().size() == 5);

  // The dumped uint8 image is the image written, and it is the decoded image's conversion.
  const Tensor png = read_png(tmp / "x.png");
  const Tensor u8 = tensor_of(tmp / "dump/03-postprocess.safetensors", "image_u8");
  CHECK(std::string(static_cast<const char*>(png.data()), png.nbytes()) ==
        std::string(static_cast<const char*>(u8.data()), u8.nbytes()));
  const Tensor again = to_uint8(tensor_of(tmp / "dump/02-decode.safetensors", "image"));
  CHECK(std::string(static_cast<const char*>(again.data()), again.nbytes()) ==
        std::string(static_cast<const char*>(u8.data()), u8.nbytes()));
  // The prompt has padding: the mask marks fewer than 16 tokens.
  const Tensor mask = tensor_of(tmp / "dump/00-text.safetensors", "attention_mask");
  double tokens = 0;
  for (int64_t i = 0; i < mask.numel(); ++i) tokens += mask.item(i);
  CHECK(tokens > 2);
  CHECK(tokens <= 16);
}

TEST_CASE("compare passes identical dumps and names the first divergence of a perturbed one") {
  NEED_TINY_MODEL(model);
  TempDir tmp;
  const Run g = sh(generate_args(model, "--dump " + tmp / "a" + " --out " + tmp / "x.png"), tmp);
  REQUIRE_MESSAGE(g.rc == 0, g.out);
  fs::copy(tmp / "a", tmp / "b", fs::copy_options::recursive);

  const Run same = sh(exe("compare " + tmp / "a" + " " + tmp / "b" + " --atol 0 --rtol 0"), tmp);
  CHECK_MESSAGE(same.rc == 0, same.out);
  CHECK(same.out.find("all 13 shared tensors within") != std::string::npos);

  // Perturb two tensors: the later stage (decode) and, earlier in pipeline order, one
  // element of the second step's latents. compare must name the latter.
  auto perturb = [&](const std::string& file, const std::string& name, int64_t flat, float delta) {
    const std::string path = tmp / ("b/" + file);
    std::map<std::string, Tensor> all;
    {
      const SafetensorsFile f = SafetensorsFile::open(path);
      for (const auto& n : f.names()) all[n] = f.get(n).clone();
    }
    Tensor& t = all.at(name);
    t.data_as<float>()[flat] += delta;
    save_safetensors(path, all, {{"stage", "perturbed"}});
  };
  perturb("02-decode.safetensors", "image", 5, 0.5f);
  perturb("01-denoise.safetensors", "latents.step_001", 1 * 64 + 2 * 8 + 3, 1e-3f);  // [0, 1, 2, 3]

  const Run diff = sh(exe("compare " + tmp / "a" + " " + tmp / "b" + " --atol 1e-4 --rtol 0"), tmp);
  CHECK(diff.rc == 1);
  CHECK_MESSAGE(diff.out.find("first divergence: denoise/latents.step_001 at [0, 1, 2, 3]") != std::string::npos,
                diff.out);
  // Within a loose tolerance the small latent change passes, the decode one does not.
  const Run loose = sh(exe("compare " + tmp / "a" + " " + tmp / "b" + " --atol 1e-2 --rtol 0"), tmp);
  CHECK(loose.rc == 1);
  CHECK_MESSAGE(loose.out.find("first divergence: decode/image at [0, 0, 0, 5]") != std::string::npos, loose.out);
}

TEST_CASE("generate and run dump the same tensors bit for bit for the same seed") {
  NEED_TINY_MODEL(model);
  TempDir tmp;
  const Run g = sh(generate_args(model, "--dump " + tmp / "gen" + " --out " + tmp / "g.png"), tmp);
  REQUIRE_MESSAGE(g.rc == 0, g.out);
  const std::string pipe = write_pipeline(model, tmp);
  const Run r = sh(run_args(pipe, "--dump " + tmp / "run" + " --out " + tmp / "r.png"), tmp);
  REQUIRE_MESSAGE(r.rc == 0, r.out);

  const nlohmann::json m = nlohmann::json::parse(slurp(tmp / "run/manifest.json"));
  CHECK(m["pipeline"] == pipe);
  CHECK(m["files"].size() == 4);
  const Run cmp = sh(exe("compare " + tmp / "gen" + " " + tmp / "run" + " --atol 0 --rtol 0"), tmp);
  CHECK_MESSAGE(cmp.rc == 0, cmp.out);
  CHECK_MESSAGE(cmp.out.find("all 13 shared tensors within") != std::string::npos, cmp.out);
  CHECK(cmp.out.find("only in") == std::string::npos);

  // --n 2 dumps each job in its own folder. The two jobs share denoising steps, and the
  // denoiser is batch invariant: job 0's tensors are the lone run's, bit for bit.
  const Run r2 = sh(run_args(pipe, "--n 2 --dump " + tmp / "run2" + " --out " + tmp / "r2.png"), tmp);
  REQUIRE_MESSAGE(r2.rc == 0, r2.out);
  CHECK(fs::exists(tmp / "run2/job-0/manifest.json"));
  CHECK(fs::exists(tmp / "run2/job-1/03-postprocess.safetensors"));
  const Run cmp0 = sh(exe("compare " + tmp / "gen" + " " + tmp / "run2/job-0 --atol 0 --rtol 0"), tmp);
  CHECK_MESSAGE(cmp0.rc == 0, cmp0.out);
  const nlohmann::json m1 = nlohmann::json::parse(slurp(tmp / "run2/job-1/manifest.json"));
  CHECK(m1["request"]["seed"] == 12);
  CHECK(m1["job"] == 1);
}

TEST_CASE("a run's own initial latents given back with --latents reproduce its image bytes") {
  NEED_TINY_MODEL(model);
  TempDir tmp;
  const Run g = sh(generate_args(model, "--dump " + tmp / "dump" + " --out " + tmp / "seeded.png"), tmp);
  REQUIRE_MESSAGE(g.rc == 0, g.out);
  const Tensor noise = tensor_of(tmp / "dump/01-denoise.safetensors", "latents.initial");
  save_latents(tmp / "noise.safetensors", "latents", noise);

  // A different seed proves the file, not the seed, decides the noise.
  const std::string cmd = exe("generate --quiet --model " + model + " --prompt '" + kPrompt + "' --seed 999 --steps " +
                                     kSteps + " --guidance 4 --latents " + tmp / "noise.safetensors" + " --out " +
                                     tmp / "supplied.png");
  const Run s = sh(cmd, tmp);
  REQUIRE_MESSAGE(s.rc == 0, s.out);
  CHECK(slurp(tmp / "seeded.png") == slurp(tmp / "supplied.png"));

  // The same through the engine, and with the noise stored as f16 it still runs (values
  // rounded to f16 first, so only the shape of the result is checked).
  const std::string pipe = write_pipeline(model, tmp);
  const Run r = sh(run_args(pipe, "--seed 5 --latents " + tmp / "noise.safetensors" + " --out " + tmp / "run.png"), tmp);
  REQUIRE_MESSAGE(r.rc == 0, r.out);
  CHECK(slurp(tmp / "seeded.png") == slurp(tmp / "run.png"));
  save_latents(tmp / "noise16.safetensors", "latents", noise.to(DType::f16));
  const Run h = sh(generate_args(model, "--latents " + tmp / "noise16.safetensors" + " --out " + tmp / "h.png"), tmp);
  CHECK_MESSAGE(h.rc == 0, h.out);
  CHECK(read_png(tmp / "h.png").shape() == Shape{32, 32, 3});
}

TEST_CASE("a latents file of the wrong shape, name or dtype is refused with what was expected") {
  NEED_TINY_MODEL(model);
  TempDir tmp;
  save_latents(tmp / "small.safetensors", "latents", Tensor::zeros({1, 4, 4, 4}, DType::f32));
  const Run g = sh(generate_args(model, "--latents " + tmp / "small.safetensors" + " --out " + tmp / "x.png"), tmp);
  CHECK(g.rc == 1);
  CHECK_MESSAGE(g.out.find("tensor 'latents' has shape [1, 4, 4, 4]; expected one tensor named 'latents' of shape "
                           "[1, 4, 8, 8] (1 job at 32x32) in f32, f16 or bf16") != std::string::npos,
                g.out);
  CHECK_FALSE(fs::exists(tmp / "x.png"));

  // run --n 2 wants one row per job.
  save_latents(tmp / "one.safetensors", "latents", Tensor::zeros({1, 4, 8, 8}, DType::f32));
  const Run r = sh(run_args(write_pipeline(model, tmp), "--n 2 --latents " + tmp / "one.safetensors" + " --out " + tmp / "r.png"), tmp);
  CHECK(r.rc == 1);
  CHECK_MESSAGE(r.out.find("of shape [2, 4, 8, 8] (2 jobs at 32x32)") != std::string::npos, r.out);

  // Name, count and dtype, checked by the one reader both commands use.
  const LatentGeometry geo = latent_geometry(model);
  CHECK(geo.shape(1, 0, 0) == Shape{1, 4, 8, 8});
  save_latents(tmp / "named.safetensors", "noise", Tensor::zeros({1, 4, 8, 8}, DType::f32));
  CHECK_THROWS_WITH_AS(read_latents_file(tmp / "named.safetensors", geo, 1, 0, 0),
                       doctest::Contains("the file holds 'noise' f32[1, 4, 8, 8]"), Error);
  save_safetensors(tmp / "two.safetensors",
                   {{"latents", Tensor::zeros({1, 4, 8, 8}, DType::f32)}, {"extra", Tensor::zeros({1}, DType::f32)}});
  CHECK_THROWS_WITH_AS(read_latents_file(tmp / "two.safetensors", geo, 1, 0, 0), doctest::Contains("expected one tensor"),
                       Error);
  save_latents(tmp / "ints.safetensors", "latents", Tensor::zeros({1, 4, 8, 8}, DType::i32));
  CHECK_THROWS_WITH_AS(read_latents_file(tmp / "ints.safetensors", geo, 1, 0, 0),
                       doctest::Contains("tensor 'latents' is i32"), Error);
  CHECK_THROWS_WITH_AS(read_latents_file(tmp / "missing.safetensors", geo, 1, 0, 0), doctest::Contains("no such file"),
                       Error);
  // A bf16 file of the right shape is accepted as stored.
  save_latents(tmp / "bf.safetensors", "latents", Tensor::zeros({1, 4, 16, 8}, DType::bf16));
  CHECK(read_latents_file(tmp / "bf.safetensors", geo, 1, 32, 64).dtype() == DType::bf16);
}
