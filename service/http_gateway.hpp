#pragma once
// The HTTP side of `stagecraft serve` (Boost.Beast on Asio, in the same process,
// its own port, loopback by default):
//
//   GET  /healthz                   200 while the process serves
//   GET  /readyz                    200 when accepting jobs, 503 while draining or degraded
//   GET  /metrics                   Prometheus text (service/service_metrics.hpp)
//   POST /v1/images/generations     the OpenAI images API: {prompt, n, size: "WxH",
//                                   response_format: "b64_json"} plus Stagecraft's own
//                                   seed, steps, guidance, negative_prompt, scheduler,
//                                   priority, deadline_ms; errors in that API's error body
//
// Generations go through the job server itself (an in-process ZeroMQ connection
// speaking docs/protocol.md), so validation, admission, deadlines and metrics are
// the same as for ZeroMQ clients. A body over the limit is refused with 413, a
// wrong content type with 415, bad JSON with 400, and a client that sends too
// slowly is cut off after the read timeout.
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

namespace stagecraft::service {

class JobServer;

struct HttpOptions {
  std::string host = "127.0.0.1";
  uint16_t port = 8080;  ///< 0: any free port (see HttpGateway::port)
  size_t max_body_bytes = 1 << 20;
  std::chrono::milliseconds read_timeout{10000};  ///< a request must arrive whole within this
  std::chrono::milliseconds job_timeout{600000};  ///< a generation waits at most this long
};

class HttpGateway {
 public:
  /// Binds and starts serving on its own threads. Throws Error(io) naming the address.
  HttpGateway(JobServer& server, HttpOptions options);
  ~HttpGateway();  ///< stops accepting, closes connections, joins its threads
  HttpGateway(const HttpGateway&) = delete;
  HttpGateway& operator=(const HttpGateway&) = delete;
  uint16_t port() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace stagecraft::service
