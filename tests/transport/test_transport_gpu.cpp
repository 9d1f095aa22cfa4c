// The GPU channels (transport/cuda_ipc_channel, transport/nccl_channel). Without a usable
// GPU the transfer cases skip with the reason and one case checks that the channels refuse
// to start, saying why. CUDA IPC handles open only in another process, so those cases run
// one end in the helper cuda_ipc_peer; NCCL refuses two ranks on one GPU, so with one GPU
// it is tested as one rank sending to itself, and the channel between two GPUs where there
// are two.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
#include <unistd.h>

#include <condition_variable>
#include <filesystem>
#include <mutex>
#include <thread>

#include "core/device.hpp"
#include "core/error.hpp"
#include "gpu_transfer_support.hpp"
#include "transport/cuda_ipc_channel.hpp"
#include "transport/host_staging.hpp"
#if STAGECRAFT_HAVE_NCCL
#include "transport/nccl_channel.hpp"
#endif

using namespace stagecraft;
using namespace stagecraft::transport;
using namespace std::chrono_literals;

namespace {

#define REQUIRE_CUDA_OR_SKIP()                                   \
  if (!cuda_available()) {                                       \
    MESSAGE("skipped: " << cuda_unavailable_reason());           \
    return;                                                      \
  }

std::string endpoint(const char* name) {
  return "ipc:///tmp/stagecraft-gpu-test-" + std::to_string(getpid()) + "-" + name + ".sock";
}

/// The helper: $SC_CUDA_IPC_PEER, else next to this binary, else where the build put it.
std::string peer_program() {
  if (const char* e = std::getenv("SC_CUDA_IPC_PEER"); e && *e) return e;
  std::error_code ec;
  const auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    const auto sibling = self.parent_path() / "cuda_ipc_peer";
    if (std::filesystem::exists(sibling)) return sibling.string();
  }
  return CUDA_IPC_PEER;
}

/// Receives in this process while cuda_ipc_peer sends `count` packets from cuda:0.
void receive_from_peer(bool map, int count) {
  auto ctx = std::make_shared<zmq::context_t>(1);
  std::mutex mu;
  std::condition_variable cv;
  std::vector<std::string> bad;
  int got = 0;
  CudaIpcRecvOptions o;
  o.hello = {"peer", "h"};
  o.device = 0;
  o.map_same_device = map;
  o.on_packet = [&](PacketPtr p, Receipt) {
    const std::string why = gpu_transfer::check_packet(*p, 0);
    std::lock_guard lk(mu);
    if (!why.empty()) bad.push_back(why);
    ++got;
    cv.notify_all();
  };
  o.on_failed = [&](PacketPtr, const std::string& why) {
    std::lock_guard lk(mu);
    bad.push_back(why);
    ++got;
    cv.notify_all();
  };
  const std::string ep = endpoint(map ? "map" : "copy");
  auto rx = CudaIpcRecvChannel::bind(ctx, ep, o);
  const pid_t pid = gpu_transfer::spawn(peer_program(), {"send", ep, std::to_string(count)});
  REQUIRE_MESSAGE(pid > 0, "cannot start " << peer_program());
  {
    std::unique_lock lk(mu);
    CHECK_MESSAGE(cv.wait_for(lk, 60s, [&] { return got >= count; }), "received " << got << " of " << count);
    for (const auto& why : bad) FAIL_CHECK(why);
  }
  CHECK_MESSAGE(gpu_transfer::wait_exit(pid) == 0, "cuda_ipc_peer send failed (its output is above)");
  CHECK(rx->mapped() == uint64_t(map ? count : 0));
  CHECK(rx->copied() == uint64_t(map ? 0 : count));
  CHECK(rx->stats().packets == uint64_t(count));
  CHECK(rx->open_slots() >= 1);
}

}  // namespace

TEST_CASE("the GPU channels refuse to start without a usable GPU and say why") {
  if (cuda_available()) {
    MESSAGE("skipped: a CUDA device is present; the transfer cases cover the channels");
    return;
  }
  auto ctx = std::make_shared<zmq::context_t>(1);
  const std::string why = cuda_unavailable_reason();
  auto message_of = [](auto&& f) -> std::string {
    try {
      f();
    } catch (const Error& e) {
      CHECK(e.code() == Errc::unsupported);
      return e.what();
    }
    return "(nothing thrown)";
  };
  CHECK(message_of([&] { (void)CudaIpcSendChannel::connect(ctx, endpoint("refuse-tx"), {"a", "h"}); })
            .find(why) != std::string::npos);
  CudaIpcRecvOptions o;
  o.on_packet = [](PacketPtr, Receipt) {};
  CHECK(message_of([&] { (void)CudaIpcRecvChannel::bind(ctx, endpoint("refuse-rx"), o); }).find(why) !=
        std::string::npos);
#if STAGECRAFT_HAVE_NCCL
  CHECK(nccl_unavailable_reason() == why);
  CHECK(message_of([&] { (void)NcclSendChannel::connect(ctx, "tcp://127.0.0.1:1", {"a", "h"}); }).find(why) !=
        std::string::npos);
#endif
}

TEST_CASE("cuda ipc: tensors sent by another process arrive mapped on the same GPU with their bytes intact") {
  REQUIRE_CUDA_OR_SKIP();
  receive_from_peer(/*map=*/true, 24);
}

TEST_CASE("cuda ipc: with mapping off the receiver copies into its own memory, bytes intact") {
  REQUIRE_CUDA_OR_SKIP();
  receive_from_peer(/*map=*/false, 12);
}

TEST_CASE("cuda ipc: a sender reuses a bounded set of slots while the receiver holds some tensors") {
  REQUIRE_CUDA_OR_SKIP();
  auto ctx = std::make_shared<zmq::context_t>(1);
  const std::string ep = endpoint("slots");
  const int count = 40;
  const pid_t pid = gpu_transfer::spawn(peer_program(), {"recv", ep, std::to_string(count)});
  REQUIRE_MESSAGE(pid > 0, "cannot start " << peer_program());
  std::mutex mu;
  std::condition_variable cv;
  std::vector<std::string> failed;
  CudaIpcSendOptions o;
  o.device = 0;
  o.on_credit = [&] { cv.notify_all(); };
  o.on_failed = [&](PacketPtr, const std::string& why) {
    std::lock_guard lk(mu);
    failed.push_back(why);
  };
  auto tx = CudaIpcSendChannel::connect(ctx, ep, {"test", "h"}, o);
  REQUIRE_MESSAGE(tx->wait_ready(30s), "the receiving process did not answer");
  for (int i = 0; i < count; ++i) {
    PacketPtr p = gpu_transfer::patterned_packet(static_cast<uint64_t>(i + 1), 0);
    const auto deadline = Clock::now() + 20s;
    while (!tx->try_send(p)) {
      std::unique_lock lk(mu);
      cv.wait_for(lk, 5ms);
      REQUIRE_MESSAGE(Clock::now() < deadline, "no credit for job " << i + 1);
    }
  }
  CHECK_MESSAGE(gpu_transfer::wait_exit(pid) == 0, "cuda_ipc_peer recv failed (its output is above)");
  const auto deadline = Clock::now() + 10s;
  while (tx->slots_in_use() > 0 && Clock::now() < deadline) std::this_thread::sleep_for(2ms);
  CHECK(tx->slots_in_use() == 0);
  // 4 credits in flight plus 3 packets the receiver keeps need 7-8 slots; a credit may
  // outrun its release (two connections) and cost one more now and then. Without reuse
  // it would be 40.
  CHECK(tx->slots() <= 12);
  CHECK(tx->stats().packets == uint64_t(count));
  for (const auto& why : failed) FAIL_CHECK(why);
}

#if STAGECRAFT_HAVE_NCCL
TEST_CASE("nccl: one rank sends a GPU tensor to itself, its unique id passed over ZeroMQ") {
  REQUIRE_CUDA_OR_SKIP();
  if (const std::string why = nccl_unavailable_reason(); !why.empty()) {
    MESSAGE("skipped: " << why);
    return;
  }
  // The unique id travels as the channel sends it: the bytes of one ZeroMQ message.
  zmq::context_t ctx(1);
  zmq::socket_t pull(ctx, zmq::socket_type::pull), push(ctx, zmq::socket_type::push);
  pull.bind("tcp://127.0.0.1:*");
  push.connect(pull.get(zmq::sockopt::last_endpoint));
  const std::string id = NcclComm::new_unique_id();
  push.send(zmq::buffer(id), zmq::send_flags::none);
  zmq::message_t got;
  REQUIRE(pull.recv(got, zmq::recv_flags::none));
  auto comm = NcclComm::init(got.to_string(), 1, 0, 0);

  const uint64_t job = 77;
  const Tensor src = gpu_transfer::patterned(gpu_transfer::shape_a(job), DType::f32, job, 0, Device::cuda(0));
  Tensor dst = Tensor::zeros(gpu_transfer::shape_a(job), DType::f32, Device::cuda(0));
  comm->run_group({{true, src, 0}, {false, dst, 0}}, nullptr);
  REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
  std::vector<uint8_t> bytes(dst.nbytes());
  REQUIRE(cudaMemcpy(bytes.data(), dst.data(), dst.nbytes(), cudaMemcpyDeviceToHost) == cudaSuccess);
  size_t wrong = 0;
  for (size_t i = 0; i < bytes.size(); ++i) wrong += bytes[i] != gpu_transfer::pattern_byte(job, 0, i);
  CHECK(wrong == 0);
}

TEST_CASE("nccl: the channel moves GPU tensors between two GPUs, bytes intact and in order") {
  REQUIRE_CUDA_OR_SKIP();
  if (const std::string why = nccl_unavailable_reason(); !why.empty()) {
    MESSAGE("skipped: " << why);
    return;
  }
  if (cuda_device_count() < 2) {
    MESSAGE("skipped: one GPU (NCCL refuses two ranks on one GPU; the self-send case covers it)");
    return;
  }
  auto ctx = std::make_shared<zmq::context_t>(1);
  std::mutex mu;
  std::condition_variable cv;
  std::vector<std::string> bad;
  std::vector<uint64_t> order;
  NcclRecvOptions ro;
  ro.hello = {"rx", "h"};
  ro.device = 1;
  ro.on_packet = [&](PacketPtr p, Receipt) {
    // check_packet expects its GPU tensors on the device given: here cuda:1.
    const std::string why = gpu_transfer::check_packet(*p, 1);
    std::lock_guard lk(mu);
    if (!why.empty()) bad.push_back(why);
    order.push_back(p->job_id);
    cv.notify_all();
  };
  ro.on_failed = [&](PacketPtr, const std::string& why) {
    std::lock_guard lk(mu);
    bad.push_back(why);
    order.push_back(0);
    cv.notify_all();
  };
  auto rx = NcclRecvChannel::bind(ctx, "tcp://127.0.0.1:*", ro);
  NcclSendOptions so;
  so.device = 0;
  so.on_credit = [&] { cv.notify_all(); };
  auto tx = NcclSendChannel::connect(ctx, rx->endpoint(), {"tx", "h"}, so);
  REQUIRE(tx->wait_ready(20s));
  const int count = 8;
  for (int i = 1; i <= count; ++i) {
    PacketPtr p = gpu_transfer::patterned_packet(static_cast<uint64_t>(i), 0);
    const auto deadline = Clock::now() + 30s;
    while (!tx->try_send(p)) {
      std::unique_lock lk(mu);
      cv.wait_for(lk, 5ms);
      REQUIRE(Clock::now() < deadline);
    }
  }
  std::unique_lock lk(mu);
  REQUIRE(cv.wait_for(lk, 60s, [&] { return order.size() >= size_t(count); }));
  for (const auto& why : bad) FAIL_CHECK(why);
  for (int i = 0; i < count; ++i) CHECK(order[i] == uint64_t(i + 1));
}
#endif

TEST_CASE("host staging copies a packet's GPU tensors into pinned memory off the caller's thread, in order") {
  REQUIRE_CUDA_OR_SKIP();
  HostStager stager(size_t(1) << 20);  // a small cache: some buffers go back with cudaFreeHost
  std::mutex mu;
  std::condition_variable cv;
  std::vector<PacketPtr> staged;
  std::vector<std::string> errors;
  std::thread::id worker;
  const int n = 12;
  for (int j = 0; j < n; ++j) {
    stager.stage(gpu_transfer::patterned_packet(100 + j, 0), [&](PacketPtr p, const std::string& error) {
      std::lock_guard lk(mu);
      worker = std::this_thread::get_id();
      if (!error.empty()) errors.push_back(error);
      staged.push_back(std::move(p));
      cv.notify_all();
    });
  }
  {
    std::unique_lock lk(mu);
    REQUIRE(cv.wait_for(lk, 20s, [&] { return static_cast<int>(staged.size()) == n; }));
  }
  CHECK(errors.empty());
  CHECK(worker != std::this_thread::get_id());
  for (int j = 0; j < n; ++j) {
    Packet& p = *staged[size_t(j)];
    CHECK(p.job_id == uint64_t(100 + j));  // in staging order
    for (const char* name : {"a", "b"}) {
      const Tensor& t = p.tensors.at(name);
      REQUIRE(t.device().is_cpu());
      // Compare with the pattern through a GPU copy of the host bytes: check_packet wants
      // "a" and "b" on the GPU.
      Tensor back = Tensor::empty(t.shape(), t.dtype(), Device::cuda(0));
      REQUIRE(cudaMemcpy(back.data(), t.data(), t.nbytes(), cudaMemcpyHostToDevice) == cudaSuccess);
      p.tensors[name] = back;
    }
    CHECK(gpu_transfer::check_packet(p, 0) == "");
  }
  CHECK(stager.stats().packets == uint64_t(n));
  CHECK(stager.stats().pinned_bytes > 0);
  // A packet without GPU tensors is answered at once, on the caller's thread.
  auto cpu_only = std::make_shared<Packet>();
  cpu_only->tensors["x"] = Tensor::empty({4}, DType::f32);
  bool here = false;
  stager.stage(cpu_only, [&](PacketPtr, const std::string& error) { here = error.empty(); });
  CHECK(here);
}
