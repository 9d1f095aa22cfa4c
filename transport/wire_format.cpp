#include "transport/wire_format.hpp"

#include <cmath>
#include <cstring>
#include <limits>
#include <memory>

#include <msgpack.hpp>

#include "transport/msgpack_read.hpp"

namespace stagecraft::transport {

namespace {

/// The name the request's initial latents travel under (a tensor frame like any other).
const char* const kInitialLatents = "@initial_latents";

[[noreturn]] void refuse(WireCounters& counters, WireRefusal reason, const std::string& message) {
  counters.refused[static_cast<int>(reason)].fetch_add(1);
  throw WireError(reason, std::string("wire format: ") + message);
}

/// A CPU tensor laid out as its frame will be: contiguous, starting at data().
Tensor wire_layout(const Tensor& t, const std::string& name) {
  SC_CHECK(t.defined(), Errc::invalid_argument, "wire format: tensor '" << name << "' is undefined");
  SC_CHECK(t.device().is_cpu(), Errc::unsupported,
           "wire format: tensor '" << name << "' is on " << t.device().str()
                                   << "; stage GPU tensors to host memory before a ZeroMQ send");
  return t.is_contiguous() ? t : t.contiguous();
}

void free_storage_ref(void* /*data*/, void* hint) { delete static_cast<std::shared_ptr<Storage>*>(hint); }

/// A frame over the tensor's bytes that holds a reference to its storage until ZeroMQ is done.
zmq::message_t tensor_frame(const Tensor& t) {
  if (t.nbytes() == 0) return zmq::message_t();
  auto* keep = new std::shared_ptr<Storage>(t.storage());
  return zmq::message_t(t.data(), t.nbytes(), free_storage_ref, keep);
}

void pack_tensor_entry(msgpack::packer<msgpack::sbuffer>& pk, const std::string& name, const Tensor& t) {
  pk.pack_map(4);
  pk.pack("name"), pk.pack(name);
  pk.pack("dtype"), pk.pack(std::string(dtype_name(t.dtype())));
  pk.pack("shape"), pk.pack_array(static_cast<uint32_t>(t.ndim()));
  for (int64_t d : t.shape()) pk.pack(d);
  pk.pack("bytes"), pk.pack(static_cast<uint64_t>(t.nbytes()));
}

struct TensorEntry {
  std::string name;
  DType dtype = DType::f32;
  Shape shape;
  uint64_t bytes = 0;
};

DType parse_wire_dtype(const std::string& name, WireCounters& counters) {
  for (DType t : {DType::f32, DType::f16, DType::bf16, DType::i8, DType::u8, DType::i32, DType::i64, DType::f8_e4m3})
    if (name == dtype_name(t)) return t;
  refuse(counters, WireRefusal::dtype,
         "unknown dtype '" + name.substr(0, 32) + "' (known: f32, f16, bf16, i8, u8, i32, i64, f8_e4m3)");
}

TensorEntry read_tensor_entry(const msgpack::object& o, size_t index, WireCounters& counters) {
  const std::string where = "tensors[" + std::to_string(index) + "]";
  MapReader m(o, where);
  TensorEntry e;
  e.name = m.str("name");
  e.dtype = parse_wire_dtype(m.str("dtype"), counters);
  e.bytes = m.u64("bytes");
  const msgpack::object& shape = m.at("shape");
  if (shape.type != msgpack::type::ARRAY) throw MsgpackFieldError(where + ".shape must be an array of integers");
  if (shape.via.array.size > kMaxDims)
    refuse(counters, WireRefusal::shape,
           where + " ('" + e.name + "') has " + std::to_string(shape.via.array.size) + " dimensions; at most " +
               std::to_string(kMaxDims));
  // numel * element size, checked for overflow at every factor.
  uint64_t total = dtype_size(e.dtype);
  for (uint32_t i = 0; i < shape.via.array.size; ++i) {
    const msgpack::object& d = shape.via.array.ptr[i];
    int64_t v = 0;
    if (d.type == msgpack::type::POSITIVE_INTEGER && d.via.u64 <= uint64_t(std::numeric_limits<int64_t>::max()))
      v = static_cast<int64_t>(d.via.u64);
    else if (d.type == msgpack::type::NEGATIVE_INTEGER || d.type == msgpack::type::POSITIVE_INTEGER)
      refuse(counters, WireRefusal::shape, where + " ('" + e.name + "') has a negative or huge dimension");
    else
      throw MsgpackFieldError(where + ".shape must be an array of integers");
    if (v != 0 && total > std::numeric_limits<uint64_t>::max() / uint64_t(v))
      refuse(counters, WireRefusal::shape,
             where + " ('" + e.name + "') shape's byte size overflows 64 bits");
    total *= uint64_t(v);
    e.shape.push_back(v);
  }
  if (total != e.bytes)
    refuse(counters, WireRefusal::length,
           where + " ('" + e.name + "') says " + std::to_string(e.bytes) + " bytes but " + dtype_name(e.dtype) +
               shape_str(e.shape) + " needs " + std::to_string(total));
  return e;
}

/// A tensor over the frame's bytes, owning the frame; copied once if misaligned.
Tensor adopt_frame(zmq::message_t&& frame, const TensorEntry& e, WireCounters& counters) {
  if (e.bytes == 0) return Tensor::empty(e.shape, e.dtype);
  auto msg = std::make_shared<zmq::message_t>(std::move(frame));
  void* data = msg->data();
  const size_t align = std::max<size_t>(dtype_size(e.dtype), 1);
  if (reinterpret_cast<uintptr_t>(data) % align != 0) {
    counters.realigned.fetch_add(1);
    Tensor t = Tensor::empty(e.shape, e.dtype);
    std::memcpy(t.data(), data, e.bytes);
    return t;
  }
  return Tensor::from_blob(data, e.shape, e.dtype, Device::cpu(), std::move(msg));
}

}  // namespace

const char* wire_refusal_name(WireRefusal r) {
  switch (r) {
    case WireRefusal::version: return "version";
    case WireRefusal::header: return "header";
    case WireRefusal::frame_count: return "frame_count";
    case WireRefusal::length: return "length";
    case WireRefusal::dtype: return "dtype";
    case WireRefusal::shape: return "shape";
  }
  return "?";
}

uint64_t WireCounters::refused_total() const {
  uint64_t n = 0;
  for (const auto& c : refused) n += c.load();
  return n;
}

size_t wire_tensor_bytes(const Packet& packet) {
  size_t n = 0;
  for (const auto& [name, t] : packet.tensors) n += t.nbytes();
  if (packet.request.initial_latents.defined()) n += packet.request.initial_latents.nbytes();
  return n;
}

std::vector<zmq::message_t> encode_packet(const Packet& packet) {
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (const auto& [name, t] : packet.tensors) tensors.emplace_back(name, wire_layout(t, name));
  if (packet.request.initial_latents.defined())
    tensors.emplace_back(kInitialLatents, wire_layout(packet.request.initial_latents, kInitialLatents));
  SC_CHECK(tensors.size() <= kMaxWireTensors, Errc::invalid_argument,
           "wire format: a packet carries at most " << kMaxWireTensors << " tensors, job " << packet.job_id
                                                    << " has " << tensors.size());

  const Request& r = packet.request;
  msgpack::sbuffer buf;
  msgpack::packer<msgpack::sbuffer> pk(buf);
  pk.pack_map(r.deadline ? 17 : 16);
  pk.pack("kind"), pk.pack("packet");
  pk.pack("version"), pk.pack(kWireVersion);
  pk.pack("job_id"), pk.pack(packet.job_id);
  pk.pack("step"), pk.pack(packet.step);
  pk.pack("total_steps"), pk.pack(packet.total_steps);
  pk.pack("route"), pk.pack(packet.route);
  pk.pack("prompt"), pk.pack(r.prompt);
  pk.pack("negative_prompt"), pk.pack(r.negative_prompt);
  pk.pack("seed"), pk.pack(r.seed);
  pk.pack("steps"), pk.pack(r.steps);
  pk.pack("guidance"), pk.pack(r.guidance);
  pk.pack("width"), pk.pack(r.width);
  pk.pack("height"), pk.pack(r.height);
  pk.pack("scheduler"), pk.pack(r.scheduler);
  pk.pack("priority"), pk.pack(r.priority);
  if (r.deadline) {
    // Steady clocks of two processes share no epoch: the deadline travels as time left.
    const auto left = std::chrono::duration_cast<std::chrono::microseconds>(*r.deadline - Clock::now());
    pk.pack("deadline_in_us"), pk.pack(static_cast<int64_t>(left.count()));
  }
  pk.pack("tensors"), pk.pack_array(static_cast<uint32_t>(tensors.size()));
  for (const auto& [name, t] : tensors) pack_tensor_entry(pk, name, t);

  std::vector<zmq::message_t> frames;
  frames.reserve(1 + tensors.size());
  frames.emplace_back(buf.data(), buf.size());
  for (const auto& [name, t] : tensors) frames.push_back(tensor_frame(t));
  return frames;
}

PacketPtr decode_packet(std::vector<zmq::message_t>& frames, WireCounters& counters) {
  if (frames.empty()) refuse(counters, WireRefusal::frame_count, "empty message: no header frame");
  const zmq::message_t& head = frames[0];
  if (head.size() > kMaxHeaderBytes)
    refuse(counters, WireRefusal::header,
           "header frame of " + std::to_string(head.size()) + " bytes; at most " + std::to_string(kMaxHeaderBytes));

  auto p = std::make_shared<Packet>();
  std::vector<TensorEntry> entries;
  try {
    msgpack::object_handle oh = unpack_bounded(head.data<char>(), head.size());
    MapReader m(oh.get(), "header");
    // The version first, so a peer of another version hears that rather than a field complaint.
    const uint64_t version = m.u64("version");
    if (version != kWireVersion)
      refuse(counters, WireRefusal::version,
             "header is format version " + std::to_string(version) + ", this build speaks version " +
                 std::to_string(kWireVersion) + "; run the same Stagecraft version on every node");
    const std::string kind = m.str("kind");
    if (kind != "packet") throw MsgpackFieldError("header.kind is '" + kind.substr(0, 32) + "', expected 'packet'");
    p->job_id = m.u64("job_id");
    p->step = m.i32("step");
    p->total_steps = m.i32("total_steps");
    if (m.has("route")) p->route = m.str("route");
    Request& r = p->request;
    r.prompt = m.str("prompt");
    r.negative_prompt = m.str("negative_prompt");
    r.seed = m.u64("seed");
    r.steps = m.i32("steps");
    r.guidance = static_cast<float>(m.f64("guidance"));
    r.width = m.i32("width");
    r.height = m.i32("height");
    r.scheduler = m.str("scheduler");
    r.priority = m.i32("priority");
    if (m.has("deadline_in_us")) r.deadline = Clock::now() + std::chrono::microseconds(m.i64("deadline_in_us"));
    const msgpack::object& list = m.at("tensors");
    if (list.type != msgpack::type::ARRAY) throw MsgpackFieldError("header.tensors must be an array");
    if (list.via.array.size > kMaxWireTensors)
      refuse(counters, WireRefusal::header,
             "header lists " + std::to_string(list.via.array.size) + " tensors; at most " +
                 std::to_string(kMaxWireTensors));
    for (uint32_t i = 0; i < list.via.array.size; ++i)
      entries.push_back(read_tensor_entry(list.via.array.ptr[i], i, counters));
  } catch (const WireError&) {
    throw;
  } catch (const std::exception& e) {
    refuse(counters, WireRefusal::header, e.what());
  }

  if (frames.size() != entries.size() + 1)
    refuse(counters, WireRefusal::frame_count,
           "header lists " + std::to_string(entries.size()) + " tensors but " + std::to_string(frames.size() - 1) +
               " tensor frames arrived" + (frames.size() < entries.size() + 1 ? " (a frame is missing)" : ""));
  for (size_t i = 0; i < entries.size(); ++i)
    if (frames[i + 1].size() != entries[i].bytes)
      refuse(counters, WireRefusal::length,
             "tensor '" + entries[i].name + "' should be " + std::to_string(entries[i].bytes) +
                 " bytes but its frame has " + std::to_string(frames[i + 1].size()));

  for (size_t i = 0; i < entries.size(); ++i) {
    Tensor t = adopt_frame(std::move(frames[i + 1]), entries[i], counters);
    if (entries[i].name == kInitialLatents)
      p->request.initial_latents = std::move(t);
    else
      p->tensors[entries[i].name] = std::move(t);
  }
  counters.decoded.fetch_add(1);
  return p;
}

}  // namespace stagecraft::transport
