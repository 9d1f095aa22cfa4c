#pragma once
// Reading msgpack maps from untrusted peers: bounded unpacking (no container or
// string larger than a message could honestly need, no deep nesting) and typed
// field access whose errors name the field and the type it should have. Shared
// by the wire format and, later, the job protocol codec.
//
//   msgpack::object_handle oh = unpack_bounded(data, size);
//   MapReader m(oh.get(), "header");
//   uint64_t id = m.u64("job_id");      // MsgpackFieldError: "header.job_id must be an unsigned integer"
//   if (m.has("deadline_in_us")) ...
#include <cstdint>
#include <stdexcept>
#include <string>

#include <msgpack.hpp>

namespace stagecraft::transport {

/// A field is missing or has the wrong type; what() names it.
class MsgpackFieldError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Unpacks exactly one object spanning all `size` bytes, refusing (msgpack's exceptions, or
/// MsgpackFieldError for trailing bytes) containers over 4096 entries, strings and binaries
/// over `max_str` bytes and nesting deeper than 8.
msgpack::object_handle unpack_bounded(const char* data, size_t size, size_t max_str = 1 << 20);

class MapReader {
 public:
  /// `where` prefixes every error ("header" → "header.job_id ...").
  MapReader(const msgpack::object& o, std::string where);
  bool has(const char* key) const { return find(key) != nullptr; }
  /// The field's object; MsgpackFieldError when absent.
  const msgpack::object& at(const char* key) const;
  std::string str(const char* key) const;
  uint64_t u64(const char* key) const;
  int64_t i64(const char* key) const;
  int32_t i32(const char* key) const;  ///< refuses values outside int32
  double f64(const char* key) const;   ///< integers are accepted too
  bool boolean(const char* key) const;

 private:
  const msgpack::object* find(const char* key) const;
  [[noreturn]] void wrong(const char* key, const char* want) const;
  const msgpack::object& map_;
  std::string where_;
};

}  // namespace stagecraft::transport
