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
//
// --batching (issue 13 item 5) measures step-level batching through the actor engine
// instead: --jobs N jobs (default 32) of the pipeline file (default
// pipelines/tiny-shapes.yaml) submitted one at a time and then all at once, each on a
// fresh engine, for --repeats R rounds (the order alternates). It prints images/s of each
// and their ratio (target >= 3x), the denoiser's mean batch and every stage's busy time,
// and checks that every image is byte-identical (memcmp) between the modes and to a lone
// TextToImagePipeline::generate() — what `stagecraft generate` writes — for its seed.
// --step-batches 1,2,4,8 first times the denoiser's step alone (denoise_step with b jobs,
// no engine) for each batch size: ms per step, per job-step, and the speed-up over b = 1.
//
//   bench_pipeline --batching --repeats 3
//   bench_pipeline --batching --step-batches 1,2,4,8 --jobs 32 --threads 1,2   (a run per thread count)
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

#include <time.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "bench/support/bench_util.hpp"
#include "bench/support/model_flops.hpp"
#include "bench/support/sgemm_rate.hpp"
#include "actors/engine.hpp"
#include "core/error.hpp"
#include "core/pipeline_spec.hpp"
#include "core/request_check.hpp"
#include "core/safetensors.hpp"
#include "kernels/ops.hpp"
#include "stages/pipeline/noise.hpp"
#include "stages/pipeline/text_to_image.hpp"

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
  // --batching
  bool batching = false;
  std::string pipeline = std::string(STAGECRAFT_SOURCE_DIR) + "/pipelines/tiny-shapes.yaml";
  int jobs = 32, repeats = 3;
  std::vector<int> step_batches;  // --step-batches: denoise_step alone at these batch sizes
  std::vector<int> thread_list;   // --threads 1,2: one run per count
  int blas_threads = 0;           // --blas-threads (--batching): OpenBLAS's own threads (default: none)
};

void usage() {
  std::fprintf(stderr,
               "usage: bench_pipeline [--model DIR] [--prompt TEXT] [--negative-prompt TEXT] [--steps N] "
               "[--guidance G] [--scheduler NAME] [--seed S] [--runs N] [--warmup N] [--rounds R] [--threads T] "
               "[--no-reference]\n"
               "       bench_pipeline --batching [--pipeline FILE] [--jobs N] [--repeats R] [--threads T[,T...]] "
               "[--blas-threads B] [--step-batches 1,2,4,8]\n");
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
    else if (a == "--threads") {
      // A list (--batching only) runs this program once per count: the pool and OpenBLAS
      // fix their thread counts once per process.
      std::stringstream ss(value());
      for (std::string item; std::getline(ss, item, ',');) o.thread_list.push_back(std::stoi(item));
      o.threads = o.thread_list.empty() ? 0 : o.thread_list[0];
    }
    else if (a == "--no-reference") o.reference = false;
    else if (a == "--batching") o.batching = true;
    else if (a == "--blas-threads") o.blas_threads = std::stoi(value());
    else if (a == "--pipeline") o.pipeline = value();
    else if (a == "--jobs") o.jobs = std::stoi(value());
    else if (a == "--repeats") o.repeats = std::stoi(value());
    else if (a == "--step-batches") {
      std::stringstream ss(value());
      for (std::string item; std::getline(ss, item, ',');) o.step_batches.push_back(std::stoi(item));
    } else {
      usage();
      std::exit(2);
    }
  }
  bool bad_batch = false;
  for (int b : o.step_batches) bad_batch |= b < 1;
  for (int t : o.thread_list) bad_batch |= t < 1;
  bad_batch |= o.thread_list.size() > 1 && !o.batching;
  bad_batch |= o.blas_threads < 0 || (o.blas_threads > 0 && !o.batching);
  if (o.runs < 1 || o.rounds < 1 || o.warmup < 0 || o.threads < 1 || o.jobs < 1 || o.repeats < 1 || bad_batch) {
    usage();
    std::exit(2);
  }
  return o;
}

using bench::median;
using bench::shell_quote;
using bench::slurp;

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

// ------------------------------------------------------------------ --batching

using Clock = std::chrono::steady_clock;

double ms_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

double cpu_ms() {  // CPU time of the whole process (all threads)
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

// Distinct prompts, so the text stage encodes as it would for real traffic; its prompt
// cache then helps both modes alike (each mode gets a fresh engine and so a cold cache).
const char* kBatchPrompts[] = {
    "a red circle in the center on a blue background", "a green square on a white background",
    "a yellow triangle on a black background",          "a blue circle in the top left on a red background",
    "a white square in the bottom right on a green background", "a black triangle on a yellow background",
    "a red square on a gray background",                "a green circle on a purple background"};

Request batch_request(int i) {
  Request r;
  r.prompt = kBatchPrompts[i % 8];
  r.seed = 1000 + static_cast<uint64_t>(i);
  return r;
}

bool same_bytes(const Tensor& a, const Tensor& b) {
  if (!a.defined() || !b.defined() || a.shape() != b.shape() || a.dtype() != b.dtype()) return false;
  const Tensor ca = ops::contiguous(a), cb = ops::contiguous(b);  // no copy when already contiguous
  return std::memcmp(ca.data(), cb.data(), ca.nbytes()) == 0;
}

struct ModeRun {
  double wall_ms = 0;
  std::vector<Tensor> images;  // job i's "image"
  std::vector<double> busy_ms;  // per stage, over the timed jobs
  double denoise_mean_batch = 0;
  uint64_t denoise_steps = 0;
};

// Runs `jobs` jobs on a fresh engine: one at a time (submit, wait, next) or all at once.
ModeRun run_mode(const PipelineSpec& spec, int jobs, bool at_once, size_t denoise_index) {
  auto engine = Engine::create(spec);
  // One untimed job first, with a prompt no timed job uses: the first run of each stage
  // pays page faults, allocator growth and the thread pool's start.
  Request warm;
  warm.prompt = "warm up";
  engine->submit(warm).get().throw_if_error();
  const EngineStats before = engine->stats();
  ModeRun m;
  const auto t0 = Clock::now();
  std::vector<JobResult> results;
  if (at_once) {
    std::vector<std::future<JobResult>> futs;
    for (int i = 0; i < jobs; ++i) futs.push_back(engine->submit(batch_request(i)));
    for (auto& f : futs) results.push_back(f.get());
  } else {
    for (int i = 0; i < jobs; ++i) results.push_back(engine->submit(batch_request(i)).get());
  }
  m.wall_ms = ms_between(t0, Clock::now());
  const EngineStats after = engine->stats();
  engine->shutdown();
  for (auto& r : results) {
    r.throw_if_error();
    m.images.push_back(r.tensor("image"));
  }
  for (size_t s = 0; s < after.stages.size(); ++s)
    m.busy_ms.push_back(std::chrono::duration<double, std::milli>(after.stages[s].busy - before.stages[s].busy).count());
  const auto& da = after.stages[denoise_index];
  const auto& db = before.stages[denoise_index];
  m.denoise_steps = da.batches - db.batches;
  m.denoise_mean_batch = m.denoise_steps ? double(da.packets - db.packets) / double(m.denoise_steps) : 0.0;
  return m;
}

// denoise_step alone (no engine, no text or VAE): b jobs of distinct seeds stepping together
// through their whole schedule, for each batch size, in interleaved rounds. Prints the
// median ms per step and per job-step and the speed-up b·t(1)/t(b) over the lone step.
void step_batches(const TextToImagePipeline& pipe, const std::vector<int>& sizes, int rounds) {
  GenerateOptions g;
  g.prompt = kBatchPrompts[0];
  g = pipe.resolve(g);
  const PromptEmbeds cond = pipe.encode_prompt(g.prompt), uncond = pipe.encode_prompt(g.negative_prompt);
  std::map<int, std::vector<double>> per_step, cpu_step;  // batch size -> wall / process CPU ms of each step
  for (int round = 0; round < rounds + 1; ++round) {  // round 0 warms up and is not kept
    for (int b : sizes) {
      std::vector<Tensor> lat(static_cast<size_t>(b));
      std::vector<std::unique_ptr<Scheduler>> sch;
      std::vector<DenoiseJob> jobs(static_cast<size_t>(b));
      for (int j = 0; j < b; ++j) {
        lat[j] = pipe.prepare_latents(static_cast<uint64_t>(j), g.width, g.height);
        sch.push_back(pipe.make_job_scheduler(g.scheduler, g.steps, g.width, g.height));
        jobs[j].latents = &lat[j];
        jobs[j].cond = &cond;
        jobs[j].uncond = &uncond;
        jobs[j].guidance = g.guidance;
        jobs[j].scheduler = sch.back().get();
      }
      for (int step = 0; step < sch[0]->num_steps(); ++step) {
        for (auto& j : jobs) j.step = step;
        const auto t0 = Clock::now();
        const double c0 = cpu_ms();
        pipe.denoise_step(jobs);
        if (round > 0) {
          per_step[b].push_back(ms_between(t0, Clock::now()));
          cpu_step[b].push_back(cpu_ms() - c0);
        }
      }
    }
  }
  // The speed-up is over the first size given (normally 1): job-steps per second at b / at it.
  const double t1 = median(per_step[sizes[0]]) / sizes[0];
  const double c1 = median(cpu_step[sizes[0]]) / sizes[0];
  // CPU time counts every thread of the process (a waiting pool worker sleeps, OpenBLAS's
  // may spin); with --threads 1 it is the work itself, which load from other processes on a
  // shared machine inflates far less than the wall time.
  std::printf("\ndenoise_step alone (%d steps x %d rounds per size, guidance %g: 2 transformer rows per job)\n"
              "%6s %10s %13s %10s %17s %13s\n",
              g.steps, rounds, g.guidance, "jobs", "ms/step", "ms/job-step", "speed-up", "cpu ms/job-step", "cpu speed-up");
  for (int b : sizes) {
    const double t = median(per_step[b]), c = median(cpu_step[b]);
    std::printf("%6d %10.2f %13.3f %9.2fx %17.3f %12.2fx\n", b, t, t / b, t1 / (t / b), c / b, c1 / (c / b));
  }
  std::fflush(stdout);
}

// What the machine allows: the denoiser's FLOPs per image (model_flops.hpp) against the
// sgemm rate measured now. Batching can only raise the denoiser's FLOP rate, so images/s
// at once cannot pass sgemm rate / FLOPs per image, however large the batches; the ratio of
// that bound to one at a time is the most batching could give on this machine.
void print_batching_bound(const TextToImagePipeline& pipe, const PipelineSpec& spec, int threads, double serial_ips,
                          double serial_denoise_ms, double batched_denoise_ms, int jobs) {
  const GenerateOptions r = pipe.resolve(options_of(with_defaults(batch_request(0), spec.defaults)));
  const auto cfg = [&](const char* part) {
    return nlohmann::json::parse(bench::slurp(spec.model_dir + "/" + part + "/config.json"));
  };
  const nlohmann::json vae = cfg("vae");
  const double scale = double(1 << (vae.at("block_out_channels").size() - 1));
  const double cfg_batch = r.guidance > 1.0f ? 2 : 1, text_len = pipe.tokenizer().model_max_length();
  const nlohmann::json tcfg = cfg("transformer");
  const double per_step = bench::transformer_flops(tcfg, cfg_batch, r.height / scale, r.width / scale, text_len);
  // The text's part once per job (its keys and values are cached across steps), and once for
  // all the jobs' shared negative prompt, which the bound leaves in as if it were per job.
  const double text = bench::transformer_text_flops(tcfg, cfg_batch, text_len);
  const double per_image = (per_step - text) * r.steps + text;
  const double rate = bench::sgemm_rate(1024, 5, threads);
  const double bound_ips = rate * 1e9 / per_image;
  std::printf("\ndenoiser FLOPs: %.1f MFLOP per job-step (CFG batch %.0f, %.0fx%.0f latent, %.0f text tokens), %.1f of "
              "them the text's, computed at the first step only: %.2f GFLOP per image over %d steps\n",
              per_step * 1e-6, cfg_batch, r.height / scale, r.width / scale, text_len, text * 1e-6, per_image * 1e-9,
              r.steps);
  std::printf("denoiser achieved: one at a time %.1f GFLOP/s, at once %.1f GFLOP/s; sgemm 1024^3 (OpenBLAS, %d threads, "
              "this run) %.1f GFLOP/s\n",
              jobs * per_image * 1e-9 / (serial_denoise_ms * 1e-3), jobs * per_image * 1e-9 / (batched_denoise_ms * 1e-3),
              threads, rate);
  std::printf("bound: with the denoiser alone at the sgemm rate, %.1f images/s = %.2fx one at a time (the 3x target "
              "needs %.1f GFLOP/s in the denoiser)\n",
              bound_ips, bound_ips / serial_ips, 3 * serial_ips * per_image * 1e-9);
}

int run_batching(const Options& opt) {
  PipelineSpec spec = load_pipeline_spec(opt.pipeline);
  spec.limits.max_pending_jobs = std::max(spec.limits.max_pending_jobs, opt.jobs + 1);
  size_t denoise = spec.stages.size();
  for (size_t s = 0; s < spec.stages.size(); ++s)
    if (spec.stages[s].type == "pixart_denoiser") denoise = s;
  SC_CHECK(denoise < spec.stages.size(), Errc::invalid_argument,
           opt.pipeline << " has no pixart_denoiser stage to batch");

  char load[64] = "?";
  if (FILE* f = std::fopen("/proc/loadavg", "r")) {
    if (!std::fgets(load, sizeof load, f)) std::strcpy(load, "?");
    std::fclose(f);
    load[std::strcspn(load, "\n")] = 0;
  }
  const auto& dn = spec.stages[denoise];
  std::printf("bench_pipeline --batching: %s\n  %d jobs (8 prompts, seeds 1000..%d), denoise max_batch %d, "
              "queue_limit %d; %d thread(s) (OpenBLAS %d of its own); %d repeat(s)\n  load average at start: %s\n",
              opt.pipeline.c_str(), opt.jobs, 1000 + opt.jobs - 1, dn.batching.max_batch, dn.queue_limit,
              opt.threads, opt.blas_threads > 0 ? opt.blas_threads : 1, opt.repeats, load);
  std::fflush(stdout);

  // The lone runs: what `stagecraft generate` computes for each job (same request path:
  // the file's defaults, then the model's).
  const TextToImagePipeline pipe = TextToImagePipeline::load(spec.model_dir, Device::cpu(), DType::f32);
  if (!opt.step_batches.empty()) step_batches(pipe, opt.step_batches, opt.repeats);
  std::vector<Tensor> lone;
  for (int i = 0; i < opt.jobs; ++i)
    lone.push_back(pipe.generate(options_of(with_defaults(batch_request(i), spec.defaults))).image);

  std::vector<double> serial_ips, batched_ips, ratio, mean_batch;
  std::vector<std::vector<double>> serial_busy(spec.stages.size()), batched_busy(spec.stages.size());
  int mismatches = 0;
  std::printf("\n%6s %-14s %10s %10s %11s", "repeat", "mode", "wall ms", "images/s", "mean batch");
  for (const auto& s : spec.stages) std::printf(" %10s", (s.name + " ms").c_str());
  std::printf("\n");
  for (int rep = 0; rep < opt.repeats; ++rep) {
    // Alternate which mode goes first, so a load change during the run falls on both.
    ModeRun runs[2];
    for (int k = 0; k < 2; ++k) {
      const bool at_once = (k + rep) % 2 == 1;
      ModeRun m = run_mode(spec, opt.jobs, at_once, denoise);
      for (int i = 0; i < opt.jobs; ++i)
        if (!same_bytes(m.images[i], lone[i])) {
          ++mismatches;
          std::printf("  MISS: job %d (%s) differs from its lone generate()\n", i, at_once ? "at once" : "one at a time");
        }
      const double ips = 1000.0 * opt.jobs / m.wall_ms;
      std::printf("%6d %-14s %10.1f %10.2f %11.2f", rep, at_once ? "at once" : "one at a time", m.wall_ms, ips,
                  m.denoise_mean_batch);
      for (double b : m.busy_ms) std::printf(" %10.1f", b);
      std::printf("\n");
      std::fflush(stdout);
      runs[at_once ? 1 : 0] = std::move(m);
    }
    const double s_ips = 1000.0 * opt.jobs / runs[0].wall_ms, b_ips = 1000.0 * opt.jobs / runs[1].wall_ms;
    serial_ips.push_back(s_ips);
    batched_ips.push_back(b_ips);
    ratio.push_back(b_ips / s_ips);
    mean_batch.push_back(runs[1].denoise_mean_batch);
    for (size_t s = 0; s < spec.stages.size(); ++s) {
      serial_busy[s].push_back(runs[0].busy_ms[s]);
      batched_busy[s].push_back(runs[1].busy_ms[s]);
    }
  }

  std::printf("\nmedians over %d repeat(s)\n%-14s %10s %11s", opt.repeats, "mode", "images/s", "mean batch");
  for (const auto& s : spec.stages) std::printf(" %10s", (s.name + " ms").c_str());
  std::printf("\n%-14s %10.2f %11s", "one at a time", median(serial_ips), "1.00");
  for (auto& v : serial_busy) std::printf(" %10.1f", median(v));
  std::printf("\n%-14s %10.2f %11.2f", "at once", median(batched_ips), median(mean_batch));
  for (auto& v : batched_busy) std::printf(" %10.1f", median(v));
  std::printf("\n%-14s %10s %11s", "busy ratio", "", "");
  for (size_t s = 0; s < spec.stages.size(); ++s) std::printf(" %9.2fx", median(serial_busy[s]) / median(batched_busy[s]));
  const double r = median(ratio);
  std::printf("\n\nimages/s at once / one at a time: %.2fx (median of per-repeat ratios; min %.2fx, max %.2fx) "
              "-> target >= 3x: %s\n",
              r, *std::min_element(ratio.begin(), ratio.end()), *std::max_element(ratio.begin(), ratio.end()),
              r >= 3.0 ? "PASS" : "MISS");
  std::printf("every image byte-identical to its lone generate() in both modes (%d images): %s\n",
              2 * opt.jobs * opt.repeats, mismatches == 0 ? "PASS" : "MISS");
  print_batching_bound(pipe, spec, opt.threads, median(serial_ips), median(serial_busy[denoise]),
                       median(batched_busy[denoise]), opt.jobs);
  return mismatches == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  const Options opt = parse(argc, argv);
  if (opt.thread_list.size() > 1) {
    // The same figures once per thread count, each in a process of its own.
    int rc = 0;
    for (int t : opt.thread_list) {
      std::string cmd = shell_quote(argv[0]);
      for (int i = 1; i < argc; ++i) {
        const bool count = i > 1 && std::string(argv[i - 1]) == "--threads";
        cmd += " " + shell_quote(count ? std::to_string(t) : std::string(argv[i]));
      }
      std::printf("==== --threads %d\n", t);
      std::fflush(stdout);
      if (std::system(cmd.c_str()) != 0) rc = 1;
    }
    return rc;
  }
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
  // The engine runs OpenBLAS single-threaded and splits its GEMMs over our pool
  // (kernels/cpu/blas.hpp). --blas-threads gives OpenBLAS its own threads again
  // (STAGECRAFT_BLAS_THREADS, read at the kernels' first sgemm), to see what the two sets
  // of threads cost each other when the engine's lanes run at once (only the engine case;
  // the reference side of the default case must match our thread count).
  if (opt.batching && opt.blas_threads > 0)
    setenv("STAGECRAFT_BLAS_THREADS", std::to_string(opt.blas_threads).c_str(), 1);

  if (opt.batching) {
    try {
      return run_batching(opt);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "error: %s\n", e.what());
      return 1;
    }
  }

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
