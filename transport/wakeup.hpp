#pragma once
// A level-triggered wake-up signal an I/O thread can poll next to its ZeroMQ
// socket (an eventfd): any thread calls notify(), the I/O thread sees the fd
// readable in zmq::poll and calls drain(). ZeroMQ sockets are not thread-safe,
// so other threads never touch the socket: they queue work and notify().
namespace stagecraft::transport {

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
};

}  // namespace stagecraft::transport
