// bench_realwidth (issue 13 item 1): Stagecraft against PyTorch eager and ONNX Runtime at real
// widths with random weights, as a new user would try it - the PixArt-alpha transformer widths
// (1152 hidden, 16 heads x 72, 2 layers, fed by a 768-wide CLIP text encoder) and the Stable
// Diffusion VAE decoder (128/256/512/512), one 256x256 image (--size 512 for 512x512), 20 steps,
// guidance 4.5, the same threads for all three, one after another.
//
// Per stage - one transformer call at the classifier-free-guidance batch of 2, one VAE decode,
// and the whole pipeline (text, 20 steps, decode, uint8) - it prints the median of --runs timed
// runs per round (after --warmup untimed ones; none for the pipeline when the two stages ran
// before it in the same process), over --rounds rounds in which the sides take turns going first, of:
//   Stagecraft    in this process: PixArtTransformer::forward with the batch denoise_step builds,
//                 VaeDecoder::decode, TextToImagePipeline::generate;
//   PyTorch       tools/reference.py bench-stages (a /usr/bin/python3 subprocess, same inputs);
//   ONNX Runtime  tools/ort_bench.js with onnxruntime-node on models tools/export_onnx.py exported
//                 from the same reference modules (a node subprocess, same inputs).
// Then each stage's GFLOP (transformer: linear layers and attention products; VAE: its
// convolutions counted as direct convolution; pipeline: 20 calls + decode + text encoder), the
// achieved GFLOP/s and its share of an OpenBLAS cblas_sgemm rate (2048^3) measured in the same
// run, each column's ratio to ONNX Runtime, each stage's peak RSS (VmHWM, reset before the stage
// through /proc/self/clear_refs, in each side's own process), and the max abs difference of
// Stagecraft's and ONNX Runtime's outputs from PyTorch's, against the real-width parity tests'
// tolerance (1e-3, tests/stages/test_pixart.cpp and test_vae.cpp).
//
// The random-weight model (reference.py random-model --preset real-width) and its ONNX export
// are cached under the build folder (bench/realwidth-cache/), keyed by a hash of the scripts.
// Without node or onnxruntime-node (cd tools/ort && npm install --ignore-scripts) the ONNX
// Runtime column is left out, saying why.
//
//   bench_realwidth                        # 256x256, 3 timed runs per stage and side
//   bench_realwidth --size 512 --runs 1 --stages transformer,vae_decoder
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <time.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "bench/support/bench_util.hpp"
#include "core/error.hpp"
#include "core/safetensors.hpp"
#include "bench/support/model_flops.hpp"
#include "bench/support/sgemm_rate.hpp"
#include "kernels/ops.hpp"
#include "stages/model/weights.hpp"
#include "stages/pipeline/text_to_image.hpp"


namespace fs = std::filesystem;
using namespace stagecraft;
using Clock = std::chrono::steady_clock;

namespace {

constexpr double kParityTol = 1e-3;  // the real-width parity tests' max abs tolerance
const char* kPython = "/usr/bin/python3";

struct Options {
  int size = 256, runs = 3, warmup = 1, rounds = 1, threads = 2, steps = 20;
  double guidance = 4.5;
  uint64_t seed = 0;
  std::string prompt = "a red circle in the center on a blue background";
  std::string cache = std::string(STAGECRAFT_BINARY_DIR) + "/bench/realwidth-cache";
  std::set<std::string> stages = {"transformer", "vae_decoder", "total"};
  bool torch = true, ort = true;
};

void usage() {
  std::fprintf(stderr,
               "usage: bench_realwidth [--size 256|512] [--runs N] [--warmup N] [--rounds R] [--threads T] "
               "[--steps N] [--guidance G] [--seed S] [--prompt TEXT] [--stages transformer,vae_decoder,total] "
               "[--cache DIR] [--no-torch] [--no-ort]\n");
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
    if (a == "--size") o.size = std::stoi(value());
    else if (a == "--runs") o.runs = std::stoi(value());
    else if (a == "--warmup") o.warmup = std::stoi(value());
    else if (a == "--rounds") o.rounds = std::stoi(value());
    else if (a == "--threads") o.threads = std::stoi(value());
    else if (a == "--steps") o.steps = std::stoi(value());
    else if (a == "--guidance") o.guidance = std::stod(value());
    else if (a == "--seed") o.seed = std::stoull(value());
    else if (a == "--prompt") o.prompt = value();
    else if (a == "--cache") o.cache = value();
    else if (a == "--no-torch") o.torch = false;
    else if (a == "--no-ort") o.ort = false;
    else if (a == "--stages") {
      o.stages.clear();
      std::stringstream ss(value());
      for (std::string s; std::getline(ss, s, ',');) {
        if (s != "transformer" && s != "vae_decoder" && s != "total") {
          usage();
          std::exit(2);
        }
        o.stages.insert(s);
      }
    } else if (a == "--help" || a == "-h") {
      usage();
      std::exit(0);
    } else {
      usage();
      std::exit(2);
    }
  }
  if (o.size < 16 || o.size % 16 || o.runs < 1 || o.warmup < 0 || o.rounds < 1 || o.threads < 1 || o.steps < 1 ||
      o.stages.empty()) {
    usage();
    std::exit(2);
  }
  return o;
}

using bench::median;
using bench::sgemm_rate;
using bench::text_encoder_flops;
using bench::transformer_flops;
using bench::vae_decoder_flops;
using bench::shell_quote;
using bench::slurp;

std::string file_hash(const std::string& path) {
  std::ostringstream h;
  h << std::hex << std::hash<std::string>{}(slurp(path));
  return h.str();
}

std::string load_average() {
  char load[64] = "?";
  if (FILE* f = std::fopen("/proc/loadavg", "r")) {
    if (!std::fgets(load, sizeof load, f)) std::strcpy(load, "?");
    std::fclose(f);
    load[std::strcspn(load, "\n")] = 0;
  }
  return load;
}

// ---- peak RSS of one stage: VmHWM after resetting it (Linux >= 4.0: "5" > clear_refs)
bool reset_peak_rss() {
  std::ofstream f("/proc/self/clear_refs");
  f << "5";
  f.flush();
  return static_cast<bool>(f);
}

double peak_rss_mib() {
  std::ifstream f("/proc/self/status");
  for (std::string line; std::getline(f, line);)
    if (line.rfind("VmHWM:", 0) == 0) return std::stod(line.substr(6)) / 1024.0;
  return NAN;
}

// Runs `cmd` (stdout + stderr to `log`); the JSON of its last line, or null with the log printed.
nlohmann::json run_json(const std::string& what, const std::string& cmd, const std::string& log) {
  const int rc = std::system((cmd + " > " + shell_quote(log) + " 2>&1").c_str());
  const std::string out = slurp(log);
  std::string last;
  std::istringstream lines(out);
  for (std::string l; std::getline(lines, l);)
    if (!l.empty()) last = l;
  if (rc == 0) {
    try {
      return nlohmann::json::parse(last);
    } catch (const std::exception&) {
    }
  }
  std::printf("  %s failed (exit %d): %s\n%s\n", what.c_str(), rc, cmd.c_str(), out.c_str());
  return nullptr;
}

double cpu_ms() {  // CPU time of the whole process (all threads)
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

// ------------------------------------------------------------------ model and export

// A folder made by `make` into a staging folder, published by rename (a failed make leaves nothing).
bool ensure_folder(const fs::path& dir, const std::string& what, const std::function<std::string(const fs::path&)>& make) {
  if (fs::is_directory(dir)) return true;
  fs::create_directories(dir.parent_path());
  const fs::path staging = dir.string() + ".tmp-" + std::to_string(::getpid());
  std::error_code ec;
  fs::remove_all(staging, ec);
  const std::string log = staging.string() + ".log";
  const std::string cmd = make(staging) + " > " + shell_quote(log) + " 2>&1";
  std::printf("  writing %s: %s\n", what.c_str(), dir.c_str());
  std::fflush(stdout);
  const auto t0 = Clock::now();
  if (std::system(cmd.c_str()) != 0 || !fs::is_directory(staging)) {
    std::printf("  failed: %s\n%s\n", cmd.c_str(), slurp(log).c_str());
    fs::remove_all(staging, ec);
    return false;
  }
  fs::rename(staging, dir, ec);
  if (ec) fs::remove_all(staging, ec);  // another run published it first
  fs::remove(log, ec);
  std::printf("  (%.0f s)\n", std::chrono::duration<double>(Clock::now() - t0).count());
  return fs::is_directory(dir);
}

struct TempDir {
  fs::path path;
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "stagecraft-realwidth-XXXXXX").string();
    if (!mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
    path = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

double max_abs_diff(const Tensor& a, const Tensor& b) {
  if (a.shape() != b.shape()) return INFINITY;
  const auto va = a.to_vector(), vb = b.to_vector();
  double m = 0;
  for (size_t i = 0; i < va.size(); ++i) m = std::max(m, std::fabs(double(va[i]) - double(vb[i])));
  return m;
}

double max_abs(const Tensor& a) {
  double m = 0;
  for (float x : a.to_vector()) m = std::max(m, std::fabs(double(x)));
  return m;
}

// Times and peaks of one side.
struct Side {
  explicit Side(std::string n) : name(std::move(n)) {}
  std::string name;
  bool on = true;
  std::string why_off;
  std::map<std::string, std::vector<double>> ms;   // stage -> every timed run, all rounds
  std::map<std::string, std::vector<double>> cpu;  // the same runs' process CPU time (all threads), ms
  // stage -> the first round's peak: in later rounds Stagecraft's process still holds what earlier
  // stages left resident (all weights touched, the Winograd cache), the subprocesses start afresh.
  std::map<std::string, double> peak_mib;
  std::map<std::string, Tensor> outputs;           // transformer, vae_decoder, image, image_u8 (last round)
  std::map<std::string, std::vector<double>> parts;  // the pipeline's parts (text_encoder, denoise, ...): ms
  void add(const std::string& stage, const nlohmann::json& j) {
    if (!j.contains(stage)) return;
    for (double v : j[stage].at("ms")) ms[stage].push_back(v);
    if (j[stage].contains("cpu_ms"))
      for (double v : j[stage]["cpu_ms"]) cpu[stage].push_back(v);
    if (j[stage].contains("parts_median_ms"))
      for (const auto& [k, v] : j[stage]["parts_median_ms"].items()) parts[k].push_back(v.get<double>());
    const double p = j[stage].value("peak_rss_reset", false) ? j[stage].value("peak_rss_mib", NAN) : NAN;
    peak_mib.emplace(stage, p);
  }
};

const char* kStageOrder[] = {"transformer", "vae_decoder", "total"};
const char* kStageLabel[] = {"transformer call", "VAE decode", "end to end"};

}  // namespace

int main(int argc, char** argv) {
  const Options opt = parse(argc, argv);
  // The same threads for all three: our pool reads STAGECRAFT_CPU_THREADS on first use and also
  // runs the kernels' OpenBLAS calls, single-threaded (kernels/cpu/blas.hpp; sgemm_rate gives
  // OpenBLAS the threads for its own measurement); PyTorch gets --threads
  // (torch.set_num_threads) and the OpenMP/BLAS variables, ONNX Runtime intraOpNumThreads.
  const std::string threads = std::to_string(opt.threads);
  setenv("STAGECRAFT_CPU_THREADS", threads.c_str(), 1);
  setenv("OMP_NUM_THREADS", threads.c_str(), 1);
  setenv("OPENBLAS_NUM_THREADS", threads.c_str(), 1);
  setenv("MKL_NUM_THREADS", threads.c_str(), 1);
  // OpenMP threads that spin collapse on a shared CPU (bench_pipeline's note); our pool sleeps.
  // tools/ort_bench.js reads the same variable for ONNX Runtime's session.intra_op.allow_spinning.
  setenv("OMP_WAIT_POLICY", "PASSIVE", 0);

  try {
    const std::string src = STAGECRAFT_SOURCE_DIR;
    const std::string reference = src + "/tools/reference.py", exporter = src + "/tools/export_onnx.py";
    const std::string ort_script = src + "/tools/ort_bench.js", ort_pkg = src + "/tools/ort/node_modules/onnxruntime-node";
    std::printf("bench_realwidth: %dx%d, %d steps, guidance %g, flow_match_euler, seed %llu, f32, CPU, %d thread(s) "
                "for each side\n  random weights: PixArt-alpha transformer (16 x 72 = 1152, 2 layers, caption 768 from a "
                "768-wide CLIP text encoder of 2 layers, 77 tokens), SD VAE decoder (128/256/512/512)\n"
                "  waiting threads: OMP_WAIT_POLICY=%s (PyTorch's OpenMP; ONNX Runtime allow_spinning %s)\n"
                "  %d warm-up + %d timed runs per stage and side (the pipeline: no warm-up after the two stages), "
                "%d round(s); load average at start: %s\n",
                opt.size, opt.size, opt.steps, opt.guidance, static_cast<unsigned long long>(opt.seed), opt.threads,
                std::getenv("OMP_WAIT_POLICY"), std::string(std::getenv("OMP_WAIT_POLICY")) == "ACTIVE" ? "1" : "0",
                opt.warmup, opt.runs, opt.rounds, load_average().c_str());
    std::fflush(stdout);

    // ---- the model (and its ONNX export), cached
    const fs::path model = fs::path(opt.cache) / ("real-width-" + std::to_string(opt.size) + "-" + file_hash(reference));
    if (!ensure_folder(model, "the random-weight model", [&](const fs::path& out) {
          return std::string(kPython) + " " + shell_quote(reference) + " random-model --preset real-width --size " +
                 std::to_string(opt.size) + " --seed 0 --out " + shell_quote(out.string());
        })) {
      std::printf("error: could not write the model (needs /usr/bin/python3 with torch)\n");
      return 1;
    }
    Side sc("Stagecraft"), pt("PyTorch"), ox("ORT");
    pt.on = opt.torch;
    if (!pt.on) pt.why_off = "--no-torch";
    ox.on = opt.ort;
    if (!ox.on) ox.why_off = "--no-ort";
    if (ox.on && std::system("command -v node > /dev/null 2>&1") != 0) {
      ox.on = false;
      ox.why_off = "node is not on PATH (Debian: apt-get install nodejs)";
    }
    if (ox.on && !fs::is_directory(ort_pkg)) {
      ox.on = false;
      ox.why_off = "onnxruntime-node is not installed (cd tools/ort && npm install --ignore-scripts)";
    }
    fs::path onnx = model / ("onnx-" + file_hash(exporter) + "-" + file_hash(reference));
    if (ox.on && !ensure_folder(onnx, "the ONNX export", [&](const fs::path& out) {
          return std::string(kPython) + " " + shell_quote(exporter) + " --model " + shell_quote(model.string()) +
                 " --out " + shell_quote(out.string()) + " --height " + std::to_string(opt.size) + " --width " +
                 std::to_string(opt.size);
        })) {
      ox.on = false;
      ox.why_off = "the ONNX export failed (above)";
    }
    for (const Side* s : {&pt, &ox})
      if (!s->on) std::printf("  no %s column: %s\n", s->name.c_str(), s->why_off.c_str());
    if (ox.on) std::printf("  ONNX models: %s\n", onnx.c_str());
    std::fflush(stdout);

    // ---- Stagecraft's pipeline and the inputs all three get
    const TextToImagePipeline pipe = TextToImagePipeline::load(model.string(), Device::cpu(), DType::f32);
    GenerateOptions g;
    g.prompt = opt.prompt;
    g.seed = opt.seed;
    g.steps = opt.steps;
    g.guidance = static_cast<float>(opt.guidance);
    g.scheduler = "flow_match_euler";
    g.width = g.height = opt.size;
    g = pipe.resolve(g);
    const Tensor noise = pipe.prepare_latents(g.seed, g.width, g.height);
    const PromptEmbeds cond = pipe.encode_prompt(g.prompt), uncond = pipe.encode_prompt(g.negative_prompt);
    const auto sched = pipe.make_job_scheduler(g.scheduler, g.steps, g.width, g.height);
    // One transformer call as denoise_step makes it for one guided job at its first step: [uncond, cond].
    const Tensor x2 = ops::cat({noise, noise}, 0);
    const Tensor t2 = Tensor::from_vector({sched->model_timestep(0), sched->model_timestep(0)}, {2});
    const Tensor e2 = ops::cat({uncond.embeds, cond.embeds}, 0);
    const Tensor m2 = ops::cat({uncond.mask, cond.mask}, 0);
    std::vector<float> ts, sig;
    for (int i = 0; i < sched->num_steps(); ++i) ts.push_back(sched->model_timestep(i));
    for (double s : sched->sigmas()) sig.push_back(static_cast<float>(s));

    TempDir tmp;
    const std::string in_path = (tmp.path / "inputs.safetensors").string();
    save_safetensors(in_path, {{"hidden_states", x2},
                               {"timestep", t2},
                               {"encoder_hidden_states", e2},
                               {"encoder_attention_mask", ops::cast(m2, DType::f32)},
                               {"vae_latents", noise},
                               {"latents", noise},
                               {"cond_ids", cond.ids},
                               {"cond_mask", cond.mask},
                               {"uncond_ids", uncond.ids},
                               {"uncond_mask", uncond.mask},
                               {"sched_timesteps", Tensor::from_vector(ts, {int64_t(ts.size())})},
                               {"sched_sigmas", Tensor::from_vector(sig, {int64_t(sig.size())})}});

    // ---- FLOPs
    const auto tcfg = read_json_file(model.string() + "/transformer/config.json");
    const auto vcfg = read_json_file(model.string() + "/vae/config.json");
    const auto ccfg = read_json_file(model.string() + "/text_encoder/config.json");
    const double lh = double(noise.size(2)), lw = double(noise.size(3)), L = double(cond.embeds.size(1));
    std::map<std::string, double> gflop;
    gflop["transformer"] = transformer_flops(tcfg, 2, lh, lw, L) * 1e-9;
    gflop["vae_decoder"] = vae_decoder_flops(vcfg, lh, lw) * 1e-9;
    gflop["total"] = g.steps * gflop["transformer"] + gflop["vae_decoder"] + 2 * text_encoder_flops(ccfg, L) * 1e-9;

    std::vector<double> gemm_rates;
    const std::string stages_arg = [&] {
      std::string s;
      for (const char* k : kStageOrder)
        if (opt.stages.count(k)) s += (s.empty() ? "" : ",") + std::string(k);
      return s;
    }();

    auto run_stagecraft = [&] {
      auto timed = [&](const std::string& stage, const std::function<void()>& fn, int warmup) {
        const bool reset = reset_peak_rss();
        for (int i = 0; i < warmup + opt.runs; ++i) {
          const auto t0 = Clock::now();
          const double c0 = cpu_ms();
          fn();
          if (i >= warmup) {
            sc.ms[stage].push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
            sc.cpu[stage].push_back(cpu_ms() - c0);
          }
        }
        sc.peak_mib.emplace(stage, reset ? peak_rss_mib() : NAN);
      };
      // Each call computes its text's cross-attention keys and values, as PyTorch's and ORT's
      // do: the cache that spares the steps after a job's first (stages/dit/text_kv_cache.hpp)
      // is emptied before every call. The pipeline below keeps it.
      if (opt.stages.count("transformer"))
        timed("transformer", [&] {
          pipe.transformer().text_kv_cache().clear();
          sc.outputs["transformer"] = pipe.transformer().forward(x2, t2, e2, &m2);
        }, opt.warmup);
      if (opt.stages.count("vae_decoder"))
        timed("vae_decoder", [&] { sc.outputs["vae_decoder"] = pipe.decode(noise); }, opt.warmup);
      if (opt.stages.count("total")) {
        GenerateResult r;
        // No warm-up when the two other stages ran before: they warmed every large layer (so do
        // reference.py bench-stages and tools/ort_bench.js).
        const int warm = opt.stages.count("transformer") && opt.stages.count("vae_decoder") ? 0 : opt.warmup;
        int call = 0;
        timed("total", [&] {
          r = pipe.generate(g);
          if (call++ < warm) return;
          sc.parts["text_encoder"].push_back(r.times.encode_ms);
          sc.parts["denoise"].push_back(r.times.denoise_ms);
          sc.parts["vae_decoder"].push_back(r.times.decode_ms);
          sc.parts["postprocess"].push_back(r.times.post_ms);
        }, warm);
        sc.outputs["image_u8"] = r.image;
        sc.outputs["image"] = pipe.decode(r.latents);  // untimed: the float image for the parity check
      }
    };
    auto run_sub = [&](Side& side, const std::string& cmd, const std::string& out_path, const std::string& log) {
      const nlohmann::json j = run_json(side.name, cmd, log);
      if (j.is_null()) {
        side.on = false;
        side.why_off = "its run failed (above)";
        return;
      }
      if (j.value("threads", 0) != opt.threads)
        std::printf("  warning: %s ran with %d threads, not %d\n", side.name.c_str(), j.value("threads", 0), opt.threads);
      for (const char* k : kStageOrder) side.add(k, j);
      const auto f = SafetensorsFile::open(out_path);
      for (const char* k : {"transformer", "vae_decoder", "image", "image_u8"})
        if (f.contains(k)) {
          const Tensor t = f.get(k);
          side.outputs[k] = Tensor::from_vector(t.to_vector(), t.shape());  // a copy: outlives the file
        }
    };
    char gbuf[32];
    std::snprintf(gbuf, sizeof gbuf, "%.9g", g.guidance);
    const std::string reps = " --reps " + std::to_string(opt.runs) + " --warmup " + std::to_string(opt.warmup);
    const std::string pt_out = (tmp.path / "torch.safetensors").string(), ox_out = (tmp.path / "ort.safetensors").string();
    const std::string pt_cmd = std::string(kPython) + " " + shell_quote(reference) + " --threads " + threads +
                               " bench-stages --model " + shell_quote(model.string()) + " --inputs " + in_path +
                               " --out " + pt_out + " --stages " + stages_arg + " --prompt " + shell_quote(g.prompt) +
                               " --negative-prompt " + shell_quote(g.negative_prompt) + " --steps " +
                               std::to_string(g.steps) + " --guidance " + gbuf + " --scheduler " + g.scheduler + reps;
    const std::string ox_cmd = "node " + shell_quote(ort_script) + " --onnx " + shell_quote(onnx.string()) +
                               " --inputs " + in_path + " --out " + ox_out + " --threads " + threads + " --stages " +
                               stages_arg + " --guidance " + gbuf + reps;

    for (int round = 0; round < opt.rounds; ++round) {
      // The sides take turns first, so a change of load during the run falls on all of them.
      gemm_rates.push_back(sgemm_rate(2048, 5, opt.threads));
      for (int k = 0; k < 3; ++k) {
        const int who = (k + round) % 3;
        const auto t0 = Clock::now();
        if (who == 0) run_stagecraft();
        else if (who == 1 && pt.on) run_sub(pt, pt_cmd, pt_out, (tmp.path / "torch.log").string());
        else if (who == 2 && ox.on) run_sub(ox, ox_cmd, ox_out, (tmp.path / "ort.log").string());
        else continue;
        std::printf("  round %d: %s done (%.0f s, load %s)\n", round, who == 0 ? "Stagecraft" : who == 1 ? "PyTorch" : "ORT",
                    std::chrono::duration<double>(Clock::now() - t0).count(), load_average().c_str());
        std::fflush(stdout);
      }
      gemm_rates.push_back(sgemm_rate(2048, 5, opt.threads));
    }
    const double gemm = median(gemm_rates);

    // ---- report
    const std::vector<Side*> sides = {&sc, &pt, &ox};
    std::printf("\nsgemm 2048^3 (OpenBLAS cblas_sgemm, %d threads, this run): %.1f GFLOP/s (median of %zu; %.1f-%.1f)\n",
                opt.threads, gemm, gemm_rates.size(), *std::min_element(gemm_rates.begin(), gemm_rates.end()),
                *std::max_element(gemm_rates.begin(), gemm_rates.end()));
    std::printf("\nmedian ms over %d run(s) per side (%d round(s)); ratio = ms / ORT's ms\n", opt.runs * opt.rounds,
                opt.rounds);
    std::printf("%-17s %8s %12s %12s %12s %11s %11s\n", "stage", "GFLOP", "Stagecraft", "PyTorch", "ORT",
                "SC/ORT", "PT/ORT");
    for (int k = 0; k < 3; ++k) {
      const std::string st = kStageOrder[k];
      if (!opt.stages.count(st)) continue;
      std::printf("%-17s %8.1f", kStageLabel[k], gflop[st]);
      for (Side* s : sides)
        if (s->on && s->ms.count(st)) std::printf(" %12.1f", median(s->ms[st]));
        else std::printf(" %12s", "-");
      const bool have_ort = ox.on && ox.ms.count(st);
      for (Side* s : {&sc, &pt})
        if (have_ort && s->on && s->ms.count(st)) std::printf(" %10.2fx", median(s->ms[st]) / median(ox.ms[st]));
        else std::printf(" %11s", "-");
      std::printf("\n");
    }
    // On a shared machine the wall times above carry the load of other processes; the CPU time
    // of each side's process (every thread; waiting threads sleep, see OMP_WAIT_POLICY) is
    // inflated far less by it.
    std::printf("\nmedian process CPU ms (all threads) of the same runs; ratio to ORT's\n%-17s %12s %12s %12s %11s %11s\n",
                "stage", "Stagecraft", "PyTorch", "ORT", "SC/ORT", "PT/ORT");
    for (int k = 0; k < 3; ++k) {
      const std::string st = kStageOrder[k];
      if (!opt.stages.count(st)) continue;
      std::printf("%-17s", kStageLabel[k]);
      for (Side* s : sides)
        if (s->on && s->cpu.count(st)) std::printf(" %12.1f", median(s->cpu[st]));
        else std::printf(" %12s", "-");
      const bool have_ort = ox.on && ox.cpu.count(st);
      for (Side* s : {&sc, &pt})
        if (have_ort && s->on && s->cpu.count(st)) std::printf(" %10.2fx", median(s->cpu[st]) / median(ox.cpu[st]));
        else std::printf(" %11s", "-");
      std::printf("\n");
    }
    if (opt.stages.count("total")) {
      std::printf("\nend to end by part, median ms\n%-17s %12s %12s %12s\n", "part", "Stagecraft", "PyTorch", "ORT");
      for (const char* part : {"text_encoder", "denoise", "vae_decoder", "postprocess"}) {
        std::printf("%-17s", part);
        for (Side* s : sides)
          if (s->on && s->parts.count(part)) std::printf(" %12.1f", median(s->parts[part]));
          else std::printf(" %12s", "-");
        std::printf("\n");
      }
    }
    std::printf("\nachieved GFLOP/s (share of the sgemm rate)\n%-17s %18s %18s %18s\n", "stage", "Stagecraft", "PyTorch",
                "ORT");
    for (int k = 0; k < 3; ++k) {
      const std::string st = kStageOrder[k];
      if (!opt.stages.count(st)) continue;
      std::printf("%-17s", kStageLabel[k]);
      for (Side* s : sides) {
        if (!(s->on && s->ms.count(st))) {
          std::printf(" %18s", "-");
          continue;
        }
        const double rate = gflop[st] / (median(s->ms[st]) * 1e-3);
        char cell[40];
        std::snprintf(cell, sizeof cell, "%.1f (%3.0f%%)", rate, 100.0 * rate / gemm);
        std::printf(" %18s", cell);
      }
      std::printf("\n");
    }
    std::printf("\npeak RSS per stage, MiB (VmHWM of each side's process, reset before the stage; first round)\n"
                "%-17s %12s %12s %12s\n", "stage", "Stagecraft", "PyTorch", "ORT");
    for (int k = 0; k < 3; ++k) {
      const std::string st = kStageOrder[k];
      if (!opt.stages.count(st)) continue;
      std::printf("%-17s", kStageLabel[k]);
      for (Side* s : sides)
        if (s->on && s->peak_mib.count(st) && !std::isnan(s->peak_mib[st])) std::printf(" %12.0f", s->peak_mib[st]);
        else std::printf(" %12s", "-");
      std::printf("\n");
    }

    bool parity_ok = true;
    if (pt.on) {
      std::printf("\noutputs: max |x - PyTorch| (tolerance %.0e, the real-width parity tests')\n%-17s %12s %20s %20s\n",
                  kParityTol, "output", "PyTorch max |y|", "Stagecraft", "ORT");
      const char* keys[] = {"transformer", "vae_decoder", "image", "image_u8"};
      const char* labels[] = {"transformer call", "VAE decode", "image (float)", "image (uint8)"};
      for (int k = 0; k < 4; ++k) {
        if (!pt.outputs.count(keys[k])) continue;
        const Tensor& ref = pt.outputs[keys[k]];
        const bool u8 = k == 3;
        std::printf("%-17s %20.4g", labels[k], max_abs(ref));
        for (Side* s : {&sc, &ox}) {
          if (!(s->on && s->outputs.count(keys[k]))) {
            std::printf(" %20s", "-");
            continue;
          }
          const double d = max_abs_diff(ops::contiguous(s->outputs[keys[k]].to(DType::f32)), ref);
          char cell[48];
          if (u8) std::snprintf(cell, sizeof cell, "%.0f of 255", d);
          else {
            // The per-call outputs must be within the tests' tolerance; the image after 20 steps is
            // reported against it too, though its differences compound over the steps.
            const bool ok = d <= kParityTol;
            if (k < 2) parity_ok &= ok;
            std::snprintf(cell, sizeof cell, "%.2e %s", d, ok ? "ok" : "OVER");
          }
          std::printf(" %20s", cell);
        }
        std::printf("\n");
      }
      std::printf("per-call outputs within tolerance: %s\n", parity_ok ? "yes" : "NO");
    }
    std::printf("\nload average at end: %s\n", load_average().c_str());
    return parity_ok ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
