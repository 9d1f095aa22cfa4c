// Issue 10: no request, stage hook or dying actor may wedge the engine or corrupt a
// job's result, and waiting jobs are answered on time. Stages are defined here; the
// model cases use the shipped model and skip without it.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <limits>
#include <mutex>
#include <thread>

#include "actors/engine.hpp"
#include "actors/engine_access.hpp"
#include "core/error.hpp"
#include "core/pipeline_spec.hpp"
#include "stages/builtin_stages.hpp"
#include "stages/pipeline/text_to_image.hpp"
#include "stages/stage.hpp"

using namespace stagecraft;
using namespace std::chrono_literals;

namespace {

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// ---- stages -------------------------------------------------------------------------------

/// Blocks every run() until the test opens it.
struct Gate {
  std::mutex m;
  std::condition_variable cv;
  bool open = false;
  void wait() {
    std::unique_lock<std::mutex> lock(m);
    cv.wait(lock, [&] { return open; });
  }
  void set(bool o) {
    {
      std::lock_guard<std::mutex> lock(m);
      open = o;
    }
    cv.notify_all();
  }
};
Gate g_gate;

class GateStage : public Stage {
 public:
  void run(std::vector<PacketPtr>&, Lane&) override { g_gate.wait(); }
};
STAGECRAFT_REGISTER_STAGE("fault_gate", GateStage);

/// A text encoder stand-in: output depends on the prompt only.
class EncoderStage : public Stage {
 public:
  void run(std::vector<PacketPtr>& batch, Lane&) override {
    for (auto& p : batch) p->tensors["prompt_embeds"] = Tensor::from_vector({float(p->request.prompt.size())}, {1});
  }
};
STAGECRAFT_REGISTER_STAGE("fault_encoder", EncoderStage);

/// Iterative, like the denoiser: request.steps steps, a per-job value that depends only on
/// the job (seed and step), batch key by image size — and batch_key() throws the size
/// error the model's does for a size that is not a multiple of 8.
class SizedIterStage : public Stage {
 public:
  StageTraits traits() const override { return {64, true}; }
  std::string batch_key(const Packet& p) const override {
    SC_CHECK(p.request.width % 8 == 0, Errc::invalid_argument,
             "width must be a multiple of 8, got " << p.request.width);
    return std::to_string(p.request.width);
  }
  void run(std::vector<PacketPtr>& batch, Lane&) override {
    for (auto& p : batch)
      if (p->request.prompt == "poison" && p->step >= 1) throw std::runtime_error("poisoned job in the batch");
    std::this_thread::sleep_for(1ms);  // so that jobs submitted together share steps
    for (auto& p : batch) {
      if (p->step == 0) p->total_steps = p->request.steps;
      ++p->step;
      const float prev = p->tensors.count("latents") ? p->tensor("latents").item() : float(p->request.seed);
      p->tensors["latents"] = Tensor::from_vector({std::sin(prev * 1.7f + float(p->step))}, {1});
    }
  }
  bool finished(const Packet& p) const override { return p.step >= p.total_steps; }
};
STAGECRAFT_REGISTER_STAGE("fault_sized", SizedIterStage);

/// Each hook throws for its own prompt.
class HooksStage : public Stage {
 public:
  StageTraits traits() const override { return {8, true}; }
  void check_request(const Request& r) const override {
    if (r.prompt == "door") throw std::runtime_error("the door hook broke");
    if (r.prompt == "refuse") throw Error(Errc::invalid_argument, "request field 'prompt': 'refuse' is refused");
  }
  std::string batch_key(const Packet& p) const override {
    if (p.request.prompt == "key") throw std::runtime_error("batch_key broke");
    return {};
  }
  void run(std::vector<PacketPtr>& batch, Lane&) override {
    std::this_thread::sleep_for(1ms);
    for (auto& p : batch) {
      p->total_steps = 3;
      ++p->step;
    }
  }
  bool finished(const Packet& p) const override {
    if (p.request.prompt == "fin") throw std::logic_error("finished broke");
    return p.step >= p.total_steps;
  }
};
STAGECRAFT_REGISTER_STAGE("fault_hooks", HooksStage);

class BadTraitsStage : public Stage {
 public:
  StageTraits traits() const override { throw std::runtime_error("traits broke"); }
  void run(std::vector<PacketPtr>&, Lane&) override {}
};
STAGECRAFT_REGISTER_STAGE("fault_bad_traits", BadTraitsStage);

/// The model's denoiser, except that a step holding the job "poison" after its first
/// step throws before the model runs — as a bad job would make the whole step throw.
class PoisonedDenoiser : public Stage {
 public:
  PoisonedDenoiser() {
    register_builtin_stages();
    inner_ = create_stage("pixart_denoiser");
  }
  void load(const StageContext& ctx) override { inner_->load(ctx); }
  StageTraits traits() const override { return inner_->traits(); }
  void check_request(const Request& r) const override { inner_->check_request(r); }
  std::string batch_key(const Packet& p) const override {
    arrivals.fetch_add(1);  // called once per job, when it reaches the stage
    return inner_->batch_key(p);
  }
  bool finished(const Packet& p) const override { return inner_->finished(p); }
  void run(std::vector<PacketPtr>& batch, Lane& lane) override {
    // The first step waits (a while at most) for the test's jobs to arrive, so that
    // the next steps are shared however fast the machine is.
    for (const auto until = Clock::now() + 5s; first_ && arrivals.load() < expected && Clock::now() < until;)
      std::this_thread::sleep_for(1ms);
    first_ = false;
    for (auto& p : batch)
      if (p->request.prompt == "poison" && p->step >= 1) throw std::runtime_error("poisoned job in the batch");
    if (batch.size() > 1) shared_steps.fetch_add(1);
    inner_->run(batch, lane);
  }
  static inline std::atomic<int> shared_steps{0}, arrivals{0};
  static inline int expected = 0;

 private:
  std::unique_ptr<Stage> inner_;
  bool first_ = true;
};
STAGECRAFT_REGISTER_STAGE("fault_poisoned_denoiser", PoisonedDenoiser);

// ---- helpers ------------------------------------------------------------------------------

StageSpec stage(const std::string& name, const std::string& type, int max_batch = 1,
                nlohmann::json params = nlohmann::json::object()) {
  StageSpec s;
  s.name = name;
  s.type = type;
  s.batching.max_batch = max_batch;
  s.params = std::move(params);
  return s;
}

PipelineSpec pipeline(std::vector<StageSpec> stages, int max_pending = 256, int credits = 4) {
  PipelineSpec p;
  p.path = "faults";
  p.stages = std::move(stages);
  p.limits.max_pending_jobs = max_pending;
  p.limits.credits = credits;
  p.defaults = {{"steps", 3}, {"guidance", 4.5}, {"width", 8}, {"height", 8}};
  return p;
}

Request req(const std::string& prompt, uint64_t seed = 0, int width = 0, int steps = 0) {
  Request r;
  r.prompt = prompt;
  r.seed = seed;
  r.width = width;
  r.steps = steps;
  return r;
}

bool ready(std::future<JobResult>& f) { return f.wait_for(0s) == std::future_status::ready; }

const std::string kFile = std::string(STAGECRAFT_SOURCE_DIR) + "/pipelines/tiny-shapes.yaml";
const std::string kModel = std::string(STAGECRAFT_SOURCE_DIR) + "/models/tiny-shapes";
bool have_model() { return std::filesystem::exists(kModel + "/model_index.json") && std::filesystem::exists(kFile); }

}  // namespace

// ---- validation at the door -----------------------------------------------------------------

TEST_CASE("a request with a field out of range is refused at once with invalid_argument naming the field") {
  auto engine = Engine::create(pipeline({stage("a", "fault_encoder")}));
  PipelineSpec limits_of = pipeline({});
  struct Bad {
    Request r;
    std::string field;
  };
  std::vector<Bad> bad;
  bad.push_back({req("x", 0, 0, -5), "steps"});
  bad.push_back({req("x", 0, 0, 100000), "steps"});
  {
    Request r = req("x");
    r.guidance = std::numeric_limits<float>::quiet_NaN();
    bad.push_back({r, "guidance"});
    r.guidance = -std::numeric_limits<float>::infinity();
    bad.push_back({r, "guidance"});
  }
  {
    Request r = req("x", 0, 100000);
    r.height = 100000;
    bad.push_back({r, "width"});
    bad.push_back({req("x", 0, -8), "width"});
  }
  bad.push_back({req(std::string(limits_of.limits.max_prompt_bytes + 1, 'a')), "prompt"});
  for (auto& b : bad) {
    CAPTURE(b.field);
    auto f = engine->submit(b.r);
    REQUIRE(ready(f));  // refused at the door, not after a stage ran
    JobResult r = f.get();
    REQUIRE(r.error.has_value());
    CHECK(*r.error == Errc::invalid_argument);
    CHECK(contains(r.message, "'" + b.field + "'"));
  }
  auto st = engine->stats();
  CHECK(st.invalid == bad.size());
  CHECK(st.accepted == 0);
  CHECK(st.stages[0].packets == 0);  // none reached the stage
  CHECK(engine->submit(req("fine")).get().ok());
  engine->shutdown();
}

TEST_CASE("a stage's check_request hook refuses at the door, and one that throws is named") {
  auto engine = Engine::create(pipeline({stage("hooks", "fault_hooks", 8)}));
  auto refused = engine->submit(req("refuse"));
  REQUIRE(ready(refused));
  JobResult r = refused.get();
  CHECK(r.error == Errc::invalid_argument);
  CHECK(r.stage == "hooks");
  auto broken = engine->submit(req("door"));
  REQUIRE(ready(broken));
  r = broken.get();
  CHECK(r.error == Errc::stage_failed);
  CHECK(contains(r.message, "check_request()"));
  CHECK(contains(r.message, "hooks"));
  CHECK(engine->submit(req("fine")).get().ok());
  engine->shutdown();
}

TEST_CASE("the poisoned cached request is refused at the door and the good jobs after it are all answered") {
  if (!have_model()) {
    MESSAGE("skipped: no shipped model at " << kModel);
    return;
  }
  auto engine = Engine::create(load_pipeline_spec(kFile));
  const std::string P = "a red circle in the center on a blue background";
  Request good = req(P, 1, 0, 2);
  REQUIRE(engine->submit(good).get().ok());  // now P is in the prompt cache
  Request poisoned = good;
  poisoned.width = 36;  // not a multiple of the model's latent factor
  auto f = engine->submit(poisoned);
  REQUIRE(ready(f));
  JobResult bad = f.get();
  REQUIRE(bad.error.has_value());
  CHECK(*bad.error == Errc::invalid_argument);
  CHECK(contains(bad.message, "'width'"));
  CHECK(contains(bad.message, "36"));
  std::vector<std::future<JobResult>> futs;
  for (uint64_t s = 2; s < 6; ++s) futs.push_back(engine->submit(req(P, s, 0, 2)));
  for (auto& g : futs) CHECK(g.get().ok());
  auto st = engine->stats();
  CHECK(st.health == Health::ok);
  CHECK(st.invalid == 1);
  CHECK(st.stage_failed == 0);
  CHECK(st.pending == 0);
  engine->shutdown();
}

TEST_CASE("a cache hit never skips a stage's check: a size the cached entry never saw misses the cache") {
  // No hook here: the size error surfaces in the iterative stage's batch_key(), like the
  // model's did before the door checked it. The cache must not hand out an entry made
  // for another size, and the throwing batch_key() must fail only that job.
  auto engine = Engine::create(pipeline({stage("text", "fault_encoder", 1, {{"cache", {{"entries", 8}}}}),
                                         stage("denoise", "fault_sized", 8)}));
  REQUIRE(engine->submit(req("P", 1, 16)).get().ok());
  JobResult bad = engine->submit(req("P", 1, 36)).get();
  REQUIRE(bad.error.has_value());
  CHECK(*bad.error == Errc::stage_failed);
  CHECK(bad.stage == "denoise");
  CHECK(contains(bad.message, "batch_key()"));
  std::vector<std::future<JobResult>> futs;
  for (uint64_t s = 0; s < 6; ++s) futs.push_back(engine->submit(req("P", s, 16)));
  for (auto& f : futs) CHECK(f.get().ok());
  auto st = engine->stats();
  CHECK(st.stages[0].cache_misses == 2);  // 16 and 36 are two keys
  CHECK(st.stages[0].cache_hits == 6);
  CHECK(st.health == Health::ok);
  CHECK(st.pending == 0);
  engine->shutdown();
}

// ---- guarded callbacks ----------------------------------------------------------------------

TEST_CASE("a stage whose hooks throw fails only the jobs concerned, naming the callback, and goes on") {
  auto engine = Engine::create(pipeline({stage("hooks", "fault_hooks", 8)}));
  std::vector<std::future<JobResult>> futs;
  for (const char* p : {"ok", "key", "ok", "fin", "ok", "key", "ok"}) futs.push_back(engine->submit(req(p)));
  const std::vector<std::string> prompts = {"ok", "key", "ok", "fin", "ok", "key", "ok"};
  for (size_t i = 0; i < futs.size(); ++i) {
    CAPTURE(prompts[i]);
    JobResult r = futs[i].get();
    if (prompts[i] == "ok") {
      CHECK(r.ok());
      CHECK(r.steps == 3);
    } else {
      REQUIRE(r.error.has_value());
      CHECK(*r.error == Errc::stage_failed);
      CHECK(r.stage == "hooks");
      CHECK(contains(r.message, prompts[i] == "key" ? "batch_key()" : "finished()"));
    }
  }
  for (int i = 0; i < 3; ++i) CHECK(engine->submit(req("ok")).get().ok());
  auto st = engine->stats();
  CHECK(st.stage_failed == 3);
  CHECK(st.stages[0].failures == 3);
  CHECK(st.pending == 0);
  CHECK(st.stages[0].in_flight == 0);  // every credit came back
  engine->shutdown();
}

TEST_CASE("a stage whose traits() throws makes create fail naming the stage and the callback") {
  try {
    Engine::create(pipeline({stage("odd", "fault_bad_traits")}));
    FAIL("create should have thrown");
  } catch (const Error& e) {
    CHECK(contains(e.what(), "odd"));
    CHECK(contains(e.what(), "traits()"));
  }
}

TEST_CASE("a replica actor that dies is seen by the supervisor: its jobs fail, credits return, a new replica serves") {
  g_gate.set(false);
  auto engine = Engine::create(pipeline({stage("hold", "fault_gate"), stage("after", "fault_encoder")}, 64, 4));
  std::vector<std::future<JobResult>> held;
  for (int i = 0; i < 3; ++i) held.push_back(engine->submit(req("x", i)));
  while (engine->stats().stages[0].in_flight < 3) std::this_thread::sleep_for(1ms);
  // What a bug escaping every guard would do: the actor stops.
  auto& core = actors::EngineAccess::core(*engine);
  caf::anon_send_exit(core.gates[0]->replica(0), caf::exit_reason::kill);
  for (auto& f : held) {
    JobResult r = f.get();
    REQUIRE(r.error.has_value());
    CHECK(*r.error == Errc::stage_failed);
    CHECK(r.stage == "hold");
    CHECK(contains(r.message, "stopped unexpectedly"));
  }
  auto st = engine->stats();
  CHECK(st.stages[0].restarts == 1);
  CHECK(st.stages[0].health == Health::degraded);
  CHECK(st.health == Health::degraded);
  CHECK(st.stages[0].in_flight == 0);
  CHECK(st.pending == 0);
  g_gate.set(true);  // the old replica's batch leaves the lane; the new replica is behind it
  for (int i = 0; i < 3; ++i) CHECK(engine->submit(req("y", i)).get().ok());
  CHECK(engine->stats().health == Health::ok);  // a good run clears it
  engine->shutdown();
  g_gate.set(false);
}

// ---- one bad job fails alone ----------------------------------------------------------------

TEST_CASE("a step with one failing job fails only that job, and the others' values are those they get alone") {
  auto engine = Engine::create(pipeline({stage("denoise", "fault_sized", 8)}));
  std::vector<std::future<JobResult>> futs;
  for (uint64_t s = 0; s < 5; ++s) futs.push_back(engine->submit(req(s == 2 ? "poison" : "good", s, 16, 6)));
  std::vector<JobResult> together;
  for (auto& f : futs) together.push_back(f.get());
  for (uint64_t s = 0; s < 5; ++s) {
    CAPTURE(s);
    if (s == 2) {
      REQUIRE(together[s].error.has_value());
      CHECK(*together[s].error == Errc::stage_failed);
      CHECK(contains(together[s].message, "poisoned job"));
      continue;
    }
    REQUIRE(together[s].ok());
    JobResult alone = engine->submit(req("good", s, 16, 6)).get();
    REQUIRE(alone.ok());
    CHECK(together[s].tensor("latents").item() == alone.tensor("latents").item());
  }
  CHECK(engine->stats().stage_failed == 1);
  engine->shutdown();
}

TEST_CASE("with the model, a denoise step with one failing job fails only it; the others' images are byte-identical") {
  if (!have_model()) {
    MESSAGE("skipped: no shipped model at " << kModel);
    return;
  }
  PipelineSpec spec = load_pipeline_spec(kFile);
  for (auto& s : spec.stages)
    if (s.type == "pixart_denoiser") s.type = "fault_poisoned_denoiser";
  const std::vector<std::string> prompts = {"a red circle", "poison", "a green square on a white background"};
  PoisonedDenoiser::shared_steps = 0;
  PoisonedDenoiser::arrivals = 0;
  PoisonedDenoiser::expected = static_cast<int>(prompts.size());
  auto engine = Engine::create(spec);
  std::vector<std::future<JobResult>> futs;
  for (size_t i = 0; i < prompts.size(); ++i) futs.push_back(engine->submit(req(prompts[i], 20 + i, 0, 3)));
  std::vector<JobResult> got;
  for (auto& f : futs) got.push_back(f.get());
  CHECK(PoisonedDenoiser::shared_steps.load() >= 1);  // the jobs did share steps
  REQUIRE(got[1].error.has_value());
  CHECK(*got[1].error == Errc::stage_failed);
  CHECK(got[1].stage == "denoise");
  const auto pipe = TextToImagePipeline::load(kModel, Device::cpu());
  for (size_t i : {size_t{0}, size_t{2}}) {
    CAPTURE(prompts[i]);
    REQUIRE(got[i].ok());
    GenerateOptions o;
    o.prompt = prompts[i];
    o.seed = 20 + i;
    o.steps = 3;
    const auto& d = spec.defaults;
    o.guidance = d.contains("guidance") ? d["guidance"].get<float>() : -1.0f;
    o.scheduler = d.contains("scheduler") && d["scheduler"].is_string() ? d["scheduler"].get<std::string>() : "";
    o.width = d.contains("width") ? d["width"].get<int>() : 0;
    o.height = d.contains("height") ? d["height"].get<int>() : 0;
    const Tensor want = pipe.generate(o).image;
    const Tensor& have = got[i].tensor("image");
    REQUIRE(have.shape() == want.shape());
    CHECK(std::memcmp(have.data(), want.data(), want.nbytes()) == 0);
  }
  engine->shutdown();
}

// ---- deadlines on time ----------------------------------------------------------------------

TEST_CASE("jobs waiting behind a full stage are answered within 10 ms of their deadline") {
  // The first stage's lane is held by a job without a deadline, so every other job
  // waits: 3 in the replica's queue (credits 4), the rest in the ingress queue. Each
  // gets a deadline 40..130 ms ahead; none can run before it.
  //
  // Lateness = when the waiting thread saw the answer minus the deadline. The bound is
  // the engine's (a timer per earliest deadline); the measurement adds thread wake-ups
  // on a loaded 2-core machine, which can be late by tens of ms now and then. So the
  // median must be within 10 ms and 80% of the jobs too; one outlier is not a failure.
  // Measured on the 2-core machine: before the fix (2973207) median 1917 ms, max 1959 ms,
  // 0 of 30 within 10 ms (they were answered only when the gate opened, 2 s in); after it,
  // median 0.1-0.3 ms and max under 4 ms, release and ASan alike.
  g_gate.set(false);
  // max_batch 8: the waiting jobs make a partial batch, which is never queued on the lane
  // behind a running one, so they all stay where a sweep can reach them.
  auto engine = Engine::create(pipeline({stage("hold", "fault_gate", 8)}, 64, 4));
  auto blocker = engine->submit(req("blocker"));
  // Opens the gate well after the last deadline whatever happens, so a failure cannot hang.
  std::thread opener([] {
    std::this_thread::sleep_for(2s);
    g_gate.set(true);
  });
  while (engine->stats().stages[0].in_flight < 1) std::this_thread::sleep_for(1ms);
  const int n = 30;
  std::vector<std::future<JobResult>> futs;
  std::vector<Clock::time_point> deadlines;
  const auto start = Clock::now();
  for (int i = 0; i < n; ++i) {
    Request r = req("late", static_cast<uint64_t>(i));
    r.deadline = start + 40ms + i * 3ms;
    deadlines.push_back(*r.deadline);
    futs.push_back(engine->submit(r));
  }
  std::vector<double> late_ms;
  for (int i = 0; i < n; ++i) {
    JobResult r = futs[static_cast<size_t>(i)].get();
    late_ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - deadlines[static_cast<size_t>(i)]).count());
    REQUIRE(r.error.has_value());
    CHECK(*r.error == Errc::deadline_exceeded);
  }
  opener.join();
  CHECK(blocker.get().ok());
  engine->shutdown();
  g_gate.set(false);

  std::vector<double> sorted = late_ms;
  std::sort(sorted.begin(), sorted.end());
  const double median = sorted[sorted.size() / 2];
  const auto within = std::count_if(sorted.begin(), sorted.end(), [](double ms) { return ms <= 10.0; });
  MESSAGE("deadline lateness over " << n << " jobs: median " << median << " ms, max " << sorted.back() << " ms, "
                                    << within << " within 10 ms");
  CHECK(sorted.front() >= 0.0);  // never answered before its deadline
  CHECK(median <= 10.0);
  CHECK(within >= n * 8 / 10);
}
