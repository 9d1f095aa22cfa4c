// The sequential pipeline: seeded noise (Philox known answers, statistics,
// determinism), end-to-end parity with tools/reference.py's pipeline on a random
// tiny model, byte-identical reruns, and the batched denoise step the engine uses.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>

#include "core/error.hpp"
#include "core/safetensors.hpp"
#include "kernels/ops.hpp"
#include "stages/pipeline/noise.hpp"
#include "stages/pipeline/text_to_image.hpp"
#include "stages/post/image.hpp"
#include "test_e1_support.hpp"

using namespace stagecraft;
using namespace sc_test;

TEST_CASE("Philox4x32-10 reproduces Random123's known-answer vectors") {
  CHECK(philox4x32_10({0, 0, 0, 0}, {0, 0}) == std::array<uint32_t, 4>{0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u});
  CHECK(philox4x32_10({0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu}, {0xffffffffu, 0xffffffffu}) ==
        std::array<uint32_t, 4>{0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu});
}

TEST_CASE("seeded noise is standard normal, deterministic, and differs between seeds") {
  const Tensor a = gaussian_noise({4, 64, 64}, 1234);
  const auto v = a.to_vector();
  double mean = 0, sq = 0;
  for (float x : v) mean += x;
  mean /= v.size();
  for (float x : v) sq += (x - mean) * (x - mean);
  const double sd = std::sqrt(sq / v.size());
  CHECK(std::abs(mean) < 0.02);
  CHECK(std::abs(sd - 1.0) < 0.02);
  CHECK(gaussian_noise({4, 64, 64}, 1234).to_vector() == v);
  CHECK(gaussian_noise({4, 64, 64}, 1235).to_vector() != v);
  // A prefix of a longer draw is the same draw: elements depend only on (seed, index).
  const auto longer = gaussian_noise({3 * 5 + 1}, 9).to_vector(), shorter = gaussian_noise({5}, 9).to_vector();
  CHECK(std::equal(shorter.begin(), shorter.end(), longer.begin()));
}

TEST_CASE("generate matches the PyTorch reference pipeline on a random tiny model") {
  SC_SKIP_WITHOUT_TORCH();
  const std::string model = tiny_model_dir();
  TempDir tmp;
  const auto pipe = TextToImagePipeline::load(model, Device::cpu());
  for (const std::string sched : {"flow_match_euler", "dpm_2m"}) {
    CAPTURE(sched);
    GenerateOptions o;
    o.prompt = "a red circle in the top left";
    o.negative_prompt = "a blue square";
    o.seed = 11;
    o.steps = 4;
    o.guidance = 3.5f;
    o.scheduler = sched;
    const GenerateResult r = pipe.generate(o);
    const Tensor noise = pipe.prepare_latents(o.seed, r.resolved.width, r.resolved.height);
    save_safetensors(tmp / "lat.safetensors", {{"latents", noise}});
    reference_json("generate --model " + model + " --prompt " + shell_quote(o.prompt) + " --negative-prompt " +
                       shell_quote(o.negative_prompt) + " --steps 4 --guidance 3.5 --scheduler " + sched +
                       " --latents " + (tmp / "lat.safetensors") + " --out " + (tmp / "img.safetensors"),
                   tmp);
    const auto ref = SafetensorsFile::open(tmp / "img.safetensors");
    const Tensor image = pipe.decode(r.latents);
    const double err = max_abs_diff(image, ref.get("image"));
    MESSAGE(sched << ": image max abs error vs reference " << err);
    CHECK(err <= 1e-3);
    const auto mine = r.image.to_vector(), theirs = ref.get("image_u8").to_vector();
    REQUIRE(mine.size() == theirs.size());
    int off = 0;
    for (size_t i = 0; i < mine.size(); ++i) {
      CHECK(std::abs(mine[i] - theirs[i]) <= 1.0f);
      off += mine[i] != theirs[i];
    }
    MESSAGE(sched << ": " << off << " of " << mine.size() << " uint8 values differ by one rounding step");
  }
}

TEST_CASE("generate is byte-identical across runs and changes with the seed") {
  SC_SKIP_WITHOUT_TORCH();
  const auto pipe = TextToImagePipeline::load(tiny_model_dir(), Device::cpu());
  GenerateOptions o;
  o.prompt = "a green triangle";
  o.steps = 3;
  o.seed = 5;
  const GenerateResult a = pipe.generate(o), b = pipe.generate(o);
  CHECK(a.image.to_vector() == b.image.to_vector());
  CHECK(a.resolved.scheduler == "flow_match_euler");
  CHECK(a.times.total_ms > 0);
  o.seed = 6;
  CHECK(pipe.generate(o).image.to_vector() != a.image.to_vector());
  // Explicit initial latents equal to the seeded noise give the same image.
  o.seed = 5;
  o.initial_latents = pipe.prepare_latents(5, a.resolved.width, a.resolved.height);
  CHECK(pipe.generate(o).image.to_vector() == a.image.to_vector());
  o.initial_latents = Tensor::zeros({1, 4, 3, 3}, DType::f32);
  CHECK_THROWS_AS(pipe.generate(o), Error);
}

TEST_CASE("a batched denoise step of several jobs equals stepping each job alone") {
  SC_SKIP_WITHOUT_TORCH();
  const auto pipe = TextToImagePipeline::load(tiny_model_dir(), Device::cpu());
  const int W = pipe.defaults()["width"], H = pipe.defaults()["height"];
  const PromptEmbeds c1 = pipe.encode_prompt("a red circle"), c2 = pipe.encode_prompt("a white square"),
                     u = pipe.encode_prompt("");
  struct JobState {
    Tensor latents;
    std::unique_ptr<Scheduler> sched;
  };
  auto make_jobs = [&] {
    std::vector<JobState> js;
    js.push_back({pipe.prepare_latents(1, W, H), pipe.make_job_scheduler("dpm_2m", 4, W, H)});
    js.push_back({pipe.prepare_latents(2, W, H), pipe.make_job_scheduler("flow_match_euler", 6, W, H)});
    js.push_back({pipe.prepare_latents(3, W, H), pipe.make_job_scheduler("ddim", 5, W, H)});
    return js;
  };
  const std::vector<const PromptEmbeds*> cond = {&c1, &c2, &c1};
  const std::vector<float> guidance = {4.0f, 1.0f, 2.5f};
  auto batched = make_jobs(), alone = make_jobs();
  for (int step = 0; step < 3; ++step) {
    std::vector<DenoiseJob> all;
    for (size_t j = 0; j < 3; ++j) {
      all.push_back({&batched[j].latents, cond[j], &u, guidance[j], batched[j].sched.get(), step});
      pipe.denoise_step({{&alone[j].latents, cond[j], &u, guidance[j], alone[j].sched.get(), step}});
    }
    pipe.denoise_step(all);
  }
  for (size_t j = 0; j < 3; ++j) {
    const double err = max_abs_diff(batched[j].latents, alone[j].latents);
    MESSAGE("job " << j << ": batched vs alone max abs difference " << err);
    CHECK(err <= 1e-5);
  }
}

TEST_CASE("the model refuses what it cannot make, naming the field, and defaults only unset fields") {
  const std::string model = std::string(STAGECRAFT_SOURCE_DIR) + "/models/tiny-shapes";
  if (!std::filesystem::exists(model + "/model_index.json")) {
    MESSAGE("skipped: no shipped model at " << model);
    return;
  }
  const auto pipe = TextToImagePipeline::load(model, Device::cpu());
  const int m = pipe.size_multiple();
  auto refused_field = [&](const GenerateOptions& o) -> std::string {
    try {
      pipe.resolve(o);
    } catch (const Error& e) {
      CHECK(e.code() == Errc::invalid_argument);
      const std::string msg = e.what();
      const auto a = msg.find('\''), b = msg.find('\'', a + 1);
      return a == std::string::npos || b == std::string::npos ? msg : msg.substr(a + 1, b - a - 1);
    }
    return "";
  };
  GenerateOptions o;
  o.prompt = "a red circle";
  CHECK(refused_field(o).empty());  // all defaults
  GenerateOptions bad = o;
  bad.width = m * 4 + m / 2;
  CHECK(refused_field(bad) == "width");
  bad = o;
  bad.height = -m;  // negative is a mistake, not "use the default"
  CHECK(refused_field(bad) == "height");
  bad = o;
  bad.steps = -5;
  CHECK(refused_field(bad) == "steps");
  bad = o;
  bad.guidance = std::nanf("");
  CHECK(refused_field(bad) == "guidance");
  bad = o;
  bad.scheduler = "euler_ancestral";
  CHECK(refused_field(bad) == "scheduler");
  bad = o;
  bad.initial_latents = Tensor::zeros({1, 4, 3, 3}, DType::f32);
  CHECK(refused_field(bad) == "initial_latents");
  // Unset fields still take the model's defaults.
  const GenerateOptions r = pipe.resolve(o);
  CHECK(r.steps == pipe.defaults()["steps"].get<int>());
  CHECK(r.width % m == 0);
}
