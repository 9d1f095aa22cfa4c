// Public wrappers for cast, contiguous, to_device and cat (kernels/cuda/cuda_ops.hpp).
#include "core/allocator.hpp"
#include "kernels/cuda/copy.cuh"
#include "kernels/cuda/cuda_ops.hpp"

namespace stagecraft::kernels::cuda {

Tensor cast(const Tensor& x, DType dtype) {
  require_cuda(x, "cast", "x");
  if (x.dtype() == dtype) return x;
  DeviceGuard g(x.device());
  Tensor out = Tensor::empty(x.shape(), dtype, x.device());
  Strided2 idx;
  if (!x.is_contiguous()) idx = make_strided2(x.shape(), x.strides(), out.strides());
  cuda::cast(out.data(), dtype, x.data(), x.dtype(), idx, x.numel(), stream());
  return out;
}

Tensor contiguous(const Tensor& x) {
  require_cuda(x, "contiguous", "x");
  if (x.is_contiguous()) return x;
  DeviceGuard g(x.device());
  Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
  copy_strided(out.data(), x.data(), dtype_size(x.dtype()), make_strided2(x.shape(), x.strides(), out.strides()),
               x.numel(), stream());
  return out;
}

Tensor to_device(const Tensor& x, Device device) {
  SC_CHECK(x.defined(), Errc::invalid_argument, "to_device: x is undefined");
  if (x.device() == device) return x;
  const cudaStream_t s = stream();
  if (device.is_cpu()) {
    // Device -> host. The destination is pageable host memory, and cudaMemcpyAsync into
    // pageable memory returns only once the copy has completed, so the result is
    // readable as soon as this returns (which is what CPU callers expect).
    DeviceGuard g(x.device());
    const Tensor src = contig(x);
    Tensor out = Tensor::empty(src.shape(), src.dtype(), Device::cpu());
    SC_CUDA_CHECK(cudaMemcpyAsync(out.data(), src.data(), src.nbytes(), cudaMemcpyDeviceToHost, s));
    return out;
  }
  DeviceGuard g(device);
  if (x.device().is_cpu()) {
    const Tensor src = x.contiguous();
    cudaPointerAttributes attr{};
    const bool pinned = cudaPointerGetAttributes(&attr, src.data()) == cudaSuccess && attr.type == cudaMemoryTypeHost;
    (void)cudaGetLastError();
    Tensor out = Tensor::empty(src.shape(), src.dtype(), device);
    SC_CUDA_CHECK(cudaMemcpyAsync(out.data(), src.data(), src.nbytes(), cudaMemcpyHostToDevice, s));
    if (!pinned) return out;  // pageable sources are staged before cudaMemcpyAsync returns
    // A pinned source is read asynchronously: keep it alive as long as the result, so a
    // caller dropping its host tensor at once cannot free memory the DMA still reads.
    auto keep = std::make_shared<std::pair<std::shared_ptr<Storage>, std::shared_ptr<Storage>>>(out.storage(),
                                                                                                src.storage());
    auto storage = Storage::wrap(out.data(), out.nbytes(), device, keep);
    return Tensor::from_storage(storage, 0, out.shape(), out.dtype());
  }
  // Device -> device.
  const Tensor src = [&] {
    DeviceGuard gs(x.device());
    return contig(x);
  }();
  Tensor out = Tensor::empty(src.shape(), src.dtype(), device);
  SC_CUDA_CHECK(cudaMemcpyPeerAsync(out.data(), device.index, src.data(), src.device().index, src.nbytes(), s));
  return out;
}

Tensor cat(const std::vector<Tensor>& xs, int dim) {
  SC_CHECK(!xs.empty(), Errc::invalid_argument, "cat needs at least one tensor");
  const Tensor& first = xs.front();
  require_cuda(first, "cat", "xs[0]");
  const int nd = first.ndim();
  if (dim < 0) dim += nd;
  SC_CHECK(dim >= 0 && dim < nd, Errc::invalid_argument, "cat: dim out of range for " << first.shape_str());
  Shape shape = first.shape();
  shape[dim] = 0;
  for (const Tensor& t : xs) {
    require_cuda(t, "cat", "an input");
    SC_CHECK(t.ndim() == nd && t.dtype() == first.dtype() && t.device() == first.device(), Errc::shape_mismatch,
             "cat: inputs differ in rank, dtype or device: " << first.describe() << " vs " << t.describe());
    for (int d = 0; d < nd; ++d)
      SC_CHECK(d == dim || t.size(d) == first.size(d), Errc::shape_mismatch,
               "cat along " << dim << ": " << first.shape_str() << " vs " << t.shape_str());
    shape[dim] += t.size(dim);
  }
  DeviceGuard g(first.device());
  Tensor out = Tensor::empty(shape, first.dtype(), first.device());
  const size_t es = dtype_size(first.dtype());
  int64_t offset = 0;
  for (const Tensor& t : xs) {
    char* dst = static_cast<char*>(out.data()) + static_cast<size_t>(offset * out.strides()[dim]) * es;
    copy_strided(dst, t.data(), es, make_strided2(t.shape(), t.strides(), out.strides()), t.numel(), stream());
    offset += t.size(dim);
  }
  return out;
}

}  // namespace stagecraft::kernels::cuda
