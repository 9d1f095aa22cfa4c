#pragma once
// diffusers' DDIMScheduler with eta = 0 (deterministic): predicts x0 and the noise
// from the model output (epsilon, v_prediction or sample), optionally clips x0, and
// moves to the previous timestep: x_prev = sqrt(abar_prev) x0 + sqrt(1 - abar_prev) eps.
// For a flow-matching model (flow_prediction) the same update runs on the flow
// schedule, where alpha = 1 - sigma and sigma = sigma: x0 = x - sigma v, eps = x + (1 - sigma) v.
#include "stages/schedulers/flow_match_euler.hpp"
#include "stages/schedulers/scheduler.hpp"

namespace stagecraft {

class DDIMScheduler : public Scheduler {
 public:
  /// `flow`: configure for a flow-matching model from its FlowMatchEuler config.
  DDIMScheduler(const nlohmann::json& config, bool flow);
  std::string name() const override { return "ddim"; }
  void set_timesteps(int steps, int64_t image_seq_len = 0) override;
  Tensor step(const Tensor& model_output, int i, const Tensor& sample) override;
  std::unique_ptr<Scheduler> clone() const override { return std::make_unique<DDIMScheduler>(*this); }

  /// alphas_cumprod (beta schedules only), for tests.
  const std::vector<float>& alphas_cumprod() const { return alphas_cumprod_; }

 private:
  bool flow_ = false;
  nlohmann::json flow_config_;
  int64_t num_train_ = 1000;
  std::vector<float> alphas_cumprod_;
  float final_alpha_cumprod_ = 1.0f;
  bool clip_sample_ = true;
  float clip_range_ = 1.0f;
  int64_t steps_offset_ = 0;
  std::string spacing_ = "leading";
  int inference_steps_ = 0;
};

}  // namespace stagecraft
