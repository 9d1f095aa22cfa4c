#include "cli/node_processes.hpp"

#include <fcntl.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <deque>
#include <fstream>
#include <thread>

#include "core/error.hpp"

namespace stagecraft::cli {

namespace {
int exit_code(int status) { return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status); }
}  // namespace

NodeProcesses::~NodeProcesses() { stop(std::chrono::seconds(5)); }

void NodeProcesses::start(const std::string& node, const std::vector<std::string>& args, const std::string& log,
                          const std::string& exe) {
  std::vector<std::string> argv_s = {exe == "/proc/self/exe" ? std::string("stagecraft") : exe};
  argv_s.insert(argv_s.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : argv_s) argv.push_back(a.data());
  argv.push_back(nullptr);
  int log_fd = -1;
  if (!log.empty()) {
    log_fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    SC_CHECK(log_fd >= 0, Errc::io, "cannot write the log of node '" << node << "' to " << log << ": "
                                                                     << std::strerror(errno));
  }
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid == 0) {
    // Only async-signal-safe calls from here to exec.
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (::getppid() != parent) ::_exit(127);  // the parent died before prctl took effect
    if (log_fd >= 0) {
      ::dup2(log_fd, 1);
      ::dup2(log_fd, 2);
    }
    ::execv(exe.c_str(), argv.data());
    ::_exit(127);
  }
  if (log_fd >= 0) ::close(log_fd);
  SC_CHECK(pid > 0, Errc::io, "cannot start the worker of node '" << node << "': " << std::strerror(errno));
  children_.push_back({node, log, pid, std::nullopt});
}

void NodeProcesses::signal_all(int sig) {
  for (auto& c : children_)
    if (!c.status) ::kill(c.pid, sig);
}

std::vector<NodeProcesses::Child> NodeProcesses::reap() {
  std::vector<Child> ended;
  for (auto& c : children_) {
    if (c.status) continue;
    int st = 0;
    if (::waitpid(c.pid, &st, WNOHANG) == c.pid) {
      c.status = exit_code(st);
      ended.push_back(c);
    }
  }
  return ended;
}

bool NodeProcesses::wait(std::chrono::milliseconds timeout) {
  const auto until = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    reap();
    bool all = true;
    for (const auto& c : children_) all = all && c.status.has_value();
    if (all) return true;
    if (std::chrono::steady_clock::now() >= until) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

void NodeProcesses::stop(std::chrono::milliseconds grace) {
  signal_all(SIGTERM);
  if (wait(grace)) return;
  signal_all(SIGKILL);
  wait(std::chrono::seconds(10));
}

std::string NodeProcesses::log_tail(const Child& c, int lines) {
  if (c.log.empty()) return "";
  std::ifstream in(c.log);
  std::deque<std::string> last;
  for (std::string line; std::getline(in, line);) {
    last.push_back(line);
    if (static_cast<int>(last.size()) > lines) last.pop_front();
  }
  std::string out;
  for (const auto& l : last) out += "  " + c.node + "| " + l + "\n";
  return out;
}

}  // namespace stagecraft::cli
