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
// Requests are checked at the door (core/request_check.hpp, then each stage's
// check_request hook): a bad one gets a ready future with Error(invalid_argument)
// naming the field and never reaches a stage.
//
// Threads: submit(), cancel(), stats(), next_job_id() and write_chrome_trace() may be
// called from any thread, also while shutdown() or the destructor runs there (calls
// that start after the destructor returned are the caller's bug, as for any object).
// Progress callbacks run on an engine thread: keep them short; they may call the
// engine, and none runs after shutdown() returned. docs/engine.md lists the guarantees.
#include <chrono>
#include <cstdint>
#include <functional>
#include <future>
#include <memory>
#include <optional>
#include <string>

#include "actors/job_result.hpp"
#include "actors/job_runner.hpp"
#include "core/error.hpp"
#include "core/packet.hpp"
#include "core/pipeline_spec.hpp"

namespace stagecraft {

namespace actors {
struct EngineCore;
struct EngineAccess;  ///< tests reach the internals through it (tests/actors)
}

class Engine final : public JobRunner {
 public:
  // Progress, JobDone (called on an engine thread, or on the thread running shutdown()
  // for the jobs it cancels; it may call the engine) and Submitted: see JobRunner.

  /// Creates lanes, builds and loads every stage replica (load() on its lane), spawns the actors.
  /// Throws Error when a stage type is unknown, a load fails, or the graph is not a chain.
  static std::unique_ptr<Engine> create(const PipelineSpec& spec);
  ~Engine() override;
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  /// Returns at once. A request that fails the door's checks gets a ready future with
  /// Error(invalid_argument) naming the field; beyond limits.max_pending_jobs (or after
  /// shutdown) the future is already ready with Error(overloaded) (cancelled after
  /// shutdown); nothing is queued.
  std::future<JobResult> submit(Request request, Progress progress = {}) override;
  /// submit() for callers that would rather not hold a future per job (the service): the
  /// same door, and `done` is called exactly once for an accepted job, never for a refused one.
  Submitted submit_with_callback(Request request, Progress progress, JobDone done) override;
  /// submit_with_callback() for a packet that already went through earlier stages in
  /// another process (the node runtime): it enters this engine's first stage with its
  /// tensors, step and request as they are. The same door (request and stage checks,
  /// limits.max_pending_jobs); the packet's job_id is replaced by this engine's id.
  Submitted continue_packet(PacketPtr packet, Progress progress, JobDone done);
  /// Asks a job to stop; it ends with Error(cancelled) at its next stage or step boundary.
  /// False when the job is unknown or already finished.
  bool cancel(uint64_t job_id) override;
  /// The id the next accepted submit() will get (ids increase by one per accepted job).
  uint64_t next_job_id() const;
  EngineStats stats() const override;
  /// Writes the traces of recently finished jobs (the last 4096) as Chrome trace JSON.
  void write_chrome_trace(const std::string& path) const override;
  /// Stops accepting, waits up to `drain` for in-flight jobs, fails the rest with
  /// Error(cancelled), stops actors, then lanes, then stages. Idempotent, safe from any
  /// thread and against every other call; a second caller waits for the first. Called
  /// from inside a progress callback it answers every job and leaves the teardown to
  /// the next shutdown() or the destructor (it cannot wait for the thread it runs on).
  void shutdown(std::chrono::milliseconds drain = std::chrono::milliseconds(0)) override;

 private:
  friend struct actors::EngineAccess;
  Engine() = default;
  /// Never reassigned after create(): every call copies it, so the core outlives the call.
  std::shared_ptr<actors::EngineCore> core_;
};

}  // namespace stagecraft
