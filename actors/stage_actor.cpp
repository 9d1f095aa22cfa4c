#include "actors/stage_actor.hpp"

#include <algorithm>
#include <cstdio>
#include <deque>
#include <exception>
#include <unordered_map>

#include "actors/batch_policy.hpp"
#include "actors/isolated_run.hpp"
#include "actors/messages.hpp"
#include "actors/wake_timer.hpp"

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

/// One lane submission. The lane thread writes `start`, `run`, `end` and `error`; the actor
/// reads them only after the done message, which orders the accesses.
struct LaneBatch {
  uint64_t id = 0;
  std::vector<PacketPtr> packets;
  IsolatedRun run;
  std::exception_ptr error;  ///< the lane work itself failed (not a stage's run())
  Clock::time_point start, end;
};

class ReplicaActor : public caf::event_based_actor {
 public:
  ReplicaActor(caf::actor_config& cfg, ReplicaConfig rc)
      : caf::event_based_actor(cfg),
        rc_(std::move(rc)),
        policy_(PolicyConfig{rc_.max_batch, rc_.max_wait, rc_.iterative, kLaneDepth}) {
    // Whatever escapes the guards below is a bug in the actor itself: say so, and let the
    // supervisor answer this replica's jobs and start a new one.
    set_exception_handler([name = rc_.name, replica = rc_.replica](caf::scheduled_actor*, std::exception_ptr& e) {
      std::fprintf(stderr, "stagecraft: replica %d of stage '%s' stopped on an exception: %s\n", replica,
                   name.c_str(), what_of(e).c_str());
      return caf::make_error(caf::sec::runtime_error);
    });
  }

  caf::behavior make_behavior() override {
    return {
        [this](const Envelope& e) { on_packet(e); },
        [this](done_atom, uint64_t id) { on_done(id); },
        [this](flush_atom, uint64_t gen) {
          if (flush_timer_.fired(gen)) tick();
        },
        [this](sweep_atom, uint64_t gen) {
          if (!sweep_timer_.fired(gen)) return;
          sweep();
          flush_outbox();
          tick();
          arm_sweep_for_next_deadline();
        },
        [this](credit_atom) {
          flush_outbox();
          tick();
        },
        [this](cancel_atom) {
          sweep();
          flush_outbox();
          tick();
        },
    };
  }

 private:
  using Seq = BatchPolicy::Seq;
  struct Item {
    Envelope env;
    Clock::time_point arrived;
    bool joined = false;        ///< iterative: has run at least one step
    std::string cache_key;      ///< non-empty when the stage has a cache
    std::map<std::string, const void*> before;  ///< tensors before run(), to find the outputs
  };
  struct Running {
    std::shared_ptr<LaneBatch> batch;
    std::vector<Seq> seqs;
  };

  void on_packet(const Envelope& e) {
    auto now = Clock::now();
    e.packet->trace.push_back({rc_.name, "handle", TraceSpan::Kind::transfer, e.sent, now, 1});
    if (auto why = stop_reason(*e.job, now)) {
      leave_stopped(e, *why);
      return;
    }
    Item item{e, now, false, {}, {}};
    if (rc_.cache) {
      item.cache_key = PromptCache::key_for(rc_.cache_model, e.packet->request);
      if (auto hit = rc_.cache->get(item.cache_key)) {
        rc_.counters->cache_hits.fetch_add(1);
        for (auto& [k, t] : *hit) e.packet->tensors[k] = t;
        outbox_.push_back(e);
        flush_outbox();
        if (e.job->deadline && !outbox_.empty()) sweep_timer_.arm(this, *e.job->deadline, sweep_atom::value);
        return;
      }
      rc_.counters->cache_misses.fetch_add(1);
    }
    std::string key;
    if (!guarded("batch_key()", e, [&] { key = rc_.stage->batch_key(*e.packet); })) return;
    const Seq seq = next_seq_++;
    items_.emplace(seq, std::move(item));
    policy_.add(seq, std::move(key), e.packet->request.priority, now);
    if (e.job->deadline) sweep_timer_.arm(this, *e.job->deadline, sweep_atom::value);
    tick();
  }

  /// Runs a stage callback for one job; on an exception fails that job (stage_failed,
  /// naming the stage and the callback), counts a failure and returns false.
  template <class F>
  bool guarded(const char* callback, const Envelope& e, F&& fn) {
    try {
      fn();
      return true;
    } catch (...) {
      count_failure();
      rc_.gate->release(e.replica, e.job->id);
      rc_.core->fail(e, Errc::stage_failed, rc_.name,
                     "stage '" + rc_.name + "' failed in " + callback + " on job " + std::to_string(e.job->id) +
                         ": " + what_of(std::current_exception()));
      return false;
    }
  }

  void count_failure() {
    rc_.counters->failures.fetch_add(1);
    rc_.counters->consecutive_failures.fetch_add(1);
  }

  // Credits are returned before a job is answered, so a caller woken by its result sees
  // them back (as `pending`).
  void leave_stopped(const Envelope& e, Errc why) {
    rc_.gate->release(e.replica, e.job->id);
    rc_.core->stop(e, why, rc_.name);
  }

  void forget(Seq seq) {
    policy_.remove(seq);
    items_.erase(seq);
  }

  /// Fails waiting (not running) jobs that were cancelled or passed their deadline,
  /// in the policy's queue and in the outbox.
  void sweep() {
    const auto now = Clock::now();
    for (Seq seq : policy_.waiting()) {
      auto it = items_.find(seq);
      if (it == items_.end()) continue;
      if (auto why = stop_reason(*it->second.env.job, now)) {
        leave_stopped(it->second.env, *why);
        forget(seq);
      }
    }
    outbox_.erase(std::remove_if(outbox_.begin(), outbox_.end(),
                                 [&](const Envelope& e) {
                                   auto why = stop_reason(*e.job, now);
                                   if (why) leave_stopped(e, *why);
                                   return why.has_value();
                                 }),
                  outbox_.end());
  }

  void arm_sweep_for_next_deadline() {
    const auto now = Clock::now();
    std::optional<Clock::time_point> next;
    auto consider = [&](const JobState& j) {
      if (j.deadline && *j.deadline > now && (!next || *j.deadline < *next)) next = *j.deadline;
    };
    for (const auto& [seq, it] : items_) consider(*it.env.job);
    for (const auto& e : outbox_) consider(*e.job);
    if (next) sweep_timer_.arm(this, *next, sweep_atom::value);
  }

  void tick() {
    sweep();
    if (rc_.iterative) {
      if (policy_.stepping()) return;  // the next step needs this one's result
      std::vector<Seq> seqs = policy_.next_step();
      if (!seqs.empty()) start_batch(seqs);
      return;
    }
    for (;;) {
      auto d = policy_.next(Clock::now(), running_.size());
      if (!d.run.empty()) {
        start_batch(d.run);
        continue;
      }
      if (d.wake_at) flush_timer_.arm(this, *d.wake_at, flush_atom::value);
      return;
    }
  }

  void start_batch(const std::vector<Seq>& seqs) {
    auto batch = std::make_shared<LaneBatch>();
    batch->id = ++batch_id_;
    const auto now = Clock::now();
    for (Seq seq : seqs) {
      Item& it = items_.at(seq);
      // Queue time ends when a job first gets the lane (for an iterative stage, its first step).
      if (!it.joined) {
        it.joined = true;
        it.env.packet->trace.push_back({rc_.name, rc_.lane->name(), TraceSpan::Kind::queue, it.arrived, now, 1});
      }
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
          batch->run = run_isolated(*stage, *lane, batch->packets);
        },
        [batch, self](std::exception_ptr err) {
          batch->end = Clock::now();
          batch->error = err;
          caf::anon_send(self, done_atom::value, batch->id);
        });
    running_.push_back(Running{batch, seqs});
  }

  void on_done(uint64_t id) {
    auto pos = std::find_if(running_.begin(), running_.end(), [id](const Running& r) { return r.batch->id == id; });
    if (pos == running_.end()) return;
    Running done = std::move(*pos);
    running_.erase(pos);
    const LaneBatch& batch = *done.batch;
    const int n = static_cast<int>(batch.packets.size());
    rc_.counters->batches.fetch_add(1);
    rc_.counters->packets.fetch_add(static_cast<uint64_t>(n));
    TraceSpan compute{rc_.name, rc_.lane->name(), TraceSpan::Kind::compute, batch.start, batch.end, n};
    if (batch.start == Clock::time_point{}) compute.start = batch.end;  // failed before starting

    // Counted before any job is answered, so a caller woken by its result sees the count.
    const bool any_failed =
        batch.error || std::any_of(batch.run.errors.begin(), batch.run.errors.end(), [](const auto& e) { return bool(e); });
    if (any_failed) {
      count_failure();
    } else {
      rc_.counters->consecutive_failures.store(0);
      rc_.counters->restarted.store(false);
    }
    for (size_t i = 0; i < done.seqs.size(); ++i) {
      const Seq seq = done.seqs[i];
      auto found = items_.find(seq);
      if (found == items_.end()) continue;
      Item& it = found->second;
      Envelope& e = it.env;
      e.packet->trace.push_back(compute);
      std::exception_ptr err = batch.error;
      if (!err && i < batch.run.errors.size()) err = batch.run.errors[i];
      if (err) {
        rc_.gate->release(e.replica, e.job->id);
        rc_.core->fail(e, Errc::stage_failed, rc_.name,
                       "stage '" + rc_.name + "' failed on job " + std::to_string(e.job->id) + ": " + what_of(err) +
                           (batch.run.retried ? " (run alone, after its batch of " + std::to_string(n) + " failed)"
                                              : std::string()));
        forget(seq);
        continue;
      }
      if (rc_.iterative) {
        report_progress(*e.job, *e.packet);
        bool finished = false;
        if (!guarded("finished()", e, [&] { finished = rc_.stage->finished(*e.packet); })) {
          forget(seq);
          continue;
        }
        if (!finished) continue;
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
      forget(seq);
    }
    if (rc_.iterative) policy_.step_done();
    flush_outbox();
    tick();
  }

  void report_progress(const JobState& job, const Packet& p) {
    if (!job.progress) return;
    tl_in_engine_callback = true;
    try {
      job.progress(p.step, p.total_steps);
    } catch (...) {
      // A throwing progress callback must not take the pipeline down; the job goes on.
    }
    tl_in_engine_callback = false;
  }

  /// Sends finished packets on while the next stage grants credits; the last stage completes jobs.
  void flush_outbox() {
    while (!outbox_.empty()) {
      const Envelope e = outbox_.front();
      if (auto why = stop_reason(*e.job, Clock::now())) {
        leave_stopped(e, *why);
      } else if (!rc_.next) {
        rc_.gate->release(e.replica, e.job->id);
        rc_.core->succeed(e);
      } else {
        if (!rc_.next->acquire_or_wait(handle())) return;  // a credit_atom will call us again
        Envelope out = e;
        out.replica = rc_.next->pick_replica();
        out.sent = Clock::now();
        rc_.next->send(std::move(out));
        rc_.gate->release(e.replica, e.job->id);
      }
      outbox_.pop_front();
    }
  }

  // A fresh handle per use: a caf::actor member pointing at this actor would be a
  // reference cycle, and the actor (with its mailbox) would outlive the engine (ASan).
  caf::actor handle() { return caf::actor_cast<caf::actor>(this); }

  /// Batches on the lane, oldest first. Two keep the lane busy across the round trip
  /// of a done message; iterative stages run one step at a time.
  static constexpr size_t kLaneDepth = 2;

  ReplicaConfig rc_;
  BatchPolicy policy_;
  std::unordered_map<Seq, Item> items_;  ///< waiting or running in this replica
  std::deque<Running> running_;
  std::deque<Envelope> outbox_;
  WakeTimer flush_timer_, sweep_timer_;
  Seq next_seq_ = 0;
  uint64_t batch_id_ = 0;
};

}  // namespace

caf::actor spawn_replica(caf::actor_system& sys, ReplicaConfig cfg) {
  return sys.spawn<ReplicaActor>(std::move(cfg));
}

}  // namespace stagecraft::actors
