#pragma once
// Reading optional values from a diffusers/transformers config.json. diffusers
// writes unset optional keys as JSON null, so null counts as absent; a value of
// the wrong type or outside its range is an Error(parse) naming the file and the
// key, never a silent default and never an out-of-range conversion (a model folder
// is untrusted input: num_layers 1e300 or 4294967296 must not reach an int).
//
//   const ConfigFile c{component.config(), component.dir() + "/config.json"};
//   const int layers = cfg_int(c, "num_layers", 28, 1, 1024);
//   const auto channels = cfg_int_list(c, "block_out_channels", {64}, 1, 8, 1, 65536);
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace stagecraft {

/// A config object and the file it came from, so every error names both.
struct ConfigFile {
  const nlohmann::json& json;
  std::string path;
};

/// The value at `key`, or nullptr when absent or null (or when the config is not an object).
const nlohmann::json* cfg(const nlohmann::json& c, const char* key);

/// An integer in [lo, hi] (a whole float such as 28.0 counts).
int cfg_int(const ConfigFile& c, const char* key, int fallback, int lo, int hi);
/// A finite number in [lo, hi].
double cfg_num(const ConfigFile& c, const char* key, double fallback, double lo, double hi);
bool cfg_bool(const ConfigFile& c, const char* key, bool fallback);
std::string cfg_str(const ConfigFile& c, const char* key, const std::string& fallback);
/// A list of min_len..max_len integers, each in [lo, hi].
std::vector<int> cfg_int_list(const ConfigFile& c, const char* key, const std::vector<int>& fallback, size_t min_len,
                              size_t max_len, int lo, int hi);
/// A list of at most max_len strings.
std::vector<std::string> cfg_str_list(const ConfigFile& c, const char* key, const std::vector<std::string>& fallback,
                                      size_t max_len);

/// Without a file name (errors say "config"): any value that fits an int, a finite double.
int cfg_int(const nlohmann::json& c, const char* key, int fallback);
double cfg_num(const nlohmann::json& c, const char* key, double fallback);
bool cfg_bool(const nlohmann::json& c, const char* key, bool fallback);
std::string cfg_str(const nlohmann::json& c, const char* key, const std::string& fallback);

}  // namespace stagecraft
