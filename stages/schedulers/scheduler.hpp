#pragma once
// Diffusion schedulers as diffusers computes them: FlowMatchEulerDiscreteScheduler,
// DDIMScheduler (eta = 0) and DPMSolverMultistepScheduler (dpmsolver++, order 2),
// configured from a diffusers scheduler_config.json. Timesteps and sigmas follow
// diffusers' arithmetic (numpy float64 where it uses numpy, float32 where it uses
// torch) so they equal diffusers' to float rounding; tensor updates use kernels/ops.hpp.
//
// A Scheduler object holds the state of one denoising run (DPM keeps the previous
// model output), so each job owns its own (clone() a configured one).
//
//   auto s = make_scheduler("dpm_2m", read_json_file("models/tiny-shapes/scheduler/scheduler_config.json"));
//   s->set_timesteps(20);
//   for (int i = 0; i < s->num_steps(); ++i) {
//     Tensor eps = model(latents, s->model_timestep(i));
//     latents = s->step(eps, i, latents);
//   }
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/tensor.hpp"

namespace stagecraft {

class Scheduler {
 public:
  virtual ~Scheduler() = default;
  /// "flow_match_euler", "ddim" or "dpm_2m".
  virtual std::string name() const = 0;
  /// Prepares `steps` denoising steps. `image_seq_len` (latent tokens) matters only to
  /// flow-match configs with use_dynamic_shifting.
  virtual void set_timesteps(int steps, int64_t image_seq_len = 0) = 0;
  /// The step update: model output at step i (0-based, in order) and the current sample -> next sample.
  virtual Tensor step(const Tensor& model_output, int i, const Tensor& sample) = 0;
  virtual std::unique_ptr<Scheduler> clone() const = 0;

  int num_steps() const { return static_cast<int>(timesteps_.size()); }
  /// diffusers' scheduler.timesteps (integers for DDIM/DPM, floats for flow match).
  const std::vector<double>& timesteps() const { return timesteps_; }
  /// diffusers' scheduler.sigmas (num_steps + 1 entries; empty for DDIM, which has none).
  const std::vector<double>& sigmas() const { return sigmas_; }
  /// The timestep value the denoiser is given at step i.
  float model_timestep(int i) const;
  /// Initial noise is scaled by this (1 for all three schedulers here).
  float init_noise_sigma() const { return 1.0f; }
  /// "epsilon", "v_prediction", "sample" or "flow_prediction".
  const std::string& prediction_type() const { return prediction_type_; }

 protected:
  void check_step(int i) const;
  std::vector<double> timesteps_;
  std::vector<double> sigmas_;
  std::string prediction_type_ = "epsilon";
};

/// True when `config` describes a flow-matching model (FlowMatch* class, flow_prediction, or use_flow_sigmas).
bool scheduler_config_is_flow(const nlohmann::json& config);

/// Builds scheduler `name` ("flow_match_euler", "ddim", "dpm_2m"; "" = the config's own
/// class) for a model trained with `config` (its scheduler/scheduler_config.json). For a
/// flow-matching model, ddim and dpm_2m are configured for flow prediction on the same
/// sigma schedule (DPM: use_flow_sigmas with flow_shift = shift, as diffusers does); a
/// noise-prediction model cannot use flow_match_euler (Error saying which to use).
std::unique_ptr<Scheduler> make_scheduler(const std::string& name, const nlohmann::json& config);

/// The names make_scheduler accepts.
std::vector<std::string> scheduler_names();

}  // namespace stagecraft
