#pragma once
// A Stage is plain compute: it knows nothing of actors, sockets or threads.
// The engine creates one Stage object per replica, calls load() once, then
// calls run() on the replica's lane thread with a batch of packets; run()
// reads input tensors from each packet and stores its outputs back into it.
// On a CUDA lane run() only enqueues (ops use current_stream()); the lane
// reports completion.
//
// Failures: an exception from any of these callbacks fails only the jobs it concerns
// (Error(stage_failed) naming the stage and the callback); the engine goes on. When a
// run() of several packets throws, the engine runs each of them again alone so that
// only the job that causes the failure fails: run() should therefore leave a packet as
// it found it when it throws (compute into locals, store at the end), and must give a
// packet the same bytes whatever else shares its batch.
//
//   class Doubler : public Stage {
//     void run(std::vector<PacketPtr>& batch, Lane&) override {
//       for (auto& p : batch) p->tensors["x"] = ops::scale(p->tensor("x"), 2.0f);
//     }
//   };
//   STAGECRAFT_REGISTER_STAGE("doubler", Doubler);
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/device.hpp"
#include "core/lane.hpp"
#include "core/packet.hpp"

namespace stagecraft {

struct StageTraits {
  int max_batch = 1;       ///< most packets one run() takes
  bool iterative = false;  ///< run() advances each packet one step; see Stage::finished
};

/// What a stage is told when it is built: its name and type in the pipeline,
/// the device of its lane, the pipeline's model folder (may be empty) and its
/// `params` from the pipeline file (everything in the stage's YAML entry that
/// the engine does not consume itself).
struct StageContext {
  std::string name;
  std::string type;
  Device device;
  std::string model_dir;
  nlohmann::json params = nlohmann::json::object();
  nlohmann::json defaults = nlohmann::json::object();  ///< the pipeline's request defaults
};

class Stage {
 public:
  virtual ~Stage() = default;
  /// Called once, before any run(), on the stage's lane thread.
  virtual void load(const StageContext& ctx) {}
  virtual StageTraits traits() const { return {}; }
  /// Refuses a request this stage could not serve, by throwing Error(invalid_argument)
  /// with a message naming the field (e.g. a size that is not a multiple of the model's
  /// latent factor, an unknown scheduler). The engine calls it at the door, before the job
  /// is accepted, with the pipeline's defaults applied; so it runs on the submitter's
  /// thread, possibly while run() runs: only read what load() set.
  virtual void check_request(const Request& r) const {}
  /// Packets with different keys never share a batch (e.g. different latent sizes).
  /// Called once per packet, when it arrives at the stage.
  virtual std::string batch_key(const Packet& p) const { return {}; }
  /// Computes (or enqueues) one batch; see the header comment.
  virtual void run(std::vector<PacketPtr>& batch, Lane& lane) = 0;
  /// Iterative stages: true once `p` has done all its steps and may leave.
  virtual bool finished(const Packet& p) const { return true; }
};

using StageFactory = std::function<std::unique_ptr<Stage>()>;

/// Adds a type to the process-wide registry; a second registration of a name replaces the first.
void register_stage_type(const std::string& type, StageFactory factory);
bool stage_type_known(const std::string& type);
std::vector<std::string> stage_types();
/// Error(not_found) listing the known types when `type` is unknown.
std::unique_ptr<Stage> create_stage(const std::string& type);
/// Loads a plugin shared library and calls its `stagecraft_register_stages()` (extern "C").
void load_stage_plugin(const std::string& path);

}  // namespace stagecraft

#define STAGECRAFT_REGISTER_STAGE(type_name, Class)                                  \
  static const bool sc_stage_registered_##Class = [] {                               \
    ::stagecraft::register_stage_type(type_name, [] { return std::make_unique<Class>(); }); \
    return true;                                                                     \
  }()
