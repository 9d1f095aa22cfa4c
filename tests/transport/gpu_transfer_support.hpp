#pragma once
// What the GPU channel tests and their helper process (cuda_ipc_peer) agree on: packets
// whose bytes follow a pattern of the job id, so either side can check what the other sent;
// and how to start the helper (also through the bundled glibc of scripts/device-check.sh).
#include <cuda_runtime_api.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

#include "core/packet.hpp"

extern char** environ;

namespace stagecraft::gpu_transfer {

inline uint8_t pattern_byte(uint64_t job, int tensor, size_t i) {
  return static_cast<uint8_t>((i * 131u + job * 7u + static_cast<uint64_t>(tensor) * 29u + (i >> 11)) & 0xff);
}

/// Shapes vary with the job so slots of several sizes are exercised; "b" has an odd byte count.
inline Shape shape_a(uint64_t job) { return {3, static_cast<int64_t>(1000 + 37 * (job % 5))}; }
inline Shape shape_b(uint64_t job) { return {static_cast<int64_t>(4097 + job)}; }

inline Tensor patterned(const Shape& shape, DType dtype, uint64_t job, int tensor, Device device) {
  Tensor host = Tensor::empty(shape, dtype);
  auto* b = static_cast<uint8_t*>(host.data());
  for (size_t i = 0; i < host.nbytes(); ++i) b[i] = pattern_byte(job, tensor, i);
  if (device.is_cpu()) return host;
  Tensor d = Tensor::empty(shape, dtype, device);
  if (cudaMemcpy(d.data(), host.data(), host.nbytes(), cudaMemcpyHostToDevice) != cudaSuccess) return {};
  return d;
}

/// A packet with two GPU tensors ("a" f32, "b" u8) and one CPU tensor ("meta", i64).
inline PacketPtr patterned_packet(uint64_t job, int device) {
  auto p = std::make_shared<Packet>();
  p->job_id = job;
  p->request.prompt = "gpu job " + std::to_string(job);
  p->tensors["a"] = patterned(shape_a(job), DType::f32, job, 0, Device::cuda(device));
  p->tensors["b"] = patterned(shape_b(job), DType::u8, job, 1, Device::cuda(device));
  p->tensors["meta"] = patterned({4}, DType::i64, job, 2, Device::cpu());
  return p;
}

/// "" when `p` carries job `p->job_id`'s bytes, else what differs. Synchronises the device.
inline std::string check_packet(const Packet& p, int device) {
  const uint64_t job = p.job_id;
  struct Want {
    const char* name;
    Shape shape;
    DType dtype;
    int index;
    bool gpu;
  };
  const Want wants[] = {{"a", shape_a(job), DType::f32, 0, true},
                        {"b", shape_b(job), DType::u8, 1, true},
                        {"meta", {4}, DType::i64, 2, false}};
  if (cudaDeviceSynchronize() != cudaSuccess) return "cudaDeviceSynchronize failed";
  for (const Want& w : wants) {
    auto it = p.tensors.find(w.name);
    std::ostringstream why;
    if (it == p.tensors.end()) return "job " + std::to_string(job) + ": no tensor " + w.name;
    const Tensor& t = it->second;
    if (t.shape() != w.shape || t.dtype() != w.dtype)
      return "job " + std::to_string(job) + ": tensor " + w.name + " has the wrong shape or dtype";
    if (t.device() != (w.gpu ? Device::cuda(device) : Device::cpu()))
      return "job " + std::to_string(job) + ": tensor " + w.name + " is on " + t.device().str();
    std::vector<uint8_t> bytes(t.nbytes());
    if (w.gpu) {
      if (cudaMemcpy(bytes.data(), t.data(), t.nbytes(), cudaMemcpyDeviceToHost) != cudaSuccess)
        return "cudaMemcpy of " + std::string(w.name) + " failed";
    } else {
      std::memcpy(bytes.data(), t.data(), t.nbytes());
    }
    for (size_t i = 0; i < bytes.size(); ++i)
      if (bytes[i] != pattern_byte(job, w.index, i))
        return "job " + std::to_string(job) + ": tensor " + w.name + " differs at byte " + std::to_string(i);
  }
  return "";
}

/// Starts `program args...`, through $SC_DEVICE_LAUNCHER when set (the bundled glibc's
/// loader, see scripts/device-check.sh). Returns the pid, or -1.
inline pid_t spawn(const std::string& program, const std::vector<std::string>& args) {
  std::vector<std::string> argv;
  if (const char* l = std::getenv("SC_DEVICE_LAUNCHER"); l && *l) {
    std::istringstream in(l);
    for (std::string w; in >> w;) argv.push_back(w);
  }
  argv.push_back(program);
  argv.insert(argv.end(), args.begin(), args.end());
  std::vector<char*> cargv;
  for (auto& a : argv) cargv.push_back(a.data());
  cargv.push_back(nullptr);
  pid_t pid = -1;
  if (posix_spawn(&pid, cargv[0], nullptr, nullptr, cargv.data(), environ) != 0) return -1;
  return pid;
}

/// The exit status of `pid` (waits), or -1 when it did not exit normally.
inline int wait_exit(pid_t pid) {
  int status = 0;
  if (waitpid(pid, &status, 0) != pid) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

}  // namespace stagecraft::gpu_transfer
