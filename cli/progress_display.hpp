#pragma once
// Progress of one or many jobs on stderr that reads well either way: on a
// terminal one bar updated in place (jobs done, steps per second); otherwise
// (a log file, a pipe, CI) a plain line every few seconds and one at the end,
// never a stream of fragments.
//
//   ProgressDisplay shown(16);           // 16 jobs
//   ... from any thread: shown.step(job, 4, 20); shown.done(job);
//   shown.finish();
#include <chrono>
#include <cstdio>
#include <mutex>
#include <vector>

namespace stagecraft::cli {

class ProgressDisplay {
 public:
  /// `interactive`: draw a bar in place (default: whether stderr is a terminal).
  explicit ProgressDisplay(int jobs, FILE* out = stderr, int interactive = -1);
  void step(int job, int step, int of);  ///< thread-safe
  void done(int job);                    ///< thread-safe
  void finish();                         ///< the last line (ends the bar with a newline)

 private:
  void draw(bool force);
  using Clock = std::chrono::steady_clock;
  std::mutex mu_;
  FILE* out_;
  bool tty_;
  int jobs_, done_ = 0;
  long long steps_ = 0;
  int of_ = 0;
  std::vector<int> last_step_;
  Clock::time_point t0_ = Clock::now(), last_draw_{};
};

}  // namespace stagecraft::cli
