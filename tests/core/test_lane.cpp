#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <atomic>
#include <future>
#include <mutex>
#include <thread>
#include <vector>

#include "core/device.hpp"
#include "core/error.hpp"
#include "core/lane.hpp"
#include "core/stream.hpp"

using namespace stagecraft;
using namespace std::chrono_literals;

namespace {

// Holds a lane's worker inside one work item until released, so tests can look
// at queue state deterministically.
struct Gate {
  std::promise<void> open_promise;
  std::shared_future<void> opened = open_promise.get_future().share();
  void open() { open_promise.set_value(); }
  Lane::Work blocker() {
    return [f = opened] { f.wait(); };
  }
};

}  // namespace

TEST_CASE("a CPU lane runs work in submission order and reports each item once") {
  auto lane = Lane::create(Device::cpu(), "order");
  CHECK(lane->device() == Device::cpu());
  CHECK(lane->name() == "order");
  CHECK(lane->stream() == nullptr);
  std::mutex mu;
  std::vector<int> ran, reported;
  for (int i = 0; i < 200; ++i) {
    lane->submit(
        [&, i] {
          std::lock_guard<std::mutex> lock(mu);
          ran.push_back(i);
        },
        [&, i](std::exception_ptr err) {
          CHECK(!err);
          std::lock_guard<std::mutex> lock(mu);
          reported.push_back(i);
        });
  }
  lane->synchronize();
  REQUIRE(ran.size() == 200);
  REQUIRE(reported.size() == 200);
  for (int i = 0; i < 200; ++i) {
    CHECK(ran[i] == i);
    CHECK(reported[i] == i);
  }
  CHECK(lane->pending() == 0);
}

TEST_CASE("the done callback runs off the submitting thread, after the work") {
  auto lane = Lane::create(Device::cpu(), "threads");
  std::promise<std::pair<std::thread::id, bool>> got;
  std::atomic<bool> work_done{false};
  lane->submit([&] { work_done = true; },
               [&](std::exception_ptr) { got.set_value({std::this_thread::get_id(), work_done.load()}); });
  auto [tid, after_work] = got.get_future().get();
  CHECK(tid != std::this_thread::get_id());
  CHECK(after_work);
}

TEST_CASE("an exception thrown by work reaches done and the lane keeps running") {
  auto lane = Lane::create(Device::cpu(), "errors");
  std::promise<std::string> message;
  lane->submit([] { SC_FAIL(Errc::stage_failed, "decoder exploded on purpose"); },
               [&](std::exception_ptr err) {
                 REQUIRE(err);
                 try {
                   std::rethrow_exception(err);
                 } catch (const Error& e) {
                   CHECK(e.code() == Errc::stage_failed);
                   message.set_value(e.what());
                 }
               });
  CHECK(std::string(message.get_future().get()).find("decoder exploded on purpose") != std::string::npos);
  std::atomic<int> later{0};
  lane->submit([&] { later = 1; }, nullptr);
  lane->synchronize();
  CHECK(later == 1);
}

TEST_CASE("a done callback that throws does not stop the lane") {
  auto lane = Lane::create(Device::cpu(), "bad-done");
  lane->submit([] {}, [](std::exception_ptr) { throw std::runtime_error("callback bug"); });
  std::atomic<bool> ran{false};
  lane->submit([&] { ran = true; }, nullptr);
  lane->synchronize();
  CHECK(ran);
}

TEST_CASE("pending counts items until their done callback has run, and synchronize waits for them") {
  auto lane = Lane::create(Device::cpu(), "pending");
  Gate gate;
  std::atomic<int> finished{0};
  lane->submit(gate.blocker(), [&](std::exception_ptr) { ++finished; });
  for (int i = 0; i < 3; ++i) lane->submit([] {}, [&](std::exception_ptr) { ++finished; });
  CHECK(lane->pending() == 4);
  CHECK(finished == 0);
  gate.open();
  lane->synchronize();
  CHECK(finished == 4);
  CHECK(lane->pending() == 0);
}

TEST_CASE("busy_time counts the time spent inside work") {
  auto lane = Lane::create(Device::cpu(), "busy");
  CHECK(lane->busy_time().count() == 0);
  lane->submit([] { std::this_thread::sleep_for(30ms); }, nullptr);
  lane->synchronize();
  CHECK(lane->busy_time() >= 30ms);
}

TEST_CASE("synchronize called from the lane's own worker is refused instead of hanging") {
  auto lane = Lane::create(Device::cpu(), "self-sync");
  std::promise<std::string> what;
  lane->submit([&] { lane->synchronize(); },
               [&](std::exception_ptr err) {
                 try {
                   if (err) std::rethrow_exception(err);
                   what.set_value("no error");
                 } catch (const std::exception& e) {
                   what.set_value(e.what());
                 }
               });
  const std::string msg = what.get_future().get();
  CHECK(msg.find("self-sync") != std::string::npos);
  CHECK(msg.find("wait forever") != std::string::npos);
}

TEST_CASE("destroying a lane finishes the work already submitted") {
  std::atomic<int> count{0};
  {
    auto lane = Lane::create(Device::cpu(), "drain");
    for (int i = 0; i < 50; ++i)
      lane->submit([&] { std::this_thread::sleep_for(100us); ++count; }, [&](std::exception_ptr) { ++count; });
  }
  CHECK(count == 100);
}

TEST_CASE("a lane whose last reference is dropped inside its own done callback shuts down cleanly") {
  auto lane = Lane::create(Device::cpu(), "self-release");
  std::promise<void> released;
  std::weak_ptr<Lane> weak = lane;
  lane->submit([] {}, [keep = lane, &released](std::exception_ptr) mutable {
    keep.reset();  // may be the last reference: the lane is destroyed on its own worker
    released.set_value();
  });
  lane.reset();
  released.get_future().wait();
  // The lane object is gone once the callback's closure is destroyed.
  for (int i = 0; i < 200 && !weak.expired(); ++i) std::this_thread::sleep_for(1ms);
  CHECK(weak.expired());
}

TEST_CASE("an event on a CPU lane becomes ready when the work before it is done") {
  auto lane = Lane::create(Device::cpu(), "event");
  Gate gate;
  lane->submit(gate.blocker(), nullptr);
  auto ev = Event::record(*lane);
  CHECK_FALSE(ev->ready());
  gate.open();
  ev->wait_host();
  CHECK(ev->ready());
}

TEST_CASE("event wait_on holds back later work on another lane") {
  auto producer = Lane::create(Device::cpu(), "producer");
  auto consumer = Lane::create(Device::cpu(), "consumer");
  Gate gate;
  std::atomic<bool> produced{false}, consumed_after_produce{false}, consumed{false};
  producer->submit([&, f = gate.opened] { f.wait(); produced = true; }, nullptr);
  auto ev = Event::record(*producer);
  ev->wait_on(*consumer);
  consumer->submit([&] { consumed_after_produce = produced.load(); consumed = true; }, nullptr);
  std::this_thread::sleep_for(20ms);
  CHECK_FALSE(consumed);
  gate.open();
  consumer->synchronize();
  CHECK(consumed);
  CHECK(consumed_after_produce);
}

TEST_CASE("stream guards nest and restore the previous current stream") {
  CHECK(current_stream() == nullptr);
  int a = 0, b = 0;
  {
    StreamGuard ga(&a);
    CHECK(current_stream() == &a);
    {
      StreamGuard gb(&b);
      CHECK(current_stream() == &b);
    }
    CHECK(current_stream() == &a);
    std::thread([] { CHECK(current_stream() == nullptr); }).join();  // per thread
  }
  CHECK(current_stream() == nullptr);
}

TEST_CASE("creating a CUDA lane without a usable device says why") {
  if (cuda_available()) {
    MESSAGE("skipped: a CUDA device is present; the CUDA lane cases cover it");
    return;
  }
  try {
    Lane::create(Device::cuda(0), "gpu-lane");
    FAIL("expected Lane::create to refuse cuda:0");
  } catch (const Error& e) {
    CHECK(e.code() == Errc::unsupported);
    CHECK(std::string(e.what()).find(cuda_unavailable_reason()) != std::string::npos);
    CHECK(std::string(e.what()).find("gpu-lane") != std::string::npos);
  }
}

TEST_CASE("a CUDA lane runs work with its stream current and reports done from its notifier") {
  if (!cuda_available()) {
    MESSAGE("skipped: " << cuda_unavailable_reason());
    return;
  }
  auto lane = Lane::create(Device::cuda(0), "cuda-order");
  REQUIRE(lane->stream() != nullptr);
  std::mutex mu;
  std::vector<int> reported;
  std::vector<StreamHandle> seen;
  std::thread::id caller = std::this_thread::get_id(), done_thread;
  for (int i = 0; i < 20; ++i) {
    lane->submit(
        [&] {
          std::lock_guard<std::mutex> lock(mu);
          seen.push_back(current_stream());
        },
        [&, i](std::exception_ptr err) {
          CHECK(!err);
          std::lock_guard<std::mutex> lock(mu);
          reported.push_back(i);
          done_thread = std::this_thread::get_id();
        });
  }
  lane->synchronize();
  CHECK(lane->pending() == 0);
  REQUIRE(reported.size() == 20);
  for (int i = 0; i < 20; ++i) CHECK(reported[i] == i);
  for (auto s : seen) CHECK(s == lane->stream());
  CHECK(done_thread != caller);
}

TEST_CASE("a CUDA lane passes an exception from work to done without waiting on the stream") {
  if (!cuda_available()) {
    MESSAGE("skipped: " << cuda_unavailable_reason());
    return;
  }
  auto lane = Lane::create(Device::cuda(0), "cuda-errors");
  std::promise<std::string> what;
  lane->submit([] { SC_FAIL(Errc::invalid_argument, "bad launch config"); },
               [&](std::exception_ptr err) {
                 try {
                   if (err) std::rethrow_exception(err);
                   what.set_value("no error");
                 } catch (const std::exception& e) {
                   what.set_value(e.what());
                 }
               });
  CHECK(what.get_future().get().find("bad launch config") != std::string::npos);
  lane->synchronize();
  auto other = Lane::create(Device::cuda(0), "cuda-waiter");
  auto ev = Event::record(*lane);
  ev->wait_on(*other);
  ev->wait_host();
  CHECK(ev->ready());
  other->synchronize();
}
