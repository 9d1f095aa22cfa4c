// libFuzzer target: the dump reader (compare_dumps) on an arbitrary manifest.json
// beside one real stage file. Only stagecraft::Error may come out, and nothing may
// be read outside the dump folder.
#include <cstdint>
#include <string>

#include "core/dump.hpp"
#include "core/error.hpp"
#include "core/safetensors.hpp"
#include "tests/fuzz/fuzz_support.hpp"

using namespace stagecraft;
namespace fs = std::filesystem;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const fs::path dir = [] {
    const fs::path d = fuzz::scratch() / "dump";
    fs::create_directories(d);
    save_safetensors((d / "00-text.safetensors").string(), {{"prompt_embeds", Tensor::from_vector({1, 2, 3}, {1, 3})}});
    return d;
  }();
  fuzz::write_file(dir / "manifest.json", fuzz::as_view(data, size));
  try {
    (void)compare_dumps(dir.string(), dir.string(), 1e-4, 1e-4);
  } catch (const Error&) {
  }
  return 0;
}
