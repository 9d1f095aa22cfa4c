#include "core/pipeline_spec.hpp"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iomanip>
#include <map>
#include <optional>
#include <set>
#include <sstream>

namespace stagecraft {
namespace fs = std::filesystem;

namespace {

const std::vector<std::string> kTopKeys = {"model", "defaults", "nodes", "stages", "edges", "limits", "plugins"};
const std::vector<std::string> kStageKeys = {"name",     "type",        "node",  "device",
                                             "replicas", "batching",    "queue_limit", "plugin"};
const std::vector<std::string> kBatchingKeys = {"max_batch", "max_wait_ms"};
const std::vector<std::string> kEdgeKeys = {"from", "to", "channel"};
const std::vector<std::string> kNodeKeys = {"endpoint"};
const std::vector<std::string> kLimitsKeys = {"max_pending_jobs", "credits", "max_steps", "max_pixels",
                                              "max_prompt_bytes"};
const std::vector<std::string> kDefaultsKeys = {"steps",     "guidance",       "width", "height",
                                                "scheduler", "negative_prompt"};
const std::vector<std::string> kChannels = {"auto", "local", "zmq", "cuda_ipc", "nccl"};
const std::vector<std::string> kSchedulers = {"flow_match_euler", "ddim", "dpm_2m"};

std::string join(const std::vector<std::string>& v, const std::string& sep = ", ") {
  std::string out;
  for (size_t i = 0; i < v.size(); ++i) out += (i ? sep : "") + v[i];
  return out;
}

/// Optimal-string-alignment distance: Levenshtein plus adjacent transpositions,
/// the commonest typo ("stpes").
size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<std::vector<size_t>> d(a.size() + 1, std::vector<size_t>(b.size() + 1));
  for (size_t i = 0; i <= a.size(); ++i) d[i][0] = i;
  for (size_t j = 0; j <= b.size(); ++j) d[0][j] = j;
  for (size_t i = 1; i <= a.size(); ++i)
    for (size_t j = 1; j <= b.size(); ++j) {
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1])
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
    }
  return d[a.size()][b.size()];
}

std::string one_of(const std::vector<std::string>& allowed, const std::string& got = "") {
  std::string s = "one of: " + join(allowed);
  const std::string guess = got.empty() ? "" : closest_word(got, allowed);
  if (!guess.empty()) s = "did you mean '" + guess + "'? " + s;
  return s;
}

const char* type_name(const YAML::Node& n) {
  switch (n.Type()) {
    case YAML::NodeType::Null: return "nothing";
    case YAML::NodeType::Scalar: return "a value";
    case YAML::NodeType::Sequence: return "a list";
    case YAML::NodeType::Map: return "a map";
    default: return "nothing";
  }
}

SourceLoc loc_of(const YAML::Node& n) {
  const YAML::Mark m = n.Mark();
  if (m.is_null()) return {};
  return {m.line + 1, m.column + 1};
}

bool is_quoted(const YAML::Node& n) { return n.IsScalar() && n.Tag() == "!"; }

std::optional<long long> parse_int(const std::string& s) {
  long long v = 0;
  const char* first = s.data();
  const char* last = s.data() + s.size();
  if (first != last && *first == '+') ++first;
  auto [p, ec] = std::from_chars(first, last, v);
  if (ec != std::errc() || p != last || first == last) return std::nullopt;
  return v;
}

std::optional<double> parse_double(const std::string& s) {
  double v = 0;
  const char* first = s.data();
  const char* last = s.data() + s.size();
  if (first != last && *first == '+') ++first;
  auto [p, ec] = std::from_chars(first, last, v);
  if (ec != std::errc() || p != last || first == last || !std::isfinite(v)) return std::nullopt;
  return v;
}

/// YAML to JSON for stage parameters: plain scalars become numbers, booleans
/// or null where they read as such; quoted scalars stay strings.
nlohmann::json to_json(const YAML::Node& n) {
  switch (n.Type()) {
    case YAML::NodeType::Scalar: {
      const std::string& s = n.Scalar();
      if (is_quoted(n)) return s;
      if (s == "true" || s == "True" || s == "TRUE") return true;
      if (s == "false" || s == "False" || s == "FALSE") return false;
      if (s == "null" || s == "~" || s == "Null" || s == "NULL") return nullptr;
      if (auto i = parse_int(s)) return *i;
      if (auto d = parse_double(s)) return *d;
      return s;
    }
    case YAML::NodeType::Sequence: {
      auto arr = nlohmann::json::array();
      for (const auto& e : n) arr.push_back(to_json(e));
      return arr;
    }
    case YAML::NodeType::Map: {
      auto obj = nlohmann::json::object();
      for (const auto& kv : n) obj[kv.first.Scalar()] = to_json(kv.second);
      return obj;
    }
    default: return nullptr;
  }
}

std::string resolve_path(const std::string& base_dir, const std::string& p) {
  fs::path path(p);
  if (path.is_relative() && !base_dir.empty()) path = fs::path(base_dir) / path;
  return path.lexically_normal().string();
}

std::optional<nlohmann::json> read_json(const fs::path& p) {
  std::ifstream in(p);
  if (!in) return std::nullopt;
  try {
    return nlohmann::json::parse(in);
  } catch (const std::exception&) {
    return std::nullopt;  // a broken file is the model loader's to report, with its path
  }
}

/// The request defaults a model folder implies, as the sequential pipeline reads
/// them: its stagecraft.json {"defaults": {...}}, else the image size diffusers'
/// PixArt pipeline uses (transformer sample_size x VAE scale 2^(levels-1)) and the
/// scheduler named by scheduler/scheduler_config.json.
nlohmann::json model_defaults(const std::string& model_dir) {
  nlohmann::json d = nlohmann::json::object();
  if (model_dir.empty()) return d;
  const fs::path dir(model_dir);
  const auto t = read_json(dir / "transformer" / "config.json");
  const auto v = read_json(dir / "vae" / "config.json");
  if (t && v && t->contains("sample_size") && (*t)["sample_size"].is_number_integer() &&
      v->contains("block_out_channels") && (*v)["block_out_channels"].is_array() &&
      !(*v)["block_out_channels"].empty()) {
    const int size = (*t)["sample_size"].get<int>() << ((*v)["block_out_channels"].size() - 1);
    d["width"] = d["height"] = size;
  }
  if (const auto sc = read_json(dir / "scheduler" / "scheduler_config.json"); sc && sc->contains("_class_name")) {
    const std::string cls = sc->value("_class_name", std::string());
    if (cls == "FlowMatchEulerDiscreteScheduler") d["scheduler"] = "flow_match_euler";
    if (cls == "DDIMScheduler") d["scheduler"] = "ddim";
    if (cls == "DPMSolverMultistepScheduler") d["scheduler"] = "dpm_2m";
  }
  if (const auto m = read_json(dir / "stagecraft.json"); m && m->contains("defaults") && (*m)["defaults"].is_object())
    for (const auto& [k, val] : (*m)["defaults"].items())
      if (std::find(kDefaultsKeys.begin(), kDefaultsKeys.end(), k) != kDefaultsKeys.end()) d[k] = val;
  return d;
}

/// One map entry, kept with its nodes so problems can point at the key or the value.
struct Entry {
  std::string key;
  YAML::Node key_node, value;
};

class Parser {
 public:
  Parser(std::string file, std::string base_dir) : file_(std::move(file)), base_dir_(std::move(base_dir)) {
    spec_.path = file_;
  }

  PipelineSpec parse(const std::string& text);

 private:
  void add(SourceLoc at, std::string what, std::string allowed = "") {
    problems_.push_back({file_, at, std::move(what), std::move(allowed)});
  }
  void add(const YAML::Node& at, std::string what, std::string allowed = "") {
    add(loc_of(at), std::move(what), std::move(allowed));
  }

  /// The entries of a map, reporting non-scalar and duplicate keys (yaml-cpp keeps both silently).
  std::vector<Entry> entries(const YAML::Node& map, const std::string& where) {
    std::vector<Entry> out;
    std::set<std::string> seen;
    for (auto it = map.begin(); it != map.end(); ++it) {
      if (!it->first.IsScalar()) {
        add(it->first, "a key in " + where + " is " + type_name(it->first), "plain names as keys");
        continue;
      }
      const std::string key = it->first.Scalar();
      if (!seen.insert(key).second) {
        add(it->first, "duplicate key '" + key + "' in " + where, "each key once");
        continue;
      }
      out.push_back({key, it->first, it->second});
    }
    return out;
  }

  bool expect_map(const YAML::Node& n, const std::string& what, const std::string& allowed) {
    if (n.IsMap()) return true;
    add(n, what + " must be a map, got " + type_name(n), allowed);
    return false;
  }
  bool expect_list(const YAML::Node& n, const std::string& what, const std::string& allowed) {
    if (n.IsSequence()) return true;
    add(n, what + " must be a list, got " + type_name(n), allowed);
    return false;
  }

  std::optional<std::string> get_string(const YAML::Node& v, const std::string& what,
                                        const std::string& allowed) {
    if (v.IsScalar() && !v.Scalar().empty()) return v.Scalar();
    add(v, what + " must be a non-empty string, got " + (v.IsScalar() ? "an empty one" : type_name(v)),
        allowed);
    return std::nullopt;
  }

  std::optional<long long> get_int(const YAML::Node& v, const std::string& what, long long lo,
                                   long long hi, const std::string& allowed) {
    std::optional<long long> i;
    if (v.IsScalar()) i = parse_int(v.Scalar());
    if (!i) {
      add(v, what + " must be an integer, got " + (v.IsScalar() ? "'" + v.Scalar() + "'" : type_name(v)),
          allowed);
      return std::nullopt;
    }
    if (*i < lo || *i > hi) {
      add(v, what + " is " + std::to_string(*i) + ", out of range", allowed);
      return std::nullopt;
    }
    return i;
  }

  std::optional<double> get_number(const YAML::Node& v, const std::string& what, double lo,
                                   const std::string& allowed) {
    std::optional<double> d;
    if (v.IsScalar()) d = parse_double(v.Scalar());
    if (!d) {
      add(v, what + " must be a number, got " + (v.IsScalar() ? "'" + v.Scalar() + "'" : type_name(v)),
          allowed);
      return std::nullopt;
    }
    if (*d < lo) {
      std::ostringstream os;
      os << what << " is " << *d << ", out of range";
      add(v, os.str(), allowed);
      return std::nullopt;
    }
    return d;
  }

  std::optional<std::string> get_existing_file(const YAML::Node& v, const std::string& what,
                                               const std::string& allowed) {
    auto s = get_string(v, what, allowed);
    if (!s) return std::nullopt;
    const std::string path = resolve_path(base_dir_, *s);
    std::error_code ec;
    if (!fs::is_regular_file(path, ec)) {
      add(v, what + " '" + *s + "' not found (looked at " + path + ")", allowed);
      return std::nullopt;
    }
    return path;
  }

  void parse_model(const YAML::Node& v);
  void parse_plugins(const YAML::Node& v);
  void parse_defaults(const YAML::Node& v);
  void parse_limits(const YAML::Node& v);
  void parse_nodes(const YAML::Node& v);
  void parse_stages(const YAML::Node& v, SourceLoc key_loc);
  void parse_stage(const YAML::Node& v, size_t index);
  void parse_batching(const YAML::Node& v, const std::string& stage, BatchingSpec& out);
  void parse_edges(const YAML::Node& v);
  void check_edge_channel(const EdgeSpec& e, const YAML::Node& at);
  void check_graph(SourceLoc edges_loc, bool explicit_edges);

  std::string file_, base_dir_;
  PipelineSpec spec_;
  std::vector<SpecProblem> problems_;
  std::map<std::string, SourceLoc> stage_loc_;  ///< every stage name written, even a duplicate's first
  bool stages_listed_ = false;  ///< stages: was a non-empty list, so edges can be checked against it
  bool graph_ok_ = false;       ///< every stage entry became a StageSpec, so the graph can be checked
  std::set<std::string> plugin_failed_;  ///< stages whose plugin: is bad; "" for a top-level one
};

PipelineSpec Parser::parse(const std::string& text) {
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::ParserException& e) {
    add(SourceLoc{e.mark.line + 1, e.mark.column + 1}, "YAML syntax error: " + e.msg,
        "YAML 1.2 (check indentation, colons and brackets)");
    throw SpecError(problems_);
  }
  if (!root.IsDefined() || root.IsNull()) {
    add(SourceLoc{1, 1}, "the file is empty", "a map with a stages: list (see docs/pipeline-config.md)");
    throw SpecError(problems_);
  }
  if (!root.IsMap()) {
    add(root, std::string("the file must be a map of top-level keys, got ") + type_name(root),
        one_of(kTopKeys));
    throw SpecError(problems_);
  }

  std::map<std::string, Entry> top;
  for (auto& e : entries(root, "the top level")) {
    if (std::find(kTopKeys.begin(), kTopKeys.end(), e.key) == kTopKeys.end()) {
      add(e.key_node, "unknown top-level key '" + e.key + "'", one_of(kTopKeys, e.key));
      continue;
    }
    top[e.key] = e;
  }

  // Order matters: nodes before stages (node references), stages before edges.
  if (top.count("model")) parse_model(top["model"].value);
  if (top.count("plugins")) parse_plugins(top["plugins"].value);
  if (top.count("defaults")) parse_defaults(top["defaults"].value);
  if (top.count("limits")) parse_limits(top["limits"].value);
  if (top.count("nodes")) parse_nodes(top["nodes"].value);

  // Fill the request defaults the file left out: the model's own, then built-in ones.
  auto& d = spec_.defaults;
  const nlohmann::json from_model = model_defaults(spec_.model_dir);
  for (const auto& [k, val] : from_model.items())
    if (!d.contains(k)) d[k] = val;
  const nlohmann::json builtin = {{"steps", 20}, {"guidance", 4.5}, {"width", 64}, {"height", 64},
                                  {"scheduler", "flow_match_euler"}, {"negative_prompt", ""}};
  for (const auto& [k, val] : builtin.items())
    if (!d.contains(k)) d[k] = val;

  if (!top.count("stages")) {
    add(SourceLoc{1, 1}, "the file has no stages: list",
        "a list of stages, each at least {name: ..., type: ...} (see docs/pipeline-config.md)");
  } else {
    parse_stages(top["stages"].value, loc_of(top["stages"].key_node));
  }

  SourceLoc edges_loc{1, 1};
  if (top.count("edges")) {
    edges_loc = loc_of(top["edges"].key_node);
    if (stages_listed_) parse_edges(top["edges"].value);
  } else {
    for (size_t i = 1; i < spec_.stages.size(); ++i)
      spec_.edges.push_back({spec_.stages[i - 1].name, spec_.stages[i].name, "auto", {}});
  }
  if (graph_ok_) check_graph(edges_loc, top.count("edges") > 0);

  if (!problems_.empty()) {
    PipelineSpec partial = spec_;
    if (plugin_failed_.count("")) partial.stages.clear();  // any type may have come from it
    std::erase_if(partial.stages, [&](const StageSpec& st) { return plugin_failed_.count(st.name) > 0; });
    throw SpecError(problems_, std::move(partial));
  }
  return std::move(spec_);
}

void Parser::parse_model(const YAML::Node& v) {
  const std::string allowed = "a diffusers-layout folder (with model_index.json), relative to this file";
  auto s = get_string(v, "model", allowed);
  if (!s) return;
  const std::string dir = resolve_path(base_dir_, *s);
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    add(v, "model folder '" + *s + "' not found (looked at " + dir + ")", allowed);
  } else if (!fs::is_regular_file(fs::path(dir) / "model_index.json", ec)) {
    add(v, "model folder '" + *s + "' has no model_index.json (looked in " + dir + ")", allowed);
  }
  spec_.model_dir = dir;
}

void Parser::parse_plugins(const YAML::Node& v) {
  const std::string allowed = "paths of shared libraries exporting stagecraft_register_stages, relative to this file";
  if (!expect_list(v, "plugins", allowed)) return;
  for (const auto& p : v) {
    if (auto path = get_existing_file(p, "plugin", allowed))
      spec_.plugins.push_back(*path);
    else
      plugin_failed_.insert("");
  }
}

void Parser::parse_defaults(const YAML::Node& v) {
  if (!expect_map(v, "defaults", "a map, e.g. {steps: 20, guidance: 4.5}")) return;
  auto& d = spec_.defaults;
  for (const auto& e : entries(v, "defaults")) {
    const std::string what = "defaults." + e.key;
    if (e.key == "steps") {
      if (auto i = get_int(e.value, what, 1, 1000, "an integer from 1 to 1000")) d["steps"] = *i;
    } else if (e.key == "guidance") {
      if (auto x = get_number(e.value, what, 0.0, "a number >= 0 (1 disables classifier-free guidance)"))
        d["guidance"] = *x;
    } else if (e.key == "width" || e.key == "height") {
      const std::string allowed = "a positive multiple of 8 (the VAE's scale)";
      if (auto i = get_int(e.value, what, 1, 1 << 16, allowed)) {
        if (*i % 8 != 0)
          add(e.value, what + " is " + std::to_string(*i) + ", not a multiple of 8", allowed);
        else
          d[e.key] = *i;
      }
    } else if (e.key == "scheduler") {
      if (auto s = get_string(e.value, what, one_of(kSchedulers))) {
        if (std::find(kSchedulers.begin(), kSchedulers.end(), *s) == kSchedulers.end())
          add(e.value, "unknown scheduler '" + *s + "'", one_of(kSchedulers, *s));
        else
          d["scheduler"] = *s;
      }
    } else if (e.key == "negative_prompt") {
      if (e.value.IsScalar())
        d["negative_prompt"] = e.value.Scalar();
      else if (e.value.IsNull())
        d["negative_prompt"] = "";
      else
        add(e.value, what + std::string(" must be a string, got ") + type_name(e.value), "a string");
    } else {
      add(e.key_node, "unknown key '" + e.key + "' in defaults", one_of(kDefaultsKeys, e.key));
    }
  }
}

void Parser::parse_limits(const YAML::Node& v) {
  if (!expect_map(v, "limits", "a map, e.g. {max_pending_jobs: 256, credits: 4}")) return;
  for (const auto& e : entries(v, "limits")) {
    if (e.key == "max_pending_jobs") {
      if (auto i = get_int(e.value, "limits.max_pending_jobs", 1, 1 << 30, "an integer >= 1"))
        spec_.limits.max_pending_jobs = static_cast<int>(*i);
    } else if (e.key == "credits") {
      if (auto i = get_int(e.value, "limits.credits", 1, 1 << 20, "an integer >= 1"))
        spec_.limits.credits = static_cast<int>(*i);
    } else if (e.key == "max_steps") {
      if (auto i = get_int(e.value, "limits.max_steps", 1, 100000, "an integer from 1 to 100000"))
        spec_.limits.max_steps = static_cast<int>(*i);
    } else if (e.key == "max_pixels") {
      if (auto i = get_int(e.value, "limits.max_pixels", 64, int64_t(1) << 40, "an integer >= 64 (width x height)"))
        spec_.limits.max_pixels = *i;
    } else if (e.key == "max_prompt_bytes") {
      if (auto i = get_int(e.value, "limits.max_prompt_bytes", 1, 1 << 24, "an integer from 1 to 16777216"))
        spec_.limits.max_prompt_bytes = static_cast<int>(*i);
    } else {
      add(e.key_node, "unknown key '" + e.key + "' in limits", one_of(kLimitsKeys, e.key));
    }
  }
}

void Parser::parse_nodes(const YAML::Node& v) {
  const std::string allowed = "a map of node name to {endpoint: tcp://HOST:PORT or ipc://PATH}";
  if (!expect_map(v, "nodes", allowed)) return;
  std::map<std::string, std::string> endpoint_owner;
  for (const auto& e : entries(v, "nodes")) {
    NodeSpec n{e.key, "", loc_of(e.key_node)};
    if (!expect_map(e.value, "node '" + e.key + "'", "{endpoint: tcp://HOST:PORT}")) continue;
    bool has_endpoint = false;
    for (const auto& f : entries(e.value, "node '" + e.key + "'")) {
      if (f.key != "endpoint") {
        add(f.key_node, "unknown key '" + f.key + "' in node '" + e.key + "'", one_of(kNodeKeys, f.key));
        continue;
      }
      has_endpoint = true;
      const std::string ep_allowed = "a ZeroMQ address: tcp://HOST:PORT or ipc://PATH";
      auto ep = get_string(f.value, "endpoint of node '" + e.key + "'", ep_allowed);
      if (!ep) continue;
      if (ep->rfind("tcp://", 0) != 0 && ep->rfind("ipc://", 0) != 0) {
        add(f.value, "endpoint '" + *ep + "' of node '" + e.key + "' is not a ZeroMQ address", ep_allowed);
        continue;
      }
      auto [it, fresh] = endpoint_owner.emplace(*ep, e.key);
      if (!fresh) {
        add(f.value, "endpoint '" + *ep + "' is used by nodes '" + it->second + "' and '" + e.key + "'",
            "a distinct endpoint per node");
        continue;
      }
      n.endpoint = *ep;
    }
    if (!has_endpoint) add(e.value, "node '" + e.key + "' has no endpoint", "{endpoint: tcp://HOST:PORT}");
    spec_.nodes.push_back(std::move(n));
  }
}

void Parser::parse_stages(const YAML::Node& v, SourceLoc key_loc) {
  const std::string allowed = "a list of stages, each at least {name: ..., type: ...}";
  if (!expect_list(v, "stages", allowed)) return;
  if (v.size() == 0) {
    add(key_loc, "stages: is empty", allowed);
    return;
  }
  for (size_t i = 0; i < v.size(); ++i) parse_stage(v[i], i);
  stages_listed_ = true;
  // Connectivity is judged only when every stage made it, so one bad name does
  // not also report its edges as dangling.
  graph_ok_ = spec_.stages.size() == v.size();
}

void Parser::parse_stage(const YAML::Node& v, size_t index) {
  const std::string label = "stage #" + std::to_string(index + 1);
  if (!expect_map(v, label, "{name: ..., type: ..., device: cpu, ...}")) return;
  StageSpec s;
  s.loc = loc_of(v);
  auto es = entries(v, label);
  auto find = [&](const std::string& k) -> const Entry* {
    for (const auto& e : es)
      if (e.key == k) return &e;
    return nullptr;
  };

  bool named = false;
  if (const Entry* n = find("name")) {
    if (auto name = get_string(n->value, "stage name", "letters, digits, '_', '-' and '.'")) {
      const bool clean = std::all_of(name->begin(), name->end(), [](char c) {
        return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.';
      });
      if (!clean) {
        add(n->value, "stage name '" + *name + "' has characters other than letters, digits, '_', '-', '.'",
            "letters, digits, '_', '-' and '.'");
      } else if (stage_loc_.count(*name)) {
        const SourceLoc first = stage_loc_[*name];
        add(n->value, "duplicate stage name '" + *name + "' (first at line " + std::to_string(first.line) + ")",
            "a unique name per stage");
      } else {
        s.name = *name;
        named = true;
      }
      stage_loc_.emplace(*name, loc_of(n->value));
    }
  } else {
    add(v, label + " has no name", "{name: ..., type: ...}");
  }
  const std::string who = named ? "stage '" + s.name + "'" : label;

  if (const Entry* t = find("type")) {
    if (auto type = get_string(t->value, who + " type", "a registered stage type, e.g. sleep"))
      s.type = *type;
  } else {
    add(v, who + " has no type", "e.g. type: clip_text_encoder, pixart_denoiser, vae_decoder, postprocess, sleep");
  }

  for (const auto& e : es) {
    if (e.key == "name" || e.key == "type") continue;
    if (e.key == "device") {
      auto d = get_string(e.value, who + " device", "cpu, cuda or cuda:N");
      if (!d) continue;
      try {
        s.device = Device::parse(*d);
      } catch (const Error&) {
        add(e.value, "bad device '" + *d + "' for " + who, "cpu, cuda or cuda:N (N >= 0)");
      }
    } else if (e.key == "replicas") {
      if (auto i = get_int(e.value, who + " replicas", 1, 1024, "an integer >= 1"))
        s.replicas = static_cast<int>(*i);
    } else if (e.key == "queue_limit") {
      if (auto i = get_int(e.value, who + " queue_limit", 1, 1 << 20,
                           "an integer >= 1 (packets in flight into the stage; omit for limits.credits)"))
        s.queue_limit = static_cast<int>(*i);
    } else if (e.key == "batching") {
      parse_batching(e.value, who, s.batching);
    } else if (e.key == "node") {
      if (auto n = get_string(e.value, who + " node", "the name of a node under nodes:")) s.node = *n;
    } else if (e.key == "plugin") {
      if (auto p = get_existing_file(e.value, who + " plugin",
                                     "a shared library exporting stagecraft_register_stages, relative to this file"))
        s.plugin = *p;
      else
        plugin_failed_.insert(named ? s.name : "?");
    } else {
      // Everything else belongs to the stage; a near miss of an engine key is
      // far likelier a typo than a parameter, and would otherwise be ignored.
      const std::string guess = e.key.size() >= 5 ? closest_word(e.key, kStageKeys) : "";
      if (!guess.empty() && edit_distance(guess, e.key) == 1) {
        add(e.key_node, "unknown key '" + e.key + "' in " + who, "did you mean '" + guess + "'?");
        continue;
      }
      s.params[e.key] = to_json(e.value);
    }
  }

  // Node references (nodes: is parsed before stages).
  std::vector<std::string> node_names;
  for (const auto& n : spec_.nodes) node_names.push_back(n.name);
  if (const Entry* n = find("node"); n && !s.node.empty()) {
    if (spec_.nodes.empty())
      add(n->value, who + " names node '" + s.node + "' but the file declares no nodes:",
          "add a nodes: map, or drop node: to run every stage in one process");
    else if (std::find(node_names.begin(), node_names.end(), s.node) == node_names.end())
      add(n->value, "unknown node '" + s.node + "' for " + who, one_of(node_names, s.node));
  } else if (!n && !spec_.nodes.empty()) {
    add(v, who + " has no node: but the file declares nodes", one_of(node_names));
  }

  if (named) spec_.stages.push_back(std::move(s));
}

void Parser::parse_batching(const YAML::Node& v, const std::string& who, BatchingSpec& out) {
  if (!expect_map(v, who + " batching", "{max_batch: N, max_wait_ms: MS}")) return;
  for (const auto& e : entries(v, who + " batching")) {
    if (e.key == "max_batch") {
      if (auto i = get_int(e.value, who + " max_batch", 1, 1 << 16, "an integer >= 1"))
        out.max_batch = static_cast<int>(*i);
    } else if (e.key == "max_wait_ms") {
      if (auto x = get_number(e.value, who + " max_wait_ms", 0.0, "a number of milliseconds >= 0"))
        out.max_wait_ms = *x;
    } else {
      add(e.key_node, "unknown key '" + e.key + "' in " + who + " batching", one_of(kBatchingKeys, e.key));
    }
  }
}

void Parser::parse_edges(const YAML::Node& v) {
  const std::string allowed = "a list of {from: STAGE, to: STAGE, channel: auto}";
  if (!expect_list(v, "edges", allowed)) return;
  std::vector<std::string> names;
  for (const auto& [name, at] : stage_loc_) names.push_back(name);
  std::set<std::pair<std::string, std::string>> seen;
  for (size_t i = 0; i < v.size(); ++i) {
    const YAML::Node& n = v[i];
    const std::string label = "edge #" + std::to_string(i + 1);
    if (!expect_map(n, label, "{from: STAGE, to: STAGE, channel: auto}")) continue;
    EdgeSpec e;
    e.loc = loc_of(n);
    bool ok = true;
    bool has_from = false, has_to = false;
    YAML::Node channel_node;
    for (const auto& f : entries(n, label)) {
      if (f.key == "from" || f.key == "to") {
        (f.key == "from" ? has_from : has_to) = true;
        auto s = get_string(f.value, label + " " + f.key, "a stage name");
        if (!s) {
          ok = false;
        } else if (!stage_loc_.count(*s)) {
          add(f.value, label + " names unknown stage '" + *s + "'", one_of(names, *s));
          ok = false;
        } else if (!spec_.find_stage(*s)) {
          ok = false;  // its stage entry is broken and already reported
        } else {
          (f.key == "from" ? e.from : e.to) = *s;
        }
      } else if (f.key == "channel") {
        auto s = get_string(f.value, label + " channel", one_of(kChannels));
        if (!s) {
          ok = false;
        } else if (std::find(kChannels.begin(), kChannels.end(), *s) == kChannels.end()) {
          add(f.value, "unknown channel '" + *s + "'", one_of(kChannels, *s));
          ok = false;
        } else {
          e.channel = *s;
          channel_node = f.value;
        }
      } else {
        add(f.key_node, "unknown key '" + f.key + "' in " + label, one_of(kEdgeKeys, f.key));
      }
    }
    for (const char* end : {"from", "to"}) {
      if (end == std::string("from") ? has_from : has_to) continue;
      add(n, label + " has no " + end + ":", "{from: STAGE, to: STAGE, channel: auto}");
      ok = false;
    }
    if (!ok) continue;
    if (!seen.insert({e.from, e.to}).second) {
      add(n, "duplicate edge " + e.from + " -> " + e.to, "each edge once");
      continue;
    }
    if (channel_node) check_edge_channel(e, channel_node);
    spec_.edges.push_back(std::move(e));
  }
}

void Parser::check_edge_channel(const EdgeSpec& e, const YAML::Node& at) {
  const StageSpec& a = *spec_.find_stage(e.from);
  const StageSpec& b = *spec_.find_stage(e.to);
  const std::string edge = e.from + " -> " + e.to;
  if (e.channel == "local" && a.node != b.node)
    add(at, "channel local on " + edge + " joins stages on different nodes ('" + a.node + "', '" + b.node + "')",
        "local only within one process; use auto, zmq, cuda_ipc or nccl across nodes");
  if ((e.channel == "cuda_ipc" || e.channel == "nccl") && !(a.device.is_cuda() && b.device.is_cuda()))
    add(at, "channel " + e.channel + " on " + edge + " joins " + a.device.str() + " to " + b.device.str(),
        e.channel + " needs both stages on CUDA devices; use auto or zmq");
  else if (e.channel == "nccl" && a.node == b.node && a.device == b.device)
    add(at, "channel nccl on " + edge + " joins two stages on the same GPU in one process",
        "NCCL refuses two ranks on one GPU; use local or cuda_ipc");
}

void Parser::check_graph(SourceLoc edges_loc, bool explicit_edges) {
  const auto& stages = spec_.stages;
  std::map<std::string, std::vector<const EdgeSpec*>> out;
  std::map<std::string, int> indeg, outdeg;
  for (const auto& e : spec_.edges) {
    out[e.from].push_back(&e);
    ++outdeg[e.from];
    ++indeg[e.to];
  }

  // Cycles: a back edge found by depth-first search closes one; report it where it is written.
  std::map<std::string, int> color;  // 0 unseen, 1 on the path, 2 done
  std::vector<std::string> path;
  bool cyclic = false;
  std::function<void(const std::string&)> dfs = [&](const std::string& u) {
    color[u] = 1;
    path.push_back(u);
    for (const EdgeSpec* e : out[u]) {
      if (color[e->to] == 1) {
        cyclic = true;
        auto start = std::find(path.begin(), path.end(), e->to);
        std::string cycle;
        for (auto it = start; it != path.end(); ++it) cycle += *it + " -> ";
        cycle += e->to;
        add(e->loc, "edges form a cycle: " + cycle,
            "a directed acyclic graph from one entry stage to one exit stage");
      } else if (color[e->to] == 0) {
        dfs(e->to);
      }
    }
    path.pop_back();
    color[u] = 2;
  };
  for (const auto& s : stages)
    if (color[s.name] == 0) dfs(s.name);
  if (cyclic || stages.size() < 2) return;

  std::vector<std::string> entries_, exits;
  for (const auto& s : stages) {
    const bool in = indeg[s.name] > 0, outgoing = outdeg[s.name] > 0;
    if (!in && !outgoing) {
      add(s.loc, "stage '" + s.name + "' is connected by no edge",
          "every stage on a path from the entry stage to the exit stage");
      continue;
    }
    if (!in) entries_.push_back(s.name);
    if (!outgoing) exits.push_back(s.name);
  }
  const SourceLoc at = explicit_edges ? edges_loc : SourceLoc{1, 1};
  if (entries_.size() > 1)
    add(at, "several stages have no incoming edge: " + join(entries_),
        "exactly one entry stage, where requests arrive");
  if (exits.size() > 1)
    add(at, "several stages have no outgoing edge: " + join(exits), "exactly one exit stage, which finishes the job");
}

}  // namespace

std::string closest_word(const std::string& got, const std::vector<std::string>& allowed) {
  std::string best;
  size_t best_d = SIZE_MAX;
  for (const auto& a : allowed) {
    const size_t d = edit_distance(got, a);
    const size_t limit = std::max<size_t>(1, a.size() / 4);
    if (d <= limit && d < a.size() && d < got.size() && d < best_d) best_d = d, best = a;
  }
  return best;
}

const StageSpec* PipelineSpec::find_stage(const std::string& name) const {
  for (const auto& s : stages)
    if (s.name == name) return &s;
  return nullptr;
}

std::string SpecProblem::str() const {
  std::string s = file;
  if (loc.line > 0) s += ":" + std::to_string(loc.line) + ":" + std::to_string(loc.col);
  s += ": " + what;
  if (!allowed.empty()) s += " \u2014 " + allowed;
  return s;
}

namespace {
std::string problems_message(std::vector<SpecProblem>& problems) {
  std::stable_sort(problems.begin(), problems.end(), [](const SpecProblem& a, const SpecProblem& b) {
    return std::pair(a.loc.line, a.loc.col) < std::pair(b.loc.line, b.loc.col);
  });
  std::string msg = std::to_string(problems.size()) + (problems.size() == 1 ? " problem" : " problems") +
                    " in the pipeline file:";
  for (const auto& p : problems) msg += "\n" + p.str();
  return msg;
}
}  // namespace

SpecError::SpecError(std::vector<SpecProblem> ps, PipelineSpec partial_spec)
    : Error(Errc::parse, problems_message(ps)), problems(std::move(ps)), partial(std::move(partial_spec)) {}

PipelineSpec parse_pipeline_spec(const std::string& yaml, const std::string& name, const std::string& base_dir) {
  return Parser(name, base_dir).parse(yaml);
}

PipelineSpec load_pipeline_spec(const std::string& path) {
  std::error_code ec;
  SC_CHECK(fs::is_regular_file(path, ec), Errc::not_found,
           "pipeline file '" << path << "' not found; pass the path of a YAML file such as pipelines/tiny-shapes.yaml");
  std::ifstream in(path, std::ios::binary);
  SC_CHECK(in, Errc::io, "cannot read pipeline file '" << path << "'; check its permissions");
  std::ostringstream text;
  text << in.rdbuf();
  std::string base = fs::path(path).parent_path().string();
  if (base.empty()) base = ".";
  return parse_pipeline_spec(text.str(), path, base);
}

std::string describe_pipeline(const PipelineSpec& spec) {
  std::ostringstream os;
  os << "pipeline " << spec.path << "\n";
  os << "  model:  " << (spec.model_dir.empty() ? "(none)" : spec.model_dir) << "\n";
  if (!spec.plugins.empty()) os << "  plugins: " << join(spec.plugins) << "\n";
  if (!spec.nodes.empty()) {
    os << "nodes (" << spec.nodes.size() << "):\n";
    for (const auto& n : spec.nodes) os << "  " << n.name << "  " << n.endpoint << "\n";
  }
  size_t w_name = 4, w_type = 4;
  for (const auto& s : spec.stages) w_name = std::max(w_name, s.name.size()), w_type = std::max(w_type, s.type.size());
  os << "stages (" << spec.stages.size() << "):\n";
  for (const auto& s : spec.stages) {
    os << "  " << std::left << std::setw(static_cast<int>(w_name)) << s.name << "  "
       << std::setw(static_cast<int>(w_type)) << s.type << "  " << std::setw(7) << s.device.str();
    if (!s.node.empty()) os << "  node " << s.node;
    os << "  replicas " << s.replicas << "  max_batch " << s.batching.max_batch << "  max_wait_ms "
       << s.batching.max_wait_ms << "  credits " << spec.credits_for(s);
    if (!s.params.empty()) os << "  params " << s.params.dump();
    if (!s.plugin.empty()) os << "  plugin " << s.plugin;
    os << "\n";
  }
  os << "edges (" << spec.edges.size() << "):\n";
  for (const auto& e : spec.edges) os << "  " << e.from << " -> " << e.to << "  [" << e.channel << "]\n";
  const auto& d = spec.defaults;
  os << "defaults: steps " << d.value("steps", 0) << ", guidance " << d.value("guidance", 0.0) << ", size "
     << d.value("width", 0) << "x" << d.value("height", 0) << ", scheduler " << d.value("scheduler", std::string())
     << ", negative_prompt \"" << d.value("negative_prompt", std::string()) << "\"\n";
  os << "limits: max_pending_jobs " << spec.limits.max_pending_jobs << ", credits " << spec.limits.credits
     << ", max_steps " << spec.limits.max_steps << ", max_pixels " << spec.limits.max_pixels
     << ", max_prompt_bytes " << spec.limits.max_prompt_bytes << "\n";
  return os.str();
}

}  // namespace stagecraft
