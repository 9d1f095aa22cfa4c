#include "service/service_metrics.hpp"

#include <algorithm>

#include "service/job_server.hpp"

namespace stagecraft::service {

namespace {

std::vector<double> second_buckets() {
  return {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
}

/// Images per second is measured over the last minute (or since start, if younger).
constexpr auto kRateWindow = std::chrono::seconds(60);

}  // namespace

ServiceMetrics::StageHistograms::StageHistograms()
    : queue(second_buckets()), compute(second_buckets()), transfer(second_buckets()),
      batch({1, 2, 4, 8, 16, 32, 64, 128}) {}

ServiceMetrics::ServiceMetrics(std::vector<std::string> stage_names, double price_per_device_hour, int devices)
    : job_seconds_(second_buckets()), price_per_device_hour_(price_per_device_hour), devices_(devices) {
  for (auto& n : stage_names) stages_[n] = std::make_unique<StageHistograms>();
}

void ServiceMetrics::observe_job(const std::vector<TraceSpan>& trace, const std::string& outcome, int images,
                                 std::chrono::duration<double> latency) {
  std::lock_guard lk(mu_);
  for (const TraceSpan& s : trace) {
    auto it = stages_.find(s.stage);
    if (it == stages_.end()) continue;
    const double sec = std::chrono::duration<double>(s.end - s.start).count();
    switch (s.kind) {
      case TraceSpan::Kind::queue: it->second->queue.observe(sec); break;
      case TraceSpan::Kind::transfer: it->second->transfer.observe(sec); break;
      case TraceSpan::Kind::compute:
        it->second->compute.observe(sec);
        it->second->batch.observe(s.batch_size);
        break;
    }
  }
  ++outcomes_[outcome];
  job_seconds_.observe(latency.count());
  const auto now = std::chrono::steady_clock::now();
  for (int i = 0; i < images; ++i) recent_images_.push_back(now);
  images_ += uint64_t(images);
  const auto cut = std::lower_bound(recent_images_.begin(), recent_images_.end(), now - kRateWindow);
  recent_images_.erase(recent_images_.begin(), cut);
}

double ServiceMetrics::images_per_second() const {
  const auto now = std::chrono::steady_clock::now();
  const double window = std::min(std::chrono::duration<double>(now - t0_).count(),
                                 std::chrono::duration<double>(kRateWindow).count());
  return window > 0 ? double(recent_images_.size()) / window : 0.0;
}

void add_stage_figures(PrometheusText& out, const EngineStats& engine, double wall_seconds) {
  for (const auto& st : engine.stages) {
    const Labels l{{"stage", st.name}};
    const double busy = std::chrono::duration<double>(st.busy).count();
    out.counter("stagecraft_stage_busy_seconds_total", "Time the stage's lanes spent computing.", l, busy);
    out.gauge("stagecraft_lane_utilization_ratio", "Busy time over wall time, per lane of the stage (0 to 1).", l,
              wall_seconds > 0 && st.replicas > 0 ? std::min(1.0, busy / (wall_seconds * st.replicas)) : 0.0);
    out.counter("stagecraft_stage_batches_total", "run() calls (steps, for the denoiser).", l, double(st.batches));
    out.counter("stagecraft_stage_failures_total", "run() calls and stage callbacks that threw.", l,
                double(st.failures));
    out.gauge("stagecraft_stage_in_flight", "Packets inside the stage now.", l, double(st.in_flight));
    out.gauge("stagecraft_stage_healthy", "1 when the stage is healthy, 0 when degraded.", l,
              st.health == Health::ok ? 1.0 : 0.0);
  }
}

std::string ServiceMetrics::render(const EngineStats& engine, const ServerCounters& door, size_t jobs_in_flight) const {
  PrometheusText out;
  std::lock_guard lk(mu_);
  for (const auto& [outcome, n] : outcomes_)
    out.counter("stagecraft_jobs_total", "Engine jobs (one per image) that ended, by outcome.", {{"outcome", outcome}},
                double(n));
  out.counter("stagecraft_images_total", "Images returned in results.", {}, double(images_));
  out.counter("stagecraft_requests_total", "Protocol messages received by the front door.", {}, double(door.messages));
  const std::pair<const char*, const std::atomic<uint64_t>*> refusals[] = {
      {"malformed", &door.malformed},
      {"invalid_argument", &door.refused_invalid},
      {"overloaded", &door.refused_overloaded},
      {"too_many_jobs", &door.refused_client_limit},
      {"duplicate_id", &door.conflicts}};
  for (const auto& [why, n] : refusals)
    out.counter("stagecraft_requests_refused_total", "Requests refused at the door, by reason.", {{"reason", why}},
                double(n->load()));
  out.counter("stagecraft_clients_lost_total", "Clients taken as gone for silence; their jobs were cancelled.", {},
              double(door.clients_lost));
  out.gauge("stagecraft_jobs_in_flight", "Accepted submits without a terminal reply yet.", {}, double(jobs_in_flight));
  out.gauge("stagecraft_queue_depth", "Engine jobs accepted and not finished.", {}, double(engine.pending));
  out.gauge("stagecraft_queue_capacity", "Most engine jobs in flight (limits.max_pending_jobs).", {},
            double(engine.max_pending));
  out.gauge("stagecraft_images_per_second", "Images returned per second over the last minute.", {},
            images_per_second());
  out.histogram("stagecraft_job_duration_seconds", "Engine job submit to outcome.", {}, job_seconds_.snapshot());
  add_stage_figures(out, engine, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count());
  for (const auto& st : engine.stages) {
    const Labels l{{"stage", st.name}};
    if (auto it = stages_.find(st.name); it != stages_.end()) {
      out.histogram("stagecraft_stage_queue_seconds", "Time jobs waited before the stage.", l,
                    it->second->queue.snapshot());
      out.histogram("stagecraft_stage_compute_seconds", "Time jobs spent in the stage's compute.", l,
                    it->second->compute.snapshot());
      out.histogram("stagecraft_stage_transfer_seconds", "Time jobs spent moving into the stage.", l,
                    it->second->transfer.snapshot());
      out.histogram("stagecraft_stage_batch_size", "Batch size each job ran in, per stage.", l,
                    it->second->batch.snapshot());
    }
  }
  if (price_per_device_hour_ > 0) {
    const double ips = images_per_second();
    if (ips > 0)
      out.gauge("stagecraft_cost_per_million_images",
                "Price of a million images at the current rate (pipeline price per device-hour x devices).", {},
                price_per_device_hour_ * devices_ / (ips * 3600.0) * 1e6);
  }
  return out.str();
}

}  // namespace stagecraft::service
