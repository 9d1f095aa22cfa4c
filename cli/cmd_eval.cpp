// `stagecraft eval`: how well a model follows shapes captions, judged without a model.
// Generates one image per held-out caption (caption i gets seed S + i), scores it with
// the pixel-statistics scorer of stages/eval (the port of tools/score_shapes.py), and
// prints per-caption verdicts, colour / shape adherence and images per second.
// It is a measurement: low scores still exit 0; only errors (bad caption, model) fail.
//
// --batch 1 (the default) runs TextToImagePipeline::generate, so any line can be
// reproduced with `stagecraft generate --prompt CAPTION --seed S+i`; --batch B > 1 steps
// B captions through the denoiser together (faster; the same images, as the denoiser is
// batch invariant).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "cli/cli11.hpp"
#include "cli/command.hpp"
#include "core/error.hpp"
#include "kernels/ops.hpp"
#include "stages/eval/shape_score.hpp"
#include "stages/pipeline/text_to_image.hpp"
#include "stages/post/image.hpp"

namespace fs = std::filesystem;

namespace {

using namespace stagecraft;
using Clock = std::chrono::steady_clock;

std::string default_model() {
  if (const char* env = std::getenv("STAGECRAFT_MODEL"); env && *env) return env;
  const fs::path shipped = fs::path(STAGECRAFT_SOURCE_DIR) / "models" / "tiny-shapes";
  if (fs::exists(shipped / "model_index.json")) return shipped.string();
  return "models/tiny-shapes";
}

std::string default_captions() {
  const fs::path shipped = fs::path(STAGECRAFT_SOURCE_DIR) / "tools" / "eval_captions.txt";
  if (fs::exists(shipped)) return shipped.string();
  return "tools/eval_captions.txt";
}

struct Item {
  std::string caption;
  ShapesCaption want;
  uint64_t seed = 0;
};

// Non-empty, non-comment lines; every caption is parsed up front so a bad line fails
// before any minutes are spent generating.
std::vector<Item> read_captions(const std::string& path, size_t limit, uint64_t seed) {
  std::ifstream f(path);
  SC_CHECK(f.good(), Errc::not_found, "cannot read captions file " << path << "; pass --captions FILE");
  std::vector<Item> items;
  std::string line;
  for (int lineno = 1; std::getline(f, line); ++lineno) {
    const auto b = line.find_first_not_of(" \t\r");
    if (b == std::string::npos || line[b] == '#') continue;
    const auto e = line.find_last_not_of(" \t\r");
    Item it;
    it.caption = line.substr(b, e - b + 1);
    try {
      it.want = parse_shapes_caption(it.caption);
    } catch (const Error& err) {
      SC_FAIL(Errc::invalid_argument, path << ":" << lineno << ": " << err.what());
    }
    if (limit && items.size() == limit) break;
    it.seed = seed + items.size();
    items.push_back(std::move(it));
  }
  SC_CHECK(!items.empty(), Errc::invalid_argument, path << " holds no captions");
  return items;
}

std::string file_name_for(size_t i, const std::string& caption) {
  std::ostringstream os;
  os << std::setw(3) << std::setfill('0') << i << "_";
  for (char c : caption) os << (std::isalnum(static_cast<unsigned char>(c)) ? c : '_');
  os << ".png";
  return os.str();
}

// Verdict of one part: "red" when right, "red(want blue)" when wrong.
std::string part(const std::optional<std::string>& got, const std::string& want) {
  const std::string g = got ? *got : std::string("none");
  return g == want ? g : g + "(want " + want + ")";
}

std::string pct(double f) {
  std::ostringstream os;
  os << std::fixed << std::setprecision(1) << 100.0 * f << "%";
  return os.str();
}

// --batch B > 1: B captions share every transformer call, as the engine's step batching does.
std::vector<Tensor> generate_batch(const TextToImagePipeline& pipe, const GenerateOptions& opt,
                                   const std::vector<Item>& items, size_t begin, size_t end) {
  const bool cfg = opt.guidance > 1.0f;
  PromptEmbeds uncond;
  if (cfg) uncond = pipe.encode_prompt(opt.negative_prompt);
  std::vector<PromptEmbeds> cond;
  std::vector<Tensor> latents;
  std::vector<std::unique_ptr<Scheduler>> scheds;
  for (size_t i = begin; i < end; ++i) {
    cond.push_back(pipe.encode_prompt(items[i].caption));
    latents.push_back(pipe.prepare_latents(items[i].seed, opt.width, opt.height));
    scheds.push_back(pipe.make_job_scheduler(opt.scheduler, opt.steps, opt.width, opt.height));
  }
  for (int step = 0; step < scheds[0]->num_steps(); ++step) {
    std::vector<DenoiseJob> jobs(end - begin);
    for (size_t j = 0; j < jobs.size(); ++j) {
      jobs[j].latents = &latents[j];
      jobs[j].cond = &cond[j];
      jobs[j].uncond = cfg ? &uncond : nullptr;
      jobs[j].guidance = opt.guidance;
      jobs[j].scheduler = scheds[j].get();
      jobs[j].step = step;
    }
    pipe.denoise_step(jobs);
  }
  const Tensor u8 = TextToImagePipeline::to_image(pipe.decode(ops::cat(latents, 0)));
  std::vector<Tensor> images;
  for (int64_t j = 0; j < u8.size(0); ++j) images.push_back(u8.select(0, j));
  return images;
}

int run_eval(const std::vector<std::string>& argv) {
  CLI::App app{"Generate the held-out captions and score colour, shape and position adherence from the pixels.",
               "stagecraft eval"};
  std::string model = default_model(), captions = default_captions(), scheduler, device_name = "cpu",
              dtype_arg = "f32", out_dir_arg, json_arg;
  int64_t n = 0, seed = 0, batch = 1, steps = 0;
  double guidance = -1.0;
  bool quiet = false;
  app.add_option("--model", model, "a diffusers-layout model folder")->capture_default_str()->envname("STAGECRAFT_MODEL");
  app.add_option("--captions", captions, "captions file")->capture_default_str();
  app.add_option("--n", n, "captions to score (0 = every caption)")->capture_default_str()->check(CLI::NonNegativeNumber);
  app.add_option("--seed", seed, "seed of the first image")->capture_default_str()->check(CLI::NonNegativeNumber);
  app.add_option("--batch", batch, "images generated together")->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--steps", steps, "denoising steps (default: the model's)");
  app.add_option("--guidance", guidance, "guidance scale (default: the model's)");
  app.add_option("--scheduler", scheduler, "flow_match_euler, ddim or dpm_2m (default: the model's)");
  app.add_option("--device", device_name, "cpu or cuda:N")->capture_default_str();
  app.add_option("--dtype", dtype_arg, "f32, f16 or bf16")->capture_default_str();
  app.add_option("--out-dir", out_dir_arg, "also write every image here");
  app.add_option("--json", json_arg, "write the scores as JSON");
  app.add_flag("--quiet", quiet, "no per-image lines");
  if (auto rc = cli::parse(app, argv)) return *rc;
  const Device device = Device::parse(device_name);
  const DType dtype = parse_dtype(dtype_arg);
  const auto items = read_captions(captions, static_cast<size_t>(n), static_cast<uint64_t>(seed));
  const std::optional<std::string> out_dir =
      out_dir_arg.empty() ? std::nullopt : std::optional<std::string>(out_dir_arg);
  if (out_dir) fs::create_directories(*out_dir);

  const auto t_load = Clock::now();
  const TextToImagePipeline pipe = TextToImagePipeline::load(model, device, dtype);
  const double load_s = std::chrono::duration<double>(Clock::now() - t_load).count();
  GenerateOptions base;
  base.steps = static_cast<int>(std::clamp<int64_t>(steps, 0, 100000));
  base.guidance = static_cast<float>(guidance);
  base.scheduler = scheduler;
  const GenerateOptions opt = pipe.resolve(base);

  std::cout << "eval " << model << ": " << items.size() << " captions from " << captions << ", seeds " << seed
            << ".." << seed + static_cast<long long>(items.size()) - 1 << ", steps " << opt.steps << ", guidance "
            << opt.guidance << ", scheduler " << opt.scheduler << ", " << opt.width << "x" << opt.height << ", "
            << device.str() << " " << dtype_name(dtype) << ", batch " << batch << " (model loaded in "
            << std::fixed << std::setprecision(2) << load_s << " s)\n";

  std::vector<ShapeScore> scores;
  nlohmann::json results = nlohmann::json::array();
  double gen_s = 0;
  for (size_t begin = 0; begin < items.size(); begin += batch) {
    const size_t end = std::min(items.size(), begin + static_cast<size_t>(batch));
    const auto t0 = Clock::now();
    std::vector<Tensor> images;
    if (batch == 1) {
      GenerateOptions o = opt;
      o.prompt = items[begin].caption;
      o.seed = items[begin].seed;
      images.push_back(pipe.generate(o).image.select(0, 0));
    } else {
      images = generate_batch(pipe, opt, items, begin, end);
    }
    gen_s += std::chrono::duration<double>(Clock::now() - t0).count();

    for (size_t i = begin; i < end; ++i) {
      const Tensor& img = images[i - begin];
      const ShapeScore s = score_shapes_image(img, items[i].want);
      scores.push_back(s);
      if (out_dir) write_png((fs::path(*out_dir) / file_name_for(i, items[i].caption)).string(), img);
      const auto& w = items[i].want;
      if (!quiet) {
        std::cout << "[" << std::setw(3) << i + 1 << "/" << items.size() << "] " << (s.all_ok() ? "ok  " : "FAIL")
                  << " seed=" << items[i].seed << " colour=" << part(s.found.colour, w.colour);
        if (w.background) std::cout << " bg=" << part(s.found.background, *w.background);
        std::cout << " shape=" << part(s.found.shape, w.shape);
        if (s.found.shape) std::cout << "(fill " << std::setprecision(2) << s.found.fill << ")";
        if (w.position) std::cout << " pos=" << part(s.found.position, *w.position);
        std::cout << "  \"" << items[i].caption << "\"\n";
      }
      nlohmann::json r = {{"caption", items[i].caption}, {"seed", items[i].seed}, {"colour_ok", s.colour_ok},
                          {"shape_ok", s.shape_ok},      {"all_ok", s.all_ok()},
                          {"found", {{"background", s.found.background}, {"fill", s.found.fill},
                                     {"area", s.found.area}, {"centroid", {s.found.cx, s.found.cy}}}}};
      if (s.found.colour) {
        r["found"]["colour"] = *s.found.colour;
        r["found"]["shape"] = *s.found.shape;
        r["found"]["position"] = *s.found.position;
      }
      if (s.background_ok) r["background_ok"] = *s.background_ok;
      if (s.position_ok) r["position_ok"] = *s.position_ok;
      results.push_back(r);
    }
  }

  const ShapeScoreSummary m = summarize_shape_scores(scores);
  const auto count = [&](auto pred) { return std::count_if(scores.begin(), scores.end(), pred); };
  std::cout << std::fixed << std::setprecision(1)
            << "colour adherence " << std::setw(6) << pct(m.colour_adherence) << " ("
            << count([](const ShapeScore& s) { return s.colour_adherent(); }) << "/" << m.n
            << "; shape colour " << pct(m.colour) << ", background " << pct(m.background) << " of " << m.background_n
            << ")\n"
            << "shape adherence  " << std::setw(6) << pct(m.shape_adherence) << " ("
            << count([](const ShapeScore& s) { return s.shape_ok; }) << "/" << m.n << ")\n"
            << "position         " << std::setw(6) << pct(m.position) << " (of " << m.position_n << ")\n"
            << "overall          " << std::setw(6) << pct(m.overall) << " ("
            << count([](const ShapeScore& s) { return s.all_ok(); }) << "/" << m.n << " with every part right)\n"
            << std::setprecision(3) << "throughput       " << m.n / gen_s << " images/s (" << std::setprecision(1)
            << gen_s << " s generating " << m.n << " images; scoring and PNG writing not counted)\n";
  if (!json_arg.empty()) {
    const std::string* json_path = &json_arg;
    const nlohmann::json summary = {
        {"model", model}, {"n", m.n}, {"steps", opt.steps}, {"guidance", opt.guidance},
        {"scheduler", opt.scheduler}, {"seed", seed}, {"batch", batch}, {"device", device.str()},
        {"colour_adherence", m.colour_adherence}, {"shape_adherence", m.shape_adherence}, {"overall", m.overall},
        {"colour", m.colour}, {"background", m.background}, {"shape", m.shape}, {"position", m.position},
        {"images_per_s", m.n / gen_s}};
    std::ofstream(*json_path) << nlohmann::json({{"summary", summary}, {"results", results}}).dump(1) << "\n";
  }
  return 0;
}

}  // namespace

STAGECRAFT_COMMAND(eval,
                   "[--model DIR] [--captions FILE] [--n N] [--seed S] [--steps N] [--guidance G] "
                   "[--scheduler NAME] [--batch B] [--out-dir DIR] [--json FILE] [--device cpu|cuda:0] "
                   "[--dtype f32|f16|bf16] [--quiet]",
                   "score how well the model follows shapes captions (colour, shape) with a model-free pixel scorer",
                   run_eval);
