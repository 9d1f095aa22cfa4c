// The replica's scheduling policy and the isolated rerun, without CAF: which waiting
// jobs run next and with whom, and how a failing batch is split.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <stdexcept>

#include "actors/batch_policy.hpp"
#include "actors/isolated_run.hpp"

using namespace stagecraft;
using namespace stagecraft::actors;
using namespace std::chrono_literals;
using Seqs = std::vector<BatchPolicy::Seq>;

namespace {
const Clock::time_point t0 = Clock::now();
}

TEST_CASE("a full batch of one key starts at once, in arrival order, skipping other keys") {
  BatchPolicy p({3, 50ms, false, 2});
  p.add(0, "a", 0, t0);
  p.add(1, "b", 0, t0);
  p.add(2, "a", 0, t0);
  p.add(3, "a", 0, t0);
  p.add(4, "a", 0, t0);
  auto d = p.next(t0, 0);
  CHECK(d.run == Seqs{0, 2, 3});
  CHECK_FALSE(d.wake_at);
  CHECK(p.waiting() == Seqs{1, 4});
}

TEST_CASE("a partial batch waits max_wait from its oldest job, then starts") {
  BatchPolicy p({4, 10ms, false, 2});
  p.add(0, "", 0, t0);
  p.add(1, "", 0, t0 + 2ms);
  auto d = p.next(t0 + 5ms, 0);
  CHECK(d.run.empty());
  REQUIRE(d.wake_at);
  CHECK(*d.wake_at == t0 + 10ms);
  d = p.next(t0 + 10ms, 0);
  CHECK(d.run == Seqs{0, 1});
  CHECK(p.empty());
}

TEST_CASE("without max_wait a partial batch starts when the lane is idle") {
  BatchPolicy p({4, 0ms, false, 2});
  p.add(0, "", 0, t0);
  CHECK(p.next(t0, 0).run == Seqs{0});
}

TEST_CASE("behind a running batch only full batches are queued, and at most lane_depth") {
  BatchPolicy p({2, 0ms, false, 2});
  p.add(0, "", 0, t0);
  CHECK(p.next(t0, 1).run.empty());  // partial, lane busy: keep collecting
  p.add(1, "", 0, t0);
  CHECK(p.next(t0, 2).run.empty());  // full, but the lane already holds two batches
  CHECK(p.next(t0, 1).run == Seqs{0, 1});
}

TEST_CASE("a removed job is never chosen and removing an unknown job says so") {
  BatchPolicy p({4, 0ms, false, 2});
  p.add(0, "", 0, t0);
  p.add(1, "", 0, t0);
  CHECK(p.remove(0));
  CHECK_FALSE(p.remove(0));
  CHECK_FALSE(p.contains(0));
  CHECK(p.next(t0, 0).run == Seqs{1});
}

TEST_CASE("an iterative step takes jobs by priority then arrival, with the first job's key, up to max_batch") {
  BatchPolicy p({3, 0ms, true, 2});
  p.add(0, "64", 0, t0);
  p.add(1, "32", 5, t0);
  p.add(2, "64", 0, t0);
  p.add(3, "32", 0, t0);
  p.add(4, "32", 5, t0);
  p.add(5, "32", 1, t0);
  CHECK(p.next_step() == Seqs{1, 4, 5});
  CHECK(p.stepping());
  CHECK(p.next_step().empty());                 // one step at a time
  CHECK(p.waiting() == Seqs{0, 2, 3});          // the running ones cannot be swept
  p.step_done();
  CHECK(p.size() == 6);                         // jobs stay in the set across steps
  p.remove(1);
  p.remove(4);
  p.remove(5);
  CHECK(p.next_step() == Seqs{0, 2});
}

TEST_CASE("a job that arrives during a step joins at the next one") {
  BatchPolicy p({8, 0ms, true, 2});
  p.add(0, "", 0, t0);
  CHECK(p.next_step() == Seqs{0});
  p.add(1, "", 0, t0);
  CHECK(p.waiting() == Seqs{1});
  p.step_done();
  CHECK(p.next_step() == Seqs{0, 1});
}

namespace {

/// Doubles tensor "x"; throws for a packet whose seed is 13, after writing its outputs
/// (so the rerun must undo them) and after advancing the step counters.
class Doubler : public Stage {
 public:
  int runs = 0;
  void run(std::vector<PacketPtr>& batch, Lane&) override {
    ++runs;
    for (auto& p : batch) {
      p->tensors["y"] = Tensor::from_vector({p->tensor("x").to_vector()[0] * 2.0f}, {1});
      ++p->step;
    }
    for (auto& p : batch)
      if (p->request.seed == 13) throw std::runtime_error("seed 13 is bad");
  }
};

PacketPtr packet(uint64_t id, uint64_t seed, float x) {
  auto p = std::make_shared<Packet>();
  p->job_id = id;
  p->request.seed = seed;
  p->tensors["x"] = Tensor::from_vector({x}, {1});
  return p;
}

}  // namespace

TEST_CASE("a failing batch is rerun job by job so only the bad job fails, and it is left as it was") {
  auto lane = Lane::create(Device::cpu(), "test");
  Doubler stage;
  std::vector<PacketPtr> batch{packet(1, 1, 1.0f), packet(2, 13, 2.0f), packet(3, 3, 3.0f)};
  IsolatedRun r = run_isolated(stage, *lane, batch);
  CHECK(r.retried);
  CHECK(stage.runs == 4);  // the batch, then each job alone
  REQUIRE(r.errors.size() == 3);
  CHECK_FALSE(r.errors[0]);
  CHECK(r.errors[1]);
  CHECK_FALSE(r.errors[2]);
  CHECK(batch[0]->tensor("y").item() == 2.0);
  CHECK(batch[2]->tensor("y").item() == 6.0);
  CHECK(batch[0]->step == 1);                  // stepped once, not twice
  CHECK(batch[1]->tensors.count("y") == 0);    // the bad job's partial outputs are undone
  CHECK(batch[1]->step == 0);
}

TEST_CASE("a batch that runs is run once, and a single job's failure is its own") {
  auto lane = Lane::create(Device::cpu(), "test");
  Doubler stage;
  std::vector<PacketPtr> good{packet(1, 1, 1.0f), packet(2, 2, 2.0f)};
  IsolatedRun r = run_isolated(stage, *lane, good);
  CHECK_FALSE(r.retried);
  CHECK(stage.runs == 1);
  CHECK_FALSE(r.errors[0]);
  CHECK_FALSE(r.errors[1]);
  std::vector<PacketPtr> bad{packet(3, 13, 1.0f)};
  r = run_isolated(stage, *lane, bad);
  CHECK_FALSE(r.retried);
  CHECK(r.errors[0]);
}
