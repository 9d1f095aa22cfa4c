#pragma once
// CLIP's byte-level BPE tokenizer, reading a transformers `tokenizer/` folder
// (vocab.json, merges.txt, tokenizer_config.json, optional special_tokens_map.json)
// and producing the same ids as transformers' CLIPTokenizer without ftfy:
//   1. BasicTokenizer cleanup: drop control characters, map whitespace to spaces,
//      space out CJK ideographs, split on whitespace, lower-case (str.lower()).
//   2. CLIP's pre-tokenisation regex:
//      <|startoftext|>|<|endoftext|>|'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}|[^\s\p{L}\p{N}]+
//   3. Each piece's UTF-8 bytes mapped to GPT-2's printable byte alphabet, then
//      BPE merges applied by rank, the last symbol of a word carrying "</w>".
//   4. bos + ids + eos, truncated to model_max_length and padded with the pad token.
// Not done (as without ftfy in transformers): ftfy's text repair; NFC normalisation
// is assumed of the input (composed text is unaffected).
//
//   auto tok = ClipTokenizer::load("models/tiny-shapes/tokenizer");
//   TokenizedText t = tok.encode("a red circle");   // ids.size() == tok.model_max_length()
//   // t.ids = {bos, a, red, circle, eos, pad, ...}, t.mask = {1, 1, 1, 1, 1, 0, ...}
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

namespace stagecraft {

struct TokenizedText {
  std::vector<int32_t> ids;
  std::vector<int32_t> mask;  ///< 1 for bos, text and eos; 0 for padding
  int length = 0;             ///< number of 1s in mask
};

class ClipTokenizer {
 public:
  /// Error(not_found) naming the missing file; Error(parse) for malformed ones.
  static ClipTokenizer load(const std::string& dir);

  /// BPE pieces of `text` (no bos/eos), e.g. {"a</w>", "red</w>"}.
  std::vector<std::string> tokenize(const std::string& text) const;
  /// Ids of tokenize(text); pieces missing from the vocabulary map to the unk id.
  std::vector<int32_t> encode_raw(const std::string& text) const;
  /// bos + ids + eos; with `truncate`, text ids are cut to max_length - 2; with `pad`,
  /// pad ids follow up to max_length. max_length < 0 means model_max_length().
  TokenizedText encode(const std::string& text, int max_length = -1, bool pad = true, bool truncate = true) const;

  int bos_id() const { return bos_id_; }
  int eos_id() const { return eos_id_; }
  int pad_id() const { return pad_id_; }
  int unk_id() const { return unk_id_; }
  int model_max_length() const { return model_max_length_; }
  int vocab_size() const { return static_cast<int>(vocab_.size()); }
  /// Id of one vocabulary entry, or -1.
  int token_id(const std::string& piece) const;

 private:
  std::string bpe(const std::string& token) const;  // space-separated pieces

  std::unordered_map<std::string, int32_t> vocab_;
  std::unordered_map<std::string, int> ranks_;  // "first second" -> rank
  std::string byte_encoder_[256];
  int bos_id_ = 0, eos_id_ = 0, pad_id_ = 0, unk_id_ = 0;
  int model_max_length_ = 77;
  std::string bos_, eos_;
  // BPE results are pure functions of the piece; shared across copies.
  struct Cache {
    std::mutex mu;
    std::unordered_map<std::string, std::string> map;
  };
  std::shared_ptr<Cache> cache_ = std::make_shared<Cache>();
};

}  // namespace stagecraft
