#pragma once
// What `/metrics` shows: per-stage queue / compute / transfer seconds and batch
// sizes (histograms observed from every finished job's trace), jobs by outcome,
// queue depth, images per second, lane utilisation and, when the pipeline file
// gives a price per device-hour, the cost per million images.
//
// The server thread observes; the HTTP thread renders. Both may run at once.
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "actors/engine.hpp"
#include "service/prometheus_text.hpp"

namespace stagecraft::service {

struct ServerCounters;

/// The engine's live per-stage figures (busy seconds, lane utilisation over `wall_seconds`,
/// batches, failures, in flight, health): what /metrics shows of the stages of one process,
/// the job service's or a worker's.
void add_stage_figures(PrometheusText& out, const EngineStats& engine, double wall_seconds);

class ServiceMetrics {
 public:
  explicit ServiceMetrics(std::vector<std::string> stage_names, double price_per_device_hour, int devices);
  /// A finished engine job (one image): its spans and how it ended ("completed" or an error code).
  void observe_job(const std::vector<TraceSpan>& trace, const std::string& outcome, int images,
                   std::chrono::duration<double> latency);
  /// The exposition text, with the engine's and the front door's live figures.
  std::string render(const EngineStats& engine, const ServerCounters& door, size_t jobs_in_flight) const;

 private:
  struct StageHistograms {
    Histogram queue, compute, transfer, batch;
    StageHistograms();
  };
  double images_per_second() const;
  mutable std::mutex mu_;
  std::map<std::string, std::unique_ptr<StageHistograms>> stages_;
  Histogram job_seconds_;
  std::map<std::string, uint64_t> outcomes_;
  std::vector<std::chrono::steady_clock::time_point> recent_images_;  ///< for images per second
  uint64_t images_ = 0;
  double price_per_device_hour_;
  int devices_;
  std::chrono::steady_clock::time_point t0_ = std::chrono::steady_clock::now();
};

}  // namespace stagecraft::service
