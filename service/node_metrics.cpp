#include "service/node_metrics.hpp"

namespace stagecraft::service {

namespace {

/// One sending channel's figures (ZeroMQ, or the GPU channel beside it).
void add_send_channel(PrometheusText& out, const Labels& l, const transport::ChannelStats& c, bool ready) {
  out.counter("stagecraft_channel_sent_packets_total", "Packets this node handed to the channel to a peer.", l,
              double(c.packets));
  out.counter("stagecraft_channel_sent_bytes_total", "Tensor bytes of those packets.", l, double(c.bytes));
  out.counter("stagecraft_channel_credit_waits_total",
              "Sends held back for want of a credit: the peer's stage was full (backpressure).", l,
              double(c.credit_waits));
  out.gauge("stagecraft_channel_credits", "Credits this node holds for the peer now (packets it may still send).", l,
            double(c.credits));
  out.gauge("stagecraft_channel_connected", "1 while the peer has welcomed this node's channel, else 0.", l,
            ready ? 1.0 : 0.0);
}

/// One receiving socket's figures.
void add_recv_channel(PrometheusText& out, const Labels& l, const transport::ChannelStats& c) {
  out.counter("stagecraft_channel_received_packets_total", "Packets this node's socket delivered to its stages.", l,
              double(c.packets));
  out.counter("stagecraft_channel_received_bytes_total", "Tensor bytes of those packets.", l, double(c.bytes));
  out.counter("stagecraft_channel_refused_total",
              "Messages this node's socket refused: malformed, unexpected, over credit, or failed.", l,
              double(c.refused));
  out.gauge("stagecraft_channel_senders", "Senders that completed the handshake with this node's socket.", l,
            double(c.peers));
}

}  // namespace

void add_node_metrics(PrometheusText& out, const std::string& node, const NodeStats& s) {
  for (const auto& p : s.peers) {
    add_send_channel(out, {{"node", node}, {"peer", p.node}, {"channel", "zmq"}}, p.channel, p.ready);
    if (!p.gpu_channel.empty())
      add_send_channel(out, {{"node", node}, {"peer", p.node}, {"channel", p.gpu_channel}}, p.gpu, p.gpu_ready);
    out.counter("stagecraft_node_peer_losses_total",
                "Times a peer was taken as lost (silent past the node timeout, or restarted).",
                {{"node", node}, {"peer", p.node}}, double(p.losses));
  }
  add_recv_channel(out, {{"node", node}, {"channel", "zmq"}}, s.inbound);
  if (!s.gpu_inbound_channel.empty()) add_recv_channel(out, {{"node", node}, {"channel", s.gpu_inbound_channel}}, s.gpu_inbound);
  const Labels l{{"node", node}};
  out.counter("stagecraft_node_wire_refused_total",
              "Packets refused for their wire format (version, lengths, dtype, shape, frames).", l,
              double(s.refused_malformed));
  out.counter("stagecraft_node_notes_received_total", "Job news (progress, failures, cancels) from other nodes.", l,
              double(s.notes_received));
  out.counter("stagecraft_node_notes_dropped_total", "Job news that could not be sent: its node was not connected.",
              l, double(s.notes_dropped));
  out.counter("stagecraft_node_jobs_entered_total", "Packets that entered this node's stages.", l,
              double(s.jobs_entered));
  out.counter("stagecraft_node_jobs_forwarded_total", "Packets this node sent on to another node.", l,
              double(s.jobs_forwarded));
}

}  // namespace stagecraft::service
