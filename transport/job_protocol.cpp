#include "transport/job_protocol.hpp"

#include <cmath>

#include <msgpack.hpp>

#include "transport/msgpack_read.hpp"

namespace stagecraft::transport {

namespace {

using Packer = msgpack::packer<msgpack::sbuffer>;

const char* const kOps[] = {"submit", "cancel", "status", "health", "stats", "ping"};

/// Every key a client message may hold; anything else is refused so a typo is not silently ignored.
const char* const kSubmitKeys[] = {"v",     "op",     "id",        "pipeline",   "prompt",   "negative_prompt",
                                   "seed",  "steps",  "guidance",  "width",      "height",   "num_images",
                                   "scheduler", "priority", "deadline_ms", "output", "progress"};

std::string to_str(const msgpack::object& k) {
  return k.type == msgpack::type::STR ? std::string(k.via.str.ptr, std::min<uint32_t>(k.via.str.size, 64)) : "?";
}

void check_keys(const msgpack::object& map, Op op) {
  for (uint32_t i = 0; i < map.via.map.size; ++i) {
    const msgpack::object& k = map.via.map.ptr[i].key;
    if (k.type != msgpack::type::STR) throw ProtocolError("bad_request", "message keys must be strings");
    const std::string key = to_str(k);
    bool known = false;
    if (op == Op::submit) {
      for (const char* s : kSubmitKeys) known |= key == s;
    } else {
      known = key == "v" || key == "op" || key == "id";
    }
    if (!known)
      throw ProtocolError("bad_request", "unknown field '" + key + "' in a " + op_name(op) +
                                             " message (docs/protocol.md lists the fields)");
  }
}

std::string bounded_str(const MapReader& r, const char* key, size_t most) {
  std::string s = r.str(key);
  if (s.size() > most)
    throw ProtocolError("bad_request", std::string(key) + " is " + std::to_string(s.size()) + " bytes; at most " +
                                           std::to_string(most));
  return s;
}

void pack_str(Packer& pk, const char* key, const std::string& v) { pk.pack(key), pk.pack(v); }

std::string finish(const msgpack::sbuffer& buf) { return std::string(buf.data(), buf.size()); }

/// The map header plus `v` and `type`: every reply starts this way.
void begin_reply(Packer& pk, uint32_t fields, const char* type) {
  pk.pack_map(fields + 2);
  pk.pack("v"), pk.pack(kProtocolVersion);
  pk.pack("type"), pk.pack(type);
}

}  // namespace

const char* op_name(Op op) { return kOps[static_cast<int>(op)]; }

ClientMessage decode_client_message(const void* data, size_t size) {
  ClientMessage m;
  try {
    // Strings up to 4 MiB: a prompt is refused by length with a clear message by the validator,
    // not by a generic unpack limit.
    msgpack::object_handle oh = unpack_bounded(static_cast<const char*>(data), size, size_t(4) << 20);
    const msgpack::object& o = oh.get();
    if (o.type != msgpack::type::MAP) throw ProtocolError("bad_request", "a message must be a msgpack map");
    MapReader r(o, "message");
    if (r.has("v")) {
      const uint64_t v = r.u64("v");
      if (v != kProtocolVersion)
        throw ProtocolError("unsupported_version", "protocol version " + std::to_string(v) +
                                                       " is not served; this server speaks version " +
                                                       std::to_string(kProtocolVersion));
    }
    const std::string op = r.str("op");
    bool found = false;
    for (int i = 0; i < 6; ++i)
      if (op == kOps[i]) m.op = static_cast<Op>(i), found = true;
    if (!found)
      throw ProtocolError("unknown_op", "unknown op '" + op.substr(0, 64) +
                                            "'; one of: submit, cancel, status, health, stats, ping");
    check_keys(o, m.op);
    const bool needs_id = m.op == Op::submit || m.op == Op::cancel || m.op == Op::status;
    if (needs_id) {
      m.id = bounded_str(r, "id", kMaxJobIdBytes);
      if (m.id.empty()) throw ProtocolError("bad_request", "id must not be empty");
    }
    if (m.op != Op::submit) return m;

    SubmitFields& s = m.submit;
    auto opt_int = [&](const char* key) -> std::optional<int64_t> {
      if (!r.has(key) || r.at(key).is_nil()) return std::nullopt;
      return r.i64(key);
    };
    auto opt_str = [&](const char* key, size_t most) -> std::string {
      if (!r.has(key) || r.at(key).is_nil()) return {};
      return bounded_str(r, key, most);
    };
    s.pipeline = opt_str("pipeline", 256);
    s.prompt = r.str("prompt");
    s.negative_prompt = opt_str("negative_prompt", size_t(4) << 20);
    s.scheduler = opt_str("scheduler", 64);
    if (r.has("seed") && !r.at("seed").is_nil()) s.seed = r.u64("seed");
    s.steps = opt_int("steps");
    s.width = opt_int("width");
    s.height = opt_int("height");
    if (r.has("guidance") && !r.at("guidance").is_nil()) s.guidance = r.f64("guidance");
    if (auto n = opt_int("num_images")) s.num_images = *n;
    if (auto p = opt_int("priority")) s.priority = *p;
    s.deadline_ms = opt_int("deadline_ms");
    if (r.has("output")) s.output = bounded_str(r, "output", 16);
    if (r.has("progress")) s.progress = r.boolean("progress");
    if (s.output != "png" && s.output != "raw")
      throw ProtocolError("bad_request", "output is '" + s.output + "'; one of: png, raw");
    return m;
  } catch (const ProtocolError&) {
    throw;
  } catch (const std::exception& e) {
    throw ProtocolError("bad_request", e.what());
  }
}

std::string encode_client_message(const ClientMessage& m) {
  msgpack::sbuffer buf;
  Packer pk(buf);
  const SubmitFields& s = m.submit;
  const bool submit = m.op == Op::submit;
  const bool has_id = submit || m.op == Op::cancel || m.op == Op::status;
  uint32_t n = 2 + (has_id ? 1 : 0);
  if (submit) {
    n += 5;  // prompt, num_images, priority, output, progress
    n += !s.pipeline.empty() + !s.negative_prompt.empty() + !s.scheduler.empty() + s.seed.has_value() +
         s.steps.has_value() + s.width.has_value() + s.height.has_value() + s.guidance.has_value() +
         s.deadline_ms.has_value();
  }
  pk.pack_map(n);
  pk.pack("v"), pk.pack(kProtocolVersion);
  pk.pack("op"), pk.pack(op_name(m.op));
  if (has_id) pack_str(pk, "id", m.id);
  if (!submit) return finish(buf);
  pack_str(pk, "prompt", s.prompt);
  pk.pack("num_images"), pk.pack(s.num_images);
  pk.pack("priority"), pk.pack(s.priority);
  pack_str(pk, "output", s.output);
  pk.pack("progress"), pk.pack(s.progress);
  if (!s.pipeline.empty()) pack_str(pk, "pipeline", s.pipeline);
  if (!s.negative_prompt.empty()) pack_str(pk, "negative_prompt", s.negative_prompt);
  if (!s.scheduler.empty()) pack_str(pk, "scheduler", s.scheduler);
  if (s.seed) pk.pack("seed"), pk.pack(*s.seed);
  if (s.steps) pk.pack("steps"), pk.pack(*s.steps);
  if (s.width) pk.pack("width"), pk.pack(*s.width);
  if (s.height) pk.pack("height"), pk.pack(*s.height);
  if (s.guidance) pk.pack("guidance"), pk.pack(*s.guidance);
  if (s.deadline_ms) pk.pack("deadline_ms"), pk.pack(*s.deadline_ms);
  return finish(buf);
}

Request to_request(const SubmitFields& s, int index) {
  Request r;
  r.prompt = s.prompt;
  r.negative_prompt = s.negative_prompt;
  r.seed = s.seed.value_or(0) + uint64_t(index);
  // Out-of-int range values are clamped to a value the validator refuses with the field named,
  // never wrapped into a valid-looking one.
  auto narrow = [](int64_t v) { return int(std::clamp<int64_t>(v, INT32_MIN, INT32_MAX)); };
  r.steps = s.steps ? narrow(*s.steps) : 0;
  r.width = s.width ? narrow(*s.width) : 0;
  r.height = s.height ? narrow(*s.height) : 0;
  r.guidance = s.guidance ? float(*s.guidance) : -1.0f;
  if (s.guidance && !std::isfinite(float(*s.guidance))) r.guidance = std::numeric_limits<float>::quiet_NaN();
  r.scheduler = s.scheduler;
  r.priority = narrow(s.priority);
  return r;
}

// ---- replies ----

std::string encode_accepted(const std::string& id) {
  msgpack::sbuffer buf;
  Packer pk(buf);
  begin_reply(pk, 1, "accepted");
  pack_str(pk, "id", id);
  return finish(buf);
}

std::string encode_progress(const std::string& id, int64_t step, int64_t of, int64_t image) {
  msgpack::sbuffer buf;
  Packer pk(buf);
  begin_reply(pk, 4, "progress");
  pack_str(pk, "id", id);
  pk.pack("step"), pk.pack(step);
  pk.pack("of"), pk.pack(of);
  pk.pack("image"), pk.pack(image);
  return finish(buf);
}

std::string encode_result(const std::string& id, const std::string& format, const std::vector<ResultImage>& images,
                          const std::vector<StageTiming>& timings) {
  msgpack::sbuffer buf;
  Packer pk(buf);
  begin_reply(pk, 5, "result");
  pack_str(pk, "id", id);
  pack_str(pk, "format", format);
  pk.pack("seed"), pk.pack(images.empty() ? uint64_t(0) : images[0].seed);
  pk.pack("images"), pk.pack_array(static_cast<uint32_t>(images.size()));
  for (const auto& im : images) {
    pk.pack_map(5);
    pk.pack("data"), pk.pack_bin(static_cast<uint32_t>(im.data.size())), pk.pack_bin_body(im.data.data(), im.data.size());
    pk.pack("width"), pk.pack(im.width);
    pk.pack("height"), pk.pack(im.height);
    pk.pack("channels"), pk.pack(im.channels);
    pk.pack("seed"), pk.pack(im.seed);
  }
  pk.pack("timings"), pk.pack_map(static_cast<uint32_t>(timings.size()));
  for (const auto& t : timings) {
    pk.pack(t.stage);
    pk.pack_map(3);
    pk.pack("queue_s"), pk.pack(t.queue_s);
    pk.pack("compute_s"), pk.pack(t.compute_s);
    pk.pack("transfer_s"), pk.pack(t.transfer_s);
  }
  return finish(buf);
}

std::string encode_error(const std::string& id, const std::string& code, const std::string& message,
                         std::optional<int64_t> retry_after_ms) {
  msgpack::sbuffer buf;
  Packer pk(buf);
  begin_reply(pk, 3 + (retry_after_ms ? 1 : 0), "error");
  pack_str(pk, "id", id);
  pack_str(pk, "code", code);
  pack_str(pk, "message", message);
  if (retry_after_ms) pk.pack("retry_after_ms"), pk.pack(*retry_after_ms);
  return finish(buf);
}

std::string encode_status(const std::string& id, const std::string& state, int64_t step, int64_t of) {
  msgpack::sbuffer buf;
  Packer pk(buf);
  begin_reply(pk, 4, "status");
  pack_str(pk, "id", id);
  pack_str(pk, "state", state);
  pk.pack("step"), pk.pack(step);
  pk.pack("of"), pk.pack(of);
  return finish(buf);
}

std::string encode_info(const std::string& type, const nlohmann::json& fields) {
  nlohmann::json j = fields.is_object() ? fields : nlohmann::json::object();
  j["v"] = kProtocolVersion;
  j["type"] = type;
  const std::vector<uint8_t> bytes = nlohmann::json::to_msgpack(j);
  return std::string(bytes.begin(), bytes.end());
}

ServerReply decode_server_reply(const void* data, size_t size) {
  ServerReply rep;
  try {
    msgpack::object_handle oh = unpack_bounded(static_cast<const char*>(data), size, size_t(1) << 30);
    MapReader r(oh.get(), "reply");
    rep.type = r.str("type");
    if (r.has("id")) rep.id = r.str("id");
    if (rep.type == "progress") {
      rep.step = r.i64("step"), rep.of = r.i64("of"), rep.image = r.i64("image");
    } else if (rep.type == "result") {
      rep.format = r.str("format");
      const msgpack::object& ims = r.at("images");
      if (ims.type != msgpack::type::ARRAY) throw ProtocolError("bad_request", "reply.images must be an array");
      for (uint32_t i = 0; i < ims.via.array.size; ++i) {
        MapReader im(ims.via.array.ptr[i], "reply.images[" + std::to_string(i) + "]");
        const msgpack::object& d = im.at("data");
        if (d.type != msgpack::type::BIN) throw ProtocolError("bad_request", "image data must be binary");
        rep.images.push_back({std::string(d.via.bin.ptr, d.via.bin.size), im.i64("width"), im.i64("height"),
                              im.i64("channels"), im.u64("seed")});
      }
      const msgpack::object& tm = r.at("timings");
      if (tm.type != msgpack::type::MAP) throw ProtocolError("bad_request", "reply.timings must be a map");
      for (uint32_t i = 0; i < tm.via.map.size; ++i) {
        MapReader t(tm.via.map.ptr[i].val, "reply.timings");
        rep.timings.push_back({to_str(tm.via.map.ptr[i].key), t.f64("queue_s"), t.f64("compute_s"), t.f64("transfer_s")});
      }
    } else if (rep.type == "error") {
      rep.code = r.str("code");
      rep.message = r.str("message");
      if (r.has("retry_after_ms")) rep.retry_after_ms = r.i64("retry_after_ms");
    } else if (rep.type == "status") {
      rep.state = r.str("state");
      rep.step = r.i64("step"), rep.of = r.i64("of");
    } else if (rep.type == "health" || rep.type == "stats" || rep.type == "pong") {
      rep.fields = nlohmann::json::from_msgpack(static_cast<const uint8_t*>(data), static_cast<const uint8_t*>(data) + size);
    } else if (rep.type != "accepted") {
      throw ProtocolError("bad_request", "unknown reply type '" + rep.type.substr(0, 64) + "'");
    }
  } catch (const ProtocolError&) {
    throw;
  } catch (const std::exception& e) {
    throw ProtocolError("bad_request", e.what());
  }
  return rep;
}

}  // namespace stagecraft::transport
