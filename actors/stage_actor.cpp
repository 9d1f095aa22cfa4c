#include "actors/stage_actor.hpp"

#include <algorithm>
#include <deque>
#include <exception>

#include "actors/messages.hpp"

namespace stagecraft::actors {
namespace {

std::string what_of(const std::exception_ptr& e) {
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& ex) {
    return ex.what();
  } catch (...) {
    return "unknown exception";
  }
}

/// One lane submission. The lane thread writes `start`, the done callback `end` and
/// `error`; the actor reads them only after the done message, which orders the accesses.
struct LaneBatch {
  uint64_t id = 0;
  std::vector<PacketPtr> packets;
  std::exception_ptr error;
  Clock::time_point start, end;
};

class ReplicaActor : public caf::event_based_actor {
 public:
  ReplicaActor(caf::actor_config& cfg, ReplicaConfig rc) : caf::event_based_actor(cfg), rc_(std::move(rc)) {}

  caf::behavior make_behavior() override {
    return {
        [this](const Envelope& e) { on_packet(e); },
        [this](done_atom, uint64_t id) { on_done(id); },
        [this](flush_atom, uint64_t gen) {
          if (gen != timer_gen_) return;  // a stale timer from an earlier partial batch
          timer_armed_ = false;
          tick(true);
        },
        [this](credit_atom) {
          flush_outbox();
          tick(false);
        },
        [this](cancel_atom) {
          sweep();
          flush_outbox();
          tick(false);
        },
    };
  }

 private:
  struct Item {
    Envelope env;
    Clock::time_point arrived;
    uint64_t seq = 0;
    bool joined = false;        ///< iterative: has run at least one step
    std::string cache_key;      ///< non-empty when the stage has a cache
    std::map<std::string, const void*> before;  ///< tensors before run(), to find the outputs
  };

  void on_packet(const Envelope& e) {
    auto now = Clock::now();
    e.packet->trace.push_back({rc_.name, "handle", TraceSpan::Kind::transfer, e.sent, now, 1});
    Item item{e, now, next_seq_++, false, {}, {}};
    if (rc_.cache) {
      item.cache_key = PromptCache::key_for(rc_.cache_model, e.packet->request);
      if (auto hit = rc_.cache->get(item.cache_key)) {
        rc_.counters->cache_hits.fetch_add(1);
        for (auto& [k, t] : *hit) e.packet->tensors[k] = t;
        outbox_.push_back(e);
        flush_outbox();
        return;
      }
      rc_.counters->cache_misses.fetch_add(1);
    }
    if (rc_.iterative)
      active_.push_back(std::move(item));
    else
      queue_.push_back(std::move(item));
    tick(false);
  }

  /// Fails queued (not running) jobs that were cancelled or passed their deadline.
  void sweep() {
    auto now = Clock::now();
    auto drop = [&](Item& it) {
      auto why = stop_reason(*it.env.job, now);
      if (!why) return false;
      rc_.core->stop(it.env, *why, rc_.name);
      rc_.gate->release(it.env.replica);
      return true;
    };
    queue_.erase(std::remove_if(queue_.begin(), queue_.end(), drop), queue_.end());
    active_.erase(std::remove_if(active_.begin(), active_.end(),
                                 [&](Item& it) { return !is_running(it.seq) && drop(it); }),
                  active_.end());
  }

  bool is_running(uint64_t seq) const {
    return std::find(running_seqs_.begin(), running_seqs_.end(), seq) != running_seqs_.end();
  }

  void tick(bool timer_fired) {
    if (rc_.iterative) {
      if (!running_.empty()) return;  // the next step needs this one's result
      sweep();
      tick_iterative();
      return;
    }
    sweep();
    while (running_.size() < kLaneDepth && tick_batch(timer_fired)) {
    }
  }

  /// Starts one batch if one is due; false when nothing was started.
  bool tick_batch(bool timer_fired) {
    if (queue_.empty()) return false;
    const std::string key = rc_.stage->batch_key(*queue_.front().env.packet);
    std::vector<size_t> pick;
    for (size_t i = 0; i < queue_.size() && static_cast<int>(pick.size()) < rc_.max_batch; ++i)
      if (i == 0 || rc_.stage->batch_key(*queue_[i].env.packet) == key) pick.push_back(i);
    const bool full = static_cast<int>(pick.size()) >= rc_.max_batch;
    // Behind a running batch only a full one is queued on the lane: a partial one is
    // better off collecting more packets until the lane is free.
    if (!running_.empty() && !full) return false;
    if (!full && rc_.max_wait.count() > 0 && !timer_fired) {
      auto waited = Clock::now() - queue_.front().arrived;
      if (waited < rc_.max_wait) {
        if (!timer_armed_) {
          timer_armed_ = true;
          delayed_send(this, std::chrono::duration_cast<std::chrono::microseconds>(rc_.max_wait - waited),
                       flush_atom::value, ++timer_gen_);
        }
        return false;
      }
    }
    ++timer_gen_;  // whatever timer is pending now refers to packets that are leaving
    timer_armed_ = false;
    std::vector<Item> items;
    for (size_t i : pick) items.push_back(std::move(queue_[i]));
    for (auto it = pick.rbegin(); it != pick.rend(); ++it) queue_.erase(queue_.begin() + static_cast<long>(*it));
    start_batch(std::move(items));
    return true;
  }

  void tick_iterative() {
    if (active_.empty()) return;
    std::stable_sort(active_.begin(), active_.end(), [](const Item& a, const Item& b) {
      int pa = a.env.packet->request.priority, pb = b.env.packet->request.priority;
      return pa != pb ? pa > pb : a.seq < b.seq;
    });
    const std::string key = rc_.stage->batch_key(*active_.front().env.packet);
    running_seqs_.clear();
    std::vector<Item*> chosen;
    for (auto& it : active_) {
      if (static_cast<int>(chosen.size()) >= rc_.max_batch) break;
      if (!chosen.empty() && rc_.stage->batch_key(*it.env.packet) != key) continue;
      chosen.push_back(&it);
      running_seqs_.push_back(it.seq);
    }
    std::vector<Item> view;  // start_batch() only needs the envelopes
    auto now = Clock::now();
    for (Item* it : chosen) {
      if (!it->joined) {
        it->joined = true;
        it->env.packet->trace.push_back({rc_.name, rc_.lane->name(), TraceSpan::Kind::queue, it->arrived, now, 1});
      }
      view.push_back(Item{it->env, it->arrived, it->seq, true, {}, {}});
    }
    start_batch(std::move(view), /*record_queue=*/false);
  }

  void start_batch(std::vector<Item> items, bool record_queue = true) {
    auto batch = std::make_shared<LaneBatch>();
    batch->id = ++batch_id_;
    auto now = Clock::now();
    for (auto& it : items) {
      if (record_queue)
        it.env.packet->trace.push_back({rc_.name, rc_.lane->name(), TraceSpan::Kind::queue, it.arrived, now, 1});
      if (rc_.cache)
        for (auto& [k, t] : it.env.packet->tensors) it.before[k] = t.defined() ? t.data() : nullptr;
      batch->packets.push_back(it.env.packet);
    }
    Stage* stage = rc_.stage;
    Lane* lane = rc_.lane;
    caf::actor self = handle();  // strong only while the batch is on the lane
    lane->submit(
        [batch, stage, lane] {
          batch->start = Clock::now();
          stage->run(batch->packets, *lane);
        },
        [batch, self](std::exception_ptr err) {
          batch->end = Clock::now();
          batch->error = err;
          caf::anon_send(self, done_atom::value, batch->id);
        });
    running_.push_back(Running{batch, std::move(items)});
  }

  void on_done(uint64_t id) {
    auto pos = std::find_if(running_.begin(), running_.end(), [id](const Running& r) { return r.batch->id == id; });
    if (pos == running_.end()) return;
    Running done = std::move(*pos);
    running_.erase(pos);
    auto& batch = done.batch;
    const int n = static_cast<int>(batch->packets.size());
    rc_.counters->batches.fetch_add(1);
    rc_.counters->packets.fetch_add(static_cast<uint64_t>(n));
    std::string err;
    if (batch->error) {
      err = what_of(batch->error);
      rc_.counters->failures.fetch_add(1);
      rc_.counters->consecutive_failures.fetch_add(1);
    } else {
      rc_.counters->consecutive_failures.store(0);
    }
    TraceSpan compute{rc_.name, rc_.lane->name(), TraceSpan::Kind::compute, batch->start, batch->end, n};
    if (batch->start == Clock::time_point{}) compute.start = batch->end;  // threw before starting

    auto settle = [&](Item& it) {  // true: the item leaves this stage (failed or finished)
      Envelope& e = it.env;
      e.packet->trace.push_back(compute);
      if (batch->error) {
        rc_.core->fail(e, Errc::stage_failed, rc_.name,
                       "stage '" + rc_.name + "' failed on job " + std::to_string(e.job->id) + ": " + err);
        rc_.gate->release(e.replica);
        return true;
      }
      if (rc_.iterative) {
        if (e.job->progress) {
          try {
            e.job->progress(e.packet->step, e.packet->total_steps);
          } catch (...) {
            // A throwing progress callback must not take the pipeline down; the job goes on.
          }
        }
        if (!rc_.stage->finished(*e.packet)) return false;
      }
      if (rc_.cache && !it.cache_key.empty()) {
        PromptCache::Entry out;
        for (auto& [k, t] : e.packet->tensors) {
          auto b = it.before.find(k);
          if (b == it.before.end() || b->second != (t.defined() ? t.data() : nullptr)) out[k] = t;
        }
        rc_.cache->put(it.cache_key, std::move(out));
      }
      outbox_.push_back(e);
      return false;  // leaves via the outbox, which releases the credit
    };

    if (rc_.iterative) {
      std::vector<uint64_t> seqs = std::move(running_seqs_);
      running_seqs_.clear();
      active_.erase(std::remove_if(active_.begin(), active_.end(),
                                   [&](Item& it) {
                                     if (std::find(seqs.begin(), seqs.end(), it.seq) == seqs.end()) return false;
                                     size_t before = outbox_.size();
                                     bool gone = settle(it);
                                     return gone || outbox_.size() != before;
                                   }),
                    active_.end());
    } else {
      for (auto& it : done.items) settle(it);
    }
    flush_outbox();
    tick(false);
  }

  /// Sends finished packets on while the next stage grants credits; the last stage completes jobs.
  void flush_outbox() {
    while (!outbox_.empty()) {
      Envelope& e = outbox_.front();
      if (auto why = stop_reason(*e.job, Clock::now())) {
        rc_.core->stop(e, *why, rc_.name);
      } else if (!rc_.next) {
        rc_.core->succeed(e);
      } else {
        if (!rc_.next->acquire_or_wait(handle())) return;  // a credit_atom will call us again
        Envelope out = e;
        out.replica = rc_.next->pick_replica();
        out.sent = Clock::now();
        send(rc_.next->replicas[static_cast<size_t>(out.replica)], std::move(out));
      }
      rc_.gate->release(e.replica);
      outbox_.pop_front();
    }
  }

  // A fresh handle per use: a caf::actor member pointing at this actor would be a
  // reference cycle, and the actor (with its mailbox) would outlive the engine (ASan).
  caf::actor handle() { return caf::actor_cast<caf::actor>(this); }

  ReplicaConfig rc_;
  std::deque<Item> queue_;     ///< batch stages: waiting to run
  std::vector<Item> active_;   ///< iterative stages: the active set
  struct Running {
    std::shared_ptr<LaneBatch> batch;
    std::vector<Item> items;  ///< batch stages: the items; iterative: see running_seqs_
  };
  /// Batches on the lane, oldest first. Two keep the lane busy across the round trip
  /// of a done message; iterative stages run one step at a time.
  static constexpr size_t kLaneDepth = 2;
  std::deque<Running> running_;
  std::vector<uint64_t> running_seqs_;  ///< iterative: jobs in the running step
  std::deque<Envelope> outbox_;
  uint64_t next_seq_ = 0, batch_id_ = 0, timer_gen_ = 0;
  bool timer_armed_ = false;
};

class IngressActor : public caf::event_based_actor {
 public:
  IngressActor(caf::actor_config& cfg, EngineCore* core, StageGate* first)
      : caf::event_based_actor(cfg), core_(core), first_(first) {}

  caf::behavior make_behavior() override {
    return {
        [this](const Envelope& e) {
          queue_.push_back(e);
          flush();
        },
        [this](credit_atom) { flush(); },
        [this](cancel_atom) {
          auto now = Clock::now();
          queue_.erase(std::remove_if(queue_.begin(), queue_.end(),
                                      [&](const Envelope& e) {
                                        auto why = stop_reason(*e.job, now);
                                        if (why) core_->stop(e, *why, "");
                                        return why.has_value();
                                      }),
                       queue_.end());
          flush();
        },
    };
  }

 private:
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
        send(first_->replicas[static_cast<size_t>(out.replica)], std::move(out));
      }
      queue_.pop_front();
    }
  }

  caf::actor handle() { return caf::actor_cast<caf::actor>(this); }  // see ReplicaActor::handle

  EngineCore* core_;
  StageGate* first_;
  std::deque<Envelope> queue_;  ///< bounded by limits.max_pending_jobs (checked in submit)
};

}  // namespace

caf::actor spawn_replica(caf::actor_system& sys, ReplicaConfig cfg) {
  return sys.spawn<ReplicaActor>(std::move(cfg));
}

caf::actor spawn_ingress(caf::actor_system& sys, EngineCore* core, StageGate* first) {
  return sys.spawn<IngressActor>(core, first);
}

}  // namespace stagecraft::actors
