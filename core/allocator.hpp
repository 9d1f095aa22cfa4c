#pragma once
// Allocators hand out Storage. Host memory is 64-byte aligned; pinned host
// memory (cudaMallocHost) makes async copies overlap; CUDA memory comes from a
// stream-ordered pool (cudaMallocAsync on the calling thread's current stream,
// see core/stream.hpp), freed in stream order too.
#include <cstddef>
#include <memory>

#include "core/device.hpp"
#include "core/storage.hpp"

namespace stagecraft {

/// 64-byte aligned host memory.
std::shared_ptr<Storage> allocate_host(size_t bytes);
/// Page-locked host memory; falls back to allocate_host when CUDA is absent.
std::shared_ptr<Storage> allocate_pinned(size_t bytes);
/// Stream-ordered device memory on `device`, ordered on the current stream.
/// Throws Error(unsupported) in a build without CUDA.
std::shared_ptr<Storage> allocate_cuda(size_t bytes, int device);
/// Dispatches on device: host for cpu, allocate_cuda for cuda.
std::shared_ptr<Storage> allocate(size_t bytes, Device device);

struct AllocatorStats {
  size_t host_bytes_live = 0, pinned_bytes_live = 0, cuda_bytes_live = 0;
  size_t host_bytes_peak = 0, pinned_bytes_peak = 0, cuda_bytes_peak = 0;
};
AllocatorStats allocator_stats();

}  // namespace stagecraft
