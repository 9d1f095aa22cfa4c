// NCCL channel (see nccl_channel.hpp). Compiled only with CUDA and nccl.h
// (transport/CMakeLists.txt); libnccl.so.2 itself is opened on first use.
#include "transport/nccl_channel.hpp"

#include <cuda_runtime_api.h>
#include <dlfcn.h>
#include <nccl.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <thread>
#include <type_traits>

#include "core/allocator.hpp"
#include "core/cuda_check.hpp"
#include "core/device.hpp"
#include "core/stream.hpp"
#include "transport/msgpack_read.hpp"
#include "transport/zmq_channel.hpp"

namespace stagecraft::transport {

namespace {

/// The NCCL entry points, resolved once from libnccl.so.2.
struct NcclApi {
  ncclResult_t (*GetUniqueId)(ncclUniqueId*) = nullptr;
  ncclResult_t (*CommInitRankConfig)(ncclComm_t*, int, ncclUniqueId, int, ncclConfig_t*) = nullptr;
  ncclResult_t (*CommGetAsyncError)(ncclComm_t, ncclResult_t*) = nullptr;
  ncclResult_t (*CommAbort)(ncclComm_t) = nullptr;
  ncclResult_t (*Send)(const void*, size_t, ncclDataType_t, int, ncclComm_t, cudaStream_t) = nullptr;
  ncclResult_t (*Recv)(void*, size_t, ncclDataType_t, int, ncclComm_t, cudaStream_t) = nullptr;
  ncclResult_t (*GroupStart)() = nullptr;
  ncclResult_t (*GroupEnd)() = nullptr;
  const char* (*GetErrorString)(ncclResult_t) = nullptr;
  std::string error;  ///< why it did not load; "" when it did
};

const NcclApi& nccl() {
  static const NcclApi api = [] {
    NcclApi a;
    void* lib = dlopen("libnccl.so.2", RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
      const char* e = dlerror();
      a.error = std::string("NCCL is not installed here (dlopen libnccl.so.2: ") + (e ? e : "?") +
                "); install NCCL or put the folder holding libnccl.so.2 on LD_LIBRARY_PATH";
      return a;
    }
    auto sym = [&](auto& fn, const char* name) {
      fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(dlsym(lib, name));
      if (!fn && a.error.empty()) a.error = std::string("libnccl.so.2 has no ") + name + " (NCCL older than 2.14?)";
    };
    sym(a.GetUniqueId, "ncclGetUniqueId");
    sym(a.CommInitRankConfig, "ncclCommInitRankConfig");
    sym(a.CommGetAsyncError, "ncclCommGetAsyncError");
    sym(a.CommAbort, "ncclCommAbort");
    sym(a.Send, "ncclSend");
    sym(a.Recv, "ncclRecv");
    sym(a.GroupStart, "ncclGroupStart");
    sym(a.GroupEnd, "ncclGroupEnd");
    sym(a.GetErrorString, "ncclGetErrorString");
    return a;
  }();
  return api;
}

const NcclApi& nccl_or_throw() {
  const NcclApi& a = nccl();
  SC_CHECK(a.error.empty(), Errc::unsupported, a.error);
  return a;
}

#define SC_NCCL_CHECK(call)                                                                              \
  do {                                                                                                   \
    const ncclResult_t sc_nccl_r_ = (call);                                                              \
    if (sc_nccl_r_ != ncclSuccess && sc_nccl_r_ != ncclInProgress)                                       \
      SC_FAIL(Errc::cuda, #call << " failed: " << nccl().GetErrorString(sc_nccl_r_));                   \
  } while (0)


/// Polls a non-blocking communicator until its last call finished; throws on an error or
/// when `stop` says so (the caller then aborts it).
void wait_comm(ncclComm_t comm, const std::function<bool()>& stop, const char* what) {
  for (;;) {
    ncclResult_t state = ncclSuccess;
    SC_NCCL_CHECK(nccl().CommGetAsyncError(comm, &state));
    if (state == ncclSuccess) return;
    if (state != ncclInProgress) SC_FAIL(Errc::cuda, "NCCL " << what << " failed: " << nccl().GetErrorString(state));
    if (stop && stop()) SC_FAIL(Errc::io, "NCCL " << what << " stopped before it finished (channel closing or peer lost)");
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
}

bool parse_dtype(const std::string& s, DType& out) {
  for (DType c : {DType::f32, DType::f16, DType::bf16, DType::i8, DType::u8, DType::i32, DType::i64, DType::f8_e4m3})
    if (s == dtype_name(c)) {
      out = c;
      return true;
    }
  return false;
}

}  // namespace

std::string nccl_unavailable_reason() {
  if (!cuda_available()) return cuda_unavailable_reason();
  return nccl().error;
}

// ---------------------------------------------------------------- NcclComm

std::string NcclComm::new_unique_id() {
  const NcclApi& api = nccl_or_throw();
  ncclUniqueId id;
  SC_NCCL_CHECK(api.GetUniqueId(&id));
  return std::string(id.internal, sizeof id.internal);
}

std::unique_ptr<NcclComm> NcclComm::init(const std::string& unique_id, int nranks, int rank, int device,
                                         const std::function<bool()>& stop) {
  const NcclApi& api = nccl_or_throw();
  SC_CHECK(unique_id.size() == sizeof(ncclUniqueId::internal), Errc::invalid_argument,
           "NCCL: a unique id has " << sizeof(ncclUniqueId::internal) << " bytes, got " << unique_id.size());
  ncclUniqueId id;
  std::memcpy(id.internal, unique_id.data(), sizeof id.internal);
  DeviceScope scope(device);
  std::unique_ptr<NcclComm> c(new NcclComm());
  c->device_ = device;
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;  // so a set-up whose peer never comes can be aborted
  ncclComm_t comm = nullptr;
  SC_NCCL_CHECK(api.CommInitRankConfig(&comm, nranks, id, rank, &config));
  c->comm_ = comm;
  wait_comm(comm, stop, "communicator set-up");  // on a throw, ~NcclComm aborts it
  return c;
}

NcclComm::~NcclComm() { abort(); }

void NcclComm::abort() {
  if (!comm_ || aborted_) return;
  aborted_ = true;
  DeviceScope scope(device_);
  (void)nccl().CommAbort(static_cast<ncclComm_t>(comm_));
}

void NcclComm::run_group(const std::vector<Op>& ops, void* stream, const std::function<bool()>& stop) {
  const NcclApi& api = nccl_or_throw();
  SC_CHECK(!aborted_, Errc::io, "NCCL: the communicator was aborted");
  DeviceScope scope(device_);
  auto comm = static_cast<ncclComm_t>(comm_);
  auto s = static_cast<cudaStream_t>(stream);
  for (const Op& op : ops) {
    SC_CHECK(op.tensor.device() == Device::cuda(device_) && op.tensor.is_contiguous(), Errc::invalid_argument,
             "NCCL: tensors must be contiguous on cuda:" << device_ << ", got one on " << op.tensor.device().str());
  }
  SC_NCCL_CHECK(api.GroupStart());
  for (const Op& op : ops) {
    // Bytes, whatever the dtype: nothing is reduced, so the element type does not matter.
    if (op.send)
      SC_NCCL_CHECK(api.Send(op.tensor.data(), op.tensor.nbytes(), ncclUint8, op.peer, comm, s));
    else
      SC_NCCL_CHECK(api.Recv(op.tensor.data(), op.tensor.nbytes(), ncclUint8, op.peer, comm, s));
  }
  SC_NCCL_CHECK(api.GroupEnd());
  wait_comm(comm, stop, "send/receive");  // enqueued (not done) once this returns
}

// ---------------------------------------------------------------- sender

struct NcclSendChannel::Impl {
  NcclSendOptions opt;
  std::unique_ptr<ZmqSendChannel> zmq;
  cudaStream_t stream = nullptr;

  struct Job {
    PacketPtr packet;  ///< for on_failed
    std::string id;
    std::vector<Tensor> tensors;
    cudaEvent_t after_caller = nullptr;  ///< the caller's stream had enqueued them
    cudaEvent_t sent = nullptr;          ///< recorded after the sends (worker)
  };
  mutable std::mutex mu;
  std::condition_variable cv;
  std::deque<Job> queue;
  std::string id;  ///< the communicator's unique id; a new one after the peer was lost
  std::atomic<bool> lost{false}, stopping{false};
  /// A send or set-up failed: the next packet brings a new id. NCCL's unique id names a
  /// bootstrap that serves one set-up, so retrying the old id would wait for nobody.
  std::atomic<bool> renew{false};
  uint64_t gpu_bytes = 0, waits = 0;
  std::thread worker;

  // Worker only:
  std::unique_ptr<NcclComm> comm;
  std::string comm_id;
  std::deque<Job> inflight;  ///< sent, tensors held until their sends have run

  void run();
  void finish_inflight(bool all);
  std::string current_id() {
    std::lock_guard lk(mu);
    return id;
  }
  ~Impl();
};

NcclSendChannel::NcclSendChannel(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

std::unique_ptr<NcclSendChannel> NcclSendChannel::connect(std::shared_ptr<zmq::context_t> ctx,
                                                          const std::string& endpoint, Hello hello,
                                                          NcclSendOptions options) {
  const std::string why = nccl_unavailable_reason();
  SC_CHECK(why.empty(), Errc::unsupported, "NCCL sender: " << why);
  SC_CHECK(options.device >= 0 && options.device < cuda_device_count(), Errc::invalid_argument,
           "NCCL sender: there is no cuda:" << options.device);
  auto impl = std::make_unique<Impl>();
  impl->opt = std::move(options);
  impl->id = NcclComm::new_unique_id();
  {
    DeviceScope scope(impl->opt.device);
    SC_CUDA_CHECK(cudaStreamCreate(&impl->stream));
  }
  ZmqSendOptions z;
  z.on_credit = impl->opt.on_credit;
  z.on_failed = impl->opt.on_failed;
  z.heartbeat = impl->opt.heartbeat;
  z.peer_timeout = impl->opt.peer_timeout;
  Impl* raw = impl.get();
  z.on_peer_lost = [raw] {
    raw->lost = true;  // the worker aborts the communicator; the next packet brings a new id
    raw->cv.notify_all();
    if (raw->opt.on_peer_lost) raw->opt.on_peer_lost();
  };
  impl->zmq = ZmqSendChannel::connect(std::move(ctx), endpoint, std::move(hello), std::move(z));
  impl->worker = std::thread([raw] { raw->run(); });
  return std::unique_ptr<NcclSendChannel>(new NcclSendChannel(std::move(impl)));
}

NcclSendChannel::~NcclSendChannel() = default;

NcclSendChannel::Impl::~Impl() {
  stopping = true;
  cv.notify_all();
  if (worker.joinable()) worker.join();
  zmq.reset();
  DeviceScope scope(opt.device);
  for (auto& j : queue) {
    if (j.after_caller) (void)cudaEventDestroy(j.after_caller);
  }
  if (stream) (void)cudaStreamDestroy(stream);
}

void NcclSendChannel::Impl::finish_inflight(bool all) {
  while (!inflight.empty()) {
    Job& j = inflight.front();
    if (!all && cudaEventQuery(j.sent) == cudaErrorNotReady) break;
    (void)cudaGetLastError();
    (void)cudaEventDestroy(j.sent);
    inflight.pop_front();  // the tensors may go now: their bytes have left
  }
}

void NcclSendChannel::Impl::run() {
  (void)cudaSetDevice(opt.device);
  auto stop = [this] { return stopping.load() || lost.load(); };
  for (;;) {
    Job job;
    {
      std::unique_lock lk(mu);
      cv.wait_for(lk, inflight.empty() ? std::chrono::milliseconds(100) : std::chrono::milliseconds(1),
                  [&] { return stopping || (lost && comm) || !queue.empty(); });
      if (stopping) break;
      if (lost && comm) {
        lk.unlock();
        comm.reset();  // aborts what waited for the lost peer
        finish_inflight(true);
        lk.lock();
      }
      if (queue.empty()) {
        lk.unlock();
        finish_inflight(false);
        continue;
      }
      job = std::move(queue.front());
      queue.pop_front();
    }
    if (job.id != current_id()) {
      // Queued for a communicator that failed or a peer that was lost: its header is gone
      // or names a dead id. Said, so that its job fails instead of waiting.
      (void)cudaEventDestroy(job.after_caller);
      if (opt.on_failed)
        opt.on_failed(job.packet, "NCCL send: the communicator this packet was queued for failed or lost its peer");
      continue;
    }
    try {
      if (!comm || comm_id != job.id) {
        comm.reset();
        comm = NcclComm::init(job.id, 2, 0, opt.device, stop);  // rank 0: the sender
        comm_id = job.id;
      }
      SC_CUDA_CHECK(cudaStreamWaitEvent(stream, job.after_caller, 0));
      std::vector<NcclComm::Op> ops;
      for (auto& t : job.tensors) ops.push_back({true, t, 1});
      comm->run_group(ops, stream, stop);
      SC_CUDA_CHECK(cudaEventCreateWithFlags(&job.sent, cudaEventDisableTiming));
      SC_CUDA_CHECK(cudaEventRecord(job.sent, stream));
      (void)cudaEventDestroy(job.after_caller);
      job.after_caller = nullptr;
      inflight.push_back(std::move(job));
    } catch (const std::exception& e) {
      if (job.after_caller) (void)cudaEventDestroy(job.after_caller);
      comm.reset();
      renew = true;
      if (opt.on_failed) opt.on_failed(job.packet, std::string("NCCL send: ") + e.what());
    }
    finish_inflight(false);
  }
  comm.reset();
  finish_inflight(true);
}

bool NcclSendChannel::wait_ready(std::chrono::milliseconds timeout) { return impl_->zmq->wait_ready(timeout); }

bool NcclSendChannel::try_send(PacketPtr packet) {
  Impl& m = *impl_;
  std::lock_guard lk(m.mu);
  if (!m.zmq->ready() || m.zmq->stats().credits <= 0) {
    ++m.waits;
    return false;
  }
  Impl::Job job;
  PacketPtr wire;
  try {
    SC_CHECK(!packet->request.initial_latents.defined() || packet->request.initial_latents.device().is_cpu(),
             Errc::unsupported, "NCCL: initial latents must be a CPU tensor");
    msgpack::sbuffer buf;
    msgpack::packer<msgpack::sbuffer> pk(buf);
    std::vector<std::pair<std::string, Tensor>> gpu;
    for (const auto& [name, t] : packet->tensors) {
      if (!t.defined() || t.device().is_cpu()) continue;
      SC_CHECK(t.device().index == m.opt.device, Errc::invalid_argument,
               "NCCL: tensor '" << name << "' is on " << t.device().str() << " but this sender sends from cuda:"
                                << m.opt.device);
      SC_CHECK(t.is_contiguous(), Errc::unsupported, "NCCL: tensor '" << name << "' is not contiguous");
      gpu.emplace_back(name, t);
    }
    if (gpu.empty()) return m.zmq->try_send(std::move(packet));  // CPU tensors only
    // A new communicator for a new peer, or after a failed one.
    if (m.lost.exchange(false) | m.renew.exchange(false)) m.id = NcclComm::new_unique_id();
    pk.pack_map(3);
    pk.pack("version"), pk.pack(kWireVersion);
    pk.pack("id"), pk.pack_bin(static_cast<uint32_t>(m.id.size())), pk.pack_bin_body(m.id.data(), m.id.size());
    pk.pack("tensors"), pk.pack_array(static_cast<uint32_t>(gpu.size()));
    for (const auto& [name, t] : gpu) {
      pk.pack_map(3);
      pk.pack("name"), pk.pack(name);
      pk.pack("dtype"), pk.pack(std::string(dtype_name(t.dtype())));
      pk.pack("shape"), pk.pack_array(static_cast<uint32_t>(t.ndim()));
      for (int64_t d : t.shape()) pk.pack(d);
    }
    Tensor desc = Tensor::empty({static_cast<int64_t>(buf.size())}, DType::u8);
    std::memcpy(desc.data(), buf.data(), buf.size());
    wire = std::make_shared<Packet>(*packet);
    for (auto& [name, t] : gpu) {
      wire->tensors.erase(name);
      job.tensors.push_back(t);
    }
    wire->tensors[kNcclDescriptor] = std::move(desc);
    DeviceScope scope(m.opt.device);
    SC_CUDA_CHECK(cudaEventCreateWithFlags(&job.after_caller, cudaEventDisableTiming));
    SC_CUDA_CHECK(cudaEventRecord(job.after_caller, static_cast<cudaStream_t>(current_stream())));
  } catch (const std::exception& e) {
    if (job.after_caller) (void)cudaEventDestroy(job.after_caller);
    if (m.opt.on_failed) m.opt.on_failed(packet, e.what());
    return true;
  }
  if (!m.zmq->try_send(wire)) {
    (void)cudaEventDestroy(job.after_caller);
    ++m.waits;
    return false;
  }
  // Queued in the order the headers went, so the receiver's receives pair with these sends.
  job.packet = std::move(packet);
  job.id = m.id;
  for (const auto& t : job.tensors) m.gpu_bytes += t.nbytes();
  m.queue.push_back(std::move(job));
  m.cv.notify_all();
  return true;
}

ChannelStats NcclSendChannel::stats() const {
  ChannelStats s = impl_->zmq->stats();
  std::lock_guard lk(impl_->mu);
  s.bytes += impl_->gpu_bytes;
  s.credit_waits += impl_->waits;
  return s;
}

bool NcclSendChannel::ready() const { return impl_->zmq->ready(); }
uint64_t NcclSendChannel::peer_losses() const { return impl_->zmq->peer_losses(); }

// ---------------------------------------------------------------- receiver

struct NcclRecvChannel::Impl {
  NcclRecvOptions opt;
  std::unique_ptr<ZmqRecvChannel> zmq;

  struct Item {
    PacketPtr packet;
    Receipt receipt;
  };
  std::mutex mu;
  std::condition_variable cv;
  std::deque<Item> queue;
  std::atomic<bool> stopping{false};
  std::atomic<uint64_t> failed{0}, gpu_bytes{0};
  std::thread worker;

  // Worker only:
  std::unique_ptr<NcclComm> comm;
  std::string comm_id;
  /// Ids whose communicator failed here (the last few): a packet naming one fails at once
  /// instead of joining a bootstrap that will not answer again.
  std::deque<std::string> failed_ids;

  void run();
  void receive(Item& item);
  ~Impl();
};

NcclRecvChannel::NcclRecvChannel(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

std::unique_ptr<NcclRecvChannel> NcclRecvChannel::bind(std::shared_ptr<zmq::context_t> ctx,
                                                       const std::string& endpoint, NcclRecvOptions options) {
  const std::string why = nccl_unavailable_reason();
  SC_CHECK(why.empty(), Errc::unsupported, "NCCL receiver: " << why);
  SC_CHECK(options.device >= 0 && options.device < cuda_device_count(), Errc::invalid_argument,
           "NCCL receiver: there is no cuda:" << options.device);
  SC_CHECK(options.on_packet, Errc::invalid_argument, "a receive channel needs an on_packet callback");
  auto impl = std::make_unique<Impl>();
  impl->opt = std::move(options);
  ZmqRecvOptions z;
  z.hello = impl->opt.hello;
  z.credits = impl->opt.credits;
  z.on_note = impl->opt.on_note;
  Impl* raw = impl.get();
  z.on_packet = [raw](PacketPtr p, Receipt r) {
    {
      std::lock_guard lk(raw->mu);
      raw->queue.push_back({std::move(p), std::move(r)});
    }
    raw->cv.notify_all();
  };
  impl->worker = std::thread([raw] { raw->run(); });
  impl->zmq = ZmqRecvChannel::bind(std::move(ctx), endpoint, std::move(z));
  return std::unique_ptr<NcclRecvChannel>(new NcclRecvChannel(std::move(impl)));
}

NcclRecvChannel::~NcclRecvChannel() = default;

NcclRecvChannel::Impl::~Impl() {
  zmq.reset();  // nothing new arrives
  stopping = true;
  cv.notify_all();
  if (worker.joinable()) worker.join();
}

void NcclRecvChannel::Impl::run() {
  (void)cudaSetDevice(opt.device);
  for (;;) {
    Item item;
    {
      std::unique_lock lk(mu);
      cv.wait(lk, [&] { return stopping || !queue.empty(); });
      if (stopping) break;
      item = std::move(queue.front());
      queue.pop_front();
    }
    receive(item);
  }
  comm.reset();
}

void NcclRecvChannel::Impl::receive(Item& item) {
  PacketPtr& p = item.packet;
  auto d = p->tensors.find(kNcclDescriptor);
  if (d == p->tensors.end()) {
    opt.on_packet(std::move(p), std::move(item.receipt));
    return;
  }
  const Tensor desc = d->second;
  p->tensors.erase(d);
  bool in_nccl = false;
  std::string attempt;  // the id of the communicator this packet needs
  try {
    msgpack::object_handle oh = unpack_bounded(static_cast<const char*>(desc.data()), desc.nbytes());
    MapReader r(oh.get(), "@nccl");
    if (r.u64("version") != kWireVersion) throw MsgpackFieldError("@nccl descriptor of another wire version");
    const msgpack::object& id = r.at("id");
    if (id.type != msgpack::type::BIN || id.via.bin.size != sizeof(ncclUniqueId::internal))
      throw MsgpackFieldError("@nccl.id must be a binary of " + std::to_string(sizeof(ncclUniqueId::internal)) +
                              " bytes");
    const std::string unique_id(id.via.bin.ptr, id.via.bin.size);
    const msgpack::object& list = r.at("tensors");
    if (list.type != msgpack::type::ARRAY || list.via.array.size > kMaxWireTensors)
      throw MsgpackFieldError("@nccl.tensors must be an array of at most 256 entries");
    std::vector<std::pair<std::string, Tensor>> made;
    {
      StreamGuard guard(opt.stream);  // pool allocations ordered on the receives' stream
      for (uint32_t i = 0; i < list.via.array.size; ++i) {
        MapReader t(list.via.array.ptr[i], "@nccl.tensors[" + std::to_string(i) + "]");
        DType dt = DType::f32;
        if (!parse_dtype(t.str("dtype"), dt)) throw MsgpackFieldError("@nccl: unknown dtype");
        const msgpack::object& shape = t.at("shape");
        if (shape.type != msgpack::type::ARRAY || shape.via.array.size > kMaxDims)
          throw MsgpackFieldError("@nccl: a shape must be an array of at most " + std::to_string(kMaxDims));
        Shape s;
        uint64_t bytes = dtype_size(dt);
        for (uint32_t k = 0; k < shape.via.array.size; ++k) {
          const msgpack::object& v = shape.via.array.ptr[k];
          if (v.type != msgpack::type::POSITIVE_INTEGER || v.via.u64 > (uint64_t(1) << 40) ||
              (v.via.u64 != 0 && bytes > (uint64_t(1) << 40) / v.via.u64))
            throw MsgpackFieldError("@nccl: a shape of more than 1 TiB or with a negative dimension");
          bytes *= v.via.u64;
          s.push_back(static_cast<int64_t>(v.via.u64));
        }
        made.emplace_back(t.str("name"), Tensor::empty(s, dt, Device::cuda(opt.device)));
      }
    }
    if (std::find(failed_ids.begin(), failed_ids.end(), unique_id) != failed_ids.end())
      throw MsgpackFieldError("the NCCL communicator this packet names failed before (see the first failure); the "
                              "sender makes a new one after it hears of its own failure or loses this receiver");
    in_nccl = true;
    attempt = unique_id;
    if (!comm || comm_id != unique_id) {
      comm.reset();  // a new sender (or a restarted one): the old communicator is done
      comm = NcclComm::init(unique_id, 2, 1, opt.device, [this] { return stopping.load(); });  // rank 1
      comm_id = unique_id;
    }
    std::vector<NcclComm::Op> ops;
    for (auto& [name, t] : made) ops.push_back({false, t, 0});
    comm->run_group(ops, opt.stream, [this] { return stopping.load(); });
    for (auto& [name, t] : made) {
      gpu_bytes += t.nbytes();
      p->tensors[name] = std::move(t);
    }
  } catch (const std::exception& e) {
    ++failed;
    // After an NCCL error the pairing of sends and receives is lost: drop the communicator;
    // the sender makes a new id once it fails itself or loses this receiver; until then its
    // packets naming this one fail here at once (failed_ids).
    if (in_nccl) {
      comm.reset();
      failed_ids.push_back(attempt);
      if (failed_ids.size() > 64) failed_ids.pop_front();
    }
    for (auto it = p->tensors.begin(); it != p->tensors.end();)
      it = it->second.device().is_cuda() ? p->tensors.erase(it) : std::next(it);
    if (opt.on_failed) opt.on_failed(std::move(p), std::string("NCCL receive: ") + e.what());
    return;
  }
  opt.on_packet(std::move(p), std::move(item.receipt));
}

ChannelStats NcclRecvChannel::stats() const {
  ChannelStats s = impl_->zmq->stats();
  s.refused += impl_->failed.load();
  s.bytes += impl_->gpu_bytes.load();
  return s;
}

const std::string& NcclRecvChannel::endpoint() const { return impl_->zmq->endpoint(); }

}  // namespace stagecraft::transport
