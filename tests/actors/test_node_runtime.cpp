// The node runtime in one process: three nodes over ipc:// in a temporary folder, each
// with its own engines and sockets, as three workers would have. The multi-process
// cases (byte-identical PNGs, SIGKILL, namespaces) are tests/cli/test_disaggregated.py.
#include <doctest/doctest.h>

#include <fstream>
#include <thread>

#include "actors/node_runtime.hpp"
#include "core/device.hpp"
#include "core/pipeline_spec.hpp"
#include "tests/support/temp_dir.hpp"

using namespace stagecraft;

namespace {

/// a (head) -> b -> c with sleep stages; b's cost and the tensor size as given.
PipelineSpec three_nodes(const testing::TempDir& dir, double b_ms, long bytes, const std::string& extra = "") {
  const std::string path = dir / "split.yaml";
  std::ofstream(path) << "defaults: {steps: 1}\nlimits: {credits: 2}\nnodes:\n"
                      << "  a: {endpoint: 'ipc://" << (dir / "a.sock") << "'}\n"
                      << "  b: {endpoint: 'ipc://" << (dir / "b.sock") << "'}\n"
                      << "  c: {endpoint: 'ipc://" << (dir / "c.sock") << "'}\n"
                      << "stages:\n"
                      << "  - {name: sa, type: sleep, node: a, cost: {per_batch_ms: 1}, output_bytes: " << bytes << "}\n"
                      << "  - {name: sb, type: sleep, node: b, cost: {per_batch_ms: " << b_ms << "}}\n"
                      << "  - {name: sc, type: sleep, node: c, output_bytes: " << bytes
                      << ", output_name: last}\n"
                      << extra;
  return load_pipeline_spec(path);
}

struct Nodes {
  std::unique_ptr<NodeRuntime> a, b, c;
  explicit Nodes(const PipelineSpec& spec) {
    NodeOptions o;
    o.heartbeat = std::chrono::milliseconds(50);
    o.node_timeout = std::chrono::milliseconds(500);
    o.node = "c";
    c = NodeRuntime::start(spec, o);
    o.node = "b";
    b = NodeRuntime::start(spec, o);
    o.node = "a";
    a = NodeRuntime::start(spec, o);
    REQUIRE(a->wait_for_nodes(std::chrono::seconds(20)).empty());
    REQUIRE(b->wait_for_nodes(std::chrono::seconds(20)).empty());
    REQUIRE(c->wait_for_nodes(std::chrono::seconds(20)).empty());
  }
};

}  // namespace

TEST_CASE("jobs cross three nodes and come back to the head with every tensor and their progress") {
  testing::TempDir dir;
  Nodes n(three_nodes(dir, 2, 1 << 20));
  CHECK(n.a->is_head());
  CHECK_FALSE(n.b->is_head());
  std::vector<std::future<JobResult>> futs;
  for (int i = 0; i < 12; ++i) {
    Request r;
    r.prompt = "p";
    r.seed = uint64_t(i);
    futs.push_back(n.a->submit(r));
  }
  for (auto& f : futs) {
    JobResult r = f.get();
    REQUIRE_MESSAGE(r.ok(), r.message);
    CHECK(r.tensor("output").nbytes() == (1u << 20));
    CHECK(r.tensor("last").nbytes() == (1u << 20));
  }
  const EngineStats st = n.a->stats();
  CHECK(st.completed == 12);
  CHECK(st.pending == 0);
  const NodeStats b = n.b->node_stats();
  CHECK(b.jobs_entered == 12);
  CHECK(b.jobs_forwarded == 12);
  CHECK(b.inbound.packets == 12);
  CHECK(b.inbound.bytes >= 12u << 20);
  // CPU stages: every edge is on ZeroMQ, so no node binds or connects a GPU channel.
  CHECK(b.gpu_inbound_channel.empty());
  for (const auto& p : b.peers) CHECK(p.gpu_channel.empty());
}

TEST_CASE("jobs enter at the head only") {
  testing::TempDir dir;
  Nodes n(three_nodes(dir, 0, 16));
  JobResult r = n.b->submit(Request{}).get();
  REQUIRE(r.error);
  CHECK(*r.error == Errc::unsupported);
  CHECK(r.message.find("head node 'a'") != std::string::npos);
}

TEST_CASE("a job cancelled at the head is answered at once and dropped downstream") {
  testing::TempDir dir;
  Nodes n(three_nodes(dir, 300, 16));
  Request r;
  r.prompt = "slow";
  auto s = n.a->submit_with_callback(r, {}, [](const JobResult&) {});
  REQUIRE_FALSE(s.refused);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));  // on node b by now
  auto fut = std::async(std::launch::async, [&] { return n.a->cancel(s.id); });
  CHECK(fut.get());
  CHECK_FALSE(n.a->cancel(s.id));  // answered: nothing left to cancel
  CHECK(n.a->stats().cancelled == 1);
}

TEST_CASE("a request the head's checks refuse never enters a node") {
  testing::TempDir dir;
  Nodes n(three_nodes(dir, 0, 16));
  Request r;
  r.steps = -3;
  auto s = n.a->submit_with_callback(r, {}, [](const JobResult&) { FAIL("a refused job is never answered"); });
  REQUIRE(s.refused);
  CHECK(*s.refused->error == Errc::invalid_argument);
  CHECK(n.b->node_stats().jobs_entered == 0);
}

TEST_CASE("a node that stops answering fails the jobs it held with node_lost, naming it") {
  testing::TempDir dir;
  Nodes n(three_nodes(dir, 2000, 16));
  Request r;
  r.prompt = "held";
  auto fut = n.a->submit(r);
  std::this_thread::sleep_for(std::chrono::milliseconds(100));  // inside b's 2 s stage
  // b's socket goes away without a word: what the head sees of a killed worker.
  n.b->shutdown();
  const auto t0 = std::chrono::steady_clock::now();
  JobResult res = fut.get();
  REQUIRE(res.error);
  // b's own shutdown answers its job (cancelled) if its note gets out first; else the
  // heartbeats find b silent and the head answers node_lost. Either way: one answer.
  if (*res.error == Errc::node_lost) CHECK(res.message.find("node 'b'") != std::string::npos);
  else CHECK(*res.error == Errc::cancelled);
  CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(5));
  // With b gone, a new job fails at once instead of waiting for it.
  JobResult next = n.a->submit(r).get();
  REQUIRE(next.error);
  CHECK(*next.error == Errc::node_lost);
  CHECK(next.message.find("'b'") != std::string::npos);
  CHECK(n.a->stats().node_lost >= 1);
}

TEST_CASE("a node whose edge needs a GPU channel this build or host cannot run fails at start, naming the edge") {
  if (cuda_available()) {
    MESSAGE("skipped: a CUDA device is usable here, so the GPU channels start; scripts/device-check.sh runs them");
    return;
  }
  testing::TempDir dir;
  auto spec_with = [&](const std::string& channel) {
    const std::string path = dir / ("gpu-" + channel + ".yaml");
    std::ofstream(path) << "defaults: {steps: 1}\nnodes:\n"
                        << "  a: {endpoint: 'ipc://" << (dir / "a.sock") << "'}\n"
                        << "  b: {endpoint: 'ipc://" << (dir / "b.sock") << "'}\n"
                        << "stages:\n"
                        << "  - {name: sa, type: sleep, node: a, device: 'cuda:0'}\n"
                        << "  - {name: sb, type: sleep, node: b, device: 'cuda:0'}\n"
                        << "edges:\n  - {from: sa, to: sb, channel: " << channel << "}\n";
    return load_pipeline_spec(path);
  };
  NodeOptions o;
  for (const char* node : {"a", "b"}) {  // the sender and the receiver both refuse
    o.node = node;
    const PipelineSpec ipc = spec_with("cuda_ipc");
    CHECK_THROWS_WITH_AS(NodeRuntime::start(ipc, o),
                         doctest::Contains(":9:5: edge sa -> sb (node 'a' to node 'b') uses channel cuda_ipc "
                                           "(forced by the file), but "),
                         Error);
    CHECK_THROWS_WITH_AS(NodeRuntime::start(ipc, o), doctest::Contains("force `channel: zmq` on that edge"), Error);
    // auto: both stages on CUDA devices, both nodes on one host (ipc://).
    CHECK_THROWS_WITH_AS(NodeRuntime::start(spec_with("auto"), o),
                         doctest::Contains("uses channel cuda_ipc (chosen by auto: both stages on CUDA devices, on one host)"),
                         Error);
    CHECK_THROWS_WITH_AS(NodeRuntime::start(spec_with("nccl"), o), doctest::Contains("uses channel nccl (forced by the file)"),
                         Error);
  }
#ifdef STAGECRAFT_HAVE_CUDA
  const char* reason = "no CUDA device is usable here";
#else
  const char* reason = "this build of stagecraft has no CUDA";
#endif
  o.node = "b";
  CHECK_THROWS_WITH_AS(NodeRuntime::start(spec_with("cuda_ipc"), o), doctest::Contains(reason), Error);
  try {
    NodeRuntime::start(spec_with("cuda_ipc"), o);
  } catch (const Error& e) {
    CHECK(e.code() == Errc::unsupported);
  }
}

TEST_CASE("a node that would receive over GPU channels onto two devices is refused at start, naming both edges") {
  // y runs b (cuda:0) and d (cuda:1), each fed by x over CUDA IPC (one host): one GPU
  // socket per node delivers onto one device. Refused before any GPU is needed.
  testing::TempDir dir;
  const std::string path = dir / "two-devices.yaml";
  std::ofstream(path) << "nodes:\n"
                      << "  x: {endpoint: 'ipc://" << (dir / "x.sock") << "'}\n"
                      << "  y: {endpoint: 'ipc://" << (dir / "y.sock") << "'}\n"
                      << "stages:\n"
                      << "  - {name: a, type: sleep, node: x, device: 'cuda:0'}\n"
                      << "  - {name: b, type: sleep, node: y, device: 'cuda:0'}\n"
                      << "  - {name: c, type: sleep, node: x, device: 'cuda:0'}\n"
                      << "  - {name: d, type: sleep, node: y, device: 'cuda:1'}\n";
  const PipelineSpec spec = load_pipeline_spec(path);
  NodeOptions o;
  o.node = "y";
  CHECK_THROWS_WITH_AS(NodeRuntime::start(spec, o),
                       doctest::Contains("edge c -> d (node 'x' to node 'y') uses channel cuda_ipc (chosen by auto: "
                                         "both stages on CUDA devices, on one host), onto cuda:1; but "),
                       Error);
  CHECK_THROWS_WITH_AS(NodeRuntime::start(spec, o), doctest::Contains("a node receives over one GPU channel, onto one device"),
                       Error);
}
