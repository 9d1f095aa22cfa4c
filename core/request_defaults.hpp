#pragma once
// Request defaults (steps, guidance, width, height, scheduler, negative_prompt) come
// from two places: a pipeline file's `defaults:` and a model folder's stagecraft.json
// {"defaults": {...}}. Both are checked by the one function here, so a model folder
// cannot slip in a value the pipeline file would refuse (steps 0, guidance -3, size -7x13).
//
//   if (auto p = check_request_default("steps", 0)) std::cerr << p->what << " — " << p->allowed;
//   nlohmann::json d = read_model_defaults("models/tiny-shapes");   // {} when it has none
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace stagecraft {

/// steps, guidance, width, height, scheduler, negative_prompt.
const std::vector<std::string>& request_default_keys();
/// The scheduler names a default may give (those of stages/schedulers; core cannot include it).
const std::vector<std::string>& request_scheduler_names();

struct DefaultProblem {
  std::string what;     ///< e.g. "defaults.steps is 0, out of range"
  std::string allowed;  ///< e.g. "an integer from 1 to 1000"
};

/// nullopt when `value` is allowed for the default `key`, else what is wrong and what is
/// allowed. An unknown key is a problem too. Numbers must be JSON numbers (integers for
/// steps/width/height; a whole float such as 20.0 counts), strings JSON strings.
std::optional<DefaultProblem> check_request_default(const std::string& key, const nlohmann::json& value);

/// What a model folder's stagecraft.json holds for the request defaults.
struct ModelDefaults {
  std::string file;                       ///< MODEL/stagecraft.json
  nlohmann::json values = nlohmann::json::object();  ///< the accepted keys
  std::vector<DefaultProblem> problems;   ///< each refused value (or an unreadable file)
};
/// Reads and checks without throwing: values holds what passed, problems the rest.
ModelDefaults check_model_defaults(const std::string& model_dir);

/// The "defaults" object of `model_dir`/stagecraft.json with every known key checked by
/// check_request_default (other keys are ignored; the trainer records more there).
/// {} when the file is absent or has no "defaults". Error(parse) naming the file and the
/// key when the file is not JSON, "defaults" is not an object, or a value is refused.
nlohmann::json read_model_defaults(const std::string& model_dir);

}  // namespace stagecraft
