#include "service/prometheus_text.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace stagecraft::service {

namespace {

std::string escape(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

std::string number(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

std::string label_text(const Labels& labels, const std::pair<std::string, std::string>* extra = nullptr) {
  if (labels.empty() && !extra) return "";
  std::string out = "{";
  bool first = true;
  auto add = [&](const std::string& k, const std::string& v) {
    out += (first ? "" : ",") + k + "=\"" + escape(v) + "\"";
    first = false;
  };
  for (const auto& [k, v] : labels) add(k, v);
  if (extra) add(extra->first, extra->second);
  return out + "}";
}

}  // namespace

Histogram::Histogram(std::vector<double> upper_bounds) : bounds_(std::move(upper_bounds)) {
  std::sort(bounds_.begin(), bounds_.end());
  counts_.assign(bounds_.size() + 1, 0);
}

void Histogram::observe(double v) {
  const size_t i = size_t(std::lower_bound(bounds_.begin(), bounds_.end(), v) - bounds_.begin());
  std::lock_guard lk(mu_);
  ++counts_[i];
  sum_ += v;
  ++count_;
}

Histogram::Snapshot Histogram::snapshot() const {
  std::lock_guard lk(mu_);
  Snapshot s;
  s.bounds = bounds_;
  uint64_t run = 0;
  for (uint64_t c : counts_) s.cumulative.push_back(run += c);
  s.sum = sum_;
  s.count = count_;
  return s;
}

PrometheusText::Family& PrometheusText::family(const std::string& name, const char* type, const std::string& help) {
  auto [it, fresh] = families_.try_emplace(name);
  if (fresh) {
    it->second.type = type;
    it->second.help = help;
    order_.push_back(name);
  }
  return it->second;
}

void PrometheusText::counter(const std::string& name, const std::string& help, const Labels& labels, double value) {
  family(name, "counter", help).samples.push_back(name + label_text(labels) + " " + number(value));
}

void PrometheusText::gauge(const std::string& name, const std::string& help, const Labels& labels, double value) {
  family(name, "gauge", help).samples.push_back(name + label_text(labels) + " " + number(value));
}

void PrometheusText::histogram(const std::string& name, const std::string& help, const Labels& labels,
                               const Histogram::Snapshot& h) {
  Family& f = family(name, "histogram", help);
  for (size_t i = 0; i <= h.bounds.size(); ++i) {
    const std::pair<std::string, std::string> le{"le", i < h.bounds.size() ? number(h.bounds[i]) : "+Inf"};
    f.samples.push_back(name + "_bucket" + label_text(labels, &le) + " " + std::to_string(h.cumulative[i]));
  }
  f.samples.push_back(name + "_sum" + label_text(labels) + " " + number(h.sum));
  f.samples.push_back(name + "_count" + label_text(labels) + " " + std::to_string(h.count));
}

std::string PrometheusText::str() const {
  std::string out;
  for (const auto& name : order_) {
    const Family& f = families_.at(name);
    out += "# HELP " + name + " " + f.help + "\n";
    out += "# TYPE " + name + " " + f.type + "\n";
    for (const auto& s : f.samples) out += s + "\n";
  }
  return out;
}

}  // namespace stagecraft::service
