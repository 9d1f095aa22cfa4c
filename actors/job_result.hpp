#pragma once
// The engine's value types: a job's one result, its progress callback, and the
// statistics stats() returns. Kept apart from engine.hpp so that the engine's own
// internals (engine_core.hpp, trace.hpp) include these without the public Engine.
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "core/packet.hpp"

namespace stagecraft {

/// Called after each step of the iterative stage, on an engine thread: keep it short.
using JobProgress = std::function<void(int step, int total)>;

/// The one terminal outcome of a job.
struct JobResult {
  uint64_t job_id = 0;
  /// The final packet's tensors (e.g. "image") when the job succeeded.
  std::map<std::string, Tensor> tensors;
  /// Set when the job failed: invalid_argument, overloaded, cancelled, deadline_exceeded, stage_failed, ...
  std::optional<Errc> error;
  std::string stage;    ///< the stage where it failed (empty for the front door)
  std::string message;  ///< what went wrong, naming the stage
  std::vector<TraceSpan> trace;
  int steps = 0;        ///< steps done by the iterative stage

  bool ok() const { return !error.has_value(); }
  /// Tensor by name; Error(not_found) listing the names, or the job's own error if it failed.
  const Tensor& tensor(const std::string& name) const;
  /// Throws the job's error as stagecraft::Error (no-op on success).
  void throw_if_error() const;
};

enum class Health { ok, degraded };
const char* health_name(Health h);

struct StageStats {
  std::string name, type;
  int replicas = 0;
  int credits = 0;          ///< the stage's in-flight bound
  int in_flight = 0;        ///< packets inside the stage now (queued, running, waiting to leave)
  uint64_t batches = 0;     ///< run() calls (steps, for an iterative stage)
  uint64_t packets = 0;     ///< packets processed over all run() calls
  uint64_t failures = 0;    ///< run() calls and stage callbacks that threw
  uint64_t consecutive_failures = 0;
  uint64_t restarts = 0;    ///< replica actors that died and were started again
  uint64_t cache_hits = 0, cache_misses = 0;
  std::chrono::nanoseconds busy{0};  ///< time its lanes spent computing
  /// degraded after 3 failed run() calls in a row (until one succeeds), or once a replica
  /// actor of the stage died and had to be restarted
  Health health = Health::ok;
  double mean_batch() const { return batches ? double(packets) / double(batches) : 0.0; }
};

struct EngineStats {
  uint64_t submitted = 0;   ///< submit() calls
  uint64_t accepted = 0;
  uint64_t refused = 0;     ///< refused as overloaded (or after shutdown)
  uint64_t invalid = 0;     ///< refused at the door as invalid_argument (a field out of range)
  uint64_t completed = 0;   ///< finished with a result
  uint64_t failed = 0;      ///< finished with an error (any kind except refusal)
  uint64_t cancelled = 0, deadline_exceeded = 0, stage_failed = 0;
  uint64_t node_lost = 0;   ///< a split pipeline's jobs whose node died or went silent
  int pending = 0;          ///< accepted and not yet finished
  int max_pending = 0;
  uint64_t cache_hits = 0, cache_misses = 0;  ///< summed over stages with a prompt cache
  Health health = Health::ok;                 ///< degraded when any stage is
  std::vector<StageStats> stages;
};

}  // namespace stagecraft
