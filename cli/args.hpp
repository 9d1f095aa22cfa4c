#pragma once
// Minimal flag parsing shared by the sub-commands: `--key value`, `--key=value`,
// and boolean `--flag`. Unknown flags are errors that list the accepted ones.
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace stagecraft::cli {

class Args {
 public:
  /// `value_flags` take a value, `bool_flags` do not; everything else positional.
  /// Flag names may be given with or without the leading "--".
  Args(const std::vector<std::string>& argv, std::set<std::string> value_flags,
       std::set<std::string> bool_flags = {});
  bool has(const std::string& flag) const;
  std::optional<std::string> get(const std::string& flag) const;
  std::string get_or(const std::string& flag, const std::string& fallback) const;
  long long get_int(const std::string& flag, long long fallback) const;
  double get_double(const std::string& flag, double fallback) const;
  const std::vector<std::string>& positional() const { return positional_; }

 private:
  std::map<std::string, std::string> values_;
  std::set<std::string> bools_;
  std::vector<std::string> positional_;
};

}  // namespace stagecraft::cli
