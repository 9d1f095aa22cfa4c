// The ZeroMQ channel between two ends in one process, over ipc and tcp: bytes
// arrive intact and in order, credits bound what is in flight, handshakes refuse
// a mismatched peer by name, and garbage sent straight at a receiver is counted
// while it keeps serving.
#include <doctest/doctest.h>
#include <unistd.h>

#include <condition_variable>
#include <mutex>
#include <thread>

#include "transport/control_message.hpp"
#include "transport/zmq_channel.hpp"

using namespace stagecraft;
using namespace stagecraft::transport;
using namespace std::chrono_literals;

namespace {

std::string ipc_endpoint(const char* name) {
  return "ipc:///tmp/stagecraft-test-" + std::to_string(getpid()) + "-" + name + ".sock";
}

/// Collects what a receiver delivers; receipts are kept until the test lets them go.
struct Inbox {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<PacketPtr> packets;
  std::vector<Receipt> receipts;
  bool hold = false;  ///< keep receipts (credits stay taken) instead of releasing at once

  std::function<void(PacketPtr, Receipt)> callback() {
    return [this](PacketPtr p, Receipt r) {
      std::lock_guard lk(mu);
      packets.push_back(std::move(p));
      if (hold) receipts.push_back(std::move(r));
      cv.notify_all();
    };
  }
  bool wait_for(size_t n, std::chrono::milliseconds timeout = 5s) {
    std::unique_lock lk(mu);
    return cv.wait_for(lk, timeout, [&] { return packets.size() >= n; });
  }
  void release_all() {
    std::lock_guard lk(mu);
    receipts.clear();
  }
};

PacketPtr numbered_packet(uint64_t id, int64_t floats) {
  auto p = std::make_shared<Packet>();
  p->job_id = id;
  p->request.prompt = "job " + std::to_string(id);
  Tensor t = Tensor::empty({floats}, DType::f32);
  for (int64_t i = 0; i < floats; ++i) t.data_as<float>()[i] = float(id * 1000 + i);
  p->tensors["x"] = t;
  return p;
}

/// Sends until the channel takes it, waiting on its credit callback in between.
struct CreditWaiter {
  std::mutex mu;
  std::condition_variable cv;
  int signals = 0;
  std::function<void()> callback() {
    return [this] {
      std::lock_guard lk(mu);
      ++signals;
      cv.notify_all();
    };
  }
  void send(SendChannel& tx, PacketPtr p) {
    for (;;) {
      std::unique_lock lk(mu);
      const int seen = signals;
      lk.unlock();
      if (tx.try_send(p)) return;
      lk.lock();
      REQUIRE(cv.wait_for(lk, 5s, [&] { return signals != seen; }));
    }
  }
};

void round_trip(const std::string& endpoint) {
  auto ctx = std::make_shared<zmq::context_t>(1);
  Inbox inbox;
  auto rx = ZmqRecvChannel::bind(ctx, endpoint, {.hello = {"b", "h1"}, .credits = 2, .on_packet = inbox.callback()});
  CreditWaiter waiter;
  auto tx = ZmqSendChannel::connect(ctx, rx->endpoint(), {"a", "h1"}, {.on_credit = waiter.callback()});
  REQUIRE(tx->wait_ready(5s));
  const int n = 20;
  for (int i = 1; i <= n; ++i) waiter.send(*tx, numbered_packet(i, 1000 + i));
  REQUIRE(inbox.wait_for(n));
  for (int i = 0; i < n; ++i) {
    const PacketPtr& p = inbox.packets[i];
    CHECK(p->job_id == uint64_t(i + 1));
    CHECK(p->request.prompt == "job " + std::to_string(i + 1));
    const Tensor& x = p->tensor("x");
    REQUIRE(x.numel() == 1001 + i);
    CHECK(x.item(0) == double((i + 1) * 1000));
    CHECK(x.item(x.numel() - 1) == double((i + 1) * 1000 + x.numel() - 1));
  }
  // The sender counts a packet once ZeroMQ has taken it, which can be just after the
  // receiver already delivered it: give the count a moment instead of racing it.
  for (int t = 0; t < 1000 && tx->stats().packets < uint64_t(n); ++t) std::this_thread::sleep_for(1ms);
  CHECK(tx->stats().packets == uint64_t(n));
  CHECK(rx->stats().packets == uint64_t(n));
  CHECK(rx->stats().refused == 0);
}

}  // namespace

TEST_CASE("packets sent over ipc arrive intact and in order") { round_trip(ipc_endpoint("order")); }

TEST_CASE("packets sent over tcp loopback arrive intact and in order") { round_trip("tcp://127.0.0.1:*"); }

TEST_CASE("a sender never has more packets in flight than the receiver's credit window") {
  auto ctx = std::make_shared<zmq::context_t>(1);
  Inbox inbox;
  inbox.hold = true;
  auto rx = ZmqRecvChannel::bind(ctx, ipc_endpoint("credits"),
                                 {.hello = {"b", "h"}, .credits = 3, .on_packet = inbox.callback()});
  CreditWaiter waiter;
  auto tx = ZmqSendChannel::connect(ctx, rx->endpoint(), {"a", "h"}, {.on_credit = waiter.callback()});
  REQUIRE(tx->wait_ready(5s));
  int taken = 0;
  for (int i = 1; i <= 10; ++i) taken += tx->try_send(numbered_packet(i, 4)) ? 1 : 0;
  CHECK(taken == 3);
  REQUIRE(inbox.wait_for(3));
  std::this_thread::sleep_for(50ms);
  CHECK(inbox.packets.size() == 3);
  CHECK(tx->stats().credit_waits == 7);
  // Letting go of the receipts returns the credits: the producer may send again.
  inbox.release_all();
  for (int i = 11; i <= 13; ++i) waiter.send(*tx, numbered_packet(i, 4));
  REQUIRE(inbox.wait_for(6));
  CHECK(inbox.packets.back()->job_id == 13);
}

TEST_CASE("a sender started from another pipeline file is refused with both nodes and hashes named") {
  auto ctx = std::make_shared<zmq::context_t>(1);
  Inbox inbox;
  auto rx = ZmqRecvChannel::bind(ctx, ipc_endpoint("hash"),
                                 {.hello = {"dit", "aaaa1111"}, .credits = 2, .on_packet = inbox.callback()});
  auto tx = ZmqSendChannel::connect(ctx, rx->endpoint(), {"enc", "bbbb2222"});
  try {
    tx->wait_ready(5s);
    FAIL("the handshake was accepted");
  } catch (const Error& e) {
    const std::string what = e.what();
    CHECK(what.find("'enc'") != std::string::npos);
    CHECK(what.find("'dit'") != std::string::npos);
    CHECK(what.find("aaaa1111") != std::string::npos);
    CHECK(what.find("bbbb2222") != std::string::npos);
  }
  CHECK_FALSE(tx->try_send(numbered_packet(1, 1)));
  CHECK(rx->stats().peers == 0);
}

TEST_CASE("garbage sent straight at a receiver is refused and counted, and it keeps serving") {
  auto ctx = std::make_shared<zmq::context_t>(1);
  Inbox inbox;
  auto rx = ZmqRecvChannel::bind(ctx, ipc_endpoint("garbage"),
                                 {.hello = {"b", "h"}, .credits = 2, .on_packet = inbox.callback()});
  {
    zmq::socket_t raw(*ctx, zmq::socket_type::dealer);
    raw.set(zmq::sockopt::linger, 0);
    raw.connect(rx->endpoint());
    raw.send(zmq::str_buffer("\xc1not msgpack"), zmq::send_flags::none);                  // bad header
    raw.send(zmq::str_buffer("x"), zmq::send_flags::sndmore);                              // truncated multipart
    raw.send(zmq::str_buffer(""), zmq::send_flags::none);
    // A well-formed packet from a peer that never said hello: refused, and the peer told it
    // is unknown (say hello), as a restarted receiver tells what was queued for its predecessor.
    auto frames = encode_packet(*numbered_packet(5, 8));
    for (size_t i = 0; i < frames.size(); ++i)
      raw.send(frames[i], i + 1 < frames.size() ? zmq::send_flags::sndmore : zmq::send_flags::none);
    // First `rejected` naming the job (its sender must not count it as delivered), then
    // `pong {known: false}`.
    zmq::message_t reply;
    raw.set(zmq::sockopt::rcvtimeo, 5000);
    REQUIRE(raw.recv(reply));
    const ControlMessage rejected = decode_control(reply);
    CHECK(rejected.kind == "rejected");
    CHECK(rejected.job_id == 5);
    CHECK(rejected.reason.find("no handshake") != std::string::npos);
    REQUIRE(raw.recv(reply));
    const ControlMessage answer = decode_control(reply);
    CHECK(answer.kind == "pong");
    CHECK_FALSE(answer.known);
    // Wait until all three were looked at.
    for (int i = 0; i < 200 && rx->stats().refused < 3; ++i) std::this_thread::sleep_for(5ms);
  }
  CHECK(rx->stats().refused == 3);
  CHECK(rx->wire_counters().refused_for(WireRefusal::header) == 2);
  CHECK(inbox.packets.empty());
  // A proper sender is still served.
  auto tx = ZmqSendChannel::connect(ctx, rx->endpoint(), {"a", "h"});
  REQUIRE(tx->wait_ready(5s));
  REQUIRE(tx->try_send(numbered_packet(6, 8)));
  REQUIRE(inbox.wait_for(1));
  CHECK(inbox.packets[0]->job_id == 6);
}

TEST_CASE("a packet the sender cannot encode fails alone and its credit comes back") {
  auto ctx = std::make_shared<zmq::context_t>(1);
  Inbox inbox;
  auto rx = ZmqRecvChannel::bind(ctx, ipc_endpoint("reject"),
                                 {.hello = {"b", "h"}, .credits = 1, .on_packet = inbox.callback()});
  std::mutex mu;
  std::vector<std::string> failures;
  auto tx = ZmqSendChannel::connect(ctx, rx->endpoint(), {"a", "h"},
                                    {.on_failed = [&](PacketPtr p, const std::string& why) {
                                      std::lock_guard lk(mu);
                                      failures.push_back(std::to_string(p->job_id) + ": " + why);
                                    }});
  REQUIRE(tx->wait_ready(5s));
  // An undefined tensor: the encoder refuses it on the I/O thread and returns the credit.
  auto bad = std::make_shared<Packet>();
  bad->job_id = 77;
  bad->tensors["x"] = Tensor();
  REQUIRE(tx->try_send(bad));
  for (int i = 0; i < 200; ++i) {
    {
      std::lock_guard lk(mu);
      if (!failures.empty()) break;
    }
    std::this_thread::sleep_for(5ms);
  }
  {
    std::lock_guard lk(mu);
    REQUIRE(failures.size() == 1);
    CHECK(failures[0].find("77: ") == 0);
    CHECK(failures[0].find("undefined") != std::string::npos);
  }
  // The credit came back: the window of one is free for the next packet.
  for (int i = 0; i < 200 && tx->stats().credits == 0; ++i) std::this_thread::sleep_for(5ms);
  REQUIRE(tx->try_send(numbered_packet(78, 2)));
  REQUIRE(inbox.wait_for(1));
  CHECK(inbox.packets[0]->job_id == 78);
}

TEST_CASE("a malformed packet from a welcomed peer is rejected back to it with its credit") {
  auto ctx = std::make_shared<zmq::context_t>(1);
  Inbox inbox;
  auto rx = ZmqRecvChannel::bind(ctx, ipc_endpoint("rejected"),
                                 {.hello = {"b", "h"}, .credits = 1, .on_packet = inbox.callback()});
  zmq::socket_t raw(*ctx, zmq::socket_type::dealer);
  raw.set(zmq::sockopt::linger, 0);
  raw.set(zmq::sockopt::rcvtimeo, 5000);
  raw.connect(rx->endpoint());
  ControlMessage hello;
  hello.kind = "hello";
  hello.node = "raw";
  hello.pipeline_hash = "h";
  raw.send(encode_control(hello), zmq::send_flags::none);
  zmq::message_t reply;
  REQUIRE(raw.recv(reply));
  CHECK(decode_control(reply).kind == "welcome");
  CHECK(decode_control(reply).credits == 1);
  // A packet whose tensor frame is cut short.
  auto frames = encode_packet(*numbered_packet(31, 16));
  raw.send(frames[0], zmq::send_flags::sndmore);
  raw.send(zmq::message_t(frames[1].data(), 10), zmq::send_flags::none);
  REQUIRE(raw.recv(reply));
  const ControlMessage r = decode_control(reply);
  CHECK(r.kind == "rejected");
  CHECK(r.job_id == 31);
  CHECK(r.credits == 1);
  CHECK(r.reason.find("64 bytes but its frame has 10") != std::string::npos);
  CHECK(rx->wire_counters().refused_for(WireRefusal::length) == 1);
  CHECK(inbox.packets.empty());
}

TEST_CASE("a receiver that goes away is taken as lost and a new one at the same address is found again") {
  auto ctx = std::make_shared<zmq::context_t>(1);
  const std::string ep = ipc_endpoint("restart");
  Inbox first;
  auto rx = ZmqRecvChannel::bind(ctx, ep, {.hello = {"b", "h"}, .credits = 2, .on_packet = first.callback()});
  std::atomic<int> lost{0};
  CreditWaiter waiter;
  auto tx = ZmqSendChannel::connect(ctx, ep, {"a", "h"},
                                    {.on_credit = waiter.callback(),
                                     .heartbeat = 20ms,
                                     .peer_timeout = 150ms,
                                     .on_peer_lost = [&] { lost++; }});
  REQUIRE(tx->wait_ready(5s));
  waiter.send(*tx, numbered_packet(1, 4));
  REQUIRE(first.wait_for(1));
  rx.reset();  // the receiving node dies
  for (int i = 0; i < 200 && lost == 0; ++i) std::this_thread::sleep_for(5ms);
  CHECK(lost == 1);
  CHECK(tx->peer_losses() == 1);
  CHECK_FALSE(tx->try_send(numbered_packet(2, 4)));  // no credits while nobody listens
  // A restarted node at the same address: the sender says hello again and is welcomed.
  Inbox second;
  auto rx2 = ZmqRecvChannel::bind(ctx, ep, {.hello = {"b", "h"}, .credits = 2, .on_packet = second.callback()});
  waiter.send(*tx, numbered_packet(3, 4));
  REQUIRE(second.wait_for(1));
  CHECK(second.packets[0]->job_id == 3);
}

TEST_CASE("packets queued for a receiver that died are refused by the next one, and the sender says hello again") {
  auto ctx = std::make_shared<zmq::context_t>(1);
  const std::string ep = ipc_endpoint("stale-queue");
  Inbox first;
  auto rx = ZmqRecvChannel::bind(ctx, ep, {.hello = {"b", "h"}, .credits = 4, .on_packet = first.callback()});
  CreditWaiter waiter;
  // A long timeout: the sender still thinks the receiver is there when it sends 2 and 3.
  auto tx = ZmqSendChannel::connect(ctx, ep, {"a", "h"},
                                    {.on_credit = waiter.callback(), .heartbeat = 20ms, .peer_timeout = 60s});
  REQUIRE(tx->wait_ready(5s));
  waiter.send(*tx, numbered_packet(1, 4));
  REQUIRE(first.wait_for(1));
  rx.reset();
  waiter.send(*tx, numbered_packet(2, 4));  // queued by ZeroMQ for the reconnect
  waiter.send(*tx, numbered_packet(3, 4));
  Inbox second;
  auto rx2 = ZmqRecvChannel::bind(ctx, ep, {.hello = {"b", "h"}, .credits = 4, .on_packet = second.callback()});
  // The successor answers the sender's pings (or its stale packets) with "unknown": the
  // sender takes its peer as lost, says hello, is welcomed, and new packets flow.
  for (int i = 0; i < 400 && tx->peer_losses() == 0; ++i) std::this_thread::sleep_for(5ms);
  CHECK(tx->peer_losses() == 1);
  REQUIRE(tx->wait_ready(5s));
  waiter.send(*tx, numbered_packet(4, 4));
  REQUIRE(second.wait_for(1));
  // The stale packets never reach the new receiver's owner (ZeroMQ may drop them with the
  // old connection, or deliver them to be refused).
  CHECK(second.packets.size() == 1);
  CHECK(second.packets[0]->job_id == 4);
  CHECK(rx2->stats().refused <= 2);
}

TEST_CASE("notes sent before the receiver is there are held and delivered after the welcome, in order") {
  auto ctx = std::make_shared<zmq::context_t>(1);
  const std::string ep = ipc_endpoint("held-notes");
  auto tx = ZmqSendChannel::connect(ctx, ep, {"a", "h"}, {.heartbeat = 20ms});
  for (uint64_t id = 1; id <= 3; ++id) {
    ControlMessage n;
    n.what = "progress";
    n.job_id = id;
    CHECK(tx->send_note(n));  // nobody listens yet
  }
  std::mutex mu;
  std::condition_variable cv;
  std::vector<uint64_t> got;
  Inbox inbox;
  auto rx = ZmqRecvChannel::bind(ctx, ep,
                                 {.hello = {"b", "h"}, .on_packet = inbox.callback(),
                                  .on_note = [&](const ControlMessage& m) {
                                    std::lock_guard lk(mu);
                                    got.push_back(m.job_id);
                                    cv.notify_all();
                                  }});
  std::unique_lock lk(mu);
  REQUIRE(cv.wait_for(lk, 5s, [&] { return got.size() == 3; }));
  CHECK(got == std::vector<uint64_t>{1, 2, 3});
}

TEST_CASE("receipts released after a fresh handshake return no stale credits") {
  auto ctx = std::make_shared<zmq::context_t>(1);
  Inbox inbox;
  inbox.hold = true;
  auto rx = ZmqRecvChannel::bind(ctx, ipc_endpoint("stale"),
                                 {.hello = {"b", "h"}, .credits = 2, .on_packet = inbox.callback()});
  // A raw peer: hello, two packets (both held), hello again, then the old receipts are released.
  zmq::socket_t raw(*ctx, zmq::socket_type::dealer);
  raw.set(zmq::sockopt::linger, 0);
  raw.set(zmq::sockopt::rcvtimeo, 2000);
  raw.connect(rx->endpoint());
  ControlMessage hello;
  hello.kind = "hello";
  hello.node = "raw";
  hello.pipeline_hash = "h";
  zmq::message_t reply;
  raw.send(encode_control(hello), zmq::send_flags::none);
  REQUIRE(raw.recv(reply));
  for (int i = 1; i <= 2; ++i) {
    auto frames = encode_packet(*numbered_packet(uint64_t(i), 2));
    for (size_t f = 0; f < frames.size(); ++f)
      raw.send(frames[f], f + 1 < frames.size() ? zmq::send_flags::sndmore : zmq::send_flags::none);
  }
  REQUIRE(inbox.wait_for(2));
  raw.send(encode_control(hello), zmq::send_flags::none);
  REQUIRE(raw.recv(reply));
  CHECK(decode_control(reply).kind == "welcome");
  inbox.release_all();
  // Nothing comes back for the two old receipts.
  raw.set(zmq::sockopt::rcvtimeo, 200);
  CHECK_FALSE(raw.recv(reply));
}
