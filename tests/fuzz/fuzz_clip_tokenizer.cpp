// libFuzzer target: the CLIP tokenizer. Inputs starting with byte 0 carry a whole
// tokenizer folder (vocab.json, merges.txt and tokenizer_config.json separated by
// "\n--8<--\n") that is loaded and then encodes a fixed prompt; any other input is a
// prompt (any bytes, not necessarily UTF-8) encoded by the shipped model's tokenizer.
#include <cstdint>
#include <string>

#include "core/error.hpp"
#include "stages/text/clip_tokenizer.hpp"
#include "tests/fuzz/fuzz_support.hpp"

using namespace stagecraft;

namespace {
const ClipTokenizer& shipped() {
  static const ClipTokenizer t = ClipTokenizer::load(STAGECRAFT_SOURCE_DIR "/models/tiny-shapes/tokenizer");
  return t;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in = fuzz::as_view(data, size);
  try {
    if (!in.empty() && in[0] == '\0') {
      const auto [vocab, rest] = fuzz::split(in.substr(1), "\n--8<--\n");
      const auto [merges, config] = fuzz::split(rest, "\n--8<--\n");
      const auto dir = fuzz::scratch() / "tokenizer";
      fuzz::write_file(dir / "vocab.json", vocab);
      fuzz::write_file(dir / "merges.txt", merges);
      fuzz::write_file(dir / "tokenizer_config.json", config.empty() ? std::string_view("{}") : config);
      const ClipTokenizer t = ClipTokenizer::load(dir.string());
      const TokenizedText out = t.encode("a red circle, a blue square and a 3rd shape");
      if (out.ids.size() != out.mask.size()) __builtin_trap();
    } else {
      const TokenizedText out = shipped().encode(std::string(in));
      if (static_cast<int>(out.ids.size()) != shipped().model_max_length()) __builtin_trap();
      (void)shipped().encode(std::string(in), -1, false, false);
    }
  } catch (const Error&) {
  }
  return 0;
}
