#pragma once
// A pipeline file (YAML) turned into validated structs. Every problem found is
// reported at once, each with the file, line and column (1-based) of the
// offending key or value, what is wrong and what is allowed, so an author can
// fix a file in one pass. docs/pipeline-config.md is the reference for the keys.
//
// A pipeline file may come from anyone, so the parser bounds what it spends on one:
// at most 16 MiB of text, 4096 stages, 16384 edges and 1024 nodes, names of at most 128 bytes, stage
// parameters of at most 100,000 values and 1 MiB of text in all (a YAML alias counts
// each time it is used), UTF-8 text only, and at most 100 problems reported.
//
//   try {
//     PipelineSpec spec = load_pipeline_spec("pipelines/tiny-shapes.yaml");
//     std::cout << describe_pipeline(spec);
//   } catch (const SpecError& e) {
//     for (const auto& p : e.problems) std::cerr << p.str() << "\n";
//   }
//
// core/ knows no stage registry: whether a stage `type` exists is checked by
// stages/spec_check.hpp (check_stage_types), which also loads plugins.
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/device.hpp"
#include "core/error.hpp"

namespace stagecraft {

/// Position in the pipeline file, 1-based; 0 when unknown (e.g. a filled-in default).
struct SourceLoc {
  int line = 0, col = 0;
};

struct BatchingSpec {
  int max_batch = 1;         ///< most packets (or jobs, for iterative stages) per run()
  double max_wait_ms = 0;    ///< how long a partial batch may wait for more packets
};

struct StageSpec {
  std::string name, type;
  std::string node;          ///< node name (the first of `nodes`); empty = the single local process
  /// Every node the stage runs on (`node: [a, b]`): one replica on each, and jobs go to
  /// whichever is connected and least busy. Holds just `node` for a single node.
  std::vector<std::string> nodes;
  Device device;             ///< cpu by default
  int replicas = 1;
  BatchingSpec batching;
  int queue_limit = 0;       ///< credits: most packets in flight into this stage; 0 = limits.credits
  /// Every other key of the stage entry (cost, cache, tiling, output_bytes, ...), for the stage itself.
  nlohmann::json params = nlohmann::json::object();
  /// Path of a plugin .so providing the type, resolved relative to the file's folder; may be empty.
  std::string plugin;
  SourceLoc loc;
};

struct EdgeSpec {
  std::string from, to;
  std::string channel = "auto";  ///< auto | local | zmq | cuda_ipc | nccl
  SourceLoc loc;
};

struct NodeSpec {
  std::string name, endpoint;  ///< endpoint: a ZeroMQ address, e.g. tcp://127.0.0.1:7101
  /// Where the node receives over a GPU channel (CUDA IPC, NCCL: they bind a ZeroMQ socket
  /// of their own for their control messages). Empty: derived from `endpoint` (gpu_endpoint_of).
  std::string gpu_endpoint;
  /// The host the node runs on, for choosing channels (same host: CUDA IPC; other: NCCL).
  /// Empty: read from `endpoint` (host_of).
  std::string host;
  SourceLoc loc;
};

/// The node's GPU-channel endpoint: `gpu_endpoint` when the file gives one, else derived from
/// `endpoint`: ipc://PATH -> ipc://PATH.gpu, tcp://HOST:PORT -> tcp://HOST:(PORT+1000).
/// Empty when it cannot be derived (a tcp port that is not a number, or above 64535).
std::string gpu_endpoint_of(const NodeSpec& n);
/// The host a node runs on: `host` when the file gives one, else read from `endpoint`:
/// every ipc:// endpoint and tcp:// to a loopback address (127.x.x.x, localhost, ::1) is
/// "localhost"; any other tcp://HOST:PORT is HOST as written (lower case). Two nodes are on
/// one host when these are equal — a rule that cannot see that two different names are one
/// machine: give `host:` for that.
std::string host_of(const NodeSpec& n);

struct LimitsSpec {
  int max_pending_jobs = 256;  ///< front door: more jobs in flight are refused as overloaded
  int credits = 4;             ///< default per-stage in-flight bound (StageSpec::queue_limit = 0)
  // Request limits: a request beyond them is refused at the door with invalid_argument.
  int max_steps = 200;                 ///< most denoising steps one request may ask for
  int64_t max_pixels = 2048 * 2048;    ///< most width x height of one image
  int max_prompt_bytes = 4096;         ///< longest prompt (and negative prompt), in UTF-8 bytes
};

struct PipelineSpec {
  std::string path;       ///< the file it came from (or the name given to parse_pipeline_spec)
  std::string model_dir;  ///< resolved against the file's folder; empty if the file names none
  /// Request defaults: steps, guidance, width, height, scheduler, negative_prompt. Always holds
  /// all six keys after parsing (the built-in default where the file gives none).
  nlohmann::json defaults = nlohmann::json::object();
  std::vector<NodeSpec> nodes;    ///< empty = one process
  std::vector<StageSpec> stages;  ///< in file order
  std::vector<EdgeSpec> edges;    ///< filled with the linear order of `stages` when the file has none
  std::vector<std::string> plugins;  ///< top-level `plugins:` paths, resolved; loaded before any stage
  LimitsSpec limits;
  /// `pricing: {device_hour: X}`: what one device (a stage replica's lane) costs per hour,
  /// for the service's cost-per-million-images metric; 0 when the file gives none.
  double price_per_device_hour = 0;

  const StageSpec* find_stage(const std::string& name) const;
  /// Credits for a stage: its queue_limit, or limits.credits when that is 0.
  int credits_for(const StageSpec& s) const { return s.queue_limit > 0 ? s.queue_limit : limits.credits; }
};

/// One thing wrong with a pipeline file.
struct SpecProblem {
  std::string file;
  SourceLoc loc;
  std::string what;     ///< what is wrong
  std::string allowed;  ///< what is allowed instead (may be empty)
  /// "FILE:LINE:COL: what — allowed"
  std::string str() const;
};

/// Thrown by load/parse with every problem found; what() lists them one per line.
class SpecError : public Error {
 public:
  explicit SpecError(std::vector<SpecProblem> problems, PipelineSpec partial = {});
  std::vector<SpecProblem> problems;
  /// What could be read despite the problems, so later checks (stage types) can
  /// report theirs too: stages that parsed with a name, minus any whose type
  /// depends on a plugin that failed.
  PipelineSpec partial;
};

/// The word of `allowed` that `got` is a plausible typo of (edit distance, adjacent
/// swaps count as one), or "" if none is close. Bounded work: words over 64 bytes
/// are never suggested nor matched, and only the first 256 words of `allowed` count.
std::string closest_word(const std::string& got, const std::vector<std::string>& allowed);

/// Reads and validates a pipeline file. Throws SpecError (Errc::parse) listing every problem,
/// or Error(not_found / io) if the file cannot be read.
PipelineSpec load_pipeline_spec(const std::string& path);
/// Same from text; `name` labels problems, `base_dir` resolves relative paths (model, plugin).
PipelineSpec parse_pipeline_spec(const std::string& yaml, const std::string& name,
                                 const std::string& base_dir);
/// The resolved graph, human readable: stages with device, replicas and batching,
/// edges with their channel, limits and the request defaults.
std::string describe_pipeline(const PipelineSpec& spec);

}  // namespace stagecraft
