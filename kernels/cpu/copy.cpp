// Data movement on the host: contiguous copies, concatenation, and the (trivial)
// host-to-host device move. Copies keep the dtype and move bytes only.
#include <cstring>

#include "core/error.hpp"
#include "kernels/cpu/common.hpp"
#include "kernels/cpu/cpu_ops.hpp"

namespace stagecraft::kernels::cpu {

Tensor contiguous(const Tensor& x) {
  if (x.is_contiguous()) return x;
  Tensor out = Tensor::empty(x.shape(), x.dtype());
  copy_strided(strided(x), out.data());
  return out;
}

Tensor to_device(const Tensor& x, Device device) {
  SC_CHECK(device.is_cpu(), Errc::unsupported,
           "the CPU backend cannot move " << x.describe() << " to " << device.str()
                                          << "; call ops::to_device, which routes host<->GPU copies to CUDA");
  return x;
}

Tensor cat(const std::vector<Tensor>& xs, int dim) {
  Shape shape = xs.front().shape();
  const int nd = static_cast<int>(shape.size());
  int64_t total = 0;
  for (const Tensor& t : xs) total += t.size(dim);
  shape[dim] = total;
  Tensor out = Tensor::empty(shape, xs.front().dtype());
  const size_t es = dtype_size(out.dtype());
  int64_t outer = 1, inner = 1;
  for (int d = 0; d < dim; ++d) outer *= shape[d];
  for (int d = dim + 1; d < nd; ++d) inner *= shape[d];
  char* dst = static_cast<char*>(out.data());
  int64_t offset = 0;  // along dim
  for (const Tensor& t : xs) {
    const Tensor src = contiguous(t);
    const int64_t chunk = t.size(dim) * inner;  // elements per outer index
    const char* s = static_cast<const char*>(src.data());
    for (int64_t o = 0; o < outer; ++o)
      std::memcpy(dst + (o * total * inner + offset * inner) * es, s + o * chunk * es, static_cast<size_t>(chunk) * es);
    offset += t.size(dim);
  }
  return out;
}

}  // namespace stagecraft::kernels::cpu
