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
