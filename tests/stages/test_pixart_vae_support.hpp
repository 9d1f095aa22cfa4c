#pragma once
// Shared by the PixArt and VAE parity tests: a temp folder per run, running
// tools/reference.py (the independent PyTorch reference) with /usr/bin/python3,
// seeded inputs and error measures.
#include "tests/support/temp_dir.hpp"
#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <unistd.h>

#include "core/error.hpp"
#include "core/safetensors.hpp"
#include "core/tensor.hpp"

namespace sc_test {

namespace fs = std::filesystem;
using stagecraft::Shape;
using stagecraft::Tensor;

inline const char* kPython = "/usr/bin/python3";

/// The message of the stagecraft::Error `f` throws, or "" when it throws none.
inline std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const stagecraft::Error& e) {
    return e.what();
  }
  return "";
}

inline std::string reference_script() { return std::string(STAGECRAFT_SOURCE_DIR) + "/tools/reference.py"; }

/// "" when /usr/bin/python3 imports torch, else why not (the parity tests skip with it).
inline const std::string& torch_missing_reason() {
  static const std::string reason = [] {
    const std::string cmd = std::string(kPython) + " -c 'import torch' >/dev/null 2>&1";
    if (std::system(cmd.c_str()) == 0) return std::string();
    return std::string(kPython) + " cannot import torch (install Debian's python3-torch)";
  }();
  return reason;
}

using stagecraft::testing::TempDir;

/// Runs tools/reference.py with `args`; on failure the test fails with the script's output.
inline void run_reference(const std::string& args, const TempDir& tmp) {
  const std::string log = tmp / "reference.log";
  const std::string cmd = std::string(kPython) + " " + reference_script() + " " + args + " >" + log + " 2>&1";
  const int rc = std::system(cmd.c_str());
  if (rc != 0) {
    std::ifstream in(log);
    std::stringstream out;
    out << in.rdbuf();
    FAIL("reference.py failed (" << rc << "): " << cmd << "\n" << out.str());
  }
}

/// The `tiny` preset of reference.py (a diffusers folder), shared read-only by every case that
/// only reads it; a case that edits weights copies it first. ctest runs each case in its own
/// process, so the folder is cached in the build tree under a hash of reference.py (a changed
/// script gets a fresh model) and published by an atomic rename (parallel runs are safe).
inline fs::path tiny_model_cache() {
  std::ifstream script(reference_script(), std::ios::binary);
  std::stringstream text;
  text << script.rdbuf();
  std::ostringstream name;
  name << "reference-tiny-" << std::hex << std::hash<std::string>{}(text.str());
  return fs::path(STAGECRAFT_BINARY_DIR) / "tests" / "stages" / name.str();
}

inline std::string tiny_model_root() {
  static const std::string root = [] {
    const fs::path cache = tiny_model_cache();
    if (fs::is_directory(cache)) return cache.string();
    TempDir logs;
    const fs::path staging = cache.string() + ".tmp-" + std::to_string(::getpid());
    run_reference("random-model --preset tiny --seed 3 --out " + staging.string(), logs);
    std::error_code ec;
    fs::rename(staging, cache, ec);
    if (ec) fs::remove_all(staging, ec);  // another process published it first
    REQUIRE(fs::is_directory(cache));
    return cache.string();
  }();
  return root;
}

/// For cases that need the tiny model but no live reference run: true with the model at hand
/// (already cached, or generated now), false after a skip message when torch is missing.
inline bool tiny_model_or_skip(std::string& root) {
  if (!fs::is_directory(tiny_model_cache()) && !torch_missing_reason().empty()) {
    MESSAGE("skipped: " << torch_missing_reason());
    return false;
  }
  root = tiny_model_root();
  return true;
}

/// A private copy of the tiny preset's `component` folder under `tmp`.
inline std::string copy_tiny_component(const std::string& component, const TempDir& tmp) {
  const std::string dst = tmp / component;
  fs::copy(fs::path(tiny_model_root()) / component, dst, fs::copy_options::recursive);
  return dst;
}

/// Seeded standard-normal tensor scaled by `scale` (f32, CPU).
inline Tensor randn(const Shape& shape, unsigned seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> v(static_cast<size_t>(stagecraft::shape_numel(shape)));
  for (auto& x : v) x = nd(rng) * scale;
  return Tensor::from_vector(v, shape);
}

inline double max_abs_diff(const Tensor& a, const Tensor& b) {
  REQUIRE(a.shape() == b.shape());
  const auto va = a.to_vector(), vb = b.to_vector();
  double m = 0;
  for (size_t i = 0; i < va.size(); ++i) m = std::max(m, std::fabs(static_cast<double>(va[i]) - vb[i]));
  return m;
}

inline double max_abs(const Tensor& a) {
  double m = 0;
  for (float x : a.to_vector()) m = std::max(m, std::fabs(static_cast<double>(x)));
  return m;
}

inline bool all_finite(const Tensor& a) {
  for (float x : a.to_vector())
    if (!std::isfinite(x)) return false;
  return true;
}

}  // namespace sc_test
