#pragma once
// Chrome trace JSON (opens in Perfetto and chrome://tracing) from finished jobs'
// spans: one track (tid) per lane with a slice per batch, an async track per
// job with its queue / transfer / compute intervals, and flow arrows from the
// last compute of one stage to the first compute of the next.
//
//   std::vector<JobResult> jobs = ...;             // with .trace filled in
//   write_chrome_trace("trace.json", jobs, t0);     // t0: the time shown as 0
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "actors/job_result.hpp"

namespace stagecraft::actors {

nlohmann::json chrome_trace_json(const std::vector<JobResult>& jobs, Clock::time_point t0);
/// Error(io) when the file cannot be written.
void write_chrome_trace(const std::string& path, const std::vector<JobResult>& jobs, Clock::time_point t0);

/// One packet handed from one node to another: from when it was queued to leave
/// until its frames were with ZeroMQ.
struct TransferSlice {
  uint64_t job = 0;
  std::string track;  ///< e.g. "transfer enc -> dit"
  Clock::time_point start, end;
  size_t bytes = 0;
};
/// Adds the slices to a chrome_trace_json() document, one track per `track` name in the
/// engine's process, each slice with its byte count.
void add_transfer_track(nlohmann::json& trace, const std::vector<TransferSlice>& slices, Clock::time_point t0);
/// Gives a chrome_trace_json() document's two processes (lanes, jobs) the ids
/// 2*index+1 and 2*index+2 and names starting with `name`, so that several nodes'
/// documents can share one file.
void label_process(nlohmann::json& trace, const std::string& name, int index);
/// One document holding every event of `traces` (e.g. each node's, labelled apart).
nlohmann::json merge_chrome_traces(const std::vector<nlohmann::json>& traces);

}  // namespace stagecraft::actors
