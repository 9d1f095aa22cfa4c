#pragma once
// A Lane is where a stage's work runs: a CPU worker thread, or a CUDA stream
// (with a host thread that launches onto it). Work is submitted in order; the
// `done` callback runs off the lane once the work — including any device work
// it enqueued — has finished, so an actor's mailbox never waits on a device.
//
//   auto lane = Lane::create(Device::cpu(), "decode");
//   lane->submit([&] { run_stage(batch); },
//                [self](std::exception_ptr err) { /* send a message; no CUDA calls here */ });
//
// On a CUDA lane the work function runs on the lane's launch thread with
// current_stream() set to the lane's stream; `done` is triggered by
// cudaLaunchHostFunc after the stream drains past the work, and is executed on
// a notifier thread (never inside the CUDA callback itself).
#include <chrono>
#include <exception>
#include <functional>
#include <memory>
#include <string>

#include "core/device.hpp"
#include "core/stream.hpp"

namespace stagecraft {

class Event;

class Lane {
 public:
  using Work = std::function<void()>;
  /// err is null on success, else what the work threw.
  using Done = std::function<void(std::exception_ptr err)>;

  static std::shared_ptr<Lane> create(Device device, std::string name);
  virtual ~Lane() = default;

  virtual Device device() const = 0;
  virtual const std::string& name() const = 0;
  /// cudaStream_t of a CUDA lane, nullptr for CPU.
  virtual StreamHandle stream() const = 0;
  /// Enqueues work; returns at once. Exceptions from `work` go to `done`.
  virtual void submit(Work work, Done done) = 0;
  /// Blocks until everything submitted so far has finished (tests, shutdown).
  virtual void synchronize() = 0;
  /// Number of submitted work items not yet done.
  virtual size_t pending() const = 0;
  /// Total time spent running work (CPU) or between launch and completion (CUDA).
  virtual std::chrono::nanoseconds busy_time() const = 0;
};

/// A point on a lane that another lane (or the host) can wait for.
class Event {
 public:
  /// Records on the lane's stream (CUDA) or marks the current tail of its queue (CPU).
  static std::shared_ptr<Event> record(Lane& lane);
  virtual ~Event() = default;
  virtual bool ready() const = 0;
  virtual void wait_host() = 0;
  /// Makes future work on `lane` wait for this event without blocking the host.
  virtual void wait_on(Lane& lane) = 0;
};

}  // namespace stagecraft
