#pragma once
// What several sub-commands do the same way: read a pipeline file reporting every
// problem, and refuse an output path whose folder does not exist before any compute.
#include <optional>
#include <string>

#include "core/pipeline_spec.hpp"

namespace stagecraft::cli {

/// The validated spec with its stage types checked (plugins loaded), or nullopt after
/// printing every problem as FILE:LINE:COL to stderr.
std::optional<PipelineSpec> load_pipeline_or_report(const std::string& path);

/// Error(io) naming `flag` and the folder when `out`'s folder does not exist.
void require_output_folder(const std::string& flag, const std::string& out);

}  // namespace stagecraft::cli
