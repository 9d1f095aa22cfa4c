// The job protocol codec: what a client sends comes out as it went in, and every
// malformed message is refused with a code and a message naming the field.
#include <doctest/doctest.h>

#include <cmath>

#include <msgpack.hpp>

#include "transport/job_protocol.hpp"

using namespace stagecraft;
using namespace stagecraft::transport;

namespace {

ClientMessage round_trip(const ClientMessage& m) {
  const std::string bytes = encode_client_message(m);
  return decode_client_message(bytes.data(), bytes.size());
}

/// Packs a map of the given key/value pairs, written by hand like a careless client would.
template <typename... KV>
std::string hand_made(KV... kv) {
  msgpack::sbuffer buf;
  msgpack::packer<msgpack::sbuffer> pk(buf);
  pk.pack_map(sizeof...(kv) / 2);
  (pk.pack(kv), ...);
  return std::string(buf.data(), buf.size());
}

ProtocolError refusal(const std::string& bytes) {
  try {
    decode_client_message(bytes.data(), bytes.size());
  } catch (const ProtocolError& e) {
    return e;
  }
  FAIL("the message was accepted");
  return ProtocolError("", "");
}

}  // namespace

TEST_CASE("a submit with every field survives encode and decode") {
  ClientMessage m;
  m.op = Op::submit;
  m.id = "job-1";
  SubmitFields& s = m.submit;
  s.pipeline = "tiny-shapes";
  s.prompt = "a red circle";
  s.negative_prompt = "blurry";
  s.scheduler = "ddim";
  s.seed = 7;
  s.steps = 12;
  s.width = 32;
  s.height = 64;
  s.guidance = 3.5;
  s.num_images = 3;
  s.priority = 2;
  s.deadline_ms = 1500;
  s.output = "raw";
  s.progress = true;
  const ClientMessage d = round_trip(m);
  CHECK(d.op == Op::submit);
  CHECK(d.id == "job-1");
  CHECK(d.submit == s);
}

TEST_CASE("a submit with only a prompt leaves every other field to the pipeline's defaults") {
  const ClientMessage d = decode_client_message(hand_made("op", "submit", "id", "a", "prompt", "x").data(),
                                                hand_made("op", "submit", "id", "a", "prompt", "x").size());
  CHECK_FALSE(d.submit.steps.has_value());
  CHECK_FALSE(d.submit.seed.has_value());
  CHECK(d.submit.num_images == 1);
  CHECK(d.submit.output == "png");
  const Request r = to_request(d.submit, 0);
  CHECK(r.steps == 0);
  CHECK(r.guidance < 0);
  CHECK(r.width == 0);
}

TEST_CASE("image i of a submit gets seed + i") {
  SubmitFields s;
  s.seed = 100;
  CHECK(to_request(s, 0).seed == 100);
  CHECK(to_request(s, 3).seed == 103);
}

TEST_CASE("values out of int range are clamped, never wrapped into valid-looking ones") {
  SubmitFields s;
  s.steps = int64_t(1) << 40;
  s.width = -(int64_t(1) << 40);
  CHECK(to_request(s, 0).steps == INT32_MAX);
  CHECK(to_request(s, 0).width == INT32_MIN);
  s.guidance = std::nan("");
  CHECK(std::isnan(to_request(s, 0).guidance));
}

TEST_CASE("cancel, status, health, stats and ping decode with their ids") {
  for (Op op : {Op::cancel, Op::status}) {
    ClientMessage m;
    m.op = op;
    m.id = "j";
    CHECK(round_trip(m).op == op);
    CHECK(round_trip(m).id == "j");
  }
  for (Op op : {Op::health, Op::stats, Op::ping}) {
    ClientMessage m;
    m.op = op;
    CHECK(round_trip(m).op == op);
  }
}

TEST_CASE("malformed messages are refused with a code and the field named") {
  CHECK(refusal("\xc1garbage").code == "bad_request");
  CHECK(refusal(hand_made("op", 5)).code == "bad_request");
  const ProtocolError unknown = refusal(hand_made("op", "explode"));
  CHECK(unknown.code == "unknown_op");
  CHECK(std::string(unknown.what()).find("submit, cancel") != std::string::npos);
  CHECK(refusal(hand_made("v", 9, "op", "ping")).code == "unsupported_version");
  const ProtocolError no_prompt = refusal(hand_made("op", "submit", "id", "a"));
  CHECK(std::string(no_prompt.what()).find("message.prompt is missing") != std::string::npos);
  const ProtocolError steps_str = refusal(hand_made("op", "submit", "id", "a", "prompt", "x", "steps", "20"));
  CHECK(std::string(steps_str.what()).find("message.steps must be an integer") != std::string::npos);
  const ProtocolError typo = refusal(hand_made("op", "submit", "id", "a", "prompt", "x", "stpes", 20));
  CHECK(std::string(typo.what()).find("unknown field 'stpes'") != std::string::npos);
  CHECK(refusal(hand_made("op", "submit", "id", "", "prompt", "x")).code == "bad_request");
  CHECK(refusal(hand_made("op", "submit", "id", std::string(200, 'i'), "prompt", "x")).code == "bad_request");
  CHECK(refusal(hand_made("op", "submit", "id", "a", "prompt", "x", "output", "jpeg")).code == "bad_request");
  CHECK(refusal(hand_made("op", "cancel")).code == "bad_request");
  CHECK(refusal(std::string()).code == "bad_request");
}

TEST_CASE("replies decode as the client will read them") {
  ServerReply a = [] {
    const std::string b = encode_error("j", "overloaded", "queue full", 250);
    return decode_server_reply(b.data(), b.size());
  }();
  CHECK(a.type == "error");
  CHECK(a.code == "overloaded");
  CHECK(a.retry_after_ms == 250);
  ResultImage im{"\x89PNG", 32, 32, 3, 9};
  const std::string rb = encode_result("j", "png", {im}, {{"denoise", 0.5, 1.5, 0.0}});
  const ServerReply r = decode_server_reply(rb.data(), rb.size());
  CHECK(r.type == "result");
  REQUIRE(r.images.size() == 1);
  CHECK(r.images[0].data == "\x89PNG");
  CHECK(r.images[0].seed == 9);
  REQUIRE(r.timings.size() == 1);
  CHECK(r.timings[0].stage == "denoise");
  CHECK(r.timings[0].compute_s == 1.5);
  const std::string hb = encode_info("health", {{"status", "ok"}, {"pending", 3}});
  const ServerReply h = decode_server_reply(hb.data(), hb.size());
  CHECK(h.type == "health");
  CHECK(h.fields["pending"] == 3);
  const std::string pb = encode_progress("j", 4, 20, 1);
  const ServerReply p = decode_server_reply(pb.data(), pb.size());
  CHECK(p.step == 4);
  CHECK(p.of == 20);
  CHECK(p.image == 1);
}
