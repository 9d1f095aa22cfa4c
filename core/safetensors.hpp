#pragma once
// safetensors files: an 8-byte little-endian header length N, N bytes of JSON
// ({"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
// optional "__metadata__": {str: str}}), then the data. The reader mmaps the
// file and returns zero-copy CPU tensors that keep the mapping alive. It checks
// what the format requires and names the file and the problem otherwise:
// header size limit (100 MB), valid JSON, known dtypes, shapes whose byte size
// matches the offsets (computed without overflow), offsets that are contiguous,
// cover the data exactly and start each tensor at a multiple of its element size
// (so typed loads are aligned).
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.hpp"

namespace stagecraft {

class SafetensorsFile {
 public:
  /// Opens and validates; throws Error(io) or Error(parse) naming `path`.
  static SafetensorsFile open(const std::string& path);

  const std::string& path() const { return path_; }
  /// Tensor names in file order of their data.
  const std::vector<std::string>& names() const { return names_; }
  bool contains(const std::string& name) const { return tensors_.count(name) != 0; }
  /// Zero-copy view into the mapping; throws Error(not_found) naming the file.
  Tensor get(const std::string& name) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  std::string path_;
  std::vector<std::string> names_;
  std::map<std::string, Tensor> tensors_;
  std::map<std::string, std::string> metadata_;
};

/// Writes CPU tensors (made contiguous), widest dtype first then by name, each aligned to its
/// element size (the header is padded with spaces so the data starts 8-byte aligned);
/// atomically via a temp file + rename.
void save_safetensors(const std::string& path, const std::map<std::string, Tensor>& tensors,
                      const std::map<std::string, std::string>& metadata = {});

}  // namespace stagecraft
