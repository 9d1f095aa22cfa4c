#pragma once
// The actors of a running pipeline.
//
// A replica actor owns one Stage replica on one Lane: the glue between its mailbox,
// the lane and the stage gates. Which waiting jobs run next, and with whom, is the
// BatchPolicy's decision (actors/batch_policy.hpp); the actor hands the chosen batch
// to the lane and learns of completion by message, so its mailbox never waits on
// compute. Finished packets leave only with a credit of the next stage; until then
// they count against this stage's own credits, which is what bounds every queue.
//
// Every stage callback the actor makes (batch_key, run, finished) is guarded: an
// exception fails only the jobs concerned with stage_failed, naming the stage and the
// callback, and a batch whose run() throws is rerun job by job (run_isolated). Waiting
// jobs are swept for cancellation and deadlines on a timer set for the earliest deadline.
//
// The ingress actor holds admitted jobs until the first stage grants a credit. The
// supervisor monitors every replica: when one dies anyway, it answers the jobs the
// replica held (stage_failed), returns their credits, marks the stage degraded and
// starts a new replica on the same stage and lane.
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include <caf/all.hpp>

#include "actors/engine_core.hpp"

namespace stagecraft::actors {

struct ReplicaConfig {
  EngineCore* core = nullptr;  ///< outlives the actor (Engine stops actors before freeing it)
  std::string name;            ///< the stage's name in the pipeline
  int replica = 0;
  Stage* stage = nullptr;      ///< outlives the actor, like the lane
  Lane* lane = nullptr;
  StageGate* gate = nullptr;   ///< this stage's entry
  StageGate* next = nullptr;   ///< the next stage's entry; null for the last stage
  StageCounters* counters = nullptr;
  std::shared_ptr<PromptCache> cache;  ///< null: no cache
  std::string cache_model;
  int max_batch = 1;
  std::chrono::microseconds max_wait{0};
  bool iterative = false;
};

caf::actor spawn_replica(caf::actor_system& sys, ReplicaConfig cfg);
/// The front: holds admitted jobs until the first stage grants a credit.
caf::actor spawn_ingress(caf::actor_system& sys, EngineCore* core, StageGate* first);
/// Watches the replicas now in the gates; `configs[stage][replica]` restarts one.
caf::actor spawn_supervisor(caf::actor_system& sys, EngineCore* core, std::vector<std::vector<ReplicaConfig>> configs);

}  // namespace stagecraft::actors
