#include "core/dump.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <sstream>

#include "core/error.hpp"
#include "core/json_brief.hpp"
#include "core/safetensors.hpp"

namespace fs = std::filesystem;

namespace stagecraft {

static constexpr const char* kFormat = "stagecraft-dump/1";

DumpWriter::DumpWriter(std::string dir) : dir_(std::move(dir)) {
  std::error_code ec;
  fs::create_directories(dir_, ec);
  SC_CHECK(!ec, Errc::io, "cannot create dump folder '" << dir_ << "': " << ec.message());
}

void DumpWriter::add(const std::string& stage, const std::string& name, const Tensor& t) {
  SC_CHECK(t.defined(), Errc::invalid_argument, "dump of " << stage << "/" << name << ": undefined tensor");
  // Device tensors are copied by the caller's stage (ops::to_device); core cannot
  // launch copies, so refuse clearly rather than read device memory.
  SC_CHECK(t.device().is_cpu(), Errc::invalid_argument,
           "dump of " << stage << "/" << name << ": tensor is on " << t.device().str()
                      << "; copy it to the host (ops::to_device) before dumping");
  std::lock_guard lock(mu_);
  if (!tensors_.count(stage)) stage_order_.push_back(stage);
  tensors_[stage][name] = t.clone();
}

void DumpWriter::set_manifest(const nlohmann::json& fields) {
  std::lock_guard lock(mu_);
  manifest_.update(fields);
}

void DumpWriter::flush() {
  std::lock_guard lock(mu_);
  nlohmann::json files = nlohmann::json::array();
  for (size_t i = 0; i < stage_order_.size(); ++i) {
    const std::string& stage = stage_order_[i];
    std::ostringstream fname;
    fname << std::setw(2) << std::setfill('0') << i << "-" << stage << ".safetensors";
    save_safetensors((fs::path(dir_) / fname.str()).string(), tensors_[stage], {{"stage", stage}});
    nlohmann::json names = nlohmann::json::array();
    for (const auto& [n, t] : tensors_[stage]) names.push_back(n);
    files.push_back({{"file", fname.str()}, {"stage", stage}, {"tensors", names}});
  }
  nlohmann::json m = manifest_;
  m["format"] = kFormat;
  m["files"] = files;
  const std::string path = (fs::path(dir_) / "manifest.json").string();
  std::ofstream out(path);
  SC_CHECK(out.good(), Errc::io, "cannot write " << path);
  out << m.dump(2) << "\n";
}

// ---- comparison ----

TensorDiff compare_tensors(const Tensor& a, const Tensor& b, double atol, double rtol) {
  TensorDiff d;
  d.shape = a.shape();
  if (a.shape() != b.shape()) {
    d.within_tolerance = false;
    d.problem = "shape " + a.shape_str() + " vs " + b.shape_str();
    return d;
  }
  const std::vector<float> va = a.to_vector(), vb = b.to_vector();
  int64_t worst = -1;
  double worst_err = -1;
  for (size_t i = 0; i < va.size(); ++i) {
    const double x = va[i], y = vb[i];
    // A NaN on one side only is the worst possible disagreement; NaN on both agrees.
    const bool nan_mismatch = std::isnan(x) != std::isnan(y);
    const double err = nan_mismatch ? INFINITY : (std::isnan(x) ? 0.0 : std::fabs(x - y));
    if (err > atol + rtol * std::fabs(y)) d.within_tolerance = false;
    if (err > worst_err) {
      worst_err = err;
      worst = static_cast<int64_t>(i);
    }
    if (!nan_mismatch) d.max_rel = std::max(d.max_rel, err / std::max(std::fabs(y), 1e-12));
  }
  d.max_abs = std::max(worst_err, 0.0);
  if (worst >= 0) {
    d.a_at_worst = va[worst];
    d.b_at_worst = vb[worst];
    // Flat index -> multi-index in the logical row-major order.
    d.worst_index.assign(a.shape().size(), 0);
    int64_t rest = worst;
    for (int k = static_cast<int>(a.shape().size()) - 1; k >= 0; --k) {
      d.worst_index[k] = rest % a.shape()[k];
      rest /= a.shape()[k];
    }
  }
  return d;
}

namespace {

struct DumpIndex {
  std::vector<std::string> stages;           // pipeline order
  std::map<std::string, std::string> files;  // stage -> path
};

// "03-decode.safetensors" -> "decode"; "decode.safetensors" -> "decode".
std::string stage_of(const std::string& file_name) {
  std::string stem = fs::path(file_name).stem().string();
  size_t dash = stem.find('-');
  if (dash != std::string::npos && dash > 0 &&
      std::all_of(stem.begin(), stem.begin() + dash, [](char c) { return std::isdigit(static_cast<unsigned char>(c)); }))
    return stem.substr(dash + 1);
  return stem;
}

std::string shown(const nlohmann::json& v) { return json_brief(v); }

// A stage file named by a manifest: a plain .safetensors file name in the dump folder,
// never a path (absolute, with folders or "..") that would read elsewhere.
void check_dump_file_name(const std::string& name, const std::string& where, const std::string& key) {
  const bool plain = !name.empty() && name.find('/') == std::string::npos && name.find('\0') == std::string::npos &&
                     name != "." && name != "..";
  const std::string ext = ".safetensors";
  const bool safetensors = name.size() > ext.size() && name.compare(name.size() - ext.size(), ext.size(), ext) == 0;
  SC_CHECK(plain && safetensors, Errc::parse,
           where << ": " << key << " is " << shown(nlohmann::json(name))
                 << "; a stage file must be a .safetensors file name inside the dump folder, with no folder or "
                    "\"..\" in it");
}

DumpIndex index_dump(const std::string& dir) {
  SC_CHECK(fs::is_directory(dir), Errc::not_found, "dump folder '" << dir << "' does not exist");
  DumpIndex idx;
  const fs::path manifest = fs::path(dir) / "manifest.json";
  if (fs::exists(manifest)) {
    std::error_code ec;
    const auto bytes = fs::file_size(manifest, ec);
    SC_CHECK(ec || bytes <= (64u << 20), Errc::parse,
             manifest.string() << " is " << bytes << " bytes; a dump manifest may hold at most 64 MiB");
    std::ifstream in(manifest);
    nlohmann::json m;
    try {
      in >> m;
    } catch (const std::exception& e) {
      SC_FAIL(Errc::parse, manifest.string() << " is not valid JSON: " << e.what());
    }
    // The manifest may come from another tool or another machine: every entry is
    // checked, and a file name must stay inside the dump folder.
    const std::string where = manifest.string();
    SC_CHECK(m.is_object(), Errc::parse, where << " must hold a JSON object, got " << m.type_name());
    if (m.contains("files")) {
      const nlohmann::json& files = m["files"];
      SC_CHECK(files.is_array(), Errc::parse,
               where << ": \"files\" must be a list of stage file names, got " << shown(files));
      for (size_t i = 0; i < files.size(); ++i) {
        const nlohmann::json& f = files[i];
        const std::string key = "files[" + std::to_string(i) + "]";
        const nlohmann::json* name_json = &f;
        if (f.is_object()) {
          SC_CHECK(f.contains("file"), Errc::parse, where << ": " << key << " has no \"file\" name: " << shown(f));
          name_json = &f["file"];
        }
        SC_CHECK(name_json->is_string(), Errc::parse,
                 where << ": " << key << (f.is_object() ? ".file" : "")
                       << " must be a file name such as \"00-text.safetensors\", got " << shown(*name_json));
        const std::string name = name_json->get<std::string>();
        check_dump_file_name(name, where, key);
        const std::string stage = stage_of(name);
        SC_CHECK(!idx.files.count(stage), Errc::parse,
                 where << ": " << key << " names stage '" << stage << "' a second time (" << name << ")");
        idx.stages.push_back(stage);
        idx.files[stage] = (fs::path(dir) / name).string();
      }
    }
  }
  // Files not named by a manifest (other tools' dumps) follow in name order.
  std::vector<std::string> extra;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().extension() == ".safetensors" && !idx.files.count(stage_of(e.path().filename().string())))
      extra.push_back(e.path().filename().string());
  std::sort(extra.begin(), extra.end());
  for (const auto& name : extra) {
    const std::string stage = stage_of(name);
    idx.stages.push_back(stage);
    idx.files[stage] = (fs::path(dir) / name).string();
  }
  SC_CHECK(!idx.stages.empty(), Errc::not_found,
           "dump folder '" << dir << "' holds no .safetensors files (expected files written by --dump)");
  return idx;
}

// Tensor names sort so that "latents.step_002" comes before "latents.step_010".
std::vector<std::string> ordered_names(const SafetensorsFile& f) {
  std::vector<std::string> names = f.names();
  std::sort(names.begin(), names.end());
  return names;
}

}  // namespace

const TensorDiff* DumpComparison::first_divergence() const {
  for (const auto& d : diffs)
    if (!d.within_tolerance) return &d;
  return nullptr;
}

DumpComparison compare_dumps(const std::string& dir_a, const std::string& dir_b, double atol, double rtol) {
  const DumpIndex ia = index_dump(dir_a), ib = index_dump(dir_b);
  DumpComparison out;
  for (const auto& stage : ia.stages) {
    auto fb = ib.files.find(stage);
    const SafetensorsFile a = SafetensorsFile::open(ia.files.at(stage));
    if (fb == ib.files.end()) {
      for (const auto& n : a.names()) out.only_in_a.push_back(stage + ":" + n);
      continue;
    }
    const SafetensorsFile b = SafetensorsFile::open(fb->second);
    for (const auto& n : ordered_names(a)) {
      if (!b.contains(n)) {
        out.only_in_a.push_back(stage + ":" + n);
        continue;
      }
      TensorDiff d = compare_tensors(a.get(n), b.get(n), atol, rtol);
      d.file = stage;
      d.name = n;
      out.diffs.push_back(std::move(d));
    }
    for (const auto& n : b.names())
      if (!a.contains(n)) out.only_in_b.push_back(stage + ":" + n);
  }
  for (const auto& stage : ib.stages)
    if (!ia.files.count(stage)) {
      const SafetensorsFile b = SafetensorsFile::open(ib.files.at(stage));
      for (const auto& n : b.names()) out.only_in_b.push_back(stage + ":" + n);
    }
  return out;
}

}  // namespace stagecraft
