#include "actors/engine_core.hpp"

#include "actors/messages.hpp"

namespace stagecraft::actors {

thread_local bool tl_in_engine_callback = false;

std::optional<Errc> stop_reason(const JobState& job, Clock::time_point now) {
  if (job.cancelled.load(std::memory_order_relaxed)) return Errc::cancelled;
  if (job.deadline && now >= *job.deadline) return Errc::deadline_exceeded;
  return std::nullopt;
}

StageGate::StageGate(std::string name, int credits, int replicas)
    : name_(std::move(name)),
      credits_(credits),
      outstanding_(new std::atomic<int>[static_cast<size_t>(replicas)]),
      slots_(new Slot[static_cast<size_t>(replicas)]),
      n_replicas_(replicas) {
  for (int i = 0; i < replicas; ++i) outstanding_[i].store(0);
}

bool StageGate::try_acquire() {
  int cur = in_flight_.load();
  while (cur < credits_) {
    if (in_flight_.compare_exchange_weak(cur, cur + 1)) return true;
  }
  return false;
}

bool StageGate::acquire_or_wait(const caf::actor& waiter) {
  if (try_acquire()) return true;
  {
    std::lock_guard<std::mutex> lock(waiters_mutex_);
    bool known = false;
    for (const auto& w : waiters_) known = known || (w == waiter);
    if (!known) waiters_.push_back(waiter);
    has_waiters_.store(true);
  }
  // A release between the failed try and the registration above would have found
  // no waiter; trying again closes that window. A spurious wake-up later is harmless.
  return try_acquire();
}

int StageGate::pick_replica() {
  int best = 0;
  int best_load = outstanding_[0].load();
  for (int i = 1; i < n_replicas_; ++i) {
    int l = outstanding_[i].load();
    if (l < best_load) best = i, best_load = l;
  }
  outstanding_[best].fetch_add(1);
  return best;
}

void StageGate::send(Envelope e) {
  Slot& s = slots_[e.replica];
  // The entry and the send happen under the slot's lock, so a supervisor replacing a dead
  // replica either sees the entry (and answers the job) or the send reaches the new actor.
  std::lock_guard<std::mutex> lock(s.mu);
  s.held[e.job->id] = e;
  if (s.actor) caf::anon_send(s.actor, std::move(e));
}

void StageGate::release(int replica, uint64_t job_id) {
  {
    Slot& s = slots_[replica];
    std::lock_guard<std::mutex> lock(s.mu);
    if (s.held.erase(job_id) == 0) return;  // answered by a supervisor already
  }
  free_credit(replica);
}

void StageGate::free_credit(int replica) {
  outstanding_[replica].fetch_sub(1);
  in_flight_.fetch_sub(1);
  if (!has_waiters_.load()) return;
  std::vector<caf::actor> wake;
  {
    std::lock_guard<std::mutex> lock(waiters_mutex_);
    wake.swap(waiters_);
    has_waiters_.store(false);
  }
  for (const auto& w : wake) caf::anon_send(w, credit_atom::value);
}

caf::actor StageGate::replica(int r) const {
  std::lock_guard<std::mutex> lock(slots_[r].mu);
  return slots_[r].actor;
}

void StageGate::set_replica(int r, caf::actor a) {
  std::lock_guard<std::mutex> lock(slots_[r].mu);
  slots_[r].actor = std::move(a);
}

std::vector<Envelope> StageGate::replace_replica(int r, const std::function<caf::actor()>& fresh) {
  std::vector<Envelope> taken;
  {
    Slot& s = slots_[r];
    std::lock_guard<std::mutex> lock(s.mu);
    for (auto& [id, e] : s.held) taken.push_back(std::move(e));
    s.held.clear();
    s.actor = fresh();
  }
  for (size_t i = 0; i < taken.size(); ++i) free_credit(r);
  return taken;
}

void StageGate::clear_actors() {
  for (int r = 0; r < n_replicas_; ++r) {
    std::lock_guard<std::mutex> lock(slots_[r].mu);
    slots_[r].actor = nullptr;
    slots_[r].held.clear();
  }
  std::lock_guard<std::mutex> lock(waiters_mutex_);
  waiters_.clear();
  has_waiters_.store(false);
}

void EngineCore::finish(const Envelope& e, JobResult result) {
  if (e.job->finished.exchange(true)) return;
  result.job_id = e.job->id;
  if (e.packet) {
    result.trace = e.packet->trace;
    result.steps = e.packet->step;
  }
  counts.count(result);
  {
    JobResult kept;
    kept.job_id = result.job_id;
    kept.error = result.error;
    kept.stage = result.stage;
    kept.trace = result.trace;
    std::lock_guard<std::mutex> lock(trace_mutex);
    recent.push_back(std::move(kept));
    while (recent.size() > kTraceKeep) recent.pop_front();
  }
  {
    std::lock_guard<std::mutex> lock(jobs_mutex);
    jobs.erase(e.job->id);
  }
  // Decrement before fulfilling, so a caller woken by the future sees the slot free.
  pending.fetch_sub(1);
  if (!e.job->done) {
    e.job->promise.set_value(std::move(result));
    return;
  }
  // A caller's callback: it must not take the engine down, and a shutdown() it calls must
  // not wait for the thread it runs on.
  const bool outer = tl_in_engine_callback;
  tl_in_engine_callback = true;
  try {
    e.job->done(result);
  } catch (...) {
  }
  tl_in_engine_callback = outer;
}

void EngineCore::succeed(const Envelope& e) {
  JobResult r;
  r.tensors = e.packet->tensors;
  finish(e, std::move(r));
}

void EngineCore::fail(const Envelope& e, Errc code, const std::string& stage, const std::string& message) {
  JobResult r;
  r.error = code;
  r.stage = stage;
  r.message = message;
  finish(e, std::move(r));
}

void EngineCore::stop(const Envelope& e, Errc why, const std::string& stage) {
  std::string where = stage.empty() ? std::string("before its first stage") : "at stage '" + stage + "'";
  if (why == Errc::cancelled)
    fail(e, why, stage, "job " + std::to_string(e.job->id) + " was cancelled " + where);
  else
    fail(e, why, stage,
         "job " + std::to_string(e.job->id) + " passed its deadline " + where +
             "; give it a later deadline or fewer steps");
}

std::vector<caf::actor> EngineCore::actors() const {
  std::vector<caf::actor> out;
  if (supervisor) out.push_back(supervisor);
  if (ingress) out.push_back(ingress);
  for (const auto& g : gates)
    for (int r = 0; r < g->replica_count(); ++r)
      if (auto a = g->replica(r)) out.push_back(a);
  return out;
}

}  // namespace stagecraft::actors
