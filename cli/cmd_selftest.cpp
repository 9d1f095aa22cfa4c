// `stagecraft selftest`: runs every kernel once on each device against its reference.
#include <iostream>

#include "cli/cli11.hpp"
#include "cli/command.hpp"
#include "core/error.hpp"
#include "kernels/selftest.hpp"

using namespace stagecraft;

namespace {
int run_selftest_cmd(const std::vector<std::string>& args) {
  CLI::App app{"Run every kernel once on each device against its naive reference.", "stagecraft selftest"};
  if (auto rc = cli::parse(app, args)) return *rc;
  return stagecraft::kernels::run_selftest(std::cout) == 0 ? 0 : 1;
}
}  // namespace

STAGECRAFT_COMMAND(selftest, "", "run every kernel once on each device against its naive reference", run_selftest_cmd);
