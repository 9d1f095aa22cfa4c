#include "core/lane.hpp"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <mutex>
#include <set>
#include <thread>
#include <utility>

#include "core/error.hpp"

#if STAGECRAFT_HAVE_CUDA
#include <cuda_runtime_api.h>

#include "core/cuda_check.hpp"
#endif

namespace stagecraft {

namespace {

using Clock = std::chrono::steady_clock;

// A done callback that throws must not take the lane's thread (and with it the
// process) down; the lane keeps serving and the problem is reported.
void call_done(const Lane::Done& done, std::exception_ptr err, const std::string& lane) {
  if (!done) return;
  try {
    done(std::move(err));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "stagecraft: the done callback of lane '%s' threw (ignored): %s\n", lane.c_str(), e.what());
  } catch (...) {
    std::fprintf(stderr, "stagecraft: the done callback of lane '%s' threw a non-std exception (ignored)\n",
                 lane.c_str());
  }
}

// Which submissions are still outstanding. A set rather than a counter because
// a CUDA item whose work throws reports before earlier items whose kernels are
// still running, so completions are not always in submission order.
class Tracker {
 public:
  uint64_t begin() {
    std::lock_guard<std::mutex> lock(mu_);
    const uint64_t seq = next_++;
    outstanding_.insert(seq);
    return seq;
  }
  void end(uint64_t seq) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      outstanding_.erase(seq);
    }
    cv_.notify_all();
  }
  size_t pending() const {
    std::lock_guard<std::mutex> lock(mu_);
    return outstanding_.size();
  }
  /// Waits for everything begun before this call (later submissions do not extend the wait).
  void wait_for_current() {
    std::unique_lock<std::mutex> lock(mu_);
    const uint64_t ticket = next_;
    cv_.wait(lock, [&] { return outstanding_.empty() || *outstanding_.begin() >= ticket; });
  }

 private:
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::set<uint64_t> outstanding_;
  uint64_t next_ = 0;
};

struct Item {
  Lane::Work work;
  Lane::Done done;
  uint64_t seq = 0;
};

// ------------------------------------------------------------------ CPU lane

// Shared with the worker so that a lane destroyed from its own done callback
// (the last reference dropped there) can detach instead of joining itself.
struct CpuState {
  std::string name;
  std::mutex mu;
  std::condition_variable cv;
  std::deque<Item> queue;
  bool stop = false;
  Tracker tracker;
  std::atomic<int64_t> busy_ns{0};
  std::thread::id worker_id;
};

void cpu_worker(std::shared_ptr<CpuState> s) {
  for (;;) {
    Item item;
    {
      std::unique_lock<std::mutex> lock(s->mu);
      s->cv.wait(lock, [&] { return s->stop || !s->queue.empty(); });
      if (s->queue.empty()) return;  // stopped and drained
      item = std::move(s->queue.front());
      s->queue.pop_front();
    }
    const auto t0 = Clock::now();
    std::exception_ptr err;
    try {
      if (item.work) item.work();
    } catch (...) {
      err = std::current_exception();
    }
    s->busy_ns += std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - t0).count();
    call_done(item.done, std::move(err), s->name);
    const uint64_t seq = item.seq;
    item = Item{};  // release captured state before anyone waiting in synchronize() wakes
    s->tracker.end(seq);
  }
}

class CpuLane final : public Lane {
 public:
  explicit CpuLane(std::string name) : state_(std::make_shared<CpuState>()) {
    state_->name = std::move(name);
    worker_ = std::thread(cpu_worker, state_);
    state_->worker_id = worker_.get_id();
  }
  ~CpuLane() override {
    {
      std::lock_guard<std::mutex> lock(state_->mu);
      state_->stop = true;
    }
    state_->cv.notify_all();
    if (std::this_thread::get_id() == worker_.get_id()) {
      worker_.detach();  // the worker holds the state and finishes the queue on its own
    } else {
      worker_.join();
    }
  }

  Device device() const override { return Device::cpu(); }
  const std::string& name() const override { return state_->name; }
  StreamHandle stream() const override { return nullptr; }

  void submit(Work work, Done done) override {
    Item item{std::move(work), std::move(done), 0};
    {
      std::lock_guard<std::mutex> lock(state_->mu);
      SC_CHECK(!state_->stop, Errc::invalid_argument, "lane '" << state_->name << "' is shutting down; submit nothing more");
      item.seq = state_->tracker.begin();
      state_->queue.push_back(std::move(item));
    }
    state_->cv.notify_one();
  }

  void synchronize() override {
    SC_CHECK(std::this_thread::get_id() != worker_.get_id(), Errc::invalid_argument,
             "Lane::synchronize called on lane '" << state_->name
                                                  << "' from its own worker would wait forever; synchronize from another thread");
    state_->tracker.wait_for_current();
  }

  size_t pending() const override { return state_->tracker.pending(); }
  std::chrono::nanoseconds busy_time() const override { return std::chrono::nanoseconds(state_->busy_ns.load()); }

 private:
  std::shared_ptr<CpuState> state_;
  std::thread worker_;
};

// ------------------------------------------------------------------ CUDA lane

#if STAGECRAFT_HAVE_CUDA

struct Completion {
  Lane::Done done;
  std::exception_ptr err;
  uint64_t seq = 0;
  Clock::time_point launched;
  bool from_stream = false;  ///< true: the host func fired, the stream drained past the work
};

struct CudaState {
  std::string name;
  Device device;
  cudaStream_t stream = nullptr;
  Tracker tracker;
  std::atomic<int64_t> busy_ns{0};
  std::thread::id launch_id, notify_id;

  // launch queue
  std::mutex mu;
  std::condition_variable cv;
  std::deque<Item> queue;
  bool stop = false;

  // completions handed from the launch thread and from the CUDA host func
  std::mutex nmu;
  std::condition_variable ncv;
  std::deque<Completion> completions;
  bool launch_finished = false;

  void push_completion(Completion c) {
    {
      std::lock_guard<std::mutex> lock(nmu);
      completions.push_back(std::move(c));
    }
    ncv.notify_one();
  }

  ~CudaState() {
    if (stream) {
      (void)cudaSetDevice(device.index);
      (void)cudaStreamSynchronize(stream);
      (void)cudaStreamDestroy(stream);
    }
  }
};

struct HostFuncCtx {
  CudaState* state;  // alive: the notifier holds it until every item is done
  Completion completion;
};

// Runs inside CUDA's callback thread: it must make no CUDA calls, so it only
// hands the completion to the notifier thread.
void CUDART_CB host_func_trampoline(void* arg) {
  auto* ctx = static_cast<HostFuncCtx*>(arg);
  ctx->state->push_completion(std::move(ctx->completion));
  delete ctx;
}

void cuda_launcher(std::shared_ptr<CudaState> s) {
  for (;;) {
    Item item;
    {
      std::unique_lock<std::mutex> lock(s->mu);
      s->cv.wait(lock, [&] { return s->stop || !s->queue.empty(); });
      if (s->queue.empty()) break;
      item = std::move(s->queue.front());
      s->queue.pop_front();
    }
    Completion c{std::move(item.done), nullptr, item.seq, Clock::now(), false};
    try {
      SC_CUDA_CHECK(cudaSetDevice(s->device.index));
      StreamGuard guard(s->stream);
      if (item.work) item.work();
    } catch (...) {
      // The work failed on the host: nothing of it may be on the stream worth
      // waiting for, so report at once instead of through the stream.
      c.err = std::current_exception();
      item = Item{};
      s->push_completion(std::move(c));
      continue;
    }
    item = Item{};
    auto* ctx = new HostFuncCtx{s.get(), std::move(c)};
    const cudaError_t err = cudaLaunchHostFunc(s->stream, host_func_trampoline, ctx);
    if (err != cudaSuccess) {
      (void)cudaGetLastError();
      Completion failed = std::move(ctx->completion);
      delete ctx;
      try {
        SC_FAIL(Errc::cuda, "lane '" << s->name << "': cudaLaunchHostFunc failed: " << cudaGetErrorString(err));
      } catch (...) {
        failed.err = std::current_exception();
      }
      s->push_completion(std::move(failed));
    }
  }
  {
    std::lock_guard<std::mutex> lock(s->nmu);
    s->launch_finished = true;
  }
  s->ncv.notify_all();
}

void cuda_notifier(std::shared_ptr<CudaState> s) {
  Clock::time_point last_end{};
  for (;;) {
    Completion c;
    {
      std::unique_lock<std::mutex> lock(s->nmu);
      s->ncv.wait(lock, [&] {
        return !s->completions.empty() || (s->launch_finished && s->tracker.pending() == 0);
      });
      if (s->completions.empty()) return;
      c = std::move(s->completions.front());
      s->completions.pop_front();
    }
    // Busy time is the union of [launch, completion] intervals, so work that
    // overlaps on the stream is not counted twice.
    const auto now = Clock::now();
    const auto start = std::max(c.launched, last_end);
    if (now > start) s->busy_ns += std::chrono::duration_cast<std::chrono::nanoseconds>(now - start).count();
    last_end = std::max(last_end, now);
    if (c.from_stream && !c.err) {
      // A kernel fault is sticky and asynchronous; surface it with the item that saw it.
      (void)cudaSetDevice(s->device.index);
      const cudaError_t e = cudaStreamQuery(s->stream);
      if (e != cudaSuccess && e != cudaErrorNotReady) {
        try {
          SC_FAIL(Errc::cuda, "lane '" << s->name << "' on " << s->device.str()
                                       << ": device work failed: " << cudaGetErrorString(e));
        } catch (...) {
          c.err = std::current_exception();
        }
      }
    }
    call_done(c.done, std::move(c.err), s->name);
    c.done = nullptr;
    s->tracker.end(c.seq);
    s->ncv.notify_all();  // wakes this loop's own exit check after the last item
  }
}

class CudaLane final : public Lane {
 public:
  CudaLane(Device device, std::string name) : state_(std::make_shared<CudaState>()) {
    SC_CHECK(cuda_available(), Errc::unsupported,
             "cannot create CUDA lane '" << name << "' on " << device.str() << ": " << cuda_unavailable_reason());
    SC_CHECK(device.index >= 0 && device.index < cuda_device_count(), Errc::invalid_argument,
             "cannot create CUDA lane '" << name << "': there is no " << device.str() << " ("
                                         << cuda_device_count() << " device(s) visible)");
    state_->name = std::move(name);
    state_->device = device;
    int previous = 0;
    SC_CUDA_CHECK(cudaGetDevice(&previous));
    SC_CUDA_CHECK(cudaSetDevice(device.index));
    // A blocking stream (not cudaStreamNonBlocking): frees enqueued on the legacy
    // default stream then wait for lane work, see allocate_cuda.
    const cudaError_t err = cudaStreamCreate(&state_->stream);
    (void)cudaSetDevice(previous);
    SC_CHECK(err == cudaSuccess, Errc::cuda,
             "cannot create the stream of lane '" << state_->name << "': " << cudaGetErrorString(err));
    launcher_ = std::thread(cuda_launcher, state_);
    notifier_ = std::thread(cuda_notifier, state_);
    state_->launch_id = launcher_.get_id();
    state_->notify_id = notifier_.get_id();
  }
  ~CudaLane() override {
    {
      std::lock_guard<std::mutex> lock(state_->mu);
      state_->stop = true;
    }
    state_->cv.notify_all();
    const auto self = std::this_thread::get_id();
    if (self == launcher_.get_id() || self == notifier_.get_id()) {
      launcher_.detach();
      notifier_.detach();
    } else {
      launcher_.join();
      notifier_.join();
    }
  }

  Device device() const override { return state_->device; }
  const std::string& name() const override { return state_->name; }
  StreamHandle stream() const override { return state_->stream; }

  void submit(Work work, Done done) override {
    Item item{std::move(work), std::move(done), 0};
    {
      std::lock_guard<std::mutex> lock(state_->mu);
      SC_CHECK(!state_->stop, Errc::invalid_argument, "lane '" << state_->name << "' is shutting down; submit nothing more");
      item.seq = state_->tracker.begin();
      state_->queue.push_back(std::move(item));
    }
    state_->cv.notify_one();
  }

  void synchronize() override {
    const auto self = std::this_thread::get_id();
    SC_CHECK(self != state_->launch_id && self != state_->notify_id, Errc::invalid_argument,
             "Lane::synchronize called on lane '" << state_->name
                                                  << "' from its own thread would wait forever; synchronize from another thread");
    state_->tracker.wait_for_current();
  }

  size_t pending() const override { return state_->tracker.pending(); }
  std::chrono::nanoseconds busy_time() const override { return std::chrono::nanoseconds(state_->busy_ns.load()); }

 private:
  std::shared_ptr<CudaState> state_;
  std::thread launcher_, notifier_;
};

#endif  // STAGECRAFT_HAVE_CUDA

// ------------------------------------------------------------------ events

// A marker in a lane's queue: ready once every item submitted before it is done.
struct Flag {
  std::mutex mu;
  std::condition_variable cv;
  bool set = false;
  void raise() {
    {
      std::lock_guard<std::mutex> lock(mu);
      set = true;
    }
    cv.notify_all();
  }
  void wait() {
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return set; });
  }
  bool is_set() {
    std::lock_guard<std::mutex> lock(mu);
    return set;
  }
};

class QueueEvent final : public Event {
 public:
  explicit QueueEvent(Lane& lane) : flag_(std::make_shared<Flag>()) {
    lane.submit(nullptr, [flag = flag_](std::exception_ptr) { flag->raise(); });
  }
  bool ready() const override { return flag_->is_set(); }
  void wait_host() override { flag_->wait(); }
  void wait_on(Lane& lane) override {
    // The target's worker (or launch thread) waits: a CPU marker has no device
    // object another stream could wait for.
    lane.submit([flag = flag_] { flag->wait(); }, nullptr);
  }

 private:
  std::shared_ptr<Flag> flag_;
};

#if STAGECRAFT_HAVE_CUDA
struct CudaEventState {
  cudaEvent_t event = nullptr;
  Flag recorded;  // set once cudaEventRecord ran on the launch thread
  ~CudaEventState() {
    if (event) (void)cudaEventDestroy(event);
  }
};

class CudaEvent final : public Event {
 public:
  explicit CudaEvent(Lane& lane) : s_(std::make_shared<CudaEventState>()) {
    int previous = 0;
    SC_CUDA_CHECK(cudaGetDevice(&previous));
    SC_CUDA_CHECK(cudaSetDevice(lane.device().index));
    const cudaError_t err = cudaEventCreateWithFlags(&s_->event, cudaEventDisableTiming);
    (void)cudaSetDevice(previous);
    SC_CHECK(err == cudaSuccess, Errc::cuda,
             "cannot create an event on lane '" << lane.name() << "': " << cudaGetErrorString(err));
    // Recorded through the lane's queue so the event follows work that is
    // submitted but not yet launched, not just what is already on the stream.
    lane.submit(
        [s = s_] {
          const cudaError_t e = cudaEventRecord(s->event, static_cast<cudaStream_t>(current_stream()));
          s->recorded.raise();  // raise even on failure so waiters do not hang
          SC_CHECK(e == cudaSuccess, Errc::cuda, "cudaEventRecord failed: " << cudaGetErrorString(e));
        },
        nullptr);
  }
  bool ready() const override {
    if (!s_->recorded.is_set()) return false;
    const cudaError_t e = cudaEventQuery(s_->event);
    if (e == cudaErrorNotReady) return false;
    (void)cudaGetLastError();
    return true;  // done, or failed: either way nothing will change by waiting
  }
  void wait_host() override {
    s_->recorded.wait();
    SC_CUDA_CHECK(cudaEventSynchronize(s_->event));
  }
  void wait_on(Lane& lane) override {
    if (lane.device().is_cuda()) {
      lane.submit(
          [s = s_] {
            s->recorded.wait();
            SC_CUDA_CHECK(cudaStreamWaitEvent(static_cast<cudaStream_t>(current_stream()), s->event, 0));
          },
          nullptr);
    } else {
      lane.submit(
          [s = s_] {
            s->recorded.wait();
            SC_CUDA_CHECK(cudaEventSynchronize(s->event));
          },
          nullptr);
    }
  }

 private:
  std::shared_ptr<CudaEventState> s_;
};
#endif

}  // namespace

std::shared_ptr<Lane> Lane::create(Device device, std::string name) {
  if (device.is_cpu()) return std::make_shared<CpuLane>(std::move(name));
#if STAGECRAFT_HAVE_CUDA
  return std::make_shared<CudaLane>(device, std::move(name));
#else
  SC_FAIL(Errc::unsupported,
          "cannot create lane '" << name << "' on " << device.str() << ": " << cuda_unavailable_reason());
#endif
}

std::shared_ptr<Event> Event::record(Lane& lane) {
#if STAGECRAFT_HAVE_CUDA
  if (lane.device().is_cuda()) return std::make_shared<CudaEvent>(lane);
#endif
  return std::make_shared<QueueEvent>(lane);
}

}  // namespace stagecraft
