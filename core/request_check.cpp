#include "core/request_check.hpp"

#include <cmath>
#include <sstream>

#include "core/error.hpp"

namespace stagecraft {
namespace {

// A user's mistake, not a bug: the message names the field and the bound, without file:line.
[[noreturn]] void refuse(const std::string& field, const std::string& what) {
  throw Error(Errc::invalid_argument, "request field '" + field + "': " + what);
}

bool is_unset_guidance(float g) { return std::isfinite(g) && g < 0.0f; }

}  // namespace

Request with_defaults(Request r, const nlohmann::json& d) {
  if (!d.is_object()) return r;
  auto num = [&](const char* k, double fallback) {
    return d.contains(k) && d[k].is_number() ? d[k].get<double>() : fallback;
  };
  // The defaults come from a checked file, but clamp the conversion anyway: an int
  // cast of an out-of-range double is undefined behaviour.
  auto as_int = [](double v) { return std::isfinite(v) && std::abs(v) < 1e9 ? static_cast<int>(v) : -1; };
  if (r.steps == 0) r.steps = as_int(num("steps", 0));
  if (is_unset_guidance(r.guidance)) r.guidance = static_cast<float>(num("guidance", r.guidance));
  if (r.width == 0) r.width = as_int(num("width", 0));
  if (r.height == 0) r.height = as_int(num("height", 0));
  if (r.scheduler.empty() && d.contains("scheduler") && d["scheduler"].is_string())
    r.scheduler = d["scheduler"].get<std::string>();
  if (r.negative_prompt.empty() && d.contains("negative_prompt") && d["negative_prompt"].is_string())
    r.negative_prompt = d["negative_prompt"].get<std::string>();
  return r;
}

void check_request(const Request& r, const LimitsSpec& limits) {
  if (r.steps < 0 || r.steps > limits.max_steps) {
    std::ostringstream os;
    os << r.steps << " is out of range; use 1 to " << limits.max_steps
       << " (limits.max_steps of the pipeline file), or 0 for the default";
    refuse("steps", os.str());
  }
  if (!std::isfinite(r.guidance)) {
    std::ostringstream os;
    os << r.guidance << " is not a finite number; use e.g. 4.5, 1 for no classifier-free guidance, "
       << "or a negative value for the default";
    refuse("guidance", os.str());
  }
  for (const auto& [field, v] : {std::pair<const char*, int>{"width", r.width}, {"height", r.height}})
    if (v < 0) refuse(field, std::to_string(v) + " is negative; use a positive size in pixels, or 0 for the default");
  const int64_t pixels = int64_t{r.width} * int64_t{r.height};
  if (pixels > limits.max_pixels) {
    std::ostringstream os;
    os << r.width << "x" << r.height << " is " << pixels << " pixels, more than limits.max_pixels "
       << limits.max_pixels << "; ask for a smaller image or raise the limit in the pipeline file";
    refuse(r.width >= r.height ? "width" : "height", os.str());
  }
  for (const auto& [field, s] :
       {std::pair<const char*, const std::string*>{"prompt", &r.prompt}, {"negative_prompt", &r.negative_prompt}})
    if (s->size() > static_cast<size_t>(std::max(0, limits.max_prompt_bytes)))
      refuse(field, std::to_string(s->size()) + " bytes is longer than limits.max_prompt_bytes " +
                        std::to_string(limits.max_prompt_bytes) + "; shorten it or raise the limit");
}

}  // namespace stagecraft
