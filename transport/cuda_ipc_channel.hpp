#pragma once
// The CUDA IPC channel: GPU tensors between processes on one host (one GPU or several),
// without a trip through host memory. docs/wire-format.md, "CUDA IPC channel".
//
// It rides on the ZeroMQ channel (transport/zmq_channel.hpp) for everything but the bytes:
// handshake, credits, heartbeats and notes are that channel's, and each packet travels as
// its wire-format message with every CUDA tensor replaced by one descriptor frame
// ("@cuda_ipc": memory handle, offsets, dtypes, shapes, event handles).
//
// Why the sender copies once: the engine's tensors come from the device's default
// stream-ordered pool (core/allocator.cpp), and cudaIpcGetMemHandle refuses pool memory;
// an IPC-capable pool (cudaMemPoolCreate with a POSIX file descriptor handle) would need
// its descriptor passed over a Unix socket with SCM_RIGHTS, beside ZeroMQ, and a pool per
// channel anyway. So the sender keeps a few cudaMalloc'd slots, each exported once
// (a legacy IPC handle is 64 plain bytes that ride in the descriptor), copies a packet's
// GPU tensors into a free slot on its own copy stream and records an interprocess event
// there. The receiver opens each slot once (cached: opening costs milliseconds), makes its
// stream wait on that event — on the GPU, never on the host — and then either maps the
// slot (the receiving GPU is the sender's: the delivered tensors point into the slot, no
// second copy) or copies into its own pool memory (another GPU: kernels should read local
// memory). When the receiver is done with a slot (mapped: the last delivered tensor over it
// is gone; copied: at once) it records the slot's second event on its stream and tells the
// sender over a small PUSH/PULL connection; the sender's copy stream waits on that event
// before it writes the slot again. No host waits on either side.
//
//   // receiving process
//   auto rx = CudaIpcRecvChannel::bind(ctx, "ipc:///tmp/dit.sock", {
//       .hello = me, .credits = 4, .device = 0,
//       .on_packet = [&](PacketPtr p, Receipt r) { admit(p, std::move(r)); }});
//   // sending process
//   auto tx = CudaIpcSendChannel::connect(ctx, "ipc:///tmp/dit.sock", me, {.device = 0});
//   tx->wait_ready(std::chrono::seconds(10));
//   if (!tx->try_send(packet)) { /* no credit: retry on on_credit */ }
//
// Ordering: try_send orders its copy after the work enqueued so far on the calling
// thread's current stream (core/stream.hpp: a lane's stream on a lane), so a stage may
// hand on a packet whose kernels are still running. Delivered tensors are ready in the
// order of the receiver's `stream`; the default, the legacy default stream, is one every
// lane stream (a blocking stream) is ordered after.
//
// A slot is never freed while the channel lives: a receiver may still have it open, and
// CUDA wants importers to close a handle before the exporter frees it. Slots are reused
// once released, so their number stays near the credit window plus the packets whose
// mapped tensors the receiver still holds.
#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include <zmq.hpp>

#include "transport/channel.hpp"
#include "transport/control_message.hpp"
#include "transport/wire_format.hpp"

namespace stagecraft::transport {

/// The reserved tensor name of a packet's CUDA IPC descriptor on the wire.
constexpr const char* kCudaIpcDescriptor = "@cuda_ipc";

struct CudaIpcSendOptions {
  int device = 0;  ///< the GPU this sender's tensors live on; others are refused (on_failed)
  std::function<void()> on_credit;
  /// A packet could not go (a tensor on another GPU, not contiguous, a CUDA error); the
  /// credit it took is back. Runs on the caller's thread (try_send) or the I/O thread.
  std::function<void(PacketPtr, const std::string& why)> on_failed;
  std::function<void()> on_peer_lost;
  std::chrono::milliseconds heartbeat{500};
  std::chrono::milliseconds peer_timeout{3000};
  /// Where this sender hears that slots are free again; empty: an ipc:// path in the
  /// temporary folder (CUDA IPC is one host, so a filesystem path always reaches).
  std::string release_endpoint;
};

class CudaIpcSendChannel : public SendChannel {
 public:
  /// Connects to a CudaIpcRecvChannel at `endpoint`. Throws Error(unsupported) in a build
  /// without CUDA or with no usable device, Error(io) for a bad endpoint.
  static std::unique_ptr<CudaIpcSendChannel> connect(std::shared_ptr<zmq::context_t> ctx, const std::string& endpoint,
                                                     Hello hello, CudaIpcSendOptions options = {});
  ~CudaIpcSendChannel() override;
  bool wait_ready(std::chrono::milliseconds timeout) override;
  /// Copies the packet's CUDA tensors into a free slot (enqueued, on the copy stream) and
  /// queues the packet. False, with nothing taken, without a credit. CPU tensors travel
  /// as ZeroMQ frames, as on the ZeroMQ channel.
  bool try_send(PacketPtr packet) override;
  ChannelStats stats() const override;
  /// Whether the receiver has welcomed this sender and not been lost since (the ZeroMQ
  /// connection underneath), and how often it was lost: as ZmqSendChannel's.
  bool ready() const;
  uint64_t peer_losses() const;
  /// Slots allocated so far (each a cudaMalloc'd, exported buffer), and their bytes.
  int slots() const;
  size_t slot_bytes() const;
  /// Slots the receiver has not released yet (reads the releases that came in). A sending
  /// process waits for 0 before it exits: its slots die with it, and a receiver may still
  /// be reading one.
  int slots_in_use() const;

  struct Impl;

 private:
  explicit CudaIpcSendChannel(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

struct CudaIpcRecvOptions {
  Hello hello;
  int credits = 4;
  int device = 0;  ///< the GPU delivered tensors live on
  /// The stream the receiver waits and copies on (a cudaStream_t of `device`); nullptr:
  /// the legacy default stream, which orders every blocking (lane) stream after it.
  void* stream = nullptr;
  /// Whether a tensor from a sender on this very GPU is delivered mapped (no copy; it holds
  /// the sender's slot until it is gone) or copied into this side's pool memory.
  bool map_same_device = true;
  std::function<void(PacketPtr, Receipt)> on_packet;
  std::function<void(const ControlMessage&)> on_note;
  /// A packet arrived but its GPU tensors could not be opened or copied: the packet (its
  /// CPU tensors only) and why. Its credit is returned at once.
  std::function<void(PacketPtr, const std::string& why)> on_failed;
};

class CudaIpcRecvChannel : public RecvChannel {
 public:
  /// Binds `endpoint`. Throws Error(unsupported) without CUDA or a usable `device`,
  /// Error(io) when the address is taken or invalid.
  static std::unique_ptr<CudaIpcRecvChannel> bind(std::shared_ptr<zmq::context_t> ctx, const std::string& endpoint,
                                                  CudaIpcRecvOptions options);
  ~CudaIpcRecvChannel() override;
  ChannelStats stats() const override;
  const WireCounters& wire_counters() const;
  const std::string& endpoint() const;
  /// Packets delivered mapped and copied, and sender slots this side has open.
  uint64_t mapped() const;
  uint64_t copied() const;
  int open_slots() const;

  struct Impl;

 private:
  explicit CudaIpcRecvChannel(std::shared_ptr<Impl> impl);
  std::shared_ptr<Impl> impl_;
};

}  // namespace stagecraft::transport
