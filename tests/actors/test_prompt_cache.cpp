// The prompt-embedding LRU on its own: keys, hits, misses and eviction order.
#include <doctest/doctest.h>

#include "actors/prompt_cache.hpp"

using namespace stagecraft;
using stagecraft::actors::PromptCache;

namespace {
PromptCache::Entry entry(float v) { return {{"prompt_embeds", Tensor::from_vector({v}, {1})}}; }
Request prompt(const std::string& p, const std::string& neg = "", float guidance = 4.5f) {
  Request r;
  r.prompt = p;
  r.negative_prompt = neg;
  r.guidance = guidance;
  return r;
}
}  // namespace

TEST_CASE("the prompt cache key separates model, prompt, negative prompt and guidance on or off") {
  auto k = PromptCache::key_for("m", prompt("a"));
  CHECK(k == PromptCache::key_for("m", prompt("a")));
  CHECK(k != PromptCache::key_for("m2", prompt("a")));
  CHECK(k != PromptCache::key_for("m", prompt("a", "b")));
  CHECK(k != PromptCache::key_for("m", prompt("a", "", 1.0f)));
  CHECK(k == PromptCache::key_for("m", prompt("a", "", 7.0f)));  // any scale > 1 encodes the same
  CHECK(PromptCache::key_for("m", prompt("ab", "c")) != PromptCache::key_for("m", prompt("a", "bc")));
  CHECK(k != PromptCache::key_for("m", prompt("a", "", -1.0f)));  // unset guidance: the default decides
}

TEST_CASE("the prompt cache key separates image sizes, which the encoder's run() checks") {
  Request a = prompt("a"), b = prompt("a");
  a.width = a.height = 32;
  b.width = 36;
  b.height = 32;
  CHECK(PromptCache::key_for("m", a) != PromptCache::key_for("m", b));
  b.width = 32;
  CHECK(PromptCache::key_for("m", a) == PromptCache::key_for("m", b));
}

TEST_CASE("the prompt cache evicts the least recently used entry and counts hits and misses") {
  PromptCache cache(2);
  cache.put("a", entry(1));
  cache.put("b", entry(2));
  REQUIRE(cache.get("a"));  // a is now the most recent
  cache.put("c", entry(3));  // evicts b
  CHECK_FALSE(cache.get("b"));
  CHECK(cache.get("a")->at("prompt_embeds").item() == 1.0);
  CHECK(cache.get("c")->at("prompt_embeds").item() == 3.0);
  CHECK(cache.size() == 2);
  CHECK(cache.hits() == 3);
  CHECK(cache.misses() == 1);
}

TEST_CASE("a prompt cache of zero entries stores nothing") {
  PromptCache cache(0);
  cache.put("a", entry(1));
  CHECK_FALSE(cache.get("a"));
  CHECK(cache.size() == 0);
}
