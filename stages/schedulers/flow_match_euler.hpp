#pragma once
// diffusers' FlowMatchEulerDiscreteScheduler: sigmas from 1 toward 0 (shifted by
// `shift`, or by `mu` with use_dynamic_shifting), the model predicts the velocity
// v = noise - x0, and x_{i+1} = x_i + (sigma_{i+1} - sigma_i) v. Timesteps = sigma * 1000.
#include "stages/schedulers/scheduler.hpp"

namespace stagecraft {

class FlowMatchEulerScheduler : public Scheduler {
 public:
  explicit FlowMatchEulerScheduler(const nlohmann::json& config);
  std::string name() const override { return "flow_match_euler"; }
  void set_timesteps(int steps, int64_t image_seq_len = 0) override;
  Tensor step(const Tensor& model_output, int i, const Tensor& sample) override;
  std::unique_ptr<Scheduler> clone() const override { return std::make_unique<FlowMatchEulerScheduler>(*this); }

 private:
  int64_t num_train_ = 1000;
  double shift_ = 1.0;
  bool dynamic_ = false;
  double base_shift_ = 0.5, max_shift_ = 1.15;
  double base_seq_ = 256, max_seq_ = 4096;
  double shift_terminal_ = 0.0;  // 0 = off
  bool linear_time_shift_ = false;
  double sigma_max_ = 1.0, sigma_min_ = 0.0;
};

}  // namespace stagecraft
