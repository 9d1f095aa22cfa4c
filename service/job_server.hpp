#pragma once
// The front door of `stagecraft serve`: a ZeroMQ ROUTER that speaks the job
// protocol (docs/protocol.md) and turns its requests into engine jobs. One
// thread owns the socket; the engine reports progress and outcomes by callback
// into a queue that thread drains, so a slow client never slows the engine and
// no engine thread ever touches the socket.
//
//   JobServer server(*engine, spec, {.bind = "tcp://127.0.0.1:5555"}, encode_png);
//   std::signal(SIGTERM, ...) -> server.request_drain();   // async-signal-safe
//   server.run();   // returns once drained: every accepted job has had its terminal reply
//
// Guarantees: every accepted job gets exactly one terminal reply (`result` or
// `error`), also when it fails, is cancelled, passes its deadline, its client
// disappears or the server drains; a finished job's terminal reply is kept for a
// while, so a client that reconnects and resubmits the same id with the same
// parameters gets it again instead of a second job. Bad input gets an `error`
// reply (or is dropped and counted where no reply is possible) and never reaches
// the engine.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "actors/engine.hpp"
#include "core/pipeline_spec.hpp"
#include "core/tensor.hpp"

namespace zmq {
class context_t;
}

namespace stagecraft::service {

struct CurveOptions {
  std::string server_secret_file;   ///< a file holding the server's Z85 secret key (40 characters)
  std::string allowed_clients_file; ///< one Z85 client public key per line; '#' starts a comment
};

struct ServerOptions {
  std::string bind = "tcp://127.0.0.1:5555";
  std::string pipeline_name;          ///< what `submit.pipeline` may say; empty = the file's stem
  int max_jobs_per_client = 64;       ///< jobs in flight per client connection
  int max_images_per_job = 16;        ///< most `num_images` of one submit
  int64_t max_message_bytes = 8 << 20;  ///< larger messages make ZeroMQ drop the connection
  /// A client with jobs in flight that sends nothing (not even `ping`) for this long is
  /// taken as gone: its jobs are cancelled.
  std::chrono::milliseconds client_timeout{30000};
  size_t finished_jobs_kept = 1024;   ///< terminal replies kept for resubmits and `status`
  std::optional<CurveOptions> curve;  ///< CurveZMQ encryption + client allow-list
  /// For the cost metric: what one device (lane) costs per hour; 0 = unknown, no metric.
  double price_per_device_hour = 0;
  /// More Prometheus text appended to /metrics (its own metric families), e.g. the head
  /// node's channels (service/node_metrics.hpp); called on the HTTP thread.
  std::function<std::string()> extra_metrics;
};

/// Turns a finished job's "image" tensor (u8 [1, H, W, 3]) into PNG bytes. Injected so the
/// front door needs no image library (cli/ passes stages/post's encoder).
using PngEncoder = std::function<std::vector<uint8_t>(const Tensor& rgb)>;

/// Counters of the front door, for `stats`, /metrics and tests.
struct ServerCounters {
  std::atomic<uint64_t> messages{0};          ///< messages received
  std::atomic<uint64_t> malformed{0};         ///< refused as bad_request / unknown_op / unsupported_version
  std::atomic<uint64_t> dropped{0};           ///< messages that could not be answered (no identity frame)
  std::atomic<uint64_t> accepted{0};          ///< jobs accepted
  std::atomic<uint64_t> refused_invalid{0};   ///< invalid_argument at the door
  std::atomic<uint64_t> refused_overloaded{0};
  std::atomic<uint64_t> refused_client_limit{0};
  std::atomic<uint64_t> duplicates{0};        ///< resubmits of a known id with equal parameters
  std::atomic<uint64_t> conflicts{0};         ///< resubmits of a known id with other parameters
  std::atomic<uint64_t> results{0}, errors{0};  ///< terminal replies by kind (for accepted jobs)
  std::atomic<uint64_t> clients_lost{0};      ///< clients whose jobs were cancelled for silence
  std::atomic<uint64_t> unsendable{0};        ///< replies ZeroMQ would not take (client gone or full)
};

class JobServer {
 public:
  /// Binds at once: throws Error(io) naming the address when it cannot.
  JobServer(JobRunner& engine, const PipelineSpec& spec, ServerOptions options, PngEncoder png);
  ~JobServer();
  JobServer(const JobServer&) = delete;
  JobServer& operator=(const JobServer&) = delete;

  /// Serves until drained. Call from one thread.
  void run();
  /// Stops accepting (submits get `error {code: shutting_down}`) and lets run() return once
  /// every accepted job has had its terminal reply. Async-signal-safe; any thread.
  void request_drain();
  /// The address actually bound (a tcp port of 0 or * resolved).
  const std::string& endpoint() const;
  const ServerCounters& counters() const;

  // For the HTTP gateway in the same process (any thread):
  /// The ZeroMQ context and an inproc endpoint of the same protocol, for in-process clients
  /// such as the HTTP gateway; its connections are bound by the queue, not per-client limits.
  zmq::context_t& context();
  const std::string& inproc_endpoint() const;
  /// Accepting jobs and every stage healthy.
  bool ready() const;
  /// Prometheus text of the front door and the engine.
  std::string metrics_text() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace stagecraft::service
