#pragma once
// stagecraft::Engine — a running pipeline. Built from a validated PipelineSpec,
// it spawns one CAF actor per stage replica, each pinned to its own Lane, and
// wires them with credit-based flow control so every queue has a bound.
// Callers submit requests and get a future of the result; every accepted job
// gets exactly one result (images, or an error naming the stage).
//
//   auto engine = Engine::create(load_pipeline_spec("pipelines/tiny-shapes.yaml"));
//   Request r;
//   r.prompt = "a red circle";
//   r.seed = 7;
//   auto fut = engine->submit(r, [](int step, int total) { std::cerr << step << "/" << total << "\r"; });
//   JobResult res = fut.get();
//   if (!res.ok()) std::cerr << res.message << "\n";
//   else save_png(res.tensor("image"), "out.png");
//   engine->write_chrome_trace("trace.json");   // Perfetto opens it
//   engine->shutdown();
//
// Threads: submit(), cancel(), stats() and write_chrome_trace() may be called
// from any thread. Progress callbacks run on an engine thread: keep them short.
#include <chrono>
#include <cstdint>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "core/packet.hpp"
#include "core/pipeline_spec.hpp"

namespace stagecraft {

/// The one terminal outcome of a job.
struct JobResult {
  uint64_t job_id = 0;
  /// The final packet's tensors (e.g. "image") when the job succeeded.
  std::map<std::string, Tensor> tensors;
  /// Set when the job failed: overloaded, cancelled, deadline_exceeded, stage_failed, ...
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
  uint64_t failures = 0;    ///< run() calls that threw
  uint64_t consecutive_failures = 0;
  uint64_t cache_hits = 0, cache_misses = 0;
  std::chrono::nanoseconds busy{0};  ///< time its lanes spent computing
  Health health = Health::ok;        ///< degraded after 3 failed run() calls in a row
  double mean_batch() const { return batches ? double(packets) / double(batches) : 0.0; }
};

struct EngineStats {
  uint64_t submitted = 0;   ///< submit() calls
  uint64_t accepted = 0;
  uint64_t refused = 0;     ///< refused as overloaded (or after shutdown)
  uint64_t completed = 0;   ///< finished with a result
  uint64_t failed = 0;      ///< finished with an error (any kind except refusal)
  uint64_t cancelled = 0, deadline_exceeded = 0, stage_failed = 0;
  int pending = 0;          ///< accepted and not yet finished
  int max_pending = 0;
  uint64_t cache_hits = 0, cache_misses = 0;  ///< summed over stages with a prompt cache
  Health health = Health::ok;                 ///< degraded when any stage is
  std::vector<StageStats> stages;
};

namespace actors {
struct EngineCore;
}

class Engine {
 public:
  using Progress = std::function<void(int step, int total)>;

  /// Creates lanes, builds and loads every stage replica (load() on its lane), spawns the actors.
  /// Throws Error when a stage type is unknown, a load fails, or the graph is not a chain.
  static std::unique_ptr<Engine> create(const PipelineSpec& spec);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  /// Returns at once. Beyond limits.max_pending_jobs (or after shutdown) the future is
  /// already ready with Error(overloaded) (cancelled after shutdown); nothing is queued.
  std::future<JobResult> submit(Request request, Progress progress = {});
  /// Asks a job to stop; it ends with Error(cancelled) at its next stage or step boundary.
  /// False when the job is unknown or already finished.
  bool cancel(uint64_t job_id);
  /// The id the next accepted submit() will get (ids increase by one per accepted job).
  uint64_t next_job_id() const;
  EngineStats stats() const;
  /// Writes the traces of recently finished jobs (the last 4096) as Chrome trace JSON.
  void write_chrome_trace(const std::string& path) const;
  /// Stops accepting, waits up to `drain` for in-flight jobs, fails the rest with
  /// Error(cancelled), stops actors and lanes. Idempotent; also run by the destructor.
  void shutdown(std::chrono::milliseconds drain = std::chrono::milliseconds(0));

 private:
  Engine() = default;
  std::shared_ptr<actors::EngineCore> core_;
};

}  // namespace stagecraft
