#include "core/request_defaults.hpp"

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/error.hpp"
#include "core/json_brief.hpp"

namespace stagecraft {
namespace fs = std::filesystem;

namespace {

constexpr int64_t kMaxSteps = 1000;
constexpr int64_t kMaxSide = 1 << 16;
constexpr size_t kMaxNegativePromptBytes = 1 << 16;

std::string join(const std::vector<std::string>& v) {
  std::string out;
  for (size_t i = 0; i < v.size(); ++i) out += (i ? ", " : "") + v[i];
  return out;
}

// The value as an integer when it is a JSON integer or a whole float in int64 range.
std::optional<int64_t> whole(const nlohmann::json& v) {
  if (v.is_number_integer()) {
    if (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)) return INT64_MAX;
    return v.get<int64_t>();
  }
  if (v.is_number_float()) {
    const double x = v.get<double>();
    // 2^63 is the first double past int64; comparisons on doubles keep the cast defined.
    if (std::isfinite(x) && std::floor(x) == x && x >= -9.2e18 && x <= 9.2e18) return static_cast<int64_t>(x);
  }
  return std::nullopt;
}

// Strings in single quotes, as the pipeline file's problems quote YAML values.
std::string shown(const nlohmann::json& v) {
  if (!v.is_string()) return json_brief(v);
  std::string s = v.get<std::string>();
  if (s.size() > 80) {
    size_t cut = 77;
    while (cut > 0 && (static_cast<unsigned char>(s[cut]) & 0xC0) == 0x80) --cut;  // whole UTF-8 characters
    s = s.substr(0, cut) + "...";
  }
  return "'" + s + "'";
}

}  // namespace

const std::vector<std::string>& request_default_keys() {
  static const std::vector<std::string> keys = {"steps", "guidance", "width", "height", "scheduler", "negative_prompt"};
  return keys;
}

const std::vector<std::string>& request_scheduler_names() {
  static const std::vector<std::string> names = {"flow_match_euler", "ddim", "dpm_2m"};
  return names;
}

std::optional<DefaultProblem> check_request_default(const std::string& key, const nlohmann::json& value) {
  const std::string what = "defaults." + key;
  if (key == "steps") {
    const std::string allowed = "an integer from 1 to " + std::to_string(kMaxSteps);
    const auto i = whole(value);
    if (!i) return DefaultProblem{what + " must be an integer, got " + shown(value), allowed};
    if (*i < 1 || *i > kMaxSteps) return DefaultProblem{what + " is " + std::to_string(*i) + ", out of range", allowed};
    return std::nullopt;
  }
  if (key == "guidance") {
    const std::string allowed = "a number >= 0 (1 disables classifier-free guidance)";
    if (!value.is_number() || !std::isfinite(value.get<double>()))
      return DefaultProblem{what + " must be a finite number, got " + shown(value), allowed};
    if (value.get<double>() < 0) {
      std::ostringstream os;
      os << what << " is " << value.get<double>() << ", out of range";
      return DefaultProblem{os.str(), allowed};
    }
    return std::nullopt;
  }
  if (key == "width" || key == "height") {
    const std::string allowed = "a positive multiple of 8 (the VAE's scale), at most " + std::to_string(kMaxSide);
    const auto i = whole(value);
    if (!i) return DefaultProblem{what + " must be an integer, got " + shown(value), allowed};
    if (*i < 1 || *i > kMaxSide) return DefaultProblem{what + " is " + std::to_string(*i) + ", out of range", allowed};
    if (*i % 8 != 0) return DefaultProblem{what + " is " + std::to_string(*i) + ", not a multiple of 8", allowed};
    return std::nullopt;
  }
  if (key == "scheduler") {
    const std::string allowed = "one of: " + join(request_scheduler_names());
    if (!value.is_string() || value.get<std::string>().empty())
      return DefaultProblem{what + " must be a non-empty string, got " + shown(value), allowed};
    const std::string s = value.get<std::string>();
    for (const auto& n : request_scheduler_names())
      if (s == n) return std::nullopt;
    return DefaultProblem{"unknown scheduler " + shown(value), allowed};
  }
  if (key == "negative_prompt") {
    const std::string allowed = "a string of at most " + std::to_string(kMaxNegativePromptBytes) + " bytes";
    if (!value.is_string()) return DefaultProblem{what + " must be a string, got " + shown(value), allowed};
    if (value.get_ref<const std::string&>().size() > kMaxNegativePromptBytes)
      return DefaultProblem{what + " is " + std::to_string(value.get_ref<const std::string&>().size()) + " bytes long",
                            allowed};
    return std::nullopt;
  }
  return DefaultProblem{"unknown key '" + key + "' in defaults", "one of: " + join(request_default_keys())};
}

ModelDefaults check_model_defaults(const std::string& model_dir) {
  ModelDefaults out;
  const fs::path path = fs::path(model_dir) / "stagecraft.json";
  out.file = path.string();
  std::error_code ec;
  if (model_dir.empty() || !fs::exists(path, ec)) return out;
  std::ifstream in(path);
  if (!in.good()) {
    out.problems.push_back({"cannot read the file", "a readable JSON file"});
    return out;
  }
  if (const auto bytes = fs::file_size(path, ec); !ec && bytes > (64u << 20)) {
    out.problems.push_back({"the file is " + std::to_string(bytes) + " bytes", "at most 64 MiB"});
    return out;
  }
  nlohmann::json m;
  try {
    m = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    out.problems.push_back({std::string("not valid JSON (") + e.what() + ")", "a JSON object"});
    return out;
  }
  if (!m.is_object() || !m.contains("defaults")) return out;
  const nlohmann::json& d = m["defaults"];
  if (!d.is_object()) {
    out.problems.push_back({"\"defaults\" must be an object, got " + shown(d),
                            "e.g. {\"steps\": 20, \"guidance\": 4.5, \"width\": 512, \"height\": 512}"});
    return out;
  }
  for (const auto& key : request_default_keys()) {
    auto it = d.find(key);
    if (it == d.end() || it->is_null()) continue;
    if (auto p = check_request_default(key, *it)) {
      out.problems.push_back(std::move(*p));
      continue;
    }
    // Whole floats (20.0) become integers, so readers may take them as int.
    const bool integral = key == "steps" || key == "width" || key == "height";
    out.values[key] = integral ? nlohmann::json(*whole(*it)) : *it;
  }
  return out;
}

nlohmann::json read_model_defaults(const std::string& model_dir) {
  ModelDefaults m = check_model_defaults(model_dir);
  if (!m.problems.empty()) {
    const DefaultProblem& p = m.problems.front();
    SC_FAIL(Errc::parse, m.file << ": " << p.what << " \u2014 " << p.allowed);
  }
  return std::move(m.values);
}

}  // namespace stagecraft
