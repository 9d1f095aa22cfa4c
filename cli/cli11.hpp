#pragma once
// Sub-commands parse their options with CLI11 (Debian's libcli11-dev): every
// command answers --help, option types and ranges are checked in one place,
// and options may fall back to environment variables (->envname()).
//
//   CLI::App app{"stagecraft submit: send one job to a running server", "stagecraft submit"};
//   std::string server = "tcp://127.0.0.1:5555";
//   app.add_option("--server", server, "the server's address")->envname("STAGECRAFT_SERVER");
//   if (auto rc = cli::parse(app, args)) return *rc;   // --help printed, or a usage error
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

namespace stagecraft::cli {

/// Parses `args` (the command's arguments, program and command name excluded). Returns an
/// exit code when the command should stop now: 0 after --help, 2 after a usage error
/// (printed with the hint to run --help).
inline std::optional<int> parse(CLI::App& app, const std::vector<std::string>& args) {
  // An option given twice takes its last value, as in most tools (scripts append overrides).
  for (CLI::Option* o : app.get_options())
    if (o->get_expected_min() > 0 || o->get_expected_max() > 0) o->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  std::vector<std::string> reversed(args.rbegin(), args.rend());  // CLI11 takes them reversed
  try {
    app.parse(reversed);
  } catch (const CLI::CallForHelp& e) {
    std::cout << app.help();
    return 0;
  } catch (const CLI::ParseError& e) {
    std::cerr << app.get_name() << ": " << e.what() << "\nrun '" << app.get_name() << " --help' for the options\n";
    return 2;
  }
  return std::nullopt;
}

}  // namespace stagecraft::cli
