// stagecraft: the command-line entry point. Sub-commands register themselves
// (cli/command.hpp); this file only finds and runs one.
#include <algorithm>
#include <cstdio>
#include <iostream>

#include "cli/command.hpp"
#include "core/error.hpp"

namespace stagecraft::cli {
std::vector<Command>& command_table() {
  static std::vector<Command> table;
  return table;
}
}  // namespace stagecraft::cli

static void usage(std::ostream& os) {
  auto table = stagecraft::cli::command_table();
  std::sort(table.begin(), table.end(), [](auto& a, auto& b) { return a.name < b.name; });
  os << "usage: stagecraft COMMAND [ARGS]\n\ncommands:\n";
  for (const auto& c : table) os << "  " << c.name << " " << c.usage << "\n      " << c.summary << "\n";
}

int main(int argc, char** argv) {
  if (argc < 2 || std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h" ||
      std::string(argv[1]) == "help") {
    usage(argc < 2 ? std::cerr : std::cout);
    return argc < 2 ? 2 : 0;
  }
  const std::string name = argv[1];
  for (const auto& c : stagecraft::cli::command_table()) {
    if (c.name != name) continue;
    try {
      return c.fn(std::vector<std::string>(argv + 2, argv + argc));
    } catch (const stagecraft::Error& e) {
      std::cerr << "error: " << e.what() << "\n";
      return 1;
    } catch (const std::exception& e) {
      std::cerr << "error: " << e.what() << "\n";
      return 1;
    }
  }
  std::cerr << "stagecraft: unknown command '" << name << "'\n\n";
  usage(std::cerr);
  return 2;
}
