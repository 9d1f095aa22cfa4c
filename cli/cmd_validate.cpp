// stagecraft validate FILE: checks a pipeline file the way the engine would read
// it (shape, ranges, graph, and that every stage type exists, loading plugins)
// and prints the resolved graph, or every problem as FILE:LINE:COL: what — allowed.
#include <algorithm>
#include <iostream>

#include "cli/cli11.hpp"
#include "cli/command.hpp"
#include "core/pipeline_spec.hpp"
#include "core/placement.hpp"
#include "stages/spec_check.hpp"

namespace {

int print_problems(const std::vector<stagecraft::SpecProblem>& problems) {
  for (const auto& p : problems) std::cerr << p.str() << "\n";
  std::cerr << problems.size() << (problems.size() == 1 ? " problem" : " problems") << " found\n";
  return 1;
}

int run_validate(const std::vector<std::string>& argv) {
  CLI::App app{"Check a pipeline file the way the engine reads it; print the resolved graph, or every problem as "
               "FILE:LINE:COL: what — allowed.",
               "stagecraft validate"};
  std::string path;
  app.add_option("FILE", path, "the pipeline file")->required();
  if (auto rc = stagecraft::cli::parse(app, argv)) return *rc;
  stagecraft::PipelineSpec spec;
  try {
    spec = stagecraft::load_pipeline_spec(path);
  } catch (const stagecraft::SpecError& e) {
    // Report the stage types of what did parse too, so one run shows every problem.
    auto problems = e.problems;
    for (auto& p : stagecraft::check_stage_types(e.partial)) problems.push_back(std::move(p));
    std::stable_sort(problems.begin(), problems.end(), [](const auto& a, const auto& b) {
      return std::pair(a.loc.line, a.loc.col) < std::pair(b.loc.line, b.loc.col);
    });
    return print_problems(problems);
  }
  if (auto problems = stagecraft::check_stage_types(spec); !problems.empty()) return print_problems(problems);
  for (const auto& w : stagecraft::batching_warnings(spec)) std::cerr << w.str() << "\n";
  for (const auto& w : stagecraft::channel_warnings(spec)) std::cerr << w.str() << "\n";
  std::cout << stagecraft::describe_pipeline(spec);
  return 0;
}

}  // namespace

STAGECRAFT_COMMAND(validate, "FILE", "check a pipeline file; print the resolved graph or every problem", run_validate);
