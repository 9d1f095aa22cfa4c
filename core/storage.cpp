#include "core/storage.hpp"

#include <utility>

namespace stagecraft {

Storage::Storage(void* data, size_t bytes, Device device, std::function<void(void*)> release)
    : data_(data), bytes_(bytes), device_(device), release_(std::move(release)) {}

std::shared_ptr<Storage> Storage::wrap(void* data, size_t bytes, Device device, std::shared_ptr<void> owner) {
  auto s = std::make_shared<Storage>(data, bytes, device, nullptr);
  s->owner_ = std::move(owner);
  return s;
}

Storage::~Storage() {
  if (release_) release_(data_);
  // owner_ is released after this body, so wrapped memory outlives every use above.
}

}  // namespace stagecraft
