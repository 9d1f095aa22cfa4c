#include "cli/args.hpp"

#include "core/error.hpp"

namespace stagecraft::cli {

// Flags may be named with or without their leading dashes ("seed" or "--seed").
static std::string bare(const std::string& flag) { return flag.rfind("--", 0) == 0 ? flag.substr(2) : flag; }

static std::set<std::string> bare_set(const std::set<std::string>& flags) {
  std::set<std::string> out;
  for (const auto& f : flags) out.insert(bare(f));
  return out;
}

static std::string accepted(const std::set<std::string>& a, const std::set<std::string>& b) {
  std::string s;
  for (const auto& f : a) s += (s.empty() ? "" : ", ") + std::string("--") + f + " VALUE";
  for (const auto& f : b) s += (s.empty() ? "" : ", ") + std::string("--") + f;
  return s.empty() ? "none" : s;
}

Args::Args(const std::vector<std::string>& argv, std::set<std::string> value_flags,
           std::set<std::string> bool_flags) {
  value_flags = bare_set(value_flags);
  bool_flags = bare_set(bool_flags);
  for (size_t i = 0; i < argv.size(); ++i) {
    const std::string& a = argv[i];
    if (a.rfind("--", 0) != 0 || a == "--") {
      positional_.push_back(a);
      continue;
    }
    std::string key = a.substr(2), value;
    bool inline_value = false;
    if (auto eq = key.find('='); eq != std::string::npos) {
      value = key.substr(eq + 1);
      key = key.substr(0, eq);
      inline_value = true;
    }
    if (value_flags.count(key)) {
      if (!inline_value) {
        SC_CHECK(i + 1 < argv.size(), Errc::invalid_argument, "--" << key << " needs a value");
        value = argv[++i];
      }
      values_[key] = value;
    } else if (bool_flags.count(key) && !inline_value) {
      bools_.insert(key);
    } else {
      SC_FAIL(Errc::invalid_argument,
              "unknown option --" << key << "; accepted: " << accepted(value_flags, bool_flags));
    }
  }
}

bool Args::has(const std::string& flag) const { return values_.count(bare(flag)) || bools_.count(bare(flag)); }

std::optional<std::string> Args::get(const std::string& flag) const {
  auto it = values_.find(bare(flag));
  if (it == values_.end()) return std::nullopt;
  return it->second;
}

std::string Args::get_or(const std::string& flag, const std::string& fallback) const {
  return get(flag).value_or(fallback);
}

long long Args::get_int(const std::string& flag, long long fallback) const {
  auto v = get(flag);
  if (!v) return fallback;
  try {
    size_t used = 0;
    long long r = std::stoll(*v, &used);
    if (used == v->size()) return r;
  } catch (const std::exception&) {
  }
  SC_FAIL(Errc::invalid_argument, "--" << flag << " wants a whole number, got '" << *v << "'");
}

double Args::get_double(const std::string& flag, double fallback) const {
  auto v = get(flag);
  if (!v) return fallback;
  try {
    size_t used = 0;
    double r = std::stod(*v, &used);
    if (used == v->size()) return r;
  } catch (const std::exception&) {
  }
  SC_FAIL(Errc::invalid_argument, "--" << flag << " wants a number, got '" << *v << "'");
}

}  // namespace stagecraft::cli
