// Embeds a Stagecraft engine (a synthetic two-stage pipeline, no model), serves it
// on a loopback port with the job server, and submits one job with the C++ client.
// Exit 0 when the job comes back with its result.
#include <cstdio>
#include <thread>

#include "actors/engine.hpp"
#include "clients/cpp/client.hpp"
#include "service/job_server.hpp"
#include "stages/builtin_stages.hpp"

using namespace stagecraft;

int main() {
  register_builtin_stages();
  PipelineSpec spec;
  spec.path = "embedded.yaml";
  StageSpec a, b;
  a.name = "prepare", a.type = "sleep", a.params = {{"cost", {{"per_batch_ms", 1}}}};
  b.name = "denoise", b.type = "synthetic_denoiser", b.params = {{"cost", {{"per_batch_ms", 1}}}};
  spec.stages = {a, b};
  spec.defaults = {{"steps", 5}, {"guidance", 4.5}, {"width", 64}, {"height", 64}};

  auto engine = Engine::create(spec);
  service::JobServer server(*engine, spec, {.bind = "tcp://127.0.0.1:*"}, {});
  std::thread loop([&] { server.run(); });

  client::Client c(server.endpoint());
  client::SubmitFields f;
  f.prompt = "anything";
  int steps_seen = 0;
  client::Outcome o = c.generate("embedded-1", f, [&](int64_t step, int64_t, int64_t) { steps_seen = int(step); });

  server.request_drain();
  loop.join();
  engine->shutdown();
  if (!o.ok()) {
    std::fprintf(stderr, "job failed: %s: %s\n", o.code.c_str(), o.message.c_str());
    return 1;
  }
  std::printf("job embedded-1 done after %d steps through %zu stages\n", steps_seen, spec.stages.size());
  return steps_seen == 5 ? 0 : 1;
}
