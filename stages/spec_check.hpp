#pragma once
// The stage-layer half of pipeline validation: core/pipeline_spec.hpp checks a
// file's shape, this checks its stage types against the registry. It loads the
// file's plugins (top-level `plugins:` and each stage's `plugin:`) and the
// built-in types first, so the answer is what the engine would see.
//
//   PipelineSpec spec = load_pipeline_spec(path);      // throws SpecError
//   auto problems = check_stage_types(spec);           // empty when every type exists
//   for (auto& p : problems) std::cerr << p.str() << "\n";
#include <vector>

#include "core/pipeline_spec.hpp"

namespace stagecraft {

/// One problem per plugin that fails to load and per stage whose type is unknown
/// (naming the known types), located at the stage's entry in the file.
std::vector<SpecProblem> check_stage_types(const PipelineSpec& spec);

/// Settings that are valid but defeat each other, as warnings (the file still runs): a
/// stage whose batching.max_batch exceeds its credits can never fill a batch, because
/// at most `credits` packets are inside it at once.
std::vector<SpecProblem> batching_warnings(const PipelineSpec& spec);

}  // namespace stagecraft
