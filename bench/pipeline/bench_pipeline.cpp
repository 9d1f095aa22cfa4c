// bench_pipeline: Stagecraft's sequential text-to-image pipeline against the PyTorch
// reference (tools/reference.py generate --bench) on the same weights, prompt, noise,
// steps, guidance and scheduler, in one run, with the same number of CPU threads.
// Prints the median milliseconds of each stage (encode, denoise, decode, post, total)
// for both, and the ratio Stagecraft / PyTorch against the target "<= 1.0x".
//
// The two sides alternate in rounds (Stagecraft's runs, then a reference process with
// as many reps) so that load from other processes on a shared machine falls on both.
// Stagecraft's medians are over all its timed runs after a warm-up; the reference has
// no warm-up of its own, so its first rep of each round is cold and the median over
// >= 3 reps discards it.
//
//   bench_pipeline --model models/tiny-shapes --runs 5 --rounds 2
//   bench_pipeline --model /tmp/tiny --steps 20 --guidance 4.5 --no-reference
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <unistd.h>

#include <nlohmann/json.hpp>

#include "core/error.hpp"
#include "core/safetensors.hpp"
#include "stages/pipeline/noise.hpp"
#include "stages/pipeline/text_to_image.hpp"

extern "C" void openblas_set_num_threads(int);

namespace fs = std::filesystem;
using namespace stagecraft;

namespace {

struct Options {
  std::string model = std::string(STAGECRAFT_SOURCE_DIR) + "/models/tiny-shapes";
  std::string prompt = "a red circle in the center on a blue background";
  std::string negative_prompt;
  std::string scheduler;  // "": model default
  int steps = 0;          // 0: model default
  double guidance = -1;   // < 0: model default
  uint64_t seed = 0;
  int runs = 5, warmup = 1, rounds = 2, threads = 2;
  bool reference = true;
};

void usage() {
  std::fprintf(stderr,
               "usage: bench_pipeline [--model DIR] [--prompt TEXT] [--negative-prompt TEXT] [--steps N] "
               "[--guidance G] [--scheduler NAME] [--seed S] [--runs N] [--warmup N] [--rounds R] [--threads T] "
               "[--no-reference]\n");
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        usage();
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--model") o.model = value();
    else if (a == "--prompt") o.prompt = value();
    else if (a == "--negative-prompt") o.negative_prompt = value();
    else if (a == "--scheduler") o.scheduler = value();
    else if (a == "--steps") o.steps = std::stoi(value());
    else if (a == "--guidance") o.guidance = std::stod(value());
    else if (a == "--seed") o.seed = std::stoull(value());
    else if (a == "--runs") o.runs = std::stoi(value());
    else if (a == "--warmup") o.warmup = std::stoi(value());
    else if (a == "--rounds") o.rounds = std::stoi(value());
    else if (a == "--threads") o.threads = std::stoi(value());
    else if (a == "--no-reference") o.reference = false;
    else {
      usage();
      std::exit(2);
    }
  }
  if (o.runs < 1 || o.rounds < 1 || o.warmup < 0 || o.threads < 1) {
    usage();
    std::exit(2);
  }
  return o;
}

double median(std::vector<double> v) {
  if (v.empty()) return NAN;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

std::string shell_quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

std::string slurp(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

struct TempDir {
  fs::path path;
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "stagecraft-bench-XXXXXX").string();
    if (!mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
    path = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

const char* kStages[] = {"encode", "denoise", "decode", "post", "total"};
// reference.py's names for the same intervals.
const char* kRefKeys[] = {"text_encoder", "denoise", "vae_decoder", "postprocess", "total"};

double stage_ms(const StageTimes& t, int k) {
  const double v[] = {t.encode_ms, t.denoise_ms, t.decode_ms, t.post_ms, t.total_ms};
  return v[k];
}

}  // namespace

int main(int argc, char** argv) {
  const Options opt = parse(argc, argv);
  // Both sides get the same threads: our pool reads STAGECRAFT_CPU_THREADS on first use,
  // OpenBLAS is told directly (it read its environment when the library loaded), and the
  // reference gets --threads (torch.set_num_threads) plus the OpenMP/BLAS variables.
  const std::string threads = std::to_string(opt.threads);
  setenv("STAGECRAFT_CPU_THREADS", threads.c_str(), 1);
  setenv("OMP_NUM_THREADS", threads.c_str(), 1);
  setenv("OPENBLAS_NUM_THREADS", threads.c_str(), 1);
  setenv("MKL_NUM_THREADS", threads.c_str(), 1);
  // OpenMP threads that spin while waiting collapse on a shared, oversubscribed CPU (the
  // tiny model's reference went from 0.26 s to 3.6 s); our pool sleeps on a condition
  // variable, so the reference gets passive waiting too unless the caller chose otherwise.
  setenv("OMP_WAIT_POLICY", "PASSIVE", 0);
  openblas_set_num_threads(opt.threads);

  try {
    const TextToImagePipeline pipe = TextToImagePipeline::load(opt.model, Device::cpu(), DType::f32);
    GenerateOptions g;
    g.prompt = opt.prompt;
    g.negative_prompt = opt.negative_prompt;
    g.seed = opt.seed;
    g.steps = opt.steps;
    g.guidance = static_cast<float>(opt.guidance);
    g.scheduler = opt.scheduler;
    g = pipe.resolve(g);
    // The same initial noise for both: ours as drawn, handed to the reference as a file.
    const Tensor noise = pipe.prepare_latents(g.seed, g.width, g.height);

    char load[64] = "?";
    if (FILE* f = std::fopen("/proc/loadavg", "r")) {
      if (!std::fgets(load, sizeof load, f)) std::strcpy(load, "?");
      std::fclose(f);
      load[std::strcspn(load, "\n")] = 0;
    }
    std::printf("bench_pipeline: %s\n  prompt \"%s\", %dx%d, steps %d, guidance %g, scheduler %s, seed %llu, f32, CPU\n"
                "  threads: %d for both (Stagecraft pool + OpenBLAS; PyTorch torch.set_num_threads, OMP_WAIT_POLICY=%s)\n"
                "  Stagecraft: %d warm-up + %d timed runs per round; PyTorch: %d reps per round; %d round(s)\n"
                "  load average at start: %s\n",
                opt.model.c_str(), g.prompt.c_str(), g.width, g.height, g.steps, g.guidance, g.scheduler.c_str(),
                static_cast<unsigned long long>(g.seed), opt.threads, std::getenv("OMP_WAIT_POLICY"), opt.warmup, opt.runs, opt.runs, opt.rounds, load);
    std::fflush(stdout);

    TempDir tmp;
    const std::string lat_path = (tmp.path / "lat.safetensors").string();
    const std::string img_path = (tmp.path / "img.safetensors").string();
    const std::string log_path = (tmp.path / "ref.log").string();
    save_safetensors(lat_path, {{"latents", noise}});

    std::vector<std::vector<double>> ours(5), theirs(5);
    Tensor our_image;
    for (int round = 0; round < opt.rounds; ++round) {
      for (int i = 0; i < (round == 0 ? opt.warmup : 0) + opt.runs; ++i) {
        const GenerateResult r = pipe.generate(g);
        if (round == 0 && i < opt.warmup) continue;
        for (int k = 0; k < 5; ++k) ours[k].push_back(stage_ms(r.times, k));
        our_image = r.image;
      }
      if (!opt.reference) continue;
      char gbuf[32];
      std::snprintf(gbuf, sizeof gbuf, "%.9g", g.guidance);
      const std::string cmd = "/usr/bin/python3 " + shell_quote(std::string(STAGECRAFT_SOURCE_DIR) + "/tools/reference.py") +
                              " --threads " + threads + " generate --model " + shell_quote(opt.model) + " --prompt " +
                              shell_quote(g.prompt) + " --negative-prompt " + shell_quote(g.negative_prompt) +
                              " --steps " + std::to_string(g.steps) + " --guidance " + gbuf + " --scheduler " +
                              g.scheduler + " --latents " + lat_path + " --out " + img_path + " --bench --bench-reps " +
                              std::to_string(opt.runs) + " > " + log_path + " 2>&1";
      if (std::system(cmd.c_str()) != 0) {
        std::fprintf(stderr, "error: the PyTorch reference failed:\n  %s\n%s\n(use --no-reference to time Stagecraft alone)\n",
                     cmd.c_str(), slurp(log_path).c_str());
        return 1;
      }
      std::string out = slurp(log_path), last;
      std::istringstream lines(out);
      for (std::string l; std::getline(lines, l);)
        if (!l.empty()) last = l;
      const auto j = nlohmann::json::parse(last);
      SC_CHECK(j.value("threads", 0) == opt.threads, Errc::internal,
               "the reference ran with " << j.value("threads", 0) << " threads, not " << opt.threads);
      for (int k = 0; k < 5; ++k) theirs[k].push_back(j.at(kRefKeys[k]).get<double>());
    }

    std::printf("\n%-9s %14s %14s %10s  %s\n", "stage", "Stagecraft ms", "PyTorch ms", "ratio", "target <= 1.0x");
    bool all_pass = true;
    for (int k = 0; k < 5; ++k) {
      const double a = median(ours[k]);
      if (!opt.reference) {
        std::printf("%-9s %14.2f %14s\n", kStages[k], a, "-");
        continue;
      }
      const double b = median(theirs[k]), ratio = a / b;
      const bool pass = ratio <= 1.0;
      all_pass &= pass;
      std::printf("%-9s %14.2f %14.2f %9.2fx  %s\n", kStages[k], a, b, ratio, pass ? "PASS" : "MISS");
    }
    if (opt.reference) {
      // Same work on both sides: the images must agree up to uint8 rounding.
      const auto ref = SafetensorsFile::open(img_path);
      const auto mine = our_image.to_vector(), other = ref.get("image_u8").to_vector();
      float worst = mine.size() == other.size() ? 0.0f : INFINITY;
      for (size_t i = 0; i < mine.size() && i < other.size(); ++i) worst = std::max(worst, std::abs(mine[i] - other[i]));
      std::printf("outputs: max |Stagecraft - PyTorch| = %g of 255 over %zu uint8 values\n", worst, mine.size());
      std::printf("end to end: Stagecraft/PyTorch = %.2fx -> %s\n", median(ours[4]) / median(theirs[4]),
                  median(ours[4]) <= median(theirs[4]) ? "PASS" : "MISS");
      std::printf("every stage within target: %s\n", all_pass ? "yes" : "no");
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
