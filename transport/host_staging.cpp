// Host staging (see host_staging.hpp). Compiled only in builds with CUDA.
#include "transport/host_staging.hpp"

#include <cuda_runtime_api.h>

#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include "core/cuda_check.hpp"
#include "core/device.hpp"
#include "core/stream.hpp"

namespace stagecraft::transport {

namespace {

/// Pinned buffers by capacity (powers of two from 64 KiB). Shared with the storages it
/// hands out, which give their buffer back when the last tensor over one is gone.
struct PinnedPool : std::enable_shared_from_this<PinnedPool> {
  explicit PinnedPool(size_t max_cached) : max_cached(max_cached) {}
  const size_t max_cached;
  std::mutex mu;
  std::map<size_t, std::vector<void*>> free;
  size_t cached = 0, held = 0;

  static size_t capacity_for(size_t bytes) {
    size_t cap = size_t(64) << 10;
    while (cap < bytes) cap <<= 1;
    return cap;
  }

  std::shared_ptr<Storage> take(size_t bytes) {
    const size_t cap = capacity_for(bytes);
    void* p = nullptr;
    {
      std::lock_guard lk(mu);
      auto it = free.find(cap);
      if (it != free.end() && !it->second.empty()) {
        p = it->second.back();
        it->second.pop_back();
        cached -= cap;
      }
    }
    if (!p) {
      const cudaError_t err = cudaMallocHost(&p, cap);
      if (err != cudaSuccess) {
        (void)cudaGetLastError();
        SC_FAIL(Errc::cuda, "pinned staging buffer of " << cap << " bytes: cudaMallocHost failed: "
                                                        << cudaGetErrorString(err));
      }
      std::lock_guard lk(mu);
      held += cap;
    }
    auto self = shared_from_this();
    return std::make_shared<Storage>(p, bytes, Device::cpu(), [self, cap](void* q) { self->give(q, cap); });
  }

  void give(void* p, size_t cap) {
    {
      std::lock_guard lk(mu);
      if (cached + cap <= max_cached) {
        free[cap].push_back(p);
        cached += cap;
        return;
      }
      held -= cap;
    }
    (void)cudaFreeHost(p);  // over the cache's budget: this one synchronises, rarely
  }

  ~PinnedPool() {
    for (auto& [cap, list] : free)
      for (void* p : list) (void)cudaFreeHost(p);
  }
};

}  // namespace

struct HostStager::Impl {
  std::shared_ptr<PinnedPool> pool;

  struct Item {
    PacketPtr original, staged;
    Done done;
    int device = 0;
    cudaEvent_t copied = nullptr;
    std::vector<Tensor> sources;  ///< the GPU tensors, alive until their copies have run
  };
  mutable std::mutex mu;
  std::condition_variable cv;
  std::deque<Item> queue;
  bool stopping = false;
  std::map<int, cudaStream_t> streams;  // the copy stream of each device, made on first use
  uint64_t packets = 0, bytes = 0;
  std::thread worker;

  cudaStream_t stream_for(int device) {
    std::lock_guard lk(mu);
    auto it = streams.find(device);
    if (it != streams.end()) return it->second;
    cudaStream_t s = nullptr;
    // Non-blocking: ordered after the caller's work by an explicit event, not by the
    // legacy stream's implicit synchronisation, which would also order it after unrelated work.
    SC_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    streams.emplace(device, s);
    return s;
  }

  void run() {
    for (;;) {
      Item it;
      {
        std::unique_lock lk(mu);
        cv.wait(lk, [&] { return stopping || !queue.empty(); });
        if (queue.empty()) break;  // stopping, and every staged packet answered
        it = std::move(queue.front());
        queue.pop_front();
      }
      // In staging order: one copy stream per device runs its copies in that order, so the
      // front item is the next one to finish anyway.
      (void)cudaSetDevice(it.device);
      const cudaError_t err = cudaEventSynchronize(it.copied);
      (void)cudaEventDestroy(it.copied);
      it.sources.clear();
      if (err != cudaSuccess) {
        (void)cudaGetLastError();
        it.done(std::move(it.original), std::string("copying to pinned host memory failed: ") + cudaGetErrorName(err) +
                                            " (" + cudaGetErrorString(err) + ")");
      } else {
        it.done(std::move(it.staged), "");
      }
    }
  }
};

HostStager::HostStager(size_t max_cached_bytes) : impl_(std::make_shared<Impl>()) {
  impl_->pool = std::make_shared<PinnedPool>(max_cached_bytes);
  Impl* raw = impl_.get();
  impl_->worker = std::thread([raw] { raw->run(); });
}

HostStager::~HostStager() {
  {
    std::lock_guard lk(impl_->mu);
    impl_->stopping = true;
  }
  impl_->cv.notify_all();
  if (impl_->worker.joinable()) impl_->worker.join();
  for (auto& [device, s] : impl_->streams) {
    DeviceScope scope(device);
    (void)cudaStreamDestroy(s);
  }
}

void HostStager::stage(PacketPtr packet, Done done) {
  Impl& m = *impl_;
  int device = -1;
  bool several = false;
  for (const auto& [name, t] : packet->tensors)
    if (t.defined() && t.device().is_cuda()) {
      several = several || (device >= 0 && device != t.device().index);
      device = t.device().index;
    }
  if (device < 0) return done(std::move(packet), "");
  Impl::Item item;
  try {
    SC_CHECK(!several, Errc::unsupported, "the packet holds tensors on several GPUs; stage them from one");
    DeviceScope scope(device);
    cudaStream_t s = m.stream_for(device);
    // After what the caller enqueued so far on its current stream (a lane's, or the legacy
    // default stream, which every blocking lane stream is ordered before).
    cudaEvent_t after = nullptr;
    SC_CUDA_CHECK(cudaEventCreateWithFlags(&after, cudaEventDisableTiming));
    const cudaError_t rec = cudaEventRecord(after, static_cast<cudaStream_t>(current_stream()));
    const cudaError_t wait = rec == cudaSuccess ? cudaStreamWaitEvent(s, after, 0) : rec;
    (void)cudaEventDestroy(after);  // the wait is enqueued; the event may go
    SC_CUDA_CHECK(wait);
    item.staged = std::make_shared<Packet>(*packet);
    size_t total = 0;
    for (auto& [name, t] : item.staged->tensors) {
      if (!t.defined() || !t.device().is_cuda()) continue;
      SC_CHECK(t.is_contiguous(), Errc::invalid_argument,
               "tensor '" << name << "' is not contiguous; make it contiguous before staging it");
      auto host = m.pool->take(t.nbytes());
      SC_CUDA_CHECK(cudaMemcpyAsync(host->data(), t.data(), t.nbytes(), cudaMemcpyDeviceToHost, s));
      total += t.nbytes();
      item.sources.push_back(t);
      t = Tensor::from_storage(std::move(host), 0, t.shape(), t.dtype());
    }
    SC_CUDA_CHECK(cudaEventCreateWithFlags(&item.copied, cudaEventDisableTiming));
    SC_CUDA_CHECK(cudaEventRecord(item.copied, s));
    item.original = std::move(packet);
    item.done = std::move(done);
    item.device = device;
    std::lock_guard lk(m.mu);
    m.packets += 1;
    m.bytes += total;
    m.queue.push_back(std::move(item));
  } catch (const std::exception& e) {
    if (item.copied) (void)cudaEventDestroy(item.copied);
    // Copies already enqueued read `sources`: let them finish before the tensors may go.
    if (!item.sources.empty()) {
      std::lock_guard lk(m.mu);
      auto it = m.streams.find(device);
      if (it != m.streams.end()) (void)cudaStreamSynchronize(it->second);
    }
    return done(std::move(packet), e.what());
  }
  m.cv.notify_all();
}

HostStager::Stats HostStager::stats() const {
  Stats s;
  {
    std::lock_guard lk(impl_->mu);
    s.packets = impl_->packets;
    s.bytes = impl_->bytes;
  }
  std::lock_guard lk(impl_->pool->mu);
  s.pinned_bytes = impl_->pool->held;
  return s;
}

}  // namespace stagecraft::transport
