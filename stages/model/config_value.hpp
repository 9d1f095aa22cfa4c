#pragma once
// Reading optional values from a diffusers/transformers config.json. diffusers
// writes unset optional keys as JSON null, so null counts as absent; a value of
// the wrong type is an Error(parse) naming the key, never a silent default.
//
//   const int layers = cfg_int(component.config(), "num_layers", 28);
#include <string>

#include <nlohmann/json.hpp>

namespace stagecraft {

/// The value at `key`, or nullptr when absent or null.
const nlohmann::json* cfg(const nlohmann::json& c, const char* key);
int cfg_int(const nlohmann::json& c, const char* key, int fallback);
double cfg_num(const nlohmann::json& c, const char* key, double fallback);
bool cfg_bool(const nlohmann::json& c, const char* key, bool fallback);
std::string cfg_str(const nlohmann::json& c, const char* key, const std::string& fallback);

}  // namespace stagecraft
