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

}  // namespace stagecraft::actors
