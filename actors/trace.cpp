#include "actors/trace.hpp"

#include <fstream>
#include <map>
#include <set>
#include <tuple>

namespace stagecraft::actors {

namespace {
const char* kind_name(TraceSpan::Kind k) {
  switch (k) {
    case TraceSpan::Kind::queue: return "queue";
    case TraceSpan::Kind::compute: return "compute";
    case TraceSpan::Kind::transfer: return "transfer";
  }
  return "?";
}
}  // namespace

nlohmann::json chrome_trace_json(const std::vector<JobResult>& jobs, Clock::time_point t0) {
  using nlohmann::json;
  auto us = [t0](Clock::time_point t) {
    return std::chrono::duration<double, std::micro>(t - t0).count();
  };
  json events = json::array();
  events.push_back({{"ph", "M"}, {"name", "process_name"}, {"pid", 1}, {"args", {{"name", "stagecraft engine"}}}});
  events.push_back({{"ph", "M"}, {"name", "process_name"}, {"pid", 2}, {"args", {{"name", "jobs"}}}});

  std::map<std::string, int> tids;  // lane name -> track
  auto tid_of = [&](const std::string& lane) {
    auto it = tids.find(lane);
    if (it != tids.end()) return it->second;
    int tid = static_cast<int>(tids.size()) + 1;
    tids[lane] = tid;
    events.push_back({{"ph", "M"}, {"name", "thread_name"}, {"pid", 1}, {"tid", tid}, {"args", {{"name", lane}}}});
    return tid;
  };

  // A batch appears in the trace of each of its jobs; emit its lane slice once.
  struct Slice {
    std::string stage;
    int batch = 1;
    std::vector<uint64_t> jobs;
  };
  std::map<std::tuple<std::string, int64_t, int64_t>, Slice> slices;
  uint64_t flow_id = 0;
  for (const auto& j : jobs) {
    if (j.trace.empty()) continue;
    Clock::time_point first = j.trace.front().start, last = j.trace.front().end;
    const TraceSpan* prev_compute = nullptr;
    for (const auto& s : j.trace) {
      first = std::min(first, s.start);
      last = std::max(last, s.end);
      if (s.kind == TraceSpan::Kind::compute) {
        auto key = std::make_tuple(s.lane, s.start.time_since_epoch().count(), s.end.time_since_epoch().count());
        auto& sl = slices[key];
        sl.stage = s.stage;
        sl.batch = s.batch_size;
        sl.jobs.push_back(j.job_id);
        if (prev_compute && prev_compute->stage != s.stage) {
          ++flow_id;
          double s_ts = us(prev_compute->end) - 0.001;
          if (s_ts < us(prev_compute->start)) s_ts = us(prev_compute->start);
          events.push_back({{"ph", "s"}, {"name", "packet"}, {"cat", "flow"}, {"id", flow_id}, {"pid", 1},
                            {"tid", tid_of(prev_compute->lane)}, {"ts", s_ts}});
          events.push_back({{"ph", "f"}, {"bp", "e"}, {"name", "packet"}, {"cat", "flow"}, {"id", flow_id},
                            {"pid", 1}, {"tid", tid_of(s.lane)}, {"ts", us(s.start) + 0.001}});
        }
        prev_compute = &s;
      }
    }
    const std::string jname = "job " + std::to_string(j.job_id);
    json args = {{"job", j.job_id}, {"steps", j.steps}};
    if (!j.ok()) args["error"] = j.message;
    events.push_back({{"ph", "b"}, {"cat", "job"}, {"name", jname}, {"id", j.job_id}, {"pid", 2}, {"tid", 0},
                      {"ts", us(first)}, {"args", args}});
    for (const auto& s : j.trace) {
      std::string name = std::string(kind_name(s.kind)) + " " + s.stage;
      events.push_back({{"ph", "b"}, {"cat", "job"}, {"name", name}, {"id", j.job_id}, {"pid", 2}, {"tid", 0},
                        {"ts", us(s.start)}, {"args", {{"lane", s.lane}, {"batch", s.batch_size}}}});
      events.push_back({{"ph", "e"}, {"cat", "job"}, {"name", name}, {"id", j.job_id}, {"pid", 2}, {"tid", 0},
                        {"ts", us(s.end)}});
    }
    events.push_back({{"ph", "e"}, {"cat", "job"}, {"name", jname}, {"id", j.job_id}, {"pid", 2}, {"tid", 0},
                      {"ts", us(last)}});
  }
  for (const auto& [key, sl] : slices) {
    const auto& [lane, start, end] = key;
    Clock::time_point ts{Clock::duration(start)}, te{Clock::duration(end)};
    events.push_back({{"ph", "X"}, {"cat", "compute"}, {"name", sl.stage}, {"pid", 1}, {"tid", tid_of(lane)},
                      {"ts", us(ts)}, {"dur", us(te) - us(ts)}, {"args", {{"batch", sl.batch}, {"jobs", sl.jobs}}}});
  }
  return {{"traceEvents", events}, {"displayTimeUnit", "ms"}};
}

void add_transfer_track(nlohmann::json& trace, const std::vector<TransferSlice>& slices, Clock::time_point t0) {
  auto us = [t0](Clock::time_point t) { return std::chrono::duration<double, std::micro>(t - t0).count(); };
  auto& events = trace["traceEvents"];
  std::map<std::string, int> tids;
  for (const auto& x : slices) {
    auto it = tids.find(x.track);
    if (it == tids.end()) {
      // Far above the lanes' track ids, so the two never collide.
      it = tids.emplace(x.track, 1000 + static_cast<int>(tids.size())).first;
      events.push_back({{"ph", "M"}, {"name", "thread_name"}, {"pid", 1}, {"tid", it->second}, {"args", {{"name", x.track}}}});
    }
    events.push_back({{"ph", "X"}, {"cat", "transfer"}, {"name", "job " + std::to_string(x.job)}, {"pid", 1},
                      {"tid", it->second}, {"ts", us(x.start)}, {"dur", us(x.end) - us(x.start)},
                      {"args", {{"bytes", x.bytes}, {"job", x.job}}}});
  }
}

void label_process(nlohmann::json& trace, const std::string& name, int index) {
  for (auto& e : trace["traceEvents"]) {
    const int pid = e.value("pid", 1);
    e["pid"] = 2 * index + pid;
    if (e.value("ph", "") == "M" && e.value("name", "") == "process_name")
      e["args"]["name"] = pid == 1 ? name : name + " jobs";
  }
}

nlohmann::json merge_chrome_traces(const std::vector<nlohmann::json>& traces) {
  nlohmann::json events = nlohmann::json::array();
  for (const auto& t : traces)
    if (t.contains("traceEvents"))
      for (const auto& e : t["traceEvents"]) events.push_back(e);
  return {{"traceEvents", events}, {"displayTimeUnit", "ms"}};
}

void write_chrome_trace(const std::string& path, const std::vector<JobResult>& jobs, Clock::time_point t0) {
  std::ofstream f(path);
  SC_CHECK(f.good(), Errc::io, "cannot write trace file '" << path << "'; check the folder exists and is writable");
  f << chrome_trace_json(jobs, t0).dump() << "\n";
  SC_CHECK(f.good(), Errc::io, "writing trace file '" << path << "' failed (disk full?)");
}

}  // namespace stagecraft::actors
