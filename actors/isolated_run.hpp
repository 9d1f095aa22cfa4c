#pragma once
// Runs a stage on a batch so that one bad job fails alone. Plain C++ (no CAF); the
// replica actor calls it on the lane thread.
//
// When run() of several packets throws, every packet is put back as it was before
// (its tensor map, step counters and stage state handle) and run again on its own,
// in order: the packets that fail alone get their own error, the others their
// result. Kernels are batch-invariant (ops::linear_per_item), so a packet rerun
// alone gets the bytes it would have got in the batch.
//
//   std::vector<std::exception_ptr> errors = run_isolated(stage, lane, batch);
//   for (size_t i = 0; i < batch.size(); ++i) if (errors[i]) fail(batch[i], errors[i]);
#include <exception>
#include <vector>

#include "stages/stage.hpp"

namespace stagecraft::actors {

struct IsolatedRun {
  std::vector<std::exception_ptr> errors;  ///< one per packet; null for the ones that ran
  bool retried = false;                    ///< the batch failed and was rerun job by job
};

IsolatedRun run_isolated(Stage& stage, Lane& lane, std::vector<PacketPtr>& batch);

}  // namespace stagecraft::actors
