#pragma once
// Prometheus text exposition format (version 0.0.4), written by hand: families
// of counters, gauges and histograms, each with its HELP and TYPE line once and
// its samples after. Names follow Prometheus conventions (base units, `_total`
// on counters); label values are escaped.
//
//   PrometheusText out;
//   out.counter("stagecraft_jobs_total", "Jobs that ended, by outcome.", {{"outcome", "completed"}}, 12);
//   Histogram h({0.001, 0.01, 0.1, 1});
//   h.observe(0.02);
//   out.histogram("stagecraft_job_seconds", "Accepted to terminal reply.", {}, h.snapshot());
//   std::string body = out.str();
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace stagecraft::service {

using Labels = std::vector<std::pair<std::string, std::string>>;

/// Fixed-bucket histogram, safe to observe from several threads.
class Histogram {
 public:
  explicit Histogram(std::vector<double> upper_bounds);
  void observe(double v);
  struct Snapshot {
    std::vector<double> bounds;
    std::vector<uint64_t> cumulative;  ///< per bound, then +Inf last
    double sum = 0;
    uint64_t count = 0;
  };
  Snapshot snapshot() const;

 private:
  mutable std::mutex mu_;
  std::vector<double> bounds_;
  std::vector<uint64_t> counts_;  ///< per bucket (not cumulative), +Inf last
  double sum_ = 0;
  uint64_t count_ = 0;
};

class PrometheusText {
 public:
  void counter(const std::string& name, const std::string& help, const Labels& labels, double value);
  void gauge(const std::string& name, const std::string& help, const Labels& labels, double value);
  void histogram(const std::string& name, const std::string& help, const Labels& labels,
                 const Histogram::Snapshot& h);
  std::string str() const;

 private:
  struct Family {
    std::string type, help;
    std::vector<std::string> samples;
  };
  Family& family(const std::string& name, const char* type, const std::string& help);
  std::vector<std::string> order_;
  std::map<std::string, Family> families_;
};

}  // namespace stagecraft::service
