#pragma once
// The job service's options and its serving loop, shared by `stagecraft serve`
// (one process) and the head node of `stagecraft worker` (a split pipeline):
// the same flags, the same drain on SIGTERM / SIGINT.
#include <cstdint>
#include <string>
#include <utility>

#include "actors/job_runner.hpp"
#include "cli/cli11.hpp"
#include "core/pipeline_spec.hpp"
#include "service/http_gateway.hpp"
#include "service/job_server.hpp"

namespace stagecraft::cli {

/// `value` of `option` (e.g. --http) as host and port; throws Error(invalid_argument) naming
/// the option unless it is HOST:PORT with a port number.
std::pair<std::string, uint16_t> http_address(const std::string& option, const std::string& value);

struct ServeFlags {
  service::ServerOptions opt;
  service::HttpOptions http_opt;
  std::string curve_secret, curve_clients, http = "127.0.0.1:8080";
  int64_t client_timeout_ms = 0, http_read_timeout_ms = 0;

  /// --bind, --http, --http-read-timeout-ms, --http-max-body-bytes, --price-per-device-hour,
  /// --max-jobs-per-client, --max-images-per-job, --max-message-bytes, --client-timeout-ms,
  /// --curve-secret, --curve-clients.
  void add_to(CLI::App& app);
  /// Serves `runner` until SIGTERM or SIGINT, then drains (every accepted job answered)
  /// and returns the exit code. Throws Error for bad flag values.
  int serve(JobRunner& runner, const PipelineSpec& spec, const std::string& file, const CLI::App& app);
};

}  // namespace stagecraft::cli
