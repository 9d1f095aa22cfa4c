// bench_kernels_gpu: validates the CUDA ops against the CPU backend once, then times
//  - bf16 linear through ops::linear against cublasGemmEx called directly at the same
//    shapes (target: ops >= 0.80x cuBLAS), and
//  - the fused attention at 4096 tokens for head dims 64, 72 and 128, in TFLOP/s and
//    as a fraction of the bf16 linear rate (target >= 0.30).
// CUDA-event timing on one stream, median of the iterations; one PASS/MISS line per target.
//
//   bench_kernels_gpu            # full run
//   bench_kernels_gpu --quick    # fewer iterations
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "core/device.hpp"
#include "core/error.hpp"
#include "core/stream.hpp"
#include "kernels/ops.hpp"

using namespace stagecraft;

namespace {

#define BENCH_CUDA(expr)                                                                          \
  do {                                                                                            \
    cudaError_t e_ = (expr);                                                                      \
    if (e_ != cudaSuccess) SC_FAIL(Errc::cuda, #expr " failed: " << cudaGetErrorString(e_));      \
  } while (0)
#define BENCH_CUBLAS(expr)                                                                        \
  do {                                                                                            \
    cublasStatus_t s_ = (expr);                                                                   \
    if (s_ != CUBLAS_STATUS_SUCCESS) SC_FAIL(Errc::cuda, #expr " failed: " << cublasGetStatusString(s_)); \
  } while (0)

int g_failures = 0;

Tensor rand_cpu(const Shape& shape, DType dtype, float amp, uint32_t seed) {
  std::mt19937 g(seed);
  std::uniform_real_distribution<float> u(-amp, amp);
  std::vector<float> v(static_cast<size_t>(shape_numel(shape)));
  for (float& e : v) e = u(g);
  return Tensor::from_vector(v, shape).to(dtype);
}

/// Max |got - want| relative to max(1, max |want|); both moved to the host as f32.
double rel_error(const Tensor& got_dev, const Tensor& want_cpu) {
  const Tensor got = ops::to_device(got_dev, Device::cpu());
  BENCH_CUDA(cudaStreamSynchronize(static_cast<cudaStream_t>(current_stream())));
  const std::vector<float> a = got.to_vector(), b = want_cpu.to_vector();
  if (a.size() != b.size()) return INFINITY;
  double err = 0.0, mag = 1.0;
  for (size_t i = 0; i < a.size(); ++i) {
    err = std::max(err, static_cast<double>(std::fabs(a[i] - b[i])));
    mag = std::max(mag, static_cast<double>(std::fabs(b[i])));
    if (std::isnan(a[i]) != std::isnan(b[i])) return INFINITY;
  }
  return err / mag;
}

void report_validation(const std::string& what, double err, double tol) {
  const bool ok = err <= tol;
  if (!ok) ++g_failures;
  std::printf("validate %-44s rel_err %.2e (tol %.0e) %s\n", what.c_str(), err, tol, ok ? "OK" : "FAIL");
}

/// Median milliseconds of `fn` over `iters` runs, each bracketed by CUDA events.
double time_ms(const std::function<void()>& fn, int iters) {
  const cudaStream_t s = static_cast<cudaStream_t>(current_stream());
  for (int i = 0; i < 3; ++i) fn();  // warm-up: plans, pool, clocks
  std::vector<cudaEvent_t> ev(2 * iters);
  for (auto& e : ev) BENCH_CUDA(cudaEventCreate(&e));
  for (int i = 0; i < iters; ++i) {
    BENCH_CUDA(cudaEventRecord(ev[2 * i], s));
    fn();
    BENCH_CUDA(cudaEventRecord(ev[2 * i + 1], s));
  }
  BENCH_CUDA(cudaStreamSynchronize(s));
  std::vector<double> ms(iters);
  for (int i = 0; i < iters; ++i) {
    float t = 0.0f;
    BENCH_CUDA(cudaEventElapsedTime(&t, ev[2 * i], ev[2 * i + 1]));
    ms[i] = t;
  }
  for (auto& e : ev) cudaEventDestroy(e);
  std::sort(ms.begin(), ms.end());
  return ms[iters / 2];
}

void validate(const Device gpu) {
  {
    const Tensor x = rand_cpu({256, 1152}, DType::bf16, 1.0f, 1), w = rand_cpu({576, 1152}, DType::bf16, 0.05f, 2),
                 b = rand_cpu({576}, DType::bf16, 0.5f, 3);
    const Tensor want = ops::linear(x, w, &b);
    const Tensor xd = ops::to_device(x, gpu), wd = ops::to_device(w, gpu), bd = ops::to_device(b, gpu);
    report_validation("linear bf16 [256,1152]x[576,1152]^T + bias", rel_error(ops::linear(xd, wd, &bd), want), 3e-2);
  }
  for (int D : {64, 72, 128}) {
    for (int variant = 0; variant < 3; ++variant) {
      const int B = 2, H = 3, Lq = 200, Lk = variant == 2 ? 77 : 200;
      const Tensor q = rand_cpu({B, H, Lq, D}, DType::bf16, 1.0f, 10 + D), k = rand_cpu({B, H, Lk, D}, DType::bf16, 1.0f, 11 + D),
                   v = rand_cpu({B, H, Lk, D}, DType::bf16, 1.0f, 12 + D);
      std::vector<float> m(static_cast<size_t>(B * Lk), 1.0f);
      for (int j = Lk - 20; j < Lk; ++j) m[static_cast<size_t>(j)] = 0.0f;          // batch 0: padded tail
      for (int j = 0; j < Lk; ++j) m[static_cast<size_t>(Lk + j)] = 0.0f;           // batch 1: fully masked
      const Tensor mask = Tensor::from_vector(m, {B, Lk}).to(DType::u8);
      ops::AttentionOptions opt;
      opt.causal = variant == 1;
      if (variant == 2) opt.key_padding_mask = &mask;
      const Tensor want = ops::attention(q, k, v, opt);
      const Tensor maskd = ops::to_device(mask, gpu);
      ops::AttentionOptions optd = opt;
      if (variant == 2) optd.key_padding_mask = &maskd;
      const Tensor got = ops::attention(ops::to_device(q, gpu), ops::to_device(k, gpu), ops::to_device(v, gpu), optd);
      const char* what = variant == 0 ? "plain" : variant == 1 ? "causal" : "key padding (Lk 77, one row fully masked)";
      report_validation("attention bf16 d" + std::to_string(D) + " " + what, rel_error(got, want), 3e-2);
    }
  }
}

struct LinearResult {
  double ops_ms, cublas_ms;
};

LinearResult bench_linear(cublasHandle_t h, const Device gpu, int64_t M, int64_t K, int64_t N, int iters) {
  const Tensor x = ops::to_device(rand_cpu({M, K}, DType::bf16, 1.0f, 21), gpu);
  const Tensor w = ops::to_device(rand_cpu({N, K}, DType::bf16, 0.05f, 22), gpu);
  Tensor y = ops::linear(x, w);  // also the cuBLAS output buffer
  const double ops_ms = time_ms([&] { (void)ops::linear(x, w); }, iters);
  const float alpha = 1.0f, beta = 0.0f;
  // Row-major y[M,N] = x·wᵀ is column-major yᵀ[N,M] = wᵀ-stored-as-(K×N)ᵀ · x-stored-as-(K×M).
  const double cublas_ms = time_ms(
      [&] {
        BENCH_CUBLAS(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(N), static_cast<int>(M),
                                  static_cast<int>(K), &alpha, w.data(), CUDA_R_16BF, static_cast<int>(K), x.data(),
                                  CUDA_R_16BF, static_cast<int>(K), &beta, y.data(), CUDA_R_16BF, static_cast<int>(N),
                                  CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
      },
      iters);
  return {ops_ms, cublas_ms};
}

}  // namespace

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  if (!cuda_available()) {
    const std::string why = cuda_unavailable_reason();
    std::printf("%s\n", why.rfind("no CUDA device", 0) == 0 ? why.c_str() : ("no CUDA device: " + why).c_str());
    return 0;
  }
  try {
    const Device gpu = Device::cuda(0);
    BENCH_CUDA(cudaSetDevice(0));
    cudaDeviceProp prop{};
    BENCH_CUDA(cudaGetDeviceProperties(&prop, 0));
    std::printf("bench_kernels_gpu on %s (sm_%d%d)\n", prop.name, prop.major, prop.minor);
    cudaStream_t stream;
    BENCH_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    StreamGuard guard(stream);
    cublasHandle_t h;
    BENCH_CUBLAS(cublasCreate(&h));
    BENCH_CUBLAS(cublasSetStream(h, stream));
    const int iters = quick ? 10 : 30;

    validate(gpu);

    std::printf("\n%-34s %10s %10s %9s %9s\n", "linear bf16 (tokens x K -> N)", "ops ms", "cuBLAS ms", "TFLOP/s", "ratio");
    double linear_rate = 0.0;  // TFLOP/s of ops::linear at the largest shape
    for (int64_t M : {256, 1024, 4096}) {
      for (auto [K, N] : {std::pair<int64_t, int64_t>{1152, 1152}, {1152, 4608}, {4608, 1152}}) {
        const LinearResult r = bench_linear(h, gpu, M, K, N, iters);
        const double tflops = 2.0 * M * N * K / (r.ops_ms * 1e-3) / 1e12, ratio = r.cublas_ms / r.ops_ms;
        if (M == 4096 && K == 1152 && N == 4608) linear_rate = tflops;
        char label[64];
        std::snprintf(label, sizeof label, "%lld x %lld -> %lld", (long long)M, (long long)K, (long long)N);
        std::printf("%-34s %10.4f %10.4f %9.1f %8.2fx %s\n", label, r.ops_ms, r.cublas_ms, tflops, ratio,
                    ratio >= 0.80 ? "PASS" : "MISS (target >= 0.80x cuBLAS)");
      }
    }

    std::printf("\n%-34s %10s %9s %12s\n", "attention bf16, 4096 tokens", "ms", "TFLOP/s", "vs linear");
    for (int D : {64, 72, 128}) {
      const int64_t B = 2, L = 4096, H = D == 72 ? 16 : 1152 / D;
      const Tensor q = ops::to_device(rand_cpu({B, H, L, D}, DType::bf16, 1.0f, 31), gpu);
      const Tensor k = ops::to_device(rand_cpu({B, H, L, D}, DType::bf16, 1.0f, 32), gpu);
      const Tensor v = ops::to_device(rand_cpu({B, H, L, D}, DType::bf16, 1.0f, 33), gpu);
      const double ms = time_ms([&] { (void)ops::attention(q, k, v); }, iters);
      const double tflops = 4.0 * B * H * L * L * D / (ms * 1e-3) / 1e12, ratio = tflops / linear_rate;
      char label[64];
      std::snprintf(label, sizeof label, "d%d (B %lld, H %lld)", D, (long long)B, (long long)H);
      std::printf("%-34s %10.4f %9.1f %11.2fx %s\n", label, ms, tflops, ratio,
                  ratio >= 0.30 ? "PASS" : "MISS (target >= 0.30x linear)");
    }
    cublasDestroy(h);
    BENCH_CUDA(cudaStreamSynchronize(stream));
  } catch (const std::exception& e) {
    std::printf("bench_kernels_gpu failed: %s\n", e.what());
    return 1;
  }
  if (g_failures) {
    std::printf("%d validation(s) FAILED\n", g_failures);
    return 1;
  }
  return 0;
}
