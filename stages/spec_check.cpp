#include "stages/spec_check.hpp"

#include "stages/builtin_stages.hpp"
#include "stages/stage.hpp"

namespace stagecraft {

std::vector<SpecProblem> check_stage_types(const PipelineSpec& spec) {
  register_builtin_stages();
  std::vector<SpecProblem> problems;
  auto load = [&](const std::string& path, SourceLoc at) {
    try {
      load_stage_plugin(path);
      return true;
    } catch (const Error& e) {
      problems.push_back({spec.path, at, e.what(), "a shared library exporting stagecraft_register_stages"});
      return false;
    }
  };
  for (const auto& p : spec.plugins) load(p, {});
  for (const auto& s : spec.stages) {
    if (!s.plugin.empty() && !load(s.plugin, s.loc)) continue;  // its type cannot be judged
    if (s.type.empty() || stage_type_known(s.type)) continue;
    const auto types = stage_types();
    std::string known;
    for (const auto& t : types) known += (known.empty() ? "" : ", ") + t;
    const std::string guess = closest_word(s.type, types);
    problems.push_back({spec.path, s.loc, "unknown stage type '" + s.type + "' for stage '" + s.name + "'",
                        (guess.empty() ? "" : "did you mean '" + guess + "'? ") + "one of: " + known +
                            " (or a type from a plugin: PATH)"});
  }
  return problems;
}

std::vector<SpecProblem> batching_warnings(const PipelineSpec& spec) {
  std::vector<SpecProblem> warnings;
  for (const auto& s : spec.stages) {
    const int credits = spec.credits_for(s);
    if (s.batching.max_batch <= credits) continue;
    warnings.push_back({spec.path, s.loc,
                        "warning: stage '" + s.name + "' batches up to " + std::to_string(s.batching.max_batch) +
                            " (batching.max_batch) but at most " + std::to_string(credits) +
                            " packets may be inside it at once (credits), so its batches never exceed " +
                            std::to_string(credits),
                        "set `queue_limit: " + std::to_string(s.batching.max_batch) +
                            "` or more on the stage, or raise limits.credits"});
  }
  return warnings;
}

}  // namespace stagecraft
