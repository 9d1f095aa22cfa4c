// Schedulers: timesteps and sigmas equal tools/reference.py's (diffusers' arithmetic) for
// every spacing, and single steps equal a hand computation of the published update rules.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <cmath>
#include <fstream>

#include "core/error.hpp"
#include "stages/model/weights.hpp"
#include "stages/schedulers/betas.hpp"
#include "stages/schedulers/ddim.hpp"
#include "stages/schedulers/scheduler.hpp"
#include "test_e1_support.hpp"

using namespace stagecraft;
using namespace sc_test;
using nlohmann::json;

namespace {

// A model folder holding only scheduler/scheduler_config.json (all `reference.py scheduler` reads).
std::string scheduler_folder(const TempDir& tmp, const std::string& name, const json& config) {
  const std::string dir = tmp / name;
  std::filesystem::create_directories(dir + "/scheduler");
  std::ofstream(dir + "/scheduler/scheduler_config.json") << config.dump(2);
  return dir;
}

void check_matches_reference(const std::string& model_dir, const std::string& name, int steps, const TempDir& tmp) {
  CAPTURE(model_dir);
  CAPTURE(name);
  CAPTURE(steps);
  const json config = read_json_file(model_dir + "/scheduler/scheduler_config.json");
  auto s = make_scheduler(name, config);
  s->set_timesteps(steps);
  const json ref = reference_json("scheduler --model " + model_dir + " --name " + name + " --steps " +
                                      std::to_string(steps),
                                  tmp);
  const auto rt = ref["timesteps"].get<std::vector<double>>();
  const auto rs = ref["sigmas"].get<std::vector<double>>();
  REQUIRE(s->timesteps().size() == rt.size());
  for (size_t i = 0; i < rt.size(); ++i) CHECK(s->timesteps()[i] == doctest::Approx(rt[i]).epsilon(1e-6));
  REQUIRE(s->sigmas().size() == rs.size());
  for (size_t i = 0; i < rs.size(); ++i) CHECK(s->sigmas()[i] == doctest::Approx(rs[i]).epsilon(1e-6));
}

json ddpm_config(const std::string& cls, const std::string& spacing, const std::string& schedule = "scaled_linear") {
  return {{"_class_name", cls},      {"num_train_timesteps", 1000},  {"beta_start", 0.00085},
          {"beta_end", 0.012},       {"beta_schedule", schedule},    {"clip_sample", false},
          {"set_alpha_to_one", false}, {"steps_offset", 1},          {"prediction_type", "epsilon"},
          {"timestep_spacing", spacing}};
}

Tensor ramp(int64_t n, float a, float b) {
  std::vector<float> v(n);
  for (int64_t i = 0; i < n; ++i) v[i] = a + b * static_cast<float>(i) - 0.37f * static_cast<float>(i % 3);
  return Tensor::from_vector(v, {1, 1, 1, n});
}

}  // namespace

TEST_CASE("flow-match and DPM++ 2M flow timesteps and sigmas equal the reference on a flow model") {
  SC_SKIP_WITHOUT_TORCH();
  TempDir tmp;
  for (int steps : {1, 20})
    for (const char* name : {"flow_match_euler", "dpm_2m"}) check_matches_reference(tiny_model_dir(), name, steps, tmp);
}

TEST_CASE("DDIM and DPM++ 2M timesteps and sigmas equal the reference for every timestep spacing") {
  SC_SKIP_WITHOUT_TORCH();
  TempDir tmp;
  for (const char* spacing : {"linspace", "leading", "trailing"}) {
    const std::string dir = scheduler_folder(tmp, std::string("ddpm-") + spacing, ddpm_config("DDIMScheduler", spacing));
    // Each reference run pays a torch import: one odd and (for linspace) two edge step counts.
    const std::vector<int> counts = std::string(spacing) == "linspace" ? std::vector<int>{1, 25} : std::vector<int>{7};
    for (int steps : counts)
      for (const char* name : {"ddim", "dpm_2m"}) check_matches_reference(dir, name, steps, tmp);
  }
  const std::string cos = scheduler_folder(tmp, "cos", ddpm_config("DPMSolverMultistepScheduler", "linspace",
                                                                   "squaredcos_cap_v2"));
  check_matches_reference(cos, "dpm_2m", 10, tmp);
  check_matches_reference(cos, "ddim", 10, tmp);
}

TEST_CASE("alphas_cumprod of the linear schedule equals the product of 1 - beta") {
  DDIMScheduler s(json::object(), false);
  const auto& ac = s.alphas_cumprod();
  REQUIRE(ac.size() == 1000);
  double prod = 1.0;
  for (int i = 0; i < 1000; ++i) {
    prod *= 1.0 - (0.0001 + (0.02 - 0.0001) * i / 999.0);
    if (i == 0 || i == 499 || i == 999) CHECK(ac[i] == doctest::Approx(prod).epsilon(1e-5));
  }
}

TEST_CASE("a flow-match Euler step is x + (sigma_next - sigma) * v") {
  auto s = make_scheduler("flow_match_euler", {{"_class_name", "FlowMatchEulerDiscreteScheduler"}, {"shift", 2.0}});
  s->set_timesteps(5);
  CHECK(s->sigmas().front() == doctest::Approx(1.0));
  CHECK(s->sigmas().back() == 0.0);
  CHECK(s->model_timestep(0) == doctest::Approx(1000.0));
  const Tensor x = ramp(7, -1.0f, 0.3f), v = ramp(7, 0.5f, -0.2f);
  const Tensor y = s->step(v, 2, x);
  const double dt = static_cast<float>(s->sigmas()[3]) - static_cast<float>(s->sigmas()[2]);
  for (int i = 0; i < 7; ++i) CHECK(y.item(i) == doctest::Approx(x.item(i) + dt * v.item(i)).epsilon(1e-6));
}

TEST_CASE("a DDIM step equals the eta = 0 update for epsilon and v prediction") {
  for (const char* pred : {"epsilon", "v_prediction"}) {
    CAPTURE(pred);
    json c = ddpm_config("DDIMScheduler", "leading");
    c["prediction_type"] = pred;
    DDIMScheduler s(c, false);
    s.set_timesteps(10);
    CHECK(s.timesteps().front() == 901.0);  // leading: 9 * 100 + steps_offset
    const int i = 3;
    const int t = static_cast<int>(s.timesteps()[i]);
    const double a = s.alphas_cumprod()[t], ap = s.alphas_cumprod()[t - 100];
    const Tensor x = ramp(6, 0.8f, -0.25f), m = ramp(6, -0.4f, 0.15f);
    const Tensor y = s.step(m, i, x);
    for (int k = 0; k < 6; ++k) {
      const double xv = x.item(k), mv = m.item(k);
      double x0, eps;
      if (std::string(pred) == "epsilon") {
        x0 = (xv - std::sqrt(1 - a) * mv) / std::sqrt(a);
        eps = mv;
      } else {
        x0 = std::sqrt(a) * xv - std::sqrt(1 - a) * mv;
        eps = std::sqrt(a) * mv + std::sqrt(1 - a) * xv;
      }
      CHECK(y.item(k) == doctest::Approx(std::sqrt(ap) * x0 + std::sqrt(1 - ap) * eps).epsilon(1e-5));
    }
  }
}

TEST_CASE("DDIM clips the predicted x0 when clip_sample is on") {
  json c = ddpm_config("DDIMScheduler", "leading");
  c["clip_sample"] = true;
  DDIMScheduler s(c, false);
  s.set_timesteps(4);
  const int t = static_cast<int>(s.timesteps()[0]);
  const double a = s.alphas_cumprod()[t], ap = s.alphas_cumprod()[t - 250];
  const Tensor x = Tensor::from_vector({50.0f, -50.0f, 0.1f}, {1, 1, 1, 3});
  const Tensor m = Tensor::from_vector({0.0f, 0.0f, 0.0f}, {1, 1, 1, 3});
  const Tensor y = s.step(m, 0, x);
  CHECK(y.item(0) == doctest::Approx(std::sqrt(ap) * 1.0).epsilon(1e-5));
  CHECK(y.item(1) == doctest::Approx(-std::sqrt(ap) * 1.0).epsilon(1e-5));
  CHECK(y.item(2) == doctest::Approx(std::sqrt(ap) * 0.1 / std::sqrt(a)).epsilon(1e-5));
}

TEST_CASE("DPM++ 2M takes a first-order step, then the midpoint second-order step") {
  json c = ddpm_config("DPMSolverMultistepScheduler", "linspace");
  auto s = make_scheduler("dpm_2m", c);
  s->set_timesteps(8);
  const auto& sig = s->sigmas();
  auto as = [](double sigma) { return std::pair{1.0 / std::sqrt(sigma * sigma + 1), sigma / std::sqrt(sigma * sigma + 1)}; };
  auto lambda = [&](double sigma) { auto [a, sg] = as(sigma); return std::log(a) - std::log(sg); };
  const Tensor x0 = ramp(5, 3.0f, -1.1f), e0 = ramp(5, 0.2f, 0.3f), e1 = ramp(5, -0.6f, 0.05f);

  const Tensor x1 = s->step(e0, 0, x0);
  std::vector<double> d0(5), expect1(5);
  {
    auto [a_s, s_s] = as(sig[0]);
    auto [a_t, s_t] = as(sig[1]);
    const double h = lambda(sig[1]) - lambda(sig[0]);
    for (int k = 0; k < 5; ++k) {
      d0[k] = (x0.item(k) - s_s * e0.item(k)) / a_s;
      expect1[k] = (s_t / s_s) * x0.item(k) - a_t * (std::exp(-h) - 1) * d0[k];
      CHECK(x1.item(k) == doctest::Approx(expect1[k]).epsilon(1e-5));
    }
  }
  const Tensor x2 = s->step(e1, 1, x1);
  {
    auto [a_s, s_s] = as(sig[1]);
    auto [a_t, s_t] = as(sig[2]);
    const double h = lambda(sig[2]) - lambda(sig[1]);
    const double r0 = (lambda(sig[1]) - lambda(sig[0])) / h;
    for (int k = 0; k < 5; ++k) {
      const double m0 = (x1.item(k) - s_s * e1.item(k)) / a_s;
      const double D1 = (m0 - d0[k]) / r0;
      const double want = (s_t / s_s) * x1.item(k) - a_t * (std::exp(-h) - 1) * m0 - 0.5 * a_t * (std::exp(-h) - 1) * D1;
      CHECK(x2.item(k) == doctest::Approx(want).epsilon(1e-4));
    }
  }
  CHECK_THROWS_AS(s->step(e1, 5, x2), Error);  // multistep: steps run in order
}

TEST_CASE("the last DPM++ step with a zero final sigma returns the predicted x0") {
  json c = ddpm_config("DPMSolverMultistepScheduler", "trailing");
  c["prediction_type"] = "v_prediction";
  auto s = make_scheduler("dpm_2m", c);
  s->set_timesteps(2);
  const Tensor x = ramp(4, 1.0f, 0.5f), v = ramp(4, -0.3f, 0.2f);
  const Tensor x1 = s->step(v, 0, x);
  const Tensor x2 = s->step(v, 1, x1);
  const double sigma = s->sigmas()[1], a = 1 / std::sqrt(sigma * sigma + 1), sg = sigma * a;
  for (int k = 0; k < 4; ++k) CHECK(x2.item(k) == doctest::Approx(a * x1.item(k) - sg * v.item(k)).epsilon(1e-5));
}

TEST_CASE("DDIM on a flow model equals the Euler step") {
  const json flow = {{"_class_name", "FlowMatchEulerDiscreteScheduler"}, {"shift", 3.0}};
  auto ddim = make_scheduler("ddim", flow);
  auto euler = make_scheduler("flow_match_euler", flow);
  ddim->set_timesteps(6);
  euler->set_timesteps(6);
  CHECK(ddim->timesteps() == euler->timesteps());
  const Tensor x = ramp(5, 0.4f, 0.1f), v = ramp(5, -1.0f, 0.45f);
  CHECK(max_abs_diff(ddim->step(v, 2, x), euler->step(v, 2, x)) <= 1e-6);
}

TEST_CASE("scheduler selection refuses what the model cannot do, with advice") {
  const json eps = ddpm_config("DDIMScheduler", "leading");
  try {
    make_scheduler("flow_match_euler", eps);
    FAIL("expected an error");
  } catch (const Error& e) {
    CHECK(std::string(e.what()).find("use ddim or dpm_2m") != std::string::npos);
  }
  CHECK_THROWS_AS(make_scheduler("euler_a", eps), Error);
  CHECK(make_scheduler("", eps)->name() == "ddim");
  CHECK(make_scheduler("", {{"_class_name", "FlowMatchEulerDiscreteScheduler"}})->name() == "flow_match_euler");
  auto s = make_scheduler("ddim", eps);
  CHECK_THROWS_AS(s->step(Tensor::zeros({1}, DType::f32), 0, Tensor::zeros({1}, DType::f32)), Error);  // no set_timesteps
}

TEST_CASE("a num_train_timesteps that does not fit an int is refused, not converted") {
  for (const char* name : {"flow_match_euler", "ddim", "dpm_2m"})
    for (double bad : {1e300, 4294967296.0}) {
      nlohmann::json c = {{"num_train_timesteps", bad}};
      CHECK_THROWS_AS_MESSAGE(make_scheduler(name, c), stagecraft::Error, name << " " << bad);
    }
}
