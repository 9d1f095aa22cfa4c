// libFuzzer target: the pipeline-file parser on arbitrary text. A refusal must be a
// SpecError (or Error) whose every problem prints; an accepted spec must describe
// itself (which dumps every stage parameter as JSON).
#include <cstdint>
#include <string>

#include "core/error.hpp"
#include "core/pipeline_spec.hpp"
#include "tests/fuzz/fuzz_support.hpp"

using namespace stagecraft;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(fuzz::as_view(data, size));
  try {
    const PipelineSpec spec = parse_pipeline_spec(text, "fuzz.yaml", fuzz::scratch().string());
    (void)describe_pipeline(spec);
  } catch (const SpecError& e) {
    for (const auto& p : e.problems) (void)p.str();
    (void)describe_pipeline(e.partial);
  } catch (const Error&) {
  }
  return 0;
}
