#include "cli/command_support.hpp"

#include <filesystem>
#include <iostream>

#include "core/error.hpp"
#include "stages/spec_check.hpp"

namespace stagecraft::cli {

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

void require_output_folder(const std::string& flag, const std::string& out) {
  // Fail before minutes of compute, not after.
  const std::filesystem::path parent = std::filesystem::absolute(out).parent_path();
  SC_CHECK(std::filesystem::is_directory(parent), Errc::io,
           flag << " " << out << ": folder " << parent.string() << " does not exist; create it first");
}

}  // namespace stagecraft::cli
