#include "transport/control_message.hpp"

#include "transport/msgpack_read.hpp"
#include "transport/wire_format.hpp"

namespace stagecraft::transport {

zmq::message_t encode_control(const ControlMessage& m) {
  msgpack::sbuffer buf;
  msgpack::packer<msgpack::sbuffer> pk(buf);
  int n = 2;
  const bool hello = m.kind == "hello", welcome = m.kind == "welcome", refused = m.kind == "refused",
             credit = m.kind == "credit", rejected = m.kind == "rejected", pong = m.kind == "pong",
             note = m.kind == "note";
  n += hello ? 2 : welcome ? 2 : refused ? 2 : credit ? 1 : rejected ? 3 : pong ? 1 : note ? 8 : 0;
  pk.pack_map(n);
  pk.pack("kind"), pk.pack(m.kind);
  pk.pack("version"), pk.pack(kWireVersion);
  if (hello) pk.pack("node"), pk.pack(m.node), pk.pack("pipeline_hash"), pk.pack(m.pipeline_hash);
  if (welcome) pk.pack("node"), pk.pack(m.node), pk.pack("credits"), pk.pack(m.credits);
  if (refused) pk.pack("node"), pk.pack(m.node), pk.pack("reason"), pk.pack(m.reason);
  if (credit) pk.pack("n"), pk.pack(m.credits);
  if (rejected) pk.pack("job_id"), pk.pack(m.job_id), pk.pack("reason"), pk.pack(m.reason), pk.pack("credits"),
      pk.pack(m.credits);
  if (pong) pk.pack("known"), pk.pack(m.known);
  if (note) {
    pk.pack("what"), pk.pack(m.what);
    pk.pack("job_id"), pk.pack(m.job_id);
    pk.pack("node"), pk.pack(m.node);
    pk.pack("stage"), pk.pack(m.stage);
    pk.pack("step"), pk.pack(m.step);
    pk.pack("total"), pk.pack(m.total);
    pk.pack("code"), pk.pack(m.code);
    pk.pack("reason"), pk.pack(m.reason);
  }
  return zmq::message_t(buf.data(), buf.size());
}

ControlMessage decode_control(const zmq::message_t& frame) {
  if (frame.size() > kMaxHeaderBytes) throw MsgpackFieldError("first frame is larger than a header may be");
  msgpack::object_handle oh = unpack_bounded(frame.data<char>(), frame.size());
  MapReader r(oh.get(), "message");
  ControlMessage m;
  m.version = r.u64("version");
  m.kind = r.str("kind");
  if (m.version != kWireVersion) return m;  // the caller refuses it, naming both versions
  if (m.kind == "hello") {
    m.node = r.str("node");
    m.pipeline_hash = r.str("pipeline_hash");
  } else if (m.kind == "welcome") {
    m.node = r.str("node");
    m.credits = r.i64("credits");
  } else if (m.kind == "refused") {
    m.node = r.str("node");
    m.reason = r.str("reason");
  } else if (m.kind == "credit") {
    m.credits = r.i64("n");
  } else if (m.kind == "rejected") {
    m.job_id = r.u64("job_id");
    m.reason = r.str("reason");
    m.credits = r.i64("credits");
  } else if (m.kind == "ping") {
  } else if (m.kind == "pong") {
    m.known = r.boolean("known");
  } else if (m.kind == "note") {
    m.what = r.str("what");
    m.job_id = r.u64("job_id");
    m.node = r.str("node");
    m.stage = r.str("stage");
    m.step = r.i64("step");
    m.total = r.i64("total");
    m.code = r.str("code");
    m.reason = r.str("reason");
  } else if (m.kind == "packet") {
    if (r.has("job_id") && r.at("job_id").type == msgpack::type::POSITIVE_INTEGER) m.job_id = r.u64("job_id");
  } else {
    throw MsgpackFieldError("unknown message kind '" + m.kind.substr(0, 32) + "'");
  }
  return m;
}

}  // namespace stagecraft::transport
