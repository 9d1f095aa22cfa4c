#pragma once
// The NCCL channel: GPU tensors between GPUs on different hosts (or any two GPUs NCCL can
// connect), with ncclSend/ncclRecv. docs/wire-format.md, "NCCL channel".
//
// Like the CUDA IPC channel it rides on the ZeroMQ channel (transport/zmq_channel.hpp):
// handshake, credits, heartbeats and notes are that channel's. Each packet travels as its
// wire-format message with every CUDA tensor replaced by one descriptor frame ("@nccl":
// the communicator's ncclUniqueId and each tensor's name, dtype, shape), and its bytes go
// by ncclSend from the sender (rank 0) to the receiver (rank 1), in packet order, so
// sends and receives pair up without any further matching. The sender makes the unique id
// and lives through the communicator's set-up (NCCL wants that); it travels in every
// descriptor, so a receiver that sees a new id (a restarted sender) builds a new
// communicator and drops the old one.
//
// NCCL calls run on one worker thread per end — set-up blocks until both ranks join, and
// a receive must not hold up ZeroMQ's I/O thread — and on a stream: the sender's waits for
// what the caller had enqueued on its current stream; delivered tensors are ready in the
// order of the receiver's `stream` (default: the legacy default stream, which every lane
// stream is ordered after). Communicators are non-blocking (ncclConfig_t.blocking = 0), so
// stopping a channel, or losing its peer, can abort a set-up or a transfer that waits
// for a peer which will never come.
//
// NCCL is opened with dlopen("libnccl.so.2") on first use: a binary that never makes an
// NCCL channel starts without it. NCCL refuses two ranks on one GPU, so stages sharing a
// GPU use CUDA IPC; NcclComm below is usable alone (one rank sending to itself).
//
//   auto rx = NcclRecvChannel::bind(ctx, "tcp://*:7200", {.hello = me, .device = 0,
//                                   .on_packet = [&](PacketPtr p, Receipt r) { ... }});
//   auto tx = NcclSendChannel::connect(ctx, "tcp://dit-host:7200", me, {.device = 0});
//   tx->wait_ready(std::chrono::seconds(10));
//   tx->try_send(packet);
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <zmq.hpp>

#include "core/tensor.hpp"
#include "transport/channel.hpp"
#include "transport/control_message.hpp"
#include "transport/wire_format.hpp"

namespace stagecraft::transport {

/// The reserved tensor name of a packet's NCCL descriptor on the wire.
constexpr const char* kNcclDescriptor = "@nccl";

/// "" when NCCL loads and a CUDA device is usable; otherwise why not, with what to do.
std::string nccl_unavailable_reason();

/// One NCCL communicator on one GPU.
class NcclComm {
 public:
  /// A fresh ncclUniqueId, as its 128 bytes (for a ZeroMQ message).
  static std::string new_unique_id();
  /// Joins the communicator `unique_id` as `rank` of `nranks` on `device`; returns when all
  /// ranks have joined. `stop` (optional) is polled while waiting: true aborts with Error(io).
  static std::unique_ptr<NcclComm> init(const std::string& unique_id, int nranks, int rank, int device,
                                        const std::function<bool()>& stop = {});
  ~NcclComm();
  NcclComm(const NcclComm&) = delete;
  NcclComm& operator=(const NcclComm&) = delete;

  struct Op {
    bool send = true;  ///< ncclSend of the tensor's bytes to `peer`, else ncclRecv into it
    Tensor tensor;     ///< contiguous, on this communicator's device
    int peer = 0;
  };
  /// Enqueues `ops` as one NCCL group on `stream` (a cudaStream_t; nullptr = legacy default).
  /// Returns once enqueued (not done). A send to this very rank needs its receive in the
  /// same group.
  void run_group(const std::vector<Op>& ops, void* stream, const std::function<bool()>& stop = {});
  /// Aborts pending work (any thread); the communicator is unusable afterwards.
  void abort();
  int device() const { return device_; }

 private:
  NcclComm() = default;
  void* comm_ = nullptr;  // ncclComm_t
  int device_ = 0;
  bool aborted_ = false;
};

struct NcclSendOptions {
  int device = 0;  ///< the GPU this sender's tensors live on
  std::function<void()> on_credit;
  /// A packet could not go (a tensor on another GPU or not contiguous, an NCCL error).
  std::function<void(PacketPtr, const std::string& why)> on_failed;
  std::function<void()> on_peer_lost;
  std::chrono::milliseconds heartbeat{500};
  std::chrono::milliseconds peer_timeout{3000};
};

class NcclSendChannel : public SendChannel {
 public:
  /// Throws Error(unsupported) when NCCL or the device is unavailable (nccl_unavailable_reason).
  static std::unique_ptr<NcclSendChannel> connect(std::shared_ptr<zmq::context_t> ctx, const std::string& endpoint,
                                                  Hello hello, NcclSendOptions options = {});
  ~NcclSendChannel() override;
  bool wait_ready(std::chrono::milliseconds timeout) override;
  /// Queues the packet's header now and its GPU tensors' sends on the worker. False, with
  /// nothing taken, without a credit.
  bool try_send(PacketPtr packet) override;
  ChannelStats stats() const override;
  /// Whether the receiver has welcomed this sender and not been lost since (the ZeroMQ
  /// connection underneath), and how often it was lost: as ZmqSendChannel's.
  bool ready() const;
  uint64_t peer_losses() const;

  struct Impl;

 private:
  explicit NcclSendChannel(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

struct NcclRecvOptions {
  Hello hello;
  int credits = 4;
  int device = 0;          ///< the GPU delivered tensors live on
  void* stream = nullptr;  ///< cudaStream_t of `device` the receives run on; nullptr: legacy default
  std::function<void(PacketPtr, Receipt)> on_packet;  ///< runs on the channel's worker thread
  std::function<void(const ControlMessage&)> on_note;
  std::function<void(PacketPtr, const std::string& why)> on_failed;
};

class NcclRecvChannel : public RecvChannel {
 public:
  static std::unique_ptr<NcclRecvChannel> bind(std::shared_ptr<zmq::context_t> ctx, const std::string& endpoint,
                                               NcclRecvOptions options);
  ~NcclRecvChannel() override;
  ChannelStats stats() const override;
  const std::string& endpoint() const;

  struct Impl;

 private:
  explicit NcclRecvChannel(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace stagecraft::transport
