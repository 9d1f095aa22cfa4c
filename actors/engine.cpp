#include "actors/engine.hpp"

#include <algorithm>
#include <map>
#include <thread>

#include "actors/engine_core.hpp"
#include "actors/messages.hpp"
#include "actors/stage_actor.hpp"
#include "actors/trace.hpp"
#include "core/placement.hpp"
#include "core/request_check.hpp"
#include "stages/builtin_stages.hpp"

namespace stagecraft {

using actors::EngineCore;
using actors::Envelope;
using actors::JobState;

const char* health_name(Health h) { return h == Health::ok ? "ok" : "degraded"; }

const Tensor& JobResult::tensor(const std::string& name) const {
  throw_if_error();
  auto it = tensors.find(name);
  if (it == tensors.end()) {
    std::string have;
    for (const auto& [k, v] : tensors) have += (have.empty() ? "" : ", ") + k;
    SC_FAIL(Errc::not_found, "job " << job_id << " produced no tensor '" << name << "' (it has: "
                                    << (have.empty() ? "none" : have) << "); check the pipeline's last stage");
  }
  return it->second;
}

void JobResult::throw_if_error() const {
  if (error) throw Error(*error, message);
}

namespace {

/// Runs `fn` on `lane` and waits: load() must happen on the stage's lane thread.
void run_on(Lane& lane, std::function<void()> fn) {
  std::promise<void> p;
  auto f = p.get_future();
  lane.submit(std::move(fn), [&p](std::exception_ptr err) {
    if (err)
      p.set_exception(err);
    else
      p.set_value();
  });
  f.get();
}

/// CAF's work-stealing workers poll with 50 us sleeps before blocking ("moderate"
/// polling); a message from a lane thread then waits out that sleep, which
/// dominated the per-hop latency. Going from a short spin straight to the condition
/// variable makes a lane's completion wake its actor at once.
void configure_scheduler(caf::actor_system_config& cfg) {
  cfg.set("work-stealing.moderate-poll-attempts", size_t{0});
}

}  // namespace

std::unique_ptr<Engine> Engine::create(const PipelineSpec& spec) {
  register_builtin_stages();
  for (const auto& p : spec.plugins) load_stage_plugin(p);
  for (const auto& s : spec.stages)
    if (!s.plugin.empty()) load_stage_plugin(s.plugin);

  auto core = std::make_shared<EngineCore>();
  core->spec = spec;
  SC_CHECK(spec.limits.max_pending_jobs > 0, Errc::invalid_argument,
           "limits.max_pending_jobs must be at least 1, got " << spec.limits.max_pending_jobs);
  core->chain = chain_order(core->spec);

  struct Built {
    std::vector<Stage*> stages;
    std::vector<Lane*> lanes;
    StageTraits traits;
  };
  std::vector<Built> built(core->chain.size());
  for (size_t i = 0; i < core->chain.size(); ++i) {
    const StageSpec& s = *core->chain[i];
    SC_CHECK(s.replicas >= 1, Errc::invalid_argument, "stage '" << s.name << "' needs replicas >= 1");
    const int credits = core->spec.credits_for(s);
    SC_CHECK(credits >= 1, Errc::invalid_argument,
             "stage '" << s.name << "' has " << credits << " credits; set queue_limit or limits.credits >= 1");
    core->gates.push_back(std::make_unique<actors::StageGate>(s.name, credits, s.replicas));
    core->counters.push_back(std::make_unique<actors::StageCounters>());
    std::shared_ptr<actors::PromptCache> cache;
    if (s.params.contains("cache") && s.params["cache"].is_object() && s.params["cache"].contains("entries")) {
      const auto& n = s.params["cache"]["entries"];
      SC_CHECK(n.is_number_integer(), Errc::invalid_argument,
               "stage '" << s.name << "': cache.entries must be an integer, got " << n.dump());
      const auto entries = n.get<int64_t>();
      if (entries > 0) cache = std::make_shared<actors::PromptCache>(static_cast<size_t>(entries));
    }
    core->caches.push_back(cache);

    StageContext ctx;
    ctx.name = s.name;
    ctx.type = s.type;
    ctx.device = s.device;
    ctx.model_dir = core->spec.model_dir;
    ctx.params = s.params;
    ctx.defaults = core->spec.defaults;
    for (int r = 0; r < s.replicas; ++r) {
      auto lane = Lane::create(s.device, s.replicas > 1 ? s.name + "/" + std::to_string(r) : s.name);
      auto stage = create_stage(s.type);
      Stage* sp = stage.get();
      try {
        run_on(*lane, [sp, &ctx] { sp->load(ctx); });
      } catch (const std::exception& e) {
        SC_FAIL(Errc::stage_failed, "stage '" << s.name << "' (" << s.type << ") failed to load: " << e.what());
      }
      if (r == 0) {
        try {
          built[i].traits = sp->traits();
        } catch (const std::exception& e) {
          SC_FAIL(Errc::stage_failed, "stage '" << s.name << "' (" << s.type << ") failed in traits(): " << e.what());
        }
        core->first_replica.push_back(sp);
      }
      built[i].stages.push_back(sp);
      built[i].lanes.push_back(lane.get());
      core->lanes.push_back(std::move(lane));
      core->lane_stage.push_back(static_cast<int>(i));
      core->stages.push_back(std::move(stage));
    }
  }

  core->cfg = std::make_unique<caf::actor_system_config>();
  configure_scheduler(*core->cfg);
  core->system = std::make_unique<caf::actor_system>(*core->cfg);
  std::vector<std::vector<actors::ReplicaConfig>> configs(core->chain.size());
  for (size_t i = 0; i < core->chain.size(); ++i) {
    const StageSpec& s = *core->chain[i];
    for (int r = 0; r < s.replicas; ++r) {
      actors::ReplicaConfig rc;
      rc.core = core.get();
      rc.name = s.name;
      rc.replica = r;
      rc.stage = built[i].stages[static_cast<size_t>(r)];
      rc.lane = built[i].lanes[static_cast<size_t>(r)];
      rc.gate = core->gates[i].get();
      rc.next = i + 1 < core->chain.size() ? core->gates[i + 1].get() : nullptr;
      rc.counters = core->counters[i].get();
      rc.cache = core->caches[i];
      rc.cache_model = core->spec.model_dir + "|" + s.type + "|" + s.name;
      // The pipeline file sets the batch size; a stage whose traits declare a smaller
      // capability (> 1) caps it. Traits of 1 are the default and mean "not declared".
      rc.max_batch = std::max(1, s.batching.max_batch);
      if (built[i].traits.max_batch > 1) rc.max_batch = std::min(rc.max_batch, built[i].traits.max_batch);
      rc.max_wait = std::chrono::microseconds(static_cast<int64_t>(s.batching.max_wait_ms * 1000.0));
      rc.iterative = built[i].traits.iterative;
      core->gates[i]->set_replica(r, actors::spawn_replica(*core->system, rc));
      configs[i].push_back(std::move(rc));
    }
  }
  core->supervisor = actors::spawn_supervisor(*core->system, core.get(), std::move(configs));
  core->ingress = actors::spawn_ingress(*core->system, core.get(), core->gates[0].get());

  std::unique_ptr<Engine> engine(new Engine());
  engine->core_ = std::move(core);
  return engine;
}

Engine::~Engine() { shutdown(); }

namespace {

/// The door: the pipeline's limits, then every stage's own check. On refusal, the error
/// to answer with; a stage whose hook throws something other than an Error is named.
std::optional<std::pair<Error, std::string>> door_check(const EngineCore& c, const Request& r) {
  try {
    check_request(r, c.spec.limits);
  } catch (const Error& e) {
    return std::make_pair(e, std::string());
  }
  for (size_t i = 0; i < c.chain.size(); ++i) {
    const std::string& name = c.chain[i]->name;
    try {
      c.first_replica[i]->check_request(r);
    } catch (const Error& e) {
      return std::make_pair(e, name);
    } catch (const std::exception& e) {
      return std::make_pair(Error(Errc::stage_failed, "stage '" + name + "' failed in check_request(): " + e.what()),
                            name);
    } catch (...) {
      return std::make_pair(Error(Errc::stage_failed, "stage '" + name + "' failed in check_request()"), name);
    }
  }
  return std::nullopt;
}

}  // namespace

namespace {

JobResult refusal(Errc code, std::string message, std::string stage = {}) {
  JobResult r;
  r.error = code;
  r.stage = std::move(stage);
  r.message = std::move(message);
  return r;
}

/// The door and the registration that submit() and submit_with_callback() share. On
/// success the job is registered and handed to the ingress; `job` must carry its
/// progress and done callbacks already.
std::optional<JobResult> accept(EngineCore& c, PacketPtr packet, const std::shared_ptr<JobState>& job) {
  c.counts.submitted.fetch_add(1);
  // The stages' hooks and the ingress actor live until shutdown's teardown, which waits
  // for every LiveCall to end and lets no new one in.
  actors::LiveCall live(c);
  if (!live.ok() || c.closed.load()) {
    c.counts.refused.fetch_add(1);
    return refusal(Errc::cancelled, "engine is shut down; create a new one to submit jobs");
  }
  packet->request = with_defaults(std::move(packet->request), c.spec.defaults);
  const Request& request = packet->request;
  if (auto refused = door_check(c, request)) {
    c.counts.invalid.fetch_add(1);
    return refusal(refused->first.code(), refused->first.what(), refused->second);
  }
  if (c.pending.fetch_add(1) >= c.spec.limits.max_pending_jobs) {
    c.pending.fetch_sub(1);
    c.counts.refused.fetch_add(1);
    return refusal(Errc::overloaded, "engine overloaded: " + std::to_string(c.spec.limits.max_pending_jobs) +
                                         " jobs already pending (limits.max_pending_jobs); retry later or raise the limit");
  }
  job->deadline = request.deadline;
  {
    // Registration and the closed check share the lock, so shutdown() sees every accepted job.
    std::lock_guard<std::mutex> lock(c.jobs_mutex);
    if (c.closed.load()) {
      c.pending.fetch_sub(1);
      c.counts.refused.fetch_add(1);
      return refusal(Errc::cancelled, "engine is shut down; create a new one to submit jobs");
    }
    job->id = c.next_id.fetch_add(1);
    packet->job_id = job->id;
    c.jobs[job->id] = job;
  }
  c.counts.accepted.fetch_add(1);
  caf::anon_send(c.ingress, Envelope{packet, job, Clock::now(), 0});
  return std::nullopt;
}

PacketPtr packet_of(Request request) {
  auto p = std::make_shared<Packet>();
  p->request = std::move(request);
  return p;
}

}  // namespace

std::future<JobResult> Engine::submit(Request request, Progress progress) {
  const std::shared_ptr<EngineCore> core = core_;
  auto job = std::make_shared<JobState>();
  job->progress = std::move(progress);
  auto fut = job->promise.get_future();
  if (auto refused = accept(*core, packet_of(std::move(request)), job)) {
    std::promise<JobResult> p;
    p.set_value(std::move(*refused));
    return p.get_future();
  }
  return fut;
}

Engine::Submitted Engine::submit_with_callback(Request request, Progress progress, JobDone done) {
  return continue_packet(packet_of(std::move(request)), std::move(progress), std::move(done));
}

Engine::Submitted Engine::continue_packet(PacketPtr packet, Progress progress, JobDone done) {
  const std::shared_ptr<EngineCore> core = core_;
  auto job = std::make_shared<JobState>();
  job->progress = std::move(progress);
  job->done = std::move(done);
  Submitted s;
  if (auto refused = accept(*core, std::move(packet), job))
    s.refused = std::move(refused);
  else
    s.id = job->id;
  return s;
}

bool Engine::cancel(uint64_t job_id) {
  const std::shared_ptr<EngineCore> core = core_;
  auto& c = *core;
  {
    std::lock_guard<std::mutex> lock(c.jobs_mutex);
    auto it = c.jobs.find(job_id);
    if (it == c.jobs.end()) return false;
    it->second->cancelled.store(true);
  }
  // Once shutdown began it answers every job itself; the actors may be gone.
  actors::LiveCall live(c);
  if (live.ok())
    for (const auto& a : c.actors()) caf::anon_send(a, actors::cancel_atom::value);
  return true;
}

uint64_t Engine::next_job_id() const { return core_->next_id.load(); }

EngineStats Engine::stats() const {
  const std::shared_ptr<EngineCore> core = core_;
  const auto& c = *core;
  EngineStats s;
  c.counts.fill(s);
  s.pending = c.pending.load();
  s.max_pending = c.spec.limits.max_pending_jobs;
  std::vector<std::chrono::nanoseconds> busy(c.chain.size(), std::chrono::nanoseconds(0));
  {
    // Lanes are freed by shutdown under this lock, after it saved their busy time.
    std::lock_guard<std::mutex> lock(c.lanes_mutex);
    for (size_t l = 0; l < c.lanes.size(); ++l)
      if (c.lanes[l]) busy[static_cast<size_t>(c.lane_stage[l])] += c.lanes[l]->busy_time();
  }
  for (size_t i = 0; i < c.chain.size(); ++i) {
    StageStats st;
    st.name = c.chain[i]->name;
    st.type = c.chain[i]->type;
    st.replicas = c.chain[i]->replicas;
    st.credits = c.gates[i]->credits();
    st.in_flight = c.gates[i]->in_flight();
    const auto& k = *c.counters[i];
    st.batches = k.batches.load();
    st.packets = k.packets.load();
    st.failures = k.failures.load();
    st.consecutive_failures = k.consecutive_failures.load();
    st.restarts = k.restarts.load();
    st.cache_hits = k.cache_hits.load();
    st.cache_misses = k.cache_misses.load();
    st.health = st.consecutive_failures >= 3 || k.restarted.load() ? Health::degraded : Health::ok;
    st.busy = busy[i] + std::chrono::nanoseconds(k.busy_ns_final.load());
    s.cache_hits += st.cache_hits;
    s.cache_misses += st.cache_misses;
    if (st.health == Health::degraded) s.health = Health::degraded;
    s.stages.push_back(std::move(st));
  }
  return s;
}

void Engine::write_chrome_trace(const std::string& path) const {
  const std::shared_ptr<EngineCore> core = core_;
  std::vector<JobResult> jobs;
  {
    std::lock_guard<std::mutex> lock(core->trace_mutex);
    jobs.assign(core->recent.begin(), core->recent.end());
  }
  actors::write_chrome_trace(path, jobs, core->t0);
}

namespace {

/// Answers every job still registered with Error(cancelled).
void cancel_all(EngineCore& c) {
  std::vector<std::shared_ptr<JobState>> left;
  {
    std::lock_guard<std::mutex> lock(c.jobs_mutex);
    for (auto& [id, j] : c.jobs) left.push_back(j);
  }
  for (auto& j : left) {
    j->cancelled.store(true);
    c.fail(Envelope{nullptr, j, {}, 0}, Errc::cancelled, "",
           "job " + std::to_string(j->id) + " was cancelled: the engine shut down before it finished");
  }
}

}  // namespace

void Engine::shutdown(std::chrono::milliseconds drain) {
  if (!core_) return;
  const std::shared_ptr<EngineCore> core = core_;
  auto& c = *core;
  {
    std::lock_guard<std::mutex> lock(c.jobs_mutex);
    c.closed.store(true);
  }
  if (actors::tl_in_engine_callback) {
    // On an engine thread: waiting for the actors would wait for ourselves. Answer every
    // job now; the teardown is left to the next shutdown() or the destructor.
    cancel_all(c);
    return;
  }
  std::lock_guard<std::mutex> once(c.shutdown_mutex);
  if (c.torn_down) return;
  const auto until = Clock::now() + drain;
  while (c.pending.load() > 0 && Clock::now() < until) std::this_thread::sleep_for(std::chrono::milliseconds(1));

  // No public call uses actors, lanes or stages from here on.
  c.stopping.store(true);
  while (c.live_calls.load() > 0) std::this_thread::yield();
  cancel_all(c);

  // Actors first (the supervisor first of all, so it restarts nothing), and wait until
  // none runs: no handler can then touch a lane or stage, nor start lane work.
  std::vector<caf::actor> actors = c.actors();
  for (const auto& a : actors) caf::anon_send_exit(a, caf::exit_reason::user_shutdown);
  actors.clear();
  c.system->await_all_actors_done();
  // Lanes next: their queued work runs out (its done messages go nowhere) and releases
  // the actor handles it holds; then the lanes, then the stages they ran, are freed.
  std::vector<std::shared_ptr<Lane>> lanes;
  {
    std::lock_guard<std::mutex> lock(c.lanes_mutex);
    for (auto& l : c.lanes) l->synchronize();
    for (size_t l = 0; l < c.lanes.size(); ++l)
      c.counters[static_cast<size_t>(c.lane_stage[l])]->busy_ns_final +=
          std::chrono::duration_cast<std::chrono::nanoseconds>(c.lanes[l]->busy_time()).count();
    lanes.swap(c.lanes);
  }
  lanes.clear();
  c.stages.clear();
  c.first_replica.clear();
  // Every actor handle goes before the actor system.
  for (auto& g : c.gates) g->clear_actors();
  c.ingress = nullptr;
  c.supervisor = nullptr;
  c.system.reset();
  c.cfg.reset();
  c.torn_down = true;
}

}  // namespace stagecraft
