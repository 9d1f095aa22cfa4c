#pragma once
// A job as it travels through a pipeline: the request, the named tensors
// stages add ("token_ids", "prompt_embeds", "latents", "image", ...), the
// per-job state an iterative stage keeps between steps, and the trace of
// where its time went. Inside a process packets move by shared pointer;
// tensors are never copied to change owners.
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/tensor.hpp"

namespace stagecraft {

class DumpWriter;  // core/dump.hpp

using Clock = std::chrono::steady_clock;

/// What a caller asks for. Zero / empty fields take the pipeline's defaults.
struct Request {
  std::string prompt;
  std::string negative_prompt;
  uint64_t seed = 0;
  int steps = 0;
  float guidance = -1.0f;  ///< < 0: pipeline default; 1 disables classifier-free guidance
  int width = 0, height = 0;
  std::string scheduler;
  int priority = 0;  ///< higher runs first in the denoiser's active set
  std::optional<Clock::time_point> deadline;
  /// Optional initial noise (see docs/numerics.md); undefined = seeded noise.
  Tensor initial_latents;
  /// Optional: every stage writes this job's outputs here (docs/numerics.md). In-process
  /// only: a request that crosses a process boundary arrives without it.
  std::shared_ptr<DumpWriter> dump;
};

/// One interval of a job's life, for traces (Chrome trace JSON).
struct TraceSpan {
  enum class Kind { queue, compute, transfer };
  std::string stage;
  std::string lane;
  Kind kind = Kind::compute;
  Clock::time_point start, end;
  int batch_size = 1;
};

struct Packet {
  uint64_t job_id = 0;
  Request request;
  std::map<std::string, Tensor> tensors;
  /// Stage-private per-job state (e.g. the scheduler of an in-flight denoise).
  std::shared_ptr<void> state;
  int step = 0;         ///< steps done by the iterative stage so far
  int total_steps = 0;  ///< set by the iterative stage when the job joins
  std::vector<TraceSpan> trace;
  /// Where a packet that crosses processes goes next: the name of the stage it enters, or
  /// empty when its chain is done (a result on its way back to the head node). Set by the
  /// node runtime (actors/node_runtime.hpp); unused inside one process.
  std::string route;

  /// Tensor by name or Error(not_found) naming the packet's tensors.
  const Tensor& tensor(const std::string& name) const;
};
using PacketPtr = std::shared_ptr<Packet>;

}  // namespace stagecraft
