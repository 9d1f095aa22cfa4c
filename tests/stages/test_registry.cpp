#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <dlfcn.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <thread>

#include "core/pipeline_spec.hpp"
#include "core/error.hpp"
#include "stages/builtin_stages.hpp"
#include "stages/spec_check.hpp"
#include "stages/stage.hpp"

using namespace stagecraft;
namespace fs = std::filesystem;

namespace {

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

const std::string kPlugin = std::string(STAGECRAFT_BINARY_DIR) + "/examples/custom_stage/libstagecraft_custom_stage.so";

class Echo : public Stage {
 public:
  explicit Echo(int tag) : tag_(tag) {}
  void run(std::vector<PacketPtr>& batch, Lane&) override {
    for (auto& p : batch) p->step = tag_;
  }
  int tag_;
};

Error error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e;
  }
  FAIL("expected a stagecraft::Error");
  return Error(Errc::internal, "");
}

}  // namespace

TEST_CASE("a registered type is known, listed sorted, created, and a second registration replaces it") {
  register_stage_type("test_echo", [] { return std::make_unique<Echo>(1); });
  CHECK(stage_type_known("test_echo"));
  CHECK(!stage_type_known("test_echo_not"));
  const auto types = stage_types();
  CHECK(std::is_sorted(types.begin(), types.end()));
  CHECK(std::find(types.begin(), types.end(), "test_echo") != types.end());

  auto s = create_stage("test_echo");
  REQUIRE(s);
  CHECK(dynamic_cast<Echo*>(s.get())->tag_ == 1);
  register_stage_type("test_echo", [] { return std::make_unique<Echo>(2); });
  CHECK(dynamic_cast<Echo*>(create_stage("test_echo").get())->tag_ == 2);
}

TEST_CASE("an unknown type is a not_found error that lists the known types") {
  register_builtin_stages();
  const Error e = error_of([] { create_stage("slep"); });
  CHECK(e.code() == Errc::not_found);
  const std::string msg = e.what();
  CHECK(contains(msg, "unknown stage type 'slep'"));
  CHECK(contains(msg, "known types: "));
  for (const char* t : {"sleep", "spin", "synthetic_denoiser"}) CHECK(contains(msg, t));
}

TEST_CASE("empty names and empty factories are refused") {
  CHECK(error_of([] { register_stage_type("", [] { return std::make_unique<Echo>(0); }); }).code() ==
        Errc::invalid_argument);
  CHECK(error_of([] { register_stage_type("test_null", nullptr); }).code() == Errc::invalid_argument);
}

TEST_CASE("registration and lookup from many threads at once lose nothing") {
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([t] {
      for (int i = 0; i < 50; ++i) {
        const std::string name = "test_mt_" + std::to_string(t) + "_" + std::to_string(i);
        register_stage_type(name, [i] { return std::make_unique<Echo>(i); });
        CHECK(create_stage(name) != nullptr);
        (void)stage_types();
      }
    });
  for (auto& th : threads) th.join();
  for (int t = 0; t < 4; ++t)
    for (int i = 0; i < 50; ++i) CHECK(stage_type_known("test_mt_" + std::to_string(t) + "_" + std::to_string(i)));
}

TEST_CASE("the built-in registration is explicit and covers the synthetic stages") {
  register_builtin_stages();
  register_builtin_stages();  // idempotent
  for (const char* t : {"sleep", "spin", "synthetic_denoiser"}) {
    INFO(t);
    CHECK(stage_type_known(t));
    CHECK(create_stage(t) != nullptr);
  }
  CHECK(create_stage("synthetic_denoiser")->traits().iterative);
  CHECK(!create_stage("sleep")->traits().iterative);
}

TEST_CASE("the example plugin loads and its stage runs") {
  REQUIRE_MESSAGE(fs::exists(kPlugin), "build target stagecraft_custom_stage first: " << kPlugin);
  load_stage_plugin(kPlugin);
  load_stage_plugin(kPlugin);  // a second load is a no-op
  REQUIRE(stage_type_known("affine"));

  auto stage = create_stage("affine");
  StageContext ctx;
  ctx.name = "brighten";
  ctx.type = "affine";
  ctx.params = {{"input", "x"}, {"output", "y"}, {"scale", 2.0}, {"shift", 1.0}};
  stage->load(ctx);
  auto p = std::make_shared<Packet>();
  p->tensors["x"] = Tensor::from_vector({1.f, -2.f, 3.5f}, {3});
  std::vector<PacketPtr> batch{p};
  auto lane = Lane::create(Device::cpu(), "plugin-test");
  stage->run(batch, *lane);
  CHECK(p->tensor("y").to_vector() == std::vector<float>{3.f, -3.f, 8.f});
  CHECK(p->tensor("x").to_vector() == std::vector<float>{1.f, -2.f, 3.5f});  // input untouched

  ctx.device = Device::cuda(0);
  const Error e = error_of([&] { create_stage("affine")->load(ctx); });
  CHECK(contains(e.what(), "runs on the CPU only"));
}

TEST_CASE("a missing plugin path is a not_found error naming the path") {
  const Error e = error_of([] { load_stage_plugin("/no/such/dir/libplugin.so"); });
  CHECK(e.code() == Errc::not_found);
  CHECK(contains(e.what(), "'/no/such/dir/libplugin.so' not found"));
  CHECK(contains(e.what(), "stagecraft_register_stages"));
}

TEST_CASE("a file that is not a library is an io error with the loader's reason") {
  const fs::path bad = fs::temp_directory_path() / ("sc_not_a_lib_" + std::to_string(::getpid()) + ".so");
  std::ofstream(bad) << "this is not an ELF file\n";
  const Error e = error_of([&] { load_stage_plugin(bad.string()); });
  fs::remove(bad);
  CHECK(e.code() == Errc::io);
  CHECK(contains(e.what(), "cannot load stage plugin '" + bad.string() + "'"));
  // dlerror's own words, e.g. "invalid ELF header" or "file too short".
  CHECK((contains(e.what(), "ELF") || contains(e.what(), "too short")));
}

TEST_CASE("a library without the registration function names the missing symbol") {
  Dl_info info{};
  REQUIRE(dladdr(reinterpret_cast<void*>(static_cast<double (*)(double)>(&::cos)), &info) != 0);
  REQUIRE(info.dli_fname != nullptr);
  const std::string libm = info.dli_fname;  // a real shared library that is no plugin
  const Error e = error_of([&] { load_stage_plugin(libm); });
  CHECK(e.code() == Errc::not_found);
  CHECK(contains(e.what(), libm));
  CHECK(contains(e.what(), "does not export the symbol stagecraft_register_stages"));
}

TEST_CASE("check_stage_types reports unknown types at their stage with the known ones") {
  const auto spec = parse_pipeline_spec(
      "stages:\n  - {name: a, type: sleep}\n  - {name: b, type: sleeep}\n  - {name: c, type: spin}\n", "t.yaml", ".");
  const auto problems = check_stage_types(spec);
  REQUIRE(problems.size() == 1);
  CHECK(problems[0].loc.line == 3);
  CHECK(problems[0].loc.col == 5);
  CHECK(contains(problems[0].what, "unknown stage type 'sleeep' for stage 'b'"));
  CHECK(contains(problems[0].allowed, "synthetic_denoiser"));
  CHECK(contains(problems[0].allowed, "did you mean 'sleep'?"));
  CHECK(contains(problems[0].str(), "t.yaml:3:5: unknown stage type 'sleeep'"));
}

TEST_CASE("a batch that credits keep from filling is a warning that says what to set") {
  const auto spec = parse_pipeline_spec(
      "limits: {credits: 4}\nstages:\n  - {name: a, type: sleep, batching: {max_batch: 2}}\n"
      "  - {name: d, type: synthetic_denoiser, batching: {max_batch: 8}}\n"
      "  - {name: e, type: synthetic_denoiser, batching: {max_batch: 8}, queue_limit: 8}\n",
      "w.yaml", ".");
  const auto warnings = batching_warnings(spec);
  REQUIRE(warnings.size() == 1);
  CHECK(warnings[0].loc.line == 4);
  CHECK(contains(warnings[0].what, "stage 'd' batches up to 8"));
  CHECK(contains(warnings[0].what, "never exceed 4"));
  CHECK(contains(warnings[0].allowed, "queue_limit: 8"));
}

TEST_CASE("the shipped pipelines let their batches fill") {
  for (const char* f : {"tiny-shapes.yaml", "synthetic-denoise.yaml", "synthetic-chain8.yaml"}) {
    const auto spec = load_pipeline_spec(std::string(STAGECRAFT_SOURCE_DIR) + "/pipelines/" + f);
    CHECK_MESSAGE(batching_warnings(spec).empty(), f);
  }
}

TEST_CASE("stage types are checked on what parsed of a file with other problems") {
  try {
    parse_pipeline_spec(
        "stages:\n  - {name: a, type: slep, replicas: 0}\n  - {name: b, type: sleep}\n"
        "  - {name: c, type: affine, plugin: missing.so}\n",
        "t.yaml", ".");
    FAIL("expected SpecError");
  } catch (const SpecError& e) {
    REQUIRE(e.problems.size() == 2);  // replicas, and the plugin file
    REQUIRE(e.partial.stages.size() == 2);  // c left out: its type hangs on the missing plugin
    const auto types = check_stage_types(e.partial);
    REQUIRE(types.size() == 1);
    CHECK(types[0].loc.line == 2);
    CHECK(contains(types[0].what, "unknown stage type 'slep'"));
  }
}

TEST_CASE("check_stage_types loads a stage's plugin, and reports one that fails") {
  REQUIRE(fs::exists(kPlugin));
  const std::string dir = fs::path(kPlugin).parent_path().string();
  auto spec = parse_pipeline_spec(
      "stages:\n  - {name: d, type: synthetic_denoiser}\n"
      "  - {name: x, type: affine, plugin: libstagecraft_custom_stage.so, scale: 3}\n",
      "p.yaml", dir);
  CHECK(spec.stages[1].params["scale"] == 3);
  CHECK(check_stage_types(spec).empty());

  spec.stages[1].plugin = "/no/such/plugin.so";  // e.g. deleted after validation
  const auto problems = check_stage_types(spec);
  REQUIRE(problems.size() == 1);
  CHECK(problems[0].loc.line == 3);
  CHECK(contains(problems[0].what, "/no/such/plugin.so"));
}

TEST_CASE("the shipped synthetic pipelines name only known stage types") {
  for (const char* name : {"synthetic-overlap.yaml", "synthetic-chain8.yaml", "synthetic-denoise.yaml"}) {
    INFO(name);
    const auto spec = load_pipeline_spec(std::string(STAGECRAFT_SOURCE_DIR) + "/pipelines/" + name);
    CHECK(check_stage_types(spec).empty());
  }
}
