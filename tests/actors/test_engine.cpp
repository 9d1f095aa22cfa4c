// The actor engine with small synthetic stages defined here: each test checks
// an outcome (which error, which batch composition, which counter), never a
// duration, so a loaded machine makes them slower but not flaky.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <fstream>
#include <mutex>
#include <set>
#include <thread>

#include <nlohmann/json.hpp>

#include "actors/engine.hpp"
#include "stages/stage.hpp"

using namespace stagecraft;
using namespace std::chrono_literals;

namespace {

// ---- test stages -------------------------------------------------------------------------

std::mutex g_log_mutex;
/// Every batch a stage ran: stage name -> list of (batch key, job ids).
std::map<std::string, std::vector<std::pair<std::string, std::vector<uint64_t>>>> g_batches;

void log_batch(const std::string& stage, const std::string& key, const std::vector<PacketPtr>& batch) {
  std::vector<uint64_t> ids;
  for (auto& p : batch) ids.push_back(p->job_id);
  std::lock_guard<std::mutex> lock(g_log_mutex);
  g_batches[stage].push_back({key, ids});
}

/// Appends its name to tensor "path" and keys batches by seed parity when asked.
class Echo : public Stage {
 public:
  void load(const StageContext& ctx) override {
    name_ = ctx.name;
    by_parity_ = ctx.params.value("key_by_parity", false);
    sleep_ms_ = ctx.params.value("sleep_ms", 0);
  }
  std::string batch_key(const Packet& p) const override {
    return by_parity_ ? std::to_string(p.request.seed % 2) : std::string();
  }
  void run(std::vector<PacketPtr>& batch, Lane&) override {
    log_batch(name_, batch_key(*batch.front()), batch);
    if (sleep_ms_) std::this_thread::sleep_for(std::chrono::milliseconds(sleep_ms_));
    for (auto& p : batch) {
      std::vector<float> v;
      if (p->tensors.count("path")) v = p->tensor("path").to_vector();
      v.push_back(static_cast<float>(name_.size()));
      p->tensors["path"] = Tensor::from_vector(v, {static_cast<int64_t>(v.size())});
      p->tensors["seen_" + name_] = Tensor::from_vector({1.0f}, {1});
    }
  }

 private:
  std::string name_;
  bool by_parity_ = false;
  int sleep_ms_ = 0;
};
STAGECRAFT_REGISTER_STAGE("test_echo", Echo);

void wait_gate();

/// Iterative: one step per run(), request.steps steps, params.step_ms per step.
class Iter : public Stage {
 public:
  void load(const StageContext& ctx) override {
    name_ = ctx.name;
    step_ms_ = ctx.params.value("step_ms", 1);
  }
  StageTraits traits() const override { return {64, true}; }
  void run(std::vector<PacketPtr>& batch, Lane&) override {
    log_batch(name_, "", batch);
    for (auto& p : batch)
      if (p->request.prompt == "hold") wait_gate();
    std::this_thread::sleep_for(std::chrono::milliseconds(step_ms_));
    for (auto& p : batch) {
      if (p->step == 0) p->total_steps = p->request.steps;
      ++p->step;
    }
    for (auto& p : batch) p->tensors["latents"] = Tensor::from_vector({float(p->step)}, {1});
  }
  bool finished(const Packet& p) const override { return p.step >= p.total_steps; }

 private:
  std::string name_;
  int step_ms_ = 1;
};
STAGECRAFT_REGISTER_STAGE("test_iter", Iter);

/// Throws for the prompt "boom".
class Thrower : public Stage {
 public:
  void run(std::vector<PacketPtr>& batch, Lane&) override {
    for (auto& p : batch)
      if (p->request.prompt == "boom") throw std::runtime_error("the prompt said boom");
  }
};
STAGECRAFT_REGISTER_STAGE("test_throw", Thrower);

std::atomic<int> g_encoder_runs{0};
/// A stand-in text encoder whose output depends only on the prompt.
class Encoder : public Stage {
 public:
  void run(std::vector<PacketPtr>& batch, Lane&) override {
    for (auto& p : batch) {
      g_encoder_runs.fetch_add(1);
      p->tensors["prompt_embeds"] = Tensor::from_vector({float(p->request.prompt.size())}, {1});
    }
  }
};
STAGECRAFT_REGISTER_STAGE("test_encoder", Encoder);

/// Blocks every run() until the test opens the gate.
std::mutex g_gate_mutex;
std::condition_variable g_gate_cv;
bool g_gate_open = false;
class Gate : public Stage {
 public:
  void run(std::vector<PacketPtr>&, Lane&) override {
    std::unique_lock<std::mutex> lock(g_gate_mutex);
    g_gate_cv.wait(lock, [] { return g_gate_open; });
  }
};
STAGECRAFT_REGISTER_STAGE("test_gate", Gate);
void wait_gate() {
  std::unique_lock<std::mutex> lock(g_gate_mutex);
  g_gate_cv.wait(lock, [] { return g_gate_open; });
}
void set_gate(bool open) {
  {
    std::lock_guard<std::mutex> lock(g_gate_mutex);
    g_gate_open = open;
  }
  g_gate_cv.notify_all();
}

// ---- helpers -----------------------------------------------------------------------------

StageSpec stage(const std::string& name, const std::string& type, nlohmann::json params = nlohmann::json::object(),
                int max_batch = 1, double max_wait_ms = 0, int replicas = 1) {
  StageSpec s;
  s.name = name;
  s.type = type;
  s.params = std::move(params);
  s.batching.max_batch = max_batch;
  s.batching.max_wait_ms = max_wait_ms;
  s.replicas = replicas;
  return s;
}

PipelineSpec pipeline(std::vector<StageSpec> stages, int max_pending = 256, int credits = 4) {
  PipelineSpec p;
  p.path = "test";
  p.stages = std::move(stages);
  p.limits.max_pending_jobs = max_pending;
  p.limits.credits = credits;
  p.limits.max_steps = 10'000'000;  // "endless" jobs that only cancel, deadline or shutdown end
  p.defaults = {{"steps", 3}, {"guidance", 4.5}, {"width", 8}, {"height", 8}};
  return p;
}

Request req(const std::string& prompt, uint64_t seed = 0, int steps = 0) {
  Request r;
  r.prompt = prompt;
  r.seed = seed;
  r.steps = steps;
  return r;
}

/// Waits until a progress callback has reported at least `n` steps.
struct StepWatch {
  std::mutex m;
  std::condition_variable cv;
  int step = 0;
  Engine::Progress callback() {
    return [this](int s, int) {
      {
        std::lock_guard<std::mutex> lock(m);
        step = s;
      }
      cv.notify_all();
    };
  }
  void wait_for(int n) {
    std::unique_lock<std::mutex> lock(m);
    cv.wait(lock, [&] { return step >= n; });
  }
};

int count_kind(const JobResult& r, TraceSpan::Kind k, const std::string& stage) {
  int n = 0;
  for (const auto& s : r.trace) n += (s.kind == k && s.stage == stage);
  return n;
}

}  // namespace

TEST_CASE("a job flows through a three-stage pipeline and returns every stage's output") {
  auto engine = Engine::create(pipeline({stage("a", "test_echo"), stage("bb", "test_echo"), stage("ccc", "test_echo")}));
  JobResult r = engine->submit(req("hello")).get();
  REQUIRE(r.ok());
  CHECK(r.job_id >= 1);
  CHECK(r.tensor("path").to_vector() == std::vector<float>{1, 2, 3});  // visited in chain order
  CHECK(r.tensors.count("seen_a") == 1);
  CHECK(r.tensors.count("seen_ccc") == 1);
  CHECK(count_kind(r, TraceSpan::Kind::compute, "bb") == 1);
  CHECK(count_kind(r, TraceSpan::Kind::queue, "bb") == 1);
  CHECK(count_kind(r, TraceSpan::Kind::transfer, "bb") == 1);
  auto st = engine->stats();
  CHECK(st.completed == 1);
  CHECK(st.pending == 0);
  CHECK(st.stages.size() == 3);
  engine->shutdown();
}

TEST_CASE("edges reorder the chain and a graph that is not a chain is refused") {
  auto spec = pipeline({stage("a", "test_echo"), stage("bb", "test_echo"), stage("ccc", "test_echo")});
  spec.edges = {{"ccc", "a"}, {"a", "bb"}};
  auto engine = Engine::create(spec);
  JobResult r = engine->submit(req("x")).get();
  REQUIRE(r.ok());
  CHECK(r.tensor("path").to_vector() == std::vector<float>{3, 1, 2});
  engine->shutdown();

  spec.edges = {{"a", "bb"}, {"a", "ccc"}};
  CHECK_THROWS_AS(Engine::create(spec), Error);
}

TEST_CASE("batches never exceed max_batch and never mix batch keys") {
  {
    std::lock_guard<std::mutex> lock(g_log_mutex);
    g_batches.clear();
  }
  // The gate stage holds the first job so the rest pile up in front of the batcher.
  set_gate(false);
  auto engine = Engine::create(pipeline(
      {stage("hold", "test_gate"), stage("batcher", "test_echo", {{"key_by_parity", true}}, 3, 200)}, 256, 16));
  std::vector<std::future<JobResult>> futs;
  for (uint64_t i = 0; i < 14; ++i) futs.push_back(engine->submit(req("p", i)));
  set_gate(true);
  for (auto& f : futs) CHECK(f.get().ok());
  std::lock_guard<std::mutex> lock(g_log_mutex);
  auto& batches = g_batches["batcher"];
  size_t total = 0;
  bool some_batched = false;
  for (auto& [key, ids] : batches) {
    CHECK(ids.size() <= 3);
    some_batched = some_batched || ids.size() > 1;
    total += ids.size();
    for (auto id : ids) CHECK(std::to_string((id - 1) % 2) == key);  // job id i+1 has seed i
  }
  CHECK(total == 14);
  CHECK(some_batched);
  CHECK(engine->stats().stages[1].packets == 14);
  engine->shutdown();
  set_gate(false);
}

TEST_CASE("a job arriving mid-run joins the iterative stage at the next step boundary") {
  {
    std::lock_guard<std::mutex> lock(g_log_mutex);
    g_batches.clear();
  }
  auto engine = Engine::create(pipeline({stage("denoise", "test_iter", {{"step_ms", 2}}, 8)}));
  StepWatch watch;
  auto long_job = engine->submit(req("long", 0, 100000), watch.callback());
  watch.wait_for(5);
  JobResult short_result = engine->submit(req("short", 1, 3)).get();
  REQUIRE(short_result.ok());
  CHECK(short_result.steps == 3);
  CHECK(engine->cancel(1));
  JobResult long_result = long_job.get();
  CHECK(long_result.error == Errc::cancelled);

  // The short job's steps each ran in one batch together with the long job.
  std::lock_guard<std::mutex> lock(g_log_mutex);
  auto& ticks = g_batches["denoise"];
  int shared = 0, first_shared = -1;
  for (size_t t = 0; t < ticks.size(); ++t) {
    auto& ids = ticks[t].second;
    bool has_short = std::count(ids.begin(), ids.end(), uint64_t(2)) == 1;
    if (has_short) {
      CHECK(ids.size() == 2);
      if (first_shared < 0) first_shared = static_cast<int>(t);
      ++shared;
    }
  }
  CHECK(shared == 3);
  CHECK(first_shared >= 5);  // the long job had done at least 5 steps alone
  for (int t = 0; t < first_shared; ++t) CHECK(ticks[static_cast<size_t>(t)].second.size() == 1);
  // The trace shows the same: batch-of-2 compute spans for the short job.
  for (const auto& s : short_result.trace)
    if (s.kind == TraceSpan::Kind::compute) CHECK(s.batch_size == 2);
  engine->shutdown();
}

TEST_CASE("a cancelled job stops at a step boundary with cancelled while its neighbour finishes") {
  auto engine = Engine::create(pipeline({stage("denoise", "test_iter", {{"step_ms", 1}}, 4), stage("after", "test_echo")}));
  StepWatch watch;
  auto doomed = engine->submit(req("doomed", 0, 100000), watch.callback());
  auto fine = engine->submit(req("fine", 1, 4));
  watch.wait_for(3);
  CHECK(engine->cancel(1));
  JobResult r = doomed.get();
  REQUIRE(r.error.has_value());
  CHECK(*r.error == Errc::cancelled);
  CHECK(r.stage == "denoise");
  CHECK(r.message.find("denoise") != std::string::npos);
  CHECK(r.steps >= 3);
  CHECK(r.steps < 100000);
  CHECK(fine.get().ok());
  CHECK_FALSE(engine->cancel(1));  // already finished
  CHECK_FALSE(engine->cancel(999));
  auto st = engine->stats();
  CHECK(st.cancelled == 1);
  CHECK(st.completed == 1);
  engine->shutdown();
}

TEST_CASE("a job past its deadline ends with deadline_exceeded at a step boundary") {
  auto engine = Engine::create(pipeline({stage("denoise", "test_iter", {{"step_ms", 1}}, 4)}));
  Request r = req("late", 0, 1000000);
  r.deadline = Clock::now() + 20ms;
  JobResult res = engine->submit(r).get();
  REQUIRE(res.error.has_value());
  CHECK(*res.error == Errc::deadline_exceeded);
  CHECK(res.steps < 1000000);
  CHECK(res.message.find("deadline") != std::string::npos);
  CHECK(engine->stats().deadline_exceeded == 1);
  engine->shutdown();
}

TEST_CASE("a higher-priority job takes the iterative stage's batch slots first") {
  {
    std::lock_guard<std::mutex> lock(g_log_mutex);
    g_batches.clear();
  }
  set_gate(false);
  // max_batch 1: one job advances per tick, so the order of ticks is the order of the active set.
  auto engine = Engine::create(pipeline({stage("denoise", "test_iter", {{"step_ms", 1}}, 1)}, 256, 8));
  auto blocker = engine->submit(req("hold", 0, 1));  // its step waits for the gate
  Request low = req("low", 1, 2), high = req("high", 2, 2);
  high.priority = 5;
  auto f_low = engine->submit(low);
  auto f_high = engine->submit(high);
  while (engine->stats().stages[0].in_flight < 3) std::this_thread::sleep_for(1ms);
  std::this_thread::sleep_for(20ms);  // both sends land in the mailbox before the step ends
  set_gate(true);
  CHECK(blocker.get().ok());
  CHECK(f_low.get().ok());
  CHECK(f_high.get().ok());
  std::lock_guard<std::mutex> lock(g_log_mutex);
  std::vector<uint64_t> order;
  for (auto& t : g_batches["denoise"]) order.push_back(t.second.front());
  CHECK(order == std::vector<uint64_t>{1, 3, 3, 2, 2});
  engine->shutdown();
  set_gate(false);
}

TEST_CASE("a repeated prompt hits the prompt-embedding cache and skips the encoder") {
  g_encoder_runs = 0;
  auto engine = Engine::create(
      pipeline({stage("text", "test_encoder", {{"cache", {{"entries", 2}}}}), stage("after", "test_echo")}));
  auto a1 = engine->submit(req("a red circle")).get();
  auto a2 = engine->submit(req("a red circle")).get();
  auto b = engine->submit(req("blue")).get();
  auto a3 = engine->submit(req("a red circle")).get();
  Request neg = req("a red circle");
  neg.negative_prompt = "ugly";
  auto a4 = engine->submit(neg).get();  // a different key: the negative prompt differs
  REQUIRE(a4.ok());
  CHECK(g_encoder_runs == 3);
  CHECK(a2.tensor("prompt_embeds").storage() == a1.tensor("prompt_embeds").storage());
  CHECK(a3.tensor("prompt_embeds").item() == 12.0);
  CHECK(b.tensor("seen_after").item() == 1.0);
  auto st = engine->stats();
  CHECK(st.cache_hits == 2);
  CHECK(st.cache_misses == 3);
  CHECK(st.stages[0].cache_hits == 2);
  engine->shutdown();
}

TEST_CASE("the front refuses jobs beyond max_pending_jobs and every accepted job still finishes") {
  set_gate(false);
  auto engine = Engine::create(pipeline({stage("hold", "test_gate"), stage("after", "test_echo")}, 4, 2));
  std::vector<std::future<JobResult>> futs;
  for (int i = 0; i < 10; ++i) futs.push_back(engine->submit(req("x", i)));
  int refused = 0;
  for (auto& f : futs)
    if (f.wait_for(0s) == std::future_status::ready) {
      JobResult r = f.get();
      REQUIRE(r.error.has_value());
      CHECK(*r.error == Errc::overloaded);
      CHECK(r.message.find("max_pending_jobs") != std::string::npos);
      ++refused;
    }
  CHECK(refused == 6);
  auto st = engine->stats();
  CHECK(st.refused == 6);
  CHECK(st.pending == 4);
  for (auto& s : st.stages) CHECK(s.in_flight <= s.credits);
  set_gate(true);
  int ok = 0;
  for (auto& f : futs)
    if (f.valid()) ok += f.get().ok();
  CHECK(ok == 4);
  CHECK(engine->stats().pending == 0);
  CHECK(engine->submit(req("again")).get().ok());  // room again once they finished
  engine->shutdown();
  set_gate(false);
}

TEST_CASE("credits bound the packets inside every stage") {
  auto engine = Engine::create(
      pipeline({stage("fast", "test_echo"), stage("slow", "test_echo", {{"sleep_ms", 2}})}, 256, 3));
  std::vector<std::future<JobResult>> futs;
  for (int i = 0; i < 40; ++i) futs.push_back(engine->submit(req("x", i)));
  int max_seen = 0;
  for (int i = 0; i < 50; ++i) {
    for (auto& s : engine->stats().stages) {
      CHECK(s.in_flight <= 3);
      max_seen = std::max(max_seen, s.in_flight);
    }
    std::this_thread::sleep_for(1ms);
  }
  for (auto& f : futs) CHECK(f.get().ok());
  CHECK(max_seen >= 1);
  engine->shutdown();
}

TEST_CASE("replicas of a stage share the load") {
  set_gate(false);
  auto engine = Engine::create(pipeline({stage("work", "test_gate", {}, 1, 0, 2)}, 256, 4));
  auto f1 = engine->submit(req("a"));
  auto f2 = engine->submit(req("b"));
  while (engine->stats().stages[0].in_flight < 2) std::this_thread::sleep_for(1ms);
  std::this_thread::sleep_for(20ms);
  // With replica 0 holding the first job, least-outstanding routing must send the second to replica 1.
  set_gate(true);
  JobResult r1 = f1.get(), r2 = f2.get();
  REQUIRE(r1.ok());
  REQUIRE(r2.ok());
  std::set<std::string> lanes;
  for (auto* r : {&r1, &r2})
    for (auto& s : r->trace)
      if (s.kind == TraceSpan::Kind::compute) lanes.insert(s.lane);
  CHECK(lanes == std::set<std::string>{"work/0", "work/1"});
  engine->shutdown();
  set_gate(false);
}

TEST_CASE("a throwing stage fails only its job and shows in the stage's counters and health") {
  auto engine = Engine::create(
      pipeline({stage("first", "test_echo"), stage("risky", "test_throw"), stage("last", "test_echo")}));
  JobResult bad = engine->submit(req("boom")).get();
  REQUIRE(bad.error.has_value());
  CHECK(*bad.error == Errc::stage_failed);
  CHECK(bad.stage == "risky");
  CHECK(bad.message.find("risky") != std::string::npos);
  CHECK(bad.message.find("the prompt said boom") != std::string::npos);
  CHECK(engine->submit(req("fine")).get().ok());
  auto st = engine->stats();
  CHECK(st.stages[1].failures == 1);
  CHECK(st.stage_failed == 1);
  CHECK(st.health == Health::ok);

  for (int i = 0; i < 3; ++i) CHECK(engine->submit(req("boom")).get().error == Errc::stage_failed);
  st = engine->stats();
  CHECK(st.stages[1].health == Health::degraded);
  CHECK(st.health == Health::degraded);
  CHECK(engine->submit(req("fine")).get().ok());
  CHECK(engine->stats().health == Health::ok);
  CHECK(engine->stats().stages[1].failures == 4);
  engine->shutdown();
}

TEST_CASE("a stage that fails to load makes create throw with the stage name") {
  auto spec = pipeline({stage("x", "no_such_stage_type")});
  CHECK_THROWS_AS(Engine::create(spec), Error);
}

TEST_CASE("shutdown with jobs in flight returns and fails them as cancelled") {
  auto engine = Engine::create(pipeline({stage("denoise", "test_iter", {{"step_ms", 1}}, 2), stage("after", "test_echo")}));
  StepWatch watch;
  std::vector<std::future<JobResult>> futs;
  futs.push_back(engine->submit(req("a", 0, 1000000), watch.callback()));
  for (int i = 1; i < 6; ++i) futs.push_back(engine->submit(req("b", i, 1000000)));
  watch.wait_for(2);
  engine->shutdown();
  for (auto& f : futs) {
    REQUIRE(f.wait_for(0s) == std::future_status::ready);
    JobResult r = f.get();
    CHECK(r.error == Errc::cancelled);
  }
  CHECK(engine->submit(req("late")).get().error == Errc::cancelled);
  engine->shutdown();  // twice is fine
}

TEST_CASE("destroying an engine with queued jobs does not hang") {
  std::future<JobResult> f;
  {
    auto engine = Engine::create(pipeline({stage("denoise", "test_iter", {{"step_ms", 1}}, 1)}, 16, 2));
    for (int i = 0; i < 8; ++i) f = engine->submit(req("x", i, 1000000));
  }
  CHECK(f.get().error == Errc::cancelled);
}

TEST_CASE("the chrome trace parses and has a track with compute slices per lane and flows between stages") {
  auto engine = Engine::create(pipeline({stage("a", "test_echo"), stage("b", "test_echo"), stage("c", "test_echo")}));
  std::vector<std::future<JobResult>> futs;
  for (int i = 0; i < 4; ++i) futs.push_back(engine->submit(req("x", i)));
  for (auto& f : futs) REQUIRE(f.get().ok());
  const std::string path = std::string(STAGECRAFT_BINARY_DIR) + "/test_engine_trace.json";
  engine->write_chrome_trace(path);
  engine->shutdown();
  std::ifstream in(path);
  auto j = nlohmann::json::parse(in);
  std::map<int, std::string> lanes;
  std::map<int, int> slices_per_tid;
  int flow_s = 0, flow_f = 0, job_begin = 0;
  for (auto& e : j["traceEvents"]) {
    std::string ph = e["ph"];
    if (ph == "M" && e["name"] == "thread_name") lanes[e["tid"].get<int>()] = e["args"]["name"];
    if (ph == "X") ++slices_per_tid[e["tid"].get<int>()];
    flow_s += ph == "s";
    flow_f += ph == "f";
    if (ph == "b" && e["name"].get<std::string>().rfind("job ", 0) == 0) ++job_begin;
  }
  CHECK(lanes.size() == 3);
  for (auto& [tid, name] : lanes) CHECK(slices_per_tid[tid] == 4);
  CHECK(flow_s == 8);  // 4 jobs x 2 stage-to-stage hops
  CHECK(flow_f == 8);
  CHECK(job_begin == 4);
  std::remove(path.c_str());
}
