#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <time.h>

#include "core/error.hpp"
#include "stages/builtin_stages.hpp"
#include "stages/synthetic/synthetic.hpp"

using namespace stagecraft;
using namespace std::chrono_literals;

namespace {

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

std::unique_ptr<Stage> make(const std::string& type, nlohmann::json params, nlohmann::json defaults = {}) {
  register_builtin_stages();
  auto s = create_stage(type);
  StageContext ctx;
  ctx.name = "s_" + type;
  ctx.type = type;
  ctx.params = std::move(params);
  if (!defaults.is_null()) ctx.defaults = std::move(defaults);
  s->load(ctx);
  return s;
}

std::vector<PacketPtr> packets(int n, uint64_t first_id = 1) {
  std::vector<PacketPtr> out;
  for (int i = 0; i < n; ++i) {
    auto p = std::make_shared<Packet>();
    p->job_id = first_id + static_cast<uint64_t>(i);
    out.push_back(p);
  }
  return out;
}

double thread_cpu_ms() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

std::shared_ptr<Lane> cpu_lane() {
  static auto lane = Lane::create(Device::cpu(), "synthetic-test");
  return lane;
}

}  // namespace

TEST_CASE("the cost of a batch is per_batch_ms plus per_item_ms times its size") {
  auto c = SyntheticCost::from_params({{"cost", {{"per_batch_ms", 20}, {"per_item_ms", 2.5}}}}, "d");
  CHECK(c.per_batch_ms == 20.0);
  CHECK(c.per_item_ms == 2.5);
  CHECK(c.of_batch(1) == 22500us);
  CHECK(c.of_batch(8) == 40ms);
  CHECK(SyntheticCost::from_params(nlohmann::json::object(), "d").of_batch(100) == 0ns);
  CHECK(SyntheticCost::from_params({{"cost", {{"per_item_ms", 1}}}}, "d").of_batch(3) == 3ms);
}

TEST_CASE("a bad cost is an invalid_argument error naming the stage and the key") {
  for (const auto& bad : {nlohmann::json{{"cost", {{"per_batch_ms", -1}}}}, nlohmann::json{{"cost", {{"per_item_ms", "x"}}}},
                          nlohmann::json{{"cost", {{"per_call_ms", 1}}}}, nlohmann::json{{"cost", 5}}}) {
    INFO(bad.dump());
    try {
      make("sleep", bad);
      FAIL("expected an error");
    } catch (const Error& e) {
      CHECK(e.code() == Errc::invalid_argument);
      CHECK(contains(e.what(), "stage 's_sleep'"));
    }
  }
  CHECK_THROWS_AS(make("sleep", {{"output_bytes", -4}}), Error);
  CHECK_THROWS_AS(make("spin", {{"output_name", ""}}), Error);
}

TEST_CASE("sleep waits for its cost without burning CPU and writes the output tensor") {
  auto s = make("sleep", {{"cost", {{"per_batch_ms", 20}, {"per_item_ms", 5}}}, {"output_bytes", 1000}});
  auto batch = packets(2, 300);
  const double cpu0 = thread_cpu_ms();
  const auto t0 = Clock::now();
  s->run(batch, *cpu_lane());
  const auto elapsed = Clock::now() - t0;
  const double cpu = thread_cpu_ms() - cpu0;
  CHECK(elapsed >= 30ms);  // a lower bound only: the machine may be busy
  CHECK(cpu < 10.0);
  for (const auto& p : batch) {
    const Tensor& t = p->tensor("output");
    CHECK(t.dtype() == DType::u8);
    CHECK(t.numel() == 1000);
    CHECK(t.data_as<uint8_t>()[0] == static_cast<uint8_t>(p->job_id & 0xff));
    CHECK(t.data_as<uint8_t>()[999] == static_cast<uint8_t>(p->job_id & 0xff));
  }
  auto* ss = dynamic_cast<SyntheticStage*>(s.get());
  REQUIRE(ss);
  CHECK(ss->batches_run() == 1);
  CHECK(ss->items_run() == 2);
}

TEST_CASE("a zero-cost sleep stage is a no-op that adds no tensor") {
  auto s = make("sleep", nlohmann::json::object());
  auto batch = packets(3);
  s->run(batch, *cpu_lane());
  for (const auto& p : batch) CHECK(p->tensors.empty());
  CHECK(dynamic_cast<SyntheticStage*>(s.get())->items_run() == 3);
}

TEST_CASE("spin burns CPU for its cost and names its output as asked") {
  auto s = make("spin", {{"cost", {{"per_batch_ms", 15}, {"per_item_ms", 0}}}, {"output_bytes", 16}, {"output_name", "blob"}});
  auto batch = packets(1, 7);
  const double cpu0 = thread_cpu_ms();
  const auto t0 = Clock::now();
  s->run(batch, *cpu_lane());
  CHECK(Clock::now() - t0 >= 15ms);
  CHECK(thread_cpu_ms() - cpu0 > 1.0);  // sanity: it worked rather than slept
  CHECK(batch[0]->tensor("blob").numel() == 16);
  CHECK(batch[0]->tensors.count("output") == 0);
}

TEST_CASE("the synthetic denoiser counts steps per job from the request or the defaults") {
  auto s = make("synthetic_denoiser", {{"cost", {{"per_batch_ms", 0.1}, {"per_item_ms", 0}}}, {"output_bytes", 8}},
                {{"steps", 4}, {"width", 64}, {"height", 32}});
  CHECK(s->traits().iterative);
  auto batch = packets(2);
  batch[1]->request.steps = 2;
  CHECK(!s->finished(*batch[0]));  // not joined yet

  s->run(batch, *cpu_lane());
  CHECK(batch[0]->total_steps == 4);
  CHECK(batch[1]->total_steps == 2);
  CHECK(batch[0]->step == 1);
  CHECK(batch[1]->step == 1);
  CHECK(!s->finished(*batch[1]));
  CHECK(batch[1]->tensors.empty());

  s->run(batch, *cpu_lane());
  CHECK(s->finished(*batch[1]));
  CHECK(!s->finished(*batch[0]));
  const Tensor& lat = batch[1]->tensor("latents");
  CHECK(lat.shape() == Shape{1, 4, 4, 8});  // height 32, width 64, VAE scale 8
  CHECK(lat.item(0) == 2.0);
  CHECK(batch[1]->tensor("output").numel() == 8);

  // The finished job leaves; a new one joins at the step boundary.
  auto late = packets(1, 99);
  std::vector<PacketPtr> next{batch[0], late[0]};
  s->run(next, *cpu_lane());
  CHECK(batch[0]->step == 3);
  CHECK(late[0]->step == 1);
  CHECK(late[0]->total_steps == 4);
  s->run(next, *cpu_lane());
  CHECK(s->finished(*batch[0]));
  CHECK(batch[0]->tensor("latents").item(0) == 4.0);
  CHECK(!s->finished(*late[0]));

  auto* ss = dynamic_cast<SyntheticStage*>(s.get());
  CHECK(ss->batches_run() == 4);
  CHECK(ss->items_run() == 8);

  // Running a finished job again is a bug in the caller.
  std::vector<PacketPtr> done{batch[1]};
  try {
    s->run(done, *cpu_lane());
    FAIL("expected an error");
  } catch (const Error& e) {
    CHECK(e.code() == Errc::internal);
  }
}

TEST_CASE("the synthetic denoiser keeps different image sizes out of one batch") {
  auto s = make("synthetic_denoiser", nlohmann::json::object(), {{"steps", 3}, {"width", 32}, {"height", 32}});
  Packet a, b, c;
  b.request.width = 64;
  c.request.width = 32;
  c.request.height = 32;
  CHECK(s->batch_key(a) == s->batch_key(c));
  CHECK(s->batch_key(a) != s->batch_key(b));
}

TEST_CASE("one denoiser step costs a + b * batch, so batching amortises a") {
  // 8 jobs of 3 steps: one at a time costs 3 * 8 * (4 + 1) = 120 ms, together 3 * (4 + 8) = 36 ms.
  auto s = make("synthetic_denoiser", {{"cost", {{"per_batch_ms", 4}, {"per_item_ms", 1}}}}, {{"steps", 3}});
  auto* ss = dynamic_cast<SyntheticStage*>(s.get());
  CHECK(ss->cost().of_batch(8) * 3 == 36ms);
  CHECK(ss->cost().of_batch(1) * 3 * 8 == 120ms);
  auto batch = packets(8);
  const auto t0 = Clock::now();
  while (!s->finished(*batch[0])) s->run(batch, *cpu_lane());
  CHECK(Clock::now() - t0 >= 36ms);
  CHECK(ss->batches_run() == 3);
  for (const auto& p : batch) CHECK(s->finished(*p));
}
