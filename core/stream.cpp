#include "core/stream.hpp"

namespace stagecraft {

namespace {
thread_local StreamHandle t_current_stream = nullptr;
}

StreamHandle current_stream() { return t_current_stream; }

StreamGuard::StreamGuard(StreamHandle s) : previous_(t_current_stream) { t_current_stream = s; }

StreamGuard::~StreamGuard() { t_current_stream = previous_; }

}  // namespace stagecraft
