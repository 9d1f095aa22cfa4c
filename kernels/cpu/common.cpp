#include "kernels/cpu/common.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <mutex>
#include <thread>
#include <type_traits>
#include <vector>

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>
#define SC_CPU_AVX2 1
#else
#define SC_CPU_AVX2 0
#endif

#include "core/error.hpp"

namespace stagecraft::kernels::cpu {

// ---------------------------------------------------------------- views

Strided strided(const Tensor& t) { return {t.data(), t.dtype(), t.shape(), t.strides()}; }

Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op) {
  const size_t n = std::max(a.size(), b.size());
  Shape out(n);
  for (size_t i = 0; i < n; ++i) {
    const int64_t da = i < n - a.size() ? 1 : a[i - (n - a.size())];
    const int64_t db = i < n - b.size() ? 1 : b[i - (n - b.size())];
    SC_CHECK(da == db || da == 1 || db == 1, Errc::shape_mismatch,
             op << ": shapes " << shape_str(a) << " and " << shape_str(b)
                << " do not broadcast (dim " << i << ": " << da << " vs " << db << ")");
    out[i] = da == 1 ? db : da;
  }
  return out;
}

Strided broadcast_view(const Tensor& t, const Shape& out) {
  Strided s{t.data(), t.dtype(), out, Shape(out.size(), 0)};
  const size_t lead = out.size() - t.shape().size();
  for (size_t i = 0; i < t.shape().size(); ++i)
    s.strides[lead + i] = t.shape()[i] == 1 ? 0 : t.strides()[i];
  return s;
}

// Merges adjacent dims that are laid out as one run, so the inner loop is as long as possible.
static void coalesce(Shape& shape, Shape& strides) {
  Shape sh, st;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == 1) continue;
    if (!sh.empty() && st.back() == strides[i] * shape[i]) {
      sh.back() *= shape[i];
      st.back() = strides[i];
    } else {
      sh.push_back(shape[i]);
      st.push_back(strides[i]);
    }
  }
  if (sh.empty()) {
    sh.push_back(1);
    st.push_back(1);
  }
  shape = std::move(sh);
  strides = std::move(st);
}

// ---------------------------------------------------------------- conversions

static inline float bf16_bits_to_f32(uint16_t b) {
  uint32_t u = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

static inline uint16_t f32_to_bf16_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

void to_f32(const void* src, DType dtype, float* dst, int64_t n) {
  switch (dtype) {
    case DType::f32:
      std::memcpy(dst, src, static_cast<size_t>(n) * 4);
      return;
    case DType::f16: {
      const uint16_t* s = static_cast<const uint16_t*>(src);
      int64_t i = 0;
#if SC_CPU_AVX2
      for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i))));
#endif
      for (; i < n; ++i) dst[i] = f16_to_f32(s[i]);
      return;
    }
    case DType::bf16: {
      const uint16_t* s = static_cast<const uint16_t*>(src);
      for (int64_t i = 0; i < n; ++i) dst[i] = bf16_bits_to_f32(s[i]);
      return;
    }
    default:
      for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<float>(load_scalar(src, i, dtype));
  }
}

void from_f32(const float* src, void* dst, DType dtype, int64_t n) {
  switch (dtype) {
    case DType::f32:
      std::memcpy(dst, src, static_cast<size_t>(n) * 4);
      return;
    case DType::f16: {
      uint16_t* d = static_cast<uint16_t*>(dst);
      int64_t i = 0;
#if SC_CPU_AVX2
      for (; i + 8 <= n; i += 8)
        _mm_storeu_si128(reinterpret_cast<__m128i*>(d + i),
                         _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
#endif
      for (; i < n; ++i) d[i] = f32_to_f16(src[i]);
      return;
    }
    case DType::bf16: {
      uint16_t* d = static_cast<uint16_t*>(dst);
      for (int64_t i = 0; i < n; ++i) d[i] = f32_to_bf16_bits(src[i]);
      return;
    }
    default:
      for (int64_t i = 0; i < n; ++i) store_scalar(dst, i, dtype, src[i]);
  }
}

double load_scalar(const void* base, int64_t i, DType dtype) {
  switch (dtype) {
    case DType::f32: return static_cast<const float*>(base)[i];
    case DType::f16: return f16_to_f32(static_cast<const uint16_t*>(base)[i]);
    case DType::bf16: return bf16_bits_to_f32(static_cast<const uint16_t*>(base)[i]);
    case DType::i8: return static_cast<const int8_t*>(base)[i];
    case DType::u8: return static_cast<const uint8_t*>(base)[i];
    case DType::i32: return static_cast<const int32_t*>(base)[i];
    case DType::i64: return static_cast<double>(static_cast<const int64_t*>(base)[i]);
    case DType::f8_e4m3: return e4m3_to_f32(static_cast<const uint8_t*>(base)[i]);
  }
  return 0.0;
}

template <typename T>
static T saturate_int(double v) {
  if (std::isnan(v)) return 0;
  const double lo = static_cast<double>(std::numeric_limits<T>::lowest());
  const double hi = static_cast<double>(std::numeric_limits<T>::max());
  return static_cast<T>(std::clamp(std::trunc(v), lo, hi));
}

void store_scalar(void* base, int64_t i, DType dtype, double v) {
  switch (dtype) {
    case DType::f32: static_cast<float*>(base)[i] = static_cast<float>(v); return;
    case DType::f16: static_cast<uint16_t*>(base)[i] = f32_to_f16(static_cast<float>(v)); return;
    case DType::bf16: static_cast<uint16_t*>(base)[i] = f32_to_bf16_bits(static_cast<float>(v)); return;
    case DType::i8: static_cast<int8_t*>(base)[i] = saturate_int<int8_t>(v); return;
    case DType::u8: static_cast<uint8_t*>(base)[i] = saturate_int<uint8_t>(v); return;
    case DType::i32: static_cast<int32_t*>(base)[i] = saturate_int<int32_t>(v); return;
    case DType::i64: static_cast<int64_t*>(base)[i] = saturate_int<int64_t>(v); return;
    case DType::f8_e4m3: static_cast<uint8_t*>(base)[i] = f32_to_e4m3(static_cast<float>(v)); return;
  }
}

// Walks every inner run of a coalesced strided view; fn(src_offset_elems, dst_offset_elems, run_len, run_stride).
template <typename Fn>
static void for_each_run(Shape shape, Shape strides, Fn&& fn) {
  coalesce(shape, strides);
  const int nd = static_cast<int>(shape.size());
  const int64_t inner = shape[nd - 1], inner_stride = strides[nd - 1];
  int64_t outer = 1;
  for (int d = 0; d < nd - 1; ++d) outer *= shape[d];
  std::vector<int64_t> idx(nd, 0);
  int64_t src = 0;
  for (int64_t o = 0; o < outer; ++o) {
    fn(src, o * inner, inner, inner_stride);
    for (int d = nd - 2; d >= 0; --d) {
      src += strides[d];
      if (++idx[d] < shape[d]) break;
      src -= strides[d] * shape[d];
      idx[d] = 0;
    }
  }
}

void gather_f32(const Strided& s, float* dst) {
  if (shape_numel(s.shape) == 0) return;
  const size_t es = dtype_size(s.dtype);
  const char* base = static_cast<const char*>(s.data);
  for_each_run(s.shape, s.strides, [&](int64_t src, int64_t d, int64_t n, int64_t stride) {
    if (stride == 1) {
      to_f32(base + src * es, s.dtype, dst + d, n);
    } else if (s.dtype == DType::f32) {
      const float* p = reinterpret_cast<const float*>(base) + src;
      for (int64_t i = 0; i < n; ++i) dst[d + i] = p[i * stride];
    } else {
      for (int64_t i = 0; i < n; ++i) dst[d + i] = static_cast<float>(load_scalar(base, src + i * stride, s.dtype));
    }
  });
}

template <typename T>
static void copy_run(const char* base, int64_t src, int64_t n, int64_t stride, char* dst, int64_t d) {
  const T* p = reinterpret_cast<const T*>(base) + src;
  T* q = reinterpret_cast<T*>(dst) + d;
  for (int64_t i = 0; i < n; ++i) q[i] = p[i * stride];
}

void copy_strided(const Strided& s, void* dst) {
  if (shape_numel(s.shape) == 0) return;
  const size_t es = dtype_size(s.dtype);
  const char* base = static_cast<const char*>(s.data);
  char* out = static_cast<char*>(dst);
  for_each_run(s.shape, s.strides, [&](int64_t src, int64_t d, int64_t n, int64_t stride) {
    if (stride == 1) {
      std::memcpy(out + d * es, base + src * es, static_cast<size_t>(n) * es);
      return;
    }
    switch (es) {
      case 1: copy_run<uint8_t>(base, src, n, stride, out, d); break;
      case 2: copy_run<uint16_t>(base, src, n, stride, out, d); break;
      case 4: copy_run<uint32_t>(base, src, n, stride, out, d); break;
      default: copy_run<uint64_t>(base, src, n, stride, out, d); break;
    }
  });
}

// ---------------------------------------------------------------- F32In / F32Out

F32In::F32In(const Tensor& t) : F32In(strided(t)) {}

F32In::F32In(const Strided& s) {
  bool contiguous = true;
  int64_t expect = 1;
  for (int d = static_cast<int>(s.shape.size()) - 1; d >= 0; --d) {
    if (s.shape[d] != 1 && s.strides[d] != expect) contiguous = false;
    expect *= s.shape[d];
  }
  if (contiguous && s.dtype == DType::f32) {
    ptr_ = static_cast<const float*>(s.data);
    return;
  }
  buf_.reset(new float[std::max<int64_t>(1, shape_numel(s.shape))]);
  gather_f32(s, buf_.get());
  ptr_ = buf_.get();
}

F32Out::F32Out(const Shape& shape, DType dtype) : out_(Tensor::empty(shape, dtype)) {
  if (dtype == DType::f32) {
    ptr_ = out_.data_as<float>();
  } else {
    buf_.reset(new float[std::max<int64_t>(1, shape_numel(shape))]);
    ptr_ = buf_.get();
  }
}

Tensor F32Out::finish() {
  if (buf_) from_f32(buf_.get(), out_.data(), out_.dtype(), out_.numel());
  buf_.reset();
  return out_;
}

// ---------------------------------------------------------------- thread pool

int num_threads() {
  static const int n = [] {
    if (const char* e = std::getenv("STAGECRAFT_CPU_THREADS")) {
      const int v = std::atoi(e);
      if (v > 0) return v;
    }
    return static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  }();
  return n;
}

namespace {
// How long a worker (and a caller waiting for its workers) spins before it sleeps:
// STAGECRAFT_CPU_SPIN_US, default 200 microseconds. Sleeping at once made every parallel
// region pay a futex wake-up of a thread on an idle core; the shipped denoiser runs
// thousands of short regions per image, and a lone job's steps took 2.2x as long once
// OpenBLAS's own spinning threads (which had kept the second core awake) were gone
// (bench_pipeline, docs/kernels.md "Threads"). A short, bounded spin covers the gaps
// between regions of one op sequence without OpenBLAS's ~0.1 s of spinning after each call.
int64_t spin_ns() {
  static const int64_t ns = [] {
    if (const char* e = std::getenv("STAGECRAFT_CPU_SPIN_US")) {
      const long v = std::atol(e);
      if (v >= 0) return static_cast<int64_t>(v) * 1000;
    }
    return int64_t{200000};
  }();
  return ns;
}

// Spins (with a pause per iteration) until ready() or spin_ns() have passed; true if ready.
template <class Ready>
bool spin_until(const Ready& ready) {
  const int64_t limit = spin_ns();
  if (limit == 0) return ready();
  const auto t0 = std::chrono::steady_clock::now();
  for (;;) {
    for (int i = 0; i < 64; ++i) {
      if (ready()) return true;
#if defined(__x86_64__) || defined(__i386__)
      __builtin_ia32_pause();
#endif
    }
    if (std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0).count() >= limit)
      return ready();
  }
}

// Workers spin briefly, then sleep on a condition variable between jobs. A job is published
// as one word, job_ = (generation << 16) | chunks, after fn_, pending_ and claim_ are set.
// Chunks are claimed, not assigned: the caller and every awake worker take the next
// unclaimed chunk from claim_ = (generation << 32) | next index until none is left, so a
// worker that is late (asleep, descheduled, or slowed by pulling the caller's fresh output
// into its own cache) leaves its chunk to whoever is free instead of holding the caller at
// the end of the region. The partition itself does not change (parallel_for's chunks are
// the same ranges whoever runs them), so neither do any bits. pending_ counts the chunks
// not yet finished, so fn_ stays the job's while any claimed chunk runs; a stale worker's
// claim fails on the generation. Sleepers are counted under m_, so a wake-up is sent only
// to a thread that sleeps, and none is lost (a thread checks its condition under m_ before
// sleeping).
class Pool {
 public:
  explicit Pool(int workers) {
    for (int i = 0; i < workers; ++i) threads_.emplace_back([this] { loop(); });
  }
  ~Pool() {
    {
      std::lock_guard<std::mutex> lk(m_);
      stop_.store(true);
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
  }
  std::mutex& busy() { return busy_; }
  void run(int chunks, const std::function<void(int)>& fn) {
    fn_ = &fn;
    pending_.store(chunks);
    const uint64_t generation = (job_.load() >> 16) + 1;
    claim_.store(generation << 32);
    job_.store(generation << 16 | static_cast<uint64_t>(chunks));
    {
      std::lock_guard<std::mutex> lk(m_);
      if (sleeping_workers_ > 0) cv_.notify_all();
    }
    work(generation, chunks);
    if (!spin_until([&] { return pending_.load(std::memory_order_acquire) == 0; })) {
      std::unique_lock<std::mutex> lk(m_);
      caller_sleeps_ = true;
      done_cv_.wait(lk, [&] { return pending_.load() == 0; });
      caller_sleeps_ = false;
    }
    fn_ = nullptr;
  }

 private:
  void loop() {
    uint64_t seen = 0;
    for (;;) {
      auto ready = [&] { return stop_.load(std::memory_order_acquire) || job_.load(std::memory_order_acquire) != seen; };
      if (!spin_until(ready)) {
        std::unique_lock<std::mutex> lk(m_);
        ++sleeping_workers_;
        cv_.wait(lk, ready);
        --sleeping_workers_;
      }
      if (stop_.load()) return;
      seen = job_.load();
      work(seen >> 16, static_cast<int>(seen & 0xffff));
    }
  }
  // Claims and runs chunks of job `generation` until none is left (or another job began).
  void work(uint64_t generation, int chunks) {
    for (;;) {
      uint64_t c = claim_.load(std::memory_order_acquire);
      if ((c >> 32) != (generation & 0xffffffffu) || static_cast<int>(c & 0xffffffffu) >= chunks) return;
      if (!claim_.compare_exchange_weak(c, c + 1, std::memory_order_acq_rel)) continue;
      (*fn_)(static_cast<int>(c & 0xffffffffu));
      if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
        std::lock_guard<std::mutex> lk(m_);
        if (caller_sleeps_) done_cv_.notify_one();
      }
    }
  }
  std::vector<std::thread> threads_;
  std::mutex m_, busy_;
  std::condition_variable cv_, done_cv_;
  // Written by the caller before job_ is published, read by the workers the job needs.
  const std::function<void(int)>* fn_ = nullptr;
  std::atomic<int> pending_{0};
  std::atomic<uint64_t> job_{0};
  std::atomic<uint64_t> claim_{0};  // (generation << 32) | the next chunk to claim
  std::atomic<bool> stop_{false};
  int sleeping_workers_ = 0;  // under m_
  bool caller_sleeps_ = false;  // under m_
};

Pool& pool() {
  static Pool p(num_threads() - 1);
  return p;
}
}  // namespace

void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn,
                  int chunks_per_thread) {
  if (n <= 0) return;
  const int64_t threads = num_threads();
  const int64_t max_chunks =
      std::min<int64_t>(threads * std::max(1, chunks_per_thread), n / std::max<int64_t>(1, grain));
  if (max_chunks <= 1 || threads <= 1) {
    fn(0, n);
    return;
  }
  Pool& p = pool();
  std::unique_lock<std::mutex> lk(p.busy(), std::try_to_lock);
  if (!lk.owns_lock()) {
    fn(0, n);
    return;
  }
  const int chunks = static_cast<int>(max_chunks);
  p.run(chunks, [&](int c) {
    const int64_t b = n * c / chunks, e = n * (c + 1) / chunks;
    if (b < e) fn(b, e);
  });
}

// ---------------------------------------------------------------- exp

#if SC_CPU_AVX2
// Cephes-style exp: 2^n * p(r) with r in [-ln2/2, ln2/2].
static inline __m256 exp256(__m256 x) {
  const __m256 underflow = _mm256_cmp_ps(x, _mm256_set1_ps(-87.0f), _CMP_LT_OQ);
  x = _mm256_min_ps(x, _mm256_set1_ps(88.3762626647949f));
  x = _mm256_max_ps(x, _mm256_set1_ps(-87.0f));
  __m256 fx = _mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), _mm256_set1_ps(0.5f));
  fx = _mm256_floor_ps(fx);
  x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
  x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), x);
  const __m256 z = _mm256_mul_ps(x, x);
  __m256 y = _mm256_set1_ps(1.9875691500E-4f);
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507E-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073E-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894E-2f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459E-1f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201E-1f));
  y = _mm256_fmadd_ps(y, z, x);
  y = _mm256_add_ps(y, _mm256_set1_ps(1.0f));
  __m256i e = _mm256_cvttps_epi32(fx);
  e = _mm256_slli_epi32(_mm256_add_epi32(e, _mm256_set1_epi32(127)), 23);
  y = _mm256_mul_ps(y, _mm256_castsi256_ps(e));
  return _mm256_andnot_ps(underflow, y);
}
#endif

static inline float exp_scalar(float x) { return x < -87.0f ? 0.0f : std::exp(x); }

void exp_inplace(float* x, int64_t n) {
  int64_t i = 0;
#if SC_CPU_AVX2
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, exp256(_mm256_loadu_ps(x + i)));
#endif
  for (; i < n; ++i) x[i] = exp_scalar(x[i]);
}

void swish_inplace(float* x, int64_t n, float a) {
  int64_t i = 0;
#if SC_CPU_AVX2
  const __m256 va = _mm256_set1_ps(-a), one = _mm256_set1_ps(1.0f);
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    const __m256 e = exp256(_mm256_mul_ps(v, va));
    _mm256_storeu_ps(x + i, _mm256_div_ps(v, _mm256_add_ps(one, e)));
  }
#endif
  for (; i < n; ++i) x[i] = x[i] / (1.0f + std::exp(-a * x[i]));
}

// ---------------------------------------------------------------- reductions

template <typename Term>
static double blocked_sum(const float* x, int64_t n, Term term) {
  constexpr int64_t kBlock = 512;
  double total = 0.0;
  for (int64_t b = 0; b < n; b += kBlock) {
    const int64_t e = std::min(n, b + kBlock);
    int64_t i = b;
#if SC_CPU_AVX2
    __m256 acc = _mm256_setzero_ps();
    for (; i + 8 <= e; i += 8) acc = _mm256_add_ps(acc, term(_mm256_loadu_ps(x + i)));
    alignas(32) float lanes[8];
    _mm256_store_ps(lanes, acc);
    for (float l : lanes) total += l;
#endif
    for (; i < e; ++i) total += term(x[i]);
  }
  return total;
}

double sum_f32(const float* x, int64_t n) {
  return blocked_sum(x, n, [](auto v) { return v; });
}

double sum_sq_dev_f32(const float* x, int64_t n, float mean) {
#if SC_CPU_AVX2
  const __m256 vm = _mm256_set1_ps(mean);
#endif
  return blocked_sum(x, n, [&](auto v) {
#if SC_CPU_AVX2
    if constexpr (std::is_same_v<decltype(v), __m256>) {
      const __m256 d = _mm256_sub_ps(v, vm);
      return _mm256_mul_ps(d, d);
    } else
#endif
    {
      const double d = static_cast<double>(v) - mean;
      return d * d;
    }
  });
}

}  // namespace stagecraft::kernels::cpu
