#pragma once
// A level-triggered wake-up signal an I/O thread can poll next to its ZeroMQ
// socket (an eventfd): any thread calls notify(), the I/O thread sees the fd
// readable in zmq::poll and calls drain(). ZeroMQ sockets are not thread-safe,
// so other threads never touch the socket: they queue work and notify().
#include <atomic>
#include <chrono>

#include <zmq.h>

namespace stagecraft::transport {

/// zmq_poll that treats a signal (EINTR) as "nothing ready" instead of an error, so a
/// SIGTERM meant for a drain handler never tears down an I/O loop. Throws Error(io)
/// for any other failure.
void poll_ignoring_signals(zmq_pollitem_t* items, int n, std::chrono::milliseconds timeout);

class Wakeup {
 public:
  Wakeup();   ///< throws Error(io) if the eventfd cannot be made
  ~Wakeup();
  Wakeup(const Wakeup&) = delete;
  Wakeup& operator=(const Wakeup&) = delete;
  int fd() const { return fd_; }
  void notify();  ///< async-signal-safe, never blocks
  void drain();   ///< clears the signal (call before taking the queued work)

 private:
  int fd_ = -1;
  /// Set by the notify() that wrote, cleared by drain(): later notifies before the I/O
  /// thread wakes skip the system call (one packet per notify made it a write each).
  std::atomic<bool> pending_{false};
};

}  // namespace stagecraft::transport
