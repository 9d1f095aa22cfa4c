#include "cli/progress_display.hpp"

#include <unistd.h>

#include <string>

namespace stagecraft::cli {

ProgressDisplay::ProgressDisplay(int jobs, FILE* out, int interactive)
    : out_(out), tty_(interactive < 0 ? isatty(fileno(out)) != 0 : interactive != 0), jobs_(jobs),
      last_step_(size_t(std::max(jobs, 1)), 0) {}

void ProgressDisplay::step(int job, int step, int of) {
  std::lock_guard lk(mu_);
  if (job < 0 || job >= jobs_) return;
  steps_ += std::max(0, step - last_step_[size_t(job)]);
  last_step_[size_t(job)] = step;
  of_ = of;
  draw(false);
}

void ProgressDisplay::done(int job) {
  std::lock_guard lk(mu_);
  ++done_;
  draw(false);
}

void ProgressDisplay::finish() {
  std::lock_guard lk(mu_);
  draw(true);
  if (tty_) std::fputc('\n', out_);
  std::fflush(out_);
}

void ProgressDisplay::draw(bool force) {
  const auto now = Clock::now();
  // A terminal redraws ~10 times a second; a log gets a line every 5 s.
  const auto every = tty_ ? std::chrono::milliseconds(100) : std::chrono::milliseconds(5000);
  if (!force && now - last_draw_ < every) return;
  last_draw_ = now;
  const double secs = std::chrono::duration<double>(now - t0_).count();
  const double rate = secs > 0 ? double(steps_) / secs : 0.0;
  const long long total_steps = (long long)jobs_ * of_;
  if (tty_) {
    constexpr int kWidth = 30;
    const double frac = total_steps > 0 ? double(steps_) / double(total_steps) : double(done_) / std::max(jobs_, 1);
    const int filled = std::min(kWidth, int(frac * kWidth + 0.5));
    std::fprintf(out_, "\r[%s%s] %d/%d jobs  %.1f steps/s  %.1fs ", std::string(size_t(filled), '#').c_str(),
                 std::string(size_t(kWidth - filled), '.').c_str(), done_, jobs_, rate, secs);
  } else {
    std::fprintf(out_, "progress: %d/%d jobs done, %lld/%lld steps, %.1f steps/s, %.1fs\n", done_, jobs_, steps_,
                 total_steps, rate, secs);
  }
  std::fflush(out_);
}

}  // namespace stagecraft::cli
