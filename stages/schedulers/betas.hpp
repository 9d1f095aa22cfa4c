#pragma once
// The noise schedule arithmetic shared by DDIM and DPM-Solver, reproducing the
// float32/float64 steps of diffusers (torch.linspace in float32, cumprod with a
// double accumulator, numpy in float64).
#include <cstdint>
#include <vector>

#include <nlohmann/json.hpp>

#include "stages/model/config_value.hpp"

namespace stagecraft::sched {

/// torch.linspace(start, end, n, dtype=float32) on the CPU (two halves, each from its own end).
std::vector<float> torch_linspace_f32(double start, double end, int64_t n);
/// numpy.linspace(start, stop, n) (float64, endpoint included).
std::vector<double> np_linspace(double start, double stop, int64_t n);
/// numpy.round: half to even.
double np_round(double x);

/// betas from num_train_timesteps, beta_start, beta_end, beta_schedule
/// (linear | scaled_linear | squaredcos_cap_v2), trained_betas and rescale_betas_zero_snr.
std::vector<float> make_betas(const nlohmann::json& config);
/// torch.cumprod(1 - betas) in float32 with a double accumulator (as ATen's CPU kernel).
std::vector<float> alphas_cumprod(const std::vector<float>& betas);

}  // namespace stagecraft::sched
