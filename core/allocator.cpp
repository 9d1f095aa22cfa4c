#include "core/allocator.hpp"

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <mutex>
#include <new>

#include "core/error.hpp"
#include "core/stream.hpp"

#if STAGECRAFT_HAVE_CUDA
#include <cuda_runtime_api.h>

#include "core/cuda_check.hpp"
#endif

namespace stagecraft {

namespace {

constexpr size_t kHostAlignment = 64;

struct Counter {
  std::atomic<size_t> live{0};
  std::atomic<size_t> peak{0};

  void add(size_t n) {
    const size_t now = live.fetch_add(n, std::memory_order_relaxed) + n;
    size_t prev = peak.load(std::memory_order_relaxed);
    while (now > prev && !peak.compare_exchange_weak(prev, now, std::memory_order_relaxed)) {
    }
  }
  void sub(size_t n) { live.fetch_sub(n, std::memory_order_relaxed); }
};

Counter g_host, g_pinned, g_cuda;

#if STAGECRAFT_HAVE_CUDA

// The default pool returns freed memory to the OS at every synchronize unless
// its release threshold says otherwise; keeping it lets steady-state inference
// reuse the same blocks without touching the driver.
cudaMemPool_t pool_for(int device) {
  static std::mutex mu;
  static bool configured[64] = {};
  SC_CHECK(device >= 0 && device < 64, Errc::invalid_argument,
           "allocate_cuda: device " << device << " is out of range; use 0.." << cuda_device_count() - 1);
  cudaMemPool_t pool = nullptr;
  SC_CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool, device));
  std::lock_guard<std::mutex> lock(mu);
  if (!configured[device]) {
    uint64_t threshold = UINT64_MAX;
    SC_CUDA_CHECK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &threshold));
    configured[device] = true;
  }
  return pool;
}
#endif

}  // namespace

std::shared_ptr<Storage> allocate_host(size_t bytes) {
  // aligned_alloc wants a multiple of the alignment; a 0-byte request still gets
  // a distinct, freeable pointer so empty tensors have a valid data().
  const size_t rounded = bytes == 0 ? kHostAlignment : (bytes + kHostAlignment - 1) / kHostAlignment * kHostAlignment;
  void* p = std::aligned_alloc(kHostAlignment, rounded);
  SC_CHECK(p != nullptr, Errc::io,
           "host allocation of " << bytes << " bytes failed; free memory or reduce batch size / resolution");
  g_host.add(bytes);
  return std::make_shared<Storage>(p, bytes, Device::cpu(), [bytes](void* q) {
    std::free(q);
    g_host.sub(bytes);
  });
}

std::shared_ptr<Storage> allocate_pinned(size_t bytes) {
#if STAGECRAFT_HAVE_CUDA
  if (cuda_available()) {
    void* p = nullptr;
    const cudaError_t err = cudaMallocHost(&p, bytes == 0 ? 1 : bytes);
    if (err != cudaSuccess) {
      (void)cudaGetLastError();
      SC_FAIL(Errc::cuda, "pinned allocation of " << bytes << " bytes failed: " << cudaGetErrorString(err)
                                                   << "; pinned memory is limited, stage fewer tensors at once");
    }
    g_pinned.add(bytes);
    return std::make_shared<Storage>(p, bytes, Device::cpu(), [bytes](void* q) {
      (void)cudaFreeHost(q);
      g_pinned.sub(bytes);
    });
  }
#endif
  return allocate_host(bytes);
}

std::shared_ptr<Storage> allocate_cuda(size_t bytes, int device) {
#if STAGECRAFT_HAVE_CUDA
  SC_CHECK(cuda_available(), Errc::unsupported,
           "allocate_cuda on cuda:" << device << ": " << cuda_unavailable_reason());
  SC_CHECK(device >= 0 && device < cuda_device_count(), Errc::invalid_argument,
           "allocate_cuda: there is no cuda:" << device << " (" << cuda_device_count() << " device(s) visible)");
  DeviceScope scope(device);
  cudaMemPool_t pool = pool_for(device);
  auto stream = static_cast<cudaStream_t>(current_stream());
  void* p = nullptr;
  const cudaError_t err = cudaMallocFromPoolAsync(&p, bytes == 0 ? 1 : bytes, pool, stream);
  if (err != cudaSuccess) {
    (void)cudaGetLastError();
    SC_FAIL(Errc::cuda, "CUDA allocation of " << bytes << " bytes on cuda:" << device
                                               << " failed: " << cudaGetErrorString(err)
                                               << "; reduce batch size or resolution, or place stages on other GPUs");
  }
  g_cuda.add(bytes);
  return std::make_shared<Storage>(p, bytes, Device::cuda(device), [bytes, device](void* q) {
    // Freed in the order of the stream current on the releasing thread: on a
    // lane that is the lane's stream (its last user); elsewhere it is the legacy
    // default stream, which waits for all work on the (blocking) lane streams,
    // so the block is never reused while a kernel may still read it.
    int previous = 0;
    const bool have_prev = cudaGetDevice(&previous) == cudaSuccess;
    if (have_prev && previous != device) (void)cudaSetDevice(device);
    if (cudaFreeAsync(q, static_cast<cudaStream_t>(current_stream())) != cudaSuccess) {
      (void)cudaGetLastError();  // e.g. the runtime is already unloading at exit
    }
    if (have_prev && previous != device) (void)cudaSetDevice(previous);
    g_cuda.sub(bytes);
  });
#else
  SC_FAIL(Errc::unsupported, "allocate_cuda on cuda:" << device << ": " << cuda_unavailable_reason());
#endif
}

std::shared_ptr<Storage> allocate(size_t bytes, Device device) {
  if (device.is_cpu()) return allocate_host(bytes);
  return allocate_cuda(bytes, device.index);
}

AllocatorStats allocator_stats() {
  AllocatorStats s;
  s.host_bytes_live = g_host.live.load();
  s.pinned_bytes_live = g_pinned.live.load();
  s.cuda_bytes_live = g_cuda.live.load();
  s.host_bytes_peak = g_host.peak.load();
  s.pinned_bytes_peak = g_pinned.peak.load();
  s.cuda_bytes_peak = g_cuda.peak.load();
  return s;
}

}  // namespace stagecraft
