#include "stages/builtin_stages.hpp"

#include <mutex>

#include "stages/builtin_model/model_stages.hpp"
#include "stages/stage.hpp"
#include "stages/synthetic/synthetic.hpp"

namespace stagecraft {

void register_builtin_stages() {
  static std::once_flag once;
  std::call_once(once, [] {
    register_stage_type("sleep", [] { return std::make_unique<SleepStage>(); });
    register_stage_type("spin", [] { return std::make_unique<SpinStage>(); });
    register_stage_type("synthetic_denoiser", [] { return std::make_unique<SyntheticDenoiserStage>(); });
    register_model_stages();  // clip_text_encoder, pixart_denoiser, vae_decoder, postprocess
  });
}

}  // namespace stagecraft
