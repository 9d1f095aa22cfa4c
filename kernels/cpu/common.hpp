#pragma once
// Shared plumbing of the CPU backend: dtype conversion to and from f32 (every
// op computes in f32), strided gathers so kernels see contiguous rows, a tiny
// persistent thread pool, and a vectorised exp. Internal to kernels/cpu/.
//
//   F32In x(input);                      // no copy when input is contiguous f32
//   F32Out y(input.shape(), input.dtype());
//   for (int64_t i = 0; i < n; ++i) y.data()[i] = x.data()[i] * 2;
//   return y.finish();                   // converts back to f16/bf16 if needed
#include <cstdint>
#include <functional>
#include <memory>

#include "core/tensor.hpp"

namespace stagecraft::kernels::cpu {

/// A strided view described without a Tensor, so broadcast (stride 0) and
/// permuted layouts can be expressed before any copy happens.
struct Strided {
  const void* data = nullptr;
  DType dtype = DType::f32;
  Shape shape, strides;  // strides in elements
};
Strided strided(const Tensor& t);
/// `t` viewed with numpy broadcasting as `out` (leading dims added, size-1 dims get stride 0).
Strided broadcast_view(const Tensor& t, const Shape& out);
/// The broadcast shape of a and b; throws shape_mismatch naming `op`.
Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op);

/// Contiguous conversions between float formats.
void to_f32(const void* src, DType dtype, float* dst, int64_t n);
void from_f32(const float* src, void* dst, DType dtype, int64_t n);
/// Gathers any strided view into a contiguous f32 buffer (logical order).
void gather_f32(const Strided& s, float* dst);
/// Copies a strided view into contiguous memory of the same dtype (bytes moved, no conversion).
void copy_strided(const Strided& s, void* dst);

/// Read-only f32 data of a tensor in logical order: points into the tensor when it is
/// already contiguous f32, otherwise owns a converted copy.
class F32In {
 public:
  explicit F32In(const Tensor& t);
  explicit F32In(const Strided& s);
  const float* data() const { return ptr_; }

 private:
  std::unique_ptr<float[]> buf_;
  const float* ptr_ = nullptr;
};

/// A writable f32 buffer for an output of `dtype`; finish() returns the tensor. For f32
/// outputs the buffer is the tensor's own memory.
class F32Out {
 public:
  F32Out(const Shape& shape, DType dtype);
  float* data() { return ptr_; }
  Tensor finish();

 private:
  Tensor out_;
  std::unique_ptr<float[]> buf_;
  float* ptr_ = nullptr;
};

/// Runs fn(begin, end) over [0, n) in up to num_threads() chunks of at least `grain`
/// items. Runs inline when the work is small, when nested, or when another caller holds
/// the pool, so it never deadlocks and never oversubscribes the two cores.
///
/// `chunks_per_thread` > 1 cuts up to that many chunks per thread, which the threads claim
/// as they come free, so one that starts late or runs slower takes fewer. Only for work
/// whose bits do not depend on where the chunks fall (row-tiled GEMMs, independent
/// attention blocks, element-wise passes), since the chunk count then follows n: a
/// reduction over chunks must keep the default of 1.
void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn,
                  int chunks_per_thread = 1);
/// Worker count: STAGECRAFT_CPU_THREADS, else hardware concurrency.
int num_threads();

/// In-place exp over n floats (AVX2 polynomial, ~2 ulp); inputs below -87 give exactly 0.
void exp_inplace(float* x, int64_t n);
/// GELU of n floats (y may be s): the tanh form exactly as x·sigmoid(2u), the erf form by
/// Abramowitz-Stegun 7.1.26; the one implementation of ops::gelu and the fused epilogues.
void gelu_f32(const float* s, float* y, int64_t n, bool tanh_approximation);
/// In-place x * sigmoid(a * x) (SiLU for a = 1, quick GELU for a = 1.702).
void swish_inplace(float* x, int64_t n, float a);

/// Σ x and Σ (x - mean)² over n floats: 8-lane f32 partial sums flushed to double every
/// 512 elements, so the loop vectorises and long rows keep double-level accuracy.
double sum_f32(const float* x, int64_t n);
double sum_sq_dev_f32(const float* x, int64_t n, float mean);

/// Reads one element of any dtype as float (masks, integer casts; not for hot loops).
double load_scalar(const void* base, int64_t index, DType dtype);
void store_scalar(void* base, int64_t index, DType dtype, double v);

}  // namespace stagecraft::kernels::cpu
