// The node runtime: in-process engines for this node's runs of stages, joined to
// the other nodes by ZeroMQ channels, and by CUDA IPC or NCCL channels for edges placed
// on them. See node_runtime.hpp for the contract.
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
#ifdef STAGECRAFT_HAVE_CUDA
#include "transport/cuda_ipc_channel.hpp"
#include "transport/host_staging.hpp"
#endif
#ifdef STAGECRAFT_HAVE_NCCL
#include "transport/nccl_channel.hpp"
#endif

namespace stagecraft {

namespace {

/// Moves the packet's tensors to `device`, synchronously. ZeroMQ carries host memory: GPU
/// tensors are copied onto the stage's device after a receive (on the channel's thread).
/// Before a send they go through the node's HostStager instead (pinned memory, a copy
/// stream, off the sending thread); this is the fallback where there is none.
void move_tensors(Packet& p, Device device) {
  for (auto& [name, t] : p.tensors)
    if (t.device() != device) t = ops::to_device(t, device);
}

/// A send refused inside a channel's try_send, which runs under `egress_mu`: reported once
/// that lock is let go (reporting may take it again, e.g. the head's cancel).
struct SendFailure {
  std::string target;
  PacketPtr packet;
  std::string why;
};
thread_local std::vector<SendFailure>* deferred_failures = nullptr;

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
  /// The GPU channel this node receives on (bound at its gpu_endpoint), when an edge into
  /// it is placed on one.
  std::unique_ptr<transport::RecvChannel> gpu_inbound;
  ChannelKind gpu_inbound_kind = ChannelKind::zmq;

  /// What this node sends to one other node over. `control` always exists: notes,
  /// heartbeats (the head's decide whether the node is lost), cancels, finished jobs back
  /// to the head, and packets of edges on zmq. `gpu` carries packets of edges placed on
  /// cuda_ipc or nccl; its ready/losses/slots are the concrete channel's.
  struct Peer {
    std::unique_ptr<transport::ZmqSendChannel> control;
    std::unique_ptr<transport::SendChannel> gpu;
    ChannelKind gpu_kind = ChannelKind::zmq;
    std::function<bool()> gpu_ready;
    std::function<uint64_t()> gpu_losses;
    std::function<int()> gpu_slots_in_use;  // CUDA IPC only
    bool ready(bool over_gpu) const { return over_gpu ? gpu_ready() : control->ready(); }
    uint64_t losses(bool over_gpu) const { return over_gpu ? gpu_losses() : control->peer_losses(); }
    transport::SendChannel& data(bool over_gpu) { return over_gpu ? *gpu : static_cast<transport::SendChannel&>(*control); }
  };
  /// By node name; filled at start, cleared at shutdown. A channel's callbacks run under
  /// `peers_mu` shared and do nothing once `detached`, so clearing (which joins the
  /// channels' I/O threads) never races with one.
  std::map<std::string, Peer> peers;

  /// GPU channels this node needs, found at start: to each target node (the kind, the
  /// sending stage's device, the edge for messages), and into this node.
  struct GpuEdge {
    ChannelKind kind = ChannelKind::zmq;
    int device = 0;
    std::string edge;  // "FILE:LINE:COL: edge a -> b (node 'x' to 'y') on cuda_ipc (forced)"
  };
  std::map<std::string, GpuEdge> gpu_out;
  std::optional<GpuEdge> gpu_in;
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
  /// By (target node, over its GPU channel): a node may get packets over both.
  using EgressKey = std::pair<std::string, bool>;
  std::map<EgressKey, std::deque<Outgoing>> egress;
  bool egress_stopped = false;
#ifdef STAGECRAFT_HAVE_CUDA
  /// GPU tensors leaving over ZeroMQ: copied into pinned memory on a copy stream, the
  /// packet sent once the copy is done (made at start when a run of this node ends on a
  /// CUDA stage).
  std::unique_ptr<transport::HostStager> stager;
#endif

  // ---- counters and the trace of this node
  std::atomic<uint64_t> notes_received{0}, notes_dropped{0}, entered{0}, forwarded{0};
  struct Transfer {
    uint64_t job = 0;
    std::string to;
    Clock::time_point start, end;
    size_t bytes = 0;
    std::string over;  ///< the GPU channel it took; empty: ZeroMQ
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
  /// Finds the GPU channels this node's edges need (gpu_out, gpu_in) and checks, before
  /// anything is loaded, that this build and host can run them.
  void plan_gpu_channels();
  std::string edge_text(int index, const std::string& from, const std::string& to, ChannelKind k) const;
  void bind_gpu_inbound(const NodeSpec& me, int credits);
  void connect_peers();
  /// Whether packets from chain stage `index` to `target` go over its GPU channel.
  bool over_gpu(int index, const std::string& target) const;
  /// A packet a channel could not send (or receive): its job fails, with `why`.
  void send_failed(const std::string& target, const PacketPtr& p, const std::string& why);
  /// A job's failure, answered by the head or reported to it.
  void report_failure(uint64_t job, Errc code, const std::string& stage, const std::string& why);

  // ------------------------------------------------------------ job flow
  /// Hands a packet to run `run`'s engine; its refusal, if it refused (nothing called then).
  std::optional<JobResult> enter(size_t run, PacketPtr p, std::shared_ptr<transport::Receipt> receipt);
  void left_run(size_t run, uint64_t job, const Request& request, const JobResult& res,
                const std::shared_ptr<transport::Receipt>& receipt);
  void forward(const std::string& target, bool gpu, PacketPtr p, std::shared_ptr<transport::Receipt> receipt);
  /// Which node of stage `stage` a packet goes to: the connected one with the most room, or
  /// one not reached yet (still starting); empty when every one of them was lost.
  std::string pick_node(int stage);
  void flush(const std::string& target, bool gpu);
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
  placement = place(spec);
  head = placement.head == opt.node;
  hash = pipeline_hash(spec);
  std::random_device rd;
  epoch = (uint64_t(rd()) & 0x7fffffffu) | 1u;  // never 0, so no id is below 2^32
  // Before any stage loads: a GPU channel this build or host cannot run is the error to
  // report (naming the edge), not a stage that cannot find its device.
  plan_gpu_channels();
#ifdef STAGECRAFT_HAVE_CUDA
  for (Segment seg : placement.segments_of(opt.node))
    if (placement.chain[size_t(seg.last)]->device.is_cuda() && !stager)
      stager = std::make_unique<transport::HostStager>();
#endif

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
  // The channels to other nodes first: a packet may arrive the moment the inbound socket is
  // bound, and its way on (forward, flush) reads `peers`, which must be complete by then.
  {
    // Callbacks of the channels made so far (a credit, a lost peer) wait here until the map
    // is whole; they take peers_mu shared (while_attached).
    std::unique_lock lk(peers_mu);
    connect_peers();
  }
  inbound = transport::ZmqRecvChannel::bind(ctx, opt.listen.empty() ? me->endpoint : opt.listen, std::move(ro));
  endpoint = inbound->endpoint();
  if (gpu_in) bind_gpu_inbound(*me, credits);
  if (head) sweeper = std::thread([this] { sweep_deadlines(); });
}

std::string NodeRuntime::Impl::edge_text(int index, const std::string& from, const std::string& to,
                                         ChannelKind k) const {
  const StageSpec& a = *placement.chain[size_t(index)];
  const StageSpec& b = *placement.chain[size_t(index) + 1];
  SourceLoc at = a.loc;
  for (const auto& e : spec.edges)
    if (e.from == a.name && e.to == b.name && e.loc.line > 0) at = e.loc;
  const std::string& forced = placement.forced[size_t(index)];
  std::string why = forced == "auto" ? std::string(k == ChannelKind::cuda_ipc
                                                       ? "chosen by auto: both stages on CUDA devices, on one host"
                                                       : "chosen by auto: both stages on CUDA devices, on two hosts")
                                     : "forced by the file";
  return spec.path + ":" + std::to_string(at.line) + ":" + std::to_string(at.col) + ": edge " + a.name + " -> " +
         b.name + " (node '" + from + "' to node '" + to + "') uses channel " + channel_name(k) + " (" + why + ")";
}

namespace {

/// Why a GPU channel of kind `k` on `device` cannot run in this process, or "".
std::string gpu_channel_unavailable(ChannelKind k, int device) {
#ifndef STAGECRAFT_HAVE_CUDA
  (void)device;
  return std::string("this build of stagecraft has no CUDA (built with STAGECRAFT_CUDA=OFF or without the toolkit), so "
                     "it has no ") +
         channel_name(k) + " channel";
#else
  if (!cuda_available()) return "no CUDA device is usable here: " + cuda_unavailable_reason();
  if (device < 0 || device >= cuda_device_count())
    return "there is no cuda:" + std::to_string(device) + " here (" + std::to_string(cuda_device_count()) +
           " device(s) visible)";
  if (k == ChannelKind::nccl) {
#ifndef STAGECRAFT_HAVE_NCCL
    return "this build of stagecraft has no NCCL channel (nccl.h was not found when it was built)";
#else
    return transport::nccl_unavailable_reason();
#endif
  }
  return "";
#endif
}

}  // namespace

void NodeRuntime::Impl::plan_gpu_channels() {
  auto fix = [&](const GpuEdge& g) {
    std::string how = "; force `channel: zmq` on that edge";
    if (g.edge.find("chosen by auto") != std::string::npos && spec.edges.size() > 0 && spec.edges.front().loc.line == 0)
      how += " (list the chain under `edges:`, that edge with `channel: zmq`)";
    return how + " so GPU tensors cross through host memory, or run this node where " + channel_name(g.kind) +
           " works";
  };
  // Out of this node: the edge after each of its runs, to every node of the next stage
  // that is not this one (a stage this node runs too goes on in this process).
  for (const auto& seg : placement.segments_of(opt.node)) {
    const int next = seg.last + 1;
    if (next >= placement.size() || placement.runs_on(next, opt.node)) continue;
    for (const auto& n : placement.nodes_of(next)) {
      const ChannelKind k = placement.channel(spec, seg.last, opt.node, n);
      if (!is_gpu_channel(k)) continue;
      GpuEdge g{k, placement.chain[size_t(seg.last)]->device.index, edge_text(seg.last, opt.node, n, k)};
      auto [it, fresh] = gpu_out.emplace(n, g);
      SC_CHECK(fresh || (it->second.kind == g.kind && it->second.device == g.device), Errc::unsupported,
               g.edge << ", from cuda:" << g.device << "; but " << it->second.edge << ", from cuda:"
                      << it->second.device << ": a node has one GPU channel to each other node, from one device; "
                      << "force one channel on those edges or place their stages on one device");
    }
  }
  // Into this node: the edge before each of its runs, from every node of the previous stage
  // that does not run this run's first stage itself.
  for (const auto& seg : placement.segments_of(opt.node)) {
    if (seg.first == 0) continue;
    for (const auto& n : placement.nodes_of(seg.first - 1)) {
      if (n == opt.node || placement.runs_on(seg.first, n)) continue;
      const ChannelKind k = placement.channel(spec, seg.first - 1, n, opt.node);
      if (!is_gpu_channel(k)) continue;
      GpuEdge g{k, placement.chain[size_t(seg.first)]->device.index, edge_text(seg.first - 1, n, opt.node, k)};
      SC_CHECK(!gpu_in || (gpu_in->kind == g.kind && gpu_in->device == g.device), Errc::unsupported,
               g.edge << ", onto cuda:" << g.device << "; but " << gpu_in->edge << ", onto cuda:" << gpu_in->device
                      << ": a node receives over one GPU channel, onto one device; force one channel on those "
                         "edges or place their stages on one device");
      if (!gpu_in) gpu_in = g;
    }
  }
  for (const auto& [n, g] : gpu_out) {
    const std::string why = gpu_channel_unavailable(g.kind, g.device);
    SC_CHECK(why.empty(), Errc::unsupported, g.edge << ", but " << why << fix(g));
  }
  if (gpu_in) {
    const std::string why = gpu_channel_unavailable(gpu_in->kind, gpu_in->device);
    SC_CHECK(why.empty(), Errc::unsupported, gpu_in->edge << ", but " << why << fix(*gpu_in));
  }
}

void NodeRuntime::Impl::bind_gpu_inbound(const NodeSpec& me, int credits) {
  std::string ep = gpu_endpoint_of(me);
  SC_CHECK(!ep.empty(), Errc::invalid_argument,
           gpu_in->edge << ", but node '" << opt.node << "' has no gpu_endpoint and none can be derived from '"
                        << me.endpoint << "'; give it one in `nodes:` (gpu_endpoint: tcp://HOST:PORT)");
  // --listen binds another host part than the file's endpoint (a Kubernetes Service name
  // is not bindable): the GPU socket binds the same host part, at the gpu_endpoint's port.
  ep = gpu_bind_address(ep, opt.listen, opt.gpu_listen);
  std::weak_ptr<Impl> weak = weak_from_this();
  auto on_packet = [weak](PacketPtr p, transport::Receipt r) {
    if (auto self = weak.lock()) self->on_packet(std::move(p), std::move(r));
  };
  auto on_note = [weak](const transport::ControlMessage& m) {
    if (auto self = weak.lock()) self->on_note(m);
  };
  const std::string kind = channel_name(gpu_in->kind);
  auto on_failed = [weak, kind](PacketPtr p, const std::string& why) {
    auto self = weak.lock();
    if (!self || !p) return;
    self->report_failure(p->job_id, Errc::stage_failed, p->route,
                         "receiving job " + std::to_string(p->job_id) + " at node '" + self->opt.node + "' over " +
                             kind + " failed: " + why +
                             (kind == "nccl" ? " (NCCL refuses two ranks on one GPU: nodes that share a GPU use "
                                               "channel cuda_ipc)"
                                             : ""));
  };
  // The options both GPU receive channels share.
  [[maybe_unused]] auto options_for = [&](auto& o) {
    o.hello = {opt.node, hash};
    o.credits = credits;
    o.device = gpu_in->device;
    o.on_packet = on_packet;
    o.on_note = on_note;
    o.on_failed = on_failed;
  };
  try {
#ifdef STAGECRAFT_HAVE_CUDA
    if (gpu_in->kind == ChannelKind::cuda_ipc) {
      transport::CudaIpcRecvOptions o;
      options_for(o);
      gpu_inbound = transport::CudaIpcRecvChannel::bind(ctx, ep, std::move(o));
    }
#endif
#ifdef STAGECRAFT_HAVE_NCCL
    if (gpu_in->kind == ChannelKind::nccl) {
      transport::NcclRecvOptions o;
      options_for(o);
      gpu_inbound = transport::NcclRecvChannel::bind(ctx, ep, std::move(o));
    }
#endif
  } catch (const Error& e) {
    throw Error(e.code(), gpu_in->edge + ", but its receiving socket at " + ep + " cannot be made: " + e.what());
  }
  // plan_gpu_channels has refused every kind this build lacks, so this holds.
  SC_CHECK(gpu_inbound, Errc::internal, gpu_in->edge << ": no GPU channel was made");
  gpu_inbound_kind = gpu_in->kind;
}

bool NodeRuntime::Impl::over_gpu(int index, const std::string& target) const {
  if (index + 1 >= placement.size()) return false;  // the way back to the head
  auto it = gpu_out.find(target);
  return it != gpu_out.end() && is_gpu_channel(placement.channel(spec, index, opt.node, target));
}

void NodeRuntime::Impl::report_failure(uint64_t job, Errc code, const std::string& stage, const std::string& why) {
  if (head) return finish(job, failure(code, stage, why));
  transport::ControlMessage m;
  m.what = "failed";
  m.job_id = job;
  m.stage = stage;
  m.code = errc_name(code);
  m.reason = why;
  note_head(std::move(m));
}

void NodeRuntime::Impl::send_failed(const std::string& target, const PacketPtr& p, const std::string& why) {
  if (deferred_failures) {  // inside flush, under egress_mu: reported once it is let go
    deferred_failures->push_back({target, p, why});
    return;
  }
  std::string hint;
  auto it = gpu_out.find(target);
  if (it != gpu_out.end() && it->second.kind == ChannelKind::nccl && why.find("NCCL") != std::string::npos)
    hint = " (NCCL refuses two ranks on one GPU: nodes that share a GPU use channel cuda_ipc; or force channel zmq)";
  report_failure(p->job_id, Errc::stage_failed, p->route,
                 "sending job " + std::to_string(p->job_id) + " from node '" + opt.node + "' to node '" + target +
                     "' failed: " + why + hint);
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
    const NodeSpec* node = nullptr;
    for (const auto& n : spec.nodes)
      if (n.name == t) node = &n;
    auto on_credit = [weak, t](bool gpu) {
      return [weak, t, gpu] {
        if (auto self = weak.lock()) self->while_attached([&] { self->flush(t, gpu); });
      };
    };
    auto on_peer_lost = [weak, t] {
      if (auto self = weak.lock()) self->while_attached([&] { self->on_node_lost(t); });
    };
    auto on_failed = [weak, t](PacketPtr p, const std::string& why) {
      auto self = weak.lock();
      if (!self || !p) return;
      if (deferred_failures) return self->send_failed(t, p, why);  // this thread is inside flush
      self->while_attached([&] { self->send_failed(t, p, why); });
    };
    transport::ZmqSendOptions so;
    so.heartbeat = opt.heartbeat;
    so.peer_timeout = opt.node_timeout;
    so.on_credit = on_credit(false);
    so.on_peer_lost = on_peer_lost;
    so.on_failed = on_failed;
    so.on_sent = [weak, t](const PacketPtr& p, size_t bytes) {
      auto self = weak.lock();
      if (!self || p->trace.empty()) return;
      Transfer x{p->job_id, t, p->trace.back().start, Clock::now(), bytes, ""};
      std::lock_guard lk(self->trace_mu);
      self->transfers.push_back(std::move(x));
      while (self->transfers.size() > kTraceKeep) self->transfers.pop_front();
    };
    Peer& peer = peers[t];
    peer.control = transport::ZmqSendChannel::connect(ctx, node->endpoint, {opt.node, hash}, std::move(so));

    auto g = gpu_out.find(t);
    if (g == gpu_out.end()) continue;
    const std::string ep = gpu_endpoint_of(*node);
    SC_CHECK(!ep.empty(), Errc::invalid_argument,
             g->second.edge << ", but node '" << t << "' has no gpu_endpoint and none can be derived from '"
                            << node->endpoint << "'; give it one in `nodes:` (gpu_endpoint: tcp://HOST:PORT)");
    peer.gpu_kind = g->second.kind;
    // The options both GPU channels share, and what the runtime asks of either one.
    [[maybe_unused]] auto options_for = [&](auto& o) {
      o.device = g->second.device;
      o.on_credit = on_credit(true);
      o.on_failed = on_failed;
      o.on_peer_lost = on_peer_lost;
      o.heartbeat = opt.heartbeat;
      o.peer_timeout = opt.node_timeout;
    };
    [[maybe_unused]] auto adopt = [&](auto channel) {
      auto* raw = channel.get();
      peer.gpu_ready = [raw] { return raw->ready(); };
      peer.gpu_losses = [raw] { return raw->peer_losses(); };
      peer.gpu = std::move(channel);
      return raw;
    };
    try {
#ifdef STAGECRAFT_HAVE_CUDA
      if (g->second.kind == ChannelKind::cuda_ipc) {
        transport::CudaIpcSendOptions o;
        options_for(o);
        auto* raw = adopt(transport::CudaIpcSendChannel::connect(ctx, ep, {opt.node, hash}, std::move(o)));
        peer.gpu_slots_in_use = [raw] { return raw->slots_in_use(); };
      }
#endif
#ifdef STAGECRAFT_HAVE_NCCL
      if (g->second.kind == ChannelKind::nccl) {
        transport::NcclSendOptions o;
        options_for(o);
        adopt(transport::NcclSendChannel::connect(ctx, ep, {opt.node, hash}, std::move(o)));
      }
#endif
    } catch (const Error& e) {
      throw Error(e.code(), g->second.edge + ", but its channel to " + ep + " cannot be made: " + e.what());
    }
    SC_CHECK(peer.gpu, Errc::internal, g->second.edge << ": no GPU channel was made");
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
    report_failure(job, code, stage, why);
  };
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
  if (next == placement.size() && !peers.at(target).control->ready() && peers.at(target).control->peer_losses() > 0)
    return fail_here(Errc::node_lost, "",
                     "the head node '" + target + "' was lost by node '" + opt.node + "'");
  // Over CUDA IPC or NCCL the tensors stay on the device; ZeroMQ carries host memory.
  const bool gpu = over_gpu(seg.last, target);
  const std::string from_stage = placement.chain[size_t(seg.last)]->name;
  bool stage_to_host = false;  // over ZeroMQ through the stager, after the bookkeeping below
  try {
    // The GPU channels and the stager copy contiguous bytes; making a tensor so is a copy
    // enqueued on this thread's stream, which theirs are ordered after.
    bool has_cuda = false;
    for (auto& [name, t] : p->tensors)
      if (t.defined() && t.device().is_cuda()) {
        has_cuda = true;
        if (!t.is_contiguous()) t = ops::contiguous(t);
      }
#ifdef STAGECRAFT_HAVE_CUDA
    stage_to_host = !gpu && has_cuda && stager;
#endif
    if (!gpu && has_cuda && !stage_to_host) move_tensors(*p, Device::cpu());
  } catch (const std::exception& e) {
    return fail_here(Errc::stage_failed, from_stage,
                     std::string("copying the job's tensors to send them failed: ") + e.what());
  }
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
#ifdef STAGECRAFT_HAVE_CUDA
  if (stage_to_host) {
    // Sent from the stager's thread once the copy to pinned memory is done: this thread (a
    // lane's, or the engine's) goes on at once.
    std::weak_ptr<Impl> weak = weak_from_this();
    stager->stage(std::move(p), [weak, target, receipt, job, from_stage](PacketPtr staged, const std::string& error) {
      auto self = weak.lock();
      if (!self) return;
      if (!error.empty()) {
        if (receipt) receipt->release();
        self->report_failure(job, Errc::stage_failed, from_stage,
                             "copying the job's tensors to the host to send them failed: " + error);
        return;
      }
      self->forward(target, false, std::move(staged), receipt);
    });
    return;
  }
#endif
  forward(target, gpu, std::move(p), receipt);
}

std::string NodeRuntime::Impl::pick_node(int stage) {
  // The connected node with the most room: credits it granted and has not used, less the
  // packets already waiting here for it.
  // Each node's room is that of the channel the packet would take there (its GPU channel
  // for an edge placed on one).
  std::string best;
  long best_room = 0;
  for (const auto& n : placement.nodes_of(stage)) {
    Peer& peer = peers.at(n);
    const bool gpu = over_gpu(stage - 1, n);
    if (!peer.ready(gpu)) continue;
    long room = peer.data(gpu).stats().credits;
    {
      std::lock_guard lk(egress_mu);
      auto it = egress.find({n, gpu});
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
    if (peers.at(n).losses(over_gpu(stage - 1, n)) == 0) return n;
  return "";
}

void NodeRuntime::Impl::forward(const std::string& target, bool gpu, PacketPtr p,
                                std::shared_ptr<transport::Receipt> receipt) {
  TraceSpan span;
  span.stage = "send to " + target;
  span.lane = "transfer " + opt.node + " -> " + target;
  if (gpu) span.stage += " over " + std::string(channel_name(peers.at(target).gpu_kind));
  span.kind = TraceSpan::Kind::transfer;
  span.start = span.end = Clock::now();
  p->trace.push_back(span);
  {
    std::lock_guard lk(egress_mu);
    if (egress_stopped) return;
    egress[{target, gpu}].push_back({std::move(p), std::move(receipt)});
  }
  flush(target, gpu);
}

void NodeRuntime::Impl::flush(const std::string& target, bool gpu) {
  std::vector<SendFailure> failures;
  std::vector<Transfer> sent;
  {
    // A GPU channel's try_send may refuse a packet at once (on_failed, on this thread):
    // collected here, reported below without the lock.
    auto* outer = std::exchange(deferred_failures, &failures);
    struct Restore {
      std::vector<SendFailure>* outer;
      ~Restore() { deferred_failures = outer; }
    } restore{outer};
    std::lock_guard lk(egress_mu);
    if (egress_stopped) return;
    auto it = egress.find({target, gpu});
    if (it == egress.end()) return;
    Peer& peer = peers.at(target);
    if (gpu && !peer.gpu) return;
    transport::SendChannel& chan = peer.data(gpu);
    while (!it->second.empty()) {
      Outgoing& o = it->second.front();
      if (!chan.try_send(o.packet)) break;
      forwarded.fetch_add(1);
      if (gpu && !o.packet->trace.empty()) {
        // The GPU channel has enqueued the copy (CUDA IPC) or the send (NCCL) on its stream:
        // the transfer's host side ends here; its bytes, host and device, are the packet's.
        size_t bytes = 0;
        for (const auto& [name, t] : o.packet->tensors) bytes += t.defined() ? t.nbytes() : 0;
        sent.push_back({o.packet->job_id, target, o.packet->trace.back().start, Clock::now(), bytes,
                        channel_name(peer.gpu_kind)});
      }
      // The packet is in the channel's hands: the upstream may send the next one.
      if (o.receipt) o.receipt->release();
      it->second.pop_front();
    }
  }
  if (!sent.empty()) {
    std::lock_guard lk(trace_mu);
    for (auto& x : sent) transfers.push_back(std::move(x));
    while (transfers.size() > kTraceKeep) transfers.pop_front();
  }
  for (auto& f : failures) send_failed(f.target, f.packet, f.why);
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
  if (it == peers.end() || !it->second.control->send_note(m)) notes_dropped.fetch_add(1);
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
    // The head's own control connection says: its heartbeats decide whether a node is lost.
    if (peer != peers.end() && !peer->second.control->ready())
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
  for (auto& [name, peer] : peers)
    if (!peer.control->send_note(m)) notes_dropped.fetch_add(1);
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
  for (auto& [name, peer] : impl_->peers) {
    auto left = [&] {
      return std::max(std::chrono::duration_cast<std::chrono::milliseconds>(until - Clock::now()),
                      std::chrono::milliseconds(0));
    };
    if (!peer.control->wait_ready(left()))
      missing.push_back(name);
    else if (peer.gpu && !peer.gpu->wait_ready(left()))
      missing.push_back(name + " (its " + channel_name(peer.gpu_kind) + " channel)");
  }
  return missing;
}

NodeStats NodeRuntime::node_stats() const {
  NodeStats s;
  for (const auto& [name, peer] : impl_->peers) {
    NodeStats::Peer p;
    p.node = name;
    p.channel = peer.control->stats();
    p.losses = peer.control->peer_losses();
    p.ready = peer.control->ready();
    if (peer.gpu) {
      p.gpu_channel = channel_name(peer.gpu_kind);
      p.gpu = peer.gpu->stats();
      p.gpu_ready = peer.gpu_ready();
      p.losses += peer.gpu_losses();
    }
    s.peers.push_back(std::move(p));
  }
  if (impl_->gpu_inbound) {
    s.gpu_inbound_channel = channel_name(impl_->gpu_inbound_kind);
    s.gpu_inbound = impl_->gpu_inbound->stats();
  }
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
  for (const auto& [name, peer] : c.peers)
    if (c.head && (!peer.control->ready() || (peer.gpu && !peer.gpu_ready()))) s.health = Health::degraded;
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
    slices.push_back({t.job, "transfer " + c.opt.node + " -> " + t.to + (t.over.empty() ? "" : " over " + t.over),
                      t.start, t.end, t.bytes});
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
  c.gpu_inbound.reset();
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
#ifdef STAGECRAFT_HAVE_CUDA
  c.stager.reset();  // waits for copies in flight; their packets find the egress stopped
#endif
  // A CUDA IPC sender's slots die with this process: a receiver still reading one would
  // read freed memory. Wait (bounded: a receiver that is gone never answers) until every
  // slot is released.
  const auto slots_until = Clock::now() + c.opt.node_timeout;
  for (auto& [name, peer] : c.peers)
    while (peer.gpu_slots_in_use && peer.gpu_slots_in_use() > 0 && Clock::now() < slots_until)
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
  {
    std::unique_lock lk(c.peers_mu);  // waits out any channel callback in progress
    c.detached = true;
  }
  c.peers.clear();
}

}  // namespace stagecraft
