// Noise schedule arithmetic; see betas.hpp.
#include "stages/schedulers/betas.hpp"

#include <algorithm>
#include <cmath>

#include "core/error.hpp"

namespace stagecraft::sched {

std::vector<float> torch_linspace_f32(double start_d, double end_d, int64_t n) {
  std::vector<float> out(static_cast<size_t>(std::max<int64_t>(n, 0)));
  if (n == 1) out[0] = static_cast<float>(start_d);
  if (n <= 1) return out;
  const float start = static_cast<float>(start_d), end = static_cast<float>(end_d);
  const float step = (end - start) / static_cast<float>(n - 1);
  const int64_t halfway = n / 2;
  for (int64_t i = 0; i < n; ++i)
    out[i] = i < halfway ? start + step * static_cast<float>(i) : end - step * static_cast<float>(n - i - 1);
  return out;
}

std::vector<double> np_linspace(double start, double stop, int64_t n) {
  std::vector<double> out(static_cast<size_t>(std::max<int64_t>(n, 0)));
  if (n == 1) out[0] = start;
  if (n <= 1) return out;
  const double step = (stop - start) / static_cast<double>(n - 1);
  for (int64_t i = 0; i < n; ++i) out[i] = static_cast<double>(i) * step + start;
  out[n - 1] = stop;
  return out;
}

double np_round(double x) { return std::nearbyint(x); }  // default rounding mode: half to even

namespace {

// diffusers' rescale_zero_terminal_snr (arXiv:2305.08891), in float32 like torch.
std::vector<float> rescale_zero_terminal_snr(const std::vector<float>& betas) {
  std::vector<float> ac = alphas_cumprod(betas);
  std::vector<float> s(ac.size());
  for (size_t i = 0; i < ac.size(); ++i) s[i] = std::sqrt(ac[i]);
  const float a0 = s.front(), aT = s.back();
  for (float& v : s) v = (v - aT) * (a0 / (a0 - aT));
  std::vector<float> out(betas.size());
  for (size_t i = 0; i < s.size(); ++i) {
    const float bar = s[i] * s[i];
    const float alpha = i == 0 ? bar : bar / (s[i - 1] * s[i - 1]);
    out[i] = 1.0f - alpha;
  }
  return out;
}

}  // namespace

std::vector<float> make_betas(const nlohmann::json& c) {
  const int64_t n = cfg_int(c, "num_train_timesteps", 1000);
  SC_CHECK(n >= 2, Errc::parse, "scheduler config: num_train_timesteps must be at least 2, got " << n);
  std::vector<float> betas;
  if (c.contains("trained_betas") && c["trained_betas"].is_array() && !c["trained_betas"].empty()) {
    for (const auto& b : c["trained_betas"]) betas.push_back(b.get<float>());
    SC_CHECK(static_cast<int64_t>(betas.size()) == n, Errc::parse,
             "scheduler config: trained_betas has " << betas.size() << " entries, num_train_timesteps is " << n);
  } else {
    const double b0 = cfg_num(c, "beta_start", 0.0001), b1 = cfg_num(c, "beta_end", 0.02);
    const std::string schedule = cfg_str(c, "beta_schedule", "linear");
    if (schedule == "linear") {
      betas = torch_linspace_f32(b0, b1, n);
    } else if (schedule == "scaled_linear") {
      betas = torch_linspace_f32(std::sqrt(b0), std::sqrt(b1), n);
      for (float& b : betas) b = b * b;
    } else if (schedule == "squaredcos_cap_v2") {
      auto alpha_bar = [](double t) {
        const double v = std::cos((t + 0.008) / 1.008 * M_PI / 2);
        return v * v;
      };
      for (int64_t i = 0; i < n; ++i) {
        const double t1 = static_cast<double>(i) / n, t2 = static_cast<double>(i + 1) / n;
        betas.push_back(static_cast<float>(std::min(1 - alpha_bar(t2) / alpha_bar(t1), 0.999)));
      }
    } else {
      SC_FAIL(Errc::unsupported, "scheduler config: beta_schedule \"" << schedule
                                                                      << "\" is not supported (linear, scaled_linear, squaredcos_cap_v2)");
    }
  }
  if (cfg_bool(c, "rescale_betas_zero_snr", false)) betas = rescale_zero_terminal_snr(betas);
  return betas;
}

std::vector<float> alphas_cumprod(const std::vector<float>& betas) {
  std::vector<float> out(betas.size());
  double acc = 1.0;
  for (size_t i = 0; i < betas.size(); ++i) {
    acc *= static_cast<double>(1.0f - betas[i]);
    out[i] = static_cast<float>(acc);
  }
  return out;
}

}  // namespace stagecraft::sched
