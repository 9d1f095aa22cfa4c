// The front door in one process: a real JobServer on loopback tcp in front of an
// engine of synthetic stages, driven by the C++ client and by raw sockets.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <fstream>
#include <set>
#include <thread>

#include "clients/cpp/client.hpp"
#include "service/served_engine.hpp"
#include "stages/builtin_stages.hpp"
#include "tests/support/temp_dir.hpp"

using namespace stagecraft;
using namespace std::chrono_literals;

namespace {

PipelineSpec synthetic(double step_ms, int max_pending = 64, int steps = 4) {
  register_builtin_stages();
  PipelineSpec p;
  p.path = "synthetic.yaml";
  StageSpec d;
  d.name = "denoise";
  d.type = "synthetic_denoiser";
  d.params = {{"cost", {{"per_batch_ms", step_ms}}}};
  d.batching.max_batch = 8;
  p.stages = {d};
  p.limits.max_pending_jobs = max_pending;
  p.defaults = {{"steps", steps}, {"guidance", 4.5}, {"width", 64}, {"height", 64}};
  return p;
}

/// An engine and a server on a free loopback port, served until the fixture ends.
struct Served : service::ServedEngine {
  explicit Served(const PipelineSpec& spec, service::ServerOptions opt = {})
      : service::ServedEngine(spec, on_loopback(std::move(opt))) {}
  static service::ServerOptions on_loopback(service::ServerOptions o) {
    o.bind = "tcp://127.0.0.1:*";
    return o;
  }
};

client::SubmitFields fields(int steps = 0) {
  client::SubmitFields f;
  f.prompt = "x";
  if (steps) f.steps = steps;
  return f;
}

}  // namespace

TEST_CASE("a job submitted through the C++ client comes back with progress and one result") {
  Served s(synthetic(1));
  client::Client c(s.endpoint());
  std::vector<int64_t> steps;
  client::Outcome o = c.generate("j1", fields(5), [&](int64_t step, int64_t of, int64_t) {
    CHECK(of == 5);
    steps.push_back(step);
  });
  CHECK(o.ok());
  CHECK(o.images.empty());  // synthetic stages make no image
  REQUIRE_FALSE(steps.empty());
  CHECK(steps.back() == 5);
  CHECK(s.server().counters().results == 1);
}

TEST_CASE("every accepted job from 8 concurrent clients gets exactly one terminal reply") {
  Served s(synthetic(0.2, 512));  // room for all 320: this case is about answers, not admission
  constexpr int kClients = 8, kJobs = 40;
  std::atomic<int> terminal{0}, duplicates{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kClients; ++t)
    threads.emplace_back([&, t] {
      client::Client c(s.endpoint());
      std::set<std::string> open;
      for (int j = 0; j < kJobs; ++j) {
        const std::string id = "c" + std::to_string(t) + "-" + std::to_string(j);
        c.submit(id, fields(3));
        open.insert(id);
      }
      std::set<std::string> done;
      while (!open.empty()) {
        auto r = c.receive(10s);
        REQUIRE(r.has_value());
        if (r->type != "result" && r->type != "error") continue;
        if (!done.insert(r->id).second) duplicates++;
        open.erase(r->id);
        terminal++;
      }
    });
  for (auto& t : threads) t.join();
  CHECK(terminal == kClients * kJobs);
  CHECK(duplicates == 0);
  CHECK(s.server().counters().accepted == kClients * kJobs);
}

TEST_CASE("a full queue refuses with overloaded and a retry_after_ms") {
  Served s(synthetic(20, /*max_pending*/ 2));
  client::Client c(s.endpoint());
  c.submit("a", fields(50));
  c.submit("b", fields(50));
  c.submit("c", fields(50));
  bool refused = false;
  for (int i = 0; i < 3 && !refused; ++i) {
    auto r = c.receive(5s);
    REQUIRE(r.has_value());
    if (r->type == "error") {
      CHECK(r->id == "c");
      CHECK(r->code == "overloaded");
      REQUIRE(r->retry_after_ms.has_value());
      CHECK(*r->retry_after_ms > 0);
      refused = true;
    }
  }
  CHECK(refused);
  c.cancel("a");
  c.cancel("b");
}

TEST_CASE("one client may not hold more than its share of jobs in flight") {
  service::ServerOptions opt;
  opt.max_jobs_per_client = 2;
  Served s(synthetic(20), opt);
  client::Client greedy(s.endpoint());
  greedy.submit("g1", fields(50));
  greedy.submit("g2", fields(50));
  greedy.submit("g3", fields(50));
  std::string code;
  for (int i = 0; i < 3 && code.empty(); ++i) {
    auto r = greedy.receive(5s);
    REQUIRE(r.has_value());
    if (r->type == "error") code = r->code;
  }
  CHECK(code == "too_many_jobs");
  // Another client is served meanwhile.
  client::Client other(s.endpoint());
  CHECK(other.generate("o1", fields(1)).ok());
  greedy.cancel("g1");
  greedy.cancel("g2");
}

TEST_CASE("a job past its deadline ends with deadline_exceeded") {
  Served s(synthetic(20));
  client::Client c(s.endpoint());
  client::SubmitFields f = fields(100);
  f.deadline_ms = 60;
  client::Outcome o = c.generate("late", f);
  CHECK(o.code == "deadline_exceeded");
}

TEST_CASE("requests the engine would refuse never become jobs") {
  Served s(synthetic(1));
  client::Client c(s.endpoint());
  client::SubmitFields f = fields();
  f.num_images = 0;
  CHECK(c.generate("n0", f).code == "invalid_argument");
  f.num_images = 1;
  f.pipeline = "something-else";
  client::Outcome o = c.generate("p", f);
  CHECK(o.code == "unknown_pipeline");
  CHECK(o.message.find("'synthetic'") != std::string::npos);
  CHECK(s.server().counters().accepted == 0);
}

TEST_CASE("with CurveZMQ only clients on the allow-list are served") {
  char server_pub[41], server_sec[41], good_pub[41], good_sec[41], bad_pub[41], bad_sec[41];
  REQUIRE(zmq_curve_keypair(server_pub, server_sec) == 0);
  REQUIRE(zmq_curve_keypair(good_pub, good_sec) == 0);
  REQUIRE(zmq_curve_keypair(bad_pub, bad_sec) == 0);
  testing::TempDir tmp;
  std::ofstream(tmp / "server.secret") << "# the server's secret key\n" << server_sec << "\n";
  std::ofstream(tmp / "clients.txt") << good_pub << "\n";
  service::ServerOptions opt;
  opt.curve = service::CurveOptions{tmp / "server.secret", tmp / "clients.txt"};
  Served s(synthetic(1), opt);

  client::Client good(s.endpoint(), {.server_public_key = server_pub, .client_public_key = good_pub,
                                     .client_secret_key = good_sec});
  CHECK(good.generate("curve-ok", fields(1), {}, 10s).ok());
  client::Client bad(s.endpoint(), {.server_public_key = server_pub, .client_public_key = bad_pub,
                                    .client_secret_key = bad_sec});
  CHECK_THROWS_AS(bad.generate("curve-no", fields(1), {}, 1500ms), Error);
  CHECK(s.server().counters().accepted == 1);
}

TEST_CASE("a key file that holds no valid key is refused naming the file") {
  testing::TempDir tmp;
  std::ofstream(tmp / "bad.secret") << "not-a-key\n";
  std::ofstream(tmp / "clients.txt") << "# nobody\n";
  service::ServerOptions opt;
  opt.curve = service::CurveOptions{tmp / "bad.secret", tmp / "clients.txt"};
  register_builtin_stages();
  auto engine = Engine::create(synthetic(1));
  try {
    service::JobServer server(*engine, synthetic(1), opt, {});
    FAIL("accepted");
  } catch (const Error& e) {
    CHECK(std::string(e.what()).find("clients.txt lists no client keys") != std::string::npos);
  }
  engine->shutdown();
}
