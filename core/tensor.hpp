#pragma once
// Tensor: dtype, shape (up to 8 dims), strides in elements, a byte offset into
// ref-counted Storage, and the device that storage lives on. Views (slice,
// select, permute, reshape of contiguous data) share storage; nothing is copied
// to change owners.
//
//   Tensor x = Tensor::empty({2, 3}, DType::f32);
//   x.fill(1.0f);
//   Tensor row = x.select(0, 1);          // shares storage, shape {3}
//   Tensor h = x.to(DType::f16);          // CPU cast (kernels/ops.hpp casts on any device)
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "core/device.hpp"
#include "core/dtype.hpp"
#include "core/storage.hpp"

namespace stagecraft {

constexpr int kMaxDims = 8;
using Shape = std::vector<int64_t>;

int64_t shape_numel(const Shape& s);
std::string shape_str(const Shape& s);  ///< "[2, 3, 4]"
/// Row-major strides for a shape.
Shape contiguous_strides(const Shape& s);

class Tensor {
 public:
  Tensor() = default;  ///< undefined tensor: defined() == false

  /// Uninitialised memory from the default allocator of `device`.
  static Tensor empty(const Shape& shape, DType dtype, Device device = Device::cpu());
  static Tensor zeros(const Shape& shape, DType dtype, Device device = Device::cpu());
  /// Wraps existing memory without copying; `owner` keeps it alive.
  static Tensor from_blob(void* data, const Shape& shape, DType dtype, Device device,
                          std::shared_ptr<void> owner);
  /// A contiguous tensor over `storage` starting at `byte_offset`.
  static Tensor from_storage(std::shared_ptr<Storage> storage, size_t byte_offset, const Shape& shape,
                             DType dtype);
  /// A CPU f32 tensor holding `values` (copied), reshaped to `shape`.
  static Tensor from_vector(const std::vector<float>& values, const Shape& shape);

  bool defined() const { return storage_ != nullptr; }
  DType dtype() const { return dtype_; }
  Device device() const { return device_; }
  const Shape& shape() const { return shape_; }
  const Shape& strides() const { return strides_; }
  int ndim() const { return static_cast<int>(shape_.size()); }
  /// Size of dim `d`; negative d counts from the end.
  int64_t size(int d) const;
  int64_t numel() const { return shape_numel(shape_); }
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype_); }
  size_t byte_offset() const { return offset_; }
  bool is_contiguous() const;
  std::string shape_str() const { return stagecraft::shape_str(shape_); }
  /// "f32[2, 3] cpu"
  std::string describe() const;

  void* data() const;  ///< pointer to element 0 (storage base + offset)
  template <typename T>
  T* data_as() const { return static_cast<T*>(data()); }
  const std::shared_ptr<Storage>& storage() const { return storage_; }

  // ---- views (share storage) ----
  /// Same data, new shape; one dim may be -1. Requires is_contiguous().
  Tensor reshape(const Shape& shape) const;
  Tensor slice(int dim, int64_t start, int64_t end, int64_t step = 1) const;
  Tensor select(int dim, int64_t index) const;  ///< drops `dim`
  Tensor permute(const std::vector<int>& dims) const;
  Tensor transpose(int a, int b) const;
  Tensor unsqueeze(int dim) const;
  Tensor squeeze(int dim) const;
  /// Broadcast view with stride 0 on expanded dims (numpy rules).
  Tensor expand(const Shape& shape) const;

  // ---- copies (CPU only here; kernels/ops.hpp handles CUDA tensors) ----
  /// A contiguous copy when not contiguous, else *this. CPU only.
  Tensor contiguous() const;
  /// Deep copy (contiguous). CPU only.
  Tensor clone() const;
  /// Cast on the host; returns *this when dtype already matches. CPU only.
  Tensor to(DType dtype) const;
  /// Copies `src` into this tensor (same shape; dtype converted). CPU only.
  void copy_from(const Tensor& src);
  /// Fills every element with `v` converted to dtype. CPU only.
  void fill(double v);
  /// Reads element `flat_index` of the logical (row-major) order as double. CPU only; slow, for tests.
  double item(int64_t flat_index = 0) const;
  /// All elements as f32 in logical order. CPU only; for tests and tools.
  std::vector<float> to_vector() const;

 private:
  std::shared_ptr<Storage> storage_;
  size_t offset_ = 0;  ///< bytes
  Shape shape_, strides_;
  DType dtype_ = DType::f32;
  Device device_;
};

}  // namespace stagecraft
