#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

#include "core/allocator.hpp"
#include "core/error.hpp"
#include "core/lane.hpp"
#include "core/stream.hpp"

using namespace stagecraft;

TEST_CASE("host allocations are 64-byte aligned, writable and counted while alive") {
  const AllocatorStats before = allocator_stats();
  {
    std::vector<std::shared_ptr<Storage>> blocks;
    for (size_t n : {1u, 63u, 64u, 1000u, 4097u}) {
      auto s = allocate_host(n);
      CHECK(s->bytes() == n);
      CHECK(s->device() == Device::cpu());
      CHECK(reinterpret_cast<uintptr_t>(s->data()) % 64 == 0);
      std::memset(s->data(), 0xab, n);
      blocks.push_back(s);
    }
    const AllocatorStats during = allocator_stats();
    CHECK(during.host_bytes_live - before.host_bytes_live == 1 + 63 + 64 + 1000 + 4097);
    CHECK(during.host_bytes_peak >= during.host_bytes_live);
  }
  const AllocatorStats after = allocator_stats();
  CHECK(after.host_bytes_live == before.host_bytes_live);
  CHECK(after.host_bytes_peak >= before.host_bytes_live + 5225);
}

TEST_CASE("a zero-byte host allocation still has a valid pointer") {
  auto s = allocate_host(0);
  CHECK(s->data() != nullptr);
  CHECK(s->bytes() == 0);
}

TEST_CASE("peak bytes follow the high-water mark across threads") {
  const size_t base = allocator_stats().host_bytes_live;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([] {
      for (int i = 0; i < 200; ++i) auto s = allocate_host(1 << 12);
    });
  }
  for (auto& t : threads) t.join();
  const AllocatorStats s = allocator_stats();
  CHECK(s.host_bytes_live == base);
  CHECK(s.host_bytes_peak >= base + (1 << 12));
}

TEST_CASE("pinned allocations fall back to host memory without CUDA") {
  auto s = allocate_pinned(256);
  CHECK(s->bytes() == 256);
  CHECK(s->device() == Device::cpu());
  std::memset(s->data(), 1, 256);
  if (!cuda_available()) {
    CHECK(reinterpret_cast<uintptr_t>(s->data()) % 64 == 0);
    CHECK(allocator_stats().pinned_bytes_live == 0);
  } else {
    CHECK(allocator_stats().pinned_bytes_live >= 256);
  }
}

TEST_CASE("a storage wrapping foreign memory runs no release and keeps its owner alive") {
  auto owner = std::make_shared<std::vector<char>>(32);
  std::weak_ptr<std::vector<char>> weak = owner;
  auto s = Storage::wrap(owner->data(), 32, Device::cpu(), owner);
  owner.reset();
  CHECK_FALSE(weak.expired());
  s.reset();
  CHECK(weak.expired());
}

TEST_CASE("an owning storage calls its release exactly once") {
  int released = 0;
  {
    auto s = std::make_shared<Storage>(&released, 4, Device::cpu(), [&](void* p) {
      CHECK(p == &released);
      ++released;
    });
  }
  CHECK(released == 1);
}

TEST_CASE("allocate dispatches on the device and CUDA requests explain why they fail") {
  CHECK(allocate(16, Device::cpu())->device() == Device::cpu());
  if (!cuda_available()) {
    try {
      allocate(16, Device::cuda(0));
      FAIL("expected allocate on cuda:0 to fail without a device");
    } catch (const Error& e) {
      CHECK(e.code() == Errc::unsupported);
      CHECK(std::string(e.what()).find(cuda_unavailable_reason()) != std::string::npos);
    }
  }
}

TEST_CASE("CUDA pool memory is stream-ordered on the current stream and reused after free") {
  if (!cuda_available()) {
    MESSAGE("skipped: " << cuda_unavailable_reason());
    return;
  }
  auto lane = Lane::create(Device::cuda(0), "alloc");
  void* first = nullptr;
  void* second = nullptr;
  const size_t live_before = allocator_stats().cuda_bytes_live;
  lane->submit(
      [&] {
        auto a = allocate_cuda(1 << 20, 0);
        CHECK(a->device() == Device::cuda(0));
        CHECK(allocator_stats().cuda_bytes_live == live_before + (1 << 20));
        first = a->data();
        a.reset();  // freed on the lane's stream, so the next request on it may reuse the block
        auto b = allocate_cuda(1 << 20, 0);
        second = b->data();
      },
      nullptr);
  lane->synchronize();
  CHECK(first == second);
  CHECK(allocator_stats().cuda_bytes_live == live_before);
  CHECK(allocator_stats().cuda_bytes_peak >= live_before + (1 << 20));
}
