#include "stages/model/config_value.hpp"

#include "core/error.hpp"

namespace stagecraft {

const nlohmann::json* cfg(const nlohmann::json& c, const char* key) {
  if (!c.is_object()) return nullptr;
  auto it = c.find(key);
  return it == c.end() || it->is_null() ? nullptr : &*it;
}

int cfg_int(const nlohmann::json& c, const char* key, int fallback) {
  const auto* v = cfg(c, key);
  if (!v) return fallback;
  SC_CHECK(v->is_number_integer() || (v->is_number() && v->get<double>() == static_cast<int>(v->get<double>())),
           Errc::parse, "config: \"" << key << "\" must be a whole number, got " << v->dump());
  return static_cast<int>(v->get<double>());
}

double cfg_num(const nlohmann::json& c, const char* key, double fallback) {
  const auto* v = cfg(c, key);
  if (!v) return fallback;
  SC_CHECK(v->is_number(), Errc::parse, "config: \"" << key << "\" must be a number, got " << v->dump());
  return v->get<double>();
}

bool cfg_bool(const nlohmann::json& c, const char* key, bool fallback) {
  const auto* v = cfg(c, key);
  if (!v) return fallback;
  SC_CHECK(v->is_boolean(), Errc::parse, "config: \"" << key << "\" must be true or false, got " << v->dump());
  return v->get<bool>();
}

std::string cfg_str(const nlohmann::json& c, const char* key, const std::string& fallback) {
  const auto* v = cfg(c, key);
  if (!v) return fallback;
  SC_CHECK(v->is_string(), Errc::parse, "config: \"" << key << "\" must be a string, got " << v->dump());
  return v->get<std::string>();
}

}  // namespace stagecraft
