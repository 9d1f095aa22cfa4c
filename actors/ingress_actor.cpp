// The front of the pipeline: admitted jobs wait here for a credit of the first stage.
#include <algorithm>
#include <deque>

#include "actors/messages.hpp"
#include "actors/stage_actor.hpp"
#include "actors/wake_timer.hpp"

namespace stagecraft::actors {
namespace {

class IngressActor : public caf::event_based_actor {
 public:
  IngressActor(caf::actor_config& cfg, EngineCore* core, StageGate* first)
      : caf::event_based_actor(cfg), core_(core), first_(first) {}

  caf::behavior make_behavior() override {
    return {
        [this](const Envelope& e) {
          queue_.push_back(e);
          if (e.job->deadline) timer_.arm(this, *e.job->deadline, sweep_atom::value);
          flush();
        },
        [this](credit_atom) { flush(); },
        [this](cancel_atom) {
          sweep();
          flush();
        },
        [this](sweep_atom, uint64_t gen) {
          if (!timer_.fired(gen)) return;
          sweep();
          flush();
          arm_for_next_deadline();
        },
    };
  }

 private:
  /// Answers the waiting jobs that were cancelled or passed their deadline.
  void sweep() {
    const auto now = Clock::now();
    queue_.erase(std::remove_if(queue_.begin(), queue_.end(),
                                [&](const Envelope& e) {
                                  auto why = stop_reason(*e.job, now);
                                  if (why) core_->stop(e, *why, "");
                                  return why.has_value();
                                }),
                 queue_.end());
  }

  void arm_for_next_deadline() {
    const auto now = Clock::now();
    std::optional<Clock::time_point> next;
    for (const auto& e : queue_)
      if (e.job->deadline && *e.job->deadline > now && (!next || *e.job->deadline < *next)) next = *e.job->deadline;
    if (next) timer_.arm(this, *next, sweep_atom::value);
  }

  void flush() {
    while (!queue_.empty()) {
      Envelope& e = queue_.front();
      if (auto why = stop_reason(*e.job, Clock::now())) {
        core_->stop(e, *why, "");
      } else {
        if (!first_->acquire_or_wait(handle())) return;
        Envelope out = e;
        out.replica = first_->pick_replica();
        out.sent = Clock::now();
        first_->send(std::move(out));
      }
      queue_.pop_front();
    }
  }

  // A fresh handle per use: a member pointing at this actor would be a reference cycle.
  caf::actor handle() { return caf::actor_cast<caf::actor>(this); }

  EngineCore* core_;
  StageGate* first_;
  std::deque<Envelope> queue_;  ///< bounded by limits.max_pending_jobs (checked in submit)
  WakeTimer timer_;
};

}  // namespace

caf::actor spawn_ingress(caf::actor_system& sys, EngineCore* core, StageGate* first) {
  return sys.spawn<IngressActor>(core, first);
}

}  // namespace stagecraft::actors
