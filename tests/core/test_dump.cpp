#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <functional>

#include "core/dump.hpp"
#include "core/error.hpp"
#include "core/safetensors.hpp"
#include "tests/support/temp_dir.hpp"

using namespace stagecraft;
namespace fs = std::filesystem;

namespace {

// Dump folders live in one temp folder per test process, removed at exit (they used to be
// left behind in /tmp, one per run).
fs::path fresh_dir(const std::string& name) {
  static const stagecraft::testing::TempDir run_dir;
  fs::path p = run_dir.path / name;
  fs::remove_all(p);
  fs::create_directories(p);
  return p;
}

Tensor ramp(const Shape& shape, float start) {
  std::vector<float> v(shape_numel(shape));
  for (size_t i = 0; i < v.size(); ++i) v[i] = start + 0.25f * static_cast<float>(i);
  return Tensor::from_vector(v, shape);
}

void write_run(const fs::path& dir, float perturb_step1) {
  DumpWriter w(dir.string());
  w.add("text", "prompt_embeds", ramp({1, 4, 8}, 0.0f));
  w.add("denoise", "latents.step_000", ramp({1, 4, 4, 4}, 1.0f));
  Tensor step1 = ramp({1, 4, 4, 4}, 2.0f);
  step1.data_as<float>()[37] += perturb_step1;
  w.add("denoise", "latents.step_001", step1);
  w.add("denoise", "latents.step_002", ramp({1, 4, 4, 4}, 3.0f + perturb_step1));
  w.add("decode", "image", ramp({1, 3, 8, 8}, -1.0f));
  w.set_manifest({{"scheduler", "flow_match_euler"}, {"timesteps", {1000.0, 500.0}}});
  w.flush();
}

}  // namespace

TEST_CASE("a dump writes one safetensors file per stage and a manifest listing them in order") {
  const fs::path dir = fresh_dir("roundtrip");
  write_run(dir, 0.0f);
  std::ifstream in(dir / "manifest.json");
  nlohmann::json m;
  in >> m;
  CHECK(m["format"] == "stagecraft-dump/1");
  REQUIRE(m["files"].size() == 3);
  CHECK(m["files"][0]["file"] == "00-text.safetensors");
  CHECK(m["files"][2]["stage"] == "decode");
  CHECK(m["scheduler"] == "flow_match_euler");
  const auto f = SafetensorsFile::open((dir / "01-denoise.safetensors").string());
  CHECK(f.contains("latents.step_002"));
  CHECK(f.get("latents.step_001").to_vector() == ramp({1, 4, 4, 4}, 2.0f).to_vector());
}

TEST_CASE("identical dumps compare within tolerance with zero error") {
  const fs::path a = fresh_dir("same-a"), b = fresh_dir("same-b");
  write_run(a, 0.0f);
  write_run(b, 0.0f);
  const DumpComparison c = compare_dumps(a.string(), b.string(), 0.0, 0.0);
  CHECK(c.diffs.size() == 5);
  CHECK(c.first_divergence() == nullptr);
  for (const auto& d : c.diffs) CHECK(d.max_abs == 0.0);
}

TEST_CASE("a perturbed dump names the first diverging tensor and its worst element") {
  const fs::path a = fresh_dir("pert-a"), b = fresh_dir("pert-b");
  write_run(a, 0.0f);
  write_run(b, 0.5f);
  const DumpComparison c = compare_dumps(a.string(), b.string(), 1e-3, 1e-3);
  const TensorDiff* d = c.first_divergence();
  REQUIRE(d != nullptr);
  CHECK(d->file == "denoise");
  CHECK(d->name == "latents.step_001");  // step_002 diverges too, but later
  CHECK(d->max_abs == doctest::Approx(0.5));
  // Flat index 37 of shape [1, 4, 4, 4] is [0, 2, 1, 1].
  CHECK(d->worst_index == std::vector<int64_t>{0, 2, 1, 1});
  // The text stage before it agrees exactly.
  CHECK(c.diffs.front().name == "prompt_embeds");
  CHECK(c.diffs.front().within_tolerance);
}

TEST_CASE("dumps written by another tool pair by stage name without a manifest") {
  const fs::path a = fresh_dir("tool-a"), b = fresh_dir("tool-b");
  write_run(a, 0.0f);
  save_safetensors((b / "decode.safetensors").string(), {{"image", ramp({1, 3, 8, 8}, -1.0f)}});
  save_safetensors((b / "text.safetensors").string(), {{"prompt_embeds", ramp({1, 4, 9}, 0.0f)}});
  const DumpComparison c = compare_dumps(a.string(), b.string(), 1e-4, 0.0);
  REQUIRE(c.diffs.size() == 2);
  const TensorDiff* d = c.first_divergence();
  REQUIRE(d != nullptr);
  CHECK(d->name == "prompt_embeds");
  CHECK(d->problem.find("[1, 4, 8] vs [1, 4, 9]") != std::string::npos);
  CHECK(c.only_in_a.size() == 3);  // the denoise stage's tensors
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST_CASE("comparing a folder that is not a dump says what was expected") {
  const fs::path empty = fresh_dir("empty");
  CHECK(error_of([&] { compare_dumps(empty.string(), empty.string(), 0, 0); }).find("holds no .safetensors files") !=
        std::string::npos);
  CHECK(error_of([&] { compare_dumps("/nonexistent-dump", empty.string(), 0, 0); }).find("does not exist") !=
        std::string::npos);
}

// ---- hostile manifests (issue 10, finding 6); tests/data/untrusted/dumps/README.md ----

namespace {
std::string untrusted_dump(const std::string& name) {
  return std::string(STAGECRAFT_SOURCE_DIR) + "/tests/data/untrusted/dumps/" + name;
}
std::string compare_error(const std::string& a, const std::string& b) {
  try {
    compare_dumps(a, b, 0, 0);
  } catch (const Error& e) {
    CHECK(e.code() == Errc::parse);
    return e.what();
  }
  FAIL("expected " << a << " to be refused");
  return "";
}
bool has(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }
}  // namespace

TEST_CASE("a manifest whose files entry is a number is refused naming the entry") {
  // Before the fix this failed as a raw nlohmann type_error with no file named.
  const fs::path good = fresh_dir("good-for-number");
  write_run(good, 0.0f);
  const std::string dir = untrusted_dump("files_number");
  const std::string msg = compare_error(dir, good.string());
  CHECK(has(msg, dir + "/manifest.json: files[0] must be a file name such as \"00-text.safetensors\", got 3"));
}

TEST_CASE("manifest file names that leave the dump folder are refused") {
  // Before the fix "../x" and absolute paths were opened wherever they pointed.
  const fs::path good = fresh_dir("good-for-escape");
  write_run(good, 0.0f);
  std::string dir = untrusted_dump("escape");
  std::string msg = compare_error(dir, good.string());
  CHECK(has(msg, dir + "/manifest.json: files[0] is \"../escape-target/00-text.safetensors\"; a stage file must be a "
                       ".safetensors file name inside the dump folder"));
  dir = untrusted_dump("absolute");
  msg = compare_error(good.string(), dir);
  CHECK(has(msg, dir + "/manifest.json: files[0] is \"/etc/stagecraft.safetensors\""));
}

TEST_CASE("a manifest that is not an object, or lists a stage twice, is refused") {
  const fs::path d = fresh_dir("twice");
  write_run(d, 0.0f);
  std::ofstream(d / "manifest.json") << R"({"files": ["00-text.safetensors", "00-text.safetensors"]})";
  CHECK(has(compare_error(d.string(), d.string()), "files[1] names stage 'text' a second time"));
  std::ofstream(d / "manifest.json") << "[1, 2]";
  CHECK(has(compare_error(d.string(), d.string()), "manifest.json must hold a JSON object, got array"));
}
