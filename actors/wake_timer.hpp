#pragma once
// One pending wake-up of an actor for the earliest of several times (a partial batch's
// max_wait, the next deadline of a waiting job). Arming for a later time than the one
// pending does nothing; arming for an earlier one supersedes it, and the superseded
// message is recognised by its generation and ignored.
//
//   timer_.arm(this, deadline, sweep_atom::value);      // in a handler
//   [this](sweep_atom, uint64_t gen) { if (timer_.fired(gen)) sweep(); }
#include <chrono>
#include <cstdint>

#include "core/packet.hpp"

namespace stagecraft::actors {

class WakeTimer {
 public:
  template <class Self, class Atom>
  void arm(Self* self, Clock::time_point when, Atom atom) {
    if (armed_ && when >= at_) return;
    armed_ = true;
    at_ = when;
    ++gen_;
    auto wait = std::chrono::ceil<std::chrono::microseconds>(when - Clock::now());
    if (wait.count() < 0) wait = std::chrono::microseconds(0);
    self->delayed_send(self, wait, atom, gen_);
  }
  /// True when the message of generation `gen` is the pending one (which it then clears).
  bool fired(uint64_t gen) {
    if (!armed_ || gen != gen_) return false;
    armed_ = false;
    return true;
  }

 private:
  bool armed_ = false;
  Clock::time_point at_;
  uint64_t gen_ = 0;
};

}  // namespace stagecraft::actors
