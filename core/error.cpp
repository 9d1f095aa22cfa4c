#include "core/error.hpp"

#include <cstring>

namespace stagecraft {

const char* errc_name(Errc c) {
  switch (c) {
    case Errc::invalid_argument: return "invalid_argument";
    case Errc::shape_mismatch: return "shape_mismatch";
    case Errc::unsupported: return "unsupported";
    case Errc::not_found: return "not_found";
    case Errc::io: return "io";
    case Errc::parse: return "parse";
    case Errc::cuda: return "cuda";
    case Errc::overloaded: return "overloaded";
    case Errc::cancelled: return "cancelled";
    case Errc::deadline_exceeded: return "deadline_exceeded";
    case Errc::stage_failed: return "stage_failed";
    case Errc::node_lost: return "node_lost";
    case Errc::internal: return "internal";
  }
  return "unknown";
}

Errc errc_from_name(const std::string& name) {
  for (int i = 0; i <= static_cast<int>(Errc::internal); ++i)
    if (name == errc_name(static_cast<Errc>(i))) return static_cast<Errc>(i);
  return Errc::internal;
}

void throw_error(Errc code, const char* file, int line, const std::string& message) {
  // Keep only the path below the source tree: "core/tensor.cpp:42".
  const char* short_file = file;
  for (const char* root : {"/core/", "/kernels/", "/stages/", "/transport/", "/actors/", "/cli/", "/tests/", "/bench/"}) {
    if (const char* p = std::strstr(file, root)) {
      short_file = p + 1;
      break;
    }
  }
  throw Error(code, message + " [" + short_file + ":" + std::to_string(line) + "]");
}

}  // namespace stagecraft
