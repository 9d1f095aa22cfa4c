#include "core/pipeline_spec.hpp"

#include "core/json_brief.hpp"
#include "core/placement.hpp"
#include "core/request_defaults.hpp"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <map>
#include <optional>
#include <set>
#include <sstream>

namespace stagecraft {
namespace fs = std::filesystem;

namespace {

const std::vector<std::string> kTopKeys = {"model",  "defaults", "nodes",  "stages",
                                           "edges",  "limits",   "plugins", "pricing"};
const std::vector<std::string> kStageKeys = {"name",     "type",        "node",  "device",
                                             "replicas", "batching",    "queue_limit", "plugin"};
const std::vector<std::string> kBatchingKeys = {"max_batch", "max_wait_ms"};
const std::vector<std::string> kEdgeKeys = {"from", "to", "channel"};
const std::vector<std::string> kNodeKeys = {"endpoint", "gpu_endpoint", "host"};
const std::vector<std::string> kLimitsKeys = {"max_pending_jobs", "credits", "max_steps", "max_pixels",
                                              "max_prompt_bytes"};
const std::vector<std::string>& kDefaultsKeys = request_default_keys();
const std::vector<std::string> kChannels = {"auto", "local", "zmq", "cuda_ipc", "nccl"};
const std::vector<std::string>& kSchedulers = request_scheduler_names();

// What a pipeline file may ask of the parser: far beyond any real pipeline, low enough
// that a hostile file cannot exhaust memory, stack or time (docs/pipeline-config.md).
constexpr size_t kMaxFileBytes = 16 << 20;
constexpr size_t kMaxStages = 4096;
constexpr size_t kMaxEdges = 16384;
constexpr size_t kMaxNodes = 1024;
constexpr size_t kMaxPlugins = 64;
constexpr size_t kMaxMapEntries = 200000;     ///< keys of all maps read, an alias counting each use
constexpr size_t kMaxNameBytes = 128;         ///< stage and node names, stage types
constexpr size_t kMaxParamValues = 100000;    ///< JSON values of all stage parameters; an alias counts per use
constexpr size_t kMaxParamBytes = 1 << 20;    ///< bytes of their keys and strings
constexpr int kMaxParamDepth = 64;            ///< nesting of one parameter
constexpr size_t kMaxSuggestBytes = 64;       ///< "did you mean" looks only at words up to this long
constexpr size_t kShownBytes = 80;            ///< longest piece of the file quoted in a message
constexpr size_t kMaxProblems = 100;          ///< problems reported per file; past it the parser stops early
constexpr size_t kMaxListed = 20;             ///< words listed in "one of: ..." and similar lists
constexpr size_t kMaxSuggestCandidates = 256; ///< words "did you mean" compares against

/// `s` for a message: cut to kShownBytes (at a UTF-8 character boundary) with its length noted.
std::string shown(const std::string& s) {
  if (s.size() <= kShownBytes) return s;
  size_t cut = kShownBytes;
  while (cut > 0 && (static_cast<unsigned char>(s[cut]) & 0xC0) == 0x80) --cut;
  return s.substr(0, cut) + "... (" + std::to_string(s.size()) + " bytes)";
}

/// Offset of the first byte that is not part of valid UTF-8 (no overlong forms, no
/// surrogates, nothing past U+10FFFF: what nlohmann::json accepts), or npos.
size_t invalid_utf8_at(const std::string& s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    size_t n = 0;
    unsigned char lo = 0x80, hi = 0xBF;  // bounds of the second byte
    if (c < 0x80) n = 0;
    else if (c >= 0xC2 && c <= 0xDF) n = 1;
    else if (c == 0xE0) n = 2, lo = 0xA0;
    else if (c == 0xED) n = 2, hi = 0x9F;
    else if (c >= 0xE1 && c <= 0xEF) n = 2;
    else if (c == 0xF0) n = 3, lo = 0x90;
    else if (c == 0xF4) n = 3, hi = 0x8F;
    else if (c >= 0xF1 && c <= 0xF3) n = 3;
    else return i;
    if (s.size() - i <= n) return i;
    for (size_t k = 1; k <= n; ++k) {
      const auto b = static_cast<unsigned char>(s[i + k]);
      if (b < (k == 1 ? lo : 0x80) || b > (k == 1 ? hi : 0xBF)) return i;
    }
    i += n + 1;
  }
  return std::string::npos;
}

std::string join(const std::vector<std::string>& v, const std::string& sep = ", ") {
  std::string out;
  for (size_t i = 0; i < v.size(); ++i) out += (i ? sep : "") + v[i];
  return out;
}

/// Like join, but lists at most kMaxListed words (a hostile file may name thousands).
std::string join_some(const std::vector<std::string>& v) {
  if (v.size() <= kMaxListed) return join(v);
  std::vector<std::string> head(v.begin(), v.begin() + kMaxListed);
  return join(head) + ", ... (" + std::to_string(v.size()) + " in all)";
}

/// Optimal-string-alignment distance: Levenshtein plus adjacent transpositions,
/// the commonest typo ("stpes"). Words longer than kMaxSuggestBytes are nobody's
/// typo of a short name and would cost |a| x |b|: they count as SIZE_MAX away.
size_t edit_distance(const std::string& a, const std::string& b) {
  if (a.size() > kMaxSuggestBytes || b.size() > kMaxSuggestBytes) return SIZE_MAX;
  // Three rolling rows (i-2, i-1, i) instead of the whole matrix.
  std::vector<size_t> r2(b.size() + 1), r1(b.size() + 1), r0(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) r1[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    r0[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      r0[j] = std::min({r1[j] + 1, r0[j - 1] + 1, r1[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) r0[j] = std::min(r0[j], r2[j - 2] + 1);
    }
    std::swap(r2, r1);
    std::swap(r1, r0);
  }
  return r1[b.size()];
}

std::string one_of(const std::vector<std::string>& allowed, const std::string& got = "") {
  std::string s = "one of: " + join_some(allowed);
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

/// A problem found in one of the model folder's files: the file and key, no position.
struct FileProblem {
  std::string file, what, allowed;
};

/// The request defaults a model folder implies, as the sequential pipeline reads
/// them: its stagecraft.json {"defaults": {...}} (checked like the file's own
/// defaults:), else the image size diffusers' PixArt pipeline uses (transformer
/// sample_size x VAE scale 2^(levels-1)) and the scheduler named by
/// scheduler/scheduler_config.json. Values it cannot use are reported in `problems`
/// naming the file and key; a file that is missing or not JSON is the model loader's
/// to report.
nlohmann::json model_defaults(const std::string& model_dir, std::vector<FileProblem>& problems) {
  nlohmann::json d = nlohmann::json::object();
  if (model_dir.empty()) return d;
  const fs::path dir(model_dir);
  const fs::path t_path = dir / "transformer" / "config.json", v_path = dir / "vae" / "config.json";
  const auto t = read_json(t_path);
  const auto v = read_json(v_path);
  if (t && v && t->is_object() && v->is_object() && t->contains("sample_size") && v->contains("block_out_channels")) {
    const nlohmann::json& ss = (*t)["sample_size"];
    const nlohmann::json& boc = (*v)["block_out_channels"];
    // The largest default side a pipeline file may give; the shift stays far from int's width.
    constexpr int64_t kMaxSide = 1 << 16;
    const bool ss_ok = ss.is_number_integer() && ss.get<int64_t>() >= 1 && ss.get<int64_t>() <= kMaxSide;
    const bool boc_ok = boc.is_array() && !boc.empty() && boc.size() <= 17;
    if (!ss_ok)
      problems.push_back({t_path.string(), "sample_size is " + json_brief(ss) + ", out of range",
                          "an integer from 1 to " + std::to_string(kMaxSide)});
    if (!boc_ok)
      problems.push_back({v_path.string(),
                          "block_out_channels must be a list of 1 to 17 channel counts, got " + json_brief(boc),
                          "one entry per VAE level; the image is 2^(levels-1) latent cells wide per cell"});
    if (ss_ok && boc_ok) {
      const int64_t size = ss.get<int64_t>() << (boc.size() - 1);
      if (size > kMaxSide)
        problems.push_back({t_path.string(),
                            "sample_size " + std::to_string(ss.get<int64_t>()) + " x VAE scale " +
                                std::to_string(int64_t(1) << (boc.size() - 1)) + " is a default size of " +
                                std::to_string(size) + ", out of range",
                            "a default width and height of at most " + std::to_string(kMaxSide)});
      else
        d["width"] = d["height"] = size;
    }
  }
  if (const auto sc = read_json(dir / "scheduler" / "scheduler_config.json");
      sc && sc->is_object() && sc->contains("_class_name") && (*sc)["_class_name"].is_string()) {
    const std::string cls = (*sc)["_class_name"].get<std::string>();
    if (cls == "FlowMatchEulerDiscreteScheduler") d["scheduler"] = "flow_match_euler";
    if (cls == "DDIMScheduler") d["scheduler"] = "ddim";
    if (cls == "DPMSolverMultistepScheduler") d["scheduler"] = "dpm_2m";
  }
  ModelDefaults own = check_model_defaults(model_dir);
  for (auto& p : own.problems) problems.push_back({own.file, std::move(p.what), std::move(p.allowed)});
  for (const auto& [k, val] : own.values.items()) d[k] = val;
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
    if (problems_.size() == kMaxProblems)
      problems_.push_back({file_, at, "more than " + std::to_string(kMaxProblems) + " problems; the rest are not listed",
                           "fix these first"});
    if (problems_.size() > kMaxProblems) return;
    problems_.push_back({file_, at, std::move(what), std::move(allowed)});
  }
  /// Past kMaxProblems the loops over stages and edges stop: the rest would not be reported.
  bool too_many() const { return problems_.size() > kMaxProblems; }
  void add(const YAML::Node& at, std::string what, std::string allowed = "") {
    add(loc_of(at), std::move(what), std::move(allowed));
  }

  /// The entries of a map, reporting non-scalar and duplicate keys (yaml-cpp keeps both silently).
  std::vector<Entry> entries(const YAML::Node& map, const std::string& where) {
    std::vector<Entry> out;
    std::set<std::string> seen;
    // An aliased map is read again at each use: 4096 stages aliasing one huge map would
    // otherwise cost 4096 full passes. One budget for the whole file bounds it.
    if ((map_entries_ += map.size()) > kMaxMapEntries) {
      if (!maps_over_)
        add(map, "the file's maps hold more than " + std::to_string(kMaxMapEntries) +
                     " keys in all (a YAML alias counts each time it is used)",
            "a smaller file");
      maps_over_ = true;
      return out;
    }
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
      add(v, what + " must be an integer, got " + (v.IsScalar() ? "'" + shown(v.Scalar()) + "'" : type_name(v)),
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
      add(v, what + " must be a number, got " + (v.IsScalar() ? "'" + shown(v.Scalar()) + "'" : type_name(v)),
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
      add(v, what + " '" + shown(*s) + "' not found (looked at " + path + ")", allowed);
      return std::nullopt;
    }
    return path;
  }

  void parse_model(const YAML::Node& v);
  void parse_plugins(const YAML::Node& v);
  void parse_defaults(const YAML::Node& v);
  void parse_limits(const YAML::Node& v);
  void parse_pricing(const YAML::Node& v);
  void parse_nodes(const YAML::Node& v);
  void parse_stages(const YAML::Node& v, SourceLoc key_loc);
  void parse_stage(const YAML::Node& v, size_t index);
  void parse_batching(const YAML::Node& v, const std::string& stage, BatchingSpec& out);
  void parse_edges(const YAML::Node& v);
  void check_edge_channel(const EdgeSpec& e, const YAML::Node& at);
  void check_graph(SourceLoc edges_loc, bool explicit_edges);
  void check_gpu_endpoints();
  bool name_fits(const YAML::Node& at, const std::string& name, const std::string& what);
  std::optional<nlohmann::json> param_json(const YAML::Node& n, const std::string& who, const Entry& param);
  bool to_json(const YAML::Node& n, int depth, nlohmann::json& out, std::optional<YAML::Node>& bad_utf8);

  std::string file_, base_dir_;
  PipelineSpec spec_;
  std::vector<SpecProblem> problems_;
  std::map<std::string, SourceLoc> stage_loc_;  ///< every stage name written, even a duplicate's first
  std::map<std::string, SourceLoc> gpu_endpoint_loc_;  ///< node -> where its gpu_endpoint is written
  bool stages_listed_ = false;  ///< stages: was a non-empty list, so edges can be checked against it
  bool graph_ok_ = false;       ///< every stage entry became a StageSpec, so the graph can be checked
  std::set<std::string> plugin_failed_;  ///< stages whose plugin: is bad; "" for a top-level one
  size_t param_values_ = 0, param_bytes_ = 0;  ///< spent of kMaxParamValues / kMaxParamBytes
  size_t map_entries_ = 0;                     ///< spent of kMaxMapEntries
  bool maps_over_ = false;                     ///< that budget ran out (reported once)
  bool params_over_ = false;                   ///< the budget ran out (reported once)
};

/// Reports a name longer than kMaxNameBytes (without echoing all of it).
bool Parser::name_fits(const YAML::Node& at, const std::string& name, const std::string& what) {
  if (name.size() <= kMaxNameBytes) return true;
  add(at, what + " '" + shown(name) + "' is longer than " + std::to_string(kMaxNameBytes) + " bytes",
      "a name of at most " + std::to_string(kMaxNameBytes) + " bytes");
  return false;
}

/// YAML to JSON for stage parameters: plain scalars become numbers, booleans or null
/// where they read as such; quoted scalars stay strings. yaml-cpp shares an aliased
/// node, but the JSON copy is expanded, so every value counts against one budget for
/// the whole file: a 554-byte alias bomb stops here instead of filling the memory.
/// False when the budget ran out, the nesting is too deep or a string is not UTF-8
/// (`bad_utf8` then holds it).
bool Parser::to_json(const YAML::Node& n, int depth, nlohmann::json& out, std::optional<YAML::Node>& bad_utf8) {
  if (++param_values_ > kMaxParamValues || depth > kMaxParamDepth) return false;
  switch (n.Type()) {
    case YAML::NodeType::Scalar: {
      const std::string& s = n.Scalar();
      if ((param_bytes_ += s.size()) > kMaxParamBytes) return false;
      if (is_quoted(n)) {
        // A quoted escape such as "\ud800" decodes to bytes that are not UTF-8.
        if (invalid_utf8_at(s) != std::string::npos) {
          bad_utf8.emplace(n);
          return false;
        }
        out = s;
      } else if (s == "true" || s == "True" || s == "TRUE") {
        out = true;
      } else if (s == "false" || s == "False" || s == "FALSE") {
        out = false;
      } else if (s == "null" || s == "~" || s == "Null" || s == "NULL") {
        out = nullptr;
      } else if (auto i = parse_int(s)) {
        out = *i;
      } else if (auto d = parse_double(s)) {
        out = *d;
      } else {
        if (invalid_utf8_at(s) != std::string::npos) {
          bad_utf8.emplace(n);
          return false;
        }
        out = s;
      }
      return true;
    }
    case YAML::NodeType::Sequence: {
      out = nlohmann::json::array();
      for (const auto& e : n) {
        nlohmann::json v;
        if (!to_json(e, depth + 1, v, bad_utf8)) return false;
        out.push_back(std::move(v));
      }
      return true;
    }
    case YAML::NodeType::Map: {
      out = nlohmann::json::object();
      for (const auto& kv : n) {
        if (!kv.first.IsScalar()) {
          bad_utf8.reset();
          add(kv.first, "a key inside a stage parameter is " + std::string(type_name(kv.first)),
              "plain names as keys");
          return false;
        }
        const std::string& key = kv.first.Scalar();
        if ((param_bytes_ += key.size()) > kMaxParamBytes) return false;
        if (invalid_utf8_at(key) != std::string::npos) {
          bad_utf8.emplace(kv.first);
          return false;
        }
        nlohmann::json v;
        if (!to_json(kv.second, depth + 1, v, bad_utf8)) return false;
        out[key] = std::move(v);
      }
      return true;
    }
    default: out = nullptr; return true;
  }
}

std::optional<nlohmann::json> Parser::param_json(const YAML::Node& n, const std::string& who, const Entry& param) {
  if (params_over_) return std::nullopt;
  if (invalid_utf8_at(param.key) != std::string::npos) {
    add(param.key_node, who + " has a parameter name that is not valid UTF-8", "UTF-8 text");
    return std::nullopt;
  }
  const size_t problems_before = problems_.size();
  // A handle, not a pointer: the nodes yaml-cpp's iterators hand out are temporaries.
  std::optional<YAML::Node> bad_utf8;
  nlohmann::json out;
  if (to_json(n, 0, out, bad_utf8)) return out;
  if (bad_utf8) {
    add(*bad_utf8, who + " parameter '" + shown(param.key) + "' holds a string that is not valid UTF-8",
        "UTF-8 text (escapes must not encode surrogates)");
  } else if (problems_.size() == problems_before) {
    // Once the budget is spent every later parameter would fail too: report it once.
    params_over_ = param_values_ > kMaxParamValues || param_bytes_ > kMaxParamBytes;
    add(param.key_node,
        who + " parameter '" + shown(param.key) + "' is too large or too deeply nested: the parameters of a file may hold at most " +
            std::to_string(kMaxParamValues) + " values and " + std::to_string(kMaxParamBytes) +
            " bytes of text, nested at most " + std::to_string(kMaxParamDepth) + " deep",
        "smaller parameters (a YAML alias counts each time it is used)");
  }
  return std::nullopt;
}

PipelineSpec Parser::parse(const std::string& text) {
  if (text.size() > kMaxFileBytes) {
    add(SourceLoc{1, 1}, "the file is " + std::to_string(text.size()) + " bytes, more than " +
                             std::to_string(kMaxFileBytes) + " (16 MiB)",
        "a pipeline file of at most 16 MiB");
    throw SpecError(problems_);
  }
  // YAML is Unicode text without control characters; raw bytes that are not UTF-8
  // would reach names and parameters and fail later without a position, and yaml-cpp
  // reads a NUL byte as the end of a scalar.
  const auto where = [&](size_t at) {
    const size_t line_start = at == 0 ? std::string::npos : text.rfind('\n', at - 1);
    const int line = 1 + static_cast<int>(std::count(text.begin(), text.begin() + static_cast<std::ptrdiff_t>(at), '\n'));
    const int col = static_cast<int>(at - (line_start == std::string::npos ? 0 : line_start + 1)) + 1;
    return SourceLoc{line, col};
  };
  if (const size_t bad = invalid_utf8_at(text); bad != std::string::npos) {
    add(where(bad), "byte " + std::to_string(static_cast<unsigned char>(text[bad])) + " is not valid UTF-8",
        "a UTF-8 text file (save it as UTF-8)");
    throw SpecError(problems_);
  }
  const auto control = std::find_if(text.begin(), text.end(), [](char ch) {
    const auto c = static_cast<unsigned char>(ch);
    return (c < 0x20 && c != '\t' && c != '\n' && c != '\r') || c == 0x7F;
  });
  if (control != text.end()) {
    add(where(static_cast<size_t>(control - text.begin())),
        "byte " + std::to_string(static_cast<unsigned char>(*control)) + " is a control character",
        "printable text, tabs and line breaks (YAML allows no other control characters)");
    throw SpecError(problems_);
  }
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
      add(e.key_node, "unknown top-level key '" + shown(e.key) + "'", one_of(kTopKeys, e.key));
      continue;
    }
    top[e.key] = e;
  }

  // Order matters: nodes before stages (node references), stages before edges.
  if (top.count("model")) parse_model(top["model"].value);
  if (top.count("plugins")) parse_plugins(top["plugins"].value);
  if (top.count("defaults")) parse_defaults(top["defaults"].value);
  if (top.count("limits")) parse_limits(top["limits"].value);
  if (top.count("pricing")) parse_pricing(top["pricing"].value);
  if (top.count("nodes")) parse_nodes(top["nodes"].value);

  // Fill the request defaults the file left out: the model's own, then built-in ones.
  auto& d = spec_.defaults;
  std::vector<FileProblem> model_problems;
  const nlohmann::json from_model = model_defaults(spec_.model_dir, model_problems);
  for (auto& p : model_problems) problems_.push_back({std::move(p.file), {}, std::move(p.what), std::move(p.allowed)});
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
  if (graph_ok_ && !spec_.nodes.empty()) check_gpu_endpoints();

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
    add(v, "model folder '" + shown(*s) + "' not found (looked at " + dir + ")", allowed);
  } else if (!fs::is_regular_file(fs::path(dir) / "model_index.json", ec)) {
    add(v, "model folder '" + shown(*s) + "' has no model_index.json (looked in " + dir + ")", allowed);
  }
  spec_.model_dir = dir;
}

void Parser::parse_plugins(const YAML::Node& v) {
  const std::string allowed = "paths of shared libraries exporting stagecraft_register_stages, relative to this file";
  if (!expect_list(v, "plugins", allowed)) return;
  if (v.size() > kMaxPlugins) {
    add(v, "plugins: lists " + std::to_string(v.size()) + " plugins, more than " + std::to_string(kMaxPlugins),
        "at most " + std::to_string(kMaxPlugins) + " plugins");
    plugin_failed_.insert("");
    return;
  }
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
    if (std::find(kDefaultsKeys.begin(), kDefaultsKeys.end(), e.key) == kDefaultsKeys.end()) {
      add(e.key_node, "unknown key '" + shown(e.key) + "' in defaults", one_of(kDefaultsKeys, e.key));
      continue;
    }
    // The YAML value as the JSON a model's stagecraft.json would hold, then the one
    // check both go through (core/request_defaults.hpp).
    nlohmann::json value;
    if (e.key == "negative_prompt" && e.value.IsNull()) {
      value = "";
    } else if (!e.value.IsScalar()) {
      add(e.value, "defaults." + e.key + " must be a single value, got " + type_name(e.value),
          e.key == "negative_prompt" ? "a string" : "see docs/pipeline-config.md");
      continue;
    } else if (e.key == "scheduler" || e.key == "negative_prompt") {
      value = e.value.Scalar();
      if (invalid_utf8_at(e.value.Scalar()) != std::string::npos) {
        add(e.value, "defaults." + e.key + " is not valid UTF-8", "UTF-8 text (escapes must not encode surrogates)");
        continue;
      }
    } else if (auto i = parse_int(e.value.Scalar())) {
      value = *i;
    } else if (auto x = parse_double(e.value.Scalar())) {
      value = *x;
    } else {
      value = shown(e.value.Scalar());
    }
    if (auto p = check_request_default(e.key, value))
      add(e.value, p->what, e.key == "scheduler" ? one_of(kSchedulers, e.value.Scalar()) : p->allowed);
    else
      d[e.key] = value;
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
      add(e.key_node, "unknown key '" + shown(e.key) + "' in limits", one_of(kLimitsKeys, e.key));
    }
  }
}

void Parser::parse_pricing(const YAML::Node& v) {
  if (!expect_map(v, "pricing", "a map, e.g. {device_hour: 2.5}")) return;
  for (const auto& e : entries(v, "pricing")) {
    if (e.key == "device_hour") {
      if (auto x = get_number(e.value, "pricing.device_hour", 0.0, "a price >= 0 per device and hour"))
        spec_.price_per_device_hour = *x;
    } else {
      add(e.key_node, "unknown key '" + shown(e.key) + "' in pricing", one_of({"device_hour"}, e.key));
    }
  }
}

void Parser::parse_nodes(const YAML::Node& v) {
  const std::string allowed = "a map of node name to {endpoint: tcp://HOST:PORT or ipc://PATH}";
  if (!expect_map(v, "nodes", allowed)) return;
  if (v.size() > kMaxNodes) {
    add(v, "nodes: declares " + std::to_string(v.size()) + " nodes, more than " + std::to_string(kMaxNodes),
        "at most " + std::to_string(kMaxNodes) + " nodes in one pipeline");
    return;
  }
  std::map<std::string, std::string> endpoint_owner;
  for (const auto& e : entries(v, "nodes")) {
    if (!name_fits(e.key_node, e.key, "node name")) continue;
    NodeSpec n;
    n.name = e.key;
    n.loc = loc_of(e.key_node);
    if (!expect_map(e.value, "node '" + shown(e.key) + "'", "{endpoint: tcp://HOST:PORT}")) continue;
    bool has_endpoint = false;
    for (const auto& f : entries(e.value, "node '" + shown(e.key) + "'")) {
      if (f.key == "host") {
        if (auto h = get_string(f.value, "host of node '" + shown(e.key) + "'", "a host name")) {
          if (name_fits(f.value, *h, "host")) n.host = *h;  // get_string refuses an empty one
        }
        continue;
      }
      if (f.key != "endpoint" && f.key != "gpu_endpoint") {
        add(f.key_node, "unknown key '" + shown(f.key) + "' in node '" + shown(e.key) + "'", one_of(kNodeKeys, f.key));
        continue;
      }
      const bool gpu = f.key == "gpu_endpoint";
      has_endpoint = has_endpoint || !gpu;
      const std::string ep_allowed = "a ZeroMQ address: tcp://HOST:PORT or ipc://PATH";
      auto ep = get_string(f.value, f.key + " of node '" + shown(e.key) + "'", ep_allowed);
      if (!ep) continue;
      if (ep->rfind("tcp://", 0) != 0 && ep->rfind("ipc://", 0) != 0) {
        add(f.value, f.key + " '" + shown(*ep) + "' of node '" + shown(e.key) + "' is not a ZeroMQ address", ep_allowed);
        continue;
      }
      // A given gpu_endpoint is checked against every endpoint with the derived ones, once
      // the channels are known (check_gpu_endpoints).
      if (gpu) {
        n.gpu_endpoint = *ep;
        gpu_endpoint_loc_[e.key] = loc_of(f.value);
        continue;
      }
      auto [it, fresh] = endpoint_owner.emplace(*ep, e.key);
      if (!fresh) {
        add(f.value, "endpoint '" + shown(*ep) + "' is used by nodes '" + shown(it->second) + "' and '" + shown(e.key) + "'",
            "a distinct endpoint per node");
        continue;
      }
      n.endpoint = *ep;
    }
    if (!has_endpoint) add(e.value, "node '" + shown(e.key) + "' has no endpoint", "{endpoint: tcp://HOST:PORT}");
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
  if (v.size() > kMaxStages) {
    add(key_loc, "stages: lists " + std::to_string(v.size()) + " stages, more than " + std::to_string(kMaxStages),
        "at most " + std::to_string(kMaxStages) + " stages in one pipeline");
    return;
  }
  for (size_t i = 0; i < v.size() && !too_many(); ++i) parse_stage(v[i], i);
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
    if (auto name = get_string(n->value, "stage name", "letters, digits, '_', '-' and '.'");
        name && name_fits(n->value, *name, "stage name")) {
      const bool clean = std::all_of(name->begin(), name->end(), [](char c) {
        return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.';
      });
      if (!clean) {
        add(n->value, "stage name '" + shown(*name) + "' has characters other than letters, digits, '_', '-', '.'",
            "letters, digits, '_', '-' and '.'");
      } else if (stage_loc_.count(*name)) {
        const SourceLoc first = stage_loc_[*name];
        add(n->value, "duplicate stage name '" + shown(*name) + "' (first at line " + std::to_string(first.line) + ")",
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
    if (auto type = get_string(t->value, who + " type", "a registered stage type, e.g. sleep");
        type && name_fits(t->value, *type, who + " type"))
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
        add(e.value, "bad device '" + shown(*d) + "' for " + who, "cpu, cuda or cuda:N (N >= 0)");
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
      // One node, or a list: the stage runs on each (a replica per node; jobs go to a live one).
      const char* allowed = "the name of a node under nodes:, or a list of them";
      if (e.value.IsSequence() && e.value.size() > 0) {
        for (const auto& item : e.value)
          if (auto n = get_string(item, who + " node", allowed)) {
            if (std::find(s.nodes.begin(), s.nodes.end(), *n) != s.nodes.end())
              add(item, who + " lists node '" + shown(*n) + "' twice", "each node once");
            else
              s.nodes.push_back(*n);
          }
      } else if (auto n = get_string(e.value, who + " node", allowed)) {
        s.nodes = {*n};
      }
      if (!s.nodes.empty()) s.node = s.nodes.front();
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
        add(e.key_node, "unknown key '" + shown(e.key) + "' in " + who, "did you mean '" + guess + "'?");
        continue;
      }
      if (auto j = param_json(e.value, who, e)) s.params[e.key] = std::move(*j);
    }
  }

  // Node references (nodes: is parsed before stages).
  std::vector<std::string> node_names;
  for (const auto& n : spec_.nodes) node_names.push_back(n.name);
  if (const Entry* n = find("node"); n && !s.node.empty()) {
    if (spec_.nodes.empty())
      add(n->value, who + " names node '" + shown(s.node) + "' but the file declares no nodes:",
          "add a nodes: map, or drop node: to run every stage in one process");
    else
      for (const auto& name : s.nodes)
        if (std::find(node_names.begin(), node_names.end(), name) == node_names.end())
          add(n->value, "unknown node '" + shown(name) + "' for " + who, one_of(node_names, name));
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
      add(e.key_node, "unknown key '" + shown(e.key) + "' in " + who + " batching", one_of(kBatchingKeys, e.key));
    }
  }
}

void Parser::parse_edges(const YAML::Node& v) {
  const std::string allowed = "a list of {from: STAGE, to: STAGE, channel: auto}";
  if (!expect_list(v, "edges", allowed)) return;
  if (v.size() > kMaxEdges) {
    add(v, "edges: lists " + std::to_string(v.size()) + " edges, more than " + std::to_string(kMaxEdges),
        "at most " + std::to_string(kMaxEdges) + " edges in one pipeline");
    return;
  }
  std::vector<std::string> names;
  for (const auto& [name, at] : stage_loc_) names.push_back(name);
  std::set<std::pair<std::string, std::string>> seen;
  for (size_t i = 0; i < v.size() && !too_many(); ++i) {
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
          add(f.value, label + " names unknown stage '" + shown(*s) + "'", one_of(names, *s));
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
          add(f.value, "unknown channel '" + shown(*s) + "'", one_of(kChannels, *s));
          ok = false;
        } else {
          e.channel = *s;
          channel_node = f.value;
        }
      } else {
        add(f.key_node, "unknown key '" + shown(f.key) + "' in " + label, one_of(kEdgeKeys, f.key));
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

void Parser::check_gpu_endpoints() {
  // Which nodes receive over a GPU channel, and over which: the channel of every edge
  // between each pair of nodes its stages run on (core/placement.hpp, choose_channel).
  struct Need {
    ChannelKind kind;
    std::string edge;
  };
  std::map<std::string, std::vector<Need>> needs;
  for (const auto& e : spec_.edges) {
    const StageSpec* a = spec_.find_stage(e.from);
    const StageSpec* b = spec_.find_stage(e.to);
    if (!a || !b) continue;
    for (const auto& fn : a->nodes)
      for (const auto& tn : b->nodes) {
        ChannelKind k = ChannelKind::local;
        try {
          k = choose_channel(spec_, e.channel, *a, fn, *b, tn);
        } catch (const Error&) {
          continue;  // `local` across nodes: reported by check_edge_channel
        }
        if (is_gpu_channel(k)) needs[tn].push_back({k, e.from + " -> " + e.to + " from node '" + fn + "'"});
      }
  }
  // Every address a node binds: its endpoint, and its GPU endpoint where it has one.
  std::map<std::string, std::string> owner;  // address -> "the endpoint of node 'x'"
  for (const auto& n : spec_.nodes)
    if (!n.endpoint.empty()) owner[n.endpoint] = "the endpoint of node '" + shown(n.name) + "'";
  for (const auto& n : spec_.nodes) {
    auto need = needs.find(n.name);
    const bool given = !n.gpu_endpoint.empty();
    const SourceLoc at = given ? gpu_endpoint_loc_[n.name] : n.loc;
    if (need != needs.end()) {
      for (const Need& x : need->second)
        if (x.kind != need->second.front().kind) {
          add(n.loc,
              "node '" + shown(n.name) + "' receives over " + channel_name(need->second.front().kind) + " (edge " +
                  need->second.front().edge + ") and over " + channel_name(x.kind) + " (edge " + x.edge +
                  "), but a node has one GPU endpoint",
              "force one channel (cuda_ipc, nccl or zmq) on those edges");
          break;
        }
    }
    if (!given && need == needs.end()) continue;  // binds no GPU socket
    const std::string gep = gpu_endpoint_of(n);
    if (gep.empty()) {
      if (!n.endpoint.empty())
        add(at,
            "node '" + shown(n.name) + "' receives over " + channel_name(need->second.front().kind) + " (edge " +
                need->second.front().edge + ") but its gpu_endpoint cannot be derived from '" + shown(n.endpoint) +
                "' (the port + 1000 is not a port)",
            "give the node a gpu_endpoint: tcp://HOST:PORT or ipc://PATH");
      continue;
    }
    const std::string what = given ? "gpu_endpoint '" + shown(gep) + "' of node '" + shown(n.name) + "'"
                                   : "the gpu_endpoint '" + shown(gep) + "' of node '" + shown(n.name) +
                                         "' (derived from its endpoint: PORT + 1000, or ipc PATH.gpu)";
    auto [it, fresh] = owner.emplace(gep, "the gpu_endpoint of node '" + shown(n.name) + "'");
    if (!fresh)
      add(at, what + " is also " + it->second,
          "a distinct address: give node '" + shown(n.name) + "' a gpu_endpoint: of its own");
  }
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
  // The walk keeps its own stack: a chain of thousands of stages must not exhaust the thread's.
  std::map<std::string, int> color;  // 0 unseen, 1 on the path, 2 done
  std::vector<std::string> path;     // the stages on the current path, root first
  bool cyclic = false;
  struct Frame {
    const std::string* stage;
    size_t next_edge;  // index into out[*stage] of the edge to look at next
  };
  std::vector<Frame> stack;
  for (const auto& root : stages) {
    if (color[root.name] != 0) continue;
    color[root.name] = 1;
    path.push_back(root.name);
    stack.push_back({&root.name, 0});
    while (!stack.empty()) {
      Frame& f = stack.back();
      const auto& edges = out[*f.stage];
      if (f.next_edge == edges.size()) {
        color[*f.stage] = 2;
        path.pop_back();
        stack.pop_back();
        continue;
      }
      const EdgeSpec* e = edges[f.next_edge++];
      int& c = color[e->to];
      if (c == 1) {
        cyclic = true;
        auto start = std::find(path.begin(), path.end(), e->to);
        std::string cycle;
        for (auto it = start; it != path.end(); ++it) cycle += *it + " -> ";
        cycle += e->to;
        add(e->loc, "edges form a cycle: " + shown(cycle),
            "a directed acyclic graph from one entry stage to one exit stage");
      } else if (c == 0) {
        c = 1;
        path.push_back(e->to);
        stack.push_back({&e->to, 0});
      }
    }
  }
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
    add(at, "several stages have no incoming edge: " + join_some(entries_),
        "exactly one entry stage, where requests arrive");
  if (exits.size() > 1)
    add(at, "several stages have no outgoing edge: " + join_some(exits), "exactly one exit stage, which finishes the job");
}

}  // namespace

std::string gpu_endpoint_of(const NodeSpec& n) {
  if (!n.gpu_endpoint.empty()) return n.gpu_endpoint;
  const std::string& ep = n.endpoint;
  if (ep.rfind("ipc://", 0) == 0) return ep + ".gpu";
  if (ep.rfind("tcp://", 0) != 0) return "";
  const size_t colon = ep.rfind(':');
  if (colon == std::string::npos || colon < 6) return "";
  int port = 0;
  const char* first = ep.data() + colon + 1;
  const char* last = ep.data() + ep.size();
  auto [ptr, ec] = std::from_chars(first, last, port);
  if (ec != std::errc() || ptr != last || first == last || port <= 0 || port + 1000 > 65535) return "";
  return ep.substr(0, colon + 1) + std::to_string(port + 1000);
}

std::string host_of(const NodeSpec& n) {
  if (!n.host.empty()) return n.host;
  const std::string& ep = n.endpoint;
  if (ep.rfind("ipc://", 0) == 0) return "localhost";
  std::string h = ep.rfind("tcp://", 0) == 0 ? ep.substr(6) : ep;
  if (!h.empty() && h.front() == '[') {  // tcp://[::1]:PORT
    const size_t close = h.find(']');
    h = h.substr(1, close == std::string::npos ? std::string::npos : close - 1);
  } else if (const size_t colon = h.rfind(':'); colon != std::string::npos) {
    h = h.substr(0, colon);
  }
  std::transform(h.begin(), h.end(), h.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (h == "localhost" || h == "::1" || h.rfind("127.", 0) == 0) return "localhost";
  return h;
}

std::string closest_word(const std::string& got, const std::vector<std::string>& allowed) {
  std::string best;
  size_t best_d = SIZE_MAX;
  if (got.size() > kMaxSuggestBytes) return best;
  for (size_t i = 0; i < allowed.size() && i < kMaxSuggestCandidates; ++i) {
    const std::string& a = allowed[i];
    // Cheap bound first: the distance is at least the difference in length.
    const size_t gap = a.size() > got.size() ? a.size() - got.size() : got.size() - a.size();
    if (gap > std::max<size_t>(1, a.size() / 4)) continue;
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
  const auto bytes = fs::file_size(path, ec);
  SC_CHECK(!ec && bytes <= kMaxFileBytes, Errc::parse,
           path << ": a pipeline file may hold at most 16 MiB, this one holds " << bytes << " bytes");
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
    for (const auto& n : spec.nodes) {
      os << "  " << n.name << "  " << n.endpoint;
      if (!n.gpu_endpoint.empty()) os << "  gpu_endpoint " << n.gpu_endpoint;
      os << "  host " << host_of(n) << (n.host.empty() ? " (from the endpoint)" : "") << "\n";
    }
  }
  size_t w_name = 4, w_type = 4;
  for (const auto& s : spec.stages) w_name = std::max(w_name, s.name.size()), w_type = std::max(w_type, s.type.size());
  os << "stages (" << spec.stages.size() << "):\n";
  for (const auto& s : spec.stages) {
    os << "  " << std::left << std::setw(static_cast<int>(w_name)) << s.name << "  "
       << std::setw(static_cast<int>(w_type)) << s.type << "  " << std::setw(7) << s.device.str();
    if (!s.node.empty()) {
      os << "  node " << s.node;
      for (size_t i = 1; i < s.nodes.size(); ++i) os << "," << s.nodes[i];
    }
    os << "  replicas " << s.replicas << "  max_batch " << s.batching.max_batch << "  max_wait_ms "
       << s.batching.max_wait_ms << "  credits " << spec.credits_for(s);
    if (!s.params.empty()) os << "  params " << s.params.dump();
    if (!s.plugin.empty()) os << "  plugin " << s.plugin;
    os << "\n";
  }
  os << "edges (" << spec.edges.size() << "):\n";
  for (const auto& e : spec.edges) {
    os << "  " << e.from << " -> " << e.to << "  [" << e.channel << "]";
    // Across nodes, the channel each pair of nodes gets (core/placement.hpp, choose_channel).
    const StageSpec* a = spec.find_stage(e.from);
    const StageSpec* b = spec.find_stage(e.to);
    if (a && b && !spec.nodes.empty()) {
      std::string pairs;
      for (const auto& fn : a->nodes)
        for (const auto& tn : b->nodes) {
          if (fn == tn) continue;
          std::string k;
          try {
            k = channel_name(choose_channel(spec, e.channel, *a, fn, *b, tn));
          } catch (const Error&) {
            k = "refused";
          }
          pairs += (pairs.empty() ? "" : ", ") + fn + " -> " + tn + " over " + k;
        }
      if (!pairs.empty()) os << "  " << pairs;
    }
    os << "\n";
  }
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
