#include "core/safetensors.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>

#include "core/error.hpp"
#include "core/json_brief.hpp"

namespace stagecraft {

namespace {

constexpr uint64_t kMaxHeaderBytes = 100ull * 1000 * 1000;  // the reference implementation's limit

// The mapping every tensor of a file points into; unmapped with the last tensor.
struct Mapping {
  void* addr = nullptr;
  size_t bytes = 0;
  ~Mapping() {
    if (addr) ::munmap(addr, bytes);
  }
};

struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

DType safetensors_dtype(const std::string& name, const std::string& path, const std::string& tensor) {
  for (DType t : {DType::f32, DType::f16, DType::bf16, DType::i8, DType::u8, DType::i32, DType::i64, DType::f8_e4m3}) {
    if (name == dtype_safetensors_name(t)) return t;
  }
  SC_FAIL(Errc::parse, path << ": tensor '" << tensor << "' has dtype '" << name
                            << "', which Stagecraft does not support; convert it to one of F32, F16, BF16, I8, U8, "
                               "I32, I64, F8_E4M3");
}

uint64_t json_uint(const nlohmann::json& v, const std::string& path, const std::string& tensor, const char* field) {
  SC_CHECK(v.is_number_unsigned() || (v.is_number_integer() && v.get<int64_t>() >= 0), Errc::parse,
           path << ": tensor '" << tensor << "': " << field << " must hold non-negative integers, got " << json_brief(v));
  return v.get<uint64_t>();
}

// Whether the data section (after the 8-byte length and the header) starts at a multiple of `esize`.
bool data_start_aligned(uint64_t header_len, uint64_t esize) { return (8 + header_len) % esize == 0; }

struct Entry {
  std::string name;
  DType dtype;
  Shape shape;
  uint64_t begin, end;
};

}  // namespace

SafetensorsFile SafetensorsFile::open(const std::string& path) {
  Fd fd;
  fd.fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd.fd < 0) {
    const int e = errno;
    if (e == ENOENT) SC_FAIL(Errc::not_found, "cannot open safetensors file " << path << ": " << std::strerror(e));
    SC_FAIL(Errc::io, "cannot open safetensors file " << path << ": " << std::strerror(e));
  }
  struct stat st {};
  SC_CHECK(::fstat(fd.fd, &st) == 0, Errc::io, "cannot stat " << path << ": " << std::strerror(errno));
  const uint64_t file_size = static_cast<uint64_t>(st.st_size);
  SC_CHECK(file_size >= 8, Errc::parse,
           path << ": " << file_size << " bytes is too short for a safetensors file (it needs at least the 8-byte "
                << "header length); the file is truncated or not safetensors");

  auto map = std::make_shared<Mapping>();
  // Private and writable: tensors expose a mutable data(); writes go to
  // copy-on-write pages, never to the file, and reads stay zero-copy.
  void* addr = ::mmap(nullptr, file_size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd.fd, 0);
  SC_CHECK(addr != MAP_FAILED, Errc::io, "cannot mmap " << path << ": " << std::strerror(errno));
  map->addr = addr;
  map->bytes = file_size;
  const auto* bytes = static_cast<const unsigned char*>(addr);

  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | bytes[i];
  SC_CHECK(header_len <= kMaxHeaderBytes, Errc::parse,
           path << ": header length " << header_len << " exceeds the 100 MB limit; the file is corrupt or not safetensors");
  SC_CHECK(header_len <= file_size - 8, Errc::parse,
           path << ": header length " << header_len << " runs past the end of the " << file_size
                << "-byte file; the file is truncated");

  nlohmann::json header;
  try {
    header = nlohmann::json::parse(reinterpret_cast<const char*>(bytes + 8),
                                   reinterpret_cast<const char*>(bytes + 8 + header_len));
  } catch (const nlohmann::json::exception& e) {
    SC_FAIL(Errc::parse, path << ": the header is not valid JSON (" << e.what() << ")");
  }
  SC_CHECK(header.is_object(), Errc::parse, path << ": the header must be a JSON object, got " << header.type_name());

  SafetensorsFile f;
  f.path_ = path;
  const uint64_t data_start = 8 + header_len;
  const uint64_t data_size = file_size - data_start;
  std::vector<Entry> entries;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const nlohmann::json& v = it.value();
    if (name == "__metadata__") {
      SC_CHECK(v.is_object(), Errc::parse, path << ": __metadata__ must be an object of strings");
      for (auto m = v.begin(); m != v.end(); ++m) {
        SC_CHECK(m.value().is_string(), Errc::parse,
                 path << ": __metadata__ value for '" << m.key() << "' must be a string, got " << json_brief(m.value()));
        f.metadata_[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    SC_CHECK(v.is_object() && v.contains("dtype") && v.contains("shape") && v.contains("data_offsets"), Errc::parse,
             path << ": tensor '" << name << "' needs an object with dtype, shape and data_offsets, got " << json_brief(v));
    SC_CHECK(v["dtype"].is_string(), Errc::parse, path << ": tensor '" << name << "': dtype must be a string");
    Entry e;
    e.name = name;
    e.dtype = safetensors_dtype(v["dtype"].get<std::string>(), path, name);
    SC_CHECK(v["shape"].is_array(), Errc::parse, path << ": tensor '" << name << "': shape must be an array");
    SC_CHECK(v["shape"].size() <= static_cast<size_t>(kMaxDims), Errc::parse,
             path << ": tensor '" << name << "' has " << v["shape"].size() << " dims; Stagecraft supports at most "
                  << kMaxDims);
    // Every size below is computed in a way that cannot wrap: the product of the
    // non-zero dims times the element size must fit in int64 (Tensor's own shape
    // arithmetic), whatever order later code multiplies the dims in.
    const uint64_t esize = dtype_size(e.dtype);
    const uint64_t max_elems = static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) / esize;
    uint64_t nonzero = 1;
    bool empty = false, overflow = false;
    for (const auto& d : v["shape"]) {
      const uint64_t n = json_uint(d, path, name, "shape");
      if (n == 0) empty = true;
      else if (nonzero > max_elems / n) overflow = true;
      else nonzero *= n;
      e.shape.push_back(overflow ? 0 : static_cast<int64_t>(n));
    }
    SC_CHECK(!overflow, Errc::parse,
             path << ": tensor '" << name << "' has shape " << json_brief(v["shape"]) << " whose "
                  << dtype_safetensors_name(e.dtype) << " byte size overflows 64 bits; the file is corrupt or hostile");
    const uint64_t elems = empty ? 0 : nonzero;
    const auto& off = v["data_offsets"];
    SC_CHECK(off.is_array() && off.size() == 2, Errc::parse,
             path << ": tensor '" << name << "': data_offsets must be [begin, end], got " << json_brief(off));
    e.begin = json_uint(off[0], path, name, "data_offsets");
    e.end = json_uint(off[1], path, name, "data_offsets");
    SC_CHECK(e.begin <= e.end, Errc::parse,
             path << ": tensor '" << name << "': data_offsets [" << e.begin << ", " << e.end << "] end before they begin");
    const uint64_t want = elems * esize;
    SC_CHECK(want == e.end - e.begin, Errc::parse,
             path << ": tensor '" << name << "' is " << dtype_safetensors_name(e.dtype) << shape_str(e.shape) << " = "
                  << want << " bytes, but its data_offsets [" << e.begin << ", " << e.end << "] span "
                  << e.end - e.begin << " bytes");
    // Typed loads need aligned data: the data section starts 8-byte aligned in the
    // mapping only when the header length keeps it so, and each tensor at a multiple
    // of its element size. Writers that sort tensors by descending element size
    // (the reference one, and save_safetensors) always produce such files.
    SC_CHECK(e.begin % esize == 0 && (esize == 1 || data_start_aligned(header_len, esize)), Errc::parse,
             path << ": tensor '" << name << "' (" << dtype_safetensors_name(e.dtype) << ") starts at file offset "
                  << 8 + header_len + e.begin << ", which is not a multiple of its " << esize
                  << "-byte element size; Stagecraft reads only aligned tensors. Rewrite the file with an aligning "
                     "writer (safetensors' save_file, or Stagecraft's save_safetensors)");
    entries.push_back(std::move(e));
  }

  // The data must be one contiguous run of tensors from 0 to the end of the file.
  std::sort(entries.begin(), entries.end(),
            [](const Entry& a, const Entry& b) { return a.begin != b.begin ? a.begin < b.begin : a.end < b.end; });
  uint64_t expected = 0;
  const Entry* prev = nullptr;
  for (const Entry& e : entries) {
    if (e.begin < expected) {
      SC_FAIL(Errc::parse, path << ": tensor '" << e.name << "' (data_offsets [" << e.begin << ", " << e.end
                                << "]) overlaps tensor '" << prev->name << "' which ends at " << expected);
    }
    if (e.begin > expected) {
      SC_FAIL(Errc::parse, path << ": tensor '" << e.name << "' starts at data offset " << e.begin << " but "
                                << (prev ? "tensor '" + prev->name + "' ends" : std::string("the data starts")) << " at "
                                << expected << "; offsets must be contiguous with no gaps");
    }
    expected = e.end;
    prev = &e;
  }
  SC_CHECK(expected == data_size, Errc::parse,
           path << ": the tensors cover " << expected << " data bytes but the file holds " << data_size
                << (expected > data_size ? "; the file is truncated" : " after the header; trailing bytes are not allowed")
                << (prev ? " (last tensor: '" + prev->name + "')" : std::string()));

  auto storage = Storage::wrap(static_cast<char*>(addr) + data_start, data_size, Device::cpu(), map);
  for (const Entry& e : entries) {
    f.names_.push_back(e.name);
    f.tensors_.emplace(e.name, Tensor::from_storage(storage, e.begin, e.shape, e.dtype));
  }
  return f;
}

Tensor SafetensorsFile::get(const std::string& name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) {
    std::string hint;
    // Name a few entries so a typo or a prefix mismatch is easy to spot.
    for (size_t i = 0; i < names_.size() && i < 5; ++i) hint += (i ? ", " : "") + names_[i];
    SC_FAIL(Errc::not_found, path_ << " has no tensor '" << name << "' (" << names_.size() << " tensors"
                                   << (hint.empty() ? "" : ", e.g. " + hint) << ")");
  }
  return it->second;
}

void save_safetensors(const std::string& path, const std::map<std::string, Tensor>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  nlohmann::json header = nlohmann::json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  // Like the reference writer: widest element first, then by name. Every tensor's
  // byte size is a multiple of its element size and the sizes are powers of two, so
  // each tensor then starts aligned to its element size with no gaps between them.
  std::vector<std::pair<std::string, Tensor>> order(tensors.begin(), tensors.end());
  std::stable_sort(order.begin(), order.end(), [](const auto& a, const auto& b) {
    const size_t sa = a.second.defined() ? dtype_size(a.second.dtype()) : 0;
    const size_t sb = b.second.defined() ? dtype_size(b.second.dtype()) : 0;
    return sa > sb;
  });
  std::vector<Tensor> data;
  uint64_t offset = 0;
  for (const auto& [name, t] : order) {
    SC_CHECK(name != "__metadata__", Errc::invalid_argument,
             "save_safetensors(" << path << "): '__metadata__' is reserved and cannot name a tensor");
    SC_CHECK(t.defined(), Errc::invalid_argument, "save_safetensors(" << path << "): tensor '" << name << "' is undefined");
    SC_CHECK(t.device().is_cpu(), Errc::unsupported,
             "save_safetensors(" << path << "): tensor '" << name << "' is " << t.describe()
                                 << "; copy it to the CPU first");
    Tensor c = t.contiguous();
    header[name] = {{"dtype", dtype_safetensors_name(c.dtype())},
                    {"shape", c.shape()},
                    {"data_offsets", {offset, offset + c.nbytes()}}};
    offset += c.nbytes();
    data.push_back(std::move(c));
  }
  std::string text = header.dump();
  // Like the reference writer: pad with spaces (JSON whitespace) so the data starts
  // 8-byte aligned, which with the ordering above aligns every tensor.
  text.append((8 - text.size() % 8) % 8, ' ');

  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  Fd fd;
  fd.fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  SC_CHECK(fd.fd >= 0, Errc::io, "cannot create " << tmp << " to write " << path << ": " << std::strerror(errno));
  auto write_all = [&](const void* p, size_t n) {
    const char* c = static_cast<const char*>(p);
    while (n > 0) {
      const ssize_t w = ::write(fd.fd, c, n);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) {
        const int e = errno;
        ::unlink(tmp.c_str());
        SC_FAIL(Errc::io, "writing " << path << " failed: " << std::strerror(e));
      }
      c += w;
      n -= static_cast<size_t>(w);
    }
  };
  unsigned char len[8];
  uint64_t n = text.size();
  for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>(n >> (8 * i));
  write_all(len, 8);
  write_all(text.data(), text.size());
  for (const Tensor& t : data) write_all(t.data(), t.nbytes());
  if (::fsync(fd.fd) != 0 || ::close(fd.fd) != 0) {
    const int e = errno;
    fd.fd = -1;
    ::unlink(tmp.c_str());
    SC_FAIL(Errc::io, "writing " << path << " failed: " << std::strerror(e));
  }
  fd.fd = -1;
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int e = errno;
    ::unlink(tmp.c_str());
    SC_FAIL(Errc::io, "cannot rename " << tmp << " to " << path << ": " << std::strerror(e));
  }
}

}  // namespace stagecraft
