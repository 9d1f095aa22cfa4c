#pragma once
// --heartbeat-ms and --node-timeout-ms: what every node of one split pipeline
// should agree on; `worker`, `launch` and a multi-node `run` take them the same way.
#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "actors/node_runtime.hpp"
#include "cli/cli11.hpp"

namespace stagecraft::cli {

struct NodeFlags {
  int64_t heartbeat_ms = 500, node_timeout_ms = 3000;
  void add_to(CLI::App& app) {
    app.add_option("--heartbeat-ms", heartbeat_ms, "how often nodes ping each other")->capture_default_str()
        ->check(CLI::Range(int64_t(10), int64_t(60000)));
    app.add_option("--node-timeout-ms", node_timeout_ms,
                   "a node silent this long is lost: its jobs fail with node_lost")->capture_default_str()
        ->check(CLI::Range(int64_t(50), int64_t(3600000)));
  }
  NodeOptions options(const std::string& node) const {
    NodeOptions o;
    o.node = node;
    o.heartbeat = std::chrono::milliseconds(heartbeat_ms);
    o.node_timeout = std::chrono::milliseconds(node_timeout_ms);
    return o;
  }
  std::vector<std::string> args() const {
    return {"--heartbeat-ms", std::to_string(heartbeat_ms), "--node-timeout-ms", std::to_string(node_timeout_ms)};
  }
};

}  // namespace stagecraft::cli
