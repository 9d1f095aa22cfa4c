#include "kernels/selftest.hpp"

#include <cstdio>
#include <functional>
#include <random>
#include <string>
#include <vector>

#if STAGECRAFT_HAVE_CUDA
#include <cuda_runtime.h>
#endif

#include "core/device.hpp"
#include "core/error.hpp"
#include "kernels/ops.hpp"
#include "kernels/reference/reference.hpp"

namespace stagecraft::kernels {
namespace {

using Inputs = std::vector<Tensor>;
using Fn = std::function<Tensor(const Inputs&)>;

struct Check {
  const char* name;
  Inputs inputs;  // on the CPU
  Fn op, ref;
  double tol;     // relative to max(1, max |reference|)
};

Tensor rnd(std::mt19937& g, const Shape& s, float amp = 1.0f) {
  std::uniform_real_distribution<float> u(-amp, amp);
  std::vector<float> v(static_cast<size_t>(shape_numel(s)));
  for (float& e : v) e = u(g);
  return Tensor::from_vector(v, s);
}

std::vector<Check> checks() {
  namespace r = reference;
  std::mt19937 g(7);
  std::vector<Check> c;
  const double t32 = 1e-4;
  c.push_back({"linear", {rnd(g, {17, 64}), rnd(g, {33, 64}), rnd(g, {33})},
               [](const Inputs& t) { return ops::linear(t[0], t[1], &t[2]); },
               [](const Inputs& t) { return r::linear(t[0], t[1], &t[2]); }, t32});
  c.push_back({"linear_per_item", {rnd(g, {3, 17, 64}), rnd(g, {33, 64}), rnd(g, {33})},
               [](const Inputs& t) { return ops::linear_per_item(t[0], t[1], &t[2]); },
               [](const Inputs& t) { return r::linear(t[0], t[1], &t[2]); }, t32});
  c.push_back({"linear_gelu_per_item", {rnd(g, {2, 17, 64}), rnd(g, {33, 64}), rnd(g, {33})},
               [](const Inputs& t) { return ops::linear_gelu_per_item(t[0], t[1], &t[2], true); },
               [](const Inputs& t) { return r::linear_gelu(t[0], t[1], &t[2], true); }, t32});
  c.push_back({"linear_residual_per_item",
               {rnd(g, {2, 17, 64}), rnd(g, {33, 64}), rnd(g, {33}), rnd(g, {2, 17, 33}), rnd(g, {2, 6, 33})},
               [](const Inputs& t) {
                 const Tensor gate = t[4].slice(1, 2, 3);
                 return ops::linear_residual_per_item(t[0], t[1], &t[2], t[3], &gate);
               },
               [](const Inputs& t) {
                 const Tensor gate = t[4].slice(1, 2, 3);
                 return r::linear_residual(t[0], t[1], &t[2], t[3], &gate);
               },
               t32});
  c.push_back({"linear_f16", {rnd(g, {17, 64}).to(DType::f16), rnd(g, {33, 64}).to(DType::f16)},
               [](const Inputs& t) { return ops::linear(t[0], t[1]); },
               [](const Inputs& t) { return r::linear(t[0], t[1], nullptr); }, 4e-3});
  c.push_back({"matmul", {rnd(g, {3, 9, 16}), rnd(g, {3, 16, 7})},
               [](const Inputs& t) { return ops::matmul(t[0], t[1]); },
               [](const Inputs& t) { return r::matmul(t[0], t[1], false); }, t32});
  Tensor mask = Tensor::from_vector(std::vector<float>(2 * 40, 1.0f), {2, 40}).to(DType::u8);
  for (int j = 20; j < 40; ++j) static_cast<uint8_t*>(mask.data())[j] = 0;
  c.push_back({"attention", {rnd(g, {2, 2, 33, 64}, 2.0f), rnd(g, {2, 2, 40, 64}, 2.0f), rnd(g, {2, 2, 40, 64}), mask},
               [](const Inputs& t) {
                 ops::AttentionOptions o;
                 o.key_padding_mask = &t[3];
                 return ops::attention(t[0], t[1], t[2], o);
               },
               [](const Inputs& t) {
                 ops::AttentionOptions o;
                 o.key_padding_mask = &t[3];
                 return r::attention(t[0], t[1], t[2], o);
               },
               t32});
  c.push_back({"attention_causal", {rnd(g, {1, 3, 65, 72}), rnd(g, {1, 3, 65, 72}), rnd(g, {1, 3, 65, 72})},
               [](const Inputs& t) { return ops::attention(t[0], t[1], t[2], {true, nullptr, 0.0f}); },
               [](const Inputs& t) { return r::attention(t[0], t[1], t[2], {true, nullptr, 0.0f}); }, t32});
  // The layout an output projection reads (PixArt's attention writes it directly on the CPU).
  c.push_back({"attention_tokens_first", {rnd(g, {2, 3, 17, 72}), rnd(g, {2, 3, 29, 72}), rnd(g, {2, 3, 29, 72})},
               [](const Inputs& t) {
                 ops::AttentionOptions o;
                 o.out_layout = ops::AttentionLayout::tokens_first;
                 return ops::attention(t[0], t[1], t[2], o);
               },
               [](const Inputs& t) { return r::contiguous(r::attention(t[0], t[1], t[2], {}).permute({0, 2, 1, 3})); },
               t32});
  c.push_back({"softmax", {rnd(g, {5, 77}, 5.0f)}, [](const Inputs& t) { return ops::softmax(t[0]); },
               [](const Inputs& t) { return r::softmax(t[0]); }, t32});
  c.push_back({"layer_norm", {rnd(g, {5, 96}), rnd(g, {96}), rnd(g, {96})},
               [](const Inputs& t) { return ops::layer_norm(t[0], &t[1], &t[2], 1e-5f); },
               [](const Inputs& t) { return r::layer_norm(t[0], &t[1], &t[2], 1e-5f); }, t32});
  c.push_back({"layer_norm_modulate", {rnd(g, {2, 5, 96}), rnd(g, {2, 96}), rnd(g, {2, 1, 96})},
               [](const Inputs& t) { return ops::layer_norm_modulate(t[0], nullptr, nullptr, 1e-6f, t[1], t[2]); },
               [](const Inputs& t) { return r::layer_norm_modulate(t[0], nullptr, nullptr, 1e-6f, t[1], t[2]); }, t32});
  c.push_back({"group_norm_silu", {rnd(g, {2, 32, 9, 9}), rnd(g, {32}), rnd(g, {32})},
               [](const Inputs& t) { return ops::group_norm(t[0], 8, &t[1], &t[2], 1e-6f, true); },
               [](const Inputs& t) { return r::group_norm(t[0], 8, &t[1], &t[2], 1e-6f, true); }, t32});
  c.push_back({"rms_norm", {rnd(g, {5, 96}), rnd(g, {96})}, [](const Inputs& t) { return ops::rms_norm(t[0], &t[1], 1e-6f); },
               [](const Inputs& t) { return r::rms_norm(t[0], &t[1], 1e-6f); }, t32});
  c.push_back({"gelu", {rnd(g, {1000}, 6.0f)}, [](const Inputs& t) { return ops::gelu(t[0]); },
               [](const Inputs& t) { return r::gelu(t[0], false); }, t32});
  c.push_back({"gelu_tanh", {rnd(g, {1000}, 6.0f)}, [](const Inputs& t) { return ops::gelu(t[0], true); },
               [](const Inputs& t) { return r::gelu(t[0], true); }, t32});
  c.push_back({"quick_gelu", {rnd(g, {1000}, 6.0f)}, [](const Inputs& t) { return ops::quick_gelu(t[0]); },
               [](const Inputs& t) { return r::quick_gelu(t[0]); }, t32});
  c.push_back({"silu", {rnd(g, {1000}, 6.0f)}, [](const Inputs& t) { return ops::silu(t[0]); },
               [](const Inputs& t) { return r::silu(t[0]); }, t32});
  c.push_back({"add", {rnd(g, {4, 1, 33}), rnd(g, {5, 33})}, [](const Inputs& t) { return ops::add(t[0], t[1]); },
               [](const Inputs& t) { return r::add(t[0], t[1]); }, t32});
  c.push_back({"mul", {rnd(g, {4, 5, 33}), rnd(g, {33})}, [](const Inputs& t) { return ops::mul(t[0], t[1]); },
               [](const Inputs& t) { return r::mul(t[0], t[1]); }, t32});
  c.push_back({"axpby", {rnd(g, {4, 5, 33}), rnd(g, {4, 5, 33})},
               [](const Inputs& t) { return ops::axpby(t[0], 0.5f, t[1], -2.0f); },
               [](const Inputs& t) { return r::axpby(t[0], 0.5f, t[1], -2.0f); }, t32});
  c.push_back({"scale", {rnd(g, {4, 5, 33})}, [](const Inputs& t) { return ops::scale(t[0], 1.5f); },
               [](const Inputs& t) { return r::scale(t[0], 1.5f); }, t32});
  c.push_back({"modulate", {rnd(g, {2, 17, 48}), rnd(g, {2, 48}), rnd(g, {2, 48})},
               [](const Inputs& t) { return ops::modulate(t[0], t[1], t[2]); },
               [](const Inputs& t) { return r::modulate(t[0], t[1], t[2]); }, t32});
  c.push_back({"conv2d_3x3", {rnd(g, {1, 8, 12, 12}), rnd(g, {16, 8, 3, 3}), rnd(g, {16})},
               [](const Inputs& t) { return ops::conv2d(t[0], t[1], &t[2], 1, 1); },
               [](const Inputs& t) { return r::conv2d(t[0], t[1], &t[2], 1, 1); }, t32});
  c.push_back({"conv2d_3x3_s2", {rnd(g, {1, 8, 12, 12}), rnd(g, {16, 8, 3, 3})},
               [](const Inputs& t) { return ops::conv2d(t[0], t[1], nullptr, 2, 1); },
               [](const Inputs& t) { return r::conv2d(t[0], t[1], nullptr, 2, 1); }, t32});
  c.push_back({"conv2d_1x1", {rnd(g, {2, 8, 7, 7}), rnd(g, {4, 8, 1, 1}), rnd(g, {4})},
               [](const Inputs& t) { return ops::conv2d(t[0], t[1], &t[2], 1, 0); },
               [](const Inputs& t) { return r::conv2d(t[0], t[1], &t[2], 1, 0); }, t32});
  c.push_back({"upsample_nearest2x", {rnd(g, {1, 3, 5, 6})}, [](const Inputs& t) { return ops::upsample_nearest2x(t[0]); },
               [](const Inputs& t) { return r::upsample_nearest2x(t[0]); }, 0.0});
  c.push_back({"conv2d_upsample2x", {rnd(g, {1, 8, 6, 7}), rnd(g, {16, 8, 3, 3}), rnd(g, {16})},
               [](const Inputs& t) { return ops::conv2d_upsample2x(t[0], t[1], &t[2], 1, 1); },
               [](const Inputs& t) { return r::conv2d(r::upsample_nearest2x(t[0]), t[1], &t[2], 1, 1); }, t32});
  c.push_back({"timestep_embedding", {Tensor::from_vector({0.0f, 10.5f, 999.0f}, {3})},
               [](const Inputs& t) { return ops::timestep_embedding(t[0], 256, true, 0.0f); },
               [](const Inputs& t) { return r::timestep_embedding(t[0], 256, true, 0.0f, 10000.0f); }, 5e-4});
  c.push_back({"patchify", {rnd(g, {2, 4, 8, 6})}, [](const Inputs& t) { return ops::patchify(t[0], 2); },
               [](const Inputs& t) { return r::patchify(t[0], 2); }, 0.0});
  c.push_back({"unpatchify", {rnd(g, {2, 12, 16})}, [](const Inputs& t) { return ops::unpatchify(t[0], 2, 4, 8, 6); },
               [](const Inputs& t) { return r::unpatchify(t[0], 2, 4, 8, 6); }, 0.0});
  c.push_back({"cast_bf16", {rnd(g, {7, 9})}, [](const Inputs& t) { return ops::cast(t[0], DType::bf16); },
               [](const Inputs& t) { return r::cast(t[0], DType::bf16); }, 0.0});
  c.push_back({"contiguous", {rnd(g, {3, 5, 7})}, [](const Inputs& t) { return ops::contiguous(t[0].permute({2, 0, 1})); },
               [](const Inputs& t) { return r::contiguous(t[0].permute({2, 0, 1})); }, 0.0});
  c.push_back({"cat", {rnd(g, {2, 3, 4}), rnd(g, {2, 5, 4})}, [](const Inputs& t) { return ops::cat(t, 1); },
               [](const Inputs& t) { return r::cat(t, 1); }, 0.0});
  return c;
}

void sync(Device d) {
#if STAGECRAFT_HAVE_CUDA
  if (d.is_cuda()) cudaDeviceSynchronize();
#endif
}

}  // namespace

int run_selftest(std::ostream& os) {
  std::vector<Device> devices;
  for (const DeviceInfo& info : discover_devices()) {
    os << info.device.str() << ": " << info.name;
    if (info.total_memory) {
      char mem[32];
      std::snprintf(mem, sizeof mem, ", %.1f GiB", static_cast<double>(info.total_memory) / (1u << 30));
      os << mem;
    }
    if (info.compute_capability) os << ", sm_" << info.compute_capability;
    os << "\n";
    devices.push_back(info.device);
  }
  if (!cuda_available()) os << "no CUDA device: running on CPU (" << cuda_unavailable_reason() << ")\n";

  int failures = 0, runs = 0;
  const std::vector<Check> all = checks();
  for (const Device& dev : devices) {
    for (const Check& c : all) {
      ++runs;
      char line[256];
      try {
        Inputs in;
        for (const Tensor& t : c.inputs) in.push_back(ops::to_device(t, dev));
        Tensor got = ops::to_device(c.op(in), Device::cpu());
        sync(dev);
        const Tensor expected = c.ref(c.inputs);
        const double err = reference::max_abs_diff(got, expected);
        const double tol = c.tol * std::max(1.0, reference::max_abs(expected));
        const bool ok = err <= tol;
        failures += ok ? 0 : 1;
        std::snprintf(line, sizeof line, "%-5s %-20s %-8s max_err=%.1e  tol=%.1e\n", ok ? "ok" : "FAIL", c.name,
                      dev.str().c_str(), err, tol);
      } catch (const std::exception& e) {
        ++failures;
        std::snprintf(line, sizeof line, "FAIL  %-20s %-8s %.180s\n", c.name, dev.str().c_str(), e.what());
      }
      os << line;
    }
  }
  os << "selftest: " << all.size() << " ops on " << devices.size() << " device(s), " << failures << " of " << runs
     << " failed\n";
  return failures;
}

}  // namespace stagecraft::kernels
