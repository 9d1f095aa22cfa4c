#include "transport/wakeup.hpp"

#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>

#include "core/error.hpp"

namespace stagecraft::transport {

Wakeup::Wakeup() : fd_(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {
  SC_CHECK(fd_ >= 0, Errc::io, "eventfd failed: " << std::strerror(errno));
}

Wakeup::~Wakeup() {
  if (fd_ >= 0) close(fd_);
}

void Wakeup::notify() {
  if (pending_.exchange(true)) return;  // the fd is readable already
  const uint64_t one = 1;
  // EAGAIN means the counter is saturated: the fd is readable already, which is all we need.
  [[maybe_unused]] ssize_t n = write(fd_, &one, sizeof one);
}

void poll_ignoring_signals(zmq_pollitem_t* items, int n, std::chrono::milliseconds timeout) {
  if (zmq_poll(items, n, static_cast<long>(timeout.count())) >= 0) return;
  if (zmq_errno() == EINTR) {
    for (int i = 0; i < n; ++i) items[i].revents = 0;
    return;
  }
  SC_FAIL(Errc::io, "zmq_poll failed: " << zmq_strerror(zmq_errno()));
}

void Wakeup::drain() {
  // Cleared first: a notify() from here on writes again, and its work, queued before it,
  // is taken after this drain returns.
  pending_.store(false);
  uint64_t v = 0;
  [[maybe_unused]] ssize_t n = read(fd_, &v, sizeof v);
}

}  // namespace stagecraft::transport
