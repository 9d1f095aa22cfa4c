// Scheduler base and factory: see scheduler.hpp.
#include "stages/schedulers/scheduler.hpp"

#include "core/error.hpp"
#include "stages/schedulers/betas.hpp"
#include "stages/schedulers/ddim.hpp"
#include "stages/schedulers/dpm_solver.hpp"
#include "stages/schedulers/flow_match_euler.hpp"

namespace stagecraft {

float Scheduler::model_timestep(int i) const {
  check_step(i);
  return static_cast<float>(timesteps_[i]);
}

void Scheduler::check_step(int i) const {
  SC_CHECK(!timesteps_.empty(), Errc::invalid_argument, name() << ": call set_timesteps before stepping");
  SC_CHECK(i >= 0 && i < num_steps(), Errc::invalid_argument,
           name() << ": step " << i << " is outside 0.." << num_steps() - 1);
}

bool scheduler_config_is_flow(const nlohmann::json& c) {
  const std::string cls = cfg_str(c, "_class_name", "");
  return cls.rfind("FlowMatch", 0) == 0 || cfg_str(c, "prediction_type", "") == "flow_prediction" ||
         cfg_bool(c, "use_flow_sigmas", false);
}

std::vector<std::string> scheduler_names() { return {"flow_match_euler", "ddim", "dpm_2m"}; }

std::unique_ptr<Scheduler> make_scheduler(const std::string& name_in, const nlohmann::json& config) {
  const bool flow = scheduler_config_is_flow(config);
  std::string name = name_in;
  if (name.empty()) {
    const std::string cls = cfg_str(config, "_class_name", "");
    if (cls == "DDIMScheduler") name = "ddim";
    else if (cls == "DPMSolverMultistepScheduler") name = "dpm_2m";
    else if (flow) name = "flow_match_euler";
    else name = "dpm_2m";  // any other noise-prediction scheduler: DPM++ 2M reads the same betas
  }
  if (name == "flow_match_euler") {
    SC_CHECK(flow, Errc::invalid_argument,
             "scheduler flow_match_euler needs a flow-matching model, but this model's scheduler config predicts \""
                 << cfg_str(config, "prediction_type", "epsilon") << "\": use ddim or dpm_2m");
    return std::make_unique<FlowMatchEulerScheduler>(config);
  }
  if (name == "ddim") return std::make_unique<DDIMScheduler>(config, flow);
  if (name == "dpm_2m") {
    nlohmann::json c = config;
    if (flow && !config.contains("use_flow_sigmas")) {
      // diffusers' recipe for DPM++ on a flow model: flow sigmas with the model's shift. A config
      // that already carries the DPM keys is taken as written, as from_config would.
      c["use_flow_sigmas"] = true;
      c["prediction_type"] = "flow_prediction";
      c["flow_shift"] = cfg_num(config, "shift", 1.0);
      c.erase("use_dynamic_shifting");
    }
    c["solver_order"] = 2;
    return std::make_unique<DPMSolverMultistepScheduler>(c);
  }
  SC_FAIL(Errc::invalid_argument, "unknown scheduler \"" << name_in << "\": use flow_match_euler, ddim or dpm_2m");
}

}  // namespace stagecraft
