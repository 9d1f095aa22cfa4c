// bench_kernels: throughput of the kernels at diffusion shapes on every available
// device (GFLOP/s for GEMM-like ops, GB/s for memory-bound ones; medians over
// repeats), then the same-run ratio targets with PASS/MISS:
//   CPU linear vs direct cblas_sgemm at the same shape      (target >= 0.90)
//   CPU attention 1024 tok d64 vs linear throughput         (target >= 0.40)
// Usage: bench_kernels [--quick] [--winograd]   (--quick: a sub-minute subset;
//        --winograd: only the SD-VAE-width 3x3 conv table, Winograd vs im2col vs sgemm)
#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#if STAGECRAFT_HAVE_CUDA
#include <cuda_runtime.h>
#endif

#include "bench/support/baseline_blas.hpp"
#include "core/device.hpp"
#include "kernels/cpu/cpu_ops.hpp"
#include "kernels/cpu/common.hpp"
#include "kernels/cpu/conv3x3_direct.hpp"
#include "kernels/cpu/winograd.hpp"
#include "kernels/ops.hpp"
#include "kernels/reference/reference.hpp"
#include "kernels/selftest.hpp"

using namespace stagecraft;

namespace {

void sync(Device d) {
#if STAGECRAFT_HAVE_CUDA
  if (d.is_cuda()) cudaDeviceSynchronize();
#endif
}

Tensor rnd(const Shape& s, Device d, float amp = 1.0f) {
  static std::mt19937 g(42);
  std::uniform_real_distribution<float> u(-amp, amp);
  std::vector<float> v(static_cast<size_t>(shape_numel(s)));
  for (float& e : v) e = u(g);
  return ops::to_device(Tensor::from_vector(v, s), d);
}

/// Median wall time of `reps` runs after one warm-up.
double median_s(int reps, Device d, const std::function<void()>& fn) {
  fn();
  sync(d);
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    fn();
    sync(d);
    t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

void row(const std::string& op, const std::string& shape, Device d, double secs, double amount, const char* unit) {
  std::printf("%-16s %-34s %-7s %9.3f ms %9.1f %s\n", op.c_str(), shape.c_str(), d.str().c_str(), secs * 1e3,
              amount / secs / 1e9, unit);
  std::fflush(stdout);
}

std::string dims(std::initializer_list<int64_t> v) {
  std::ostringstream os;
  bool first = true;
  for (int64_t x : v) {
    os << (first ? "" : "x") << x;
    first = false;
  }
  return os.str();
}

struct Results {
  double cpu_linear_1024_384 = 0, cpu_attention_1024 = 0;
  double attention_vs_linear_paired = 0;  // median over interleaved pairs
  std::vector<std::pair<std::string, double>> linear_vs_sgemm;  // shape, ratio
};

void bench_linear(Device d, bool quick, Results& r) {
  const std::vector<int64_t> tokens = quick ? std::vector<int64_t>{256, 1024} : std::vector<int64_t>{256, 1024, 4096};
  for (int64_t T : tokens)
    for (int64_t C : {384, 1152}) {
      Tensor x = rnd({T, C}, d), w = rnd({C, C}, d, 0.05f), b = rnd({C}, d);
      const double flops = 2.0 * T * C * C;
      const int reps = flops > 5e9 ? 3 : (quick ? 5 : 9);
      if (d.is_cpu()) {
        // Interleave the op and the raw GEMM so both see the same machine load.
        std::vector<float> out(static_cast<size_t>(T * C));
        const float* px = x.data_as<float>();
        const float* pw = w.data_as<float>();
        std::vector<double> tl, ts;
        for (int i = 0; i < reps + 1; ++i) {
          auto t0 = std::chrono::steady_clock::now();
          Tensor y = ops::linear(x, w, &b);
          auto t1 = std::chrono::steady_clock::now();
          {
            const bench::BaselineBlasThreads baseline(kernels::cpu::num_threads());
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(T), static_cast<int>(C),
                        static_cast<int>(C), 1.0f, px, static_cast<int>(C), pw, static_cast<int>(C), 0.0f,
                        out.data(), static_cast<int>(C));
          }
          auto t2 = std::chrono::steady_clock::now();
          if (i == 0) continue;  // warm-up
          tl.push_back(std::chrono::duration<double>(t1 - t0).count());
          ts.push_back(std::chrono::duration<double>(t2 - t1).count());
        }
        // Ratio of each interleaved pair, then the median: robust to load bursts on shared cores.
        std::vector<double> pr;
        for (size_t i = 0; i < tl.size(); ++i) pr.push_back(ts[i] / tl[i]);
        std::sort(pr.begin(), pr.end());
        std::sort(tl.begin(), tl.end());
        std::sort(ts.begin(), ts.end());
        const double sl = tl[tl.size() / 2], ss = ts[ts.size() / 2];
        row("linear+bias", dims({T, C}) + " -> " + std::to_string(C), d, sl, flops, "GFLOP/s");
        row("cblas_sgemm", dims({T, C}) + " -> " + std::to_string(C), d, ss, flops, "GFLOP/s");
        r.linear_vs_sgemm.push_back({dims({T, C, C}), pr[pr.size() / 2]});
        if (T == 1024 && C == 384) r.cpu_linear_1024_384 = flops / sl;
      } else {
        const double s = median_s(reps * 3, d, [&] { ops::linear(x, w, &b); });
        row("linear+bias", dims({T, C}) + " -> " + std::to_string(C), d, s, flops, "GFLOP/s");
      }
    }
}

void bench_attention(Device d, bool quick, Results& r) {
  struct S { int64_t L, D; };
  std::vector<S> shapes = {{1024, 64}, {256, 64}};
  if (!quick) shapes.push_back({4096, 64});
  for (const S& s : shapes)
    for (bool causal : {false, true}) {
      if (quick && causal) continue;
      const int64_t H = 384 / s.D;
      Tensor q = rnd({1, H, s.L, s.D}, d), k = rnd({1, H, s.L, s.D}, d), v = rnd({1, H, s.L, s.D}, d);
      ops::AttentionOptions o;
      o.causal = causal;
      const double flops = 4.0 * H * s.L * s.L * s.D;  // QKᵀ and PV, causal counted as full
      const int reps = s.L >= 4096 ? 2 : (s.L >= 1024 ? 5 : 9);
      const double secs = median_s(d.is_cuda() ? reps * 4 : reps, d, [&] { ops::attention(q, k, v, o); });
      row(causal ? "attention causal" : "attention", dims({1, H, s.L, s.D}), d, secs, flops, "GFLOP/s");
      if (d.is_cpu() && s.L == 1024 && !causal) {
        r.cpu_attention_1024 = flops / secs;
        // Interleave attention with linear 1024x384 -> 384 (same tokens, same model width).
        Tensor x = rnd({1024, 384}, d), w = rnd({384, 384}, d, 0.05f), b = rnd({384}, d);
        const double lin_flops = 2.0 * 1024 * 384 * 384;
        std::vector<double> pr;
        for (int i = 0; i < (quick ? 5 : 9); ++i) {
          auto t0 = std::chrono::steady_clock::now();
          ops::attention(q, k, v, o);
          auto t1 = std::chrono::steady_clock::now();
          ops::linear(x, w, &b);
          auto t2 = std::chrono::steady_clock::now();
          const double ta = std::chrono::duration<double>(t1 - t0).count();
          const double tl = std::chrono::duration<double>(t2 - t1).count();
          pr.push_back((flops / ta) / (lin_flops / tl));
        }
        std::sort(pr.begin(), pr.end());
        r.attention_vs_linear_paired = pr[pr.size() / 2];
      }
    }
}

void bench_conv(Device d, bool quick) {
  struct S { int64_t hw, c; };
  std::vector<S> shapes = {{64, 128}, {64, 256}};
  if (!quick) shapes.insert(shapes.end(), {{64, 512}, {128, 128}, {128, 256}});
  for (const S& s : shapes) {
    Tensor x = rnd({1, s.c, s.hw, s.hw}, d), w3 = rnd({s.c, s.c, 3, 3}, d, 0.05f), w1 = rnd({s.c, s.c, 1, 1}, d, 0.05f),
           b = rnd({s.c}, d);
    const double f3 = 2.0 * s.c * s.c * 9 * s.hw * s.hw, f1 = 2.0 * s.c * s.c * s.hw * s.hw;
    const int reps = f3 > 2e10 ? 2 : 3;
    const int dr = d.is_cuda() ? 10 : 1;
    row("conv2d 3x3", dims({1, s.c, s.hw, s.hw}) + " -> " + std::to_string(s.c), d,
        median_s(reps * dr, d, [&] { ops::conv2d(x, w3, &b, 1, 1); }), f3, "GFLOP/s");
    row("conv2d 1x1", dims({1, s.c, s.hw, s.hw}) + " -> " + std::to_string(s.c), d,
        median_s(reps * dr, d, [&] { ops::conv2d(x, w1, &b, 1, 0); }), f1, "GFLOP/s");
    if (s.hw == 64 && s.c == 256)
      row("conv2d 3x3 s2", dims({1, s.c, s.hw, s.hw}) + " -> " + std::to_string(s.c), d,
          median_s(reps * dr, d, [&] { ops::conv2d(x, w3, &b, 2, 1); }), f3 / 4, "GFLOP/s");
  }
}

// The CPU's direct 3x3 kernel against the im2col + sgemm path on the same input, at the
// VAE decoder's small maps (the shipped model's 8..32 px; SD's 64 px boundary case).
// Interleaved pairs, so both sides see the same machine load; prints gemm time / direct time.
void bench_conv_direct(bool quick) {
  struct S { int64_t hw, c; };
  std::vector<S> shapes = {{8, 64}, {16, 64}, {32, 32}, {32, 64}};
  if (!quick) shapes.insert(shapes.end(), {{32, 128}, {64, 64}});
  const Device cpu = Device::cpu();
  for (const S& s : shapes) {
    Tensor x = rnd({1, s.c, s.hw, s.hw}, cpu), w = rnd({s.c, s.c, 3, 3}, cpu, 0.05f), b = rnd({s.c}, cpu);
    const double flops = 2.0 * s.c * s.c * 9 * s.hw * s.hw;
    const int pairs = quick ? 15 : 41;
    const int inner = std::max<int>(1, static_cast<int>(2e8 / flops));
    std::vector<double> ratio, td, tg;
    for (int i = 0; i <= pairs; ++i) {
      const auto t0 = std::chrono::steady_clock::now();
      for (int k = 0; k < inner; ++k) ops::conv2d(x, w, &b, 1, 1);
      const auto t1 = std::chrono::steady_clock::now();
      for (int k = 0; k < inner; ++k) kernels::cpu::conv2d_gemm(x, w, &b, 1, 1);
      const auto t2 = std::chrono::steady_clock::now();
      if (i == 0) continue;  // warm-up
      const double a = std::chrono::duration<double>(t1 - t0).count() / inner;
      const double g = std::chrono::duration<double>(t2 - t1).count() / inner;
      td.push_back(a);
      tg.push_back(g);
      ratio.push_back(g / a);
    }
    for (auto* v : {&ratio, &td, &tg}) std::sort(v->begin(), v->end());
    const size_t m = ratio.size() / 2;
    std::printf("conv2d 3x3 %-26s ops %8.1f us (%5.1f GFLOP/s)  im2col+sgemm %8.1f us (%5.1f GFLOP/s)  "
                "speed-up %.2fx\n",
                (dims({1, s.c, s.hw, s.hw}) + " -> " + std::to_string(s.c)).c_str(), td[m] * 1e6, flops / td[m] / 1e9,
                tg[m] * 1e6, flops / tg[m] / 1e9, ratio[m]);
  }
}

// The CPU's 3x3 stride-1 paths on the same input, one of each per round, rounds
// interleaved so every path sees the same load; medians over rounds:
//   im2col  im2col + sgemm (conv2d_gemm)
//   direct  the direct AVX2 kernel, only where conv2d took it before Winograd (<= 32 MFLOP)
//   F4, F2  Winograd F(4x4,3x3) and F(2x2,3x3), weights from the cache (as in a model)
//   op      ops::conv2d, i.e. whichever path conv2d.cpp now picks for the shape
//   sgemm   a square 1536^3 sgemm: the machine's GEMM rate in this round
// GFLOP/s-equivalent = direct-convolution FLOPs (2·O·I·9·H·W) / time; "op/prev" is the
// median per-round ratio of the previous path's time (direct where it applied, else
// im2col) to the op's; F4/im2c and F4/F2 likewise (time of the second / time of F4). err: max |path - im2col| / max(1, max |im2col|) at Kaiming-scaled
// weights, the VAE's regime.
void bench_conv_winograd(bool quick) {
  struct S { int64_t ci, co, hw; };
  // The SD-VAE decoder's 3x3 layers at a 256x256 image (and its conv_in / conv_out), then
  // smaller maps and channel counts where conv2d's choice of path changes (docs/kernels.md).
  std::vector<S> shapes = {{512, 512, 32}, {512, 512, 64}, {512, 256, 128}, {256, 256, 128}, {256, 128, 256},
                           {128, 128, 256}, {4, 512, 32},  {128, 3, 256},   {128, 128, 64},  {64, 64, 64},
                           {64, 64, 32},    {32, 32, 32},  {128, 128, 16},  {64, 64, 16},    {32, 32, 16}};
  if (quick) shapes = {{512, 512, 32}, {256, 256, 64}, {64, 64, 32}, {64, 64, 16}, {32, 32, 16}};
  const Device cpu = Device::cpu();
  const int64_t G = 1536;
  Tensor ga = rnd({G, G}, cpu), gb = rnd({G, G}, cpu);
  std::vector<float> gc(static_cast<size_t>(G * G));
  const double gflop = 2.0 * G * G * G;
  std::printf("%-20s %7s %7s %7s %7s %7s %7s | %7s %7s %7s %7s | %8s %8s\n", "conv 3x3 s1 p1", "im2col", "direct",
              "F4", "F2", "op", "sgemm", "op/prev", "F4/im2c", "F4/F2", "op/gemm", "err F4", "err F2");
  for (const S& s : shapes) {
    Tensor x = rnd({1, s.ci, s.hw, s.hw}, cpu), w = rnd({s.co, s.ci, 3, 3}, cpu, 1.0f / std::sqrt(9.0f * s.ci)),
           b = rnd({s.co}, cpu, 0.1f);
    const double flops = 2.0 * s.co * s.ci * 9 * s.hw * s.hw;
    const bool had_direct = flops <= 32e6 && kernels::cpu::conv3x3_direct_available() &&
                            s.ci * (s.hw + 2) * ((s.hw + 7) / 8 * 8 + 2) * 4 <= (1 << 20);
    const int rounds = quick ? 3 : (flops > 1e10 ? 5 : 9);
    const int inner = std::max<int>(1, static_cast<int>(1e8 / flops));
    std::vector<double> tg, td, t4, t2, to, ts, rop, r4, r42;
    Tensor yg, y4, y2, yd = Tensor::empty({1, s.co, s.hw, s.hw}, DType::f32);
    for (int i = 0; i <= rounds; ++i) {
      using clk = std::chrono::steady_clock;
      auto timed = [&](const std::function<void()>& fn) {
        const auto t0 = clk::now();
        for (int k = 0; k < inner; ++k) fn();
        return std::chrono::duration<double>(clk::now() - t0).count() / inner;
      };
      const double g = timed([&] { yg = kernels::cpu::conv2d_gemm(x, w, &b, 1, 1); });
      const double dr = had_direct ? timed([&] {
        kernels::cpu::conv3x3_direct(x.data_as<float>(), w.data_as<float>(), b.data_as<float>(), yd.data_as<float>(), 1,
                                     s.ci, s.hw, s.hw, s.co);
      }) : 0.0;
      const double f4 = timed([&] { y4 = kernels::cpu::conv2d_winograd(x, w, &b, 4); });
      const double f2 = timed([&] { y2 = kernels::cpu::conv2d_winograd(x, w, &b, 2); });
      const double op = timed([&] { ops::conv2d(x, w, &b, 1, 1); });
      const bench::BaselineBlasThreads baseline(kernels::cpu::num_threads());
      const auto t0 = clk::now();
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(G), static_cast<int>(G),
                  static_cast<int>(G), 1.0f, ga.data_as<float>(), static_cast<int>(G), gb.data_as<float>(),
                  static_cast<int>(G), 0.0f, gc.data(), static_cast<int>(G));
      const double sg = std::chrono::duration<double>(clk::now() - t0).count();
      if (i == 0) continue;  // warm-up (and the weight transforms, which the cache then keeps)
      tg.push_back(g);
      td.push_back(dr);
      t4.push_back(f4);
      t2.push_back(f2);
      to.push_back(op);
      ts.push_back(sg);
      rop.push_back((had_direct ? dr : g) / op);
      r4.push_back(g / f4);
      r42.push_back(f2 / f4);
    }
    for (auto* v : {&tg, &td, &t4, &t2, &to, &ts, &rop, &r4, &r42}) std::sort(v->begin(), v->end());
    const size_t m = tg.size() / 2;
    const double scale = std::max(1.0, kernels::reference::max_abs(yg));
    const double e4 = kernels::reference::max_abs_diff(y4, yg) / scale, e2 = kernels::reference::max_abs_diff(y2, yg) / scale;
    const double gs = gflop / ts[m];
    auto rate = [&](double t) { return flops / t / 1e9; };
    char direct[16] = "      -";
    if (had_direct) std::snprintf(direct, sizeof direct, "%7.1f", rate(td[m]));
    std::printf("%-20s %7.1f %7s %7.1f %7.1f %7.1f %7.1f | %6.2fx %6.2fx %6.2fx %6.2fx | %8.1e %8.1e\n",
                (dims({s.ci, s.hw, s.hw}) + ">" + std::to_string(s.co)).c_str(), rate(tg[m]), direct, rate(t4[m]),
                rate(t2[m]), rate(to[m]), gs / 1e9, rop[m], r4[m], r42[m], rate(to[m]) / (gs / 1e9), e4, e2);
  }
}

void bench_memory_bound(Device d, bool quick) {
  const int reps = d.is_cuda() ? 20 : (quick ? 3 : 7);
  const int64_t C = quick ? 128 : 256;
  {
    Tensor x = rnd({1, C, 128, 128}, d), w = rnd({C}, d), b = rnd({C}, d);
    const double bytes = 2.0 * x.nbytes();
    row("group_norm+silu", dims({1, C, 128, 128}) + " g32", d,
        median_s(reps, d, [&] { ops::group_norm(x, 32, &w, &b, 1e-6f, true); }), bytes, "GB/s");
    row("upsample 2x", dims({1, C, 128, 128}), d, median_s(reps, d, [&] { ops::upsample_nearest2x(x); }),
        5.0 * x.nbytes(), "GB/s");
  }
  {
    Tensor x = rnd({4096, 1152}, d), w = rnd({1152}, d), b = rnd({1152}, d), y = rnd({4096, 1152}, d);
    Tensor sh = rnd({1, 1152}, d), sc = rnd({1, 1152}, d);
    const double n = static_cast<double>(x.nbytes());
    row("layer_norm", "4096x1152", d, median_s(reps, d, [&] { ops::layer_norm(x, &w, &b, 1e-6f); }), 2 * n, "GB/s");
    row("rms_norm", "4096x1152", d, median_s(reps, d, [&] { ops::rms_norm(x, &w, 1e-6f); }), 2 * n, "GB/s");
    row("softmax", "4096x1152", d, median_s(reps, d, [&] { ops::softmax(x); }), 2 * n, "GB/s");
    row("add", "4096x1152", d, median_s(reps, d, [&] { ops::add(x, y); }), 3 * n, "GB/s");
    row("add bias bcast", "4096x1152 + 1152", d, median_s(reps, d, [&] { ops::add(x, b); }), 2 * n, "GB/s");
    row("axpby", "4096x1152", d, median_s(reps, d, [&] { ops::axpby(x, 0.5f, y, 0.5f); }), 3 * n, "GB/s");
    row("modulate", "1x4096x1152", d,
        median_s(reps, d, [&] { ops::modulate(x.reshape({1, 4096, 1152}), sh, sc); }), 2 * n, "GB/s");
    row("silu", "4096x1152", d, median_s(reps, d, [&] { ops::silu(x); }), 2 * n, "GB/s");
    row("gelu tanh", "4096x1152", d, median_s(reps, d, [&] { ops::gelu(x, true); }), 2 * n, "GB/s");
    row("gelu erf", "4096x1152", d, median_s(reps, d, [&] { ops::gelu(x); }), 2 * n, "GB/s");
    row("cast f32->bf16", "4096x1152", d, median_s(reps, d, [&] { ops::cast(x, DType::bf16); }), 1.5 * n, "GB/s");
    Tensor img = rnd({1, 4, 128, 128}, d);
    row("patchify p2", "1x4x128x128", d, median_s(reps, d, [&] { ops::patchify(img, 2); }), 2.0 * img.nbytes(), "GB/s");
  }
}

const char* verdict(bool ok) { return ok ? "PASS" : "MISS"; }

}  // namespace

int main(int argc, char** argv) {
  bool quick = false, winograd_only = false;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--quick") == 0) {
      quick = true;
    } else if (std::strcmp(argv[i], "--winograd") == 0) {
      winograd_only = true;
    } else {
      std::fprintf(stderr, "usage: bench_kernels [--quick] [--winograd]\n");
      return 2;
    }
  }
  if (winograd_only) {
    std::printf("CPU conv2d 3x3 at SD-VAE widths (threads: %d)\n", kernels::cpu::num_threads());
    bench_conv_winograd(quick);
    return 0;
  }
  // Validate before timing: every op once per device against the naive reference.
  std::ostringstream log;
  const int failed = kernels::run_selftest(log);
  if (failed) std::printf("%s", log.str().c_str());
  std::printf("validation: every op matches its reference on every device (%d failed)\n", failed);
  if (failed) return 1;

  std::vector<Device> devices{Device::cpu()};
  for (int i = 0; i < cuda_device_count(); ++i) devices.push_back(Device::cuda(i));
  if (!cuda_available()) std::printf("no CUDA device: CPU only (%s)\n", cuda_unavailable_reason().c_str());
  std::printf("%-16s %-34s %-7s %12s %14s\n", "op", "shape", "device", "median", "throughput");
  Results r;
  for (const Device& d : devices) {
    bench_linear(d, quick, r);
    bench_attention(d, quick, r);
    bench_conv(d, quick);
    bench_memory_bound(d, quick);
  }

  std::printf("\nCPU conv2d 3x3 on small maps: the op (direct kernel up to 32 MFLOP and 1 MiB of padded input) vs im2col+sgemm, "
              "medians of interleaved pairs\n");
  bench_conv_direct(quick);

  std::printf("\nCPU conv2d 3x3 at SD-VAE widths: Winograd F(4x4) / F(2x2) vs im2col+sgemm vs sgemm %dx%dx%d, "
              "GFLOP/s-equivalent (direct-conv FLOPs / time), medians of interleaved rounds; ratios are medians of "
              "per-round ratios\n", 1536, 1536, 1536);
  bench_conv_winograd(quick);

  std::printf("\nratios (same run)\n");
  double log_sum = 0;
  double at_1024_1152 = 0;
  for (const auto& [shape, ratio] : r.linear_vs_sgemm) {
    std::printf("  linear vs cblas_sgemm %-16s %.3f\n", shape.c_str(), ratio);
    log_sum += std::log(ratio);
    if (shape == "1024x1152x1152") at_1024_1152 = ratio;
  }
  const double geo = std::exp(log_sum / std::max<size_t>(1, r.linear_vs_sgemm.size()));
  std::printf("CPU linear vs direct cblas_sgemm at the same shape (1024x1152x1152, median of interleaved pairs): "
              "%.3f (geomean over shapes %.3f), "
              "target >= 0.90: %s\n",
              at_1024_1152, geo, verdict(at_1024_1152 >= 0.90));
  const double att_ratio = r.attention_vs_linear_paired;
  std::printf("CPU attention 1024 tok d64 vs linear 1024x384 throughput: %.3f (median of interleaved pairs; "
              "separate medians %.1f vs %.1f GFLOP/s), target >= 0.40: %s\n",
              att_ratio, r.cpu_attention_1024 / 1e9, r.cpu_linear_1024_384 / 1e9, verdict(att_ratio >= 0.40));
  return 0;
}
