// The node runtime: in-process engines for this node's runs of stages, joined to
// the other nodes by ZeroMQ channels. See node_runtime.hpp for the contract.
//
// Locks: `jobs_mu` guards the head's job table and the local-job map; `egress_mu`
// guards the outgoing queues and is the only lock held while calling into a
// channel (try_send). No callback of a user (progress, done) runs under a lock.
#include "actors/node_runtime.hpp"

#include <atomic>
#include <condition_variable>
#include <deque>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <shared_mutex>
#include <thread>
#include <unordered_map>

#include "actors/engine.hpp"
#include "actors/job_counters.hpp"
#include "actors/trace.hpp"
#include "core/placement.hpp"
#include "core/request_check.hpp"
#include "kernels/ops.hpp"
#include "transport/zmq_channel.hpp"

namespace stagecraft {

namespace {

/// Moves the packet's tensors to `device`. ZeroMQ carries host memory: GPU tensors are
/// copied to the host before a send and onto the stage's device after a receive.
/// (Synchronous copies: pinned staging buffers on a copy stream, and the CUDA IPC / NCCL
/// channels of transport/, would keep them off the lanes; not wired in yet.)
void move_tensors(Packet& p, Device device) {
  for (auto& [name, t] : p.tensors)
    if (t.device() != device) t = ops::to_device(t, device);
}

JobResult failure(Errc code, std::string stage, std::string message) {
  JobResult r;
  r.error = code;
  r.stage = std::move(stage);
  r.message = std::move(message);
  return r;
}

}  // namespace

struct NodeRuntime::Impl : std::enable_shared_from_this<NodeRuntime::Impl> {
  PipelineSpec spec;  // owned: the placement points into it
  Placement placement;
  NodeOptions opt;
  std::string endpoint, hash;
  int node_index = 0;  // position in `nodes:`, for trace process ids
  bool head = false;
  std::shared_ptr<zmq::context_t> ctx = std::make_shared<zmq::context_t>(1);

  struct Run {
    Segment seg;
    std::unique_ptr<Engine> engine;
  };
  std::vector<Run> runs;

  std::unique_ptr<transport::ZmqRecvChannel> inbound;
  /// By node name; filled at start, cleared at shutdown. A channel's callbacks run under
  /// `peers_mu` shared and do nothing once `detached`, so clearing (which joins the
  /// channels' I/O threads) never races with one.
  std::map<std::string, std::unique_ptr<transport::ZmqSendChannel>> peers;
  std::shared_mutex peers_mu;
  bool detached = false;
  template <class F>
  void while_attached(F&& f) {
    std::shared_lock lk(peers_mu);
    if (!detached) f();
  }

  // ---- the head's table of accepted jobs
  struct HeadJob {
    Progress progress;
    JobDone done;
    std::shared_ptr<std::promise<JobResult>> promise;  // when submitted with submit()
    std::string at;   // the node the job is at (or on its way to)
    int stage = 0;    // chain index of the stage it enters there; later news wins
    std::optional<Clock::time_point> deadline;
  };
  mutable std::mutex jobs_mu;
  std::unordered_map<uint64_t, HeadJob> table;
  /// Jobs inside this node's engines: job id -> (run, the engine's own id), for cancel.
  std::unordered_map<uint64_t, std::pair<size_t, uint64_t>> local;
  uint64_t epoch = 0;  // high 32 bits of the head's job ids: a restarted head reuses none
  std::atomic<uint64_t> next_seq{1};
  std::atomic<bool> closed{false};
  actors::JobCounters counts;

  // ---- outgoing packets waiting for a credit, per target node
  struct Outgoing {
    PacketPtr packet;
    std::shared_ptr<transport::Receipt> receipt;  // the upstream's credit, held until sent
  };
  std::mutex egress_mu;
  std::map<std::string, std::deque<Outgoing>> egress;
  bool egress_stopped = false;

  // ---- counters and the trace of this node
  std::atomic<uint64_t> notes_received{0}, notes_dropped{0}, entered{0}, forwarded{0};
  struct Transfer {
    uint64_t job = 0;
    std::string to;
    Clock::time_point start, end;
    size_t bytes = 0;
  };
  mutable std::mutex trace_mu;
  std::deque<JobResult> traces;      // per job and run: this node's spans
  std::deque<Transfer> transfers;
  static constexpr size_t kTraceKeep = 4096;

  // ---- the head's deadline sweep
  std::thread sweeper;
  std::mutex sweep_mu;
  std::condition_variable sweep_cv;
  bool sweep_stop = false;

  // ------------------------------------------------------------ set-up
  void load(const PipelineSpec& s, NodeOptions o);
  void connect_peers();

  // ------------------------------------------------------------ job flow
  /// Hands a packet to run `run`'s engine; its refusal, if it refused (nothing called then).
  std::optional<JobResult> enter(size_t run, PacketPtr p, std::shared_ptr<transport::Receipt> receipt);
  void left_run(size_t run, uint64_t job, const Request& request, const JobResult& res,
                const std::shared_ptr<transport::Receipt>& receipt);
  void forward(const std::string& target, PacketPtr p, std::shared_ptr<transport::Receipt> receipt);
  /// Which node of stage `stage` a packet goes to: the connected one with the most room, or
  /// one not reached yet (still starting); empty when every one of them was lost.
  std::string pick_node(int stage);
  void flush(const std::string& target);
  void on_packet(PacketPtr p, transport::Receipt receipt);
  void on_note(const transport::ControlMessage& m);
  void note_head(transport::ControlMessage m);
  void broadcast_cancel(uint64_t job);
  void drop_local(uint64_t job);
  void on_node_lost(const std::string& node);
  /// The head's one answer to job `id` (first call wins).
  void finish(uint64_t id, JobResult r);
  void sweep_deadlines();
  void record_trace(uint64_t job, std::vector<TraceSpan> spans, int steps);
};

// ------------------------------------------------------------------ set-up

void NodeRuntime::Impl::load(const PipelineSpec& s, NodeOptions o) {
  spec = s;
  opt = std::move(o);
  SC_CHECK(!spec.nodes.empty(), Errc::invalid_argument,
           spec.path << " declares no `nodes:`; it runs in one process (stagecraft run or serve), not as workers");
  const NodeSpec* me = nullptr;
  std::string names;
  for (size_t i = 0; i < spec.nodes.size(); ++i) {
    names += (names.empty() ? "" : ", ") + spec.nodes[i].name;
    if (spec.nodes[i].name == opt.node) {
      me = &spec.nodes[i];
      node_index = static_cast<int>(i);
    }
  }
  SC_CHECK(me, Errc::invalid_argument,
           "node '" << opt.node << "' is not in " << spec.path << "; its nodes are: " << names
                    << " (give one with --node or STAGECRAFT_NODE)");
  for (auto& st : spec.stages)  // a spec built in code may name only `node`
    if (st.nodes.empty() && !st.node.empty()) st.nodes = {st.node};
  for (const auto& e : spec.edges)
    SC_CHECK(e.channel != "cuda_ipc" && e.channel != "nccl", Errc::unsupported,
             spec.path << ":" << e.loc.line << ":" << e.loc.col << ": edge " << e.from << " -> " << e.to
                       << " forces channel " << e.channel
                       << ", which split pipelines do not use yet (the channel exists in transport/ and is checked "
                          "on a GPU by scripts/device-check.sh); use channel auto or zmq: GPU tensors then cross "
                          "through host memory");
  placement = place(spec);
  head = placement.head == opt.node;
  hash = pipeline_hash(spec);
  std::random_device rd;
  epoch = (uint64_t(rd()) & 0x7fffffffu) | 1u;  // never 0, so no id is below 2^32

  for (Segment seg : placement.segments_of(opt.node))
    runs.push_back({seg, Engine::create(segment_spec(spec, placement, seg))});

  // The window each sender gets: room for the largest first stage of this node's runs,
  // so a batching stage can fill its batch from one upstream node.
  int credits = spec.limits.credits;
  for (const auto& r : runs) credits = std::max(credits, spec.credits_for(*placement.chain[size_t(r.seg.first)]));
  transport::ZmqRecvOptions ro;
  ro.hello = {opt.node, hash};
  ro.credits = credits;
  std::weak_ptr<Impl> weak = weak_from_this();
  ro.on_packet = [weak](PacketPtr p, transport::Receipt r) {
    if (auto self = weak.lock()) self->on_packet(std::move(p), std::move(r));
  };
  ro.on_note = [weak](const transport::ControlMessage& m) {
    if (auto self = weak.lock()) self->on_note(m);
  };
  inbound = transport::ZmqRecvChannel::bind(ctx, opt.listen.empty() ? me->endpoint : opt.listen, std::move(ro));
  endpoint = inbound->endpoint();
  connect_peers();
  if (head) sweeper = std::thread([this] { sweep_deadlines(); });
}

void NodeRuntime::Impl::connect_peers() {
  // Where this node's packets go (the node after each of its runs, or the head with the
  // finished packet), and for the head every node: it pings them all and cancels there.
  std::vector<std::string> targets;
  auto add = [&](const std::string& n) {
    if (n != opt.node && std::find(targets.begin(), targets.end(), n) == targets.end()) targets.push_back(n);
  };
  for (const auto& r : runs) {
    if (r.seg.last + 1 == placement.size())
      add(placement.head);
    else
      for (const auto& n : placement.nodes_of(r.seg.last + 1)) add(n);
  }
  if (head)
    for (const auto& n : spec.nodes) add(n.name);
  else
    add(placement.head);
  std::weak_ptr<Impl> weak = weak_from_this();
  for (const auto& t : targets) {
    std::string ep;
    for (const auto& n : spec.nodes)
      if (n.name == t) ep = n.endpoint;
    transport::ZmqSendOptions so;
    so.heartbeat = opt.heartbeat;
    so.peer_timeout = opt.node_timeout;
    so.on_credit = [weak, t] {
      if (auto self = weak.lock()) self->while_attached([&] { self->flush(t); });
    };
    so.on_peer_lost = [weak, t] {
      if (auto self = weak.lock()) self->while_attached([&] { self->on_node_lost(t); });
    };
    so.on_failed = [weak, t](PacketPtr p, const std::string& why) {
      auto self = weak.lock();
      if (!self || !p) return;
      self->while_attached([&] {
      transport::ControlMessage m;
      m.what = "failed";
      m.job_id = p->job_id;
      m.stage = p->route;
      m.code = errc_name(Errc::stage_failed);
      m.reason = "sending job " + std::to_string(p->job_id) + " from node '" + self->opt.node + "' to node '" + t +
                 "' failed: " + why;
      self->note_head(std::move(m));
      });
    };
    so.on_sent = [weak, t](const PacketPtr& p, size_t bytes) {
      auto self = weak.lock();
      if (!self || p->trace.empty()) return;
      Transfer x{p->job_id, t, p->trace.back().start, Clock::now(), bytes};
      std::lock_guard lk(self->trace_mu);
      self->transfers.push_back(std::move(x));
      while (self->transfers.size() > kTraceKeep) self->transfers.pop_front();
    };
    peers[t] = transport::ZmqSendChannel::connect(ctx, ep, {opt.node, hash}, std::move(so));
  }
}

// ------------------------------------------------------------------ job flow

std::optional<JobResult> NodeRuntime::Impl::enter(size_t run, PacketPtr p,
                                                  std::shared_ptr<transport::Receipt> receipt) {
  const uint64_t job = p->job_id;
  const Request request = p->request;  // kept: the packet leaving the run carries it on
  std::weak_ptr<Impl> weak = weak_from_this();
  Progress progress = [weak, job](int step, int total) {
    auto self = weak.lock();
    if (!self) return;
    if (self->head) {
      Progress cb;
      {
        std::lock_guard lk(self->jobs_mu);
        auto it = self->table.find(job);
        if (it != self->table.end()) cb = it->second.progress;
      }
      if (cb) cb(step, total);
      return;
    }
    transport::ControlMessage m;
    m.what = "progress";
    m.job_id = job;
    m.step = step;
    m.total = total;
    self->note_head(std::move(m));
  };
  JobDone done = [weak, run, job, request, receipt](const JobResult& res) {
    if (auto self = weak.lock()) self->left_run(run, job, request, res, receipt);
  };
  Engine::Submitted s;
  {
    std::lock_guard lk(jobs_mu);  // `done` erases the entry: it waits for the insert
    s = runs[run].engine->continue_packet(std::move(p), std::move(progress), std::move(done));
    if (!s.refused) local[job] = {run, s.id};
  }
  if (!s.refused) entered.fetch_add(1);
  return std::move(s.refused);
}

void NodeRuntime::Impl::left_run(size_t run, uint64_t job, const Request& request, const JobResult& res,
                                 const std::shared_ptr<transport::Receipt>& receipt) {
  {
    std::lock_guard lk(jobs_mu);
    local.erase(job);
  }
  record_trace(job, res.trace, res.steps);
  const Segment seg = runs[run].seg;
  if (!res.ok()) {
    if (receipt) receipt->release();
    if (head) {
      JobResult r = res;
      finish(job, std::move(r));
    } else {
      transport::ControlMessage m;
      m.what = "failed";
      m.job_id = job;
      m.stage = res.stage;
      m.code = errc_name(*res.error);
      m.reason = res.message;
      note_head(std::move(m));
    }
    return;
  }
  const int next = seg.last + 1;
  if (next == placement.size() && head) {
    if (receipt) receipt->release();
    JobResult r = res;
    finish(job, std::move(r));
    return;
  }
  auto p = std::make_shared<Packet>();
  p->job_id = job;
  p->request = request;
  p->tensors = res.tensors;
  p->step = res.steps;
  p->total_steps = res.steps;
  p->route = next == placement.size() ? std::string() : placement.chain[size_t(next)]->name;
  if (next < placement.size() && placement.runs_on(next, opt.node)) {
    // The next stage runs here too (a run ends where packets may also arrive from
    // elsewhere): go on in this process.
    for (size_t i = 0; i < runs.size(); ++i)
      if (runs[i].seg.first == next) {
        if (auto refused = enter(i, p, receipt)) left_run(i, job, request, *refused, receipt);
        return;
      }
  }
  auto fail_here = [&](Errc code, const std::string& stage, const std::string& why) {
    if (receipt) receipt->release();
    if (head) {
      return finish(job, failure(code, stage, why));
    }
    transport::ControlMessage m;
    m.what = "failed";
    m.job_id = job;
    m.stage = stage;
    m.code = errc_name(code);
    m.reason = why;
    note_head(std::move(m));
  };
  try {
    move_tensors(*p, Device::cpu());
  } catch (const std::exception& e) {
    return fail_here(Errc::stage_failed, placement.chain[size_t(seg.last)]->name,
                     std::string("copying the job's tensors to the host to send them failed: ") + e.what());
  }
  const std::string target = next == placement.size() ? placement.head : pick_node(next);
  if (target.empty()) {
    // Every node of the next stage was lost and none is back: waiting could be forever;
    // answer now.
    std::string names;
    for (const auto& n : placement.nodes_of(next)) names += (names.empty() ? "'" : ", '") + n + "'";
    return fail_here(Errc::node_lost, p->route,
                     "no node of stage '" + p->route + "' (" + names + ") is connected to node '" + opt.node +
                         "' (lost, not back yet), so job " + std::to_string(job) +
                         " cannot go on; restart its worker (stagecraft worker FILE --node NAME)");
  }
  if (next == placement.size() && !peers.at(target)->ready() && peers.at(target)->peer_losses() > 0)
    return fail_here(Errc::node_lost, "",
                     "the head node '" + target + "' was lost by node '" + opt.node + "'");
  if (head) {
    std::lock_guard lk(jobs_mu);
    auto it = table.find(job);
    if (it != table.end() && next > it->second.stage) {
      it->second.at = target;
      it->second.stage = next;
    }
  } else if (next < placement.size()) {
    transport::ControlMessage m;
    m.what = "moved";
    m.job_id = job;
    m.node = target;
    m.stage = p->route;
    note_head(std::move(m));
  }
  forward(target, std::move(p), receipt);
}

std::string NodeRuntime::Impl::pick_node(int stage) {
  // The connected node with the most room: credits it granted and has not used, less the
  // packets already waiting here for it.
  std::string best;
  long best_room = 0;
  for (const auto& n : placement.nodes_of(stage)) {
    auto& chan = peers.at(n);
    if (!chan->ready()) continue;
    long room = chan->stats().credits;
    {
      std::lock_guard lk(egress_mu);
      auto it = egress.find(n);
      if (it != egress.end()) room -= static_cast<long>(it->second.size());
    }
    if (best.empty() || room > best_room) {
      best = n;
      best_room = room;
    }
  }
  if (!best.empty()) return best;
  // None connected. A node this one has not reached yet (all are starting; the head serves
  // once its own connections are up, not necessarily ours) gets the packet, queued until
  // its welcome; a node that was lost does not: the head answers the jobs that were there.
  for (const auto& n : placement.nodes_of(stage))
    if (peers.at(n)->peer_losses() == 0) return n;
  return "";
}

void NodeRuntime::Impl::forward(const std::string& target, PacketPtr p,
                                std::shared_ptr<transport::Receipt> receipt) {
  TraceSpan span;
  span.stage = "send to " + target;
  span.lane = "transfer " + opt.node + " -> " + target;
  span.kind = TraceSpan::Kind::transfer;
  span.start = span.end = Clock::now();
  p->trace.push_back(span);
  {
    std::lock_guard lk(egress_mu);
    if (egress_stopped) return;
    egress[target].push_back({std::move(p), std::move(receipt)});
  }
  flush(target);
}

void NodeRuntime::Impl::flush(const std::string& target) {
  std::lock_guard lk(egress_mu);
  if (egress_stopped) return;
  auto it = egress.find(target);
  if (it == egress.end()) return;
  auto& chan = peers.at(target);
  while (!it->second.empty()) {
    Outgoing& o = it->second.front();
    if (!chan->try_send(o.packet)) break;
    forwarded.fetch_add(1);
    // The packet is in the channel's hands: the upstream may send the next one.
    if (o.receipt) o.receipt->release();
    it->second.pop_front();
  }
}

void NodeRuntime::Impl::on_packet(PacketPtr p, transport::Receipt receipt) {
  auto held = std::make_shared<transport::Receipt>(std::move(receipt));
  if (p->route.empty()) {
    // A finished job back at the head.
    held->release();
    if (!head) return;
    JobResult r;
    r.tensors = std::move(p->tensors);
    r.steps = p->step;
    finish(p->job_id, std::move(r));
    return;
  }
  const int index = placement.index_of(p->route);
  for (size_t i = 0; i < runs.size(); ++i)
    if (runs[i].seg.first == index) {
      const uint64_t job = p->job_id;
      const Request request = p->request;
      const Device device = placement.chain[size_t(index)]->device;
      if (!device.is_cpu()) {
        try {
          move_tensors(*p, device);
        } catch (const std::exception& e) {
          left_run(i, job, request,
                   failure(Errc::stage_failed, p->route,
                           "copying the job's tensors onto " + device.str() + " failed: " + e.what()),
                   held);
          return;
        }
      }
      if (auto refused = enter(i, std::move(p), held)) left_run(i, job, request, *refused, held);
      return;
    }
  held->release();
  transport::ControlMessage m;
  m.what = "failed";
  m.job_id = p->job_id;
  m.stage = p->route;
  m.code = errc_name(Errc::internal);
  m.reason = "node '" + opt.node + "' received job " + std::to_string(p->job_id) + " for stage '" + p->route +
             "', which does not start a run of stages on this node";
  note_head(std::move(m));
}

void NodeRuntime::Impl::note_head(transport::ControlMessage m) {
  m.kind = "note";
  if (m.node.empty()) m.node = opt.node;
  if (head) {  // the head's own news needs no wire
    on_note(m);
    return;
  }
  auto it = peers.find(placement.head);
  if (it == peers.end() || !it->second->send_note(m)) notes_dropped.fetch_add(1);
}

void NodeRuntime::Impl::on_note(const transport::ControlMessage& m) {
  notes_received.fetch_add(1);
  if (m.what == "cancel") {
    drop_local(m.job_id);
    return;
  }
  if (!head) return;
  if (m.what == "moved") {
    const int stage = placement.index_of(m.stage);
    {
      std::lock_guard lk(jobs_mu);
      auto it = table.find(m.job_id);
      if (it != table.end() && stage > it->second.stage) {
        it->second.at = m.node;
        it->second.stage = stage;
      }
    }
    // Sent to a node the head has already taken as lost (its heartbeats were quicker than
    // this note): nobody else will answer the job.
    auto peer = peers.find(m.node);
    if (peer != peers.end() && !peer->second->ready())
      finish(m.job_id, failure(Errc::node_lost, m.stage,
                               "job " + std::to_string(m.job_id) + " was sent to node '" + m.node +
                                   "', which is not connected to the head (lost or restarting); resubmit it"));
  } else if (m.what == "progress") {
    Progress cb;
    {
      std::lock_guard lk(jobs_mu);
      auto it = table.find(m.job_id);
      if (it != table.end()) cb = it->second.progress;
    }
    if (cb) cb(static_cast<int>(m.step), static_cast<int>(m.total));
  } else if (m.what == "failed") {
    const Errc code = errc_from_name(m.code);
    finish(m.job_id, failure(code, m.stage, m.reason));
  }
}

void NodeRuntime::Impl::broadcast_cancel(uint64_t job) {
  transport::ControlMessage m;
  m.kind = "note";
  m.what = "cancel";
  m.job_id = job;
  m.node = opt.node;
  drop_local(job);
  for (auto& [name, chan] : peers)
    if (!chan->send_note(m)) notes_dropped.fetch_add(1);
}

void NodeRuntime::Impl::drop_local(uint64_t job) {
  std::optional<std::pair<size_t, uint64_t>> here;
  {
    std::lock_guard lk(jobs_mu);
    auto it = local.find(job);
    if (it != local.end()) here = it->second;
  }
  if (here) runs[here->first].engine->cancel(here->second);
  std::lock_guard lk(egress_mu);
  for (auto& [target, q] : egress)
    for (auto it = q.begin(); it != q.end();)
      if (it->packet->job_id == job) {
        if (it->receipt) it->receipt->release();
        it = q.erase(it);
      } else {
        ++it;
      }
}

void NodeRuntime::Impl::on_node_lost(const std::string& node) {
  if (!head) return;
  std::string ep;
  for (const auto& n : spec.nodes)
    if (n.name == node) ep = n.endpoint;
  std::vector<uint64_t> lost;
  {
    std::lock_guard lk(jobs_mu);
    for (const auto& [id, j] : table)
      if (j.at == node) lost.push_back(id);
  }
  for (uint64_t id : lost) {
    finish(id, failure(Errc::node_lost, "",
                       "node '" + node + "' (" + ep + ") was lost while job " + std::to_string(id) +
                           " was there: it stopped answering heartbeats for " +
                           std::to_string(opt.node_timeout.count()) +
                           " ms or restarted; resubmit the job (a restarted worker takes new work)"));
  }
}

void NodeRuntime::Impl::finish(uint64_t id, JobResult r) {
  HeadJob j;
  {
    std::lock_guard lk(jobs_mu);
    auto it = table.find(id);
    if (it == table.end()) return;  // already answered (e.g. cancelled, or its node was lost)
    j = std::move(it->second);
    table.erase(it);
  }
  r.job_id = id;
  counts.count(r);
  // Whatever other nodes still hold of a failed job is wasted work now.
  if (!r.ok()) broadcast_cancel(id);
  if (j.done)
    j.done(r);
  else if (j.promise)
    j.promise->set_value(std::move(r));
}

void NodeRuntime::Impl::sweep_deadlines() {
  std::unique_lock lk(sweep_mu);
  while (!sweep_stop) {
    sweep_cv.wait_for(lk, std::chrono::milliseconds(20));
    const auto now = Clock::now();
    std::vector<uint64_t> late;
    {
      std::lock_guard jl(jobs_mu);
      for (const auto& [id, j] : table)
        if (j.deadline && *j.deadline <= now) late.push_back(id);
    }
    for (uint64_t id : late)
      finish(id, failure(Errc::deadline_exceeded, "",
                         "job " + std::to_string(id) + " passed its deadline; give it a later deadline or fewer steps"));
  }
}

void NodeRuntime::Impl::record_trace(uint64_t job, std::vector<TraceSpan> spans, int steps) {
  if (spans.empty()) return;
  JobResult r;
  r.job_id = job;
  r.trace = std::move(spans);
  r.steps = steps;
  std::lock_guard lk(trace_mu);
  traces.push_back(std::move(r));
  while (traces.size() > kTraceKeep) traces.pop_front();
}

// ------------------------------------------------------------------ public

std::unique_ptr<NodeRuntime> NodeRuntime::start(const PipelineSpec& spec, NodeOptions options) {
  auto impl = std::make_shared<Impl>();
  impl->load(spec, std::move(options));
  return std::unique_ptr<NodeRuntime>(new NodeRuntime(std::move(impl)));
}

NodeRuntime::~NodeRuntime() { shutdown(); }

const std::string& NodeRuntime::node() const { return impl_->opt.node; }
bool NodeRuntime::is_head() const { return impl_->head; }
const std::string& NodeRuntime::endpoint() const { return impl_->endpoint; }

std::vector<std::string> NodeRuntime::wait_for_nodes(std::chrono::milliseconds timeout) {
  const auto until = Clock::now() + timeout;
  std::vector<std::string> missing;
  for (auto& [name, chan] : impl_->peers) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - Clock::now());
    if (!chan->wait_ready(std::max(left, std::chrono::milliseconds(0)))) missing.push_back(name);
  }
  return missing;
}

NodeStats NodeRuntime::node_stats() const {
  NodeStats s;
  for (const auto& [name, chan] : impl_->peers)
    s.peers.push_back({name, chan->stats(), chan->peer_losses(), chan->ready()});
  if (impl_->inbound) {
    s.inbound = impl_->inbound->stats();
    s.refused_malformed = impl_->inbound->wire_counters().refused_total();
  }
  s.notes_received = impl_->notes_received.load();
  s.notes_dropped = impl_->notes_dropped.load();
  s.jobs_entered = impl_->entered.load();
  s.jobs_forwarded = impl_->forwarded.load();
  return s;
}

JobRunner::Submitted NodeRuntime::submit_with_callback(Request request, Progress progress, JobDone done) {
  Impl& c = *impl_;
  c.counts.submitted.fetch_add(1);
  Submitted s;
  if (!c.head) {
    c.counts.refused.fetch_add(1);
    s.refused = failure(Errc::unsupported, "",
                        "jobs enter a pipeline at its head node '" + c.placement.head + "', not at '" + c.opt.node + "'");
    return s;
  }
  if (c.closed.load()) {
    c.counts.refused.fetch_add(1);
    s.refused = failure(Errc::cancelled, "", "node '" + c.opt.node + "' is shutting down; submit elsewhere");
    return s;
  }
  request = with_defaults(std::move(request), c.spec.defaults);
  try {
    check_request(request, c.spec.limits);
  } catch (const Error& e) {
    c.counts.invalid.fetch_add(1);
    s.refused = failure(e.code(), "", e.what());
    return s;
  }
  const uint64_t id = (c.epoch << 32) | (c.next_seq.fetch_add(1) & 0xffffffffu);
  {
    std::lock_guard lk(c.jobs_mu);
    if (static_cast<int>(c.table.size()) >= c.spec.limits.max_pending_jobs) {
      c.counts.refused.fetch_add(1);
      s.refused = failure(Errc::overloaded, "",
                          "engine overloaded: " + std::to_string(c.spec.limits.max_pending_jobs) +
                              " jobs already pending (limits.max_pending_jobs); retry later or raise the limit");
      return s;
    }
    Impl::HeadJob j;
    j.progress = std::move(progress);
    j.done = std::move(done);
    j.at = c.opt.node;
    j.deadline = request.deadline;
    c.table[id] = std::move(j);
  }
  auto p = std::make_shared<Packet>();
  p->job_id = id;
  p->request = std::move(request);
  if (auto refused = c.enter(0, std::move(p), nullptr)) {
    // The first run's door (a stage's own check, its limits): refused, not accepted.
    std::lock_guard lk(c.jobs_mu);
    c.table.erase(id);
    (refused->error == Errc::invalid_argument ? c.counts.invalid : c.counts.refused).fetch_add(1);
    s.refused = std::move(refused);
    return s;
  }
  c.counts.accepted.fetch_add(1);
  s.id = id;
  return s;
}

std::future<JobResult> NodeRuntime::submit(Request request, Progress progress) {
  auto promise = std::make_shared<std::promise<JobResult>>();
  auto fut = promise->get_future();
  Submitted s = submit_with_callback(std::move(request), std::move(progress),
                                     [promise](const JobResult& r) { promise->set_value(r); });
  if (s.refused) promise->set_value(std::move(*s.refused));
  return fut;
}

bool NodeRuntime::cancel(uint64_t job_id) {
  Impl& c = *impl_;
  {
    std::lock_guard lk(c.jobs_mu);
    if (!c.table.count(job_id)) return false;
  }
  // Answered here and now: wherever the job is, the other nodes drop it on the note.
  c.finish(job_id, failure(Errc::cancelled, "", "job " + std::to_string(job_id) + " was cancelled"));
  return true;
}

EngineStats NodeRuntime::stats() const {
  const Impl& c = *impl_;
  EngineStats s;
  c.counts.fill(s);
  {
    std::lock_guard lk(c.jobs_mu);
    s.pending = static_cast<int>(c.table.size());
  }
  s.max_pending = c.spec.limits.max_pending_jobs;
  for (const auto& r : c.runs) {
    EngineStats e = r.engine->stats();
    s.cache_hits += e.cache_hits;
    s.cache_misses += e.cache_misses;
    if (e.health == Health::degraded) s.health = Health::degraded;
    for (auto& st : e.stages) s.stages.push_back(std::move(st));
  }
  for (const auto& [name, chan] : c.peers)
    if (c.head && !chan->ready()) s.health = Health::degraded;
  return s;
}

void NodeRuntime::write_chrome_trace(const std::string& path) const {
  const Impl& c = *impl_;
  std::vector<JobResult> jobs;
  std::vector<Impl::Transfer> transfers;
  {
    std::lock_guard lk(c.trace_mu);
    jobs.assign(c.traces.begin(), c.traces.end());
    transfers.assign(c.transfers.begin(), c.transfers.end());
  }
  // The steady clock's own epoch: every process of a host reads the same clock.
  nlohmann::json trace = actors::chrome_trace_json(jobs, Clock::time_point{});
  std::vector<actors::TransferSlice> slices;
  for (const auto& t : transfers)
    slices.push_back({t.job, "transfer " + c.opt.node + " -> " + t.to, t.start, t.end, t.bytes});
  actors::add_transfer_track(trace, slices, Clock::time_point{});
  actors::label_process(trace, "node " + c.opt.node, c.node_index);
  std::ofstream f(path);
  SC_CHECK(f.good(), Errc::io, "cannot write trace file '" << path << "'; check the folder exists and is writable");
  f << trace.dump() << "\n";
  SC_CHECK(f.good(), Errc::io, "writing trace file '" << path << "' failed (disk full?)");
}

void NodeRuntime::shutdown(std::chrono::milliseconds drain) {
  if (!impl_) return;
  Impl& c = *impl_;
  if (c.closed.exchange(true) && !c.inbound) return;
  const auto until = Clock::now() + drain;
  for (;;) {
    {
      std::lock_guard lk(c.jobs_mu);
      if (c.table.empty()) break;
    }
    if (Clock::now() >= until) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  // Nothing new arrives: the socket goes first (its I/O thread is joined here).
  c.inbound.reset();
  {
    std::lock_guard lk(c.sweep_mu);
    c.sweep_stop = true;
  }
  c.sweep_cv.notify_all();
  if (c.sweeper.joinable()) c.sweeper.join();
  // Every job the head still has is answered now; the engines then answer theirs
  // (which, the table being empty, goes nowhere).
  std::vector<uint64_t> left;
  {
    std::lock_guard lk(c.jobs_mu);
    for (const auto& [id, j] : c.table) left.push_back(id);
  }
  for (uint64_t id : left)
    c.finish(id, failure(Errc::cancelled, "",
                         "job " + std::to_string(id) + " was cancelled: node '" + c.opt.node +
                             "' shut down before it finished"));
  {
    std::lock_guard lk(c.egress_mu);
    c.egress_stopped = true;
    c.egress.clear();
  }
  for (auto& r : c.runs) r.engine->shutdown();
  {
    std::unique_lock lk(c.peers_mu);  // waits out any channel callback in progress
    c.detached = true;
  }
  c.peers.clear();
}

}  // namespace stagecraft
