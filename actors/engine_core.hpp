#pragma once
// Engine internals shared by the actors: job bookkeeping, per-stage gates
// (credits, replica load and the ledger of what each replica holds), counters and
// the engine's lifecycle flags. Not part of the public API.
#include <atomic>
#include <deque>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include <caf/all.hpp>

#include "actors/job_counters.hpp"
#include "actors/job_result.hpp"
#include "actors/prompt_cache.hpp"
#include "core/lane.hpp"
#include "core/pipeline_spec.hpp"
#include "stages/stage.hpp"

namespace stagecraft::actors {

/// A caller's job: the promise of its one result and the cancel flag actors read.
struct JobState {
  uint64_t id = 0;
  std::promise<JobResult> promise;
  JobProgress progress;
  /// When set, receives the result instead of the promise (Engine::submit_with_callback).
  std::function<void(const JobResult&)> done;
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
  std::atomic<uint64_t> restarts{0};
  std::atomic<bool> restarted{false};  ///< a replica died; cleared by the next good run
  std::atomic<int64_t> busy_ns_final{0};  ///< lane busy time, kept when shutdown frees the lanes
};

/// Entry to one stage: the credit bound over all its replicas, each replica's actor and
/// the packets it holds (for least-loaded routing, and so that a supervisor can answer
/// the jobs of a replica that died), and the senders waiting for a credit.
///
/// Every packet inside a stage holds one credit and one ledger entry, from the moment it
/// is sent to a replica (send) until it leaves the stage (release).
class StageGate {
 public:
  StageGate(std::string name, int credits, int replicas);
  const std::string& name() const { return name_; }
  int credits() const { return credits_; }
  int in_flight() const { return in_flight_.load(); }
  int replica_count() const { return n_replicas_; }

  /// Takes a credit if one is free. Otherwise registers `waiter` to get a credit_atom when
  /// one frees up (re-checking once so a release in between is never missed).
  bool acquire_or_wait(const caf::actor& waiter);
  /// Picks the replica with the least outstanding packets and counts one more for it.
  int pick_replica();
  /// Records `e` in replica e.replica's ledger and sends it there (a credit is held).
  void send(Envelope e);
  /// A packet left the stage: frees its ledger entry, replica slot and credit, wakes
  /// waiters. A second release of the same job is ignored.
  void release(int replica, uint64_t job_id);

  caf::actor replica(int r) const;
  void set_replica(int r, caf::actor a);
  /// Under the replica's lock: installs what `fresh()` returns as its actor (a null handle
  /// when none may start, e.g. during shutdown) and hands back the envelopes the old actor
  /// held, whose credits it returns. The supervisor answers those jobs.
  std::vector<Envelope> replace_replica(int r, const std::function<caf::actor()>& fresh);
  /// Drops every actor handle (shutdown, after the actors stopped).
  void clear_actors();

 private:
  struct Slot {
    mutable std::mutex mu;
    caf::actor actor;
    std::unordered_map<uint64_t, Envelope> held;  ///< job id -> the packet this replica holds
  };
  bool try_acquire();
  void free_credit(int replica);
  std::string name_;
  int credits_;
  std::atomic<int> in_flight_{0};
  std::unique_ptr<std::atomic<int>[]> outstanding_;
  std::unique_ptr<Slot[]> slots_;
  int n_replicas_;
  std::mutex waiters_mutex_;
  std::vector<caf::actor> waiters_;
  std::atomic<bool> has_waiters_{false};
};

/// Everything the engine and its actors share. Owned by Engine; a public call keeps
/// its own reference for as long as it runs.
struct EngineCore {
  PipelineSpec spec;
  std::unique_ptr<caf::actor_system_config> cfg;
  std::unique_ptr<caf::actor_system> system;
  caf::actor ingress;
  caf::actor supervisor;

  // Stage i in chain order.
  std::vector<const StageSpec*> chain;
  std::vector<std::unique_ptr<StageGate>> gates;
  std::vector<std::unique_ptr<StageCounters>> counters;
  std::vector<std::shared_ptr<PromptCache>> caches;  ///< null where a stage has none
  std::vector<std::unique_ptr<Stage>> stages;        ///< actors hold raw pointers
  std::vector<Stage*> first_replica;                 ///< per stage: the replica asked at the door

  mutable std::mutex lanes_mutex;                    ///< stats() reads lanes shutdown frees
  std::vector<std::shared_ptr<Lane>> lanes;
  std::vector<int> lane_stage;                       ///< stage index of each lane

  std::atomic<uint64_t> next_id{1};
  std::atomic<int> pending{0};
  JobCounters counts;
  Clock::time_point t0 = Clock::now();

  // Lifecycle. `closed`: no job is accepted any more (set under jobs_mutex, so every job
  // registered before it is seen by shutdown). `stopping`: actors, lanes and stages are
  // about to go; a public call uses them only inside a LiveCall, which teardown waits out.
  std::atomic<bool> closed{false};
  std::atomic<bool> stopping{false};
  std::atomic<int> live_calls{0};
  std::mutex shutdown_mutex;  ///< one shutdown at a time; a second waits for the first
  bool torn_down = false;     ///< under shutdown_mutex

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
  /// Every actor now running (ingress, supervisor, replicas).
  std::vector<caf::actor> actors() const;
};

/// A public call's use of actors, lanes or stages. false from enter() once shutdown
/// began: the caller must not touch them (it answers as if the engine were closed).
class LiveCall {
 public:
  explicit LiveCall(EngineCore& c) : c_(c) {
    c_.live_calls.fetch_add(1);
    ok_ = !c_.stopping.load();
    if (!ok_) c_.live_calls.fetch_sub(1);
  }
  ~LiveCall() {
    if (ok_) c_.live_calls.fetch_sub(1);
  }
  LiveCall(const LiveCall&) = delete;
  LiveCall& operator=(const LiveCall&) = delete;
  bool ok() const { return ok_; }

 private:
  EngineCore& c_;
  bool ok_ = false;
};

/// Set on a thread while it runs a caller's progress or done callback, so that a
/// shutdown() from inside one does not wait for the thread it runs on.
extern thread_local bool tl_in_engine_callback;

}  // namespace stagecraft::actors

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(stagecraft::actors::Envelope)
