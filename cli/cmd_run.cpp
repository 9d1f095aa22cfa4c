// stagecraft run FILE: a pipeline file through the actor engine, one process. The
// images are byte-identical to `stagecraft generate` for the same seed and settings.
// A file with `nodes:` runs split over processes: run starts a worker per node
// except the head (as `stagecraft launch` does), hosts the head itself, submits,
// writes the images and stops the workers; --trace then merges every node's
// trace into one file on the host's clock.
// With --n N it submits N jobs at once (seeds S, S+1, ...) and writes OUT-0.png ...
// --latents FILE gives the initial noise ([N, C, h, w]: row i is job i's) instead of the
// seeded noise; --dump DIR writes every stage's tensors (DIR for one job, DIR/job-<i>
// for each of N jobs; docs/numerics.md).
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <iostream>
#include <mutex>

#include "actors/engine.hpp"
#include "actors/node_runtime.hpp"
#include "actors/trace.hpp"
#include "cli/cli11.hpp"
#include "cli/node_flags.hpp"
#include "cli/node_processes.hpp"
#include "cli/progress_display.hpp"
#include "cli/command.hpp"
#include "cli/command_support.hpp"
#include "core/dump.hpp"
#include "core/error.hpp"
#include "core/pipeline_spec.hpp"
#include "core/placement.hpp"
#include "core/request_check.hpp"
#include "stages/pipeline/latents_file.hpp"
#include "stages/post/image.hpp"
#include "stages/spec_check.hpp"

namespace fs = std::filesystem;

namespace {

using namespace stagecraft;

/// A multi-node file's run: the workers of every node but the head as child processes
/// (logs and traces in a temporary folder), the head in this process.
class SplitRun {
 public:
  std::unique_ptr<NodeRuntime> start(const std::string& file, const PipelineSpec& spec, const cli::NodeFlags& flags,
                                     bool trace) {
    char tmpl[] = "/tmp/stagecraft-run-XXXXXX";
    SC_CHECK(::mkdtemp(tmpl), Errc::io, "cannot make a temporary folder for the workers' logs in /tmp");
    dir_ = tmpl;
    const Placement placement = place(spec);
    for (const auto& n : spec.nodes) {
      if (n.name == placement.head) continue;
      std::vector<std::string> args = {"worker", file, "--node", n.name};
      for (auto& a : flags.args()) args.push_back(a);
      if (trace) args.insert(args.end(), {"--trace", trace_of(n.name)});
      kids_.start(n.name, args, dir_ + "/" + n.name + ".log");
    }
    head_name_ = placement.head;
    auto head = NodeRuntime::start(spec, flags.options(placement.head));
    // Every node up before the first job: a worker that cannot start (a taken port, a
    // stage that fails to load) is reported with its log instead of a job failure.
    const auto until = Clock::now() + std::chrono::seconds(120);
    for (;;) {
      const std::vector<std::string> missing = head->wait_for_nodes(std::chrono::milliseconds(200));
      if (missing.empty()) break;
      for (const auto& c : kids_.reap())
        SC_FAIL(Errc::io, "the worker of node '" << c.node << "' exited with status " << *c.status
                                                 << " before it was ready:\n" << cli::NodeProcesses::log_tail(c));
      std::string names;
      for (const auto& m : missing) names += (names.empty() ? "" : ", ") + m;
      SC_CHECK(Clock::now() < until, Errc::io,
               "nodes " << names << " did not connect within 120 s; their logs are in " << dir_);
    }
    return head;
  }

  /// Stops the workers (they write their traces) and merges the traces into `trace_path`.
  void stop(const std::string& trace_path, const NodeRuntime& head) {
    kids_.stop(std::chrono::seconds(30));
    for (const auto& c : kids_.children())
      if (*c.status != 0)
        std::cerr << "warning: the worker of node '" << c.node << "' exited with status " << *c.status << ":\n"
                  << cli::NodeProcesses::log_tail(c);
    if (trace_path.empty()) return;
    head.write_chrome_trace(trace_of(head_name_));
    std::vector<nlohmann::json> traces;
    for (const auto& n : all_nodes())
      if (std::ifstream in(trace_of(n)); in) traces.push_back(nlohmann::json::parse(in, nullptr, false));
    std::ofstream out(trace_path);
    SC_CHECK(out.good(), Errc::io, "cannot write trace file '" << trace_path << "'");
    out << actors::merge_chrome_traces(traces).dump() << "\n";
  }

  ~SplitRun() {
    kids_.stop(std::chrono::seconds(10));
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

 private:
  std::string trace_of(const std::string& node) const { return dir_ + "/" + node + ".trace.json"; }
  std::vector<std::string> all_nodes() const {
    std::vector<std::string> out = {head_name_};
    for (const auto& c : kids_.children()) out.push_back(c.node);
    return out;
  }
  std::string dir_, head_name_;
  cli::NodeProcesses kids_;
};

int run_run(const std::vector<std::string>& argv) {
  CLI::App app{"Run a pipeline file through the actor engine and write the image(s); byte-identical to "
               "`stagecraft generate` for the same seed and settings.",
               "stagecraft run"};
  cli::RequestFlags flags;
  std::string file, out = "out.png", trace_path, latents_file, dump_dir_arg;
  int64_t n = 1;
  bool quiet = false;
  cli::NodeFlags node_flags;
  app.add_option("FILE", file, "the pipeline file")->required()->check(CLI::ExistingFile);
  flags.add_to(app, "the pipeline's");
  app.add_option("--out", out, "PNG to write (OUT-0.png, OUT-1.png, ... for --n > 1)")->capture_default_str();
  app.add_option("--n", n, "jobs submitted at once, seeds S, S+1, ...")->capture_default_str()->check(
      CLI::Range(int64_t(1), int64_t(1) << 20));
  app.add_option("--trace", trace_path, "write a Chrome trace (open it in Perfetto)");
  app.add_option("--latents", latents_file, "initial noise, one row per job (docs/numerics.md)");
  app.add_option("--dump", dump_dir_arg, "write every stage's tensors (DIR, or DIR/job-<i> for --n > 1)");
  app.add_flag("--quiet", quiet, "print nothing on success");
  node_flags.add_to(app);
  if (auto rc = cli::parse(app, argv)) return *rc;
  cli::require_output_folder("--out", out);
  const int jobs = static_cast<int>(n);

  std::optional<PipelineSpec> loaded = cli::load_pipeline_or_report(file);
  if (!loaded) return 1;
  PipelineSpec& spec = *loaded;
  // --n jobs are submitted together: make room for them at the front door.
  spec.limits.max_pending_jobs = std::max(spec.limits.max_pending_jobs, jobs);

  // The door every request passes (core/request_check.hpp), before the engine loads a
  // model: a bad --steps, --guidance, size or prompt is refused here, naming the field.
  // The engine checks again at submit(), with each stage's own check (latent factor, scheduler).
  check_request(with_defaults(flags.request(0), spec.defaults), spec.limits);

  // Supplied noise: one row per job, checked before the engine loads anything.
  Tensor latents;
  if (!latents_file.empty()) {
    SC_CHECK(!spec.model_dir.empty(), Errc::invalid_argument,
             "--latents needs a pipeline with a model (set `model:` in " << spec.path << ")");
    auto size = [&](const char* key) {
      const int64_t v = std::string(key) == "width" ? flags.width : flags.height;
      if (v > 0) return static_cast<int>(v);
      const auto& d = spec.defaults;
      return d.contains(key) && d[key].is_number() ? d[key].get<int>() : 0;
    };
    latents = read_latents_file(latents_file, latent_geometry(spec.model_dir), jobs, size("width"), size("height"));
  }
  // A dumping job must run every stage itself: a prompt-cache hit would skip the text
  // encoder and leave its tensors out of the dump.
  const std::optional<std::string> dump_dir =
      dump_dir_arg.empty() ? std::nullopt : std::optional<std::string>(dump_dir_arg);
  if (dump_dir)
    for (auto& s : spec.stages) s.params.erase("cache");
  std::vector<std::shared_ptr<DumpWriter>> dumps;
  std::optional<SplitRun> split;
  std::unique_ptr<JobRunner> engine;
  if (spec.nodes.empty()) {
    engine = Engine::create(spec);
  } else {
    SC_CHECK(!dump_dir, Errc::unsupported,
             "--dump needs every stage in one process; run the single-process pipeline file to dump tensors");
    split.emplace();
    engine = split->start(file, spec, node_flags, !trace_path.empty());
  }

  cli::ProgressDisplay shown(jobs);
  std::vector<std::future<JobResult>> futs;
  for (int i = 0; i < jobs; ++i) {
    Request r = flags.request(i);
    if (latents.defined()) r.initial_latents = latents_row(latents, i);
    if (dump_dir) {
      r.dump = std::make_shared<DumpWriter>(jobs == 1 ? *dump_dir : (fs::path(*dump_dir) / ("job-" + std::to_string(i))).string());
      dumps.push_back(r.dump);
    }
    Engine::Progress progress;
    if (!quiet) progress = [&shown, i](int step, int total) { shown.step(i, step, total); };
    futs.push_back(engine->submit(r, progress));
  }

  int failed = 0;
  std::vector<JobResult> results;
  for (int i = 0; i < jobs; ++i) {
    results.push_back(futs[static_cast<size_t>(i)].get());
    if (!quiet) shown.done(i);
  }
  if (!quiet) shown.finish();
  for (int i = 0; i < jobs; ++i) {
    JobResult& res = results[static_cast<size_t>(i)];
    if (dump_dir) {
      // Written for failed jobs too: the stages that ran show where it went wrong.
      auto& d = *dumps[static_cast<size_t>(i)];
      d.set_manifest({{"pipeline", spec.path},
                      {"model", spec.model_dir},
                      {"job", i},
                      {"latents_file", latents_file}});
      d.flush();
      if (!quiet) std::cout << "wrote dump " << d.dir() << "\n";
    }
    if (!res.ok()) {
      std::cerr << "job " << i << " failed: " << errc_name(*res.error) << ": " << res.message << "\n";
      ++failed;
      continue;
    }
    const std::string path = cli::numbered_output(out, i, jobs);
    write_png(path, res.tensor("image").select(0, 0));
    if (!quiet) std::cout << "wrote " << path << " (seed " << static_cast<uint64_t>(flags.seed) + i << ")\n";
  }
  if (split) {
    engine->shutdown();
    split->stop(trace_path, *static_cast<NodeRuntime*>(engine.get()));
  }
  if (!trace_path.empty()) {
    if (!split) engine->write_chrome_trace(trace_path);
    if (!quiet) std::cout << "wrote trace " << trace_path << " (open it in https://ui.perfetto.dev)\n";
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
