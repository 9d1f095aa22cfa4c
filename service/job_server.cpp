#include "service/job_server.hpp"

#include <algorithm>
#include <cstring>
#include <deque>
#include <filesystem>
#include <mutex>
#include <optional>
#include <unordered_map>
#include <unordered_set>

#include <zmq.hpp>

#include "service/curve_auth.hpp"
#include "service/service_metrics.hpp"
#include "transport/job_protocol.hpp"
#include "transport/wakeup.hpp"

namespace stagecraft::service {

using transport::ClientMessage;
using transport::Op;
using transport::ProtocolError;
using transport::ResultImage;
using transport::StageTiming;
using transport::SubmitFields;

namespace {

/// One accepted submit: `num_images` engine jobs answered together.
struct Job {
  std::string id;
  SubmitFields fields;
  std::string owner;                     ///< the connection that submitted it (limits, heartbeats)
  std::vector<std::string> subscribers;  ///< connections that get its replies (owner + resubmitters)
  std::vector<uint64_t> engine_ids;
  int images_done = 0;
  std::vector<std::optional<ResultImage>> images;
  std::map<std::string, StageTiming> timings;
  std::optional<std::pair<std::string, std::string>> failure;  ///< code, message of the first failure
  int step = 0, of = 0;                   ///< progress of the slowest image, for `status`
  std::vector<int> image_steps;
  std::string terminal;                   ///< the encoded terminal reply, once finished
  bool ok = false;
  Clock::time_point accepted_at;
};

/// What engine threads hand to the server thread.
struct Event {
  std::string id;
  int image = 0;
  bool done = false;
  int step = 0, total = 0;
  std::optional<std::pair<std::string, std::string>> failure;
  std::optional<ResultImage> image_bytes;  ///< none when the pipeline makes no "image" tensor
  std::vector<TraceSpan> trace;
};

/// Where engine threads leave events. Shared with the callbacks, so a callback that fires
/// after the server is gone writes into this and not into freed memory.
struct Inbox {
  std::mutex mu;
  std::vector<Event> events;
  transport::Wakeup wake;
  void post(Event e) {
    {
      std::lock_guard lk(mu);
      events.push_back(std::move(e));
    }
    wake.notify();
  }
};

struct Client {
  int in_flight = 0;
  Clock::time_point last_seen;
};

std::string pipeline_stem(const PipelineSpec& spec) {
  return std::filesystem::path(spec.path).stem().string();
}

}  // namespace

struct JobServer::Impl {
  JobRunner& engine;
  PipelineSpec spec;
  ServerOptions opt;
  PngEncoder png;
  zmq::context_t ctx{1};
  std::unique_ptr<ZapAuthenticator> zap;
  zmq::socket_t sock;   ///< external clients (tcp/ipc), CurveZMQ when configured
  zmq::socket_t local;  ///< in-process clients (the HTTP gateway), no per-client limit
  std::shared_ptr<Inbox> inbox = std::make_shared<Inbox>();
  std::string endpoint, inproc;
  ServerCounters counters;
  std::unique_ptr<ServiceMetrics> metrics;
  std::atomic<bool> drain_requested{false};
  std::atomic<bool> draining_flag{false};  ///< `draining`, readable from the HTTP thread
  std::atomic<size_t> live_count{0};
  bool draining = false;

  std::unordered_map<std::string, std::shared_ptr<Job>> live;
  std::unordered_map<std::string, std::shared_ptr<Job>> finished;
  std::deque<std::string> finished_order;
  std::unordered_map<std::string, Client> clients;
  int engine_in_flight = 0;
  double mean_job_ms = 100;  ///< moving average of accepted → terminal, for retry_after_ms
  Clock::time_point last_sweep = Clock::now();

  Impl(JobRunner& e, const PipelineSpec& s, ServerOptions o, PngEncoder p)
      : engine(e), spec(s), opt(std::move(o)), png(std::move(p)) {
    if (opt.pipeline_name.empty()) opt.pipeline_name = pipeline_stem(spec);
    if (opt.curve) zap = std::make_unique<ZapAuthenticator>(ctx, read_allowed_keys(opt.curve->allowed_clients_file));
    sock = zmq::socket_t(ctx, zmq::socket_type::router);
    sock.set(zmq::sockopt::router_mandatory, 1);
    sock.set(zmq::sockopt::maxmsgsize, opt.max_message_bytes);
    sock.set(zmq::sockopt::linger, 2000);  // let the last terminal replies out at exit
    if (opt.curve) {
      sock.set(zmq::sockopt::curve_server, 1);
      sock.set(zmq::sockopt::curve_secretkey, read_key_file(opt.curve->server_secret_file));
    }
    try {
      sock.bind(opt.bind);
    } catch (const zmq::error_t& e) {
      SC_FAIL(Errc::io, "cannot bind '" << opt.bind << "': " << e.what()
                                        << " (is another server on it? use --bind tcp://HOST:PORT or ipc://PATH)");
    }
    endpoint = sock.get(zmq::sockopt::last_endpoint);
    local = zmq::socket_t(ctx, zmq::socket_type::router);
    local.set(zmq::sockopt::router_mandatory, 1);
    local.set(zmq::sockopt::linger, 0);
    inproc = "inproc://stagecraft-jobs-" + std::to_string(reinterpret_cast<uintptr_t>(this));
    local.bind(inproc);
    std::vector<std::string> names;
    int devices = 0;
    for (const auto& st : spec.stages) names.push_back(st.name), devices += st.replicas;
    metrics = std::make_unique<ServiceMetrics>(names, opt.price_per_device_hour, devices);
  }

  // ---- sending ----
  /// Clients are keyed "e:<identity>" (external socket) or "i:<identity>" (in-process).
  void send(const std::string& key, const std::string& payload) {
    zmq::socket_t& out = key[0] == 'e' ? sock : local;
    const std::string identity = key.substr(2);
    try {
      if (!out.send(zmq::buffer(identity), zmq::send_flags::sndmore | zmq::send_flags::dontwait)) {
        counters.unsendable++;
        return;
      }
      (void)out.send(zmq::buffer(payload), zmq::send_flags::dontwait);
    } catch (const zmq::error_t&) {
      counters.unsendable++;  // EHOSTUNREACH: the client has gone; its terminal reply stays kept
    }
  }
  void to_subscribers(const Job& j, const std::string& payload) {
    for (const auto& s : j.subscribers) send(s, payload);
  }
  void error(const std::string& identity, const std::string& id, const std::string& code, const std::string& message,
             std::optional<int64_t> retry_after = std::nullopt) {
    send(identity, transport::encode_error(id, code, message, retry_after));
  }
  int64_t retry_after_ms() const { return std::clamp<int64_t>(int64_t(mean_job_ms), 10, 60000); }

  // ---- requests ----
  void handle(const std::string& identity, const zmq::message_t& payload) {
    counters.messages++;
    clients[identity].last_seen = Clock::now();
    ClientMessage m;
    try {
      m = transport::decode_client_message(payload.data(), payload.size());
    } catch (const ProtocolError& e) {
      counters.malformed++;
      error(identity, "", e.code, e.what());
      return;
    }
    switch (m.op) {
      case Op::submit: submit(identity, m); break;
      case Op::cancel: cancel(identity, m.id); break;
      case Op::status: status(identity, m.id); break;
      case Op::health: send(identity, transport::encode_info("health", health())); break;
      case Op::stats: send(identity, transport::encode_info("stats", stats())); break;
      case Op::ping: send(identity, transport::encode_info("pong", nlohmann::json::object())); break;
    }
  }

  void submit(const std::string& identity, const ClientMessage& m) {
    const SubmitFields& f = m.submit;
    if (auto it = live.find(m.id); it != live.end()) return resubmit(identity, *it->second, f);
    if (auto it = finished.find(m.id); it != finished.end()) return resubmit(identity, *it->second, f);
    auto refuse = [&](const std::string& code, const std::string& message, std::optional<int64_t> retry = {}) {
      if (code == "invalid_argument") counters.refused_invalid++;
      error(identity, m.id, code, message, retry);
    };
    if (draining) return refuse("shutting_down", "the server is draining and accepts no new jobs; submit elsewhere");
    if (!f.pipeline.empty() && f.pipeline != opt.pipeline_name)
      return refuse("unknown_pipeline",
                    "pipeline '" + f.pipeline.substr(0, 64) + "' is not served here; this server serves '" +
                        opt.pipeline_name + "' (or omit `pipeline`)");
    if (f.num_images < 1 || f.num_images > opt.max_images_per_job)
      return refuse("invalid_argument", "num_images is " + std::to_string(f.num_images) + "; allowed 1 to " +
                                            std::to_string(opt.max_images_per_job));
    // The engine reads 0 as "the pipeline's default": a client that sends 0 means 0, and is told.
    for (const auto& [name, v] : {std::pair{"steps", f.steps}, {"width", f.width}, {"height", f.height}})
      if (v && *v < 1)
        return refuse("invalid_argument", std::string(name) + " is " + std::to_string(*v) +
                                              "; at least 1 (omit it for the pipeline's default)");
    if (f.deadline_ms && *f.deadline_ms <= 0)
      return refuse("invalid_argument", "deadline_ms is " + std::to_string(*f.deadline_ms) +
                                            "; give a positive number of milliseconds, or omit it");
    if (f.priority < -1000 || f.priority > 1000)
      return refuse("invalid_argument", "priority is " + std::to_string(f.priority) + "; allowed -1000 to 1000");
    Client& c = clients[identity];
    if (identity[0] == 'e' && c.in_flight >= opt.max_jobs_per_client) {
      counters.refused_client_limit++;
      return refuse("too_many_jobs",
                    "this client has " + std::to_string(c.in_flight) + " jobs in flight, the most allowed is " +
                        std::to_string(opt.max_jobs_per_client) + "; wait for results",
                    retry_after_ms());
    }
    if (engine_in_flight + f.num_images > spec.limits.max_pending_jobs) {
      counters.refused_overloaded++;
      return refuse("overloaded",
                    "the server has " + std::to_string(engine_in_flight) + " images in flight of at most " +
                        std::to_string(spec.limits.max_pending_jobs) + "; retry later",
                    retry_after_ms());
    }

    auto job = std::make_shared<Job>();
    job->id = m.id;
    job->fields = f;
    job->owner = identity;
    job->subscribers = {identity};
    job->accepted_at = Clock::now();
    job->image_steps.assign(size_t(f.num_images), 0);
    job->images.resize(size_t(f.num_images));
    for (int i = 0; i < f.num_images; ++i) {
      Request r = transport::to_request(f, i);
      if (f.deadline_ms) r.deadline = job->accepted_at + std::chrono::milliseconds(*f.deadline_ms);
      JobRunner::Submitted s = engine.submit_with_callback(std::move(r), progress_callback(m.id, i),
                                                        done_callback(m.id, i, f.output));
      if (s.refused) {
        const std::string code = s.refused->error ? errc_name(*s.refused->error) : "internal";
        if (i == 0) {
          if (code == "overloaded") counters.refused_overloaded++;
          return refuse(code, s.refused->message, code == "overloaded" ? std::optional(retry_after_ms()) : std::nullopt);
        }
        // Images 0..i-1 are running: fail the job as a whole once they have ended.
        job->failure = {code, s.refused->message};
        for (uint64_t id : job->engine_ids) engine.cancel(id);
        job->images_done += f.num_images - i;
        break;
      }
      job->engine_ids.push_back(s.id);
    }
    counters.accepted++;
    engine_in_flight += int(job->engine_ids.size());
    c.in_flight++;
    live[m.id] = job;
    live_count = live.size();
    send(identity, transport::encode_accepted(m.id));
    if (job->images_done == f.num_images) finish(*job);  // only possible when every image was refused
  }

  void resubmit(const std::string& identity, Job& job, const SubmitFields& f) {
    if (!(job.fields == f)) {
      counters.conflicts++;
      return error(identity, job.id, "duplicate_id",
                   "id '" + job.id + "' is already used by a job with other parameters; choose a new id");
    }
    counters.duplicates++;
    send(identity, transport::encode_accepted(job.id));
    if (!job.terminal.empty()) return send(identity, job.terminal);
    if (std::find(job.subscribers.begin(), job.subscribers.end(), identity) == job.subscribers.end())
      job.subscribers.push_back(identity);
  }

  void cancel(const std::string& identity, const std::string& id) {
    if (auto it = live.find(id); it != live.end()) {
      for (uint64_t e : it->second->engine_ids) engine.cancel(e);
      return;  // the job's terminal `error {code: cancelled}` answers
    }
    if (auto it = finished.find(id); it != finished.end())
      return send(identity, transport::encode_status(id, it->second->ok ? "done" : "failed", it->second->step,
                                                     it->second->of));
    error(identity, id, "not_found", "no job with id '" + id + "' is in flight or recently finished");
  }

  void status(const std::string& identity, const std::string& id) {
    if (auto it = live.find(id); it != live.end()) {
      const Job& j = *it->second;
      return send(identity, transport::encode_status(id, j.of > 0 ? "running" : "queued", j.step, j.of));
    }
    if (auto it = finished.find(id); it != finished.end())
      return send(identity, transport::encode_status(id, it->second->ok ? "done" : "failed", it->second->step,
                                                     it->second->of));
    send(identity, transport::encode_status(id, "unknown", 0, 0));
  }

  // ---- engine callbacks (engine threads) ----
  JobProgress progress_callback(const std::string& id, int image) {
    return [inbox = inbox, id, image](int step, int total) {
      Event e;
      e.id = id;
      e.image = image;
      e.step = step;
      e.total = total;
      inbox->post(std::move(e));
    };
  }

  JobRunner::JobDone done_callback(const std::string& id, int image, const std::string& output) {
    return [inbox = inbox, png = png, id, image, output](const JobResult& r) {
      Event e;
      e.id = id;
      e.image = image;
      e.done = true;
      e.trace = r.trace;
      if (!r.ok()) {
        e.failure = {errc_name(*r.error), r.message};
      } else {
        // Encoding runs here, on the engine's thread, so the socket thread never waits on it.
        // A pipeline without an "image" tensor (e.g. synthetic stages) answers with no images.
        if (auto it = r.tensors.find("image"); it != r.tensors.end()) {
          try {
            const Tensor& rgb = it->second;
            const Tensor hwc = rgb.ndim() == 4 ? rgb.select(0, 0) : rgb;
            SC_CHECK(hwc.ndim() == 3 && hwc.dtype() == DType::u8, Errc::internal,
                     "the pipeline's image is " << rgb.describe() << ", not u8 [1, H, W, C]");
            ResultImage im;
            im.height = hwc.size(0);
            im.width = hwc.size(1);
            im.channels = hwc.size(2);
            if (output == "png") {
              const std::vector<uint8_t> bytes = png(hwc);
              im.data.assign(bytes.begin(), bytes.end());
            } else {
              const Tensor c = hwc.contiguous();
              im.data.assign(static_cast<const char*>(c.data()), c.nbytes());
            }
            e.image_bytes = std::move(im);
          } catch (const std::exception& ex) {
            e.failure = {"internal", std::string("could not encode the image: ") + ex.what()};
          }
        }
      }
      inbox->post(std::move(e));
    };
  }

  // ---- events (server thread) ----
  void apply_events() {
    std::vector<Event> batch;
    {
      std::lock_guard lk(inbox->mu);
      batch.swap(inbox->events);
    }
    for (Event& e : batch) {
      auto it = live.find(e.id);
      if (it == live.end()) continue;
      Job& j = *it->second;
      if (!e.done) {
        j.image_steps[size_t(e.image)] = e.step;
        j.step = *std::min_element(j.image_steps.begin(), j.image_steps.end());
        j.of = e.total;
        if (j.fields.progress) to_subscribers(j, transport::encode_progress(j.id, e.step, e.total, e.image));
        continue;
      }
      ++j.images_done;
      --engine_in_flight;
      metrics->observe_job(e.trace, e.failure ? e.failure->first : "completed", e.image_bytes ? 1 : 0,
                           Clock::now() - j.accepted_at);
      for (const TraceSpan& s : e.trace) {
        StageTiming& t = j.timings[s.stage];
        t.stage = s.stage;
        const double sec = std::chrono::duration<double>(s.end - s.start).count();
        (s.kind == TraceSpan::Kind::queue ? t.queue_s : s.kind == TraceSpan::Kind::compute ? t.compute_s : t.transfer_s) += sec;
      }
      if (e.failure && !j.failure) {
        j.failure = e.failure;
        for (uint64_t id : j.engine_ids) engine.cancel(id);  // the job fails as a whole
      }
      if (!e.failure && e.image_bytes) {
        e.image_bytes->seed = j.fields.seed.value_or(0) + uint64_t(e.image);
        j.images[size_t(e.image)] = std::move(e.image_bytes);
      }
      if (j.images_done == j.fields.num_images) finish(j);
    }
  }

  void finish(Job& j) {
    std::shared_ptr<Job> keep = live[j.id];
    if (j.failure) {
      j.terminal = transport::encode_error(j.id, j.failure->first, j.failure->second);
      counters.errors++;
    } else {
      std::vector<StageTiming> t;
      for (auto& [name, v] : j.timings) t.push_back(v);
      std::vector<ResultImage> images;
      for (auto& im : j.images)
        if (im) images.push_back(std::move(*im));
      j.terminal = transport::encode_result(j.id, j.fields.output, images, t);
      j.images.clear();  // the encoded reply holds the bytes now
      j.ok = true;
      counters.results++;
      const double ms = std::chrono::duration<double, std::milli>(Clock::now() - j.accepted_at).count();
      mean_job_ms = 0.9 * mean_job_ms + 0.1 * ms;
    }
    to_subscribers(j, j.terminal);
    if (auto c = clients.find(j.owner); c != clients.end()) c->second.in_flight--;
    live.erase(j.id);
    live_count = live.size();
    finished[keep->id] = keep;
    finished_order.push_back(keep->id);
    while (finished_order.size() > opt.finished_jobs_kept) {
      finished.erase(finished_order.front());
      finished_order.pop_front();
    }
  }

  // ---- heartbeats ----
  void sweep_silent_clients() {
    const auto now = Clock::now();
    if (now - last_sweep < std::chrono::milliseconds(200)) return;
    last_sweep = now;
    std::unordered_set<std::string> lost;
    for (auto it = clients.begin(); it != clients.end();) {
      if (now - it->second.last_seen > opt.client_timeout) {
        if (it->second.in_flight > 0) {
          lost.insert(it->first);
          counters.clients_lost++;
        }
        it = clients.erase(it);
      } else {
        ++it;
      }
    }
    if (lost.empty()) return;
    for (auto& [id, job] : live) {
      const bool all_lost = std::all_of(job->subscribers.begin(), job->subscribers.end(),
                                        [&](const std::string& s) { return lost.count(s) || !clients.count(s); });
      if (all_lost)
        for (uint64_t e : job->engine_ids) engine.cancel(e);
    }
  }

  nlohmann::json health() const {
    const EngineStats s = engine.stats();
    return {{"status", draining ? "draining" : health_name(s.health)},
            {"ready", !draining},
            {"pending", s.pending},
            {"jobs_in_flight", live.size()}};
  }

  nlohmann::json stats() const {
    const EngineStats s = engine.stats();
    nlohmann::json stages = nlohmann::json::array();
    for (const auto& st : s.stages)
      stages.push_back({{"name", st.name},
                        {"batches", st.batches},
                        {"packets", st.packets},
                        {"mean_batch", st.mean_batch()},
                        {"failures", st.failures},
                        {"busy_s", std::chrono::duration<double>(st.busy).count()},
                        {"health", health_name(st.health)}});
    return {{"accepted", counters.accepted.load()},
            {"results", counters.results.load()},
            {"errors", counters.errors.load()},
            {"malformed", counters.malformed.load()},
            {"refused_invalid", counters.refused_invalid.load()},
            {"refused_overloaded", counters.refused_overloaded.load()},
            {"refused_client_limit", counters.refused_client_limit.load()},
            {"clients_lost", counters.clients_lost.load()},
            {"jobs_in_flight", live.size()},
            {"engine", {{"pending", s.pending}, {"completed", s.completed}, {"failed", s.failed}}},
            {"stages", stages}};
  }

  /// Reads what is waiting on one socket (bounded, so engine events are never starved).
  void read_socket(zmq::socket_t& from, char tag) {
    for (int budget = 0; budget < 256; ++budget) {
      std::vector<zmq::message_t> frames(1);
      if (!from.recv(frames[0], zmq::recv_flags::dontwait)) break;
      while (frames.back().more()) {
        frames.emplace_back();
        (void)from.recv(frames.back(), zmq::recv_flags::none);
      }
      const std::string key = std::string(1, tag) + ":" + frames[0].to_string();
      if (frames.size() == 2) {
        handle(key, frames[1]);
      } else if (frames.size() > 2) {
        counters.messages++;
        counters.malformed++;
        error(key, "", "bad_request", "a request is one msgpack frame; got " + std::to_string(frames.size() - 1));
      } else {
        counters.dropped++;
      }
    }
  }

  void run() {
    for (;;) {
      zmq_pollitem_t items[3] = {{sock.handle(), 0, ZMQ_POLLIN, 0},
                                 {local.handle(), 0, ZMQ_POLLIN, 0},
                                 {nullptr, inbox->wake.fd(), ZMQ_POLLIN, 0}};
      transport::poll_ignoring_signals(items, 3, std::chrono::milliseconds(100));
      if (items[2].revents & ZMQ_POLLIN) inbox->wake.drain();
      if (drain_requested.load() && !draining) draining = true, draining_flag = true;
      apply_events();
      read_socket(sock, 'e');
      read_socket(local, 'i');
      sweep_silent_clients();
      if (draining && live.empty()) return;
    }
  }
};

JobServer::JobServer(JobRunner& engine, const PipelineSpec& spec, ServerOptions options, PngEncoder png)
    : impl_(std::make_unique<Impl>(engine, spec, std::move(options), std::move(png))) {}

JobServer::~JobServer() = default;

void JobServer::run() { impl_->run(); }

void JobServer::request_drain() {
  impl_->drain_requested.store(true);
  impl_->inbox->wake.notify();
}

const std::string& JobServer::endpoint() const { return impl_->endpoint; }
const ServerCounters& JobServer::counters() const { return impl_->counters; }

zmq::context_t& JobServer::context() { return impl_->ctx; }
const std::string& JobServer::inproc_endpoint() const { return impl_->inproc; }

bool JobServer::ready() const {
  return !impl_->draining_flag.load() && impl_->engine.stats().health == Health::ok;
}

std::string JobServer::metrics_text() const {
  std::string text = impl_->metrics->render(impl_->engine.stats(), impl_->counters, impl_->live_count.load());
  if (impl_->opt.extra_metrics) text += impl_->opt.extra_metrics();
  return text;
}

}  // namespace stagecraft::service
