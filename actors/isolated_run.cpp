#include "actors/isolated_run.hpp"

#include <map>
#include <memory>
#include <string>

namespace stagecraft::actors {
namespace {

/// What run() may change in a packet. Tensors are handles: the copy is cheap, and a
/// stage that writes outputs replaces handles rather than the bytes of its inputs.
struct Snapshot {
  std::map<std::string, Tensor> tensors;
  std::shared_ptr<void> state;
  int step = 0, total_steps = 0;

  explicit Snapshot(const Packet& p) : tensors(p.tensors), state(p.state), step(p.step), total_steps(p.total_steps) {}
  void restore(Packet& p) const {
    p.tensors = tensors;
    p.state = state;
    p.step = step;
    p.total_steps = total_steps;
  }
};

}  // namespace

IsolatedRun run_isolated(Stage& stage, Lane& lane, std::vector<PacketPtr>& batch) {
  IsolatedRun out;
  out.errors.assign(batch.size(), nullptr);
  if (batch.size() == 1) {
    try {
      stage.run(batch, lane);
    } catch (...) {
      out.errors[0] = std::current_exception();
    }
    return out;
  }
  std::vector<Snapshot> before;
  before.reserve(batch.size());
  for (const auto& p : batch) before.emplace_back(*p);
  try {
    stage.run(batch, lane);
    return out;
  } catch (...) {
    out.retried = true;
  }
  for (size_t i = 0; i < batch.size(); ++i) before[i].restore(*batch[i]);
  for (size_t i = 0; i < batch.size(); ++i) {
    std::vector<PacketPtr> one{batch[i]};
    try {
      stage.run(one, lane);
    } catch (...) {
      out.errors[i] = std::current_exception();
      before[i].restore(*batch[i]);
    }
  }
  return out;
}

}  // namespace stagecraft::actors
