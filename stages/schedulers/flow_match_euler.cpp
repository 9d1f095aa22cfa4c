// FlowMatchEulerScheduler: see flow_match_euler.hpp.
#include "stages/schedulers/flow_match_euler.hpp"

#include <cmath>

#include "core/error.hpp"
#include "kernels/ops.hpp"
#include "stages/schedulers/betas.hpp"

namespace stagecraft {

using namespace sched;

FlowMatchEulerScheduler::FlowMatchEulerScheduler(const nlohmann::json& c) {
  prediction_type_ = "flow_prediction";
  num_train_ = cfg_int(c, "num_train_timesteps", 1000);
  shift_ = cfg_num(c, "shift", 1.0);
  dynamic_ = cfg_bool(c, "use_dynamic_shifting", false);
  base_shift_ = cfg_num(c, "base_shift", 0.5);
  max_shift_ = cfg_num(c, "max_shift", 1.15);
  base_seq_ = cfg_num(c, "base_image_seq_len", 256);
  max_seq_ = cfg_num(c, "max_image_seq_len", 4096);
  shift_terminal_ = cfg_num(c, "shift_terminal", 0.0);
  const std::string tst = cfg_str(c, "time_shift_type", "exponential");
  SC_CHECK(tst == "exponential" || tst == "linear", Errc::unsupported,
           "scheduler config: time_shift_type \"" << tst << "\" is not supported (exponential, linear)");
  linear_time_shift_ = tst == "linear";
  for (const char* k : {"use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas", "invert_sigmas",
                        "stochastic_sampling"})
    SC_CHECK(!cfg_bool(c, k, false), Errc::unsupported,
             "scheduler config: FlowMatchEulerDiscreteScheduler with " << k << " = true is not supported");
  SC_CHECK(num_train_ >= 2, Errc::parse, "scheduler config: num_train_timesteps must be at least 2");

  // __init__: timesteps 1..N (float32), sigmas = t / N, shifted in float32 unless dynamic.
  auto init_sigma = [&](double t) {
    float s = static_cast<float>(t) / static_cast<float>(num_train_);
    if (!dynamic_) {
      const float sh = static_cast<float>(shift_);
      s = sh * s / (1.0f + (sh - 1.0f) * s);
    }
    return s;
  };
  sigma_max_ = init_sigma(static_cast<double>(num_train_));
  sigma_min_ = init_sigma(1.0);
}

void FlowMatchEulerScheduler::set_timesteps(int steps, int64_t image_seq_len) {
  SC_CHECK(steps >= 1, Errc::invalid_argument, "steps must be at least 1, got " << steps);
  const double n = static_cast<double>(num_train_);
  std::vector<double> sig = np_linspace(sigma_max_ * n, sigma_min_ * n, steps);
  for (double& s : sig) s /= n;
  if (dynamic_) {
    SC_CHECK(image_seq_len > 0, Errc::invalid_argument,
             "this flow-match config uses dynamic shifting: set_timesteps needs the latent token count");
    const double m = (max_shift_ - base_shift_) / (max_seq_ - base_seq_);
    const double mu = static_cast<double>(image_seq_len) * m + (base_shift_ - m * base_seq_);
    for (double& s : sig)
      s = linear_time_shift_ ? mu / (mu + (1.0 / s - 1.0)) : std::exp(mu) / (std::exp(mu) + (1.0 / s - 1.0));
  } else {
    for (double& s : sig) s = shift_ * s / (1.0 + (shift_ - 1.0) * s);
  }
  if (shift_terminal_ > 0.0) {
    const double scale = (1.0 - sig.back()) / (1.0 - shift_terminal_);
    for (double& s : sig) s = 1.0 - (1.0 - s) / scale;
  }
  timesteps_.clear();
  sigmas_.clear();
  for (double s : sig) {
    const float sf = static_cast<float>(s);
    sigmas_.push_back(sf);
    timesteps_.push_back(sf * static_cast<float>(num_train_));
  }
  sigmas_.push_back(0.0);
}

Tensor FlowMatchEulerScheduler::step(const Tensor& model_output, int i, const Tensor& sample) {
  check_step(i);
  const float dt = static_cast<float>(sigmas_[i + 1]) - static_cast<float>(sigmas_[i]);
  return ops::axpby(sample, 1.0f, model_output, dt);
}

}  // namespace stagecraft
