// bench_service: the job service's figures (issue 12), one run, a real JobServer
// on tcp loopback in this process and clients on their own threads.
//
//   1. load: 8 clients, 500 jobs through a synthetic pipeline; every accepted job
//      answered exactly once, none lost, RSS flat between the first and last 100 jobs
//   2. overhead: submit -> result through a no-op stage, one job at a time (median),
//      and jobs per second with 8 clients keeping 32 jobs each in flight
//   3. barrage: every kind of bad input interleaved with good jobs; all good jobs
//      answered correctly, the server up, RSS bounded
//   4. model: 50 jobs with the shipped model from 8 clients (skipped with --quick)
//
// Each figure prints its value, its target and PASS or MISS.
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <future>
#include <set>
#include <thread>

#include <msgpack.hpp>

#include "clients/cpp/client.hpp"
#include "core/pipeline_spec.hpp"
#include "service/served_engine.hpp"
#include "stages/builtin_stages.hpp"
#include "stages/post/image.hpp"
#include "stages/spec_check.hpp"

using namespace stagecraft;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {

const char* verdict(bool ok) { return ok ? "PASS" : "MISS"; }

service::ServerOptions client_limit(int n) {
  service::ServerOptions o;
  o.max_jobs_per_client = n;
  return o;
}

double rss_mib() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::stod(line.substr(6)) / 1024.0;
  return 0;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

PipelineSpec synthetic(double step_ms, int steps, int max_pending) {
  PipelineSpec p;
  p.path = "synthetic.yaml";
  StageSpec d;
  d.name = "denoise";
  d.type = step_ms > 0 ? "synthetic_denoiser" : "sleep";
  d.params = {{"cost", {{"per_batch_ms", step_ms}}}};
  d.batching.max_batch = 16;
  p.stages = {d};
  p.limits.max_pending_jobs = max_pending;
  p.limits.credits = 64;
  p.defaults = {{"steps", steps}, {"guidance", 4.5}, {"width", 64}, {"height", 64}};
  return p;
}

/// The shipped model's images are PNG-encoded as `stagecraft serve` does.
struct Served : service::ServedEngine {
  Served(const PipelineSpec& spec, service::ServerOptions opt)
      : service::ServedEngine(spec, on_loopback(std::move(opt)), [](const Tensor& rgb) { return encode_png(rgb); }) {}
  static service::ServerOptions on_loopback(service::ServerOptions o) {
    o.bind = "tcp://127.0.0.1:*";
    return o;
  }
};

/// `jobs` jobs from one client with up to `window` in flight; counts terminal replies per id.
struct ClientRun {
  int results = 0, errors = 0, duplicates = 0, lost = 0;
  std::vector<double> rss_at;  ///< RSS after each completed job (client 0 only)
};

ClientRun drive(const std::string& endpoint, const std::string& tag, int jobs, int window, int steps,
                bool track_rss, const client::SubmitFields* proto = nullptr) {
  ClientRun run;
  client::Client c(endpoint);
  std::set<std::string> open, done;
  int next = 0;
  auto submit_one = [&] {
    client::SubmitFields f;
    if (proto) f = *proto;
    else f.prompt = "x";
    if (!proto) f.steps = steps;
    f.seed = uint64_t(next);
    const std::string id = tag + "-" + std::to_string(next++);
    c.submit(id, f);
    open.insert(id);
  };
  while (next < jobs && int(open.size()) < window) submit_one();
  while (!open.empty()) {
    auto r = c.receive(30s);
    if (!r) {
      run.lost += int(open.size());
      break;
    }
    if (r->type != "result" && r->type != "error") continue;
    if (!done.insert(r->id).second) {
      run.duplicates++;
      continue;
    }
    open.erase(r->id);
    (r->type == "result" ? run.results : run.errors)++;
    if (track_rss) run.rss_at.push_back(rss_mib());
    if (next < jobs) submit_one();
  }
  return run;
}

bool load_figure(int clients, int total) {
  Served s(synthetic(1.0, 4, 1024), client_limit(64));
  std::vector<ClientRun> runs(static_cast<size_t>(clients));
  std::vector<std::thread> threads;
  const auto t0 = Clock::now();
  for (int i = 0; i < clients; ++i)
    threads.emplace_back([&, i] {
      const int mine = total / clients + (i < total % clients ? 1 : 0);
      runs[size_t(i)] = drive(s.endpoint(), "l" + std::to_string(i), mine, 8, 4, i == 0);
    });
  for (auto& t : threads) t.join();
  const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  int results = 0, errors = 0, dup = 0, lost = 0;
  for (auto& r : runs) results += r.results, errors += r.errors, dup += r.duplicates, lost += r.lost;
  const auto& rss = runs[0].rss_at;
  // Client 0 sees about 1/8 of the jobs: its first and last 100/8 completions span the
  // first and last hundred jobs of the run.
  const size_t k = std::min<size_t>(rss.size() / 5, 100 / size_t(clients) + 1);
  double first = 0, last = 0;
  for (size_t i = 0; i < k; ++i) first += rss[i], last += rss[rss.size() - 1 - i];
  first /= double(std::max<size_t>(k, 1)), last /= double(std::max<size_t>(k, 1));
  const bool ok = results + errors == total && dup == 0 && lost == 0 && errors == 0;
  const bool flat = last - first < 16.0;
  std::printf("load: %d clients, %d jobs in %.2f s: %d results, %d errors, %d duplicate terminals, %d lost  %s\n",
              clients, total, secs, results, errors, dup, lost, verdict(ok));
  std::printf("load: RSS first 100 jobs %.1f MiB, last 100 jobs %.1f MiB (target: within 16 MiB)  %s\n", first, last,
              verdict(flat));
  return ok && flat;
}

bool overhead_figure(bool quick) {
  Served s(synthetic(0, 1, 4096), client_limit(4096));
  std::vector<double> us;
  {
    client::Client c(s.endpoint());
    client::SubmitFields f;
    f.prompt = "x";
    for (int i = 0; i < (quick ? 300 : 2000); ++i) {
      const auto t0 = Clock::now();
      c.submit("o" + std::to_string(i), f);
      for (;;) {
        auto r = c.receive(10s);
        if (!r) break;
        if (r->type == "result" || r->type == "error") break;
      }
      us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
    }
  }
  const double med = median(us);
  // The same jobs straight into the engine, no sockets: what of the above is the engine's.
  std::vector<double> engine_us;
  for (int i = 0; i < (quick ? 300 : 2000); ++i) {
    std::promise<void> done;
    Request r;
    r.prompt = "x";
    const auto t0 = Clock::now();
    auto sub = s.engine().submit_with_callback(r, {}, [&](const JobResult&) { done.set_value(); });
    if (sub.refused) break;
    done.get_future().wait();
    engine_us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
  }
  const double engine_med = median(engine_us);
  const int clients = 8, per_client = quick ? 500 : 2500;
  std::vector<std::thread> threads;
  std::vector<ClientRun> runs(static_cast<size_t>(clients));
  const auto t0 = Clock::now();
  for (int i = 0; i < clients; ++i)
    threads.emplace_back([&, i] { runs[size_t(i)] = drive(s.endpoint(), "t" + std::to_string(i),
                                                          per_client, 32, 1, false); });
  for (auto& t : threads) t.join();
  const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  int results = 0;
  for (auto& r : runs) results += r.results;
  const double rate = results / secs;
  std::printf("overhead: submit -> result through a no-op stage over tcp loopback: median %.0f us "
              "(target <= 200 us)  %s\n",
              med, verdict(med <= 200));
  std::printf("overhead: of which the engine alone (submit_with_callback -> done, same stage): median %.0f us; "
              "the front door adds %.0f us\n",
              engine_med, med - engine_med);
  std::printf("overhead: %d clients x %d jobs (32 in flight each): %.0f jobs/s (target >= 5000)  %s\n", clients,
              per_client, rate, verdict(rate >= 5000));
  return med <= 200 && rate >= 5000;
}

/// Every bad input of issue 12, raw over a DEALER.
std::vector<std::string> bad_inputs() {
  auto pack = [](auto&& fill) {
    msgpack::sbuffer b;
    msgpack::packer<msgpack::sbuffer> pk(b);
    fill(pk);
    return std::string(b.data(), b.size());
  };
  auto submit_with = [&](const char* key, auto value) {
    return pack([&](auto& pk) {
      pk.pack_map(4);
      pk.pack("op"), pk.pack("submit"), pk.pack("id"), pk.pack("bad"), pk.pack("prompt"), pk.pack("x");
      pk.pack(key), pk.pack(value);
    });
  };
  std::vector<std::string> bad = {
      "\xc1\xc1 not msgpack",
      pack([](auto& pk) { pk.pack_array(2), pk.pack(1), pk.pack(2); }),
      pack([](auto& pk) { pk.pack_map(1), pk.pack("op"), pk.pack("explode"); }),
      pack([](auto& pk) { pk.pack_map(1), pk.pack("op"), pk.pack("submit"); }),
      submit_with("steps", "twenty"),
      submit_with("steps", 0),
      submit_with("steps", 100000),
      submit_with("width", 0),  // 0 sent explicitly: not "the default"
      submit_with("width", 100000),
      submit_with("guidance", std::numeric_limits<double>::quiet_NaN()),
      submit_with("pipeline", "nope"),
      submit_with("num_images", 1000),
      pack([](auto& pk) {
        pk.pack_map(3);
        pk.pack("op"), pk.pack("submit"), pk.pack("id"), pk.pack("big"), pk.pack("prompt"), pk.pack(std::string(1 << 20, 'p'));
      }),
      std::string(),
  };
  return bad;
}

bool barrage_figure(int good_jobs) {
  register_builtin_stages();
  PipelineSpec spec = synthetic(0.5, 2, 1024);
  spec.model_dir.clear();
  Served s(spec, client_limit(256));
  const double rss0 = rss_mib();
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> bad_sent{0}, bad_answered{0};
  std::thread barrage([&] {
    zmq::context_t ctx(1);
    zmq::socket_t raw(ctx, zmq::socket_type::dealer);
    raw.set(zmq::sockopt::linger, 0);
    raw.set(zmq::sockopt::rcvtimeo, 1000);
    raw.connect(s.endpoint());
    const auto bad = bad_inputs();
    for (size_t i = 0; !stop; ++i) {
      const std::string& m = bad[i % bad.size()];
      raw.send(zmq::buffer(m), zmq::send_flags::none);
      bad_sent++;
      // A truncated multipart message too, now and then.
      if (i % 7 == 0) {
        raw.send(zmq::str_buffer("part"), zmq::send_flags::sndmore);
        raw.send(zmq::str_buffer("two"), zmq::send_flags::none);
        bad_sent++;
      }
      zmq::message_t reply;
      while (raw.recv(reply, zmq::recv_flags::dontwait)) bad_answered++;
    }
    zmq::message_t reply;
    while (raw.recv(reply)) bad_answered++;  // until a second passes with nothing more
  });
  std::vector<std::thread> good;
  std::vector<ClientRun> runs(4);
  for (int i = 0; i < 4; ++i)
    good.emplace_back([&, i] { runs[size_t(i)] = drive(s.endpoint(), "g" + std::to_string(i),
                                                       good_jobs / 4, 8, 2, false); });
  for (auto& t : good) t.join();
  stop = true;
  barrage.join();
  int results = 0, errors = 0, lost = 0;
  for (auto& r : runs) results += r.results, errors += r.errors, lost += r.lost;
  const double rss1 = rss_mib();
  const bool ok = results == good_jobs && errors == 0 && lost == 0 && bad_answered == bad_sent;
  std::printf("barrage: %llu bad messages (%llu answered with an error), %d good jobs: %d results, %d errors, %d "
              "lost  %s\n",
              (unsigned long long)bad_sent.load(), (unsigned long long)bad_answered.load(), good_jobs, results, errors,
              lost, verdict(ok));
  std::printf("barrage: RSS %.1f -> %.1f MiB (target: within 64 MiB)  %s\n", rss0, rss1, verdict(rss1 - rss0 < 64));
  return ok && rss1 - rss0 < 64;
}

bool model_figure() {
  PipelineSpec spec = load_pipeline_spec(std::string(STAGECRAFT_SOURCE_DIR) + "/pipelines/tiny-shapes.yaml");
  if (auto problems = check_stage_types(spec); !problems.empty()) return false;
  Served s(spec, {});
  std::vector<std::thread> threads;
  std::vector<ClientRun> runs(8);
  client::SubmitFields f;
  f.prompt = "a red circle in the center on a blue background";
  const auto t0 = Clock::now();
  for (int i = 0; i < 8; ++i)
    threads.emplace_back([&, i] {
      runs[size_t(i)] = drive(s.endpoint(), "m" + std::to_string(i), i < 2 ? 7 : 6, 2, 0, false, &f);
    });
  for (auto& t : threads) t.join();
  int results = 0, errors = 0, dup = 0, lost = 0;
  for (auto& r : runs) results += r.results, errors += r.errors, dup += r.duplicates, lost += r.lost;
  const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  const bool ok = results == 50 && errors == 0 && dup == 0 && lost == 0;
  std::printf("model: 50 jobs of the shipped model from 8 clients in %.2f s (%.1f images/s): %d results, %d errors, "
              "%d duplicates, %d lost  %s\n",
              secs, results / secs, results, errors, dup, lost, verdict(ok));
  return ok;
}

}  // namespace

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  register_builtin_stages();
  bool ok = true;
  ok &= load_figure(8, 500);
  ok &= overhead_figure(quick);
  ok &= barrage_figure(quick ? 200 : 1000);
  if (!quick) ok &= model_figure();
  return ok ? 0 : 1;
}
