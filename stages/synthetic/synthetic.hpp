#pragma once
// Synthetic stages for building and measuring the engine without a model. Each
// batch costs `cost.per_batch_ms + cost.per_item_ms * batch_size` milliseconds:
//
//   sleep               the lane waits (models asynchronous device time: the CPU stays free)
//   spin                the lane's thread burns CPU for that long (models host compute)
//   synthetic_denoiser  iterative: every call advances each job of the batch by one step,
//                       and one step costs the above; a job runs `steps` steps (its
//                       request's, else the pipeline's defaults.steps, else params.steps)
//
// Parameters (the stage's entry in the pipeline file):
//   cost: {per_batch_ms: 10, per_item_ms: 0.5}   # both default to 0: a no-op stage
//   output_bytes: 4194304                        # optional: adds a u8 tensor of this size
//   output_name: output                          #   ...under this name (default "output")
//
//   stages:
//     - {name: a, type: sleep, cost: {per_batch_ms: 10}, output_bytes: 4194304}
//     - {name: d, type: synthetic_denoiser, cost: {per_batch_ms: 20, per_item_ms: 2},
//        batching: {max_batch: 8}}
//
// The output tensor of a CPU stage holds the byte (job_id mod 256) everywhere, so a
// transport test can check that the right bytes arrived.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>

#include "stages/stage.hpp"

namespace stagecraft {

struct SyntheticCost {
  double per_batch_ms = 0;
  double per_item_ms = 0;
  /// Reads params["cost"]; Error(invalid_argument) naming the stage for a bad value.
  static SyntheticCost from_params(const nlohmann::json& params, const std::string& stage);
  std::chrono::nanoseconds of_batch(size_t batch_size) const;
};

/// What sleep, spin and synthetic_denoiser share: the cost model, the optional
/// output tensor and counters a test can read.
class SyntheticStage : public Stage {
 public:
  void load(const StageContext& ctx) override;
  /// Synthetic stages batch anything; the pipeline's batching.max_batch bounds it.
  StageTraits traits() const override { return {1 << 16, false}; }
  void run(std::vector<PacketPtr>& batch, Lane& lane) override;

  const SyntheticCost& cost() const { return cost_; }
  uint64_t batches_run() const { return batches_.load(); }
  uint64_t items_run() const { return items_.load(); }

 protected:
  /// Spends `d` the way this stage models time.
  virtual void spend(std::chrono::nanoseconds d) = 0;
  /// Adds the output tensor to `p` when output_bytes > 0.
  void write_output(Packet& p) const;

  StageContext ctx_;
  SyntheticCost cost_;
  int64_t output_bytes_ = 0;
  std::string output_name_ = "output";
  std::atomic<uint64_t> batches_{0}, items_{0};
};

class SleepStage : public SyntheticStage {
 protected:
  void spend(std::chrono::nanoseconds d) override;
};

class SpinStage : public SyntheticStage {
 protected:
  void spend(std::chrono::nanoseconds d) override;
};

/// An iterative stage with the denoiser's shape: jobs join with total_steps set,
/// each call advances every job of the batch one step (packet.step) and costs one
/// step's time; a job is finished at total_steps, when it gets the output tensor
/// and a "latents" f32 [1, 4, height/8, width/8] tensor holding its step count.
/// Jobs of different image sizes never share a batch.
class SyntheticDenoiserStage : public SleepStage {
 public:
  StageTraits traits() const override { return {1 << 16, true}; }
  std::string batch_key(const Packet& p) const override;
  void run(std::vector<PacketPtr>& batch, Lane& lane) override;
  bool finished(const Packet& p) const override { return p.total_steps > 0 && p.step >= p.total_steps; }

 private:
  int steps_for(const Packet& p) const;
  std::pair<int, int> size_for(const Packet& p) const;
};

}  // namespace stagecraft
