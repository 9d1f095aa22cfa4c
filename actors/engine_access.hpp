#pragma once
// For tests only: the engine's internals behind the public Engine, e.g. to stop a
// replica actor the way a bug would and watch the supervisor answer its jobs.
#include "actors/engine.hpp"
#include "actors/engine_core.hpp"

namespace stagecraft::actors {

struct EngineAccess {
  static EngineCore& core(Engine& e) { return *e.core_; }
};

}  // namespace stagecraft::actors
