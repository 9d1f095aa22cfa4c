// bench_pixart_ops: the two kernels a real-width PixArt transformer call spends its time in,
// alone, at PixArt-alpha's widths (hidden 1152, 16 heads x 72, a CFG pair of 256 tokens):
//
//   GEMMs     gemm_rows (the row-invariant kernel every projection runs) against OpenBLAS's
//             cblas_sgemm with its own threads, at the call's four shapes, with the weights
//             hot (one set, reused) and cold (8 sets cycled, ~20-170 MB, as the call streams
//             ~150 MB of weights from memory); GFLOP/s and the ratio to OpenBLAS cold.
//   attention self-attention (256 keys) and cross-attention (120 keys) with q, k and v
//             dense, and viewed in place in a stacked projection [B, L, n, H, D] (what the
//             model passes); ms and GFLOP/s.
//
// Medians of --reps runs (default 7) after a warm-up. The figures in docs/kernels.md ("Packed
// weights on huge pages", the strided attention note) came from these cases.
// Usage: bench_pixart_ops [--reps N]
#include <cblas.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <random>
#include <vector>

#include "bench/support/baseline_blas.hpp"
#include "bench/support/bench_util.hpp"
#include "kernels/cpu/common.hpp"
#include "kernels/cpu/gemm_rows.hpp"
#include "kernels/ops.hpp"

using namespace stagecraft;

namespace {

std::vector<float> random_floats(size_t n, float amp) {
  static std::mt19937 g(7);
  std::uniform_real_distribution<float> u(-amp, amp);
  std::vector<float> v(n);
  for (float& e : v) e = u(g);
  return v;
}

/// Median seconds of `reps` calls of fn after one warm-up call.
double median_s(int reps, const std::function<void()>& fn) {
  fn();
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    fn();
    t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return bench::median(t);
}

void gemms(int reps) {
  constexpr int64_t M = 512;  // a CFG pair of 256 tokens (256x256 image, patch 2)
  constexpr int kSets = 8;    // cycled so that each call finds its weights out of cache
  struct Shape {
    const char* what;
    int64_t K, N;
  };
  const Shape shapes[] = {{"qkv (stacked)", 1152, 3456},
                          {"attention out / cross q", 1152, 1152},
                          {"feed-forward in", 1152, 4608},
                          {"feed-forward out", 4608, 1152}};
  std::printf("GEMMs, M = %lld rows, %d threads; GFLOP/s (median of %d)\n", static_cast<long long>(M),
              kernels::cpu::num_threads(), reps);
  std::printf("%-24s %6s %6s %12s %12s %14s %9s\n", "projection", "K", "N", "rows hot", "rows cold", "OpenBLAS cold",
              "cold/BLAS");
  for (const Shape& s : shapes) {
    const std::vector<float> x = random_floats(static_cast<size_t>(M * s.K), 1.0f);
    std::vector<float> y(static_cast<size_t>(M * s.N));
    std::vector<std::vector<float>> w;
    std::vector<std::shared_ptr<const kernels::cpu::PackedWeight>> packed;
    for (int i = 0; i < kSets; ++i) {
      w.push_back(random_floats(static_cast<size_t>(s.N * s.K), 0.05f));
      packed.push_back(kernels::cpu::pack_weight(Tensor::from_vector(w.back(), {s.N, s.K})));
    }
    const double flops = 2.0 * static_cast<double>(M * s.K * s.N);
    int next = 0;
    const double hot = median_s(reps, [&] { kernels::cpu::gemm_rows(x.data(), *packed[0], nullptr, y.data(), M); });
    const double cold = median_s(reps, [&] {
      kernels::cpu::gemm_rows(x.data(), *packed[static_cast<size_t>(next++ % kSets)], nullptr, y.data(), M);
    });
    double blas = 0;
    {
      bench::BaselineBlasThreads threads(kernels::cpu::num_threads());
      blas = median_s(reps, [&] {
        const float* wi = w[static_cast<size_t>(next++ % kSets)].data();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(M), static_cast<int>(s.N),
                    static_cast<int>(s.K), 1.0f, x.data(), static_cast<int>(s.K), wi, static_cast<int>(s.K), 0.0f,
                    y.data(), static_cast<int>(s.N));
      });
    }
    std::printf("%-24s %6lld %6lld %12.1f %12.1f %14.1f %8.2fx\n", s.what, static_cast<long long>(s.K),
                static_cast<long long>(s.N), flops / hot / 1e9, flops / cold / 1e9, flops / blas / 1e9, blas / cold);
  }
}

void attention(int reps) {
  constexpr int64_t B = 2, H = 16, L = 256, D = 72;
  std::printf("\nattention, B %lld, H %lld, D %lld, %lld queries; ms (GFLOP/s), median of %d\n",
              static_cast<long long>(B), static_cast<long long>(H), static_cast<long long>(D),
              static_cast<long long>(L), reps);
  std::printf("%-28s %22s %22s\n", "keys", "q, k, v dense", "viewed in a projection");
  auto tensor = [](std::initializer_list<int64_t> shape) {
    size_t n = 1;
    for (int64_t d : shape) n *= static_cast<size_t>(d);
    return Tensor::from_vector(random_floats(n, 1.0f), shape);
  };
  auto head = [](const Tensor& t, int i) { return t.select(2, i).permute({0, 2, 1, 3}); };
  ops::AttentionOptions opt;
  opt.out_layout = ops::AttentionLayout::tokens_first;
  for (int64_t Lk : {L, int64_t{120}}) {
    // Self-attention reads q, k and v from one [B, L, 3, H, D] projection; cross-attention
    // its k and v from a [B, Lk, 2, H, D] one.
    const Tensor qkv = tensor({B, L, 3, H, D}), kv = tensor({B, Lk, 2, H, D});
    const Tensor q = head(qkv, 0), k = Lk == L ? head(qkv, 1) : head(kv, 0), v = Lk == L ? head(qkv, 2) : head(kv, 1);
    const Tensor qd = ops::contiguous(q), kd = ops::contiguous(k), vd = ops::contiguous(v);
    const double flops = 4.0 * static_cast<double>(B * H * L * Lk * D);
    const double dense = median_s(reps, [&] { ops::attention(qd, kd, vd, opt); });
    const double viewed = median_s(reps, [&] { ops::attention(q, k, v, opt); });
    std::printf("%-28s %10.2f (%7.1f) %12.2f (%7.1f)\n", Lk == L ? "256 (self)" : "120 (cross, text)", dense * 1e3,
                flops / dense / 1e9, viewed * 1e3, flops / viewed / 1e9);
  }
}

}  // namespace

int main(int argc, char** argv) {
  int reps = 7;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--reps") == 0 && i + 1 < argc) {
      reps = std::max(1, std::atoi(argv[++i]));
    } else {
      std::fprintf(stderr, "usage: bench_pixart_ops [--reps N]\n");
      return 2;
    }
  }
  gemms(reps);
  attention(reps);
  return 0;
}
