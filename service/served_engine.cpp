#include "service/served_engine.hpp"

namespace stagecraft::service {

ServedEngine::ServedEngine(const PipelineSpec& spec, ServerOptions options, PngEncoder png)
    : engine_(Engine::create(spec)) {
  try {
    server_ = std::make_unique<JobServer>(*engine_, spec, std::move(options), std::move(png));
  } catch (...) {
    engine_->shutdown();
    throw;
  }
  loop_ = std::thread([this] { server_->run(); });
}

ServedEngine::~ServedEngine() {
  server_->request_drain();
  loop_.join();
  engine_->shutdown();
}

}  // namespace stagecraft::service
