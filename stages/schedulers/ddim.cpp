// DDIMScheduler: see ddim.hpp. Follows diffusers' scheduling_ddim.py with eta = 0.
#include "stages/schedulers/ddim.hpp"

#include <algorithm>
#include <cmath>

#include "core/error.hpp"
#include "kernels/ops.hpp"
#include "stages/schedulers/betas.hpp"
#include "stages/schedulers/host_clamp.hpp"

namespace stagecraft {

using namespace sched;

DDIMScheduler::DDIMScheduler(const nlohmann::json& c, bool flow) : flow_(flow) {
  if (flow_) {
    flow_config_ = c;
    prediction_type_ = "flow_prediction";
    clip_sample_ = false;
    return;
  }
  num_train_ = cfg_int(c, "num_train_timesteps", 1000);
  alphas_cumprod_ = sched::alphas_cumprod(make_betas(c));
  // Zero terminal SNR makes abar_T = 0; diffusers nudges it so epsilon -> x0 stays finite.
  if (cfg_bool(c, "rescale_betas_zero_snr", false)) alphas_cumprod_.back() = std::ldexp(1.0f, -24);
  final_alpha_cumprod_ = cfg_bool(c, "set_alpha_to_one", true) ? 1.0f : alphas_cumprod_.front();
  clip_sample_ = cfg_bool(c, "clip_sample", true);
  clip_range_ = static_cast<float>(cfg_num(c, "clip_sample_range", 1.0));
  steps_offset_ = static_cast<int64_t>(cfg_num(c, "steps_offset", 0));
  spacing_ = cfg_str(c, "timestep_spacing", "leading");
  prediction_type_ = cfg_str(c, "prediction_type", "epsilon");
  SC_CHECK(prediction_type_ == "epsilon" || prediction_type_ == "v_prediction" || prediction_type_ == "sample",
           Errc::unsupported, "DDIM: prediction_type \"" << prediction_type_ << "\" is not supported");
  SC_CHECK(!cfg_bool(c, "thresholding", false), Errc::unsupported,
           "DDIM: dynamic thresholding is not supported; set \"thresholding\": false");
  SC_CHECK(spacing_ == "leading" || spacing_ == "trailing" || spacing_ == "linspace", Errc::unsupported,
           "DDIM: timestep_spacing \"" << spacing_ << "\" is not one of linspace, leading, trailing");
}

void DDIMScheduler::set_timesteps(int steps, int64_t image_seq_len) {
  SC_CHECK(steps >= 1, Errc::invalid_argument, "steps must be at least 1, got " << steps);
  if (flow_) {
    FlowMatchEulerScheduler f(flow_config_);
    f.set_timesteps(steps, image_seq_len);
    timesteps_ = f.timesteps();
    sigmas_ = f.sigmas();
    inference_steps_ = steps;
    return;
  }
  SC_CHECK(steps <= num_train_, Errc::invalid_argument,
           "DDIM: " << steps << " steps exceed num_train_timesteps = " << num_train_);
  inference_steps_ = steps;
  const int64_t n = num_train_;
  std::vector<int64_t> ts;
  if (spacing_ == "linspace") {
    for (double v : np_linspace(0, static_cast<double>(n - 1), steps)) ts.push_back(static_cast<int64_t>(np_round(v)));
    std::reverse(ts.begin(), ts.end());
  } else if (spacing_ == "leading") {
    const int64_t ratio = n / steps;
    for (int64_t i = steps - 1; i >= 0; --i) ts.push_back(i * ratio + steps_offset_);
  } else {
    const double ratio = static_cast<double>(n) / steps;
    // np.arange(n, 0, -ratio) has ceil(n / ratio) elements n - k * ratio.
    const int64_t count = static_cast<int64_t>(std::ceil(static_cast<double>(n) / ratio));
    for (int64_t k = 0; k < count; ++k) ts.push_back(static_cast<int64_t>(np_round(n - k * ratio)) - 1);
  }
  timesteps_.assign(ts.begin(), ts.end());
  sigmas_.clear();
}

Tensor DDIMScheduler::step(const Tensor& model_output, int i, const Tensor& sample) {
  check_step(i);
  if (flow_) {
    const double s = sigmas_[i], sp = sigmas_[i + 1];
    const Tensor x0 = ops::axpby(sample, 1.0f, model_output, static_cast<float>(-s));
    const Tensor eps = ops::axpby(sample, 1.0f, model_output, static_cast<float>(1.0 - s));
    return ops::axpby(x0, static_cast<float>(1.0 - sp), eps, static_cast<float>(sp));
  }
  const int64_t t = static_cast<int64_t>(timesteps_[i]);
  const int64_t prev_t = t - num_train_ / inference_steps_;
  const double a_t = alphas_cumprod_.at(t);
  const double a_prev = prev_t >= 0 ? alphas_cumprod_.at(prev_t) : final_alpha_cumprod_;
  const double b_t = 1.0 - a_t;
  Tensor x0, eps;
  if (prediction_type_ == "epsilon") {
    x0 = ops::axpby(sample, static_cast<float>(1.0 / std::sqrt(a_t)), model_output,
                    static_cast<float>(-std::sqrt(b_t) / std::sqrt(a_t)));
    eps = model_output;
  } else if (prediction_type_ == "sample") {
    x0 = model_output;
    eps = ops::axpby(sample, static_cast<float>(1.0 / std::sqrt(b_t)), model_output,
                     static_cast<float>(-std::sqrt(a_t) / std::sqrt(b_t)));
  } else {  // v_prediction
    x0 = ops::axpby(sample, static_cast<float>(std::sqrt(a_t)), model_output, static_cast<float>(-std::sqrt(b_t)));
    eps = ops::axpby(model_output, static_cast<float>(std::sqrt(a_t)), sample, static_cast<float>(std::sqrt(b_t)));
  }
  if (clip_sample_) {
    x0 = clamp_values(x0, -clip_range_, clip_range_);
    // diffusers recomputes eps from the clipped x0 only when use_clipped_model_output; it is off by default.
  }
  return ops::axpby(x0, static_cast<float>(std::sqrt(a_prev)), eps, static_cast<float>(std::sqrt(1.0 - a_prev)));
}

}  // namespace stagecraft
