// DPMSolverMultistepScheduler: see dpm_solver.hpp. Follows diffusers'
// scheduling_dpmsolver_multistep.py for algorithm_type "dpmsolver++".
#include "stages/schedulers/dpm_solver.hpp"

#include <algorithm>
#include <cmath>

#include "core/error.hpp"
#include "kernels/ops.hpp"
#include "stages/schedulers/betas.hpp"

namespace stagecraft {

using namespace sched;

DPMSolverMultistepScheduler::DPMSolverMultistepScheduler(const nlohmann::json& c) {
  num_train_ = cfg_int(c, "num_train_timesteps", 1000);
  alphas_cumprod_ = sched::alphas_cumprod(make_betas(c));
  prediction_type_ = cfg_str(c, "prediction_type", "epsilon");
  SC_CHECK(prediction_type_ == "epsilon" || prediction_type_ == "v_prediction" || prediction_type_ == "sample" ||
               prediction_type_ == "flow_prediction",
           Errc::unsupported, "DPM-Solver: prediction_type \"" << prediction_type_ << "\" is not supported");
  const std::string algo = cfg_str(c, "algorithm_type", "dpmsolver++");
  SC_CHECK(algo == "dpmsolver++", Errc::unsupported,
           "DPM-Solver: algorithm_type \"" << algo << "\" is not supported here (use dpmsolver++)");
  const std::string solver = cfg_str(c, "solver_type", "midpoint");
  SC_CHECK(solver == "midpoint" || solver == "heun", Errc::unsupported,
           "DPM-Solver: solver_type \"" << solver << "\" is not midpoint or heun");
  heun_ = solver == "heun";
  SC_CHECK(!cfg_bool(c, "thresholding", false), Errc::unsupported,
           "DPM-Solver: dynamic thresholding is not supported; set \"thresholding\": false");
  for (const char* k : {"use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas", "use_lu_lambdas"})
    SC_CHECK(!cfg_bool(c, k, false), Errc::unsupported, "DPM-Solver with " << k << " = true is not supported");
  flow_sigmas_ = cfg_bool(c, "use_flow_sigmas", false);
  flow_shift_ = cfg_num(c, "flow_shift", 1.0);
  lower_order_final_ = cfg_bool(c, "lower_order_final", true);
  euler_at_final_ = cfg_bool(c, "euler_at_final", false);
  const std::string fst = cfg_str(c, "final_sigmas_type", "zero");
  SC_CHECK(fst == "zero" || fst == "sigma_min", Errc::unsupported,
           "DPM-Solver: final_sigmas_type \"" << fst << "\" is not zero or sigma_min");
  final_sigma_min_ = fst == "sigma_min";
  lambda_min_clipped_ = cfg_num(c, "lambda_min_clipped", -INFINITY);
  steps_offset_ = static_cast<int64_t>(cfg_num(c, "steps_offset", 0));
  spacing_ = cfg_str(c, "timestep_spacing", "linspace");
  SC_CHECK(spacing_ == "leading" || spacing_ == "trailing" || spacing_ == "linspace", Errc::unsupported,
           "DPM-Solver: timestep_spacing \"" << spacing_ << "\" is not one of linspace, leading, trailing");
}

void DPMSolverMultistepScheduler::alpha_sigma(double sigma, double& alpha_t, double& sigma_t) const {
  if (flow_sigmas_) {
    alpha_t = 1.0 - sigma;
    sigma_t = sigma;
  } else {
    alpha_t = 1.0 / std::sqrt(sigma * sigma + 1.0);
    sigma_t = sigma * alpha_t;
  }
}

void DPMSolverMultistepScheduler::set_timesteps(int steps, int64_t) {
  SC_CHECK(steps >= 1, Errc::invalid_argument, "steps must be at least 1, got " << steps);
  const int64_t n = num_train_;
  // lambda_t = log(alpha_t) - log(sigma_t), float32 as torch; clip where lambda < lambda_min_clipped.
  int64_t clipped = 0;
  if (std::isfinite(lambda_min_clipped_)) {
    std::vector<float> lam(n);
    for (int64_t t = 0; t < n; ++t)
      lam[t] = std::log(std::sqrt(alphas_cumprod_[t])) - std::log(std::sqrt(1.0f - alphas_cumprod_[t]));
    std::reverse(lam.begin(), lam.end());
    clipped = std::lower_bound(lam.begin(), lam.end(), static_cast<float>(lambda_min_clipped_)) - lam.begin();
  }
  const int64_t last = n - clipped;
  std::vector<int64_t> ts;
  if (spacing_ == "linspace") {
    std::vector<double> v = np_linspace(0, static_cast<double>(last - 1), steps + 1);
    for (int k = steps; k >= 1; --k) ts.push_back(static_cast<int64_t>(np_round(v[k])));
  } else if (spacing_ == "leading") {
    const int64_t ratio = last / (steps + 1);
    for (int k = steps; k >= 1; --k) ts.push_back(k * ratio + steps_offset_);
  } else {
    const double ratio = static_cast<double>(n) / steps;
    const int64_t count = static_cast<int64_t>(std::ceil(static_cast<double>(last) / ratio));
    for (int64_t k = 0; k < count; ++k) ts.push_back(static_cast<int64_t>(np_round(last - k * ratio)) - 1);
  }

  std::vector<double> sig;
  if (flow_sigmas_) {
    std::vector<double> alphas = np_linspace(1.0, 1.0 / static_cast<double>(n), steps + 1);
    std::vector<double> s(alphas.size());
    for (size_t k = 0; k < s.size(); ++k) {
      const double x = 1.0 - alphas[k];
      s[k] = flow_shift_ * x / (1.0 + (flow_shift_ - 1.0) * x);
    }
    std::reverse(s.begin(), s.end());
    s.pop_back();
    ts.clear();
    for (double x : s) {
      sig.push_back(x);
      ts.push_back(static_cast<int64_t>(x * static_cast<double>(n)));  // .to(torch.int64) truncates
    }
  } else {
    for (int64_t t : ts) {
      SC_CHECK(t >= 0 && t < n, Errc::invalid_argument, "DPM-Solver: timestep " << t << " out of range");
      const float ac = alphas_cumprod_[t];
      sig.push_back(std::sqrt((1.0f - ac) / ac));  // np.interp at integer points is exact
    }
  }
  double last_sigma = 0.0;
  if (final_sigma_min_) {
    const float ac0 = alphas_cumprod_[0];
    last_sigma = std::sqrt((1.0f - ac0) / ac0);
  }
  sig.push_back(last_sigma);
  sigmas_.clear();
  for (double s : sig) sigmas_.push_back(static_cast<float>(s));
  timesteps_.assign(ts.begin(), ts.end());
  prev_x0_ = Tensor();
  lower_order_nums_ = 0;
  next_step_ = 0;
}

Tensor DPMSolverMultistepScheduler::step(const Tensor& model_output, int i, const Tensor& sample) {
  check_step(i);
  SC_CHECK(i == next_step_, Errc::invalid_argument,
           "DPM-Solver is multistep: steps must run in order, expected step " << next_step_ << ", got " << i);
  const int n = num_steps();
  const bool lower_final = i == n - 1 && (euler_at_final_ || (lower_order_final_ && n < 15) || !final_sigma_min_);
  const bool lower_second = i == n - 2 && lower_order_final_ && n < 15;

  // convert_model_output -> x0 prediction.
  double alpha_s0, sigma_s0;
  alpha_sigma(sigmas_[i], alpha_s0, sigma_s0);
  Tensor x0;
  if (prediction_type_ == "epsilon") {
    x0 = ops::axpby(sample, static_cast<float>(1.0 / alpha_s0), model_output,
                    static_cast<float>(-sigma_s0 / alpha_s0));
  } else if (prediction_type_ == "sample") {
    x0 = model_output;
  } else if (prediction_type_ == "v_prediction") {
    x0 = ops::axpby(sample, static_cast<float>(alpha_s0), model_output, static_cast<float>(-sigma_s0));
  } else {  // flow_prediction
    x0 = ops::axpby(sample, 1.0f, model_output, static_cast<float>(-sigmas_[i]));
  }

  double alpha_t, sigma_t;
  alpha_sigma(sigmas_[i + 1], alpha_t, sigma_t);
  const double lambda_t = std::log(alpha_t) - std::log(sigma_t);
  const double lambda_s0 = std::log(alpha_s0) - std::log(sigma_s0);
  const double h = lambda_t - lambda_s0;
  const double em1 = std::exp(-h) - 1.0;  // 0 - 1 when sigma_t = 0 (h = inf)
  const double ratio = sigma_t / sigma_s0;

  Tensor out;
  if (lower_order_nums_ < 1 || lower_final) {
    out = ops::axpby(sample, static_cast<float>(ratio), x0, static_cast<float>(-alpha_t * em1));
  } else {
    (void)lower_second;  // with order 2, a second-order step is the most the schedule allows either way
    double alpha_s1, sigma_s1;
    alpha_sigma(sigmas_[i - 1], alpha_s1, sigma_s1);
    const double lambda_s1 = std::log(alpha_s1) - std::log(sigma_s1);
    const double r0 = (lambda_s0 - lambda_s1) / h;
    // x_t = ratio*x - alpha_t*em1*D0 + c1*D1 with D1 = (m0 - m1)/r0.
    const double c1 = heun_ ? alpha_t * (em1 / h + 1.0) : -0.5 * alpha_t * em1;
    const double c_m0 = -alpha_t * em1 + c1 / r0;
    const double c_m1 = -c1 / r0;
    out = ops::axpby(ops::axpby(sample, static_cast<float>(ratio), x0, static_cast<float>(c_m0)), 1.0f, prev_x0_,
                     static_cast<float>(c_m1));
  }
  prev_x0_ = x0;
  if (lower_order_nums_ < 2) ++lower_order_nums_;
  ++next_step_;
  return out;
}

}  // namespace stagecraft
