// ClipTokenizer: see clip_tokenizer.hpp. Each step mirrors a line of transformers'
// CLIPTokenizer / BasicTokenizer so that ids match for the same files.
#include "stages/text/clip_tokenizer.hpp"

#include <algorithm>
#include <climits>
#include <filesystem>
#include <cctype>
#include <fstream>
#include <map>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/error.hpp"
#include "core/json_brief.hpp"
#include "stages/model/weights.hpp"
#include "stages/text/unicode_tables.hpp"

namespace fs = std::filesystem;

namespace stagecraft {
namespace {

// GPT-2's bytes_to_unicode(): printable bytes map to themselves, the rest to 256+n.
void build_byte_encoder(std::string (&enc)[256]) {
  std::vector<int> bs, cs;
  auto add_range = [&](int a, int b) {
    for (int i = a; i <= b; ++i) bs.push_back(i);
  };
  add_range('!', '~');
  add_range(0xA1, 0xAC);
  add_range(0xAE, 0xFF);
  cs = bs;
  int n = 0;
  for (int b = 0; b < 256; ++b) {
    if (std::find(bs.begin(), bs.end(), b) == bs.end()) {
      bs.push_back(b);
      cs.push_back(256 + n++);
    }
  }
  for (size_t i = 0; i < bs.size(); ++i) enc[bs[i]] = unicode::utf8_encode(static_cast<char32_t>(cs[i]));
}

bool is_cjk(char32_t cp) {
  return (cp >= 0x4E00 && cp <= 0x9FFF) || (cp >= 0x3400 && cp <= 0x4DBF) || (cp >= 0x20000 && cp <= 0x2A6DF) ||
         (cp >= 0x2A700 && cp <= 0x2B73F) || (cp >= 0x2B740 && cp <= 0x2B81F) || (cp >= 0x2B820 && cp <= 0x2CEAF) ||
         (cp >= 0xF900 && cp <= 0xFAFF) || (cp >= 0x2F800 && cp <= 0x2FA1F);
}

// BasicTokenizer(strip_accents=False, do_split_on_punc=False).tokenize, joined by spaces.
std::u32string basic_clean(const std::u32string& text) {
  std::u32string cleaned;
  for (char32_t c : text) {
    if (c == 0 || c == 0xFFFD) continue;
    const bool ws = c == ' ' || c == '\t' || c == '\n' || c == '\r' || unicode::is_space_separator(c);
    if (!ws && unicode::is_other(c)) continue;  // _is_control: category C*, tab/newline excepted above
    if (ws) {
      cleaned.push_back(' ');
    } else if (is_cjk(c)) {
      cleaned.push_back(' ');
      cleaned.push_back(c);
      cleaned.push_back(' ');
    } else {
      cleaned.push_back(c);
    }
  }
  // whitespace_tokenize + lower() + " ".join
  std::u32string out;
  size_t i = 0;
  while (i < cleaned.size()) {
    while (i < cleaned.size() && unicode::is_python_space(cleaned[i])) ++i;
    if (i == cleaned.size()) break;
    if (!out.empty()) out.push_back(' ');
    while (i < cleaned.size() && !unicode::is_python_space(cleaned[i])) out += unicode::to_lower(cleaned[i++]);
  }
  return out;
}

char32_t ascii_lower(char32_t c) { return (c >= 'A' && c <= 'Z') ? c + 32 : c; }

bool starts_with_ci(const std::u32string& s, size_t pos, const char* lit) {
  for (size_t k = 0; lit[k]; ++k) {
    if (pos + k >= s.size() || ascii_lower(s[pos + k]) != static_cast<char32_t>(lit[k])) return false;
  }
  return true;
}

// re.findall of CLIP's pattern (IGNORECASE): alternatives tried in order at each position.
std::vector<std::u32string> pre_tokenize(const std::u32string& text) {
  static const char* kSpecial[] = {"<|startoftext|>", "<|endoftext|>"};
  static const char* kContractions[] = {"'s", "'t", "'re", "'ve", "'m", "'ll", "'d"};
  std::vector<std::u32string> out;
  size_t i = 0;
  const size_t n = text.size();
  auto other = [](char32_t c) {
    return !unicode::is_python_space(c) && !unicode::is_letter(c) && !unicode::is_number(c);
  };
  while (i < n) {
    bool matched = false;
    for (const char* lit : kSpecial) {
      if (starts_with_ci(text, i, lit)) {
        const size_t len = std::char_traits<char>::length(lit);
        out.push_back(text.substr(i, len));
        i += len;
        matched = true;
        break;
      }
    }
    if (matched) continue;
    for (const char* lit : kContractions) {
      if (starts_with_ci(text, i, lit)) {
        const size_t len = std::char_traits<char>::length(lit);
        out.push_back(text.substr(i, len));
        i += len;
        matched = true;
        break;
      }
    }
    if (matched) continue;
    size_t j = i;
    if (unicode::is_letter(text[i])) {
      while (j < n && unicode::is_letter(text[j])) ++j;
    } else if (unicode::is_number(text[i])) {
      j = i + 1;
    } else if (other(text[i])) {
      while (j < n && other(text[j])) ++j;
    } else {
      ++i;  // whitespace: no alternative matches here
      continue;
    }
    out.push_back(text.substr(i, j - i));
    i = j;
  }
  return out;
}

std::string token_string(const nlohmann::json& v, const std::string& fallback) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string()) return v["content"].get<std::string>();
  return fallback;
}

}  // namespace

ClipTokenizer ClipTokenizer::load(const std::string& dir) {
  const std::string vocab_path = (fs::path(dir) / "vocab.json").string();
  const std::string merges_path = (fs::path(dir) / "merges.txt").string();
  SC_CHECK(fs::exists(vocab_path), Errc::not_found, "tokenizer folder " << dir << " has no vocab.json");
  SC_CHECK(fs::exists(merges_path), Errc::not_found, "tokenizer folder " << dir << " has no merges.txt");
  ClipTokenizer t;
  build_byte_encoder(t.byte_encoder_);

  const nlohmann::json vocab = read_json_file(vocab_path);
  SC_CHECK(vocab.is_object(), Errc::parse, vocab_path << " must map tokens to ids");
  for (const auto& [piece, id] : vocab.items()) {
    // Checked before the conversion: an id past int32 would wrap into another token's.
    SC_CHECK(id.is_number_integer() && id.get<int64_t>() >= 0 && id.get<int64_t>() <= INT32_MAX &&
                 !(id.is_number_unsigned() && id.get<uint64_t>() > INT32_MAX),
             Errc::parse, vocab_path << ": id of \"" << piece << "\" must be an integer from 0 to " << INT32_MAX
                                     << ", got " << json_brief(id));
    t.vocab_[piece] = static_cast<int32_t>(id.get<int64_t>());
  }

  std::ifstream in(merges_path, std::ios::binary);
  SC_CHECK(in.good(), Errc::io, "cannot read " << merges_path);
  std::error_code size_ec;
  const auto merges_bytes = fs::file_size(merges_path, size_ec);
  SC_CHECK(size_ec || merges_bytes <= kMaxJsonFileBytes, Errc::parse,
           merges_path << " is " << merges_bytes << " bytes; CLIP's is about 500 KB, at most "
                       << kMaxJsonFileBytes / (1 << 20) << " MiB are read");
  std::stringstream ss;
  ss << in.rdbuf();
  std::string content = ss.str();
  // merges_handle.read().strip().split("\n")[1 : 49152 - 256 - 2 + 1]: the first line is the
  // "#version" header, and CLIP caps the merge list at 48894 entries.
  const auto not_space = [](unsigned char c) { return !std::isspace(c); };
  content.erase(content.begin(), std::find_if(content.begin(), content.end(), not_space));
  content.erase(std::find_if(content.rbegin(), content.rend(), not_space).base(), content.end());
  std::istringstream lines(content);
  std::string line;
  int index = -1;
  const int max_merges = 49152 - 256 - 2;
  while (std::getline(lines, line)) {
    if (index++ < 0) continue;
    if (index > max_merges) break;
    std::istringstream parts(line);
    std::string a, b, extra;
    parts >> a >> b;
    if (a.empty() || b.empty() || (parts >> extra)) continue;  // a malformed line still takes its rank
    t.ranks_.emplace(a + " " + b, index - 1);
  }

  std::map<std::string, nlohmann::json> special;
  const std::string config_path = (fs::path(dir) / "tokenizer_config.json").string();
  nlohmann::json config = fs::exists(config_path) ? read_json_file(config_path) : nlohmann::json::object();
  const std::string map_path = (fs::path(dir) / "special_tokens_map.json").string();
  nlohmann::json smap = fs::exists(map_path) ? read_json_file(map_path) : nlohmann::json::object();
  auto special_token = [&](const char* key, const char* fallback) {
    if (smap.contains(key)) return token_string(smap[key], fallback);  // transformers lets the map win
    if (config.contains(key)) return token_string(config[key], fallback);
    return std::string(fallback);
  };
  t.bos_ = special_token("bos_token", "<|startoftext|>");
  t.eos_ = special_token("eos_token", "<|endoftext|>");
  const std::string unk = special_token("unk_token", "<|endoftext|>");
  const std::string pad = special_token("pad_token", "<|endoftext|>");
  auto id_of = [&](const std::string& piece, const char* role) {
    auto it = t.vocab_.find(piece);
    SC_CHECK(it != t.vocab_.end(), Errc::parse,
             "the " << role << " token \"" << piece << "\" is not in " << vocab_path);
    return it->second;
  };
  t.bos_id_ = id_of(t.bos_, "bos");
  t.eos_id_ = id_of(t.eos_, "eos");
  t.unk_id_ = id_of(unk, "unk");
  t.pad_id_ = id_of(pad, "pad");
  if (config.contains("model_max_length") && config["model_max_length"].is_number()) {
    const double m = config["model_max_length"].get<double>();
    // transformers writes a huge sentinel when the length is unset; CLIP's is 77.
    if (m > 0 && m < 1e6) t.model_max_length_ = static_cast<int>(m);
  }
  return t;
}

int ClipTokenizer::token_id(const std::string& piece) const {
  auto it = vocab_.find(piece);
  return it == vocab_.end() ? -1 : it->second;
}

std::string ClipTokenizer::bpe(const std::string& token) const {
  if (token == "<|startoftext|>" || token == "<|endoftext|>") return token;
  {
    std::lock_guard<std::mutex> lock(cache_->mu);
    auto it = cache_->map.find(token);
    if (it != cache_->map.end()) return it->second;
  }
  // Split into code points (each a UTF-8 string); the last one carries "</w>".
  std::vector<std::string> word;
  for (char32_t cp : unicode::utf8_decode(token)) word.push_back(unicode::utf8_encode(cp));
  if (word.empty()) return token;
  word.back() += "</w>";
  while (word.size() > 1) {
    int best_rank = INT_MAX;
    std::string best_first, best_second;
    for (size_t i = 0; i + 1 < word.size(); ++i) {
      auto it = ranks_.find(word[i] + " " + word[i + 1]);
      if (it != ranks_.end() && it->second < best_rank) {
        best_rank = it->second;
        best_first = word[i];
        best_second = word[i + 1];
      }
    }
    if (best_rank == INT_MAX) break;
    std::vector<std::string> merged;
    for (size_t i = 0; i < word.size();) {
      if (i + 1 < word.size() && word[i] == best_first && word[i + 1] == best_second) {
        merged.push_back(best_first + best_second);
        i += 2;
      } else {
        merged.push_back(word[i]);
        ++i;
      }
    }
    word = std::move(merged);
  }
  std::string out;
  for (size_t i = 0; i < word.size(); ++i) {
    if (i) out += ' ';
    out += word[i];
  }
  std::lock_guard<std::mutex> lock(cache_->mu);
  if (cache_->map.size() < 65536) cache_->map.emplace(token, out);
  return out;
}

std::vector<std::string> ClipTokenizer::tokenize(const std::string& text) const {
  std::vector<std::string> pieces;
  for (const std::u32string& tok : pre_tokenize(basic_clean(unicode::utf8_decode(text)))) {
    std::string mapped;
    for (unsigned char b : unicode::utf8_encode(tok)) mapped += byte_encoder_[b];
    std::istringstream parts(bpe(mapped));
    std::string p;
    while (parts >> p) pieces.push_back(p);
  }
  return pieces;
}

std::vector<int32_t> ClipTokenizer::encode_raw(const std::string& text) const {
  std::vector<int32_t> ids;
  for (const auto& p : tokenize(text)) {
    auto it = vocab_.find(p);
    ids.push_back(it == vocab_.end() ? unk_id_ : it->second);
  }
  return ids;
}

TokenizedText ClipTokenizer::encode(const std::string& text, int max_length, bool pad, bool truncate) const {
  if (max_length < 0) max_length = model_max_length_;
  SC_CHECK(max_length >= 2, Errc::invalid_argument, "max_length must leave room for bos and eos, got " << max_length);
  std::vector<int32_t> body = encode_raw(text);
  if (truncate && static_cast<int>(body.size()) > max_length - 2) body.resize(max_length - 2);
  TokenizedText out;
  out.ids.push_back(bos_id_);
  out.ids.insert(out.ids.end(), body.begin(), body.end());
  out.ids.push_back(eos_id_);
  out.length = static_cast<int>(out.ids.size());
  out.mask.assign(out.ids.size(), 1);
  if (pad) {
    while (static_cast<int>(out.ids.size()) < max_length) {
      out.ids.push_back(pad_id_);
      out.mask.push_back(0);
    }
  }
  return out;
}

}  // namespace stagecraft
