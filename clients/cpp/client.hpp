#pragma once
// The C++ client of `stagecraft serve` (docs/protocol.md). One Client is one
// connection (a ZeroMQ DEALER); it is not thread-safe: use one per thread.
//
//   stagecraft::client::Client c("tcp://127.0.0.1:5555");
//   SubmitFields f;
//   f.prompt = "a red circle in the center on a blue background";
//   f.seed = 7;
//   auto outcome = c.generate("job-1", f, [](int64_t step, int64_t of, int64_t image) {
//     std::cerr << "step " << step << "/" << of << "\r";
//   });
//   if (!outcome.ok()) std::cerr << outcome.code << ": " << outcome.message << "\n";
//   else write_file("x.png", outcome.images[0].data);
//
// While it waits for a job, generate() sends `ping` now and then so the server
// knows the client is still there (a silent client's jobs are cancelled).
#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <zmq.hpp>

#include "transport/job_protocol.hpp"

namespace stagecraft::client {

using transport::ResultImage;
using transport::ServerReply;
using transport::StageTiming;
using transport::SubmitFields;

struct ClientOptions {
  std::chrono::milliseconds heartbeat{2000};  ///< ping interval while waiting for a job
  /// CurveZMQ: the server's public key and this client's key pair (Z85 text); empty = plain.
  std::string server_public_key, client_public_key, client_secret_key;
};

/// A job's one terminal reply, as generate() returns it.
struct Outcome {
  std::string id;
  std::vector<ResultImage> images;
  std::vector<StageTiming> timings;
  std::string code, message;            ///< set when the job failed
  std::optional<int64_t> retry_after_ms;
  bool ok() const { return code.empty(); }
};

using Progress = std::function<void(int64_t step, int64_t of, int64_t image)>;

class Client {
 public:
  explicit Client(const std::string& endpoint, ClientOptions options = {});

  /// Submits and waits for the job's terminal reply (or `timeout`: Error(deadline_exceeded)).
  /// A refusal (invalid_argument, overloaded, ...) is returned as a failed Outcome.
  Outcome generate(const std::string& id, SubmitFields fields, Progress progress = {},
                   std::chrono::milliseconds timeout = std::chrono::minutes(10));

  // ---- lower level: several jobs in flight on one connection ----
  void submit(const std::string& id, const SubmitFields& fields);
  void cancel(const std::string& id);
  void request_status(const std::string& id);
  void ping();
  /// The next reply, or nullopt after `timeout`. Throws transport::ProtocolError on a malformed one.
  std::optional<ServerReply> receive(std::chrono::milliseconds timeout);

  /// One request/reply round trip each (replies of other jobs that arrive meanwhile are dropped:
  /// call these only when no job is in flight on this connection).
  nlohmann::json health(std::chrono::milliseconds timeout = std::chrono::seconds(5));
  nlohmann::json stats(std::chrono::milliseconds timeout = std::chrono::seconds(5));

 private:
  void send(const transport::ClientMessage& m);
  nlohmann::json info(transport::Op op, const char* type, std::chrono::milliseconds timeout);
  ClientOptions opt_;
  zmq::context_t ctx_{1};
  zmq::socket_t sock_;
};

}  // namespace stagecraft::client
