#pragma once
// Shared by the text, scheduler and pipeline tests: one random `tiny` model per test
// executable, written by tools/reference.py, and a runner that returns the script's
// JSON answer. Builds on the temp-dir and reference helpers of test_pixart_vae_support.hpp.
#include <doctest/doctest.h>

#include <fstream>
#include <memory>
#include <sstream>
#include <string>

#include <nlohmann/json.hpp>

#include "test_pixart_vae_support.hpp"

namespace sc_test {

/// Runs reference.py `args`; returns the JSON on the last line of its stdout (fails the test on error).
inline nlohmann::json reference_json(const std::string& args, const TempDir& tmp) {
  const std::string out = tmp / "reference.stdout", err = tmp / "reference.stderr";
  const std::string cmd = std::string(kPython) + " " + reference_script() + " " + args + " >" + out + " 2>" + err;
  const int rc = std::system(cmd.c_str());
  auto slurp = [](const std::string& p) {
    std::ifstream in(p);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  };
  if (rc != 0) FAIL("reference.py failed (" << rc << "): " << cmd << "\n" << slurp(err));
  std::istringstream lines(slurp(out));
  std::string line, last;
  while (std::getline(lines, line))
    if (!line.empty()) last = line;
  return nlohmann::json::parse(last);
}

/// Quotes `s` for /bin/sh.
inline std::string shell_quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

/// The `tiny` random model (reference.py random-model --preset tiny --seed 3). ctest runs each
/// case in its own process, so the folder is cached in the build tree, keyed by reference.py's
/// size and mtime, and published with an atomic rename. Returns "" when torch is missing.
inline const std::string& tiny_model_dir() {
  static std::string path;
  if (!path.empty() || !torch_missing_reason().empty()) return path;
  std::error_code ec;
  const auto script = fs::path(reference_script());
  const auto stamp = std::to_string(fs::file_size(script, ec)) + "-" +
                     std::to_string(fs::last_write_time(script, ec).time_since_epoch().count());
  const fs::path cache = fs::path(STAGECRAFT_BINARY_DIR) / "test-models";
  const fs::path final_dir = cache / ("tiny-s3-" + stamp);
  if (!fs::exists(final_dir / "model_index.json")) {
    fs::create_directories(cache, ec);
    TempDir tmp;
    run_reference("random-model --preset tiny --seed 3 --out " + (tmp / "tiny"), tmp);
    fs::rename(tmp.path / "tiny", final_dir, ec);  // another process may have won the race: fine
  }
  REQUIRE(fs::exists(final_dir / "model_index.json"));
  path = final_dir.string();
  return path;
}

#define SC_SKIP_WITHOUT_TORCH()                                        \
  do {                                                                 \
    if (!sc_test::torch_missing_reason().empty()) {                    \
      MESSAGE("skipped: " << sc_test::torch_missing_reason());         \
      return;                                                          \
    }                                                                  \
  } while (0)

}  // namespace sc_test
