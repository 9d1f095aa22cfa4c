#pragma once
// Shared by the libFuzzer targets: a scratch folder per fuzzing process (the readers
// under test take paths, not bytes) and writing an input into it.
#include <stdlib.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>

namespace stagecraft::fuzz {

/// A folder made once per process under $TMPDIR (or /tmp), removed at exit.
inline const std::filesystem::path& scratch() {
  static const std::filesystem::path dir = [] {
    std::string tmpl = (std::filesystem::temp_directory_path() / "stagecraft-fuzz-XXXXXX").string();
    if (!mkdtemp(tmpl.data())) std::abort();
    static std::filesystem::path made = tmpl;
    std::atexit([] {
      std::error_code ec;
      std::filesystem::remove_all(made, ec);
    });
    return made;
  }();
  return dir;
}

/// Writes `bytes` to `path` (creating its folder), replacing what was there.
inline void write_file(const std::filesystem::path& path, std::string_view bytes) {
  std::filesystem::create_directories(path.parent_path());
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out) std::abort();
}

/// Splits `data` at the first occurrence of `sep` (a separator no seed uses elsewhere);
/// the second part is empty when there is none.
inline std::pair<std::string_view, std::string_view> split(std::string_view data, std::string_view sep) {
  const size_t at = data.find(sep);
  if (at == std::string_view::npos) return {data, {}};
  return {data.substr(0, at), data.substr(at + sep.size())};
}

inline std::string_view as_view(const uint8_t* data, size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

}  // namespace stagecraft::fuzz
