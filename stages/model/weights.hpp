#pragma once
// Loading one diffusers component folder (text_encoder/, transformer/, vae/, ...):
// its config JSON and its safetensors weights, either one *.safetensors file or
// shards listed in a *.safetensors.index.json ("weight_map": {param: file}).
// Every parameter a stage asks for is checked against the shape the stage's
// architecture expects, cast to the stage's compute dtype and moved to its
// device; check_all_used() then reports parameters nobody asked for, so a
// checkpoint of a different architecture fails loudly instead of half-loading.
//
//   auto c = ModelComponent::open("models/tiny-shapes/text_encoder");
//   int64_t d = c.config().at("hidden_size");
//   Tensor w = c.param("text_model.final_layer_norm.weight", {d}, DType::f32, Device::cpu());
//   ...
//   c.check_all_used();
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/device.hpp"
#include "core/dtype.hpp"
#include "core/safetensors.hpp"
#include "core/tensor.hpp"

namespace stagecraft {

/// One diffusers component folder: config.json (or another name) and its weights —
/// a single *.safetensors, or shards listed in *.safetensors.index.json.
class ModelComponent {
 public:
  /// Reads `dir`/`config_name` and finds the weights: a *.safetensors.index.json (shards) wins,
  /// then exactly one *.safetensors file (diffusion_pytorch_model.safetensors / model.safetensors
  /// preferred when several exist). Throws Error(not_found) naming the folder when either is missing.
  /// A folder with a config but no weights (e.g. scheduler/) opens fine with no parameters.
  static ModelComponent open(const std::string& dir, const std::string& config_name = "config.json");

  const nlohmann::json& config() const { return config_; }
  const std::string& dir() const { return dir_; }

  /// Parameter `name` checked against `expected` shape (Error naming the parameter, expected and found shape,
  /// and the file), cast to `dtype` (f32/f16/bf16 stored) and moved to `device`. Marks it used.
  Tensor param(const std::string& name, const Shape& expected, DType dtype, Device device);
  /// Like param() but returns an undefined Tensor when the checkpoint lacks `name` (optional biases).
  Tensor param_if(const std::string& name, const Shape& expected, DType dtype, Device device);
  bool has(const std::string& name) const;
  /// Marks `name` (if present) as deliberately not loaded, e.g. a buffer such as position_ids
  /// that the architecture recomputes, so check_all_used() does not report it.
  void ignore(const std::string& name);
  /// The stored shape of `name`; Error(not_found) when absent.
  Shape stored_shape(const std::string& name) const;
  /// Every parameter name in the weight files, sorted.
  std::vector<std::string> names() const;
  /// Error listing every parameter in the files that no param() call asked for ("unexpected parameter ...").
  void check_all_used() const;

 private:
  struct Entry {
    std::shared_ptr<SafetensorsFile> file;
  };
  std::string dir_;
  nlohmann::json config_;
  std::map<std::string, Entry> params_;
  std::set<std::string> used_;
};

/// Largest JSON file (config, vocabulary, index) read from a model folder.
inline constexpr uint64_t kMaxJsonFileBytes = 64ull << 20;

/// Reads a JSON file of at most kMaxJsonFileBytes; Error(io) / Error(parse) naming the path.
nlohmann::json read_json_file(const std::string& path);

}  // namespace stagecraft
