#pragma once
// The `stagecraft` binary is a table of sub-commands. Each lives in its own
// cli/cmd_<name>.cpp and registers itself:
//
//   static int run_validate(const std::vector<std::string>& args);
//   STAGECRAFT_COMMAND(validate, "FILE", "check a pipeline file and print the resolved graph", run_validate);
//
// `args` excludes the program and command names. Return the process exit code;
// a stagecraft::Error escaping the function is printed as "error: ..." with exit 1.
#include <functional>
#include <string>
#include <vector>

namespace stagecraft::cli {

using CommandFn = std::function<int(const std::vector<std::string>& args)>;

struct Command {
  std::string name, usage, summary;
  CommandFn fn;
};

std::vector<Command>& command_table();

struct CommandRegistrar {
  CommandRegistrar(std::string name, std::string usage, std::string summary, CommandFn fn) {
    command_table().push_back({std::move(name), std::move(usage), std::move(summary), std::move(fn)});
  }
};

}  // namespace stagecraft::cli

#define STAGECRAFT_COMMAND(name, usage, summary, fn) \
  static ::stagecraft::cli::CommandRegistrar sc_command_##name##_(#name, usage, summary, fn)
