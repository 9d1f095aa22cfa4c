#include "core/placement.hpp"

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <map>
#include <sstream>

#include "core/error.hpp"

namespace stagecraft {

std::vector<const StageSpec*> chain_order(const PipelineSpec& spec) {
  SC_CHECK(!spec.stages.empty(), Errc::invalid_argument,
           "pipeline '" << spec.path << "' has no stages; add at least one under `stages:`");
  std::vector<const StageSpec*> out;
  if (spec.edges.empty()) {
    for (const auto& s : spec.stages) out.push_back(&s);
    return out;
  }
  std::map<std::string, const StageSpec*> by_name;
  for (const auto& s : spec.stages) by_name[s.name] = &s;
  std::map<std::string, std::string> next, prev;
  for (const auto& e : spec.edges) {
    SC_CHECK(by_name.count(e.from) && by_name.count(e.to), Errc::invalid_argument,
             "edge " << e.from << " -> " << e.to << " names an unknown stage");
    SC_CHECK(!next.count(e.from) && !prev.count(e.to), Errc::unsupported,
             "stage '" << (next.count(e.from) ? e.from : e.to)
                       << "' has two edges on one side; the engine runs chains (each stage one "
                          "predecessor and one successor)");
    next[e.from] = e.to;
    prev[e.to] = e.from;
  }
  const StageSpec* head = nullptr;
  for (const auto& s : spec.stages)
    if (!prev.count(s.name)) {
      SC_CHECK(!head, Errc::unsupported,
               "stages '" << head->name << "' and '" << s.name
                          << "' both have no predecessor; connect every stage into one chain");
      head = &s;
    }
  SC_CHECK(head, Errc::invalid_argument, "the edges form a cycle; a pipeline must be a chain");
  for (const StageSpec* s = head; s;) {
    out.push_back(s);
    auto it = next.find(s->name);
    s = it == next.end() ? nullptr : by_name[it->second];
    SC_CHECK(out.size() <= spec.stages.size(), Errc::invalid_argument, "the edges form a cycle");
  }
  SC_CHECK(out.size() == spec.stages.size(), Errc::unsupported,
           "only " << out.size() << " of " << spec.stages.size()
                   << " stages are on the chain from '" << head->name << "'; connect them all");
  return out;
}

bool Placement::runs_on(int index, const std::string& node) const {
  const auto& n = nodes_of(index);
  return std::find(n.begin(), n.end(), node) != n.end();
}

std::vector<Segment> Placement::segments_of(const std::string& node) const {
  // Stage i is an entry of `node` when a packet for it can come from elsewhere: some node
  // runs stage i-1 but not stage i, so it must send the packet on.
  auto entry = [&](int i) {
    if (i == 0) return true;
    for (const auto& n : nodes_of(i - 1))
      if (!runs_on(i, n)) return true;
    return false;
  };
  std::vector<Segment> out;
  for (int i = 0; i < size(); ++i) {
    if (!runs_on(i, node)) continue;
    if (!out.empty() && out.back().last == i - 1 && !entry(i))
      out.back().last = i;
    else
      out.push_back({i, i});
  }
  return out;
}

int Placement::index_of(const std::string& name) const {
  for (int i = 0; i < size(); ++i)
    if (chain[static_cast<size_t>(i)]->name == name) return i;
  return -1;
}

const char* channel_name(ChannelKind k) {
  switch (k) {
    case ChannelKind::local: return "local";
    case ChannelKind::zmq: return "zmq";
    case ChannelKind::cuda_ipc: return "cuda_ipc";
    case ChannelKind::nccl: return "nccl";
  }
  return "?";
}

ChannelKind choose_channel(const PipelineSpec& spec, const std::string& forced, const StageSpec& from,
                           const std::string& from_node, const StageSpec& to, const std::string& to_node) {
  if (from_node == to_node) return ChannelKind::local;
  const std::string edge = "edge " + from.name + " -> " + to.name + " (node '" + from_node + "' to '" + to_node + "')";
  SC_CHECK(forced != "local", Errc::invalid_argument,
           spec.path << ": " << edge << " forces channel local, but its stages run in different processes; use "
                     << "auto, zmq, cuda_ipc or nccl");
  if (forced == "zmq") return ChannelKind::zmq;
  if (forced == "cuda_ipc") return ChannelKind::cuda_ipc;
  if (forced == "nccl") return ChannelKind::nccl;
  SC_CHECK(forced == "auto" || forced.empty(), Errc::invalid_argument,
           spec.path << ": " << edge << " has channel '" << forced << "'; use auto, local, zmq, cuda_ipc or nccl");
  if (!from.device.is_cuda() || !to.device.is_cuda()) return ChannelKind::zmq;
  const NodeSpec* a = nullptr;
  const NodeSpec* b = nullptr;
  for (const auto& n : spec.nodes) {
    if (n.name == from_node) a = &n;
    if (n.name == to_node) b = &n;
  }
  SC_CHECK(a && b, Errc::invalid_argument, spec.path << ": " << edge << " names a node `nodes:` does not declare");
  return host_of(*a) == host_of(*b) ? ChannelKind::cuda_ipc : ChannelKind::nccl;
}

std::vector<SpecProblem> channel_warnings(const PipelineSpec& spec) {
  std::vector<SpecProblem> out;
  for (const auto& e : spec.edges) {
    if (e.channel != "nccl") continue;
    const StageSpec* a = spec.find_stage(e.from);
    const StageSpec* b = spec.find_stage(e.to);
    if (!a || !b || !a->device.is_cuda() || a->device != b->device) continue;
    bool said = false;  // one warning per edge
    for (const auto& fn : a->nodes)
      for (const auto& tn : b->nodes) {
        if (fn == tn || said) continue;
        const NodeSpec* x = nullptr;
        const NodeSpec* y = nullptr;
        for (const auto& n : spec.nodes) {
          if (n.name == fn) x = &n;
          if (n.name == tn) y = &n;
        }
        if (!x || !y || host_of(*x) != host_of(*y)) continue;
        out.push_back({spec.path, e.loc,
                       "warning: channel nccl on " + e.from + " -> " + e.to + " joins nodes '" + fn + "' and '" + tn +
                           "' on one host (" + host_of(*x) + "), both on " + a->device.str() +
                           ": NCCL refuses two ranks on one GPU, so every job over this edge fails unless the two "
                           "processes see different GPUs as " + a->device.str() + " (CUDA_VISIBLE_DEVICES)",
                       "use channel cuda_ipc (or auto) between GPUs of one host"});
        said = true;
      }
  }
  return out;
}

std::string gpu_bind_address(const std::string& gpu_endpoint, const std::string& listen,
                             const std::string& gpu_listen) {
  if (!gpu_listen.empty()) return gpu_listen;
  if (listen.rfind("tcp://", 0) != 0 || gpu_endpoint.rfind("tcp://", 0) != 0) return gpu_endpoint;
  const size_t lc = listen.rfind(':'), gc = gpu_endpoint.rfind(':');
  if (lc < 6 || gc < 6 || lc == std::string::npos || gc == std::string::npos) return gpu_endpoint;
  return listen.substr(0, lc) + gpu_endpoint.substr(gc);
}

ChannelKind Placement::channel(const PipelineSpec& spec, int index, const std::string& from,
                               const std::string& to) const {
  const auto i = static_cast<size_t>(index);
  return choose_channel(spec, i < forced.size() ? forced[i] : "auto", *chain[i], from, *chain[i + 1], to);
}

Placement place(const PipelineSpec& spec) {
  Placement p;
  p.chain = chain_order(spec);
  for (size_t i = 0; i + 1 < p.chain.size(); ++i) {
    std::string f = "auto";
    for (const auto& e : spec.edges)
      if (e.from == p.chain[i]->name && e.to == p.chain[i + 1]->name) f = e.channel;
    p.forced.push_back(f);
  }
  if (spec.nodes.empty()) return p;
  for (const StageSpec* s : p.chain) {
    SC_CHECK(!s->nodes.empty(), Errc::invalid_argument,
             spec.path << ":" << s->loc.line << ":" << s->loc.col << ": stage '" << s->name
                       << "' has no node: but the file declares nodes");
    for (const auto& name : s->nodes) {
      bool known = false;
      for (const auto& n : spec.nodes) known = known || n.name == name;
      SC_CHECK(known, Errc::invalid_argument,
               spec.path << ":" << s->loc.line << ":" << s->loc.col << ": stage '" << s->name << "' names node '"
                         << name << "', which `nodes:` does not declare");
    }
  }
  const StageSpec& first = *p.chain.front();
  SC_CHECK(first.nodes.size() == 1, Errc::invalid_argument,
           spec.path << ":" << first.loc.line << ":" << first.loc.col << ": stage '" << first.name
                     << "' is where jobs enter, so it runs on one node (the head), not " << first.nodes.size());
  p.head = first.node;
  return p;
}

PipelineSpec segment_spec(const PipelineSpec& spec, const Placement& p, Segment s) {
  PipelineSpec out = spec;
  out.nodes.clear();
  out.edges.clear();
  out.stages.clear();
  for (int i = s.first; i <= s.last; ++i) {
    StageSpec st = *p.chain[static_cast<size_t>(i)];
    st.node.clear();
    st.nodes.clear();
    out.stages.push_back(std::move(st));
  }
  return out;
}

std::string pipeline_hash(const PipelineSpec& spec) {
  std::string bytes;
  std::ifstream in(spec.path, std::ios::binary);
  if (in) {
    std::ostringstream ss;
    ss << in.rdbuf();
    bytes = ss.str();
  } else {
    for (const auto& n : spec.nodes) bytes += "node " + n.name + " " + n.endpoint + "\n";
    for (const auto& s : spec.stages) {
      bytes += "stage " + s.name + " " + s.type;
      for (const auto& n : s.nodes) bytes += " " + n;
      bytes += "\n";
    }
  }
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : bytes) {
    h ^= c;
    h *= 1099511628211ull;
  }
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(h));
  return hex;
}

}  // namespace stagecraft
