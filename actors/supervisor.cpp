// The supervisor: sees a replica actor die (CAF monitor, down message), answers the
// jobs it held, returns their credits, marks the stage degraded and starts a new
// replica on the same stage object and lane. Stage callbacks are guarded inside the
// replica, so this is the net for what escapes them (a bug, an exception in the
// actor's own bookkeeping, a kill).
#include <cstdio>
#include <map>

#include "actors/messages.hpp"
#include "actors/stage_actor.hpp"

namespace stagecraft::actors {
namespace {

class SupervisorActor : public caf::event_based_actor {
 public:
  SupervisorActor(caf::actor_config& cfg, EngineCore* core, std::vector<std::vector<ReplicaConfig>> configs)
      : caf::event_based_actor(cfg), core_(core), configs_(std::move(configs)) {}

  caf::behavior make_behavior() override {
    set_down_handler([this](caf::down_msg& dm) { on_down(dm); });
    for (size_t i = 0; i < core_->gates.size(); ++i)
      for (int r = 0; r < core_->gates[i]->replica_count(); ++r)
        if (auto a = core_->gates[i]->replica(r)) watch(a, i, r);  // a dead one reports at once
    return {
        [](cancel_atom) {},  // the engine broadcasts cancels to every actor; nothing waits here
    };
  }

 private:
  void watch(const caf::actor& a, size_t stage, int replica) {
    monitor(a);
    watched_[a.address()] = {stage, replica};
  }

  void on_down(const caf::down_msg& dm) {
    auto it = watched_.find(dm.source);
    if (it == watched_.end()) return;
    const auto [i, r] = it->second;
    watched_.erase(it);
    if (core_->stopping.load()) return;  // shutdown stops replicas on purpose
    const ReplicaConfig& rc = configs_[i][static_cast<size_t>(r)];
    caf::actor fresh;
    std::vector<Envelope> held = core_->gates[i]->replace_replica(r, [&] {
      // Checked under the replica's lock: shutdown reads the replica there after setting
      // `stopping`, so it either sees and stops this new actor, or no new actor starts.
      if (!core_->stopping.load()) fresh = spawn_replica(system(), rc);
      return fresh;
    });
    if (fresh) watch(fresh, i, r);
    core_->counters[i]->restarts.fetch_add(1);
    core_->counters[i]->restarted.store(true);
    const std::string reason = system().render(dm.reason);
    std::fprintf(stderr, "stagecraft: replica %d of stage '%s' stopped (%s); %s, failing the %zu job(s) it held\n", r,
                 rc.name.c_str(), reason.c_str(), fresh ? "started a new one" : "not restarted (shutting down)",
                 held.size());
    for (const auto& e : held)
      core_->fail(e, Errc::stage_failed, rc.name,
                  "stage '" + rc.name + "' lost job " + std::to_string(e.job->id) + ": replica " + std::to_string(r) +
                      " stopped unexpectedly (" + reason + ") and was restarted; submit the job again");
  }

  EngineCore* core_;
  std::vector<std::vector<ReplicaConfig>> configs_;
  std::map<caf::actor_addr, std::pair<size_t, int>> watched_;
};

}  // namespace

caf::actor spawn_supervisor(caf::actor_system& sys, EngineCore* core, std::vector<std::vector<ReplicaConfig>> configs) {
  return sys.spawn<SupervisorActor>(core, std::move(configs));
}

}  // namespace stagecraft::actors
