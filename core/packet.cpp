#include "core/packet.hpp"

#include "core/error.hpp"

namespace stagecraft {

const Tensor& Packet::tensor(const std::string& name) const {
  auto it = tensors.find(name);
  if (it == tensors.end()) {
    std::string have;
    for (const auto& [k, v] : tensors) have += (have.empty() ? "" : ", ") + k;
    SC_FAIL(Errc::not_found, "job " << job_id << " has no tensor '" << name << "' (it has: "
                                    << (have.empty() ? "none" : have) << "); check the stage order");
  }
  return it->second;
}

}  // namespace stagecraft
