// Latents files: see latents_file.hpp.
#include "stages/pipeline/latents_file.hpp"

#include <filesystem>
#include <sstream>

#include "core/error.hpp"
#include "core/request_defaults.hpp"
#include "core/safetensors.hpp"
#include "stages/dit/pixart.hpp"
#include "stages/model/config_value.hpp"
#include "stages/model/model_index.hpp"
#include "stages/model/weights.hpp"
#include "stages/vae/vae_decoder.hpp"

namespace fs = std::filesystem;

namespace stagecraft {
namespace {

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
  const std::string vae_path = (fs::path(index.component_dir("vae")) / "config.json").string();
  const std::string dit_path = (fs::path(index.component_dir("transformer")) / "config.json").string();
  const nlohmann::json vae = read_json_file(vae_path);
  const nlohmann::json dit = read_json_file(dit_path);
  // The same checked readers as VaeDecoder::load and PixArtTransformer::load, so a value
  // they refuse is refused here too, naming the file and key, before any shift or product.
  LatentGeometry g;
  g.channels = cfg_int(ConfigFile{vae, vae_path}, "latent_channels", 4, 1, 4096);
  g.scale = 1 << (vae_block_out_channels(ConfigFile{vae, vae_path}).size() - 1);
  const int native = cfg_int(ConfigFile{dit, dit_path}, "sample_size", 32, 1, kMaxPixArtSampleSize) * g.scale;
  g.default_width = g.default_height = native;
  // stagecraft.json defaults pass the pipeline file's checks (core/request_defaults.hpp).
  const nlohmann::json d = read_model_defaults(model_dir);
  g.default_width = d.contains("width") ? d["width"].get<int>() : native;
  g.default_height = d.contains("height") ? d["height"].get<int>() : native;
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
