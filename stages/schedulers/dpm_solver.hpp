#pragma once
// diffusers' DPMSolverMultistepScheduler, algorithm dpmsolver++ with solver_order 2
// ("DPM++ 2M"), midpoint or heun second-order term, lower_order_final, final sigma
// zero or sigma_min, and use_flow_sigmas for flow-matching models. The model output
// (epsilon, v_prediction, sample or flow_prediction) is first converted to x0.
#include "stages/schedulers/scheduler.hpp"

namespace stagecraft {

class DPMSolverMultistepScheduler : public Scheduler {
 public:
  explicit DPMSolverMultistepScheduler(const nlohmann::json& config);
  std::string name() const override { return "dpm_2m"; }
  void set_timesteps(int steps, int64_t image_seq_len = 0) override;
  Tensor step(const Tensor& model_output, int i, const Tensor& sample) override;
  std::unique_ptr<Scheduler> clone() const override {
    return std::make_unique<DPMSolverMultistepScheduler>(*this);
  }

 private:
  // (alpha_t, sigma_t) of a sigma on this schedule.
  void alpha_sigma(double sigma, double& alpha_t, double& sigma_t) const;

  int64_t num_train_ = 1000;
  std::vector<float> alphas_cumprod_;
  bool flow_sigmas_ = false;
  double flow_shift_ = 1.0;
  bool heun_ = false;
  bool lower_order_final_ = true, euler_at_final_ = false;
  bool final_sigma_min_ = false;
  double lambda_min_clipped_ = -INFINITY;
  int64_t steps_offset_ = 0;
  std::string spacing_ = "linspace";
  // Per-run state.
  Tensor prev_x0_;
  int lower_order_nums_ = 0;
  int next_step_ = 0;
};

}  // namespace stagecraft
