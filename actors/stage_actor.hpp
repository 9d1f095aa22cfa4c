#pragma once
// The actors of a running pipeline. A replica actor owns one Stage replica on
// one Lane. It batches queued packets (up to max_batch with equal batch_key,
// waiting at most max_wait for a batch to fill), hands the batch to the lane,
// and learns of completion by message, so its mailbox never waits on compute.
// An iterative replica instead keeps an active set and runs one step per tick
// over up to max_batch compatible jobs ordered by priority then arrival; jobs
// join and leave at step boundaries. Finished packets leave only with a credit
// of the next stage; until then they count against this stage's own credits,
// which is what bounds every queue.
#include <chrono>
#include <memory>
#include <string>

#include <caf/all.hpp>

#include "actors/engine_core.hpp"

namespace stagecraft::actors {

struct ReplicaConfig {
  EngineCore* core = nullptr;  ///< outlives the actor (Engine stops actors before freeing it)
  std::string name;            ///< the stage's name in the pipeline
  int replica = 0;
  Stage* stage = nullptr;
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

}  // namespace stagecraft::actors
