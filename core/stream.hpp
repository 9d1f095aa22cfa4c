#pragma once
// The CUDA stream that GPU ops on this thread enqueue on. A CUDA Lane sets it on
// its worker thread, so stage code calls ops without passing streams around.
// Typed as void* so that core headers compile without the CUDA toolkit.
namespace stagecraft {

using StreamHandle = void*;  ///< a cudaStream_t; nullptr is the legacy default stream

StreamHandle current_stream();
/// RAII: makes `s` the current stream of this thread until destroyed.
class StreamGuard {
 public:
  explicit StreamGuard(StreamHandle s);
  ~StreamGuard();
  StreamGuard(const StreamGuard&) = delete;
  StreamGuard& operator=(const StreamGuard&) = delete;

 private:
  StreamHandle previous_;
};

}  // namespace stagecraft
