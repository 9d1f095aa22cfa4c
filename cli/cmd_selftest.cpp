// `stagecraft selftest`: runs every kernel once on each device against its reference.
#include <iostream>

#include "cli/command.hpp"
#include "core/error.hpp"
#include "kernels/selftest.hpp"

using namespace stagecraft;

namespace {
int run_selftest_cmd(const std::vector<std::string>& args) {
  SC_CHECK(args.empty(), Errc::invalid_argument,
           "selftest takes no arguments (got '" << args.front() << "'); run `stagecraft selftest`");
  return stagecraft::kernels::run_selftest(std::cout) == 0 ? 0 : 1;
}
}  // namespace

STAGECRAFT_COMMAND(selftest, "", "run every kernel once on each device against its naive reference", run_selftest_cmd);
