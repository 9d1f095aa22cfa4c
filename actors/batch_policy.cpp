#include "actors/batch_policy.hpp"

#include <algorithm>

namespace stagecraft::actors {

BatchPolicy::BatchPolicy(PolicyConfig cfg) : cfg_(cfg) {
  if (cfg_.max_batch < 1) cfg_.max_batch = 1;
  if (cfg_.lane_depth < 1) cfg_.lane_depth = 1;
}

void BatchPolicy::add(Seq seq, std::string key, int priority, Clock::time_point arrived) {
  Job j{seq, std::move(key), priority, arrived, false};
  // Callers add in seq order; keep the order even if one does not.
  auto pos = std::upper_bound(jobs_.begin(), jobs_.end(), seq, [](Seq s, const Job& x) { return s < x.seq; });
  jobs_.insert(pos, std::move(j));
}

bool BatchPolicy::remove(Seq seq) {
  auto it = std::find_if(jobs_.begin(), jobs_.end(), [seq](const Job& j) { return j.seq == seq; });
  if (it == jobs_.end()) return false;
  jobs_.erase(it);
  return true;
}

bool BatchPolicy::contains(Seq seq) const {
  return std::any_of(jobs_.begin(), jobs_.end(), [seq](const Job& j) { return j.seq == seq; });
}

std::vector<BatchPolicy::Seq> BatchPolicy::waiting() const {
  std::vector<Seq> out;
  for (const auto& j : jobs_)
    if (!j.running) out.push_back(j.seq);
  return out;
}

BatchPolicy::Decision BatchPolicy::next(Clock::time_point now, size_t on_lane) {
  Decision d;
  if (jobs_.empty() || on_lane >= cfg_.lane_depth) return d;
  const std::string& key = jobs_.front().key;
  std::vector<size_t> pick;
  for (size_t i = 0; i < jobs_.size() && static_cast<int>(pick.size()) < cfg_.max_batch; ++i)
    if (jobs_[i].key == key) pick.push_back(i);
  const bool full = static_cast<int>(pick.size()) >= cfg_.max_batch;
  // Behind a running batch only a full one is queued on the lane: a partial one is
  // better off collecting more jobs until the lane is free (its done message asks again).
  if (on_lane > 0 && !full) return d;
  if (!full && cfg_.max_wait.count() > 0) {
    const auto due = jobs_.front().arrived + cfg_.max_wait;
    if (now < due) {
      d.wake_at = due;
      return d;
    }
  }
  for (size_t i : pick) d.run.push_back(jobs_[i].seq);
  for (auto it = pick.rbegin(); it != pick.rend(); ++it) jobs_.erase(jobs_.begin() + static_cast<long>(*it));
  return d;
}

std::vector<BatchPolicy::Seq> BatchPolicy::next_step() {
  std::vector<Seq> out;
  if (stepping_ || jobs_.empty()) return out;
  std::vector<const Job*> order;
  for (const auto& j : jobs_) order.push_back(&j);
  std::stable_sort(order.begin(), order.end(),
                   [](const Job* a, const Job* b) { return a->priority > b->priority; });  // ties: arrival
  const std::string& key = order.front()->key;
  for (const Job* j : order) {
    if (static_cast<int>(out.size()) >= cfg_.max_batch) break;
    if (j->key == key) out.push_back(j->seq);
  }
  for (auto& j : jobs_) j.running = std::find(out.begin(), out.end(), j.seq) != out.end();
  stepping_ = true;
  return out;
}

void BatchPolicy::step_done() {
  stepping_ = false;
  for (auto& j : jobs_) j.running = false;
}

}  // namespace stagecraft::actors
