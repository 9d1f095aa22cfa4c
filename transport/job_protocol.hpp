#pragma once
// The job protocol of `stagecraft serve` (docs/protocol.md, version 1): one
// msgpack map per ZeroMQ message, client DEALER to server ROUTER. This is the
// codec only, shared by the server (service/), the C++ client (clients/) and the
// fuzz target; it checks types and shapes of messages, while the ranges of a
// request (steps, sizes, prompt length) are checked by the one request validator
// the engine and the command line use too.
//
//   ClientMessage m = decode_client_message(bytes, size);   // ProtocolError on anything malformed
//   if (m.op == Op::submit) engine_submit(to_request(m.submit));
//   std::string reply = encode_error("job-1", "invalid_argument", "steps is 0; ...");
#include <cstdint>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/packet.hpp"

namespace stagecraft::transport {

constexpr uint32_t kProtocolVersion = 1;
/// The longest job id a client may choose.
constexpr size_t kMaxJobIdBytes = 128;

enum class Op { submit, cancel, status, health, stats, ping };
const char* op_name(Op op);

/// A malformed message: `code` is one of docs/protocol.md's error codes
/// (bad_request, unknown_op, unsupported_version), what() says what is wrong.
class ProtocolError : public std::runtime_error {
 public:
  ProtocolError(std::string code, const std::string& message) : std::runtime_error(message), code(std::move(code)) {}
  std::string code;
};

/// The fields of a `submit`; absent optional fields take the pipeline's defaults.
struct SubmitFields {
  std::string pipeline;  ///< empty = the one pipeline the server serves
  std::string prompt, negative_prompt, scheduler;
  std::optional<uint64_t> seed;
  std::optional<int64_t> steps, width, height;
  std::optional<double> guidance;
  int64_t num_images = 1;
  int64_t priority = 0;
  std::optional<int64_t> deadline_ms;  ///< relative to when the server receives it
  std::string output = "png";           ///< png | raw
  bool progress = false;

  /// Equal parameters: a resubmitted id with equal fields is the same job.
  bool operator==(const SubmitFields&) const = default;
};

struct ClientMessage {
  Op op = Op::ping;
  std::string id;  ///< the client's job id (submit, cancel, status)
  SubmitFields submit;
};

/// Decodes one client message. Throws ProtocolError.
ClientMessage decode_client_message(const void* data, size_t size);
/// Encodes one client message (the C++ client's side; fields left at their defaults are omitted).
std::string encode_client_message(const ClientMessage& m);

/// The engine request of image `index` of a submit: seed + index, the rest as given
/// (absent → 0 / -1, which the engine reads as "the pipeline's default").
Request to_request(const SubmitFields& s, int index);

// ---- replies (server → client) ----

struct StageTiming {
  std::string stage;
  double queue_s = 0, compute_s = 0, transfer_s = 0;
};

struct ResultImage {
  std::string data;            ///< PNG bytes, or raw u8 HWC bytes
  int64_t width = 0, height = 0, channels = 0;
  uint64_t seed = 0;
};

/// Any reply as the client sees it. `type`: accepted | progress | result | error | status |
/// health | stats | pong.
struct ServerReply {
  std::string type;
  std::string id;
  // progress
  int64_t step = 0, of = 0, image = 0;
  // result
  std::string format;
  std::vector<ResultImage> images;
  std::vector<StageTiming> timings;
  // error
  std::string code, message;
  std::optional<int64_t> retry_after_ms;
  // status: queued | running | done | failed | unknown
  std::string state;
  // health / stats / pong: the whole map as given (numbers stay numbers)
  nlohmann::json fields;
};

std::string encode_accepted(const std::string& id);
std::string encode_progress(const std::string& id, int64_t step, int64_t of, int64_t image);
std::string encode_result(const std::string& id, const std::string& format, const std::vector<ResultImage>& images,
                          const std::vector<StageTiming>& timings);
std::string encode_error(const std::string& id, const std::string& code, const std::string& message,
                         std::optional<int64_t> retry_after_ms = std::nullopt);
std::string encode_status(const std::string& id, const std::string& state, int64_t step, int64_t of);
/// health / stats / pong: `fields` (a JSON object: strings, numbers, nested maps) beside `type`.
std::string encode_info(const std::string& type, const nlohmann::json& fields);

/// Decodes any reply. Throws ProtocolError (bad_request) when malformed.
ServerReply decode_server_reply(const void* data, size_t size);

}  // namespace stagecraft::transport
