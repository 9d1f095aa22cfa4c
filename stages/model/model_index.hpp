#pragma once
// model_index.json of a diffusers pipeline folder: the pipeline class and, per
// component, the (library, class) pair — e.g. "text_encoder": ["transformers", "CLIPTextModel"].
// Entries whose value is [null, null] (an absent optional component) are skipped.
//
//   auto idx = ModelIndex::open("models/tiny-shapes");
//   if (idx.has("vae")) std::cout << idx.component("vae").class_name;   // "AutoencoderKL"
//   std::string dir = idx.component_dir("transformer");                 // ".../transformer"
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace stagecraft {

struct ModelIndexEntry {
  std::string name;        ///< "text_encoder"
  std::string library;     ///< "transformers", "diffusers"
  std::string class_name;  ///< "CLIPTextModel"
};

class ModelIndex {
 public:
  /// Reads `root`/model_index.json; Error(not_found) when the folder or file is missing,
  /// Error(parse) when an entry is not a [library, class] pair.
  static ModelIndex open(const std::string& root);

  const std::string& root() const { return root_; }
  /// "_class_name", e.g. "PixArtAlphaPipeline"; empty when absent.
  const std::string& pipeline_class() const { return pipeline_class_; }
  bool has(const std::string& component) const { return entries_.count(component) != 0; }
  /// Error(not_found) listing the components present.
  const ModelIndexEntry& component(const std::string& name) const;
  /// root/name, checked to be a folder (Error(not_found) otherwise).
  std::string component_dir(const std::string& name) const;
  std::vector<std::string> components() const;
  const nlohmann::json& json() const { return json_; }

 private:
  std::string root_;
  std::string pipeline_class_;
  std::map<std::string, ModelIndexEntry> entries_;
  nlohmann::json json_;
};

}  // namespace stagecraft
