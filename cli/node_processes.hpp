#pragma once
// The worker processes `stagecraft launch` and a multi-node `stagecraft run` start:
// one `stagecraft worker FILE --node NAME` child per node. A child dies with its
// parent (PR_SET_PDEATHSIG), so a killed launcher leaves no stray workers.
//
//   NodeProcesses kids;
//   kids.start("dit", {"worker", file, "--node", "dit"}, "/tmp/x/dit.log");  // "" = inherit stdout/stderr
//   ...
//   kids.stop(std::chrono::seconds(10));   // SIGTERM, then SIGKILL whoever is still up
#include <chrono>
#include <csignal>
#include <optional>
#include <string>
#include <vector>

#include <sys/types.h>

namespace stagecraft::cli {

class NodeProcesses {
 public:
  struct Child {
    std::string node, log;  ///< log: where its output goes ("" = this process's)
    pid_t pid = -1;
    std::optional<int> status;  ///< exit code (128 + signal when killed), once it ended
  };

  NodeProcesses() = default;
  NodeProcesses(const NodeProcesses&) = delete;
  NodeProcesses& operator=(const NodeProcesses&) = delete;
  /// Stops what is still running (stop() with a short grace).
  ~NodeProcesses();

  /// Starts `exe` (by default this executable) with `args`. Throws Error(io) if it cannot.
  void start(const std::string& node, const std::vector<std::string>& args, const std::string& log = "",
             const std::string& exe = "/proc/self/exe");
  /// Sends `sig` to every child still running.
  void signal_all(int sig);
  /// Reaps children that ended, without waiting; returns those that ended just now.
  std::vector<Child> reap();
  /// Waits until every child ended or `timeout` passed; true when all ended.
  bool wait(std::chrono::milliseconds timeout);
  /// SIGTERM to all, wait up to `grace`, SIGKILL the rest, wait for them.
  void stop(std::chrono::milliseconds grace);
  const std::vector<Child>& children() const { return children_; }
  /// The last `lines` lines of a child's log ("" when it has none).
  static std::string log_tail(const Child& c, int lines = 15);

 private:
  std::vector<Child> children_;
};

}  // namespace stagecraft::cli
