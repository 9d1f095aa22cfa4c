// ModelIndex: see model_index.hpp.
#include "stages/model/model_index.hpp"

#include <filesystem>
#include <sstream>

#include "core/error.hpp"
#include "core/json_brief.hpp"
#include "stages/model/weights.hpp"

namespace fs = std::filesystem;

namespace stagecraft {

ModelIndex ModelIndex::open(const std::string& root) {
  SC_CHECK(fs::is_directory(root), Errc::not_found,
           "model folder " << root << " does not exist: pass a diffusers-layout folder (e.g. models/tiny-shapes)");
  const std::string path = (fs::path(root) / "model_index.json").string();
  SC_CHECK(fs::exists(path), Errc::not_found,
           root << " has no model_index.json: it is not a diffusers pipeline folder");
  ModelIndex idx;
  idx.root_ = root;
  idx.json_ = read_json_file(path);
  SC_CHECK(idx.json_.is_object(), Errc::parse, path << " must hold a JSON object");
  for (const auto& [key, value] : idx.json_.items()) {
    if (key == "_class_name") {
      if (value.is_string()) idx.pipeline_class_ = value.get<std::string>();
      continue;
    }
    if (!key.empty() && key[0] == '_') continue;  // _diffusers_version and friends
    if (!value.is_array()) continue;              // plain pipeline options (e.g. "requires_safety_checker")
    SC_CHECK(value.size() == 2, Errc::parse,
             path << ": component \"" << key << "\" must be [library, class], got " << json_brief(value));
    if (value[0].is_null() || value[1].is_null()) continue;
    SC_CHECK(value[0].is_string() && value[1].is_string(), Errc::parse,
             path << ": component \"" << key << "\" must be [library, class] strings, got " << json_brief(value));
    idx.entries_[key] = ModelIndexEntry{key, value[0].get<std::string>(), value[1].get<std::string>()};
  }
  return idx;
}

const ModelIndexEntry& ModelIndex::component(const std::string& name) const {
  auto it = entries_.find(name);
  if (it == entries_.end()) {
    std::ostringstream os;
    for (const auto& [k, v] : entries_) os << " " << k;
    SC_FAIL(Errc::not_found, root_ << "/model_index.json has no component \"" << name << "\" (it has:" << os.str()
                                   << ")");
  }
  return it->second;
}

std::string ModelIndex::component_dir(const std::string& name) const {
  component(name);
  const std::string dir = (fs::path(root_) / name).string();
  SC_CHECK(fs::is_directory(dir), Errc::not_found,
           "model_index.json lists \"" << name << "\" but " << dir << " is not a folder");
  return dir;
}

std::vector<std::string> ModelIndex::components() const {
  std::vector<std::string> out;
  for (const auto& [k, v] : entries_) out.push_back(k);
  return out;
}

}  // namespace stagecraft
