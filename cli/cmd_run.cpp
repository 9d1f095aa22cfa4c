// stagecraft run FILE: a pipeline file through the actor engine, one process. The
// images are byte-identical to `stagecraft generate` for the same seed and settings.
// With --n N it submits N jobs at once (seeds S, S+1, ...) and writes OUT-0.png ...
// --latents FILE gives the initial noise ([N, C, h, w]: row i is job i's) instead of the
// seeded noise; --dump DIR writes every stage's tensors (DIR for one job, DIR/job-<i>
// for each of N jobs; docs/numerics.md).
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <iostream>
#include <mutex>

#include "actors/engine.hpp"
#include "cli/args.hpp"
#include "cli/command.hpp"
#include "core/dump.hpp"
#include "core/error.hpp"
#include "core/pipeline_spec.hpp"
#include "core/request_check.hpp"
#include "stages/pipeline/latents_file.hpp"
#include "stages/post/image.hpp"
#include "stages/spec_check.hpp"

namespace fs = std::filesystem;

namespace {

using namespace stagecraft;

/// A flag's value as an int, saturated rather than wrapped, so that 4294967297 steps is
/// refused at the door instead of becoming 1.
int saturate_int(long long v) {
  return static_cast<int>(std::clamp<long long>(v, std::numeric_limits<int>::min(), std::numeric_limits<int>::max()));
}

/// out.png with --n 3 -> out-0.png, out-1.png, out-2.png
std::string numbered(const std::string& out, int i, int n) {
  if (n == 1) return out;
  fs::path p(out);
  return (p.parent_path() / (p.stem().string() + "-" + std::to_string(i) + p.extension().string())).string();
}

int run_run(const std::vector<std::string>& argv) {
  cli::Args args(argv,
                 {"prompt", "negative-prompt", "out", "n", "seed", "steps", "guidance", "width",
                  "height", "scheduler", "trace", "latents", "dump"},
                 {"quiet"});
  SC_CHECK(args.positional().size() == 1, Errc::invalid_argument,
           "run takes one pipeline file, e.g. stagecraft run pipelines/tiny-shapes.yaml --prompt TEXT");
  const auto prompt = args.get("prompt");
  SC_CHECK(prompt.has_value(), Errc::invalid_argument, "run needs --prompt TEXT");
  const std::string out = args.get_or("out", "out.png");
  const int n = static_cast<int>(args.get_int("n", 1));
  SC_CHECK(n >= 1, Errc::invalid_argument, "--n must be at least 1, got " << n);
  const long long seed = args.get_int("seed", 0);
  SC_CHECK(seed >= 0, Errc::invalid_argument, "--seed must be a non-negative integer");
  const bool quiet = args.has("quiet");

  PipelineSpec spec;
  try {
    spec = load_pipeline_spec(args.positional()[0]);
  } catch (const SpecError& e) {
    for (const auto& p : e.problems) std::cerr << p.str() << "\n";
    return 1;
  }
  if (auto problems = check_stage_types(spec); !problems.empty()) {
    for (const auto& p : problems) std::cerr << p.str() << "\n";
    return 1;
  }
  // --n jobs are submitted together: make room for them at the front door.
  spec.limits.max_pending_jobs = std::max(spec.limits.max_pending_jobs, n);

  // The door every request passes (core/request_check.hpp), before the engine loads a
  // model: a bad --steps, --guidance, size or prompt is refused here, naming the field.
  // The engine checks again at submit(), with each stage's own check (latent factor, scheduler).
  auto request_for = [&](int i) {
    Request r;
    r.prompt = *prompt;
    r.negative_prompt = args.get_or("negative-prompt", "");
    r.seed = static_cast<uint64_t>(seed) + static_cast<uint64_t>(i);
    r.steps = saturate_int(args.get_int("steps", 0));
    r.guidance = static_cast<float>(args.get_double("guidance", -1.0));
    r.width = saturate_int(args.get_int("width", 0));
    r.height = saturate_int(args.get_int("height", 0));
    r.scheduler = args.get_or("scheduler", "");
    return r;
  };
  check_request(with_defaults(request_for(0), spec.defaults), spec.limits);

  // Supplied noise: one row per job, checked before the engine loads anything.
  Tensor latents;
  if (const auto file = args.get("latents")) {
    SC_CHECK(!spec.model_dir.empty(), Errc::invalid_argument,
             "--latents needs a pipeline with a model (set `model:` in " << spec.path << ")");
    auto size = [&](const char* key) {
      const long long v = args.get_int(key, 0);
      if (v > 0) return static_cast<int>(v);
      const auto& d = spec.defaults;
      return d.contains(key) && d[key].is_number() ? d[key].get<int>() : 0;
    };
    latents = read_latents_file(*file, latent_geometry(spec.model_dir), n, size("width"), size("height"));
  }
  // A dumping job must run every stage itself: a prompt-cache hit would skip the text
  // encoder and leave its tensors out of the dump.
  const auto dump_dir = args.get("dump");
  if (dump_dir)
    for (auto& s : spec.stages) s.params.erase("cache");
  std::vector<std::shared_ptr<DumpWriter>> dumps;
  auto engine = Engine::create(spec);

  std::mutex print_mu;
  std::vector<std::future<JobResult>> futs;
  for (int i = 0; i < n; ++i) {
    Request r = request_for(i);
    if (latents.defined()) r.initial_latents = latents_row(latents, i);
    if (dump_dir) {
      r.dump = std::make_shared<DumpWriter>(n == 1 ? *dump_dir : (fs::path(*dump_dir) / ("job-" + std::to_string(i))).string());
      dumps.push_back(r.dump);
    }
    Engine::Progress progress;
    if (!quiet)
      progress = [&print_mu, i](int step, int total) {
        std::lock_guard<std::mutex> lock(print_mu);
        std::fprintf(stderr, "\rjob %d: step %d/%d", i, step, total);
        if (step == total) std::fprintf(stderr, "\n");
      };
    futs.push_back(engine->submit(r, progress));
  }

  int failed = 0;
  for (int i = 0; i < n; ++i) {
    JobResult res = futs[static_cast<size_t>(i)].get();
    if (dump_dir) {
      // Written for failed jobs too: the stages that ran show where it went wrong.
      auto& d = *dumps[static_cast<size_t>(i)];
      d.set_manifest({{"pipeline", spec.path},
                      {"model", spec.model_dir},
                      {"job", i},
                      {"latents_file", args.get_or("latents", "")}});
      d.flush();
      if (!quiet) std::cout << "wrote dump " << d.dir() << "\n";
    }
    if (!res.ok()) {
      std::cerr << "job " << i << " failed: " << errc_name(*res.error) << ": " << res.message << "\n";
      ++failed;
      continue;
    }
    const std::string path = numbered(out, i, n);
    write_png(path, res.tensor("image").select(0, 0));
    if (!quiet) std::cout << "wrote " << path << " (seed " << static_cast<uint64_t>(seed) + i << ")\n";
  }
  if (const auto trace = args.get("trace")) {
    engine->write_chrome_trace(*trace);
    if (!quiet) std::cout << "wrote trace " << *trace << " (open it in https://ui.perfetto.dev)\n";
  }
  if (!quiet) {
    const EngineStats st = engine->stats();
    for (const auto& s : st.stages)
      std::cout << "  " << s.name << ": " << s.batches << " runs, mean batch " << s.mean_batch() << ", busy "
                << std::chrono::duration<double, std::milli>(s.busy).count() << " ms"
                << (s.cache_hits + s.cache_misses ? ", cache " + std::to_string(s.cache_hits) + " hits / " +
                                                        std::to_string(s.cache_misses) + " misses"
                                                  : std::string())
                << "\n";
  }
  engine->shutdown();
  return failed ? 1 : 0;
}

}  // namespace

STAGECRAFT_COMMAND(run,
                   "FILE --prompt TEXT [--out x.png] [--n N] [--seed S] [--steps N] [--guidance G] [--trace t.json] "
                   "[--latents noise.safetensors] [--dump DIR]",
                   "run a pipeline file through the actor engine and write the image(s)", run_run);
