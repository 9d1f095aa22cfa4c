// Which stages run where: runs of stages per node, the head, the file hash nodes compare.
#include <doctest/doctest.h>

#include <fstream>

#include "core/error.hpp"
#include "core/placement.hpp"
#include "tests/support/temp_dir.hpp"

using namespace stagecraft;

namespace {

PipelineSpec spec_of(const std::string& stages) {
  return parse_pipeline_spec("nodes:\n  enc: {endpoint: 'ipc:///tmp/e'}\n  d1: {endpoint: 'ipc:///tmp/d1'}\n"
                             "  d2: {endpoint: 'ipc:///tmp/d2'}\n  v: {endpoint: 'ipc:///tmp/v'}\nstages:\n" +
                                 stages,
                             "p.yaml", ".");
}

std::vector<std::pair<int, int>> runs(const Placement& p, const std::string& node) {
  std::vector<std::pair<int, int>> out;
  for (Segment s : p.segments_of(node)) out.emplace_back(s.first, s.last);
  return out;
}

}  // namespace

TEST_CASE("consecutive stages of one node form one run, and the head is the first stage's node") {
  const PipelineSpec spec = spec_of(
      "  - {name: a, type: sleep, node: enc}\n  - {name: b, type: sleep, node: d1}\n"
      "  - {name: c, type: sleep, node: v}\n  - {name: d, type: sleep, node: v}\n");
  const Placement p = place(spec);
  CHECK(p.head == "enc");
  CHECK(runs(p, "enc") == std::vector<std::pair<int, int>>{{0, 0}});
  CHECK(runs(p, "d1") == std::vector<std::pair<int, int>>{{1, 1}});
  CHECK(runs(p, "v") == std::vector<std::pair<int, int>>{{2, 3}});
  CHECK(runs(p, "d2").empty());
  const PipelineSpec one = segment_spec(spec, p, {2, 3});
  REQUIRE(one.stages.size() == 2);
  CHECK(one.stages[0].name == "c");
  CHECK(one.nodes.empty());
  CHECK(one.stages[0].node.empty());
}

TEST_CASE("a run starts wherever a packet can arrive from another node") {
  // b runs on d1 and d2; c runs on d2 only: d1 sends its packets for c to d2, so d2 needs
  // a run that starts at c as well as the one that starts at b.
  const PipelineSpec spec = spec_of(  // outlives the placement, which points into it
      "  - {name: a, type: sleep, node: enc}\n  - {name: b, type: sleep, node: [d1, d2]}\n"
      "  - {name: c, type: sleep, node: d2}\n  - {name: d, type: sleep, node: v}\n");
  const Placement p = place(spec);
  CHECK(runs(p, "d1") == std::vector<std::pair<int, int>>{{1, 1}});
  CHECK(runs(p, "d2") == std::vector<std::pair<int, int>>{{1, 1}, {2, 2}});
  CHECK(p.runs_on(1, "d2"));
  CHECK_FALSE(p.runs_on(2, "d1"));
}

TEST_CASE("the first stage runs on one node: jobs enter at the head") {
  const PipelineSpec spec = spec_of("  - {name: a, type: sleep, node: [enc, d1]}\n  - {name: b, type: sleep, node: v}\n");
  CHECK_THROWS_WITH_AS(place(spec), doctest::Contains("stage 'a' is where jobs enter, so it runs on one node"), Error);
}

TEST_CASE("the pipeline hash changes with any byte of the file") {
  testing::TempDir dir;
  const std::string a = dir / "a.yaml", b = dir / "b.yaml";
  const std::string text = "stages:\n  - {name: a, type: sleep}\n";
  std::ofstream(a) << text;
  std::ofstream(b) << text << "# a comment\n";
  PipelineSpec sa, sb;
  sa.path = a;
  sb.path = b;
  CHECK(pipeline_hash(sa).size() == 16);
  CHECK(pipeline_hash(sa) == pipeline_hash(sa));
  CHECK(pipeline_hash(sa) != pipeline_hash(sb));
}

namespace {

/// Two stages on nodes x and y (endpoints as given), on the devices given, the edge's channel as given.
PipelineSpec two_nodes(const std::string& x, const std::string& y, const std::string& dev_a, const std::string& dev_b,
                       const std::string& channel = "auto") {
  return parse_pipeline_spec("nodes:\n  x: " + x + "\n  y: " + y +
                                 "\nstages:\n"
                                 "  - {name: a, type: sleep, node: x, device: '" +
                                 dev_a + "'}\n  - {name: b, type: sleep, node: y, device: '" + dev_b +
                                 "'}\nedges:\n  - {from: a, to: b, channel: " + channel + "}\n",
                             "p.yaml", ".");
}

ChannelKind channel_of(const PipelineSpec& spec) {
  const Placement p = place(spec);
  return p.channel(spec, 0, "x", "y");
}

}  // namespace

TEST_CASE("auto picks CUDA IPC between GPUs of one host, NCCL across hosts, and ZeroMQ otherwise") {
  const std::string ipc_x = "{endpoint: 'ipc:///tmp/x'}", ipc_y = "{endpoint: 'ipc:///tmp/y'}";
  CHECK(channel_of(two_nodes(ipc_x, ipc_y, "cuda:0", "cuda:0")) == ChannelKind::cuda_ipc);
  CHECK(channel_of(two_nodes(ipc_x, ipc_y, "cuda:0", "cpu")) == ChannelKind::zmq);
  CHECK(channel_of(two_nodes(ipc_x, ipc_y, "cpu", "cpu")) == ChannelKind::zmq);
  // The host is read from the endpoint: the same literal, or loopback and ipc, is one host.
  CHECK(channel_of(two_nodes("{endpoint: 'tcp://10.0.0.2:7101'}", "{endpoint: 'tcp://10.0.0.2:7102'}", "cuda:0",
                             "cuda:1")) == ChannelKind::cuda_ipc);
  CHECK(channel_of(two_nodes("{endpoint: 'tcp://127.0.0.1:7101'}", ipc_y, "cuda:0", "cuda:0")) ==
        ChannelKind::cuda_ipc);
  CHECK(channel_of(two_nodes("{endpoint: 'tcp://10.0.0.2:7101'}", "{endpoint: 'tcp://10.0.0.3:7102'}", "cuda:0",
                             "cuda:0")) == ChannelKind::nccl);
  // `host:` says what an endpoint cannot: two names of one machine, or two machines.
  CHECK(channel_of(two_nodes("{endpoint: 'tcp://enc-svc:7101', host: gpu1}", "{endpoint: 'tcp://dit-svc:7102', host: gpu1}",
                             "cuda:0", "cuda:1")) == ChannelKind::cuda_ipc);
  CHECK(channel_of(two_nodes("{endpoint: 'ipc:///tmp/x', host: a}", "{endpoint: 'ipc:///tmp/y', host: b}", "cuda:0",
                             "cuda:0")) == ChannelKind::nccl);
}

TEST_CASE("a forced channel wins across nodes, and within one node packets move by handle") {
  const std::string x = "{endpoint: 'tcp://10.0.0.2:7101'}", y = "{endpoint: 'tcp://10.0.0.3:7102'}";
  CHECK(channel_of(two_nodes(x, y, "cuda:0", "cuda:0", "zmq")) == ChannelKind::zmq);
  CHECK(channel_of(two_nodes(x, y, "cuda:0", "cuda:0", "cuda_ipc")) == ChannelKind::cuda_ipc);
  CHECK(channel_of(two_nodes("{endpoint: 'ipc:///tmp/x'}", "{endpoint: 'ipc:///tmp/y'}", "cuda:0", "cuda:1", "nccl")) ==
        ChannelKind::nccl);
  const PipelineSpec spec = two_nodes(x, y, "cuda:0", "cuda:0", "zmq");
  const Placement p = place(spec);
  CHECK(p.forced == std::vector<std::string>{"zmq"});
  CHECK(p.channel(spec, 0, "x", "x") == ChannelKind::local);
  CHECK_THROWS_WITH_AS(choose_channel(spec, "local", spec.stages[0], "x", spec.stages[1], "y"),
                       doctest::Contains("forces channel local, but its stages run in different processes"), Error);
  CHECK(std::string(channel_name(ChannelKind::nccl)) == "nccl");
}

TEST_CASE("the GPU endpoint and the host of a node are derived from its endpoint unless given") {
  NodeSpec n;
  n.endpoint = "ipc:///tmp/dit.sock";
  CHECK(gpu_endpoint_of(n) == "ipc:///tmp/dit.sock.gpu");
  CHECK(host_of(n) == "localhost");
  n.endpoint = "tcp://Dit-Host:7102";
  CHECK(gpu_endpoint_of(n) == "tcp://Dit-Host:8102");
  CHECK(host_of(n) == "dit-host");
  n.endpoint = "tcp://[::1]:7102";
  CHECK(gpu_endpoint_of(n) == "tcp://[::1]:8102");
  CHECK(host_of(n) == "localhost");
  n.endpoint = "tcp://127.0.0.5:64535";
  CHECK(gpu_endpoint_of(n) == "tcp://127.0.0.5:65535");
  CHECK(host_of(n) == "localhost");
  n.endpoint = "tcp://h:64536";  // port + 1000 is past 65535
  CHECK(gpu_endpoint_of(n).empty());
  n.endpoint = "tcp://h:http";
  CHECK(gpu_endpoint_of(n).empty());
  n.gpu_endpoint = "tcp://h:9000";
  n.host = "rack1-gpu3";
  CHECK(gpu_endpoint_of(n) == "tcp://h:9000");
  CHECK(host_of(n) == "rack1-gpu3");
}

TEST_CASE("a node binds its GPU socket at the gpu_endpoint, on --listen's host when that is given") {
  CHECK(gpu_bind_address("tcp://dit-svc:8102", "", "") == "tcp://dit-svc:8102");
  CHECK(gpu_bind_address("tcp://dit-svc:8102", "tcp://*:7102", "") == "tcp://*:8102");
  CHECK(gpu_bind_address("tcp://dit-svc:8102", "tcp://*:7102", "tcp://0.0.0.0:9000") == "tcp://0.0.0.0:9000");
  CHECK(gpu_bind_address("ipc:///run/dit.sock.gpu", "tcp://*:7102", "") == "ipc:///run/dit.sock.gpu");
  CHECK(gpu_bind_address("tcp://dit-svc:8102", "ipc:///run/dit.sock", "") == "tcp://dit-svc:8102");
}

TEST_CASE("validate warns of nccl forced between nodes of one host on the same GPU, and only then") {
  const std::string x = "{endpoint: 'ipc:///tmp/x'}", y = "{endpoint: 'ipc:///tmp/y'}";
  auto w = channel_warnings(two_nodes(x, y, "cuda:0", "cuda:0", "nccl"));
  REQUIRE(w.size() == 1);
  CHECK(w[0].loc.line == 8);
  CHECK(w[0].what.find("NCCL refuses two ranks on one GPU") != std::string::npos);
  CHECK(w[0].allowed.find("cuda_ipc") != std::string::npos);
  CHECK(channel_warnings(two_nodes(x, y, "cuda:0", "cuda:1", "nccl")).empty());
  CHECK(channel_warnings(two_nodes(x, y, "cuda:0", "cuda:0", "cuda_ipc")).empty());
  CHECK(channel_warnings(two_nodes("{endpoint: 'tcp://10.0.0.2:7101'}", "{endpoint: 'tcp://10.0.0.3:7102'}", "cuda:0",
                                   "cuda:0", "nccl"))
            .empty());
}
