#pragma once
// Where each stage of a pipeline runs: the chain order of its stages, the node
// (process) of each, and the runs of consecutive stages one node hosts. The node
// runtime (actors/node_runtime.hpp) builds one in-process engine per run and joins
// the runs of different nodes with channels.
//
//   Placement p = place(spec);
//   for (Segment s : p.segments_of("dit")) Engine::create(segment_spec(spec, p, s));
//   p.head  // the node of the first stage: jobs begin and end there
#include <string>
#include <vector>

#include "core/pipeline_spec.hpp"

namespace stagecraft {

/// The stages in the order packets visit them. Throws Error when the edges do not
/// form one chain (each stage one predecessor and one successor at most).
std::vector<const StageSpec*> chain_order(const PipelineSpec& spec);

/// How packets cross an edge (docs/disaggregation.md, "Channels").
enum class ChannelKind { local, zmq, cuda_ipc, nccl };
const char* channel_name(ChannelKind k);
inline bool is_gpu_channel(ChannelKind k) { return k == ChannelKind::cuda_ipc || k == ChannelKind::nccl; }

/// The channel of an edge from stage `from` on node `from_node` to stage `to` on `to_node`,
/// given the edge's `channel:` (auto | local | zmq | cuda_ipc | nccl):
///   - one node (or no nodes at all): local, whatever is forced — within a process packets
///     move by handle;
///   - forced zmq, cuda_ipc or nccl: that (the parser has refused a GPU channel between
///     stages that are not both on CUDA devices); forced local across nodes: Error;
///   - auto: both stages on CUDA devices -> cuda_ipc when both nodes are on one host
///     (host_of), nccl when not; otherwise zmq.
/// Throws Error(invalid_argument) for `local` across nodes, or an unknown node.
ChannelKind choose_channel(const PipelineSpec& spec, const std::string& forced, const StageSpec& from,
                           const std::string& from_node, const StageSpec& to, const std::string& to_node);

/// Valid settings that will not work as written, as warnings (the file still runs): an
/// edge forced to `nccl` between two nodes on one host whose stages name the same GPU —
/// NCCL refuses two ranks on one GPU, so each job over it fails — unless the processes see
/// different GPUs under one index (CUDA_VISIBLE_DEVICES), which the file cannot tell.
std::vector<SpecProblem> channel_warnings(const PipelineSpec& spec);

/// The address a node binds for GPU channels: `gpu_listen` when given; else, with `listen`
/// given (a worker's --listen, e.g. tcp://*:7102 where the endpoint names a Kubernetes
/// Service) and both tcp://, `listen`'s host at `gpu_endpoint`'s port (tcp://*:8102);
/// else `gpu_endpoint` itself.
std::string gpu_bind_address(const std::string& gpu_endpoint, const std::string& listen, const std::string& gpu_listen);

/// Chain indices [first, last] of consecutive stages on one node.
struct Segment {
  int first = 0, last = 0;
};

struct Placement {
  std::vector<const StageSpec*> chain;  ///< points into the spec it was made from
  std::string head;                     ///< the node of chain[0]; empty for one process

  /// The runs of consecutive chain stages placed on `node`, in chain order. A run starts
  /// where a packet can arrive from another node (the first stage, or one whose
  /// predecessor runs on a node that does not run it) and ends before the next such
  /// stage, so every packet that reaches `node` finds a run starting at its stage.
  std::vector<Segment> segments_of(const std::string& node) const;
  /// The nodes stage `index` runs on (one, or several: `node: [a, b]`).
  const std::vector<std::string>& nodes_of(int index) const { return chain[static_cast<size_t>(index)]->nodes; }
  bool runs_on(int index, const std::string& node) const;
  /// The chain index of the stage called `name`, or -1.
  int index_of(const std::string& name) const;
  int size() const { return static_cast<int>(chain.size()); }

  /// forced[i]: the `channel:` of the edge chain[i] -> chain[i+1] ("auto" where the spec
  /// has no such edge); one entry fewer than the chain.
  std::vector<std::string> forced;
  /// The channel that carries packets from stage `index` on node `from` to stage
  /// `index + 1` on node `to` (choose_channel). The way back to the head with a finished
  /// job is not an edge: it is always zmq.
  ChannelKind channel(const PipelineSpec& spec, int index, const std::string& from, const std::string& to) const;
};

/// Throws what chain_order throws, and Error(invalid_argument) when a multi-node file
/// leaves a stage without a node, names a node it does not declare, or places the first
/// stage (where jobs enter: the head) on more than one node.
Placement place(const PipelineSpec& spec);

/// The one-process pipeline of segment `s`: its stages in chain order, no nodes, no
/// edges; everything else (model, defaults, limits) as in `spec`.
PipelineSpec segment_spec(const PipelineSpec& spec, const Placement& p, Segment s);

/// FNV-1a 64 of the pipeline file's bytes as 16 hex digits: what nodes compare at
/// their handshake, so that every node of a pipeline runs the same file. A spec that
/// did not come from a readable file hashes its stage and node layout instead.
std::string pipeline_hash(const PipelineSpec& spec);

}  // namespace stagecraft
