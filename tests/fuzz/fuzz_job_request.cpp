// libFuzzer target: the job protocol's request decoder (what `stagecraft serve` reads
// from any client) and the engine request it becomes. Only ProtocolError may come out;
// a decoded message must encode, decode and encode again to the same bytes.
#include <cstdint>

#include "tests/fuzz/fuzz_support.hpp"
#include "transport/job_protocol.hpp"

using namespace stagecraft;
using namespace stagecraft::transport;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  ClientMessage m;
  try {
    m = decode_client_message(data, size);
  } catch (const ProtocolError&) {
    return 0;
  }
  for (int i = 0; i < 2; ++i) (void)to_request(m.submit, i);
  const std::string again = encode_client_message(m);
  const ClientMessage back = decode_client_message(again.data(), again.size());
  // Compared as bytes, not fields: a NaN guidance (decoded, and refused later by the request
  // validator) never equals itself.
  if (back.op != m.op || back.id != m.id || encode_client_message(back) != again) __builtin_trap();
  return 0;
}
