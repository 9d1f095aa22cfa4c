// The other process of the CUDA IPC tests (test_transport_gpu): CUDA IPC handles cannot be
// opened by the process that made them, so each transfer case runs one end here.
//
//   cuda_ipc_peer send ENDPOINT COUNT   # connects, sends COUNT patterned packets from cuda:0,
//                                       # waits until the receiver released every slot
//   cuda_ipc_peer recv ENDPOINT COUNT   # binds, checks COUNT packets' bytes, keeping the last
//                                       # three alive (mapped slots held while others arrive)
// Exit 0 when all went well; otherwise it prints what did not and exits non-zero.
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <mutex>

#include "core/device.hpp"
#include "gpu_transfer_support.hpp"
#include "transport/cuda_ipc_channel.hpp"

using namespace stagecraft;
using namespace stagecraft::transport;
using namespace std::chrono_literals;

namespace {

int send(const std::string& endpoint, int count) {
  auto ctx = std::make_shared<zmq::context_t>(1);
  std::mutex mu;
  std::condition_variable cv;
  std::string failure;
  CudaIpcSendOptions o;
  o.device = 0;
  o.on_credit = [&] { cv.notify_all(); };
  o.on_failed = [&](PacketPtr p, const std::string& why) {
    std::lock_guard lk(mu);
    failure = "job " + std::to_string(p->job_id) + ": " + why;
  };
  auto tx = CudaIpcSendChannel::connect(ctx, endpoint, {"peer", "h"}, o);
  if (!tx->wait_ready(20s)) {
    std::printf("cuda_ipc_peer send: no receiver at %s\n", endpoint.c_str());
    return 4;
  }
  for (int i = 0; i < count; ++i) {
    PacketPtr p = gpu_transfer::patterned_packet(static_cast<uint64_t>(i + 1), 0);
    const auto deadline = Clock::now() + 20s;
    while (!tx->try_send(p)) {
      std::unique_lock lk(mu);
      cv.wait_for(lk, 5ms);
      if (Clock::now() > deadline) {
        std::printf("cuda_ipc_peer send: no credit for job %d within 20 s\n", i + 1);
        return 5;
      }
    }
  }
  const auto deadline = Clock::now() + 20s;
  while (tx->slots_in_use() > 0 && Clock::now() < deadline) std::this_thread::sleep_for(2ms);
  std::printf("cuda_ipc_peer send: %d packets, %d slot(s), %d still in use\n", count, tx->slots(), tx->slots_in_use());
  std::lock_guard lk(mu);
  if (!failure.empty()) std::printf("cuda_ipc_peer send: %s\n", failure.c_str());
  return failure.empty() && tx->slots_in_use() == 0 ? 0 : 1;
}

int recv(const std::string& endpoint, int count) {
  auto ctx = std::make_shared<zmq::context_t>(1);
  std::mutex mu;
  std::condition_variable cv;
  std::deque<PacketPtr> held;
  int got = 0;
  std::string failure;
  CudaIpcRecvOptions o;
  o.hello = {"peer", "h"};
  o.device = 0;
  o.on_packet = [&](PacketPtr p, Receipt r) {
    const std::string bad = gpu_transfer::check_packet(*p, 0);
    std::lock_guard lk(mu);
    if (!bad.empty() && failure.empty()) failure = bad;
    held.push_back(std::move(p));  // the receipt goes now; the mapped slot stays held
    if (held.size() > 3) held.pop_front();
    ++got;
    cv.notify_all();
  };
  o.on_failed = [&](PacketPtr p, const std::string& why) {
    std::lock_guard lk(mu);
    failure = why;
    ++got;
    cv.notify_all();
  };
  auto rx = CudaIpcRecvChannel::bind(ctx, endpoint, o);
  {
    std::unique_lock lk(mu);
    if (!cv.wait_for(lk, 30s, [&] { return got >= count; })) {
      std::printf("cuda_ipc_peer recv: %d of %d packets within 30 s\n", got, count);
      return 4;
    }
    held.clear();  // the last leases go: their releases leave before the channel closes
  }
  std::printf("cuda_ipc_peer recv: %d packets, %llu mapped, %llu copied\n", got,
              static_cast<unsigned long long>(rx->mapped()), static_cast<unsigned long long>(rx->copied()));
  if (!failure.empty()) std::printf("cuda_ipc_peer recv: %s\n", failure.c_str());
  return failure.empty() ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4 || (std::string(argv[1]) != "send" && std::string(argv[1]) != "recv")) {
    std::printf("usage: cuda_ipc_peer send|recv ENDPOINT COUNT\n");
    return 2;
  }
  if (!cuda_available()) {
    std::printf("cuda_ipc_peer: %s\n", cuda_unavailable_reason().c_str());
    return 3;
  }
  try {
    return std::string(argv[1]) == "send" ? send(argv[2], std::atoi(argv[3])) : recv(argv[2], std::atoi(argv[3]));
  } catch (const std::exception& e) {
    std::printf("cuda_ipc_peer %s: %s\n", argv[1], e.what());
    return 1;
  }
}
