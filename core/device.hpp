#pragma once
// Where a tensor lives: the host, or one CUDA device. Plus device discovery.
#include <string>
#include <string_view>
#include <vector>

namespace stagecraft {

struct Device {
  enum class Kind { cpu, cuda };
  Kind kind = Kind::cpu;
  int index = 0;  ///< CUDA ordinal; 0 for cpu

  static Device cpu() { return {}; }
  static Device cuda(int i = 0) { return {Kind::cuda, i}; }
  bool is_cpu() const { return kind == Kind::cpu; }
  bool is_cuda() const { return kind == Kind::cuda; }
  bool operator==(const Device&) const = default;
  /// "cpu" or "cuda:N"
  std::string str() const;
  /// Parses "cpu", "cuda", "cuda:N"; throws Error(parse) otherwise.
  static Device parse(std::string_view s);
};

struct DeviceInfo {
  Device device;
  std::string name;          ///< "AMD EPYC (2 cores)" or "NVIDIA H200"
  size_t total_memory = 0;   ///< bytes
  int compute_capability = 0;  ///< major*10+minor for CUDA, 0 for cpu
};

/// True when this binary was built with CUDA and at least one device answers.
bool cuda_available();
int cuda_device_count();
/// The CPU first, then every CUDA device.
std::vector<DeviceInfo> discover_devices();
/// Why no CUDA device is usable ("built without CUDA", "no CUDA device: ..."), or "" if one is.
std::string cuda_unavailable_reason();

}  // namespace stagecraft
