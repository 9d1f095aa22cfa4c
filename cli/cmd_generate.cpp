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

#include "cli/args.hpp"
#include "cli/command.hpp"
#include "core/dump.hpp"
#include "core/error.hpp"
#include "core/request_check.hpp"
#include "stages/pipeline/latents_file.hpp"
#include "stages/pipeline/text_to_image.hpp"
#include "stages/post/image.hpp"

namespace fs = std::filesystem;

namespace {

using namespace stagecraft;

/// A flag's value as an int, saturated rather than wrapped, so that 4294967297 steps is
/// refused at the door instead of becoming 1.
int saturate_int(long long v) {
  return static_cast<int>(std::clamp<long long>(v, std::numeric_limits<int>::min(), std::numeric_limits<int>::max()));
}

// --model, else $STAGECRAFT_MODEL, else the shipped model in the source tree, else models/tiny-shapes here.
std::string default_model() {
  if (const char* env = std::getenv("STAGECRAFT_MODEL"); env && *env) return env;
  const fs::path shipped = fs::path(STAGECRAFT_SOURCE_DIR) / "models" / "tiny-shapes";
  if (fs::exists(shipped / "model_index.json")) return shipped.string();
  return "models/tiny-shapes";
}

int run_generate(const std::vector<std::string>& argv) {
  cli::Args args(argv,
                 {"--model", "--prompt", "--negative-prompt", "--seed", "--steps", "--guidance", "--scheduler",
                  "--width", "--height", "--device", "--dtype", "--out", "--resize", "--tile", "--tile-overlap",
                  "--latents", "--dump"},
                 {"--quiet"});
  SC_CHECK(args.positional().empty(), Errc::invalid_argument,
           "generate takes no positional arguments (got '" << args.positional()[0] << "'); use --prompt TEXT");
  const auto prompt = args.get("--prompt");
  SC_CHECK(prompt.has_value(), Errc::invalid_argument, "generate needs --prompt TEXT");
  const std::string out = args.get_or("--out", "out.png");
  {
    // Fail before minutes of compute, not after.
    const fs::path parent = fs::absolute(out).parent_path();
    SC_CHECK(fs::is_directory(parent), Errc::io, "--out " << out << ": folder " << parent.string() << " does not exist");
  }
  const std::string model = args.get_or("--model", default_model());
  const Device device = Device::parse(args.get_or("--device", "cpu"));
  const DType dtype = parse_dtype(args.get_or("--dtype", "f32"));

  GenerateOptions o;
  o.prompt = *prompt;
  o.negative_prompt = args.get_or("--negative-prompt", "");
  const long long seed = args.get_int("--seed", 0);
  SC_CHECK(seed >= 0, Errc::invalid_argument, "--seed must be a non-negative integer");
  o.seed = static_cast<uint64_t>(seed);
  o.steps = saturate_int(args.get_int("--steps", 0));
  o.guidance = static_cast<float>(args.get_double("--guidance", -1.0));
  o.scheduler = args.get_or("--scheduler", "");
  o.width = saturate_int(args.get_int("--width", 0));
  o.height = saturate_int(args.get_int("--height", 0));
  if (args.has("--tile")) {
    TilingOptions t;
    t.tile = static_cast<int>(args.get_int("--tile", t.tile));
    t.overlap = static_cast<int>(args.get_int("--tile-overlap", t.overlap));
    o.tiling = t;
  }

  {
    // The door every request passes (core/request_check.hpp), with the limits a pipeline
    // file has by default: refused here, before any weights load, naming the field.
    Request r;
    r.prompt = o.prompt;
    r.negative_prompt = o.negative_prompt;
    r.steps = o.steps;
    r.guidance = o.guidance;
    r.width = o.width;
    r.height = o.height;
    r.scheduler = o.scheduler;
    check_request(r, LimitsSpec{});
  }
  if (const auto latents = args.get("--latents")) {
    // Checked against the model's latent shape before any weights load (docs/numerics.md).
    o.initial_latents =
        read_latents_file(*latents, latent_geometry(model), 1, o.width, o.height);
  }
  if (const auto dir = args.get("--dump")) o.dump = std::make_shared<DumpWriter>(*dir);

  const auto t0 = std::chrono::steady_clock::now();
  const TextToImagePipeline pipe = TextToImagePipeline::load(model, device, dtype);
  const double load_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  const GenerateResult r = pipe.generate(o);

  Tensor rgb = r.image.select(0, 0);
  if (const auto size = args.get("--resize")) {
    int w = 0, h = 0;
    SC_CHECK(std::sscanf(size->c_str(), "%dx%d", &w, &h) == 2 && w > 0 && h > 0, Errc::invalid_argument,
             "--resize wants WxH, e.g. 256x256, got '" << *size << "'");
    rgb = resize_bilinear(rgb, h, w);
  }
  write_png(out, rgb);
  if (o.dump) {
    o.dump->set_manifest({{"pipeline", "sequential"},
                          {"model", model},
                          {"device", device.str()},
                          {"dtype", dtype_name(dtype)},
                          {"latents_file", args.get_or("--latents", "")}});
    o.dump->flush();
    if (!args.has("--quiet")) std::cout << "wrote dump " << o.dump->dir() << "\n";
  }

  if (!args.has("--quiet")) {
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
