#pragma once
// The ZeroMQ channel (ipc:// and tcp://). The receiver binds a ROUTER; each
// sender connects a DEALER, says hello (format version, node, pipeline hash)
// and waits for a welcome that grants its credit window. Packets then flow as
// the wire format's multipart messages (transport/wire_format.hpp), credits
// flow back as small control messages on the same connection. Each end owns
// one I/O thread that alone touches its socket: encoding and sending never run
// on a caller's (a stage's) thread. docs/wire-format.md describes the messages.
#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include <zmq.hpp>

#include "transport/channel.hpp"
#include "transport/control_message.hpp"
#include "transport/wire_format.hpp"

namespace stagecraft::transport {

struct ZmqSendOptions {
  /// A credit came back (I/O thread): a packet refused by try_send may go now.
  std::function<void()> on_credit;
  /// How often the sender pings, and how long the receiver may stay silent before it is
  /// taken as lost: then on_peer_lost runs, the credits are dropped (the packets in flight
  /// there are gone with it) and the sender says hello again until a receiver welcomes it.
  std::chrono::milliseconds heartbeat{500};
  std::chrono::milliseconds peer_timeout{3000};
  std::function<void()> on_peer_lost;
  /// A queued packet could not be sent (e.g. it held a GPU tensor); its credit is returned.
  std::function<void(PacketPtr, const std::string& why)> on_failed;
  /// A packet's frames were handed to ZeroMQ (I/O thread), with its tensor bytes: for
  /// transfer spans in traces.
  std::function<void(const PacketPtr&, size_t bytes)> on_sent;
};

class ZmqSendChannel : public SendChannel {
 public:
  static std::unique_ptr<ZmqSendChannel> connect(std::shared_ptr<zmq::context_t> ctx, const std::string& endpoint,
                                                 Hello hello, ZmqSendOptions options = {});
  ~ZmqSendChannel() override;
  bool wait_ready(std::chrono::milliseconds timeout) override;
  bool try_send(PacketPtr packet) override;
  /// Queues a control message of kind `note` (a job's news for the receiver's node runtime)
  /// behind the packets already queued, outside the credit window. While the connection is
  /// being made or remade (after a loss) notes are held and sent after the welcome, at most
  /// 4096 of them; false (dropped) beyond that, or once the receiver refused this sender.
  bool send_note(const ControlMessage& note);
  /// Whether the receiver has welcomed this sender and not been lost since.
  bool ready() const;
  ChannelStats stats() const override;
  const std::string& endpoint() const;
  /// Times the receiver was taken as lost (silent past peer_timeout, or restarted).
  uint64_t peer_losses() const;

  struct Impl;

 private:
  explicit ZmqSendChannel(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}
  std::shared_ptr<Impl> impl_;
};

struct ZmqRecvOptions {
  Hello hello;                 ///< this node; a sender whose pipeline_hash differs is refused
  int credits = 4;             ///< window granted to each sender
  int64_t max_message_bytes = int64_t(1) << 31;  ///< larger messages are dropped by ZeroMQ itself
  /// Delivers a decoded packet (I/O thread). Keep the Receipt until the packet has left
  /// this side's hands (e.g. was admitted by the next stage): releasing it returns the credit.
  std::function<void(PacketPtr, Receipt)> on_packet;
  /// Delivers a `note` from a sender that completed the handshake (I/O thread); absent:
  /// notes are refused and counted like any unexpected message.
  std::function<void(const ControlMessage&)> on_note;
};

class ZmqRecvChannel : public RecvChannel {
 public:
  /// Binds `endpoint` (ipc:// or tcp://). Throws Error(io) when the address is taken or invalid.
  /// The first bind in a process also calls keep_freed_message_memory() (below).
  static std::unique_ptr<ZmqRecvChannel> bind(std::shared_ptr<zmq::context_t> ctx, const std::string& endpoint,
                                              ZmqRecvOptions options);
  ~ZmqRecvChannel() override;
  ChannelStats stats() const override;
  /// Refusals of the wire format, by reason.
  const WireCounters& wire_counters() const;
  /// The endpoint actually bound (a tcp port of 0 or * resolved).
  const std::string& endpoint() const;

  struct Impl;

 private:
  explicit ZmqRecvChannel(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}
  std::shared_ptr<Impl> impl_;
};

/// Makes glibc's malloc keep memory that received messages free, once per process (later
/// calls do nothing); STAGECRAFT_KEEP_MESSAGE_MEMORY=0 turns it off. Why: ZeroMQ mallocs
/// every received message on its I/O thread, and a tensor frame lives until the stage that
/// took it is done, so several are alive at once. With glibc's defaults (a dynamic mmap
/// threshold, and a trim threshold of twice that) the freed frames leave a free top of the
/// I/O thread's heap larger than the trim threshold, glibc hands it back to the kernel,
/// and the next message faults every page in again: measured with bench_transport
/// (ipc, 1 MiB tensors, 4 credits), 42,500 page faults for 1,792 packets against 2,000
/// with this, and about 20% of the channel's throughput. It sets M_MMAP_THRESHOLD to
/// 32 MiB (glibc's own upper bound for its dynamic threshold, so messages up to 32 MiB come
/// from the heap and are reused) and M_TRIM_THRESHOLD to 256 MiB (up to that much freed
/// memory per heap stays with the process instead of going back to the kernel).
void keep_freed_message_memory();

}  // namespace stagecraft::transport
