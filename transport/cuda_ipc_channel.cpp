// CUDA IPC channel (see cuda_ipc_channel.hpp for the design and why the sender copies once).
// Compiled only in builds with CUDA (transport/CMakeLists.txt).
#include "transport/cuda_ipc_channel.hpp"

#include <cuda_runtime_api.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "core/allocator.hpp"
#include "core/cuda_check.hpp"
#include "core/device.hpp"
#include "core/stream.hpp"
#include "transport/msgpack_read.hpp"
#include "transport/zmq_channel.hpp"

namespace stagecraft::transport {

namespace {

// Offsets inside a slot: 256 bytes keeps every dtype and vectorised kernel load aligned.
constexpr size_t kAlign = 256;
// Slots grow in steps of 2 MiB so packets of slightly different sizes share them.
constexpr size_t kSlotGranule = size_t(2) << 20;

size_t align_up(size_t n, size_t a) { return (n + a - 1) / a * a; }


std::string pci_bus_id(int device) {
  char id[32] = {};
  SC_CUDA_CHECK(cudaDeviceGetPCIBusId(id, sizeof id, device));
  return id;
}

void require_device(int device, const char* who) {
  SC_CHECK(cuda_available(), Errc::unsupported, who << ": " << cuda_unavailable_reason());
  SC_CHECK(device >= 0 && device < cuda_device_count(), Errc::invalid_argument,
           who << ": there is no cuda:" << device << " (" << cuda_device_count() << " device(s) visible)");
}

template <typename Handle>
std::string handle_bytes(const Handle& h) {
  return std::string(reinterpret_cast<const char*>(&h), sizeof h);
}

template <typename Handle>
Handle handle_from(const msgpack::object& o, const char* what) {
  if (o.type != msgpack::type::BIN || o.via.bin.size != sizeof(Handle))
    throw MsgpackFieldError(std::string("@cuda_ipc.") + what + " must be a binary of " +
                            std::to_string(sizeof(Handle)) + " bytes");
  Handle h;
  std::memcpy(&h, o.via.bin.ptr, sizeof h);
  return h;
}

void pack_bin(msgpack::packer<msgpack::sbuffer>& pk, const std::string& bytes) {
  pk.pack_bin(static_cast<uint32_t>(bytes.size()));
  pk.pack_bin_body(bytes.data(), static_cast<uint32_t>(bytes.size()));
}

/// The release message, receiver -> sender: {kind, version, slot, use}.
zmq::message_t encode_release(uint32_t slot, uint64_t use) {
  msgpack::sbuffer buf;
  msgpack::packer<msgpack::sbuffer> pk(buf);
  pk.pack_map(4);
  pk.pack("kind"), pk.pack("cuda_ipc_release");
  pk.pack("version"), pk.pack(kWireVersion);
  pk.pack("slot"), pk.pack(slot);
  pk.pack("use"), pk.pack(use);
  return zmq::message_t(buf.data(), buf.size());
}

std::string temp_ipc_endpoint() {
  static std::atomic<int> counter{0};
  const char* tmp = std::getenv("TMPDIR");
  return std::string("ipc://") + (tmp && *tmp ? tmp : "/tmp") + "/stagecraft-cuda-ipc-" + std::to_string(getpid()) +
         "-" + std::to_string(counter.fetch_add(1));
}

struct Layout {
  struct Entry {
    std::string name;
    Tensor tensor;
    size_t offset = 0;
  };
  std::vector<Entry> entries;
  size_t total = 0;
};

}  // namespace

// ---------------------------------------------------------------- sender

struct CudaIpcSendChannel::Impl {
  struct Slot {
    uint32_t id = 0;
    void* ptr = nullptr;
    size_t capacity = 0;
    std::string mem_handle, ready_handle, done_handle;
    cudaEvent_t ready = nullptr;  ///< recorded here after the copy; the receiver waits on it
    cudaEvent_t done = nullptr;   ///< recorded by the receiver when it let go; the copy stream waits on it
    cudaEvent_t after_caller = nullptr;  ///< orders the copy after the caller's stream (local)
    uint64_t use = 0;             ///< which send the slot carries now; a release names it
    bool in_use = false;
    bool abandoned = false;       ///< in use when the receiver was lost: never reused
    std::vector<Tensor> sources;  ///< the sent tensors, alive until their copy has run
  };

  std::shared_ptr<zmq::context_t> ctx;
  CudaIpcSendOptions opt;
  std::string pci;
  std::unique_ptr<ZmqSendChannel> zmq;
  zmq::socket_t releases;  // PULL, read under mu by try_send
  std::string release_endpoint;
  cudaStream_t copy = nullptr;

  mutable std::mutex mu;
  std::vector<std::unique_ptr<Slot>> slots;
  uint64_t next_use = 1;
  uint64_t gpu_bytes = 0, waits = 0;
  std::atomic<bool> lost{false};

  void drain_releases();
  void forget_finished_sources();
  Slot& slot_for(size_t bytes);
  ~Impl();
};

CudaIpcSendChannel::CudaIpcSendChannel(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

std::unique_ptr<CudaIpcSendChannel> CudaIpcSendChannel::connect(std::shared_ptr<zmq::context_t> ctx,
                                                                const std::string& endpoint, Hello hello,
                                                                CudaIpcSendOptions options) {
  require_device(options.device, "CUDA IPC sender");
  auto impl = std::make_unique<Impl>();
  impl->ctx = ctx;
  impl->opt = std::move(options);
  {
    DeviceScope scope(impl->opt.device);
    impl->pci = pci_bus_id(impl->opt.device);
    // A blocking stream: besides the explicit waits below, work the caller put on the
    // legacy default stream is ordered before our copies.
    SC_CUDA_CHECK(cudaStreamCreate(&impl->copy));
  }
  impl->releases = zmq::socket_t(*ctx, zmq::socket_type::pull);
  impl->releases.set(zmq::sockopt::linger, 0);
  const std::string wanted = impl->opt.release_endpoint.empty() ? temp_ipc_endpoint() : impl->opt.release_endpoint;
  try {
    impl->releases.bind(wanted);
  } catch (const zmq::error_t& e) {
    SC_FAIL(Errc::io, "CUDA IPC sender: cannot bind its release endpoint '" << wanted << "': " << e.what());
  }
  impl->release_endpoint = impl->releases.get(zmq::sockopt::last_endpoint);

  ZmqSendOptions z;
  z.on_credit = impl->opt.on_credit;
  z.on_failed = impl->opt.on_failed;
  z.heartbeat = impl->opt.heartbeat;
  z.peer_timeout = impl->opt.peer_timeout;
  Impl* raw = impl.get();
  z.on_peer_lost = [raw] {
    raw->lost = true;  // the slots it held are abandoned at the next try_send
    if (raw->opt.on_peer_lost) raw->opt.on_peer_lost();
  };
  impl->zmq = ZmqSendChannel::connect(std::move(ctx), endpoint, std::move(hello), std::move(z));
  return std::unique_ptr<CudaIpcSendChannel>(new CudaIpcSendChannel(std::move(impl)));
}

CudaIpcSendChannel::~CudaIpcSendChannel() = default;

CudaIpcSendChannel::Impl::~Impl() {
  zmq.reset();  // no more callbacks from its I/O thread
  releases.close();
  DeviceScope scope(opt.device);
  if (copy) (void)cudaStreamSynchronize(copy);
  for (auto& s : slots) {
    s->sources.clear();
    // A slot the receiver may still have open stays allocated: CUDA wants importers to
    // close a handle before its exporter frees the memory; the process exit frees it.
    if (s->in_use || s->abandoned) continue;
    (void)cudaFree(s->ptr);
    (void)cudaEventDestroy(s->ready);
    (void)cudaEventDestroy(s->done);
    (void)cudaEventDestroy(s->after_caller);
  }
  if (copy) (void)cudaStreamDestroy(copy);
}

void CudaIpcSendChannel::Impl::drain_releases() {
  for (;;) {
    zmq::message_t msg;
    if (!releases.recv(msg, zmq::recv_flags::dontwait)) break;
    try {
      msgpack::object_handle oh = unpack_bounded(msg.data<char>(), msg.size());
      MapReader r(oh.get(), "release");
      if (r.u64("version") != kWireVersion || r.str("kind") != "cuda_ipc_release") continue;
      const uint64_t id = r.u64("slot"), use = r.u64("use");
      if (id < slots.size() && slots[id]->in_use && slots[id]->use == use) slots[id]->in_use = false;
    } catch (const std::exception&) {
      // Only our receivers know this endpoint; anything else is dropped.
    }
  }
}

void CudaIpcSendChannel::Impl::forget_finished_sources() {
  for (auto& s : slots)
    if (!s->sources.empty() && cudaEventQuery(s->ready) == cudaSuccess) s->sources.clear();
  (void)cudaGetLastError();
}

CudaIpcSendChannel::Impl::Slot& CudaIpcSendChannel::Impl::slot_for(size_t bytes) {
  Slot* best = nullptr;
  for (auto& s : slots)
    if (!s->in_use && !s->abandoned && s->capacity >= bytes && (!best || s->capacity < best->capacity)) best = s.get();
  if (best) return *best;
  auto s = std::make_unique<Slot>();
  s->id = static_cast<uint32_t>(slots.size());
  s->capacity = align_up(std::max<size_t>(bytes, 1), kSlotGranule);
  // cudaMalloc, not the pool: only a cudaMalloc allocation has a legacy IPC handle.
  SC_CUDA_CHECK(cudaMalloc(&s->ptr, s->capacity));
  cudaIpcMemHandle_t mh;
  SC_CUDA_CHECK(cudaIpcGetMemHandle(&mh, s->ptr));
  s->mem_handle = handle_bytes(mh);
  SC_CUDA_CHECK(cudaEventCreateWithFlags(&s->ready, cudaEventDisableTiming | cudaEventInterprocess));
  SC_CUDA_CHECK(cudaEventCreateWithFlags(&s->done, cudaEventDisableTiming | cudaEventInterprocess));
  SC_CUDA_CHECK(cudaEventCreateWithFlags(&s->after_caller, cudaEventDisableTiming));
  cudaIpcEventHandle_t eh;
  SC_CUDA_CHECK(cudaIpcGetEventHandle(&eh, s->ready));
  s->ready_handle = handle_bytes(eh);
  SC_CUDA_CHECK(cudaIpcGetEventHandle(&eh, s->done));
  s->done_handle = handle_bytes(eh);
  slots.push_back(std::move(s));
  return *slots.back();
}

bool CudaIpcSendChannel::wait_ready(std::chrono::milliseconds timeout) { return impl_->zmq->wait_ready(timeout); }

bool CudaIpcSendChannel::try_send(PacketPtr packet) {
  Impl& m = *impl_;
  std::lock_guard lk(m.mu);
  if (!m.zmq->ready() || m.zmq->stats().credits <= 0) {
    ++m.waits;
    return false;
  }
  Layout layout;
  try {
    SC_CHECK(!packet->request.initial_latents.defined() || packet->request.initial_latents.device().is_cpu(),
             Errc::unsupported, "CUDA IPC: initial latents must be a CPU tensor");
    for (const auto& [name, t] : packet->tensors) {
      if (!t.defined() || t.device().is_cpu()) continue;
      SC_CHECK(t.device().index == m.opt.device, Errc::invalid_argument,
               "CUDA IPC: tensor '" << name << "' is on " << t.device().str() << " but this sender sends from cuda:"
                                    << m.opt.device);
      SC_CHECK(t.is_contiguous(), Errc::unsupported,
               "CUDA IPC: tensor '" << name << "' is not contiguous; make it contiguous on its lane first");
      layout.entries.push_back({name, t, layout.total});
      layout.total = align_up(layout.total + t.nbytes(), kAlign);
    }
  } catch (const std::exception& e) {
    if (m.opt.on_failed) m.opt.on_failed(packet, e.what());
    return true;
  }
  if (layout.entries.empty()) return m.zmq->try_send(std::move(packet));  // CPU tensors only

  Impl::Slot* slot = nullptr;
  PacketPtr wire;
  try {
    DeviceScope scope(m.opt.device);
    if (m.lost.exchange(false))
      for (auto& s : m.slots)
        if (s->in_use) s->abandoned = true;
    m.drain_releases();
    m.forget_finished_sources();
    slot = &m.slot_for(layout.total);
    // The copy waits for what the caller enqueued so far and for the receiver's last read.
    SC_CUDA_CHECK(cudaEventRecord(slot->after_caller, static_cast<cudaStream_t>(current_stream())));
    SC_CUDA_CHECK(cudaStreamWaitEvent(m.copy, slot->after_caller, 0));
    SC_CUDA_CHECK(cudaStreamWaitEvent(m.copy, slot->done, 0));
    for (const auto& e : layout.entries)
      SC_CUDA_CHECK(cudaMemcpyAsync(static_cast<char*>(slot->ptr) + e.offset, e.tensor.data(), e.tensor.nbytes(),
                                    cudaMemcpyDeviceToDevice, m.copy));
    SC_CUDA_CHECK(cudaEventRecord(slot->ready, m.copy));
    slot->use = m.next_use++;

    msgpack::sbuffer buf;
    msgpack::packer<msgpack::sbuffer> pk(buf);
    pk.pack_map(11);
    pk.pack("version"), pk.pack(kWireVersion);
    pk.pack("capacity"), pk.pack(static_cast<uint64_t>(slot->capacity));
    pk.pack("pid"), pk.pack(static_cast<int64_t>(getpid()));
    pk.pack("pci"), pk.pack(m.pci);
    pk.pack("slot"), pk.pack(slot->id);
    pk.pack("use"), pk.pack(slot->use);
    pk.pack("release"), pk.pack(m.release_endpoint);
    pk.pack("mem"), pack_bin(pk, slot->mem_handle);
    pk.pack("ready"), pack_bin(pk, slot->ready_handle);
    pk.pack("done"), pack_bin(pk, slot->done_handle);
    pk.pack("tensors"), pk.pack_array(static_cast<uint32_t>(layout.entries.size()));
    for (const auto& e : layout.entries) {
      pk.pack_map(4);
      pk.pack("name"), pk.pack(e.name);
      pk.pack("dtype"), pk.pack(std::string(dtype_name(e.tensor.dtype())));
      pk.pack("shape"), pk.pack_array(static_cast<uint32_t>(e.tensor.ndim()));
      for (int64_t d : e.tensor.shape()) pk.pack(d);
      pk.pack("offset"), pk.pack(static_cast<uint64_t>(e.offset));
    }
    Tensor desc = Tensor::empty({static_cast<int64_t>(buf.size())}, DType::u8);
    std::memcpy(desc.data(), buf.data(), buf.size());

    wire = std::make_shared<Packet>(*packet);
    for (const auto& e : layout.entries) wire->tensors.erase(e.name);
    wire->tensors[kCudaIpcDescriptor] = std::move(desc);
  } catch (const std::exception& e) {
    if (m.opt.on_failed) m.opt.on_failed(packet, e.what());
    return true;
  }
  // The copy is enqueued either way: the slot keeps the sources until it has run.
  for (auto& e : layout.entries) slot->sources.push_back(std::move(e.tensor));
  if (!m.zmq->try_send(wire)) {
    ++m.waits;  // the credit went (peer lost) between the check and now; the slot stays free
    return false;
  }
  slot->in_use = true;
  m.gpu_bytes += layout.total;
  return true;
}

ChannelStats CudaIpcSendChannel::stats() const {
  ChannelStats s = impl_->zmq->stats();
  std::lock_guard lk(impl_->mu);
  s.bytes += impl_->gpu_bytes;
  s.credit_waits += impl_->waits;
  return s;
}

bool CudaIpcSendChannel::ready() const { return impl_->zmq->ready(); }
uint64_t CudaIpcSendChannel::peer_losses() const { return impl_->zmq->peer_losses(); }

int CudaIpcSendChannel::slots() const {
  std::lock_guard lk(impl_->mu);
  return static_cast<int>(impl_->slots.size());
}

int CudaIpcSendChannel::slots_in_use() const {
  std::lock_guard lk(impl_->mu);
  impl_->drain_releases();
  int n = 0;
  for (const auto& s : impl_->slots) n += s->in_use && !s->abandoned;
  return n;
}

size_t CudaIpcSendChannel::slot_bytes() const {
  std::lock_guard lk(impl_->mu);
  size_t n = 0;
  for (const auto& s : impl_->slots) n += s->capacity;
  return n;
}

// ---------------------------------------------------------------- receiver

namespace {

/// Sends release messages to senders; shared with the leases of mapped tensors, which may
/// outlive the channel. Serialised by its mutex (ZeroMQ sockets are not thread-safe).
struct Releaser {
  std::shared_ptr<zmq::context_t> ctx;
  std::mutex mu;
  std::unordered_map<std::string, zmq::socket_t> push;  // by sender endpoint

  void send(const std::string& endpoint, uint32_t slot, uint64_t use) {
    std::lock_guard lk(mu);
    auto it = push.find(endpoint);
    if (it == push.end()) {
      zmq::socket_t s(*ctx, zmq::socket_type::push);
      // A little linger: the releases of a receiver that is closing still reach the sender.
      s.set(zmq::sockopt::linger, 500);
      s.connect(endpoint);
      it = push.emplace(endpoint, std::move(s)).first;
    }
    // dontwait: a sender that is gone cannot take it, and nobody waits for it then.
    (void)it->second.send(encode_release(slot, use), zmq::send_flags::dontwait);
  }
  ~Releaser() {
    for (auto& [ep, s] : push) s.close();
  }
};

/// One sender slot opened in this process: closed when the cache and every lease let go.
struct OpenSlot {
  int device = 0;
  void* ptr = nullptr;
  cudaEvent_t ready = nullptr, done = nullptr;
  ~OpenSlot() {
    DeviceScope scope(device);
    if (ptr) (void)cudaIpcCloseMemHandle(ptr);
    if (ready) (void)cudaEventDestroy(ready);
    if (done) (void)cudaEventDestroy(done);
    (void)cudaGetLastError();
  }
};

/// Held by the tensors delivered mapped over one slot use: when the last one is gone, the
/// slot's `done` event is recorded on the releasing thread's current stream (its last
/// reader, as the allocator frees in stream order) and the sender is told.
struct Lease {
  std::shared_ptr<OpenSlot> slot;
  std::shared_ptr<Releaser> releaser;
  std::string endpoint;
  uint32_t id = 0;
  uint64_t use = 0;
  ~Lease() {
    try {
      DeviceScope scope(slot->device);
      if (cudaEventRecord(slot->done, static_cast<cudaStream_t>(current_stream())) != cudaSuccess)
        (void)cudaGetLastError();
      releaser->send(endpoint, id, use);
    } catch (...) {
      // A destructor must not throw; the sender then keeps the slot until it stops.
    }
  }
};

}  // namespace

struct CudaIpcRecvChannel::Impl {
  CudaIpcRecvOptions opt;
  std::string pci;
  std::shared_ptr<Releaser> releaser;
  std::unique_ptr<ZmqRecvChannel> zmq;
  void* fence = nullptr;  // one byte the legacy-stream fence copies into (see deliver)
  bool device_set = false;  // on the I/O thread

  // I/O thread only:
  std::unordered_map<std::string, std::shared_ptr<OpenSlot>> open;  // by memory handle bytes

  std::atomic<uint64_t> mapped{0}, copied{0}, failed{0}, gpu_bytes{0};
  std::atomic<int> open_count{0};

  void deliver(PacketPtr p, Receipt r);
  std::shared_ptr<OpenSlot> open_slot(const std::string& mem, const std::string& ready, const std::string& done);
  ~Impl();
};

CudaIpcRecvChannel::CudaIpcRecvChannel(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}

std::unique_ptr<CudaIpcRecvChannel> CudaIpcRecvChannel::bind(std::shared_ptr<zmq::context_t> ctx,
                                                             const std::string& endpoint,
                                                             CudaIpcRecvOptions options) {
  require_device(options.device, "CUDA IPC receiver");
  SC_CHECK(options.on_packet, Errc::invalid_argument, "a receive channel needs an on_packet callback");
  auto impl = std::make_shared<Impl>();
  impl->opt = std::move(options);
  {
    DeviceScope scope(impl->opt.device);
    impl->pci = pci_bus_id(impl->opt.device);
    SC_CUDA_CHECK(cudaMalloc(&impl->fence, kAlign));
  }
  impl->releaser = std::make_shared<Releaser>();
  impl->releaser->ctx = ctx;

  ZmqRecvOptions z;
  z.hello = impl->opt.hello;
  z.credits = impl->opt.credits;
  z.on_note = impl->opt.on_note;
  Impl* raw = impl.get();
  z.on_packet = [raw](PacketPtr p, Receipt r) { raw->deliver(std::move(p), std::move(r)); };
  impl->zmq = ZmqRecvChannel::bind(std::move(ctx), endpoint, std::move(z));
  return std::unique_ptr<CudaIpcRecvChannel>(new CudaIpcRecvChannel(std::move(impl)));
}

CudaIpcRecvChannel::~CudaIpcRecvChannel() = default;

CudaIpcRecvChannel::Impl::~Impl() {
  zmq.reset();  // its I/O thread, the only user of `open`, has stopped
  open.clear();  // slots still held by delivered tensors close with their last lease
  DeviceScope scope(opt.device);
  if (fence) (void)cudaFree(fence);
}

std::shared_ptr<OpenSlot> CudaIpcRecvChannel::Impl::open_slot(const std::string& mem, const std::string& ready,
                                                              const std::string& done) {
  auto it = open.find(mem);
  if (it != open.end()) return it->second;
  auto s = std::make_shared<OpenSlot>();
  s->device = opt.device;
  cudaIpcMemHandle_t mh;
  std::memcpy(&mh, mem.data(), sizeof mh);
  cudaIpcEventHandle_t eh;
  SC_CUDA_CHECK(cudaIpcOpenMemHandle(&s->ptr, mh, cudaIpcMemLazyEnablePeerAccess));
  std::memcpy(&eh, ready.data(), sizeof eh);
  SC_CUDA_CHECK(cudaIpcOpenEventHandle(&s->ready, eh));
  std::memcpy(&eh, done.data(), sizeof eh);
  SC_CUDA_CHECK(cudaIpcOpenEventHandle(&s->done, eh));
  open.emplace(mem, s);
  open_count = static_cast<int>(open.size());
  return s;
}

void CudaIpcRecvChannel::Impl::deliver(PacketPtr p, Receipt receipt) {
  auto d = p->tensors.find(kCudaIpcDescriptor);
  if (d == p->tensors.end()) {  // a packet of CPU tensors only
    opt.on_packet(std::move(p), std::move(receipt));
    return;
  }
  const Tensor desc = d->second;
  p->tensors.erase(d);
  std::string release_to;
  uint32_t slot_id = 0;
  uint64_t use = 0;
  try {
    if (!device_set) {
      SC_CUDA_CHECK(cudaSetDevice(opt.device));  // ZeroMQ's I/O thread runs only our CUDA calls
      device_set = true;
    }
    msgpack::object_handle oh = unpack_bounded(static_cast<const char*>(desc.data()), desc.nbytes());
    MapReader r(oh.get(), "@cuda_ipc");
    if (r.u64("version") != kWireVersion)
      throw MsgpackFieldError("@cuda_ipc descriptor of another wire version");
    release_to = r.str("release");
    slot_id = static_cast<uint32_t>(r.u64("slot"));
    use = r.u64("use");
    const std::string mem = handle_bytes(handle_from<cudaIpcMemHandle_t>(r.at("mem"), "mem"));
    const std::string ready = handle_bytes(handle_from<cudaIpcEventHandle_t>(r.at("ready"), "ready"));
    const std::string done = handle_bytes(handle_from<cudaIpcEventHandle_t>(r.at("done"), "done"));
    const bool map = opt.map_same_device && r.str("pci") == pci;

    struct Entry {
      std::string name;
      DType dtype;
      Shape shape;
      size_t offset, bytes;
    };
    std::vector<Entry> entries;
    size_t end = 0;
    const msgpack::object& list = r.at("tensors");
    if (list.type != msgpack::type::ARRAY || list.via.array.size > kMaxWireTensors)
      throw MsgpackFieldError("@cuda_ipc.tensors must be an array of at most 256 entries");
    for (uint32_t i = 0; i < list.via.array.size; ++i) {
      MapReader t(list.via.array.ptr[i], "@cuda_ipc.tensors[" + std::to_string(i) + "]");
      Entry e{t.str("name"), DType::f32, {}, t.u64("offset"), 0};
      const std::string dt = t.str("dtype");
      bool known = false;
      for (DType c : {DType::f32, DType::f16, DType::bf16, DType::i8, DType::u8, DType::i32, DType::i64, DType::f8_e4m3})
        if (dt == dtype_name(c)) e.dtype = c, known = true;
      if (!known) throw MsgpackFieldError("@cuda_ipc: unknown dtype '" + dt.substr(0, 32) + "'");
      const msgpack::object& shape = t.at("shape");
      if (shape.type != msgpack::type::ARRAY || shape.via.array.size > kMaxDims)
        throw MsgpackFieldError("@cuda_ipc: a shape must be an array of at most " + std::to_string(kMaxDims));
      size_t bytes = dtype_size(e.dtype);
      for (uint32_t k = 0; k < shape.via.array.size; ++k) {
        const msgpack::object& v = shape.via.array.ptr[k];
        if (v.type != msgpack::type::POSITIVE_INTEGER || v.via.u64 > (uint64_t(1) << 40))
          throw MsgpackFieldError("@cuda_ipc: a dimension must be a non-negative integer below 2^40");
        e.shape.push_back(static_cast<int64_t>(v.via.u64));
        if (v.via.u64 != 0 && bytes > (uint64_t(1) << 40) / v.via.u64)
          throw MsgpackFieldError("@cuda_ipc: tensor '" + e.name + "' is larger than 1 TiB");
        bytes *= v.via.u64;
      }
      e.bytes = bytes;
      end = std::max(end, e.offset + bytes);
      entries.push_back(std::move(e));
    }

    if (end > r.u64("capacity"))
      throw MsgpackFieldError("@cuda_ipc: the tensors end at byte " + std::to_string(end) + ", past the slot's " +
                              std::to_string(r.u64("capacity")));
    auto slot = open_slot(mem, ready, done);
    auto stream = static_cast<cudaStream_t>(opt.stream);
    // On the GPU: this stream goes on once the sender's copy into the slot has run.
    SC_CUDA_CHECK(cudaStreamWaitEvent(stream, slot->ready, 0));
    if (map) {
      // On the legacy stream, a one-byte copy after the wait is work that every blocking
      // (lane) stream is ordered after; a bare event wait might not count as such.
      if (!stream && end > 0)
        SC_CUDA_CHECK(cudaMemcpyAsync(fence, slot->ptr, 1, cudaMemcpyDeviceToDevice, stream));
      auto lease = std::make_shared<Lease>();
      lease->slot = slot;
      lease->releaser = releaser;
      lease->endpoint = release_to;
      lease->id = slot_id;
      lease->use = use;
      for (auto& e : entries) {
        auto storage = Storage::wrap(static_cast<char*>(slot->ptr) + e.offset, e.bytes, Device::cuda(opt.device), lease);
        p->tensors[e.name] = Tensor::from_storage(std::move(storage), 0, e.shape, e.dtype);
      }
      ++mapped;
      gpu_bytes += end;
    } else {
      std::shared_ptr<Storage> mine;
      {
        StreamGuard guard(opt.stream);  // the pool allocation is ordered on our stream
        mine = allocate_cuda(std::max<size_t>(end, 1), opt.device);
      }
      // One copy of the used range (cudaMemcpyDefault: a peer copy when the slot is on another GPU).
      if (end > 0) SC_CUDA_CHECK(cudaMemcpyAsync(mine->data(), slot->ptr, end, cudaMemcpyDefault, stream));
      SC_CUDA_CHECK(cudaEventRecord(slot->done, stream));
      releaser->send(release_to, slot_id, use);
      for (auto& e : entries) p->tensors[e.name] = Tensor::from_storage(mine, e.offset, e.shape, e.dtype);
      ++copied;
      gpu_bytes += end;
    }
  } catch (const std::exception& e) {
    ++failed;
    // The sender's slot is not ours to keep: hand it back (its last reader was not us).
    if (!release_to.empty()) {
      try {
        releaser->send(release_to, slot_id, use);
      } catch (...) {
      }
    }
    for (auto it = p->tensors.begin(); it != p->tensors.end();)
      it = it->second.device().is_cuda() ? p->tensors.erase(it) : std::next(it);
    if (opt.on_failed) opt.on_failed(std::move(p), std::string("CUDA IPC receive: ") + e.what());
    return;  // the receipt goes with this scope: the credit returns
  }
  opt.on_packet(std::move(p), std::move(receipt));
}

ChannelStats CudaIpcRecvChannel::stats() const {
  ChannelStats s = impl_->zmq->stats();
  s.refused += impl_->failed.load();
  s.bytes += impl_->gpu_bytes.load();
  return s;
}
const WireCounters& CudaIpcRecvChannel::wire_counters() const { return impl_->zmq->wire_counters(); }
const std::string& CudaIpcRecvChannel::endpoint() const { return impl_->zmq->endpoint(); }
uint64_t CudaIpcRecvChannel::mapped() const { return impl_->mapped.load(); }
uint64_t CudaIpcRecvChannel::copied() const { return impl_->copied.load(); }
int CudaIpcRecvChannel::open_slots() const { return impl_->open_count.load(); }

}  // namespace stagecraft::transport
