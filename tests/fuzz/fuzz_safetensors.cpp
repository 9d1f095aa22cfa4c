// libFuzzer target: SafetensorsFile::open on arbitrary bytes, then every tensor it
// accepts is read in full and converted, so a size the reader got wrong shows as an
// ASan out-of-bounds access rather than passing silently.
#include <cstdint>

#include "core/error.hpp"
#include "core/safetensors.hpp"
#include "tests/fuzz/fuzz_support.hpp"

using namespace stagecraft;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto path = fuzz::scratch() / "input.safetensors";
  fuzz::write_file(path, fuzz::as_view(data, size));
  try {
    const SafetensorsFile f = SafetensorsFile::open(path.string());
    for (const auto& name : f.names()) {
      const Tensor t = f.get(name);
      // The file's bytes bound every accepted tensor, so reading it all is cheap.
      volatile unsigned char sink = 0;
      const auto* p = static_cast<const unsigned char*>(t.data());
      for (size_t i = 0; i < t.nbytes(); ++i) sink = sink ^ p[i];
      if (t.numel() <= (1 << 16)) (void)t.to(DType::f32);
    }
  } catch (const Error&) {
    // Refused with a message: the expected outcome for most inputs.
  }
  return 0;
}
