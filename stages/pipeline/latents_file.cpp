// Latents files: see latents_file.hpp.
#include "stages/pipeline/latents_file.hpp"

#include <filesystem>
#include <sstream>

#include "core/error.hpp"
#include "core/safetensors.hpp"
#include "stages/model/model_index.hpp"
#include "stages/model/weights.hpp"

namespace fs = std::filesystem;

namespace stagecraft {
namespace {

// diffusers treats a null config value as absent; so do the model loaders.
int config_int(const nlohmann::json& c, const char* key, int fallback) {
  return c.contains(key) && c[key].is_number() ? c[key].get<int>() : fallback;
}

std::string expectation(const Shape& expected, int width, int height) {
  std::ostringstream os;
  os << "one tensor named '" << kLatentsTensorName << "' of shape " << shape_str(expected) << " (" << expected[0]
     << (expected[0] == 1 ? " job" : " jobs") << " at " << width << "x" << height << ") in f32, f16 or bf16";
  return os.str();
}

}  // namespace

Shape LatentGeometry::shape(int64_t n, int width, int height) const {
  if (width <= 0) width = default_width;
  if (height <= 0) height = default_height;
  return {n, channels, height / scale, width / scale};
}

LatentGeometry latent_geometry(const std::string& model_dir) {
  const ModelIndex index = ModelIndex::open(model_dir);
  const nlohmann::json vae = read_json_file((fs::path(index.component_dir("vae")) / "config.json").string());
  const nlohmann::json dit = read_json_file((fs::path(index.component_dir("transformer")) / "config.json").string());
  LatentGeometry g;
  g.channels = config_int(vae, "latent_channels", 4);
  const size_t blocks =
      vae.contains("block_out_channels") && vae["block_out_channels"].is_array() ? vae["block_out_channels"].size() : 1;
  SC_CHECK(blocks >= 1, Errc::invalid_argument, model_dir << "/vae/config.json: block_out_channels is empty");
  g.scale = 1 << (blocks - 1);
  const int native = config_int(dit, "sample_size", 32) * g.scale;
  g.default_width = g.default_height = native;
  const fs::path meta = fs::path(model_dir) / "stagecraft.json";
  if (fs::exists(meta)) {
    const nlohmann::json m = read_json_file(meta.string());
    if (m.contains("defaults") && m["defaults"].is_object()) {
      g.default_width = config_int(m["defaults"], "width", native);
      g.default_height = config_int(m["defaults"], "height", native);
    }
  }
  return g;
}

Tensor read_latents_file(const std::string& path, const LatentGeometry& g, int64_t n, int width, int height) {
  if (width <= 0) width = g.default_width;
  if (height <= 0) height = g.default_height;
  const Shape expected = g.shape(n, width, height);
  SC_CHECK(fs::is_regular_file(path), Errc::not_found,
           "--latents " << path << ": no such file; expected a safetensors file holding "
                        << expectation(expected, width, height));
  const SafetensorsFile f = SafetensorsFile::open(path);
  std::ostringstream held;
  for (size_t i = 0; i < f.names().size(); ++i) {
    const Tensor t = f.get(f.names()[i]);
    held << (i ? ", " : "") << "'" << f.names()[i] << "' " << dtype_name(t.dtype()) << t.shape_str();
  }
  SC_CHECK(f.names().size() == 1 && f.contains(kLatentsTensorName), Errc::invalid_argument,
           "--latents " << path << ": expected " << expectation(expected, width, height) << "; the file holds "
                        << (f.names().empty() ? std::string("no tensors") : held.str()));
  const Tensor t = f.get(kLatentsTensorName);
  SC_CHECK(t.dtype() == DType::f32 || t.dtype() == DType::f16 || t.dtype() == DType::bf16, Errc::invalid_argument,
           "--latents " << path << ": tensor 'latents' is " << dtype_name(t.dtype()) << "; expected "
                        << expectation(expected, width, height));
  SC_CHECK(t.shape() == expected, Errc::shape_mismatch,
           "--latents " << path << ": tensor 'latents' has shape " << t.shape_str() << "; expected "
                        << expectation(expected, width, height));
  // The file's mapping goes away with `f`; the job keeps its own copy.
  return t.clone();
}

Tensor latents_row(const Tensor& latents, int64_t i) {
  SC_CHECK(latents.ndim() == 4 && i >= 0 && i < latents.size(0), Errc::invalid_argument,
           "latents row " << i << " of " << latents.shape_str());
  return latents.slice(0, i, i + 1).clone();
}

}  // namespace stagecraft
