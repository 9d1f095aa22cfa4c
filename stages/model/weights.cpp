// ModelComponent: see weights.hpp.
#include "stages/model/weights.hpp"

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/error.hpp"
#include "kernels/ops.hpp"

namespace fs = std::filesystem;

namespace stagecraft {

nlohmann::json read_json_file(const std::string& path) {
  std::ifstream in(path);
  SC_CHECK(in.good(), Errc::io, "cannot read " << path << ": check that the file exists and is readable");
  // Configs, vocabularies and shard indexes are kilobytes to a few megabytes; a model
  // folder is untrusted, so a multi-gigabyte "config" is refused before it is read.
  std::error_code ec;
  const auto bytes = fs::file_size(path, ec);
  SC_CHECK(ec || bytes <= kMaxJsonFileBytes, Errc::parse,
           path << " is " << bytes << " bytes; a JSON file of a model folder may hold at most "
                << kMaxJsonFileBytes / (1 << 20) << " MiB");
  try {
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    SC_FAIL(Errc::parse, path << " is not valid JSON: " << e.what());
  }
}

namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// diffusers names the single file after the library that wrote it; prefer those
// names so a folder that also holds e.g. a converted copy still loads the right one.
std::string pick_single_file(const std::vector<std::string>& files, const std::string& dir) {
  if (files.size() == 1) return files[0];
  for (const char* preferred : {"diffusion_pytorch_model.safetensors", "model.safetensors"}) {
    for (const auto& f : files)
      if (fs::path(f).filename() == preferred) return f;
  }
  std::ostringstream os;
  for (const auto& f : files) os << " " << fs::path(f).filename().string();
  SC_FAIL(Errc::invalid_argument, dir << " holds several .safetensors files (" << os.str()
                                      << " ) and no index: keep one, or add a *.safetensors.index.json");
}

}  // namespace

ModelComponent ModelComponent::open(const std::string& dir, const std::string& config_name) {
  SC_CHECK(fs::is_directory(dir), Errc::not_found,
           "model component folder " << dir << " does not exist: pass a diffusers-layout model folder");
  ModelComponent c;
  c.dir_ = dir;
  const std::string config_path = (fs::path(dir) / config_name).string();
  SC_CHECK(fs::exists(config_path), Errc::not_found,
           "missing " << config_name << " in " << dir << ": every diffusers component folder needs one");
  c.config_ = read_json_file(config_path);
  SC_CHECK(c.config_.is_object(), Errc::parse,
           config_path << " must hold a JSON object of settings, got " << c.config_.type_name());

  std::vector<std::string> singles, indexes;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (!e.is_regular_file()) continue;
    const std::string p = e.path().string();
    if (ends_with(p, ".safetensors.index.json")) indexes.push_back(p);
    else if (ends_with(p, ".safetensors")) singles.push_back(p);
  }
  std::sort(singles.begin(), singles.end());
  std::sort(indexes.begin(), indexes.end());

  if (!indexes.empty()) {
    SC_CHECK(indexes.size() == 1, Errc::invalid_argument,
             dir << " holds " << indexes.size() << " *.safetensors.index.json files: keep one");
    const nlohmann::json index = read_json_file(indexes[0]);
    SC_CHECK(index.contains("weight_map") && index["weight_map"].is_object(), Errc::parse,
             indexes[0] << " has no \"weight_map\" object mapping parameter names to shard files");
    std::map<std::string, std::shared_ptr<SafetensorsFile>> shards;
    for (const auto& [name, file] : index["weight_map"].items()) {
      SC_CHECK(file.is_string(), Errc::parse, indexes[0] << ": weight_map[\"" << name << "\"] is not a file name");
      const std::string shard = file.get<std::string>();
      // Shards live beside their index: a name with a folder in it (or "..") would read
      // whatever file the model's author points at.
      SC_CHECK(!shard.empty() && shard.find('/') == std::string::npos && shard != "." && shard != "..", Errc::parse,
               indexes[0] << ": weight_map[\"" << name << "\"] is \"" << shard
                          << "\"; a shard must be a file name in " << dir << ", with no folder");
      auto it = shards.find(shard);
      if (it == shards.end()) {
        const std::string path = (fs::path(dir) / shard).string();
        SC_CHECK(fs::exists(path), Errc::not_found,
                 indexes[0] << " lists shard " << shard << " which is not in " << dir);
        it = shards.emplace(shard, std::make_shared<SafetensorsFile>(SafetensorsFile::open(path))).first;
      }
      SC_CHECK(it->second->contains(name), Errc::not_found,
               indexes[0] << " says parameter " << name << " is in " << shard << ", but that file lacks it");
      c.params_[name] = Entry{it->second};
    }
    // A shard may hold tensors the index forgot; they are still part of the checkpoint.
    for (const auto& [shard, file] : shards)
      for (const auto& name : file->names())
        if (!c.params_.count(name)) c.params_[name] = Entry{file};
  } else if (!singles.empty()) {
    auto file = std::make_shared<SafetensorsFile>(SafetensorsFile::open(pick_single_file(singles, dir)));
    for (const auto& name : file->names()) c.params_[name] = Entry{file};
  }
  return c;
}

bool ModelComponent::has(const std::string& name) const { return params_.count(name) != 0; }

void ModelComponent::ignore(const std::string& name) {
  if (has(name)) used_.insert(name);
}

Shape ModelComponent::stored_shape(const std::string& name) const {
  auto it = params_.find(name);
  SC_CHECK(it != params_.end(), Errc::not_found, "missing parameter " << name << " in " << dir_);
  return it->second.file->get(name).shape();
}

std::vector<std::string> ModelComponent::names() const {
  std::vector<std::string> out;
  for (const auto& [name, e] : params_) out.push_back(name);
  return out;
}

Tensor ModelComponent::param(const std::string& name, const Shape& expected, DType dtype, Device device) {
  auto it = params_.find(name);
  SC_CHECK(it != params_.end(), Errc::not_found,
           "missing parameter " << name << " (expected shape " << shape_str(expected) << ") in " << dir_
                                << ": the checkpoint does not match this architecture or config.json");
  Tensor t = it->second.file->get(name);
  SC_CHECK(t.shape() == expected, Errc::shape_mismatch,
           "parameter " << name << " has shape " << t.shape_str() << " but the config expects "
                        << shape_str(expected) << " (file " << it->second.file->path()
                        << "): config.json and the weights disagree");
  SC_CHECK(is_floating(t.dtype()) && t.dtype() != DType::f8_e4m3, Errc::unsupported,
           "parameter " << name << " is stored as " << dtype_name(t.dtype()) << " in " << it->second.file->path()
                        << ": only f32, f16 and bf16 weights load");
  used_.insert(name);
  // Keep the zero-copy mmap view only when it is already what the stage wants and
  // element-aligned; anything else is cast/copied on the host once, at load.
  const bool aligned = reinterpret_cast<uintptr_t>(t.data()) % dtype_size(t.dtype()) == 0;
  if (t.dtype() != dtype) t = aligned ? t.to(dtype) : t.clone().to(dtype);
  else if (!aligned) t = t.clone();
  return device.is_cpu() ? t : ops::to_device(t, device);
}

Tensor ModelComponent::param_if(const std::string& name, const Shape& expected, DType dtype, Device device) {
  if (!has(name)) return {};
  return param(name, expected, dtype, device);
}

void ModelComponent::check_all_used() const {
  std::vector<std::string> unused;
  for (const auto& [name, e] : params_)
    if (!used_.count(name)) unused.push_back(name);
  if (unused.empty()) return;
  std::ostringstream os;
  const size_t show = std::min<size_t>(unused.size(), 20);
  for (size_t i = 0; i < show; ++i) {
    const auto& e = params_.at(unused[i]);
    os << "\n  unexpected parameter " << unused[i] << " " << e.file->get(unused[i]).shape_str();
  }
  if (unused.size() > show) os << "\n  ... and " << unused.size() - show << " more";
  SC_FAIL(Errc::shape_mismatch, dir_ << " has " << unused.size()
                                     << " parameter(s) this architecture does not use (is config.json right?):"
                                     << os.str());
}

}  // namespace stagecraft
