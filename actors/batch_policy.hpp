#pragma once
// Which of a stage replica's waiting jobs run next, and with whom. Plain C++ (no CAF,
// no stages): the replica actor feeds it arrivals and departures and asks it what to
// start, so the rules can be tested, and changed, on their own.
//
// Batch stages: jobs wait in arrival order. The oldest job's batch key picks the batch:
// up to max_batch waiting jobs with that key, in arrival order. A full batch starts at
// once while fewer than lane_depth batches are on the lane; a partial one starts only
// when the lane is idle and it has waited max_wait (next() says when to ask again).
//
// Iterative stages: the jobs form an active set and each step runs up to max_batch of
// them: the set ordered by priority (higher first) then arrival, the first job's key,
// and the next jobs with that key. Jobs stay in the set across steps until removed.
//
//   BatchPolicy policy({.max_batch = 8, .max_wait = 5ms});
//   policy.add(seq, stage.batch_key(packet), packet.request.priority, now);
//   auto d = policy.next(now, lane_batches);
//   if (!d.run.empty()) start(d.run); else if (d.wake_at) arm_timer(*d.wake_at);
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/packet.hpp"

namespace stagecraft::actors {

struct PolicyConfig {
  int max_batch = 1;
  std::chrono::microseconds max_wait{0};
  bool iterative = false;
  /// Batch stages: most batches queued on the lane at once. Two keep it busy across
  /// the round trip of a done message.
  size_t lane_depth = 2;
};

class BatchPolicy {
 public:
  using Seq = uint64_t;  ///< the caller's id of a job, increasing with arrival

  explicit BatchPolicy(PolicyConfig cfg);

  /// A job arrived (or joined the active set).
  void add(Seq seq, std::string key, int priority, Clock::time_point arrived);
  /// A job left: swept, failed or finished. False when it was not there.
  bool remove(Seq seq);
  bool contains(Seq seq) const;
  /// Jobs that wait (not in a batch or step on the lane), oldest first: the ones a
  /// sweep for deadlines and cancellation may take out.
  std::vector<Seq> waiting() const;
  size_t size() const { return jobs_.size(); }
  bool empty() const { return jobs_.empty(); }

  struct Decision {
    std::vector<Seq> run;                       ///< start these as one batch now (they left the policy)
    std::optional<Clock::time_point> wake_at;   ///< nothing due yet: ask again at this time
  };
  /// Batch stages: the next batch to start, given `on_lane` batches already on the lane.
  Decision next(Clock::time_point now, size_t on_lane);

  /// Iterative stages: the jobs of the next step, which are now running; empty while a
  /// step runs or when the set is empty.
  std::vector<Seq> next_step();
  /// The running step ended. Its jobs stay in the set unless removed.
  void step_done();
  bool stepping() const { return stepping_; }

  const PolicyConfig& config() const { return cfg_; }

 private:
  struct Job {
    Seq seq;
    std::string key;
    int priority;
    Clock::time_point arrived;
    bool running = false;
  };
  PolicyConfig cfg_;
  std::vector<Job> jobs_;  ///< arrival order (seq increasing)
  bool stepping_ = false;
};

}  // namespace stagecraft::actors
