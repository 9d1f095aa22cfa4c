#pragma once
// The wire format of a packet between processes (docs/wire-format.md): one
// ZeroMQ multipart message made of a msgpack header frame followed by one raw
// frame per tensor, in the order the header lists them.
//
//   std::vector<zmq::message_t> frames = encode_packet(packet);  // no tensor bytes copied
//   ... send the frames with ZMQ_SNDMORE on all but the last ...
//   WireCounters counters;
//   PacketPtr p = decode_packet(received_frames, counters);      // tensors wrap the frames
//
// Sending copies no tensor bytes: each tensor frame points into the tensor's
// storage and holds a reference to it until ZeroMQ lets go of the frame (its
// free function runs on ZeroMQ's I/O thread). Receiving copies none either: a
// tensor wraps the ZeroMQ message that carried it. The one exception is a frame
// whose bytes are not aligned to its element size (ZeroMQ may place a frame
// anywhere in its receive buffer): it is copied once into aligned memory,
// because every kernel assumes aligned elements, and counted as `realigned`.
//
// Anything malformed is refused with Error(parse) naming what is wrong, and
// counted by reason: a header of another version, a length that does not match
// its frame, an unknown dtype, a shape whose bytes overflow, a missing frame.
#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include <zmq.hpp>

#include "core/error.hpp"
#include "core/packet.hpp"

namespace stagecraft::transport {

/// Bumped whenever the header's meaning changes; a peer of another version is refused.
constexpr uint32_t kWireVersion = 1;
/// The most tensors one packet may carry, and the most bytes a header frame may have.
constexpr size_t kMaxWireTensors = 256;
constexpr size_t kMaxHeaderBytes = 1 << 20;

/// Why a received message was refused. Each has a counter in WireCounters.
enum class WireRefusal {
  version,      ///< the header names another format version
  header,       ///< the header frame is not a msgpack map of the documented fields and types
  frame_count,  ///< fewer (a missing frame) or more frames than the header lists tensors
  length,       ///< a tensor frame's size differs from the byte length its header entry gives
  dtype,        ///< a dtype name this build does not know
  shape,        ///< a negative dimension, too many dimensions, or bytes that overflow
};
constexpr int kWireRefusalKinds = 6;
const char* wire_refusal_name(WireRefusal r);

/// Counters a receiver keeps; safe to read from any thread.
struct WireCounters {
  std::atomic<uint64_t> decoded{0};    ///< packets accepted
  std::atomic<uint64_t> realigned{0};  ///< tensor frames copied because their bytes were misaligned
  std::atomic<uint64_t> refused[kWireRefusalKinds] = {};
  uint64_t refused_total() const;
  uint64_t refused_for(WireRefusal r) const { return refused[static_cast<int>(r)].load(); }
};

/// Thrown by decode_packet: Error(parse) with the reason it was counted under.
class WireError : public Error {
 public:
  WireError(WireRefusal reason, const std::string& message) : Error(Errc::parse, message), reason(reason) {}
  WireRefusal reason;
};

/// The packet's header frame plus one zero-copy frame per tensor (name order).
/// CPU tensors only: a CUDA tensor throws Error(unsupported) (stage it to host
/// memory first). A non-contiguous tensor is made contiguous (one copy).
/// The packet's stage-private state, dump writer and initial latents do not travel.
std::vector<zmq::message_t> encode_packet(const Packet& packet);

/// Rebuilds a packet from `frames` (header first), taking the frames' memory:
/// the returned tensors keep the messages alive. Throws WireError and counts it.
PacketPtr decode_packet(std::vector<zmq::message_t>& frames, WireCounters& counters);

/// Bytes a packet's tensors occupy on the wire (the sum of the tensor frames).
size_t wire_tensor_bytes(const Packet& packet);

}  // namespace stagecraft::transport
