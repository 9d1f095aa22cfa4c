#pragma once
// An engine and its job server in one object: built from a pipeline spec, served
// from a background thread, drained and shut down when destroyed. For programs
// that embed the service, and for tests and benchmarks.
//
//   service::ServedEngine served(spec, {.bind = "tcp://127.0.0.1:*"});
//   client::Client c(served.endpoint());
//   ...                                  // ~ServedEngine: drain, join, engine shutdown
#include <memory>
#include <string>
#include <thread>

#include "service/job_server.hpp"

namespace stagecraft::service {

class ServedEngine {
 public:
  /// Throws what Engine::create or JobServer's constructor throws (nothing is left running).
  ServedEngine(const PipelineSpec& spec, ServerOptions options, PngEncoder png = {});
  ~ServedEngine();
  ServedEngine(const ServedEngine&) = delete;
  ServedEngine& operator=(const ServedEngine&) = delete;

  Engine& engine() { return *engine_; }
  JobServer& server() { return *server_; }
  const std::string& endpoint() const { return server_->endpoint(); }

 private:
  std::unique_ptr<Engine> engine_;
  std::unique_ptr<JobServer> server_;
  std::thread loop_;
};

}  // namespace stagecraft::service
