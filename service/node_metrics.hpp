#pragma once
// What a node of a split pipeline adds to `/metrics` (docs/disaggregation.md "Metrics"):
// per peer, the channel's packets, tensor bytes, credit waits, credits held, whether it is
// connected and how often that node was lost; what the node's own sockets received and
// refused; notes; jobs entered and sent on. The head appends these to the job service's
// `/metrics`; any worker serves them with its stages' figures on `--metrics-http`.
//
//   PrometheusText out;
//   add_node_metrics(out, rt.node(), rt.node_stats());
#include <string>

#include "actors/node_runtime.hpp"
#include "service/prometheus_text.hpp"

namespace stagecraft::service {

/// Samples labelled node="<node>" (and peer / channel where they are per peer).
void add_node_metrics(PrometheusText& out, const std::string& node, const NodeStats& stats);

}  // namespace stagecraft::service
