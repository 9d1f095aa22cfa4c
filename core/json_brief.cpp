#include "core/json_brief.hpp"

namespace stagecraft {

std::string json_brief(const nlohmann::json& v) {
  constexpr size_t kMax = 80;
  if (v.is_array()) {
    if (v.empty()) return "[]";
    // A short list of scalars reads best as itself: [32, "64"].
    bool flat = v.size() <= 8;
    for (const auto& e : v) flat = flat && !e.is_structured();
    if (flat) {
      std::string s = v.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
      if (s.size() <= kMax) return s;
    }
    return "a list of " + std::to_string(v.size()) + " values";
  }
  if (v.is_object()) return v.empty() ? "{}" : "an object with " + std::to_string(v.size()) + " keys";
  std::string s = v.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  if (s.size() > kMax) {
    size_t cut = kMax - 4;
    while (cut > 0 && (static_cast<unsigned char>(s[cut]) & 0xC0) == 0x80) --cut;  // whole UTF-8 characters
    s = s.substr(0, cut) + "...\"";
  }
  return s;
}

}  // namespace stagecraft
