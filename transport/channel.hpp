#pragma once
// Channels: one-way, credit-bounded paths that carry packets between
// processes. A pipeline edge that leaves a process gets a SendChannel on the
// upstream side and a RecvChannel on the downstream side; which implementation
// (ZeroMQ over ipc/tcp today; CUDA IPC and NCCL for GPU tensors) is chosen per
// edge from placement, or forced by the pipeline file's `channel:`.
//
// Credits make back-pressure cross the process boundary: the receiver grants a
// window of packets at the handshake and returns one credit each time its side
// lets go of a delivered packet (its Receipt), so a slow consumer stops its
// producer and no queue on either side grows without bound.
//
//   auto tx = ZmqSendChannel::connect(ctx, "ipc:///tmp/dit.sock", hello, {
//       .on_credit = [&] { wake_sender(); },
//       .on_failed = [&](PacketPtr p, const std::string& why) { fail_job(p, why); }});
//   tx->wait_ready(std::chrono::seconds(10));     // throws if the peer refused the handshake
//   if (!tx->try_send(packet)) { /* no credit: keep it, retry on on_credit */ }
//
// Channels know nothing of CAF: callbacks run on the channel's own I/O thread
// and must only hand work on (send an actor message, notify a condition).
#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <utility>

#include "core/packet.hpp"

namespace stagecraft::transport {

/// What a node says about itself when it connects; both sides must agree.
struct Hello {
  std::string node;           ///< the sender's node name (for messages only)
  std::string pipeline_hash;  ///< hash of the pipeline file every node was started from
};

/// Counters of one channel end; plain values, copied out.
struct ChannelStats {
  uint64_t packets = 0;         ///< packets sent (sender) or delivered (receiver)
  uint64_t bytes = 0;           ///< tensor bytes of those packets
  uint64_t credit_waits = 0;    ///< try_send calls refused for want of a credit (sender)
  uint64_t refused = 0;         ///< messages refused as malformed, unexpected or over credit (receiver)
  int credits = 0;              ///< credits the sender holds now
  int peers = 0;                ///< senders that completed the handshake (receiver)
};

class SendChannel {
 public:
  virtual ~SendChannel() = default;
  /// Blocks until the receiver accepted the handshake (true) or `timeout` passed (false).
  /// Throws Error(invalid_argument) with the receiver's reason when it refused.
  virtual bool wait_ready(std::chrono::milliseconds timeout) = 0;
  /// Takes a credit and queues the packet for the I/O thread. False (and nothing taken)
  /// when no credit is free or the handshake has not completed: retry after on_credit.
  virtual bool try_send(PacketPtr packet) = 0;
  virtual ChannelStats stats() const = 0;
};

/// A delivered packet's hold on its credit: release() (or destruction) gives the
/// credit back to the sender. Move-only; safe to release from any thread, also
/// after the receiver has stopped (then it does nothing).
class Receipt {
 public:
  Receipt() = default;
  explicit Receipt(std::function<void()> release) : release_(std::move(release)) {}
  Receipt(Receipt&& o) noexcept : release_(std::move(o.release_)) { o.release_ = nullptr; }
  Receipt& operator=(Receipt&& o) noexcept {
    if (this != &o) {
      release();
      release_ = std::move(o.release_);
      o.release_ = nullptr;
    }
    return *this;
  }
  Receipt(const Receipt&) = delete;
  Receipt& operator=(const Receipt&) = delete;
  ~Receipt() { release(); }
  void release() {
    if (release_) std::exchange(release_, nullptr)();
  }

 private:
  std::function<void()> release_;
};

class RecvChannel {
 public:
  virtual ~RecvChannel() = default;
  virtual ChannelStats stats() const = 0;
};

}  // namespace stagecraft::transport
