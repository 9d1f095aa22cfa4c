#include "core/device.hpp"

#include <unistd.h>

#include <charconv>
#include <fstream>
#include <mutex>
#include <thread>

#include "core/error.hpp"

#if STAGECRAFT_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

namespace stagecraft {

std::string Device::str() const {
  if (kind == Kind::cpu) return "cpu";
  return "cuda:" + std::to_string(index);
}

Device Device::parse(std::string_view s) {
  if (s == "cpu") return cpu();
  if (s == "cuda") return cuda(0);
  if (s.substr(0, 5) == "cuda:" && s.size() > 5) {
    int idx = -1;
    const char* first = s.data() + 5;
    const char* last = s.data() + s.size();
    auto [p, ec] = std::from_chars(first, last, idx);
    if (ec == std::errc() && p == last && idx >= 0) return cuda(idx);
  }
  SC_FAIL(Errc::parse, "unknown device '" << s << "'; use cpu, cuda or cuda:N (N >= 0)");
}

namespace {

struct CudaProbe {
  int count = 0;
  std::string reason;  // empty when at least one device answers
};

// Probed once: cudaGetDeviceCount initialises the runtime, which is slow and
// whose answer does not change while the process runs.
const CudaProbe& cuda_probe() {
  static const CudaProbe probe = [] {
    CudaProbe p;
#if STAGECRAFT_HAVE_CUDA
    int n = 0;
    const cudaError_t err = cudaGetDeviceCount(&n);
    if (err != cudaSuccess) {
      (void)cudaGetLastError();  // clear so later calls do not see a stale error
      p.reason = std::string("no CUDA device: ") + cudaGetErrorString(err);
    } else if (n == 0) {
      p.reason = "no CUDA device: the driver reports 0 devices";
    } else {
      p.count = n;
    }
#else
    p.reason = "built without CUDA (configure with STAGECRAFT_CUDA=ON and the CUDA toolkit installed)";
#endif
    return p;
  }();
  return probe;
}

std::string cpu_model_name() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) {
      const auto colon = line.find(':');
      if (colon != std::string::npos) {
        auto start = line.find_first_not_of(" \t", colon + 1);
        if (start != std::string::npos) return line.substr(start);
      }
    }
  }
  return "CPU";
}

}  // namespace

bool cuda_available() { return cuda_probe().count > 0; }

int cuda_device_count() { return cuda_probe().count; }

std::string cuda_unavailable_reason() { return cuda_probe().reason; }

std::vector<DeviceInfo> discover_devices() {
  std::vector<DeviceInfo> out;
  DeviceInfo cpu_info;
  cpu_info.device = Device::cpu();
  const unsigned cores = std::thread::hardware_concurrency();
  cpu_info.name = cpu_model_name() + " (" + std::to_string(cores) + " cores)";
  const long pages = sysconf(_SC_PHYS_PAGES);
  const long page_size = sysconf(_SC_PAGE_SIZE);
  if (pages > 0 && page_size > 0) cpu_info.total_memory = static_cast<size_t>(pages) * static_cast<size_t>(page_size);
  out.push_back(cpu_info);
#if STAGECRAFT_HAVE_CUDA
  for (int i = 0; i < cuda_device_count(); ++i) {
    cudaDeviceProp prop{};
    if (cudaGetDeviceProperties(&prop, i) != cudaSuccess) {
      (void)cudaGetLastError();
      continue;
    }
    DeviceInfo d;
    d.device = Device::cuda(i);
    d.name = prop.name;
    d.total_memory = prop.totalGlobalMem;
    d.compute_capability = prop.major * 10 + prop.minor;
    out.push_back(d);
  }
#endif
  return out;
}

}  // namespace stagecraft
