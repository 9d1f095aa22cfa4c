// CLIP tokenizer (ids equal to tools/reference.py's CLIPTokenizer, plus hand-checked BPE
// and pre-tokenisation cases) and the CLIP text encoder against the PyTorch reference.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <fstream>

#include "core/error.hpp"
#include "core/safetensors.hpp"
#include "stages/text/clip_text_encoder.hpp"
#include "stages/text/clip_tokenizer.hpp"
#include "stages/text/unicode_tables.hpp"
#include "test_e1_support.hpp"

using namespace stagecraft;
using namespace sc_test;

namespace {

// A hand-made tokenizer folder: single characters, their </w> forms, and merges
// building "lo", "low</w>", "er</w>" in that order of rank.
std::string hand_tokenizer(const TempDir& tmp) {
  const std::string dir = tmp / "tok";
  std::filesystem::create_directories(dir);
  nlohmann::json vocab;
  int id = 0;
  for (const char* p : {"l", "o", "w", "e", "r", "!", "'", "s", "l</w>", "o</w>", "w</w>", "e</w>", "r</w>", "!</w>",
                        "s</w>", "'s</w>", "1</w>", "2</w>", "lo", "low</w>", "er</w>", "<|startoftext|>",
                        "<|endoftext|>"})
    vocab[p] = id++;
  std::ofstream(dir + "/vocab.json") << vocab.dump();
  std::ofstream(dir + "/merges.txt") << "#version: 0.2\nl o\nlo w</w>\ne r</w>\n' s</w>\n";
  std::ofstream(dir + "/tokenizer_config.json") << R"({"model_max_length": 8, "bos_token": "<|startoftext|>",
      "eos_token": {"content": "<|endoftext|>"}, "pad_token": "<|endoftext|>", "unk_token": "<|endoftext|>"})";
  return dir;
}

}  // namespace

TEST_CASE("BPE applies merges by rank and marks word ends") {
  TempDir tmp;
  const auto tok = ClipTokenizer::load(hand_tokenizer(tmp));
  CHECK(tok.tokenize("low") == std::vector<std::string>{"low</w>"});
  CHECK(tok.tokenize("lower") == std::vector<std::string>{"lo", "w", "er</w>"});
  CHECK(tok.tokenize("  LOW\n\tLow ") == std::vector<std::string>{"low</w>", "low</w>"});
  // Contractions split off, digits stand alone, punctuation runs stay together.
  CHECK(tok.tokenize("low's") == std::vector<std::string>{"low</w>", "'s</w>"});
  CHECK(tok.tokenize("12") == std::vector<std::string>{"1</w>", "2</w>"});
  CHECK(tok.tokenize("low!!") == std::vector<std::string>{"low</w>", "!", "!</w>"});
}

TEST_CASE("encode adds bos and eos, pads with the pad token and truncates to model_max_length") {
  TempDir tmp;
  const auto tok = ClipTokenizer::load(hand_tokenizer(tmp));
  const int bos = tok.token_id("<|startoftext|>"), eos = tok.token_id("<|endoftext|>");
  const int low = tok.token_id("low</w>");
  CHECK(tok.bos_id() == bos);
  CHECK(tok.eos_id() == eos);
  CHECK(tok.model_max_length() == 8);
  TokenizedText t = tok.encode("low low");
  CHECK(t.ids == std::vector<int32_t>{bos, low, low, eos, eos, eos, eos, eos});
  CHECK(t.mask == std::vector<int32_t>{1, 1, 1, 1, 0, 0, 0, 0});
  CHECK(t.length == 4);
  t = tok.encode("low low low low low low low low low");
  CHECK(t.ids.size() == 8);
  CHECK(t.ids.front() == bos);
  CHECK(t.ids.back() == eos);
  CHECK(t.mask == std::vector<int32_t>(8, 1));
  // A special token written in the prompt maps to its id, not to BPE pieces.
  t = tok.encode("low<|endoftext|>low", -1, false);
  CHECK(t.ids == std::vector<int32_t>{bos, low, eos, low, eos});
  // Unknown pieces fall back to the unk token.
  CHECK(tok.encode_raw("z") == std::vector<int32_t>{eos});
}

TEST_CASE("Unicode tables classify like Python's unicodedata") {
  CHECK(unicode::is_letter(U'é'));
  CHECK(unicode::is_letter(U'中'));
  CHECK_FALSE(unicode::is_letter(U'1'));
  CHECK(unicode::is_number(U'٣'));  // Arabic-Indic digit three
  CHECK(unicode::is_number(U'½'));
  CHECK(unicode::is_python_space(U'\u3000'));
  CHECK(unicode::is_other(U'\u200b'));  // zero width space is a format character
  CHECK(unicode::to_lower(U'É') == U"é");
  CHECK(unicode::to_lower(U'Σ') == U"σ");
  CHECK(unicode::to_lower(U'\u0130') == U"i\u0307");
  CHECK(unicode::utf8_encode(unicode::utf8_decode("café ✓")) == "café ✓");
  CHECK(unicode::utf8_decode("\xff") == std::u32string(1, 0xFFFD));
}

TEST_CASE("token ids equal the reference CLIPTokenizer's for the same files") {
  SC_SKIP_WITHOUT_TORCH();
  const std::string model = tiny_model_dir();
  TempDir tmp;
  const auto tok = ClipTokenizer::load(model + "/tokenizer");
  const std::vector<std::string> prompts = {
      "a red circle",
      "A  Red\tCIRCLE in the TOP left!!",
      "a blue square in the bottom right on a yellow background",
      "it's a purple triangle, isn't it?",
      "3 circles and 12 squares... (maybe)",
      "café crème brûlée",
      "",
      "a green circle on a red background a green circle on a red background a green circle"};
  for (const auto& p : prompts) {
    CAPTURE(p);
    const auto ref = reference_json("tokenize --model " + model + " --prompt " + shell_quote(p), tmp);
    const TokenizedText t = tok.encode(p);
    CHECK(t.ids == ref["input_ids"].get<std::vector<int32_t>>());
    CHECK(t.mask == ref["attention_mask"].get<std::vector<int32_t>>());
  }
  const auto ref = reference_json("tokenize --model " + model + " --max-length 6 --prompt 'a red circle in the center'", tmp);
  CHECK(tok.encode("a red circle in the center", 6).ids == ref["input_ids"].get<std::vector<int32_t>>());
}

TEST_CASE("the text encoder matches the PyTorch CLIPTextModel on random weights") {
  SC_SKIP_WITHOUT_TORCH();
  const std::string model = tiny_model_dir();
  TempDir tmp;
  const auto tok = ClipTokenizer::load(model + "/tokenizer");
  const auto enc = ClipTextEncoder::load(model + "/text_encoder", DType::f32, Device::cpu());
  const TokenizedText a = tok.encode("a red circle in the top left"), b = tok.encode("");
  std::vector<float> ids, mask;
  for (const auto* t : {&a, &b}) {
    ids.insert(ids.end(), t->ids.begin(), t->ids.end());
    mask.insert(mask.end(), t->mask.begin(), t->mask.end());
  }
  const int64_t L = static_cast<int64_t>(a.ids.size());
  const Tensor ids_t = Tensor::from_vector(ids, {2, L}).to(DType::i64);
  const Tensor mask_t = Tensor::from_vector(mask, {2, L}).to(DType::i64);
  save_safetensors(tmp / "in.safetensors", {{"input_ids", ids_t}, {"attention_mask", mask_t}});
  reference_json("run --model " + model + " --component text_encoder --inputs " + (tmp / "in.safetensors") +
                     " --out " + (tmp / "out.safetensors"),
                 tmp);
  const Tensor ref = SafetensorsFile::open(tmp / "out.safetensors").get("last_hidden_state");
  const Tensor got = enc.forward(ids_t, &mask_t);
  REQUIRE(got.shape() == ref.shape());
  const double err = max_abs_diff(got, ref);
  MESSAGE("text encoder max abs error vs reference: " << err << " (max |ref| " << max_abs(ref) << ")");
  CHECK(err <= 1e-3);

  // Without a mask, real positions are unchanged: attention is causal and padding comes last.
  const Tensor nomask = enc.forward(ids_t, nullptr);
  for (const auto& [row, len] : {std::pair{0, a.length}, std::pair{1, b.length}}) {
    auto real = [&](const Tensor& t) { return t.select(0, row).slice(0, 0, len).contiguous(); };
    CHECK(max_abs_diff(real(nomask), real(got)) <= 1e-5);
  }
}

TEST_CASE("the text encoder refuses more tokens than it has positions") {
  SC_SKIP_WITHOUT_TORCH();
  const auto enc = ClipTextEncoder::load(tiny_model_dir() + "/text_encoder", DType::f32, Device::cpu());
  const Tensor ids = Tensor::zeros({1, enc.max_positions() + 1}, DType::i32);
  CHECK_THROWS_AS(enc.forward(ids, nullptr), Error);
}

// ---- hostile files (issue 10, finding 6); tests/data/untrusted/models/README.md ----

namespace {
std::string untrusted_model(const std::string& name) {
  return std::string(STAGECRAFT_SOURCE_DIR) + "/tests/data/untrusted/models/" + name;
}
bool has(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }
std::string clip_error(const std::string& dir) {
  return error_of([&] { ClipTextEncoder::load(dir, DType::f32, Device::cpu()); });
}
}  // namespace

TEST_CASE("CLIP config values of the wrong type or range are refused naming the file and key") {
  // Before the fix "1e-5" as layer_norm_eps escaped as a raw nlohmann type_error.
  std::string dir = untrusted_model("text_encoder_eps_string");
  CHECK(has(clip_error(dir), dir + "/config.json: \"layer_norm_eps\" must be a finite number, got \"1e-5\""));
  dir = untrusted_model("text_encoder_vocab_2pow32");
  CHECK(has(clip_error(dir), dir + "/config.json: \"vocab_size\" is 4294967296, out of range"));
}

TEST_CASE("a tokenizer vocabulary id past int32 is refused instead of wrapping onto another token") {
  TempDir tmp;
  const std::string dir = tmp / "tok";
  fs::create_directories(dir);
  std::ofstream(dir + "/vocab.json") << R"({"a</w>": 4294967296, "<|startoftext|>": 1, "<|endoftext|>": 2})";
  std::ofstream(dir + "/merges.txt") << "#version: 0.2\n";
  const std::string msg = error_of([&] { ClipTokenizer::load(dir); });
  CHECK(has(msg, "vocab.json: id of \"a</w>\" must be an integer from 0 to 2147483647, got 4294967296"));
}
