#pragma once
// The door every request passes before any stage sees it: the one place where a
// request's fields are checked against the pipeline's limits. The engine's submit(),
// `stagecraft run` and `stagecraft generate` (and the service, later) all call it;
// model-specific checks (size a multiple of the latent factor, scheduler known) are
// the stages' own hook, Stage::check_request (stages/stage.hpp).
//
//   Request r = with_defaults(request, spec.defaults);   // fills only unset fields
//   check_request(r, spec.limits);                       // Error(invalid_argument) naming the field
//
// "Unset" is 0 for steps, width and height, a negative finite number for guidance and
// "" for the scheduler; a negative size or step count is an error, never a default.
#include <nlohmann/json.hpp>

#include "core/packet.hpp"
#include "core/pipeline_spec.hpp"

namespace stagecraft {

/// `r` with its unset fields taken from `defaults` (a pipeline file's or a model's
/// `defaults:` map; keys steps, guidance, width, height, scheduler, negative_prompt).
/// Values that are set, including wrong ones, are kept so check_request can name them.
Request with_defaults(Request r, const nlohmann::json& defaults);

/// Throws Error(invalid_argument) with a message naming the first field out of range:
/// steps in [1, limits.max_steps] (0: still unset, left to the stages), guidance finite,
/// width and height positive (0: unset) with width x height <= limits.max_pixels, and
/// prompt and negative prompt at most limits.max_prompt_bytes long.
void check_request(const Request& r, const LimitsSpec& limits);

}  // namespace stagecraft
