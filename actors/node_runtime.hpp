#pragma once
// One process (node) of a pipeline split over several: the stages the pipeline
// file places on this node run in in-process engines (one per run of consecutive
// stages), and every edge that leaves the process is a channel with credits
// carried across, so back-pressure works across processes and hosts as it does
// inside one. Each node has a ZeroMQ connection (transport/zmq_channel.hpp) to
// every node it talks to, for notes and heartbeats and for packets of edges on
// `zmq`; an edge placed on `cuda_ipc` or `nccl` (core/placement.hpp,
// choose_channel) gets a GPU channel of its own (transport/cuda_ipc_channel.hpp,
// transport/nccl_channel.hpp), and the receiving node binds its `gpu_endpoint`
// for it. GPU tensors then never pass through host memory.
//
//   PipelineSpec spec = load_pipeline_spec("pipelines/tiny-shapes-disaggregated.yaml");
//   auto node = NodeRuntime::start(spec, {.node = "dit"});   // a worker: serves until shutdown()
//   auto head = NodeRuntime::start(spec, {.node = "enc"});   // the head: a JobRunner
//   head->wait_for_nodes(std::chrono::seconds(30));          // every node connected?
//   JobResult r = head->submit(request).get();
//
// The head is the node of the first stage. Every job begins and ends there: it
// keeps the table of accepted jobs and where each one is, so that it can answer
// every job whatever happens downstream. Other nodes report to the head over
// their connection to it (docs/wire-format.md, "Notes"): `moved` when a job leaves
// them for another node, `progress` per denoising step, `failed` with the error;
// the node of the last stage sends the finished packet back to the head.
//
// Faults: the head pings every node (heartbeat); a node silent for
// `node_timeout`, or one that restarted, is lost: every job that was there gets
// Error(node_lost) naming the node, at once, and the other nodes drop what they
// still held for those jobs. A job that would enter a node that is not connected
// fails the same way instead of waiting. A restarted worker is welcomed again
// and takes new work. Malformed messages sent at a node's socket are refused and
// counted (node_stats()); the node keeps serving.
//
// Sends run on each channel's own I/O thread, never on a stage's lane: a node
// sends packet n while its stages compute packet n+1. Over ZeroMQ, GPU tensors are
// copied into pinned host memory on a copy stream before the send (transport/
// host_staging.hpp: the packet goes once the copy is done, the lane does not wait) and
// onto the stage's device after the receive; over CUDA IPC and NCCL they arrive on the
// device, ordered on the GPU after the sender's copy.
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "actors/job_runner.hpp"
#include "core/pipeline_spec.hpp"
#include "transport/channel.hpp"

namespace stagecraft {

struct NodeOptions {
  std::string node;  ///< which node of the pipeline file this process is
  /// The address to bind instead of the node's endpoint, e.g. tcp://*:7102 where the file's
  /// endpoint is a name the others connect to (a Kubernetes Service) but not one this host
  /// can bind. Empty: bind the endpoint itself.
  std::string listen;
  /// The address to bind for GPU channels instead of the node's gpu_endpoint. Empty: the
  /// gpu_endpoint itself, or, with `listen` given, the gpu_endpoint's port on `listen`'s
  /// host (tcp://*:7102 and gpu_endpoint tcp://dit:8102 -> tcp://*:8102).
  std::string gpu_listen;
  /// How often nodes ping each other, and how long a silent node is given before it
  /// is taken as lost (its jobs then fail with node_lost).
  std::chrono::milliseconds heartbeat{500};
  std::chrono::milliseconds node_timeout{3000};
};

/// A node's transport counters, for tests, benchmarks and `worker` on exit.
struct NodeStats {
  struct Peer {
    std::string node;
    transport::ChannelStats channel;  ///< this node's ZeroMQ channel to that node
    uint64_t losses = 0;              ///< times that node was lost (silent or restarted)
    bool ready = false;
    /// The GPU channel to that node ("cuda_ipc" or "nccl"; empty: none) and its counters
    /// (packets, bytes: GPU and host bytes together).
    std::string gpu_channel;
    transport::ChannelStats gpu;
    bool gpu_ready = false;
  };
  std::vector<Peer> peers;
  transport::ChannelStats inbound;  ///< the node's own socket: packets received, refused
  std::string gpu_inbound_channel;  ///< the GPU channel this node receives on; empty: none
  transport::ChannelStats gpu_inbound;
  uint64_t refused_malformed = 0;   ///< wire-format refusals (any reason)
  uint64_t notes_received = 0, notes_dropped = 0;
  uint64_t jobs_entered = 0;        ///< packets that entered one of this node's engines
  uint64_t jobs_forwarded = 0;      ///< packets sent on to another node (or back to the head)
};

class NodeRuntime final : public JobRunner {
 public:
  /// Binds this node's endpoint (and gpu_endpoint when an edge into it is on a GPU channel),
  /// loads its stages, connects to the nodes it sends to. Throws Error when the node is not
  /// in the file, its endpoint is taken, a stage fails to load, or an edge of this node is
  /// on a GPU channel that this build or host cannot run (no CUDA, no device, no NCCL):
  /// that Error names the edge and says to force `channel: zmq` on it. Returns before the
  /// other nodes are up (see wait_for_nodes).
  static std::unique_ptr<NodeRuntime> start(const PipelineSpec& spec, NodeOptions options);
  ~NodeRuntime() override;

  const std::string& node() const;
  bool is_head() const;
  const std::string& endpoint() const;
  /// Waits until every node this one talks to has welcomed it. Returns the names of those
  /// still missing after `timeout` (empty: all connected). Throws Error(invalid_argument)
  /// when a node refused the handshake (another pipeline file or format version).
  std::vector<std::string> wait_for_nodes(std::chrono::milliseconds timeout);
  NodeStats node_stats() const;

  // JobRunner. Jobs enter at the head only: on another node submit() refuses with
  // Error(unsupported) naming the head. Job ids are unique across restarts of the head.
  std::future<JobResult> submit(Request request, Progress progress = {}) override;
  Submitted submit_with_callback(Request request, Progress progress, JobDone done) override;
  bool cancel(uint64_t job_id) override;
  /// Job counts of the head's table, and the stages of this node.
  EngineStats stats() const override;
  /// This node's stages and transfers (their own track, with byte counts) on the host's
  /// steady clock, so traces of the nodes of one host line up: see merge_chrome_traces.
  void write_chrome_trace(const std::string& path) const override;
  /// Stops taking jobs, waits up to `drain` for the head's jobs, answers the rest with
  /// Error(cancelled), then stops the engines and closes the channels.
  void shutdown(std::chrono::milliseconds drain = std::chrono::milliseconds(0)) override;

  struct Impl;

 private:
  explicit NodeRuntime(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}
  std::shared_ptr<Impl> impl_;
};

}  // namespace stagecraft
