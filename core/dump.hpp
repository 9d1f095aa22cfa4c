#pragma once
// Stage dumps: a folder a run writes so that two runs (or Stagecraft and
// another implementation) can be compared tensor by tensor. Layout
// (docs/numerics.md is the reference):
//
//   DIR/manifest.json          {"format": "stagecraft-dump/1", "files": [...in pipeline order...],
//                               "pipeline": ..., "model": ..., "scheduler": ..., "timesteps": [...],
//                               "request": {...}}
//   DIR/<NN>-<stage>.safetensors   plain safetensors, one per stage, documented tensor names
//
//   DumpWriter dump("out/dump");
//   dump.add("text", "prompt_embeds", embeds);   // buffered per stage
//   dump.flush();                                // writes every stage file and the manifest
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/tensor.hpp"

namespace stagecraft {

class DumpWriter {
 public:
  /// Creates `dir` (and parents); existing dump files in it are replaced on flush().
  explicit DumpWriter(std::string dir);
  const std::string& dir() const { return dir_; }
  /// Records a tensor of `stage` (copied to host f32/u8/i64 as stored; any device).
  /// Stages are written in the order of their first add().
  void add(const std::string& stage, const std::string& name, const Tensor& t);
  /// Merges `fields` into the manifest (pipeline, model, scheduler, timesteps, request...).
  void set_manifest(const nlohmann::json& fields);
  /// Writes one safetensors file per stage and manifest.json.
  void flush();

 private:
  std::string dir_;
  std::mutex mu_;
  std::vector<std::string> stage_order_;
  std::map<std::string, std::map<std::string, Tensor>> tensors_;
  nlohmann::json manifest_ = nlohmann::json::object();
};

/// One tensor compared between two dumps.
struct TensorDiff {
  std::string file, name;
  Shape shape;
  double max_abs = 0, max_rel = 0;
  std::vector<int64_t> worst_index;  ///< of the element with the largest abs error
  double a_at_worst = 0, b_at_worst = 0;
  bool within_tolerance = true;      ///< |a-b| <= atol + rtol*|b| everywhere
  std::string problem;               ///< non-empty when shapes differ (then not within tolerance)
};

struct DumpComparison {
  std::vector<TensorDiff> diffs;            ///< in pipeline order: files as the manifest lists them
  std::vector<std::string> only_in_a, only_in_b;  ///< "file:tensor"
  /// The first diff (in pipeline order) outside tolerance, or nullptr.
  const TensorDiff* first_divergence() const;
};

/// Compares every tensor present in both dumps. Files pair by stage name (the
/// part after "NN-"), so dumps from other tools need only the stage names.
/// A dump without manifest.json is read in file-name order.
DumpComparison compare_dumps(const std::string& dir_a, const std::string& dir_b, double atol, double rtol);

/// Element-wise comparison of two CPU tensors of the same shape (any dtypes).
TensorDiff compare_tensors(const Tensor& a, const Tensor& b, double atol, double rtol);

}  // namespace stagecraft
