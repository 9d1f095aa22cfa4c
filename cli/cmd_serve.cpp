// stagecraft serve FILE: the job service. Loads the pipeline into an engine and
// answers the job protocol (docs/protocol.md) on a ZeroMQ ROUTER, loopback unless
// told otherwise. SIGTERM or SIGINT drains: no new jobs are accepted, every job in
// flight gets its terminal reply, then the process exits 0.
#include "actors/engine.hpp"
#include "cli/cli11.hpp"
#include "cli/command.hpp"
#include "cli/command_support.hpp"
#include "cli/serve_flags.hpp"
#include "core/pipeline_spec.hpp"

namespace {

using namespace stagecraft;

int run_serve(const std::vector<std::string>& argv) {
  CLI::App app{"Serve a pipeline to clients over ZeroMQ (docs/protocol.md). SIGTERM drains and exits 0.",
               "stagecraft serve"};
  std::string file;
  cli::ServeFlags flags;
  app.add_option("FILE", file, "the pipeline file")->required()->check(CLI::ExistingFile);
  flags.add_to(app);
  if (auto rc = cli::parse(app, argv)) return *rc;

  std::optional<PipelineSpec> loaded = cli::load_pipeline_or_report(file);
  if (!loaded) return 1;
  PipelineSpec& spec = *loaded;
  SC_CHECK(spec.nodes.empty(), Errc::invalid_argument,
           file << " places its stages on " << spec.nodes.size()
                << " nodes: start them with `stagecraft launch " << file
                << "` (the head node serves jobs), or one by one with `stagecraft worker " << file << " --node NAME`");
  auto engine = Engine::create(spec);
  const int rc = flags.serve(*engine, spec, file, app);
  engine->shutdown();
  return rc;
}

}  // namespace

STAGECRAFT_COMMAND(serve, "FILE [--bind ADDR] [--help]", "serve a pipeline to clients over ZeroMQ (docs/protocol.md)",
                   run_serve);
