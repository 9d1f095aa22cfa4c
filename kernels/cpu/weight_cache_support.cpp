#include "kernels/cpu/weight_cache_support.hpp"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <new>

namespace stagecraft::kernels::cpu {

int64_t cache_budget_from_env(const char* env, long long default_mb) {
  const char* e = std::getenv(env);
  const long long mb = e ? std::atoll(e) : default_mb;
  return static_cast<int64_t>(std::max<long long>(0, mb)) << 20;
}

long long physical_memory_mb() {
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
  return pages > 0 && page > 0 ? static_cast<long long>(pages) * page >> 20 : 0;
}

uint64_t weight_sample(const Tensor& w, int64_t samples) {
  const auto* base = static_cast<const unsigned char*>(w.data());
  const int64_t n = w.numel(), esz = static_cast<int64_t>(dtype_size(w.dtype()));
  const int64_t step = std::max<int64_t>(1, n / samples);
  uint64_t h = 1469598103934665603ull;
  for (int64_t i = 0; i < n; i += step)
    for (int64_t b = 0; b < esz; ++b) h = (h ^ base[i * esz + b]) * 1099511628211ull;
  return h;
}

std::shared_ptr<float> alloc_weight_floats(size_t bytes) {
  constexpr size_t kHugePage = size_t(2) << 20;
  const size_t align = bytes >= kHugePage ? kHugePage : 64;
  const size_t size = std::max<size_t>(align, (bytes + align - 1) / align * align);
  void* p = std::aligned_alloc(align, size);
  if (!p) throw std::bad_alloc();
  // Advice only: where THP is off (or `never`) the call fails or does nothing, and the
  // memory is ordinary pages.
  if (align == kHugePage) (void)madvise(p, size, MADV_HUGEPAGE);
  return std::shared_ptr<float>(static_cast<float*>(p), std::free);
}

}  // namespace stagecraft::kernels::cpu
