// The default pipeline through the engine against the sequential pipeline
// (stages/pipeline/text_to_image.hpp), the ground truth: same seed, same bytes.
#include <doctest/doctest.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "actors/engine.hpp"
#include "core/pipeline_spec.hpp"
#include "stages/pipeline/text_to_image.hpp"

using namespace stagecraft;

namespace {
const std::string kFile = std::string(STAGECRAFT_SOURCE_DIR) + "/pipelines/tiny-shapes.yaml";
const std::string kModel = std::string(STAGECRAFT_SOURCE_DIR) + "/models/tiny-shapes";

bool have_model() { return std::filesystem::exists(kModel + "/model_index.json") && std::filesystem::exists(kFile); }

Tensor sequential(const Request& r, const PipelineSpec& spec) {
  static const auto pipe = TextToImagePipeline::load(kModel, Device::cpu());
  GenerateOptions o;
  o.prompt = r.prompt;
  o.seed = r.seed;
  o.steps = r.steps;
  // The engine fills unset fields from the pipeline file's defaults, which may differ
  // from the model folder's: compare like with like.
  const auto& d = spec.defaults;
  auto num = [&](const char* k, double fallback) { return d.contains(k) && d[k].is_number() ? d[k].get<double>() : fallback; };
  o.guidance = r.guidance >= 0 ? r.guidance : static_cast<float>(num("guidance", -1));
  o.scheduler = d.contains("scheduler") && d["scheduler"].is_string() ? d["scheduler"].get<std::string>() : "";
  o.width = static_cast<int>(num("width", 0));
  o.height = static_cast<int>(num("height", 0));
  return pipe.generate(o).image;
}

/// Bytes that differ, and the largest difference.
std::pair<size_t, int> compare(const Tensor& got, const Tensor& want) {
  REQUIRE(got.shape() == want.shape());
  size_t differ = 0;
  int worst = 0;
  for (size_t i = 0; i < want.nbytes(); ++i) {
    int d = std::abs(int(static_cast<const uint8_t*>(got.data())[i]) - int(static_cast<const uint8_t*>(want.data())[i]));
    differ += d != 0;
    worst = std::max(worst, d);
  }
  return {differ, worst};
}
}  // namespace

TEST_CASE("one job through the default pipeline gives the sequential pipeline's bytes for the same seed") {
  if (!have_model()) {
    MESSAGE("skipped: no shipped model at " << kModel);
    return;
  }
  PipelineSpec spec = load_pipeline_spec(kFile);
  auto engine = Engine::create(spec);
  Request a;
  a.prompt = "a red circle in the center on a blue background";
  a.seed = 11;
  a.steps = 4;
  JobResult ra = engine->submit(a).get();
  REQUIRE(ra.ok());
  engine->shutdown();
  CHECK(compare(ra.tensor("image"), sequential(a, spec)).first == 0);
}

TEST_CASE("jobs sharing denoise steps each give the sequential pipeline's bytes for their seed") {
  if (!have_model()) {
    MESSAGE("skipped: no shipped model at " << kModel);
    return;
  }
  PipelineSpec spec = load_pipeline_spec(kFile);
  auto engine = Engine::create(spec);
  Request a, b;
  a.prompt = "a red circle in the center on a blue background";
  a.seed = 11;
  a.steps = 4;
  b = a;
  b.prompt = "a green square";
  b.seed = 12;
  b.guidance = 1.0f;  // no classifier-free guidance: guided and unguided rows in one step
  auto fa = engine->submit(a), fb = engine->submit(b);
  JobResult ra = fa.get(), rb = fb.get();
  REQUIRE(ra.ok());
  REQUIRE(rb.ok());
  engine->shutdown();
  // The denoiser's projections run item by item (ops::linear_per_item), so a job's rows
  // round the same in a batch of three items as in its own batch of one or two.
  for (auto [req, res] : {std::pair{&a, &ra}, std::pair{&b, &rb}}) {
    auto [differ, worst] = compare(res->tensor("image"), sequential(*req, spec));
    CAPTURE(res->job_id);
    CAPTURE(worst);
    CHECK(differ == 0);
  }
}
