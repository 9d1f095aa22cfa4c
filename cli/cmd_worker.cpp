// stagecraft worker FILE --node NAME: hosts one node of a pipeline split over
// processes (actors/node_runtime.hpp). The node may also come from STAGECRAFT_NODE,
// so Slurm (srun), a Kubernetes pod or systemd can start workers with no wrapper.
// The head node (the one with the first stage) also serves the job protocol
// (--bind, --http as for `stagecraft serve`), its /metrics with its channels added;
// any node serves its own /metrics, /healthz and /readyz when given --metrics-http
// (service/node_http.hpp). SIGTERM or SIGINT stops the worker (the head drains
// first: every accepted job is answered).
//
// stagecraft launch FILE: starts a worker per node of the file as child
// processes, forwards SIGINT / SIGTERM to them, and exits when they have stopped.
#include <algorithm>
#include <atomic>
#include <csignal>
#include <cstdio>
#include <functional>
#include <iostream>
#include <memory>
#include <optional>
#include <tuple>
#include <utility>
#include <thread>

#include "actors/node_runtime.hpp"
#include "cli/cli11.hpp"
#include "cli/command.hpp"
#include "cli/command_support.hpp"
#include "cli/node_flags.hpp"
#include "cli/node_processes.hpp"
#include "cli/serve_flags.hpp"
#include "core/placement.hpp"
#include "service/node_http.hpp"
#include "service/node_metrics.hpp"
#include "service/service_metrics.hpp"

namespace {

using namespace stagecraft;

std::atomic<int> g_signal{0};
extern "C" void on_signal(int sig) { g_signal.store(sig); }

std::string stage_names(const PipelineSpec& spec, const std::string& node) {
  std::string out;
  for (const auto& s : spec.stages)
    if (std::find(s.nodes.begin(), s.nodes.end(), node) != s.nodes.end()) out += (out.empty() ? "" : ", ") + s.name;
  return out;
}

void print_node_stats(const NodeRuntime& rt) {
  const NodeStats s = rt.node_stats();
  std::fprintf(stderr,
               "node %s: %llu packets in, %llu entered its stages, %llu sent on, %llu messages refused "
               "(%llu of them malformed packets)\n",
               rt.node().c_str(), (unsigned long long)s.inbound.packets, (unsigned long long)s.jobs_entered,
               (unsigned long long)s.jobs_forwarded, (unsigned long long)s.inbound.refused,
               (unsigned long long)s.refused_malformed);
  for (const auto& p : s.peers)
    std::fprintf(stderr, "node %s -> %s: %llu packets, %llu bytes, %llu times lost%s\n", rt.node().c_str(),
                 p.node.c_str(), (unsigned long long)p.channel.packets, (unsigned long long)p.channel.bytes,
                 (unsigned long long)p.losses, p.ready ? "" : ", not connected now");
  for (const auto& p : s.peers)
    if (!p.gpu_channel.empty())
      std::fprintf(stderr, "node %s -> %s over %s: %llu packets, %llu bytes%s\n", rt.node().c_str(), p.node.c_str(),
                   p.gpu_channel.c_str(), (unsigned long long)p.gpu.packets, (unsigned long long)p.gpu.bytes,
                   p.gpu_ready ? "" : ", not connected now");
  if (!s.gpu_inbound_channel.empty())
    std::fprintf(stderr, "node %s: %llu packets in over %s (%llu bytes), %llu refused or failed\n", rt.node().c_str(),
                 (unsigned long long)s.gpu_inbound.packets, s.gpu_inbound_channel.c_str(),
                 (unsigned long long)s.gpu_inbound.bytes, (unsigned long long)s.gpu_inbound.refused);
  if (s.notes_dropped)
    std::fprintf(stderr, "node %s: %llu notes dropped (their node was not connected)\n", rt.node().c_str(),
                 (unsigned long long)s.notes_dropped);
}

/// --metrics-http: /healthz, /readyz (every node this one sends to has welcomed it) and
/// /metrics (its channels, then its stages' figures), on any node.
std::unique_ptr<service::NodeHttp> start_node_http(const NodeRuntime& rt,
                                                   const std::pair<std::string, uint16_t>& address,
                                                   int64_t read_timeout_ms,
                                                   std::function<std::string()> node_metrics) {
  service::NodeHttpOptions o;
  std::tie(o.host, o.port) = address;
  o.read_timeout = std::chrono::milliseconds(read_timeout_ms);
  o.ready = [&rt] {
    for (const auto& p : rt.node_stats().peers)
      if (!p.ready) return false;
    return true;
  };
  const auto t0 = Clock::now();
  o.metrics = [&rt, node_metrics = std::move(node_metrics), t0] {
    service::PrometheusText stages;
    service::add_stage_figures(stages, rt.stats(), std::chrono::duration<double>(Clock::now() - t0).count());
    return node_metrics() + stages.str();
  };
  auto http = std::make_unique<service::NodeHttp>(o);
  std::fprintf(stderr, "node %s: HTTP on http://%s:%u (/metrics, /healthz, /readyz)\n", rt.node().c_str(),
               o.host.c_str(), unsigned(http->port()));
  return http;
}

int run_worker(const std::vector<std::string>& argv) {
  CLI::App app{"Host one node of a pipeline split over processes (docs/disaggregation.md). The head node "
               "(the one with the first stage) also serves jobs like `stagecraft serve`.",
               "stagecraft worker"};
  std::string file, node, trace_path;
  cli::NodeFlags nf;
  cli::ServeFlags serve;
  app.add_option("FILE", file, "the pipeline file (every node must be started from the same file)")
      ->required()->check(CLI::ExistingFile);
  app.add_option("--node", node, "which node of the file this process is")->required()->envname("STAGECRAFT_NODE");
  nf.add_to(app);
  std::string listen;
  app.add_option("--listen", listen,
                 "bind this address instead of the node's endpoint (e.g. tcp://*:7102 when the endpoint is a "
                 "name other nodes connect to, like a Kubernetes Service)")
      ->envname("STAGECRAFT_LISTEN");
  std::string gpu_listen;
  app.add_option("--gpu-listen", gpu_listen,
                 "bind this address for GPU channels (CUDA IPC, NCCL) instead of the node's gpu_endpoint (default: "
                 "with --listen, the gpu_endpoint's port on --listen's host)")
      ->envname("STAGECRAFT_GPU_LISTEN");
  app.add_option("--trace", trace_path, "write this node's Chrome trace here when it stops");
  std::string metrics_http;
  app.add_option("--metrics-http", metrics_http,
                 "HOST:PORT where this node serves its own /metrics (its channels and stages), /healthz and "
                 "/readyz, for scrapes and probes of any node (default: none; the head's job service keeps "
                 "its --http)")
      ->envname("STAGECRAFT_METRICS_HTTP");
  serve.add_to(app);
  if (auto rc = cli::parse(app, argv)) return *rc;

  std::optional<std::pair<std::string, uint16_t>> metrics_address;  // checked before any loading
  if (!metrics_http.empty()) metrics_address = cli::http_address("--metrics-http", metrics_http);
  std::optional<PipelineSpec> loaded = cli::load_pipeline_or_report(file);
  if (!loaded) return 1;
  const PipelineSpec& spec = *loaded;
  NodeOptions options = nf.options(node);
  options.listen = listen;
  options.gpu_listen = gpu_listen;
  auto rt = NodeRuntime::start(spec, options);
  std::fprintf(stderr, "node %s on %s (stages: %s)%s\n", node.c_str(), rt->endpoint().c_str(),
               stage_names(spec, node).c_str(), rt->is_head() ? ", the head: jobs enter here" : "");
  std::signal(SIGTERM, on_signal);
  std::signal(SIGINT, on_signal);
  auto node_metrics = [&rt] {
    service::PrometheusText out;
    service::add_node_metrics(out, rt->node(), rt->node_stats());
    return out.str();
  };
  // From now on: alive (/healthz) while it waits for the others, ready once they are there.
  std::unique_ptr<service::NodeHttp> http;
  if (metrics_address) http = start_node_http(*rt, *metrics_address, serve.http_read_timeout_ms, node_metrics);
  // Connect to the nodes this one talks to. The head serves jobs only once every node is
  // there (a job would otherwise fail at once for want of one); any node stops at a
  // refused handshake (another pipeline file or format version), which it prints.
  auto missing = rt->wait_for_nodes(std::chrono::milliseconds(0));
  for (auto last_said = Clock::now(); !missing.empty() && g_signal.load() == 0;) {
    missing = rt->wait_for_nodes(std::chrono::milliseconds(100));
    if (!missing.empty() && Clock::now() - last_said > std::chrono::seconds(5)) {
      std::string names;
      for (const auto& m : missing) names += (names.empty() ? "" : ", ") + m;
      std::fprintf(stderr, "node %s: waiting for %s\n", node.c_str(), names.c_str());
      last_said = Clock::now();
    }
  }
  if (g_signal.load() == 0) std::fprintf(stderr, "node %s: every node connected\n", node.c_str());
  int rc = 0;
  if (rt->is_head() && g_signal.load() == 0) {
    serve.opt.extra_metrics = node_metrics;
    rc = serve.serve(*rt, spec, file, app);
  } else {
    while (g_signal.load() == 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      rt->wait_for_nodes(std::chrono::milliseconds(0));  // throws if a restarted peer refuses us
    }
  }
  http.reset();
  if (!trace_path.empty()) rt->write_chrome_trace(trace_path);
  print_node_stats(*rt);
  rt->shutdown();
  return rc;
}

int run_launch(const std::vector<std::string>& argv) {
  CLI::App app{"Start every node of a pipeline file as a worker process on this host; SIGINT / SIGTERM stop "
               "them all. The head node serves jobs (stagecraft submit).",
               "stagecraft launch"};
  std::string file, bind, http;
  cli::NodeFlags nf;
  app.add_option("FILE", file, "the pipeline file")->required()->check(CLI::ExistingFile);
  nf.add_to(app);
  app.add_option("--bind", bind, "the head's job-service address (default: as `stagecraft serve`)");
  app.add_option("--http", http, "the head's HTTP side, HOST:PORT or off (default: as `stagecraft serve`)");
  if (auto rc = cli::parse(app, argv)) return *rc;
  std::optional<PipelineSpec> loaded = cli::load_pipeline_or_report(file);
  if (!loaded) return 1;
  const PipelineSpec& spec = *loaded;
  SC_CHECK(!spec.nodes.empty(), Errc::invalid_argument,
           file << " declares no `nodes:`: it runs in one process; use `stagecraft serve " << file << "`");
  const Placement placement = place(spec);

  std::signal(SIGTERM, on_signal);
  std::signal(SIGINT, on_signal);
  cli::NodeProcesses kids;
  for (const auto& n : spec.nodes) {
    std::vector<std::string> args = {"worker", file, "--node", n.name};
    for (auto& a : nf.args()) args.push_back(a);
    if (n.name == placement.head) {
      if (!bind.empty()) args.insert(args.end(), {"--bind", bind});
      if (!http.empty()) args.insert(args.end(), {"--http", http});
    }
    kids.start(n.name, args);
  }
  std::fprintf(stderr, "launched %zu nodes of %s; Ctrl-C or SIGTERM stops them\n", spec.nodes.size(), file.c_str());
  int failed = 0;
  for (;;) {
    if (const int sig = g_signal.exchange(0)) kids.signal_all(sig == SIGINT ? SIGTERM : sig);
    for (const auto& c : kids.reap())
      if (*c.status != 0) {
        ++failed;
        std::fprintf(stderr, "node %s exited with status %d; stopping the others\n", c.node.c_str(), *c.status);
        kids.signal_all(SIGTERM);
      }
    if (kids.wait(std::chrono::milliseconds(0))) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return failed ? 1 : 0;
}

}  // namespace

STAGECRAFT_COMMAND(worker, "FILE --node NAME [--help]", "host one node of a pipeline split over processes", run_worker);
STAGECRAFT_COMMAND(launch, "FILE [--help]", "start every node of a pipeline file as worker processes", run_launch);
