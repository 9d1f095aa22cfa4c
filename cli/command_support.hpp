#pragma once
// What several sub-commands do the same way: the request options, reading a pipeline
// file reporting every problem, and refusing an output path whose folder does not exist
// before any compute.
#include <cstdint>
#include <optional>
#include <string>

#include "cli/cli11.hpp"
#include "core/packet.hpp"
#include "core/pipeline_spec.hpp"

namespace stagecraft::cli {

/// --prompt, --negative-prompt, --seed, --steps, --guidance, --width, --height, --scheduler:
/// what generate and run take the same way. Ranges are left to the request validator
/// (core/request_check.hpp), so every way in refuses a bad value with the same message.
struct RequestFlags {
  std::string prompt, negative_prompt, scheduler;
  int64_t seed = 0, steps = 0, width = 0, height = 0;
  double guidance = -1.0;
  /// Adds the options; `defaults_from` says whose defaults apply ("the model's").
  void add_to(CLI::App& app, const std::string& defaults_from);
  /// Job `index`'s request: seed + index; values outside int are saturated, never wrapped,
  /// so 4294967297 steps is refused instead of becoming 1.
  Request request(int index = 0) const;
};

/// The validated spec with its stage types checked (plugins loaded), or nullopt after
/// printing every problem as FILE:LINE:COL to stderr.
std::optional<PipelineSpec> load_pipeline_or_report(const std::string& path);

/// Where image `i` of `n` goes: out.png itself for one image, else out-0.png, out-1.png, ...
std::string numbered_output(const std::string& out, size_t i, size_t n);

/// Error(io) naming `flag` and the folder when `out`'s folder does not exist.
void require_output_folder(const std::string& flag, const std::string& out);

}  // namespace stagecraft::cli
