#pragma once
// Host staging: a packet's CUDA tensors copied into pinned host memory on a copy stream,
// so that they can go over ZeroMQ (which carries host memory) without the thread that
// hands the packet on — a stage's lane, or the engine's callback — waiting for the copy.
//
//   HostStager stager;
//   stager.stage(packet, [](PacketPtr p, const std::string& error) {
//     if (error.empty()) send(p);   // every tensor of p is on the host now
//   });
//
// stage() orders the copies after the work the caller had enqueued on its current stream
// (core/stream.hpp), enqueues them on the stager's copy stream of each tensor's device and
// returns. One worker thread waits for each packet's copies, in the order they were
// staged, and then calls its `done` there. Pinned buffers come from a pool: a delivered
// host tensor returns its buffer when the last reference to it goes (cudaFreeHost would
// synchronise the device), and the pool keeps at most `max_cached_bytes` of free buffers.
//
// Compiled only in builds with CUDA (transport/CMakeLists.txt): a build without it has no
// CUDA tensors to stage. Used by the node runtime for edges on `zmq` whose packets hold
// GPU tensors (docs/disaggregation.md, "Channels").
#include <cstddef>
#include <functional>
#include <memory>
#include <string>

#include "core/packet.hpp"

namespace stagecraft::transport {

class HostStager {
 public:
  /// `done(packet, error)`: error empty on success (the packet's tensors are host tensors
  /// over pinned memory), else why the copy failed (the packet as it was given).
  using Done = std::function<void(PacketPtr, const std::string& error)>;

  explicit HostStager(size_t max_cached_bytes = size_t(256) << 20);
  /// Waits for the copies already staged (their `done` runs) and stops the worker.
  ~HostStager();
  HostStager(const HostStager&) = delete;
  HostStager& operator=(const HostStager&) = delete;

  /// Stages `packet` (a packet without CUDA tensors goes to `done` at once, on this
  /// thread). A CUDA error while enqueueing also reports on this thread.
  void stage(PacketPtr packet, Done done);

  struct Stats {
    uint64_t packets = 0, bytes = 0;  ///< staged through pinned memory
    size_t pinned_bytes = 0;          ///< pinned memory held, in use or cached
  };
  Stats stats() const;

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace stagecraft::transport
