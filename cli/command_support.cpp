#include "cli/command_support.hpp"

#include <algorithm>
#include <filesystem>
#include <iostream>
#include <limits>

#include "core/error.hpp"
#include "stages/spec_check.hpp"

namespace stagecraft::cli {

namespace {
int saturate_int(int64_t v) {
  return static_cast<int>(std::clamp<int64_t>(v, std::numeric_limits<int>::min(), std::numeric_limits<int>::max()));
}
}  // namespace

void RequestFlags::add_to(CLI::App& app, const std::string& defaults_from) {
  const std::string dflt = " (default: " + defaults_from + ")";
  app.add_option("--prompt", prompt, "what to draw")->required();
  app.add_option("--negative-prompt", negative_prompt, "what to steer away from");
  app.add_option("--seed", seed, "seed of the (first) image's noise")->capture_default_str()->check(
      CLI::NonNegativeNumber);
  app.add_option("--steps", steps, "denoising steps" + dflt);
  app.add_option("--guidance", guidance, "classifier-free guidance scale" + dflt);
  app.add_option("--scheduler", scheduler, "flow_match_euler, ddim or dpm_2m" + dflt);
  app.add_option("--width", width, "image width" + dflt);
  app.add_option("--height", height, "image height" + dflt);
}

Request RequestFlags::request(int index) const {
  Request r;
  r.prompt = prompt;
  r.negative_prompt = negative_prompt;
  r.seed = static_cast<uint64_t>(seed) + static_cast<uint64_t>(index);
  r.steps = saturate_int(steps);
  r.guidance = static_cast<float>(guidance);
  r.width = saturate_int(width);
  r.height = saturate_int(height);
  r.scheduler = scheduler;
  return r;
}

std::optional<PipelineSpec> load_pipeline_or_report(const std::string& path) {
  PipelineSpec spec;
  try {
    spec = load_pipeline_spec(path);
  } catch (const SpecError& e) {
    for (const auto& p : e.problems) std::cerr << p.str() << "\n";
    return std::nullopt;
  }
  if (auto problems = check_stage_types(spec); !problems.empty()) {
    for (const auto& p : problems) std::cerr << p.str() << "\n";
    return std::nullopt;
  }
  return spec;
}

std::string numbered_output(const std::string& out, size_t i, size_t n) {
  if (n == 1) return out;
  const std::filesystem::path p(out);
  return (p.parent_path() / (p.stem().string() + "-" + std::to_string(i) + p.extension().string())).string();
}

void require_output_folder(const std::string& flag, const std::string& out) {
  // Fail before minutes of compute, not after.
  const std::filesystem::path parent = std::filesystem::absolute(out).parent_path();
  SC_CHECK(std::filesystem::is_directory(parent), Errc::io,
           flag << " " << out << ": folder " << parent.string() << " does not exist; create it first");
}

}  // namespace stagecraft::cli
