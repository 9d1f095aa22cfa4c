#pragma once
// The front door's job counts, kept the same way by the in-process engine and by the
// head node of a split pipeline: what came in, what was refused and why, how each
// accepted job ended.
#include <atomic>
#include <cstdint>

#include "actors/job_result.hpp"

namespace stagecraft::actors {

struct JobCounters {
  std::atomic<uint64_t> submitted{0}, accepted{0}, refused{0}, invalid{0}, completed{0}, failed{0};
  std::atomic<uint64_t> cancelled{0}, deadline_exceeded{0}, stage_failed{0}, node_lost{0};

  /// Counts an accepted job's one outcome.
  void count(const JobResult& r) {
    if (r.ok()) {
      completed.fetch_add(1);
      return;
    }
    failed.fetch_add(1);
    if (*r.error == Errc::cancelled) cancelled.fetch_add(1);
    if (*r.error == Errc::deadline_exceeded) deadline_exceeded.fetch_add(1);
    if (*r.error == Errc::stage_failed) stage_failed.fetch_add(1);
    if (*r.error == Errc::node_lost) node_lost.fetch_add(1);
  }
  /// Copies the counts into `s` (pending, stages and health are the caller's).
  void fill(EngineStats& s) const {
    s.submitted = submitted.load();
    s.accepted = accepted.load();
    s.refused = refused.load();
    s.invalid = invalid.load();
    s.completed = completed.load();
    s.failed = failed.load();
    s.cancelled = cancelled.load();
    s.deadline_exceeded = deadline_exceeded.load();
    s.stage_failed = stage_failed.load();
    s.node_lost = node_lost.load();
  }
};

}  // namespace stagecraft::actors
