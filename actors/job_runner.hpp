#pragma once
// What runs jobs for a front door: the in-process Engine (actors/engine.hpp), or
// the head node of a pipeline split over processes (actors/node_runtime.hpp).
// `stagecraft run` and the job service (service/job_server.hpp) take either.
// The contract is the Engine's: every accepted job gets exactly one result, a
// refused one gets its reason at once, and the calls are safe from any thread.
#include <chrono>
#include <cstdint>
#include <functional>
#include <future>
#include <optional>
#include <string>

#include "actors/job_result.hpp"

namespace stagecraft {

class JobRunner {
 public:
  using Progress = JobProgress;
  /// Receives a job's one result, on a runner thread: keep it short.
  using JobDone = std::function<void(const JobResult&)>;
  /// What submit_with_callback() did with a request.
  struct Submitted {
    uint64_t id = 0;                   ///< the accepted job's id (for cancel); 0 when refused
    std::optional<JobResult> refused;  ///< set when it was not accepted: why (done is never called)
  };

  virtual ~JobRunner() = default;
  virtual std::future<JobResult> submit(Request request, Progress progress = {}) = 0;
  /// `done` is called exactly once for an accepted job, never for a refused one.
  virtual Submitted submit_with_callback(Request request, Progress progress, JobDone done) = 0;
  /// Asks a job to stop; it ends with Error(cancelled). False when unknown or finished.
  virtual bool cancel(uint64_t job_id) = 0;
  virtual EngineStats stats() const = 0;
  /// Chrome trace JSON of recently finished jobs.
  virtual void write_chrome_trace(const std::string& path) const = 0;
  /// Stops accepting, waits up to `drain` for jobs in flight, answers the rest. Idempotent.
  virtual void shutdown(std::chrono::milliseconds drain = std::chrono::milliseconds(0)) = 0;
};

}  // namespace stagecraft
