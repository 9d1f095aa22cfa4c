// libFuzzer target: the readers of a model folder's JSON files. The first byte picks
// the file the rest of the input replaces in a copy of the shipped model's configs
// (without weights, so a config that passes its checks stops at the first missing
// parameter):
//   0 vae/config.json           VaeDecoder::load, latent_geometry
//   1 transformer/config.json   PixArtTransformer::load, latent_geometry, pipeline defaults
//   2 text_encoder/config.json  ClipTextEncoder::load
//   3 stagecraft.json           read_model_defaults, latent_geometry, pipeline defaults
//   4 model_index.json          ModelIndex::open, latent_geometry
//   5 transformer/diffusion_pytorch_model.safetensors.index.json   ModelComponent::open
// Only stagecraft::Error may come out: a raw nlohmann exception, UB or a crash is a finding.
#include <cstdint>
#include <string>

#include "core/error.hpp"
#include "core/pipeline_spec.hpp"
#include "core/request_defaults.hpp"
#include "stages/dit/pixart.hpp"
#include "stages/model/model_index.hpp"
#include "stages/model/weights.hpp"
#include "stages/pipeline/latents_file.hpp"
#include "stages/text/clip_text_encoder.hpp"
#include "stages/vae/vae_decoder.hpp"
#include "tests/fuzz/fuzz_support.hpp"

using namespace stagecraft;
namespace fs = std::filesystem;

namespace {

const char* const kFiles[] = {"vae/config.json", "transformer/config.json", "text_encoder/config.json",
                              "stagecraft.json", "model_index.json",
                              "transformer/diffusion_pytorch_model.safetensors.index.json"};

// A model folder holding the shipped model's configs and no weights, made once; each
// input replaces one file, which is put back afterwards (cheaper than a fresh copy).
const fs::path& model_dir() {
  static const fs::path dir = [] {
    const fs::path shipped = STAGECRAFT_SOURCE_DIR "/models/tiny-shapes";
    const fs::path d = fuzz::scratch() / "model";
    for (const char* f : {"model_index.json", "stagecraft.json", "vae/config.json", "transformer/config.json",
                          "text_encoder/config.json", "scheduler/scheduler_config.json"}) {
      fs::create_directories((d / f).parent_path());
      fs::copy_file(shipped / f, d / f, fs::copy_options::overwrite_existing);
    }
    return d;
  }();
  return dir;
}

// Puts the shipped file back (or removes the index, which the shipped model lacks).
void restore(const fs::path& dir, int which) {
  const fs::path shipped = STAGECRAFT_SOURCE_DIR "/models/tiny-shapes";
  if (which == 5) fs::remove(dir / kFiles[which]);
  else fs::copy_file(shipped / kFiles[which], dir / kFiles[which], fs::copy_options::overwrite_existing);
}

template <typename F>
void refused_or_ok(F&& f) {
  try {
    f();
  } catch (const Error&) {
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const int which = data[0] % 6;
  const fs::path& dir = model_dir();
  fuzz::write_file(dir / kFiles[which], fuzz::as_view(data + 1, size - 1));
  const std::string d = dir.string();
  switch (which) {
    case 0:
      refused_or_ok([&] { VaeDecoder::load(d + "/vae", DType::f32, Device::cpu()); });
      refused_or_ok([&] { latent_geometry(d); });
      break;
    case 1:
      refused_or_ok([&] { PixArtTransformer::load(d + "/transformer", DType::f32, Device::cpu()); });
      refused_or_ok([&] { latent_geometry(d); });
      break;
    case 2: refused_or_ok([&] { ClipTextEncoder::load(d + "/text_encoder", DType::f32, Device::cpu()); }); break;
    case 3:
      refused_or_ok([&] { read_model_defaults(d); });
      refused_or_ok([&] { latent_geometry(d); });
      break;
    case 4:
      refused_or_ok([&] { ModelIndex::open(d).component_dir("vae"); });
      refused_or_ok([&] { latent_geometry(d); });
      break;
    case 5: refused_or_ok([&] { ModelComponent::open(d + "/transformer"); }); break;
  }
  if (which == 1 || which == 3 || which == 0) {
    // The pipeline parser reads the same files for its defaults.
    refused_or_ok([&] {
      const PipelineSpec s = parse_pipeline_spec("model: model\nstages:\n  - {name: a, type: sleep}\n", "fuzz.yaml",
                                                 fuzz::scratch().string());
      (void)describe_pipeline(s);
    });
  }
  restore(dir, which);
  return 0;
}
