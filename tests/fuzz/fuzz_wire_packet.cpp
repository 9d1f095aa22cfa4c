// libFuzzer target: the wire format's packet decoder (what a worker reads from its
// socket). The input is split into frames at "\xff\xfeFRAME"; only WireError may come
// out, and every refusal must be counted.
#include <cstdint>
#include <vector>

#include "tests/fuzz/fuzz_support.hpp"
#include "transport/wire_format.hpp"

using namespace stagecraft;
using namespace stagecraft::transport;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<zmq::message_t> frames;
  std::string_view rest = fuzz::as_view(data, size);
  for (;;) {
    auto [frame, tail] = fuzz::split(rest, "\xff\xfe" "FRAME");
    frames.emplace_back(frame.data(), frame.size());
    if (tail.data() == nullptr || frames.size() > 300) break;  // no separator left
    rest = tail;
  }
  WireCounters counters;
  try {
    PacketPtr p = decode_packet(frames, counters);
    for (const auto& [name, t] : p->tensors)
      if (t.nbytes() > 0) (void)static_cast<const volatile char*>(t.data())[t.nbytes() - 1];
  } catch (const WireError&) {
    if (counters.refused_total() != 1) __builtin_trap();
  }
  return 0;
}
