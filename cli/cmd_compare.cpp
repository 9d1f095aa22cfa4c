// `stagecraft compare DIR_A DIR_B [--atol A] [--rtol R]`: where, if anywhere,
// two stage dumps (docs/numerics.md) part ways. Exit 0 when every shared
// tensor is within tolerance, 1 otherwise, with the first divergence named.
#include <cstdio>
#include <iostream>

#include "cli/cli11.hpp"
#include "cli/command.hpp"
#include "core/dump.hpp"
#include "core/error.hpp"

namespace stagecraft::cli {

static std::string index_str(const std::vector<int64_t>& idx) {
  std::string s = "[";
  for (size_t i = 0; i < idx.size(); ++i) s += (i ? ", " : "") + std::to_string(idx[i]);
  return s + "]";
}

static int run_compare(const std::vector<std::string>& argv) {
  CLI::App app{"Compare two stage dumps (docs/numerics.md) tensor by tensor and name the first divergence.",
               "stagecraft compare"};
  std::string a, b;
  double atol = 1e-3, rtol = 1e-3;
  app.add_option("DIR_A", a, "the first dump")->required();
  app.add_option("DIR_B", b, "the second dump")->required();
  app.add_option("--atol", atol, "absolute tolerance")->capture_default_str()->check(CLI::NonNegativeNumber);
  app.add_option("--rtol", rtol, "relative tolerance")->capture_default_str()->check(CLI::NonNegativeNumber);
  if (auto rc = parse(app, argv)) return *rc;
  const DumpComparison cmp = compare_dumps(a, b, atol, rtol);

  std::printf("%-12s %-28s %-18s %12s %12s  %s\n", "stage", "tensor", "shape", "max_abs", "max_rel", "worst index");
  for (const auto& d : cmp.diffs) {
    if (!d.problem.empty()) {
      std::printf("%-12s %-28s %-18s %s  MISMATCH\n", d.file.c_str(), d.name.c_str(), shape_str(d.shape).c_str(),
                  d.problem.c_str());
      continue;
    }
    std::printf("%-12s %-28s %-18s %12.4g %12.4g  %s%s\n", d.file.c_str(), d.name.c_str(),
                shape_str(d.shape).c_str(), d.max_abs, d.max_rel, index_str(d.worst_index).c_str(),
                d.within_tolerance ? "" : "  EXCEEDS");
  }
  for (const auto& n : cmp.only_in_a) std::printf("only in %s: %s\n", a.c_str(), n.c_str());
  for (const auto& n : cmp.only_in_b) std::printf("only in %s: %s\n", b.c_str(), n.c_str());
  SC_CHECK(!cmp.diffs.empty(), Errc::not_found,
           "the two dumps share no tensor names; check that both use the names of docs/numerics.md");

  if (const TensorDiff* d = cmp.first_divergence()) {
    if (!d->problem.empty())
      std::printf("first divergence: %s/%s: %s\n", d->file.c_str(), d->name.c_str(), d->problem.c_str());
    else
      std::printf("first divergence: %s/%s at %s: %.9g vs %.9g (abs %.4g > atol %.3g + rtol %.3g * |b|)\n",
                  d->file.c_str(), d->name.c_str(), index_str(d->worst_index).c_str(), d->a_at_worst,
                  d->b_at_worst, d->max_abs, atol, rtol);
    return 1;
  }
  std::printf("all %zu shared tensors within atol %.3g, rtol %.3g\n", cmp.diffs.size(), atol, rtol);
  return 0;
}

STAGECRAFT_COMMAND(compare, "DIR_A DIR_B [--atol A] [--rtol R]",
                   "compare two stage dumps tensor by tensor and name the first divergence", run_compare);

}  // namespace stagecraft::cli
