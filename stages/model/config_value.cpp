#include "stages/model/config_value.hpp"

#include <climits>
#include <cmath>
#include <optional>

#include "core/error.hpp"
#include "core/json_brief.hpp"

namespace stagecraft {

namespace {

std::string shown(const nlohmann::json& v) { return json_brief(v); }

// `v` as an integer in [lo, hi], compared before any conversion; nullopt when it is not a whole number.
std::optional<long long> whole(const nlohmann::json& v) {
  if (v.is_number_unsigned()) {
    const uint64_t u = v.get<uint64_t>();
    return u > static_cast<uint64_t>(LLONG_MAX) ? LLONG_MAX : static_cast<long long>(u);
  }
  if (v.is_number_integer()) return v.get<long long>();
  if (v.is_number_float()) {
    const double x = v.get<double>();
    if (!std::isfinite(x) || std::floor(x) != x) return std::nullopt;
    // Saturate so the cast stays defined; the range check then refuses it.
    if (x >= 9.2e18) return LLONG_MAX;
    if (x <= -9.2e18) return LLONG_MIN;
    return static_cast<long long>(x);
  }
  return std::nullopt;
}

int checked_int(const nlohmann::json& v, const std::string& path, const std::string& key, int lo, int hi) {
  const auto i = whole(v);
  SC_CHECK(i.has_value(), Errc::parse,
           path << ": \"" << key << "\" must be a whole number, got " << shown(v) << " (allowed: " << lo << " to " << hi
                << ")");
  SC_CHECK(*i >= lo && *i <= hi, Errc::parse,
           path << ": \"" << key << "\" is " << shown(v) << ", out of range (allowed: " << lo << " to " << hi << ")");
  return static_cast<int>(*i);
}

}  // namespace

const nlohmann::json* cfg(const nlohmann::json& c, const char* key) {
  if (!c.is_object()) return nullptr;
  auto it = c.find(key);
  return it == c.end() || it->is_null() ? nullptr : &*it;
}

int cfg_int(const ConfigFile& c, const char* key, int fallback, int lo, int hi) {
  const auto* v = cfg(c.json, key);
  return v ? checked_int(*v, c.path, key, lo, hi) : fallback;
}

double cfg_num(const ConfigFile& c, const char* key, double fallback, double lo, double hi) {
  const auto* v = cfg(c.json, key);
  if (!v) return fallback;
  SC_CHECK(v->is_number() && std::isfinite(v->get<double>()), Errc::parse,
           c.path << ": \"" << key << "\" must be a finite number, got " << shown(*v));
  const double x = v->get<double>();
  SC_CHECK(x >= lo && x <= hi, Errc::parse,
           c.path << ": \"" << key << "\" is " << shown(*v) << ", out of range (allowed: " << lo << " to " << hi << ")");
  return x;
}

bool cfg_bool(const ConfigFile& c, const char* key, bool fallback) {
  const auto* v = cfg(c.json, key);
  if (!v) return fallback;
  SC_CHECK(v->is_boolean(), Errc::parse, c.path << ": \"" << key << "\" must be true or false, got " << shown(*v));
  return v->get<bool>();
}

std::string cfg_str(const ConfigFile& c, const char* key, const std::string& fallback) {
  const auto* v = cfg(c.json, key);
  if (!v) return fallback;
  SC_CHECK(v->is_string(), Errc::parse, c.path << ": \"" << key << "\" must be a string, got " << shown(*v));
  return v->get<std::string>();
}

std::vector<int> cfg_int_list(const ConfigFile& c, const char* key, const std::vector<int>& fallback, size_t min_len,
                              size_t max_len, int lo, int hi) {
  const auto* v = cfg(c.json, key);
  if (!v) return fallback;
  SC_CHECK(v->is_array() && v->size() >= min_len && v->size() <= max_len, Errc::parse,
           c.path << ": \"" << key << "\" must be a list of " << min_len << " to " << max_len << " integers, got "
                  << shown(*v));
  std::vector<int> out;
  for (size_t i = 0; i < v->size(); ++i)
    out.push_back(checked_int((*v)[i], c.path, std::string(key) + "[" + std::to_string(i) + "]", lo, hi));
  return out;
}

std::vector<std::string> cfg_str_list(const ConfigFile& c, const char* key, const std::vector<std::string>& fallback,
                                      size_t max_len) {
  const auto* v = cfg(c.json, key);
  if (!v) return fallback;
  SC_CHECK(v->is_array() && v->size() <= max_len, Errc::parse,
           c.path << ": \"" << key << "\" must be a list of at most " << max_len << " strings, got " << shown(*v));
  std::vector<std::string> out;
  for (size_t i = 0; i < v->size(); ++i) {
    SC_CHECK((*v)[i].is_string(), Errc::parse,
             c.path << ": \"" << key << "\"[" << i << "] must be a string, got " << shown((*v)[i]));
    out.push_back((*v)[i].get<std::string>());
  }
  return out;
}

int cfg_int(const nlohmann::json& c, const char* key, int fallback) {
  return cfg_int(ConfigFile{c, "config"}, key, fallback, INT_MIN, INT_MAX);
}

double cfg_num(const nlohmann::json& c, const char* key, double fallback) {
  return cfg_num(ConfigFile{c, "config"}, key, fallback, -HUGE_VAL, HUGE_VAL);
}

bool cfg_bool(const nlohmann::json& c, const char* key, bool fallback) {
  return cfg_bool(ConfigFile{c, "config"}, key, fallback);
}

std::string cfg_str(const nlohmann::json& c, const char* key, const std::string& fallback) {
  return cfg_str(ConfigFile{c, "config"}, key, fallback);
}

}  // namespace stagecraft
