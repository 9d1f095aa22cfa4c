#pragma once
// A node's own HTTP page (`stagecraft worker --metrics-http HOST:PORT`), on any node of
// a split pipeline, for probes and scrapes: no jobs enter there (they enter at the head's
// job service).
//
//   GET /healthz   200 while the process serves
//   GET /readyz    200 when every node this one sends to has welcomed it, else 503
//   GET /metrics   Prometheus text: the node's channels (service/node_metrics.hpp) and
//                  the figures of its stages (service/service_metrics.hpp)
//
// Boost.Beast on Asio, one thread of its own; a request must arrive whole within the
// read timeout, bodies are refused (413), anything else is 404 or 405.
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

namespace stagecraft::service {

struct NodeHttpOptions {
  std::string host = "127.0.0.1";
  uint16_t port = 0;  ///< 0: any free port (see NodeHttp::port)
  std::chrono::milliseconds read_timeout{10000};
  std::function<bool()> ready;          ///< for /readyz; called on the HTTP thread
  std::function<std::string()> metrics;  ///< the /metrics body; called on the HTTP thread
};

class NodeHttp {
 public:
  /// Binds and starts serving. Throws Error(io) naming the address when it cannot listen,
  /// Error(invalid_argument) when the host is not an IP address.
  explicit NodeHttp(NodeHttpOptions options);
  ~NodeHttp();  ///< stops accepting, drops connections, joins its thread
  NodeHttp(const NodeHttp&) = delete;
  NodeHttp& operator=(const NodeHttp&) = delete;
  uint16_t port() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace stagecraft::service
