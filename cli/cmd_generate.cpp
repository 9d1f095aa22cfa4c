// `stagecraft generate`: one image through the sequential pipeline (no actors), the
// reference the engine is checked against. Prints the per-stage times.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <limits>
#include <iomanip>
#include <iostream>

#include "cli/cli11.hpp"
#include "cli/command.hpp"
#include "cli/command_support.hpp"
#include "core/dump.hpp"
#include "core/error.hpp"
#include "core/request_check.hpp"
#include "stages/pipeline/latents_file.hpp"
#include "stages/pipeline/text_to_image.hpp"
#include "stages/post/image.hpp"

namespace fs = std::filesystem;

namespace {

using namespace stagecraft;

// --model, else $STAGECRAFT_MODEL, else the shipped model in the source tree, else models/tiny-shapes here.
std::string default_model() {
  if (const char* env = std::getenv("STAGECRAFT_MODEL"); env && *env) return env;
  const fs::path shipped = fs::path(STAGECRAFT_SOURCE_DIR) / "models" / "tiny-shapes";
  if (fs::exists(shipped / "model_index.json")) return shipped.string();
  return "models/tiny-shapes";
}

int run_generate(const std::vector<std::string>& argv) {
  CLI::App app{"Generate one image with the sequential pipeline (no actors): the reference the engine is checked "
               "against. Prints per-stage times.",
               "stagecraft generate"};
  cli::RequestFlags flags;
  std::string model = default_model(), device_name = "cpu", dtype_name_arg = "f32", out = "out.png", resize,
              latents_file, dump_dir;
  int64_t tile = 0, tile_overlap = 0;
  bool quiet = false;
  flags.add_to(app, "the model's");
  app.add_option("--model", model, "a diffusers-layout model folder")->capture_default_str()->envname("STAGECRAFT_MODEL");
  app.add_option("--device", device_name, "cpu or cuda:N")->capture_default_str();
  app.add_option("--dtype", dtype_name_arg, "f32, f16 or bf16")->capture_default_str();
  app.add_option("--out", out, "PNG to write")->capture_default_str();
  app.add_option("--resize", resize, "resize the image to WxH before writing it");
  auto* tile_opt = app.add_option("--tile", tile, "decode in tiles of this many pixels")->check(CLI::PositiveNumber);
  app.add_option("--tile-overlap", tile_overlap, "overlap of decode tiles, in pixels")->needs(tile_opt);
  app.add_option("--latents", latents_file, "initial noise from a file (docs/numerics.md)");
  app.add_option("--dump", dump_dir, "write every stage's tensors to this folder (docs/numerics.md)");
  app.add_flag("--quiet", quiet, "print nothing on success");
  if (auto rc = cli::parse(app, argv)) return *rc;
  cli::require_output_folder("--out", out);
  const Device device = Device::parse(device_name);
  const DType dtype = parse_dtype(dtype_name_arg);

  // The door every request passes (core/request_check.hpp), with the limits a pipeline
  // file has by default: refused here, before any weights load, naming the field.
  const Request request = flags.request();
  check_request(request, LimitsSpec{});
  GenerateOptions o = options_of(request);
  if (app.count("--tile")) {
    TilingOptions t;
    t.tile = static_cast<int>(tile);
    if (app.count("--tile-overlap")) t.overlap = static_cast<int>(tile_overlap);
    o.tiling = t;
  }
  if (!latents_file.empty()) {
    // Checked against the model's latent shape before any weights load (docs/numerics.md).
    o.initial_latents = read_latents_file(latents_file, latent_geometry(model), 1, o.width, o.height);
  }
  if (!dump_dir.empty()) o.dump = std::make_shared<DumpWriter>(dump_dir);

  const auto t0 = std::chrono::steady_clock::now();
  const TextToImagePipeline pipe = TextToImagePipeline::load(model, device, dtype);
  const double load_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  const GenerateResult r = pipe.generate(o);

  Tensor rgb = r.image.select(0, 0);
  if (!resize.empty()) {
    int w = 0, h = 0;
    SC_CHECK(std::sscanf(resize.c_str(), "%dx%d", &w, &h) == 2 && w > 0 && h > 0, Errc::invalid_argument,
             "--resize wants WxH, e.g. 256x256, got '" << resize << "'");
    rgb = resize_bilinear(rgb, h, w);
  }
  write_png(out, rgb);
  if (o.dump) {
    o.dump->set_manifest({{"pipeline", "sequential"},
                          {"model", model},
                          {"device", device.str()},
                          {"dtype", dtype_name(dtype)},
                          {"latents_file", latents_file}});
    o.dump->flush();
    if (!quiet) std::cout << "wrote dump " << o.dump->dir() << "\n";
  }

  if (!quiet) {
    const auto& g = r.resolved;
    std::cout << "wrote " << out << " (" << rgb.size(1) << "x" << rgb.size(0) << ") prompt=\"" << g.prompt
              << "\" seed=" << g.seed << " steps=" << g.steps << " guidance=" << g.guidance
              << " scheduler=" << g.scheduler << " device=" << device.str() << " dtype=" << dtype_name(dtype) << "\n"
              << std::fixed << std::setprecision(1) << "  load     " << std::setw(9) << load_ms << " ms\n"
              << "  encode   " << std::setw(9) << r.times.encode_ms << " ms\n"
              << "  denoise  " << std::setw(9) << r.times.denoise_ms << " ms ("
              << r.times.denoise_ms / std::max(1, g.steps) << " ms/step)\n"
              << "  decode   " << std::setw(9) << r.times.decode_ms << " ms\n"
              << "  post     " << std::setw(9) << r.times.post_ms << " ms\n"
              << "  total    " << std::setw(9) << r.times.total_ms << " ms\n";
  }
  return 0;
}

}  // namespace

STAGECRAFT_COMMAND(generate,
                   "[--model DIR] --prompt TEXT [--negative-prompt TEXT] [--seed S] [--steps N] [--guidance G] "
                   "[--scheduler flow_match_euler|ddim|dpm_2m] [--width W --height H] [--device cpu|cuda:0] "
                   "[--dtype f32|f16|bf16] [--resize WxH] [--tile PX --tile-overlap PX] [--latents noise.safetensors] "
                   "[--dump DIR] --out x.png",
                   "generate one image with the sequential pipeline (no actors) and print per-stage times",
                   run_generate);
