#include "transport/msgpack_read.hpp"

#include <cstring>
#include <limits>

namespace stagecraft::transport {

msgpack::object_handle unpack_bounded(const char* data, size_t size, size_t max_str) {
  const msgpack::unpack_limit limit(/*array*/ 4096, /*map*/ 4096, /*str*/ max_str, /*bin*/ max_str,
                                    /*ext*/ 0, /*depth*/ 8);
  size_t off = 0;
  msgpack::object_handle oh = msgpack::unpack(data, size, off, nullptr, nullptr, limit);
  if (off != size)
    throw MsgpackFieldError("message has " + std::to_string(size - off) + " bytes after its msgpack object");
  return oh;
}

MapReader::MapReader(const msgpack::object& o, std::string where) : map_(o), where_(std::move(where)) {
  if (o.type != msgpack::type::MAP) throw MsgpackFieldError(where_ + " must be a msgpack map");
}

const msgpack::object* MapReader::find(const char* key) const {
  const size_t n = std::strlen(key);
  for (uint32_t i = 0; i < map_.via.map.size; ++i) {
    const auto& kv = map_.via.map.ptr[i];
    if (kv.key.type == msgpack::type::STR && kv.key.via.str.size == n && std::memcmp(kv.key.via.str.ptr, key, n) == 0)
      return &kv.val;
  }
  return nullptr;
}

void MapReader::wrong(const char* key, const char* want) const {
  throw MsgpackFieldError(where_ + "." + key + " must be " + want);
}

const msgpack::object& MapReader::at(const char* key) const {
  const msgpack::object* o = find(key);
  if (!o) throw MsgpackFieldError(where_ + "." + key + " is missing");
  return *o;
}

std::string MapReader::str(const char* key) const {
  const msgpack::object& o = at(key);
  if (o.type != msgpack::type::STR) wrong(key, "a string");
  return std::string(o.via.str.ptr, o.via.str.size);
}

uint64_t MapReader::u64(const char* key) const {
  const msgpack::object& o = at(key);
  if (o.type != msgpack::type::POSITIVE_INTEGER) wrong(key, "an unsigned integer");
  return o.via.u64;
}

int64_t MapReader::i64(const char* key) const {
  const msgpack::object& o = at(key);
  if (o.type == msgpack::type::NEGATIVE_INTEGER) return o.via.i64;
  if (o.type == msgpack::type::POSITIVE_INTEGER && o.via.u64 <= uint64_t(std::numeric_limits<int64_t>::max()))
    return static_cast<int64_t>(o.via.u64);
  wrong(key, "an integer");
}

int32_t MapReader::i32(const char* key) const {
  const msgpack::object& o = at(key);
  const bool is_int = o.type == msgpack::type::NEGATIVE_INTEGER || o.type == msgpack::type::POSITIVE_INTEGER;
  if (!is_int) wrong(key, "an integer");
  const int64_t v = o.type == msgpack::type::NEGATIVE_INTEGER ? o.via.i64 : int64_t(std::min<uint64_t>(o.via.u64, 1ull << 62));
  if (v < std::numeric_limits<int32_t>::min() || v > std::numeric_limits<int32_t>::max())
    wrong(key, "an integer that fits in 32 bits");
  return static_cast<int32_t>(v);
}

double MapReader::f64(const char* key) const {
  const msgpack::object& o = at(key);
  switch (o.type) {
    case msgpack::type::FLOAT32:
    case msgpack::type::FLOAT64: return o.via.f64;
    case msgpack::type::POSITIVE_INTEGER: return static_cast<double>(o.via.u64);
    case msgpack::type::NEGATIVE_INTEGER: return static_cast<double>(o.via.i64);
    default: wrong(key, "a number");
  }
}

bool MapReader::boolean(const char* key) const {
  const msgpack::object& o = at(key);
  if (o.type != msgpack::type::BOOLEAN) wrong(key, "true or false");
  return o.via.boolean;
}

}  // namespace stagecraft::transport
