#include "core/tensor.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <sstream>
#include <type_traits>

#include "core/allocator.hpp"
#include "core/error.hpp"
#include "core/stream.hpp"

#if STAGECRAFT_HAVE_CUDA
#include <cuda_runtime_api.h>

#include "core/cuda_check.hpp"
#endif

namespace stagecraft {

// ---------------------------------------------------------------- shapes

int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

std::string shape_str(const Shape& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) {
    if (i) out += ", ";
    out += std::to_string(s[i]);
  }
  return out + "]";
}

Shape contiguous_strides(const Shape& s) {
  Shape st(s.size());
  int64_t acc = 1;
  for (size_t i = s.size(); i-- > 0;) {
    st[i] = acc;
    acc *= std::max<int64_t>(s[i], 1);
  }
  return st;
}

namespace {

void check_shape(const Shape& shape, const char* what) {
  SC_CHECK(shape.size() <= static_cast<size_t>(kMaxDims), Errc::shape_mismatch,
           what << ": shape " << stagecraft::shape_str(shape) << " has " << shape.size() << " dims; at most " << kMaxDims
                << " are supported");
  for (int64_t d : shape) {
    SC_CHECK(d >= 0, Errc::shape_mismatch,
             what << ": shape " << stagecraft::shape_str(shape) << " has a negative size; every dim must be >= 0");
  }
}

// Normalises a possibly-negative dim against `ndim` (Python style).
int norm_dim(int dim, int ndim, const char* what, const Tensor& t) {
  const int d = dim < 0 ? dim + ndim : dim;
  SC_CHECK(d >= 0 && d < ndim, Errc::invalid_argument,
           what << ": dim " << dim << " is out of range for " << t.describe() << "; expected a dim in [" << -ndim
                << ", " << ndim - 1 << "]");
  return d;
}

void require_cpu(const Tensor& t, const char* what) {
  SC_CHECK(t.defined(), Errc::invalid_argument, what << ": the tensor is undefined (default-constructed)");
  SC_CHECK(t.device().is_cpu(), Errc::unsupported,
           what << " works on CPU tensors only, got " << t.describe()
                << "; use the ops in kernels/ops.hpp for CUDA tensors");
}

// ---- element access by dtype. Values travel as double, which holds every
// f32/f16/bf16/e4m3/i8/u8/i32 value exactly (i64 beyond 2^53 rounds; same-dtype
// copies never go through here).

template <DType D>
struct Elem;
template <>
struct Elem<DType::f32> {
  using T = float;
  static double load(T v) { return v; }
  static T store(double v) { return static_cast<float>(v); }
};
template <>
struct Elem<DType::f16> {
  using T = uint16_t;
  static double load(T v) { return f16_to_f32(v); }
  static T store(double v) { return f32_to_f16(static_cast<float>(v)); }
};
template <>
struct Elem<DType::bf16> {
  using T = uint16_t;
  static double load(T v) { return bf16_to_f32(v); }
  static T store(double v) { return f32_to_bf16(static_cast<float>(v)); }
};
template <>
struct Elem<DType::f8_e4m3> {
  using T = uint8_t;
  static double load(T v) { return e4m3_to_f32(v); }
  static T store(double v) { return f32_to_e4m3(static_cast<float>(v)); }
};

// Float -> int truncates toward zero (C/PyTorch) but saturates at the type's
// range and maps NaN to 0, instead of the undefined behaviour of a plain cast.
template <typename I>
I saturate_int(double v) {
  if (std::isnan(v)) return 0;
  constexpr double lo = static_cast<double>(std::numeric_limits<I>::min());
  // 2^63 is exactly representable; anything >= it does not fit an i64.
  constexpr double hi_excl = static_cast<double>(std::numeric_limits<I>::max()) + 1.0;
  if (v <= lo) return std::numeric_limits<I>::min();
  if (v >= hi_excl) return std::numeric_limits<I>::max();
  return static_cast<I>(std::trunc(v));
}

template <DType D, typename I>
struct IntElem {
  using T = I;
  static double load(T v) { return static_cast<double>(v); }
  static T store(double v) { return saturate_int<I>(v); }
};
template <>
struct Elem<DType::i8> : IntElem<DType::i8, int8_t> {};
template <>
struct Elem<DType::u8> : IntElem<DType::u8, uint8_t> {};
template <>
struct Elem<DType::i32> : IntElem<DType::i32, int32_t> {};
template <>
struct Elem<DType::i64> : IntElem<DType::i64, int64_t> {};

template <typename F>
decltype(auto) dispatch(DType t, F&& f) {
  switch (t) {
    case DType::f32: return f(Elem<DType::f32>{});
    case DType::f16: return f(Elem<DType::f16>{});
    case DType::bf16: return f(Elem<DType::bf16>{});
    case DType::i8: return f(Elem<DType::i8>{});
    case DType::u8: return f(Elem<DType::u8>{});
    case DType::i32: return f(Elem<DType::i32>{});
    case DType::i64: return f(Elem<DType::i64>{});
    case DType::f8_e4m3: return f(Elem<DType::f8_e4m3>{});
  }
  SC_FAIL(Errc::internal, "unknown dtype value " << static_cast<int>(t));
}

// Visits every element of `shape` in row-major order, one innermost run at a
// time: fn(offset_a, offset_b, count, stride_a, stride_b), offsets in elements.
template <typename Fn>
void walk2(const Shape& shape, const Shape& sa, const Shape& sb, Fn&& fn) {
  const int nd = static_cast<int>(shape.size());
  if (shape_numel(shape) == 0) return;
  if (nd == 0) {
    fn(0, 0, 1, 1, 1);
    return;
  }
  const int64_t inner = shape[nd - 1];
  int64_t idx[kMaxDims] = {};
  int64_t oa = 0, ob = 0;
  while (true) {
    fn(oa, ob, inner, sa[nd - 1], sb[nd - 1]);
    int d = nd - 2;
    for (; d >= 0; --d) {
      ++idx[d];
      oa += sa[d];
      ob += sb[d];
      if (idx[d] < shape[d]) break;
      oa -= sa[d] * shape[d];
      ob -= sb[d] * shape[d];
      idx[d] = 0;
    }
    if (d < 0) return;
  }
}

}  // namespace

// ---------------------------------------------------------------- construction

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) {
  check_shape(shape, "Tensor::empty");
  Tensor t;
  const size_t bytes = static_cast<size_t>(shape_numel(shape)) * dtype_size(dtype);
  t.storage_ = allocate(bytes, device);
  t.shape_ = shape;
  t.strides_ = contiguous_strides(shape);
  t.dtype_ = dtype;
  t.device_ = device;
  return t;
}

Tensor Tensor::zeros(const Shape& shape, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  if (device.is_cpu()) {
    std::memset(t.data(), 0, t.nbytes());
  } else {
#if STAGECRAFT_HAVE_CUDA
    SC_CUDA_CHECK(cudaMemsetAsync(t.data(), 0, t.nbytes(), static_cast<cudaStream_t>(current_stream())));
#endif
  }
  return t;
}

Tensor Tensor::from_blob(void* data, const Shape& shape, DType dtype, Device device, std::shared_ptr<void> owner) {
  check_shape(shape, "Tensor::from_blob");
  const size_t bytes = static_cast<size_t>(shape_numel(shape)) * dtype_size(dtype);
  SC_CHECK(data != nullptr || bytes == 0, Errc::invalid_argument,
           "Tensor::from_blob: null data for " << dtype_name(dtype) << stagecraft::shape_str(shape));
  Tensor t;
  t.storage_ = Storage::wrap(data, bytes, device, std::move(owner));
  t.shape_ = shape;
  t.strides_ = contiguous_strides(shape);
  t.dtype_ = dtype;
  t.device_ = device;
  return t;
}

Tensor Tensor::from_storage(std::shared_ptr<Storage> storage, size_t byte_offset, const Shape& shape, DType dtype) {
  check_shape(shape, "Tensor::from_storage");
  SC_CHECK(storage != nullptr, Errc::invalid_argument, "Tensor::from_storage: storage is null");
  const size_t bytes = static_cast<size_t>(shape_numel(shape)) * dtype_size(dtype);
  SC_CHECK(byte_offset <= storage->bytes() && bytes <= storage->bytes() - byte_offset, Errc::shape_mismatch,
           "Tensor::from_storage: " << dtype_name(dtype) << stagecraft::shape_str(shape) << " needs " << bytes
                                    << " bytes at offset " << byte_offset << ", but the storage has only "
                                    << storage->bytes() << " bytes");
  Tensor t;
  t.device_ = storage->device();
  t.storage_ = std::move(storage);
  t.offset_ = byte_offset;
  t.shape_ = shape;
  t.strides_ = contiguous_strides(shape);
  t.dtype_ = dtype;
  return t;
}

Tensor Tensor::from_vector(const std::vector<float>& values, const Shape& shape) {
  check_shape(shape, "Tensor::from_vector");
  SC_CHECK(static_cast<int64_t>(values.size()) == shape_numel(shape), Errc::shape_mismatch,
           "Tensor::from_vector: shape " << stagecraft::shape_str(shape) << " needs " << shape_numel(shape) << " values, got "
                                         << values.size());
  Tensor t = empty(shape, DType::f32);
  if (!values.empty()) std::memcpy(t.data(), values.data(), values.size() * sizeof(float));
  return t;
}

// ---------------------------------------------------------------- queries

int64_t Tensor::size(int d) const { return shape_[norm_dim(d, ndim(), "Tensor::size", *this)]; }

bool Tensor::is_contiguous() const {
  int64_t expected = 1;
  for (int i = ndim() - 1; i >= 0; --i) {
    if (shape_[i] == 0) return true;
    if (shape_[i] == 1) continue;  // a size-1 dim's stride is never used
    if (strides_[i] != expected) return false;
    expected *= shape_[i];
  }
  return true;
}

std::string Tensor::describe() const {
  if (!defined()) return "undefined tensor";
  return std::string(dtype_name(dtype_)) + stagecraft::shape_str(shape_) + " " + device_.str();
}

void* Tensor::data() const {
  if (!storage_) return nullptr;
  return static_cast<char*>(storage_->data()) + offset_;
}

// ---------------------------------------------------------------- views

Tensor Tensor::reshape(const Shape& shape) const {
  SC_CHECK(defined(), Errc::invalid_argument, "Tensor::reshape of an undefined tensor");
  Shape out = shape;
  int infer = -1;
  int64_t known = 1;
  for (size_t i = 0; i < out.size(); ++i) {
    if (out[i] == -1) {
      SC_CHECK(infer < 0, Errc::invalid_argument,
               "Tensor::reshape of " << describe() << " to " << stagecraft::shape_str(shape) << ": only one dim may be -1");
      infer = static_cast<int>(i);
    } else {
      SC_CHECK(out[i] >= 0, Errc::invalid_argument,
               "Tensor::reshape of " << describe() << " to " << stagecraft::shape_str(shape) << ": sizes must be >= 0 or -1");
      known *= out[i];
    }
  }
  if (infer >= 0) {
    SC_CHECK(known != 0 && numel() % known == 0, Errc::shape_mismatch,
             "Tensor::reshape of " << describe() << " to " << stagecraft::shape_str(shape) << ": " << numel()
                                   << " elements cannot be split that way");
    out[infer] = numel() / known;
  }
  check_shape(out, "Tensor::reshape");
  SC_CHECK(shape_numel(out) == numel(), Errc::shape_mismatch,
           "Tensor::reshape of " << describe() << " to " << stagecraft::shape_str(shape) << ": expected a shape with "
                                 << numel() << " elements, this one has " << shape_numel(out));
  SC_CHECK(is_contiguous(), Errc::invalid_argument,
           "Tensor::reshape of " << describe() << " needs contiguous data; call contiguous() first");
  Tensor t = *this;
  t.shape_ = out;
  t.strides_ = contiguous_strides(out);
  return t;
}

Tensor Tensor::slice(int dim, int64_t start, int64_t end, int64_t step) const {
  SC_CHECK(defined(), Errc::invalid_argument, "Tensor::slice of an undefined tensor");
  const int d = norm_dim(dim, ndim(), "Tensor::slice", *this);
  SC_CHECK(step > 0, Errc::invalid_argument,
           "Tensor::slice of " << describe() << ": step must be > 0, got " << step);
  const int64_t n = shape_[d];
  // Python semantics: negative indices count from the end, out-of-range ones clamp.
  if (start < 0) start += n;
  if (end < 0) end += n;
  start = std::clamp<int64_t>(start, 0, n);
  end = std::clamp<int64_t>(end, start, n);
  Tensor t = *this;
  t.shape_[d] = (end - start + step - 1) / step;
  t.offset_ += static_cast<size_t>(start * strides_[d]) * dtype_size(dtype_);
  t.strides_[d] = strides_[d] * step;
  return t;
}

Tensor Tensor::select(int dim, int64_t index) const {
  SC_CHECK(defined(), Errc::invalid_argument, "Tensor::select of an undefined tensor");
  const int d = norm_dim(dim, ndim(), "Tensor::select", *this);
  const int64_t n = shape_[d];
  const int64_t i = index < 0 ? index + n : index;
  SC_CHECK(i >= 0 && i < n, Errc::invalid_argument,
           "Tensor::select of " << describe() << ": index " << index << " is out of range for dim " << d
                                << "; expected an index in [" << -n << ", " << n - 1 << "]");
  Tensor t = *this;
  t.offset_ += static_cast<size_t>(i * strides_[d]) * dtype_size(dtype_);
  t.shape_.erase(t.shape_.begin() + d);
  t.strides_.erase(t.strides_.begin() + d);
  return t;
}

Tensor Tensor::permute(const std::vector<int>& dims) const {
  SC_CHECK(defined(), Errc::invalid_argument, "Tensor::permute of an undefined tensor");
  std::ostringstream given;
  for (size_t i = 0; i < dims.size(); ++i) given << (i ? ", " : "") << dims[i];
  SC_CHECK(static_cast<int>(dims.size()) == ndim(), Errc::invalid_argument,
           "Tensor::permute of " << describe() << ": expected " << ndim() << " dims, got (" << given.str() << ")");
  bool seen[kMaxDims] = {};
  Tensor t = *this;
  for (int i = 0; i < ndim(); ++i) {
    const int d = dims[i] < 0 ? dims[i] + ndim() : dims[i];
    SC_CHECK(d >= 0 && d < ndim() && !seen[d], Errc::invalid_argument,
             "Tensor::permute of " << describe() << ": (" << given.str() << ") is not a permutation of 0.."
                                   << ndim() - 1);
    seen[d] = true;
    t.shape_[i] = shape_[d];
    t.strides_[i] = strides_[d];
  }
  return t;
}

Tensor Tensor::transpose(int a, int b) const {
  SC_CHECK(defined(), Errc::invalid_argument, "Tensor::transpose of an undefined tensor");
  const int da = norm_dim(a, ndim(), "Tensor::transpose", *this);
  const int db = norm_dim(b, ndim(), "Tensor::transpose", *this);
  Tensor t = *this;
  std::swap(t.shape_[da], t.shape_[db]);
  std::swap(t.strides_[da], t.strides_[db]);
  return t;
}

Tensor Tensor::unsqueeze(int dim) const {
  SC_CHECK(defined(), Errc::invalid_argument, "Tensor::unsqueeze of an undefined tensor");
  SC_CHECK(ndim() < kMaxDims, Errc::shape_mismatch,
           "Tensor::unsqueeze of " << describe() << ": already " << kMaxDims << " dims, the maximum");
  const int n = ndim() + 1;
  const int d = dim < 0 ? dim + n : dim;
  SC_CHECK(d >= 0 && d < n, Errc::invalid_argument,
           "Tensor::unsqueeze of " << describe() << ": dim " << dim << " is out of range; expected [" << -n
                                   << ", " << n - 1 << "]");
  Tensor t = *this;
  const int64_t stride = d < ndim() ? strides_[d] * shape_[d] : 1;
  t.shape_.insert(t.shape_.begin() + d, 1);
  t.strides_.insert(t.strides_.begin() + d, stride);
  return t;
}

Tensor Tensor::squeeze(int dim) const {
  SC_CHECK(defined(), Errc::invalid_argument, "Tensor::squeeze of an undefined tensor");
  const int d = norm_dim(dim, ndim(), "Tensor::squeeze", *this);
  // Unlike PyTorch, squeezing a dim that is not 1 is an error: silently keeping
  // it hides shape bugs in stage code.
  SC_CHECK(shape_[d] == 1, Errc::shape_mismatch,
           "Tensor::squeeze of " << describe() << ": dim " << d << " has size " << shape_[d] << ", expected 1");
  Tensor t = *this;
  t.shape_.erase(t.shape_.begin() + d);
  t.strides_.erase(t.strides_.begin() + d);
  return t;
}

Tensor Tensor::expand(const Shape& shape) const {
  SC_CHECK(defined(), Errc::invalid_argument, "Tensor::expand of an undefined tensor");
  check_shape(Shape(shape.size(), 0), "Tensor::expand");
  SC_CHECK(shape.size() >= shape_.size(), Errc::shape_mismatch,
           "Tensor::expand of " << describe() << " to " << stagecraft::shape_str(shape) << ": the target needs at least "
                                << ndim() << " dims");
  const size_t lead = shape.size() - shape_.size();
  Tensor t = *this;
  t.shape_.assign(shape.size(), 0);
  t.strides_.assign(shape.size(), 0);
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i < lead) {
      SC_CHECK(shape[i] >= 0, Errc::shape_mismatch,
               "Tensor::expand of " << describe() << " to " << stagecraft::shape_str(shape) << ": new leading dims need sizes >= 0");
      t.shape_[i] = shape[i];
      t.strides_[i] = 0;
      continue;
    }
    const int64_t have = shape_[i - lead];
    const int64_t want = shape[i] == -1 ? have : shape[i];
    if (want == have) {
      t.shape_[i] = have;
      t.strides_[i] = strides_[i - lead];
    } else {
      SC_CHECK(have == 1 && want >= 0, Errc::shape_mismatch,
               "Tensor::expand of " << describe() << " to " << stagecraft::shape_str(shape) << ": dim " << i - lead
                                    << " has size " << have << ", which broadcasts only to itself (or from 1)");
      t.shape_[i] = want;
      t.strides_[i] = 0;
    }
  }
  return t;
}

// ---------------------------------------------------------------- copies

Tensor Tensor::contiguous() const {
  require_cpu(*this, "Tensor::contiguous");
  if (is_contiguous()) return *this;
  return clone();
}

Tensor Tensor::clone() const {
  require_cpu(*this, "Tensor::clone");
  Tensor t = empty(shape_, dtype_, device_);
  t.copy_from(*this);
  return t;
}

Tensor Tensor::to(DType dtype) const {
  require_cpu(*this, "Tensor::to");
  if (dtype == dtype_) return *this;
  Tensor t = empty(shape_, dtype, device_);
  t.copy_from(*this);
  return t;
}

void Tensor::copy_from(const Tensor& src) {
  require_cpu(*this, "Tensor::copy_from (destination)");
  require_cpu(src, "Tensor::copy_from (source)");
  SC_CHECK(src.shape_ == shape_, Errc::shape_mismatch,
           "Tensor::copy_from: destination " << describe() << " needs a source of shape " << shape_str()
                                             << ", got " << src.describe());
  if (numel() == 0) return;
  if (src.dtype_ == dtype_ && is_contiguous() && src.is_contiguous()) {
    std::memmove(data(), src.data(), nbytes());
    return;
  }
  char* dst_base = static_cast<char*>(data());
  const char* src_base = static_cast<const char*>(src.data());
  dispatch(dtype_, [&](auto dst_elem) {
    using DE = decltype(dst_elem);
    using DT = typename DE::T;
    dispatch(src.dtype_, [&](auto src_elem) {
      using SE = decltype(src_elem);
      using ST = typename SE::T;
      DT* d = reinterpret_cast<DT*>(dst_base);
      const ST* s = reinterpret_cast<const ST*>(src_base);
      walk2(shape_, strides_, src.strides_, [&](int64_t od, int64_t os, int64_t n, int64_t sd, int64_t ss) {
        if constexpr (std::is_same_v<DE, SE>) {
          for (int64_t i = 0; i < n; ++i) d[od + i * sd] = s[os + i * ss];
        } else if constexpr (std::is_same_v<DE, Elem<DType::f32>>) {
          for (int64_t i = 0; i < n; ++i) d[od + i * sd] = static_cast<float>(SE::load(s[os + i * ss]));
        } else {
          for (int64_t i = 0; i < n; ++i) d[od + i * sd] = DE::store(SE::load(s[os + i * ss]));
        }
      });
    });
  });
}

void Tensor::fill(double v) {
  require_cpu(*this, "Tensor::fill");
  char* base = static_cast<char*>(data());
  dispatch(dtype_, [&](auto elem) {
    using E = decltype(elem);
    using T = typename E::T;
    const T value = E::store(v);
    T* p = reinterpret_cast<T*>(base);
    walk2(shape_, strides_, strides_, [&](int64_t o, int64_t, int64_t n, int64_t s, int64_t) {
      for (int64_t i = 0; i < n; ++i) p[o + i * s] = value;
    });
  });
}

double Tensor::item(int64_t flat_index) const {
  require_cpu(*this, "Tensor::item");
  SC_CHECK(flat_index >= 0 && flat_index < numel(), Errc::invalid_argument,
           "Tensor::item: index " << flat_index << " is out of range for " << describe() << " with " << numel()
                                  << " elements");
  int64_t off = 0, rest = flat_index;
  for (int d = ndim() - 1; d >= 0; --d) {
    off += (rest % shape_[d]) * strides_[d];
    rest /= shape_[d];
  }
  const char* base = static_cast<const char*>(data());
  return dispatch(dtype_, [&](auto elem) -> double {
    using E = decltype(elem);
    return E::load(reinterpret_cast<const typename E::T*>(base)[off]);
  });
}

std::vector<float> Tensor::to_vector() const {
  require_cpu(*this, "Tensor::to_vector");
  std::vector<float> out(static_cast<size_t>(numel()));
  if (out.empty()) return out;
  Tensor view = Tensor::from_blob(out.data(), shape_, DType::f32, Device::cpu(), nullptr);
  view.copy_from(*this);
  return out;
}

}  // namespace stagecraft
