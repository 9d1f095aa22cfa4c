#pragma once
// Engine internals shared by the actors: job bookkeeping, per-stage gates
// (credits and replica load) and counters. Not part of the public API.
#include <atomic>
#include <deque>
#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include <caf/all.hpp>

#include "actors/engine.hpp"
#include "actors/prompt_cache.hpp"
#include "core/lane.hpp"
#include "stages/stage.hpp"

namespace stagecraft::actors {

/// A caller's job: the promise of its one result and the cancel flag actors read.
struct JobState {
  uint64_t id = 0;
  std::promise<JobResult> promise;
  Engine::Progress progress;
  std::optional<Clock::time_point> deadline;
  std::atomic<bool> cancelled{false};
  std::atomic<bool> finished{false};
};

/// What travels between actors: the packet by handle plus its job.
struct Envelope {
  PacketPtr packet;
  std::shared_ptr<JobState> job;
  Clock::time_point sent;  ///< when the upstream handed it over (transfer span start)
  int replica = 0;         ///< which replica of the receiving stage it was routed to
};

/// Why a job must stop now, if it must: cancelled, or past its deadline.
std::optional<Errc> stop_reason(const JobState& job, Clock::time_point now);

struct StageCounters {
  std::atomic<uint64_t> batches{0}, packets{0}, failures{0}, consecutive_failures{0};
  std::atomic<uint64_t> cache_hits{0}, cache_misses{0};
};

/// Entry to one stage: the credit bound over all its replicas, each replica's
/// outstanding work (for least-loaded routing), and the senders waiting for a credit.
class StageGate {
 public:
  StageGate(std::string name, int credits, int replicas);
  const std::string& name() const { return name_; }
  int credits() const { return credits_; }
  int in_flight() const { return in_flight_.load(); }

  /// Takes a credit if one is free. Otherwise registers `waiter` to get a credit_atom when
  /// one frees up (re-checking once so a release in between is never missed).
  bool acquire_or_wait(const caf::actor& waiter);
  /// Picks the replica with the least outstanding packets and counts one more for it.
  int pick_replica();
  /// A packet left the stage: frees its replica slot and its credit, wakes waiters.
  void release(int replica);

  std::vector<caf::actor> replicas;  ///< set once at wiring, read-only afterwards

 private:
  bool try_acquire();
  std::string name_;
  int credits_;
  std::atomic<int> in_flight_{0};
  std::unique_ptr<std::atomic<int>[]> outstanding_;
  int n_replicas_;
  std::mutex waiters_mutex_;
  std::vector<caf::actor> waiters_;
  std::atomic<bool> has_waiters_{false};
};

/// Everything the engine and its actors share. Owned by Engine (and kept alive by actors).
struct EngineCore {
  PipelineSpec spec;
  std::unique_ptr<caf::actor_system_config> cfg;
  std::unique_ptr<caf::actor_system> system;
  caf::actor ingress;
  std::vector<caf::actor> all_actors;

  // Stage i in chain order.
  std::vector<const StageSpec*> chain;
  std::vector<std::unique_ptr<StageGate>> gates;
  std::vector<std::unique_ptr<StageCounters>> counters;
  std::vector<std::shared_ptr<PromptCache>> caches;  ///< null where a stage has none
  std::vector<std::shared_ptr<Lane>> lanes;          ///< engine owns lanes and stages;
  std::vector<std::unique_ptr<Stage>> stages;        ///< actors hold raw pointers
  std::vector<int> lane_stage;                       ///< stage index of each lane

  std::atomic<uint64_t> next_id{1};
  std::atomic<int> pending{0};
  std::atomic<bool> closed{false};
  std::atomic<uint64_t> submitted{0}, accepted{0}, refused{0}, completed{0}, failed{0};
  std::atomic<uint64_t> n_cancelled{0}, n_deadline{0}, n_stage_failed{0};
  Clock::time_point t0 = Clock::now();

  mutable std::mutex jobs_mutex;
  std::unordered_map<uint64_t, std::shared_ptr<JobState>> jobs;

  mutable std::mutex trace_mutex;
  std::deque<JobResult> recent;  ///< finished jobs' traces (tensors dropped)
  static constexpr size_t kTraceKeep = 4096;

  /// Sets the job's one result (first call wins) and updates counters.
  void finish(const Envelope& e, JobResult result);
  void succeed(const Envelope& e);
  void fail(const Envelope& e, Errc code, const std::string& stage, const std::string& message);
  /// Fails `e` with the reason stop_reason() gave (cancelled / deadline_exceeded).
  void stop(const Envelope& e, Errc why, const std::string& stage);
};

}  // namespace stagecraft::actors

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(stagecraft::actors::Envelope)
