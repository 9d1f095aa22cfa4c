// The wire format: round trips without copies, and every malformed message refused
// with a message that names what is wrong and counted under its reason.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <cstring>
#include <limits>

#include <msgpack.hpp>

#include "transport/wire_format.hpp"

using namespace stagecraft;
using namespace stagecraft::transport;

namespace {

PacketPtr sample_packet() {
  auto p = std::make_shared<Packet>();
  p->job_id = 42;
  p->step = 3;
  p->total_steps = 20;
  p->request.prompt = "a red circle";
  p->request.negative_prompt = "blurry";
  p->request.seed = 7;
  p->request.steps = 20;
  p->request.guidance = 4.5f;
  p->request.width = 32;
  p->request.height = 48;
  p->request.scheduler = "ddim";
  p->request.priority = -2;
  Tensor lat = Tensor::empty({1, 4, 6, 4}, DType::f32);
  for (int64_t i = 0; i < lat.numel(); ++i) lat.data_as<float>()[i] = float(i) * 0.5f;
  p->tensors["latents"] = lat;
  Tensor ids = Tensor::empty({1, 3}, DType::i64);
  ids.data_as<int64_t>()[0] = 49406, ids.data_as<int64_t>()[1] = 320, ids.data_as<int64_t>()[2] = 49407;
  p->tensors["token_ids"] = ids;
  return p;
}

/// Copies frames the way a socket would hand them over (fresh messages, fresh memory).
std::vector<zmq::message_t> as_received(const std::vector<zmq::message_t>& sent) {
  std::vector<zmq::message_t> out;
  for (const auto& f : sent) out.emplace_back(f.data(), f.size());
  return out;
}

/// A header map written by hand, for the refusals a correct encoder never produces.
zmq::message_t header(uint64_t version, const std::string& dtype, std::vector<int64_t> shape, uint64_t bytes) {
  msgpack::sbuffer buf;
  msgpack::packer<msgpack::sbuffer> pk(buf);
  pk.pack_map(15);
  pk.pack("kind"), pk.pack("packet");
  pk.pack("version"), pk.pack(version);
  pk.pack("job_id"), pk.pack(uint64_t(9));
  pk.pack("step"), pk.pack(0);
  pk.pack("total_steps"), pk.pack(0);
  pk.pack("prompt"), pk.pack("x");
  pk.pack("negative_prompt"), pk.pack("");
  pk.pack("seed"), pk.pack(uint64_t(1));
  pk.pack("steps"), pk.pack(20);
  pk.pack("guidance"), pk.pack(4.5);
  pk.pack("width"), pk.pack(32);
  pk.pack("height"), pk.pack(32);
  pk.pack("scheduler"), pk.pack("");
  pk.pack("priority"), pk.pack(0);
  pk.pack("tensors"), pk.pack_array(1);
  pk.pack_map(4);
  pk.pack("name"), pk.pack("latents");
  pk.pack("dtype"), pk.pack(dtype);
  pk.pack("shape"), pk.pack(shape);
  pk.pack("bytes"), pk.pack(bytes);
  return zmq::message_t(buf.data(), buf.size());
}

std::vector<zmq::message_t> message(zmq::message_t head, std::vector<size_t> frame_sizes) {
  std::vector<zmq::message_t> m;
  m.push_back(std::move(head));
  for (size_t n : frame_sizes) m.emplace_back(n);
  return m;
}

WireRefusal refusal_of(std::vector<zmq::message_t> frames, WireCounters& counters, std::string* what = nullptr) {
  try {
    decode_packet(frames, counters);
  } catch (const WireError& e) {
    if (what) *what = e.what();
    return e.reason;
  }
  FAIL("the message was accepted");
  return WireRefusal::header;
}

}  // namespace

TEST_CASE("a packet survives encode and decode with its request fields and tensor bytes") {
  PacketPtr p = sample_packet();
  p->request.deadline = Clock::now() + std::chrono::seconds(5);
  auto frames = as_received(encode_packet(*p));
  REQUIRE(frames.size() == 3);  // header + latents + token_ids
  WireCounters counters;
  PacketPtr q = decode_packet(frames, counters);
  CHECK(q->job_id == 42);
  CHECK(q->step == 3);
  CHECK(q->total_steps == 20);
  CHECK(q->request.prompt == "a red circle");
  CHECK(q->request.negative_prompt == "blurry");
  CHECK(q->request.seed == 7);
  CHECK(q->request.guidance == 4.5f);
  CHECK(q->request.width == 32);
  CHECK(q->request.height == 48);
  CHECK(q->request.scheduler == "ddim");
  CHECK(q->request.priority == -2);
  REQUIRE(q->request.deadline.has_value());
  const auto left = *q->request.deadline - Clock::now();
  CHECK(left > std::chrono::seconds(4));
  CHECK(left <= std::chrono::seconds(5));
  const Tensor& lat = q->tensor("latents");
  CHECK(lat.dtype() == DType::f32);
  CHECK(lat.shape() == Shape{1, 4, 6, 4});
  CHECK(std::memcmp(lat.data(), p->tensor("latents").data(), lat.nbytes()) == 0);
  CHECK(q->tensor("token_ids").data_as<int64_t>()[2] == 49407);
  CHECK(counters.decoded == 1);
  CHECK(counters.refused_total() == 0);
}

TEST_CASE("sending copies no tensor bytes and keeps the tensor's storage alive until the frame is freed") {
  PacketPtr p = sample_packet();
  const void* data = p->tensor("latents").data();
  std::weak_ptr<Storage> storage = p->tensor("latents").storage();
  auto frames = encode_packet(*p);
  p.reset();  // the packet is gone; the frame must still hold the bytes
  REQUIRE_FALSE(storage.expired());
  // Frames are in tensor-name order: latents before token_ids.
  CHECK(frames[1].data() == data);
  frames.clear();
  CHECK(storage.expired());
}

TEST_CASE("receiving copies no tensor bytes: a decoded tensor wraps the frame it came in") {
  PacketPtr p = sample_packet();
  auto frames = as_received(encode_packet(*p));
  const void* frame_bytes = frames[1].data();
  WireCounters counters;
  PacketPtr q = decode_packet(frames, counters);
  if (counters.realigned == 0) CHECK(q->tensor("latents").data() == frame_bytes);
  CHECK(q->tensor("latents").item(5) == doctest::Approx(2.5));
}

TEST_CASE("a frame whose bytes are misaligned for its dtype is copied once into aligned memory") {
  PacketPtr p = sample_packet();
  p->tensors.erase("token_ids");
  auto sent = encode_packet(*p);
  // Place the tensor bytes one byte into a buffer, as ZeroMQ may inside its receive buffer.
  std::vector<char> backing(sent[1].size() + 1);
  std::memcpy(backing.data() + 1, sent[1].data(), sent[1].size());
  std::vector<zmq::message_t> frames;
  frames.emplace_back(sent[0].data(), sent[0].size());
  frames.emplace_back(backing.data() + 1, sent[1].size(), nullptr, nullptr);
  WireCounters counters;
  PacketPtr q = decode_packet(frames, counters);
  CHECK(counters.realigned == 1);
  CHECK(reinterpret_cast<uintptr_t>(q->tensor("latents").data()) % sizeof(float) == 0);
  CHECK(q->tensor("latents").item(7) == doctest::Approx(3.5));
}

TEST_CASE("a non-contiguous tensor travels as its contiguous copy") {
  auto p = std::make_shared<Packet>();
  Tensor m = Tensor::from_vector({1, 2, 3, 4, 5, 6}, {2, 3});
  p->tensors["t"] = m.transpose(0, 1);  // [[1,4],[2,5],[3,6]]
  auto frames = as_received(encode_packet(*p));
  WireCounters counters;
  PacketPtr q = decode_packet(frames, counters);
  CHECK(q->tensor("t").shape() == Shape{3, 2});
  CHECK(q->tensor("t").to_vector() == std::vector<float>{1, 4, 2, 5, 3, 6});
}

TEST_CASE("the request's initial latents travel with the packet") {
  PacketPtr p = sample_packet();
  p->request.initial_latents = Tensor::from_vector({0.25f, -1.0f}, {1, 2});
  auto frames = as_received(encode_packet(*p));
  WireCounters counters;
  PacketPtr q = decode_packet(frames, counters);
  REQUIRE(q->request.initial_latents.defined());
  CHECK(q->request.initial_latents.to_vector() == std::vector<float>{0.25f, -1.0f});
  CHECK(q->tensors.count("@initial_latents") == 0);
}

TEST_CASE("a header of another format version is refused naming both versions") {
  WireCounters counters;
  std::string what;
  CHECK(refusal_of(message(header(2, "f32", {2}, 8), {8}), counters, &what) == WireRefusal::version);
  CHECK(what.find("version 2") != std::string::npos);
  CHECK(what.find("version 1") != std::string::npos);
  CHECK(counters.refused_for(WireRefusal::version) == 1);
}

TEST_CASE("a frame whose length differs from its header entry is refused as length") {
  WireCounters counters;
  std::string what;
  CHECK(refusal_of(message(header(kWireVersion, "f32", {4}, 16), {12}), counters, &what) == WireRefusal::length);
  CHECK(what.find("'latents' should be 16 bytes but its frame has 12") != std::string::npos);
  // A byte count that disagrees with dtype x shape is refused before any frame is looked at.
  CHECK(refusal_of(message(header(kWireVersion, "f32", {4}, 15), {15}), counters) == WireRefusal::length);
  CHECK(counters.refused_for(WireRefusal::length) == 2);
}

TEST_CASE("an unknown dtype is refused naming the known ones") {
  WireCounters counters;
  std::string what;
  CHECK(refusal_of(message(header(kWireVersion, "f128", {2}, 32), {32}), counters, &what) == WireRefusal::dtype);
  CHECK(what.find("unknown dtype 'f128'") != std::string::npos);
  CHECK(what.find("bf16") != std::string::npos);
}

TEST_CASE("a shape whose byte size overflows 64 bits is refused") {
  WireCounters counters;
  const int64_t huge = int64_t(1) << 62;
  CHECK(refusal_of(message(header(kWireVersion, "f32", {huge}, 0), {0}), counters) == WireRefusal::shape);
  CHECK(refusal_of(message(header(kWireVersion, "f16", {huge, 2}, 0), {0}), counters) == WireRefusal::shape);
  CHECK(refusal_of(message(header(kWireVersion, "f32", {-3}, 0), {0}), counters) == WireRefusal::shape);
  CHECK(refusal_of(message(header(kWireVersion, "u8", {1, 1, 1, 1, 1, 1, 1, 1, 1}, 1), {1}), counters) ==
        WireRefusal::shape);
  CHECK(counters.refused_for(WireRefusal::shape) == 4);
}

TEST_CASE("a missing or extra tensor frame is refused as frame_count") {
  WireCounters counters;
  std::string what;
  CHECK(refusal_of(message(header(kWireVersion, "f32", {2}, 8), {}), counters, &what) == WireRefusal::frame_count);
  CHECK(what.find("a frame is missing") != std::string::npos);
  CHECK(refusal_of(message(header(kWireVersion, "f32", {2}, 8), {8, 8}), counters) == WireRefusal::frame_count);
  std::vector<zmq::message_t> none;
  CHECK(refusal_of(std::move(none), counters) == WireRefusal::frame_count);
}

TEST_CASE("a header that is not a msgpack map of the documented fields is refused as header") {
  WireCounters counters;
  std::string what;
  const char junk[] = "\xc1\xff\x00garbage";
  CHECK(refusal_of(message(zmq::message_t(junk, sizeof junk), {}), counters) == WireRefusal::header);
  // Valid msgpack, wrong type for a field: the message names the field.
  msgpack::sbuffer buf;
  msgpack::packer<msgpack::sbuffer> pk(buf);
  pk.pack_map(3);
  pk.pack("kind"), pk.pack("packet");
  pk.pack("version"), pk.pack(kWireVersion);
  pk.pack("job_id"), pk.pack("not a number");
  CHECK(refusal_of(message(zmq::message_t(buf.data(), buf.size()), {}), counters, &what) == WireRefusal::header);
  CHECK(what.find("header.job_id must be an unsigned integer") != std::string::npos);
  // Trailing bytes after the map are refused too.
  auto good = encode_packet(*sample_packet());
  std::string padded(good[0].data<char>(), good[0].size());
  padded += "xx";
  CHECK(refusal_of(message(zmq::message_t(padded.data(), padded.size()), {}), counters) == WireRefusal::header);
  CHECK(counters.refused_for(WireRefusal::header) == 3);
}
