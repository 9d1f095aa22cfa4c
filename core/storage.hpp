#pragma once
// Reference-counted bytes on one device. A Storage either owns its memory
// (allocated by an Allocator) or wraps memory it does not own — an mmap'd
// safetensors file, a ZeroMQ message — kept alive by an opaque `owner` handle.
#include <cstddef>
#include <functional>
#include <memory>

#include "core/device.hpp"

namespace stagecraft {

class Storage {
 public:
  /// Takes ownership: `release(data)` runs when the last reference goes away.
  Storage(void* data, size_t bytes, Device device, std::function<void(void*)> release);
  /// Wraps memory owned by `owner` (kept alive as long as this storage); no copy.
  static std::shared_ptr<Storage> wrap(void* data, size_t bytes, Device device, std::shared_ptr<void> owner);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }
  Device device() const { return device_; }

 private:
  void* data_;
  size_t bytes_;
  Device device_;
  std::function<void(void*)> release_;
  std::shared_ptr<void> owner_;
};

}  // namespace stagecraft
