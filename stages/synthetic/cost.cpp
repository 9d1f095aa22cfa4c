#include <cmath>

#include "core/error.hpp"
#include "stages/synthetic/synthetic.hpp"

namespace stagecraft {

SyntheticCost SyntheticCost::from_params(const nlohmann::json& params, const std::string& stage) {
  SyntheticCost c;
  if (!params.is_object() || !params.contains("cost")) return c;
  const auto& j = params["cost"];
  SC_CHECK(j.is_object(), Errc::invalid_argument,
           "stage '" << stage << "': cost must be a map like {per_batch_ms: 10, per_item_ms: 0}, got " << j.dump());
  for (const auto& [key, v] : j.items()) {
    SC_CHECK(key == "per_batch_ms" || key == "per_item_ms", Errc::invalid_argument,
             "stage '" << stage << "': unknown key '" << key << "' in cost; use per_batch_ms and per_item_ms");
    SC_CHECK(v.is_number() && std::isfinite(v.get<double>()) && v.get<double>() >= 0, Errc::invalid_argument,
             "stage '" << stage << "': cost." << key << " must be a number of milliseconds >= 0, got " << v.dump());
    (key == "per_batch_ms" ? c.per_batch_ms : c.per_item_ms) = v.get<double>();
  }
  return c;
}

std::chrono::nanoseconds SyntheticCost::of_batch(size_t batch_size) const {
  const double ms = per_batch_ms + per_item_ms * static_cast<double>(batch_size);
  return std::chrono::nanoseconds(static_cast<int64_t>(std::llround(ms * 1e6)));
}

}  // namespace stagecraft
