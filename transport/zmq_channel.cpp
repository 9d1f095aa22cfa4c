#include "transport/zmq_channel.hpp"

#include <malloc.h>

#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <mutex>
#include <random>
#include <thread>
#include <unordered_map>
#include <vector>

#include "transport/control_message.hpp"
#include "transport/msgpack_read.hpp"
#include "transport/wakeup.hpp"

namespace stagecraft::transport {

namespace {

/// Polls the socket and the wake-up fd; true when the socket has input.
struct PollResult {
  bool socket = false, wake = false;
};
PollResult poll_two(zmq::socket_t& sock, const Wakeup& wake, std::chrono::milliseconds timeout) {
  zmq_pollitem_t items[2] = {{sock.handle(), 0, ZMQ_POLLIN, 0}, {nullptr, wake.fd(), ZMQ_POLLIN, 0}};
  poll_ignoring_signals(items, 2, timeout);
  return {(items[0].revents & ZMQ_POLLIN) != 0, (items[1].revents & ZMQ_POLLIN) != 0};
}

/// Receives the rest of a multipart message whose first frame is already in `frames`.
void recv_rest(zmq::socket_t& sock, std::vector<zmq::message_t>& frames) {
  while (frames.back().more()) {
    frames.emplace_back();
    (void)sock.recv(frames.back(), zmq::recv_flags::none);
  }
}

void send_frames(zmq::socket_t& sock, std::vector<zmq::message_t>& frames) {
  for (size_t i = 0; i < frames.size(); ++i)
    (void)sock.send(frames[i], i + 1 < frames.size() ? zmq::send_flags::sndmore : zmq::send_flags::none);
}

/// The channel end (its Impl) whose I/O thread this is, if any. Work queued from a
/// channel's own callbacks (a credit that flushes the next packet, a receipt released
/// in on_packet) needs no wake-up: the loop looks at its queues again before it polls.
/// Skipping the eventfd write + poll + read saves ~1/5 of the per-packet cost of 1 MiB
/// packets over ipc (bench_transport --case ipc:1: 20 poll calls per packet before).
thread_local const void* io_thread_of = nullptr;

std::string version_mismatch(uint64_t theirs) {
  return "wire format version " + std::to_string(theirs) + " against this node's " + std::to_string(kWireVersion) +
         "; run the same Stagecraft version on every node";
}

}  // namespace

// ---------------------------------------------------------------- sender

struct ZmqSendChannel::Impl {
  std::shared_ptr<zmq::context_t> ctx;
  std::string endpoint;
  Hello hello;
  ZmqSendOptions opt;
  zmq::socket_t sock;  // touched only by the I/O thread once it runs
  Wakeup wake;

  mutable std::mutex mu;
  std::condition_variable ready_cv;
  enum class State { connecting, ready, refused } state = State::connecting;
  std::string refusal;
  int credits = 0;
  uint64_t losses = 0;
  Clock::time_point last_heard = Clock::now(), next_ping = Clock::now();
  /// Packets and notes in the order they were queued (a note never overtakes a packet).
  struct Outgoing {
    PacketPtr packet;      ///< set for a packet
    ControlMessage note;   ///< otherwise
  };
  std::deque<Outgoing> outbox;
  std::deque<ControlMessage> held_notes;  ///< notes sent while connecting, for after the welcome
  static constexpr size_t kMaxHeldNotes = 4096;
  ChannelStats st;
  bool stopping = false;
  std::thread io;

  void run();
  void handle_control(const ControlMessage& m);
  void send_queued();
  void send_hello();
  void heartbeat();
  void lose_peer();
};

std::unique_ptr<ZmqSendChannel> ZmqSendChannel::connect(std::shared_ptr<zmq::context_t> ctx,
                                                        const std::string& endpoint, Hello hello,
                                                        ZmqSendOptions options) {
  auto impl = std::make_shared<Impl>();
  impl->ctx = std::move(ctx);
  impl->endpoint = endpoint;
  impl->hello = std::move(hello);
  impl->opt = std::move(options);
  impl->sock = zmq::socket_t(*impl->ctx, zmq::socket_type::dealer);
  impl->sock.set(zmq::sockopt::linger, 0);
  // A routing id of its own, kept across reconnects: the receiver knows this sender again
  // after a dropped connection is remade (its handshake and window stay), while another
  // process of the same node, with another nonce, is a new sender.
  {
    std::random_device rd;
    impl->sock.set(zmq::sockopt::routing_id,
                   impl->hello.node.substr(0, 128) + ":" + std::to_string((uint64_t(rd()) << 32) | rd()));
  }
  // ZeroMQ's own heartbeats on the connection: a host that vanished without closing its TCP
  // connections (power off, cut cable) is then noticed and reconnected to (e.g. the new pod
  // behind a Service name) instead of waiting out the kernel's TCP timeout.
  impl->sock.set(zmq::sockopt::heartbeat_ivl, static_cast<int>(impl->opt.heartbeat.count()));
  impl->sock.set(zmq::sockopt::heartbeat_timeout, static_cast<int>(impl->opt.peer_timeout.count()));
  try {
    impl->sock.connect(endpoint);
  } catch (const zmq::error_t& e) {
    SC_FAIL(Errc::io, "cannot connect to '" << endpoint << "': " << e.what()
                                            << " (expected ipc://PATH or tcp://HOST:PORT)");
  }
  impl->io = std::thread([raw = impl.get()] { raw->run(); });
  return std::unique_ptr<ZmqSendChannel>(new ZmqSendChannel(std::move(impl)));
}

ZmqSendChannel::~ZmqSendChannel() {
  {
    std::lock_guard lk(impl_->mu);
    impl_->stopping = true;
  }
  impl_->wake.notify();
  impl_->io.join();
}

const std::string& ZmqSendChannel::endpoint() const { return impl_->endpoint; }

bool ZmqSendChannel::wait_ready(std::chrono::milliseconds timeout) {
  std::unique_lock lk(impl_->mu);
  impl_->ready_cv.wait_for(lk, timeout, [&] { return impl_->state != Impl::State::connecting; });
  if (impl_->state == Impl::State::refused)
    SC_FAIL(Errc::invalid_argument, "node '" << impl_->hello.node << "' was refused by " << impl_->endpoint << ": "
                                             << impl_->refusal);
  return impl_->state == Impl::State::ready;
}

bool ZmqSendChannel::try_send(PacketPtr packet) {
  {
    std::lock_guard lk(impl_->mu);
    if (impl_->state != Impl::State::ready || impl_->credits <= 0 || impl_->stopping) {
      ++impl_->st.credit_waits;
      return false;
    }
    --impl_->credits;
    impl_->outbox.push_back({std::move(packet), {}});
  }
  if (io_thread_of != impl_.get()) impl_->wake.notify();
  return true;
}

bool ZmqSendChannel::send_note(const ControlMessage& note) {
  {
    std::lock_guard lk(impl_->mu);
    if (impl_->state == Impl::State::refused || impl_->stopping) return false;
    if (impl_->state == Impl::State::connecting) {
      // Between a lost connection and the next welcome (a reconnect, a restart): kept, and
      // sent once welcomed, so a job's news is not lost to a moment's gap. Bounded.
      if (impl_->held_notes.size() >= Impl::kMaxHeldNotes) return false;
      impl_->held_notes.push_back(note);
      impl_->held_notes.back().kind = "note";
      return true;
    }
    impl_->outbox.push_back({nullptr, note});
    impl_->outbox.back().note.kind = "note";
  }
  if (io_thread_of != impl_.get()) impl_->wake.notify();
  return true;
}

bool ZmqSendChannel::ready() const {
  std::lock_guard lk(impl_->mu);
  return impl_->state == Impl::State::ready;
}

ChannelStats ZmqSendChannel::stats() const {
  std::lock_guard lk(impl_->mu);
  ChannelStats s = impl_->st;
  s.credits = impl_->credits;
  return s;
}

uint64_t ZmqSendChannel::peer_losses() const {
  std::lock_guard lk(impl_->mu);
  return impl_->losses;
}

void ZmqSendChannel::Impl::send_hello() {
  ControlMessage h;
  h.kind = "hello";
  h.node = hello.node;
  h.pipeline_hash = hello.pipeline_hash;
  // dontwait: with the receiver gone the DEALER may have nowhere to queue it; the next beat retries.
  (void)sock.send(encode_control(h), zmq::send_flags::dontwait);
}

void ZmqSendChannel::Impl::lose_peer() {
  {
    std::lock_guard lk(mu);
    if (state != State::ready) return;
    state = State::connecting;
    credits = 0;
    ++losses;
  }
  if (opt.on_peer_lost) opt.on_peer_lost();
}

/// Pings while ready, says hello again while connecting; a receiver silent past
/// peer_timeout is lost (what it held is gone with it).
void ZmqSendChannel::Impl::heartbeat() {
  const auto now = Clock::now();
  if (now < next_ping) return;
  next_ping = now + opt.heartbeat;
  State s;
  {
    std::lock_guard lk(mu);
    s = state;
  }
  if (s == State::refused) return;
  if (s == State::ready && now - last_heard > opt.peer_timeout) {
    lose_peer();
    s = State::connecting;
  }
  if (s == State::connecting) {
    send_hello();
  } else {
    ControlMessage ping;
    ping.kind = "ping";
    (void)sock.send(encode_control(ping), zmq::send_flags::dontwait);
  }
}

void ZmqSendChannel::Impl::run() {
  io_thread_of = this;
  send_hello();
  next_ping = Clock::now() + opt.heartbeat;
  for (;;) {
    const PollResult ev = poll_two(sock, wake, opt.heartbeat);
    if (ev.wake) wake.drain();
    {
      std::lock_guard lk(mu);
      if (stopping) break;
    }
    send_queued();
    // Drain every message that is there: zmq::poll reports readiness, not a count.
    for (;;) {
      std::vector<zmq::message_t> frames(1);
      if (!sock.recv(frames[0], zmq::recv_flags::dontwait)) break;
      recv_rest(sock, frames);
      try {
        handle_control(decode_control(frames[0]));
      } catch (const std::exception&) {
        // A receiver never sends garbage unless it is not a Stagecraft node; nothing to answer.
      }
    }
    send_queued();  // what the callbacks just queued on this thread (no wake-up was sent)
    {
      // A callback of that second pass (a failed encode returns its credit, and on_credit
      // may queue the next packet) queued work with no wake-up: do not sleep on it.
      std::lock_guard lk(mu);
      if (!outbox.empty()) wake.notify();
    }
    heartbeat();
  }
  sock.close();
}

void ZmqSendChannel::Impl::send_queued() {
  std::deque<Outgoing> batch;
  {
    std::lock_guard lk(mu);
    batch.swap(outbox);
  }
  for (auto& item : batch) {
    if (!item.packet) {
      (void)sock.send(encode_control(item.note), zmq::send_flags::dontwait);
      continue;
    }
    PacketPtr& p = item.packet;
    std::vector<zmq::message_t> frames;
    try {
      frames = encode_packet(*p);
    } catch (const std::exception& e) {
      {
        std::lock_guard lk(mu);
        ++credits;  // nothing left for the receiver to let go of
      }
      if (opt.on_failed) opt.on_failed(p, e.what());
      if (opt.on_credit) opt.on_credit();
      continue;
    }
    const size_t bytes = wire_tensor_bytes(*p);
    send_frames(sock, frames);
    {
      std::lock_guard lk(mu);
      ++st.packets;
      st.bytes += bytes;
    }
    if (opt.on_sent) opt.on_sent(p, bytes);
  }
}

void ZmqSendChannel::Impl::handle_control(const ControlMessage& m) {
  last_heard = Clock::now();
  if (m.kind == "pong" && !m.known) {
    // The receiver restarted and forgot us: what it held is gone; start over.
    lose_peer();
    send_hello();
    return;
  }
  bool credit_came = false;
  {
    std::lock_guard lk(mu);
    if (m.version != kWireVersion) {
      state = State::refused;
      refusal = "the receiver speaks " + version_mismatch(m.version);
    } else if (m.kind == "welcome") {
      if (state != State::ready) {  // a second welcome (two hellos crossed) grants nothing new
        credits = static_cast<int>(m.credits);
        state = State::ready;
        credit_came = true;
        for (auto& n : held_notes) outbox.push_back({nullptr, std::move(n)});
        if (!held_notes.empty()) wake.notify();  // send them on this thread's next turn
        held_notes.clear();
      }
    } else if (m.kind == "refused") {
      state = State::refused;
      refusal = m.reason;
    } else if (m.kind == "credit" || m.kind == "rejected") {
      credits += static_cast<int>(m.credits);
      credit_came = m.credits > 0;
    }
  }
  if (m.kind == "welcome" || m.kind == "refused" || m.version != kWireVersion) ready_cv.notify_all();
  if (m.kind == "rejected" && opt.on_failed) {
    auto p = std::make_shared<Packet>();
    p->job_id = m.job_id;
    opt.on_failed(p, "the receiver refused job " + std::to_string(m.job_id) + ": " + m.reason);
  }
  if (credit_came && opt.on_credit) opt.on_credit();
}

// ---------------------------------------------------------------- receiver

struct ZmqRecvChannel::Impl : std::enable_shared_from_this<ZmqRecvChannel::Impl> {
  std::shared_ptr<zmq::context_t> ctx;
  std::string endpoint;
  ZmqRecvOptions opt;
  zmq::socket_t sock;
  Wakeup wake;
  WireCounters wire;

  struct Peer {
    std::string node;
    int outstanding = 0;  ///< delivered packets whose receipts are not yet released
    uint64_t generation = 0;  ///< bumped at every hello: receipts of an older handshake return nothing
  };
  uint64_t next_generation = 1;
  std::unordered_map<std::string, Peer> peers;  // I/O thread only

  mutable std::mutex mu;
  std::vector<std::pair<std::string, uint64_t>> released;  ///< (identity, generation) of released receipts
  ChannelStats st;
  bool stopping = false;
  std::thread io;

  void run();
  void handle(std::vector<zmq::message_t>& frames);
  void reply(const std::string& identity, const ControlMessage& m);
  void return_credits();
  void refuse_count() {
    std::lock_guard lk(mu);
    ++st.refused;
  }
};

std::unique_ptr<ZmqRecvChannel> ZmqRecvChannel::bind(std::shared_ptr<zmq::context_t> ctx,
                                                     const std::string& endpoint, ZmqRecvOptions options) {
  SC_CHECK(options.credits >= 1, Errc::invalid_argument, "a receive channel needs credits >= 1");
  keep_freed_message_memory();
  SC_CHECK(options.on_packet, Errc::invalid_argument, "a receive channel needs an on_packet callback");
  auto impl = std::make_shared<Impl>();
  impl->ctx = std::move(ctx);
  impl->opt = std::move(options);
  impl->sock = zmq::socket_t(*impl->ctx, zmq::socket_type::router);
  impl->sock.set(zmq::sockopt::linger, 0);
  impl->sock.set(zmq::sockopt::router_mandatory, 1);
  // A sender reconnecting under its routing id takes the id over from the dead connection.
  impl->sock.set(zmq::sockopt::router_handover, 1);
  impl->sock.set(zmq::sockopt::maxmsgsize, impl->opt.max_message_bytes);
  try {
    impl->sock.bind(endpoint);
  } catch (const zmq::error_t& e) {
    SC_FAIL(Errc::io, "cannot bind '" << endpoint << "': " << e.what()
                                      << " (is another worker using it? expected ipc://PATH or tcp://HOST:PORT; a tcp "
                                         "host must be *, an IP address or an interface of this host: where the "
                                         "endpoint is a name others connect to, bind with --listen tcp://*:PORT)");
  }
  impl->endpoint = impl->sock.get(zmq::sockopt::last_endpoint);
  impl->io = std::thread([raw = impl.get()] { raw->run(); });
  return std::unique_ptr<ZmqRecvChannel>(new ZmqRecvChannel(std::move(impl)));
}

ZmqRecvChannel::~ZmqRecvChannel() {
  {
    std::lock_guard lk(impl_->mu);
    impl_->stopping = true;
  }
  impl_->wake.notify();
  impl_->io.join();
}

ChannelStats ZmqRecvChannel::stats() const {
  std::lock_guard lk(impl_->mu);
  return impl_->st;
}

const WireCounters& ZmqRecvChannel::wire_counters() const { return impl_->wire; }
const std::string& ZmqRecvChannel::endpoint() const { return impl_->endpoint; }

void ZmqRecvChannel::Impl::run() {
  io_thread_of = this;
  for (;;) {
    const PollResult ev = poll_two(sock, wake, std::chrono::milliseconds(1000));
    if (ev.wake) wake.drain();
    {
      std::lock_guard lk(mu);
      if (stopping) break;
    }
    return_credits();
    for (;;) {
      std::vector<zmq::message_t> frames(1);
      if (!sock.recv(frames[0], zmq::recv_flags::dontwait)) break;
      recv_rest(sock, frames);
      handle(frames);
    }
    return_credits();  // receipts released inside on_packet (no wake-up was sent)
  }
  sock.close();
}

void ZmqRecvChannel::Impl::reply(const std::string& identity, const ControlMessage& m) {
  try {
    sock.send(zmq::buffer(identity), zmq::send_flags::sndmore);
    sock.send(encode_control(m), zmq::send_flags::none);
  } catch (const zmq::error_t&) {
    peers.erase(identity);  // EHOSTUNREACH: the sender is gone (ZMQ_ROUTER_MANDATORY)
  }
}

void ZmqRecvChannel::Impl::return_credits() {
  std::vector<std::pair<std::string, uint64_t>> ids;
  {
    std::lock_guard lk(mu);
    ids.swap(released);
  }
  // One credit message per peer per wake-up, however many receipts it had released.
  std::unordered_map<std::string, int> per_peer;
  for (auto& [id, gen] : ids) {
    auto it = peers.find(id);
    if (it != peers.end() && it->second.generation == gen) ++per_peer[id];
  }
  for (auto& [id, n] : per_peer) {
    auto it = peers.find(id);
    it->second.outstanding -= n;
    ControlMessage c;
    c.kind = "credit";
    c.credits = n;
    reply(id, c);
  }
}

void ZmqRecvChannel::Impl::handle(std::vector<zmq::message_t>& frames) {
  // ROUTER puts the sender's identity first; a Stagecraft sender then sends its header.
  if (frames.size() < 2) {
    wire.refused[static_cast<int>(WireRefusal::frame_count)].fetch_add(1);
    refuse_count();
    return;
  }
  const std::string identity = frames[0].to_string();
  ControlMessage m;
  try {
    m = decode_control(frames[1]);
  } catch (const std::exception&) {
    wire.refused[static_cast<int>(WireRefusal::header)].fetch_add(1);
    refuse_count();
    return;
  }
  auto refuse_peer = [&](const std::string& reason) {
    ControlMessage r;
    r.kind = "refused";
    r.node = opt.hello.node;
    r.reason = reason;
    reply(identity, r);
  };
  if (m.version != kWireVersion) {
    wire.refused[static_cast<int>(WireRefusal::version)].fetch_add(1);
    refuse_count();
    refuse_peer("node '" + opt.hello.node + "' speaks " + version_mismatch(m.version));
    return;
  }
  if (m.kind == "hello") {
    if (m.pipeline_hash != opt.hello.pipeline_hash) {
      refuse_count();
      refuse_peer("pipeline file mismatch: node '" + m.node + "' was started from a file with hash " +
                  m.pipeline_hash + ", node '" + opt.hello.node + "' from one with hash " + opt.hello.pipeline_hash +
                  "; start every node from the same pipeline file");
      return;
    }
    peers[identity] = Peer{m.node, 0, next_generation++};
    ControlMessage w;
    w.kind = "welcome";
    w.node = opt.hello.node;
    w.credits = opt.credits;
    reply(identity, w);
    std::lock_guard lk(mu);
    st.peers = static_cast<int>(peers.size());
    return;
  }
  if (m.kind == "ping") {
    ControlMessage pong;
    pong.kind = "pong";
    pong.known = peers.count(identity) > 0;
    reply(identity, pong);
    return;
  }
  // A packet or note from a sender without a handshake is refused and the sender told it is
  // unknown (pong, known: false), which makes a Stagecraft sender say hello again. Not the
  // terminal `refused`: after this receiver restarts, messages a sender had queued for the
  // old one arrive first, and the connection must heal, not give up.
  auto unknown_sender = [&] {
    refuse_count();
    if (m.kind == "packet") {
      // Its sender counts it as delivered: say it was not, so its job is answered.
      ControlMessage r;
      r.kind = "rejected";
      r.job_id = m.job_id;
      r.reason = "node '" + opt.hello.node + "' has no handshake with the sender (it restarted, or the "
                 "connection was remade); the packet was dropped";
      r.credits = 0;
      reply(identity, r);
    }
    ControlMessage pong;
    pong.kind = "pong";
    pong.known = false;
    reply(identity, pong);
  };
  if (m.kind == "note" && opt.on_note) {
    if (!peers.count(identity)) return unknown_sender();
    opt.on_note(m);
    return;
  }
  if (m.kind != "packet") {  // a control kind only a receiver sends
    refuse_count();
    return;
  }
  auto peer = peers.find(identity);
  auto reject = [&](const std::string& reason, int credits_back) {
    refuse_count();
    ControlMessage r;
    r.kind = "rejected";
    r.job_id = m.job_id;
    r.reason = reason;
    r.credits = credits_back;
    reply(identity, r);
  };
  if (peer == peers.end()) return unknown_sender();
  if (peer->second.outstanding >= opt.credits) {
    reject("sent beyond its credit window of " + std::to_string(opt.credits), 0);
    return;
  }
  std::vector<zmq::message_t> packet_frames;
  packet_frames.reserve(frames.size() - 1);
  for (size_t i = 1; i < frames.size(); ++i) packet_frames.push_back(std::move(frames[i]));
  PacketPtr p;
  try {
    p = decode_packet(packet_frames, wire);
  } catch (const std::exception& e) {
    reject(e.what(), 1);
    return;
  }
  ++peer->second.outstanding;
  {
    std::lock_guard lk(mu);
    ++st.packets;
    st.bytes += wire_tensor_bytes(*p);
  }
  std::weak_ptr<Impl> weak = shared_from_this();
  Receipt receipt([weak, identity, gen = peer->second.generation] {
    if (auto self = weak.lock()) {
      {
        std::lock_guard lk(self->mu);
        self->released.emplace_back(identity, gen);
      }
      if (io_thread_of != self.get()) self->wake.notify();
    }
  });
  opt.on_packet(std::move(p), std::move(receipt));
}

void keep_freed_message_memory() {
  static std::once_flag once;
  std::call_once(once, [] {
    const char* off = std::getenv("STAGECRAFT_KEEP_MESSAGE_MEMORY");
    if (off && std::strcmp(off, "0") == 0) return;
    mallopt(M_MMAP_THRESHOLD, 32 << 20);
    mallopt(M_TRIM_THRESHOLD, 256 << 20);
  });
}

}  // namespace stagecraft::transport
