// stagecraft submit: one job to a running `stagecraft serve`, its images written
// as PNG. Progress shows as a bar on a terminal and as plain lines otherwise.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <random>

#include "cli/cli11.hpp"
#include "cli/command.hpp"
#include "cli/command_support.hpp"
#include "cli/progress_display.hpp"
#include "clients/cpp/client.hpp"
#include "core/error.hpp"

namespace fs = std::filesystem;

namespace {

using namespace stagecraft;

std::string fresh_id() {
  std::random_device rd;
  char buf[32];
  std::snprintf(buf, sizeof buf, "submit-%d-%08x", int(getpid()), unsigned(rd()));
  return buf;
}

int run_submit(const std::vector<std::string>& argv) {
  CLI::App app{"Send one job to a running `stagecraft serve` and write its images.", "stagecraft submit"};
  std::string server = "tcp://127.0.0.1:5555", out = "out.png", id;
  client::SubmitFields f;
  uint64_t seed = 0;
  int64_t steps = 0, width = 0, height = 0, deadline_ms = 0;
  double guidance = -1;
  double timeout_s = 600;
  bool quiet = false;
  app.add_option("--server", server, "the server's address")->capture_default_str()->envname("STAGECRAFT_SERVER");
  app.add_option("--prompt", f.prompt, "what to draw")->required();
  app.add_option("--negative-prompt", f.negative_prompt, "what to steer away from");
  app.add_option("--out", out, "PNG to write (OUT-0.png, OUT-1.png, ... for --n > 1)")->capture_default_str();
  app.add_option("--id", id, "job id (default: a fresh one); resubmitting an id fetches that job again");
  app.add_option("--seed", seed, "seed of the first image (image i gets seed + i)")->capture_default_str();
  app.add_option("--n", f.num_images, "number of images")->capture_default_str()->check(CLI::Range(1, 1024));
  app.add_option("--steps", steps, "denoising steps (default: the pipeline's)")->check(CLI::PositiveNumber);
  app.add_option("--guidance", guidance, "classifier-free guidance scale (default: the pipeline's)");
  app.add_option("--width", width, "image width (default: the pipeline's)")->check(CLI::PositiveNumber);
  app.add_option("--height", height, "image height (default: the pipeline's)")->check(CLI::PositiveNumber);
  app.add_option("--scheduler", f.scheduler, "flow_match_euler, ddim or dpm_2m (default: the pipeline's)");
  app.add_option("--priority", f.priority, "higher runs first among jobs denoising together")->capture_default_str();
  app.add_option("--deadline-ms", deadline_ms, "fail the job if it is not done this many ms after it arrives")
      ->check(CLI::PositiveNumber);
  app.add_option("--timeout-s", timeout_s, "give up waiting after this long")->capture_default_str()->check(CLI::PositiveNumber);
  app.add_flag("--quiet", quiet, "no progress");
  if (auto rc = cli::parse(app, argv)) return *rc;
  cli::require_output_folder("--out", out);
  if (app.count("--seed")) f.seed = seed;
  if (steps) f.steps = steps;
  if (width) f.width = width;
  if (height) f.height = height;
  if (app.count("--guidance")) f.guidance = guidance;
  if (deadline_ms) f.deadline_ms = deadline_ms;
  if (id.empty()) id = fresh_id();

  client::Client c(server);
  cli::ProgressDisplay shown(int(f.num_images));
  client::Progress progress;
  if (!quiet) progress = [&](int64_t step, int64_t of, int64_t image) { shown.step(int(image), int(step), int(of)); };
  const auto t0 = std::chrono::steady_clock::now();
  client::Outcome o = c.generate(id, f, progress, std::chrono::milliseconds(int64_t(timeout_s * 1000)));
  if (!quiet) shown.finish();
  if (!o.ok()) {
    std::cerr << "error: job " << id << " failed: " << o.code << ": " << o.message;
    if (o.retry_after_ms) std::cerr << " (retry after " << *o.retry_after_ms << " ms)";
    std::cerr << "\n";
    return 1;
  }
  for (size_t i = 0; i < o.images.size(); ++i) {
    const std::string path = cli::numbered_output(out, i, o.images.size());
    std::ofstream file(path, std::ios::binary);
    file.write(o.images[i].data.data(), std::streamsize(o.images[i].data.size()));
    SC_CHECK(file.good(), Errc::io, "could not write " << path);
    std::fprintf(stderr, "wrote %s (%lldx%lld, seed %llu)\n", path.c_str(), (long long)o.images[i].width,
                 (long long)o.images[i].height, (unsigned long long)o.images[i].seed);
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::fprintf(stderr, "job %s: %zu image(s) in %.2f s\n", id.c_str(), o.images.size(), secs);
  return 0;
}

}  // namespace

STAGECRAFT_COMMAND(submit, "--prompt TEXT [--server ADDR] [--out x.png] [--help]",
                   "send a job to a running `stagecraft serve` and write its images", run_submit);
