// realmnet_udp: one unconnected UDP socket per uplink, received in batches on a thread (recvmmsg),
// sent in batches from JS (sendmmsg).
//
// 1. open(address, port, sndbuf, rcvbuf): socket, buffer sizes (FORCE variants first), path-MTU
//    discovery off so the kernel fragments datagrams up to 64 KB instead of failing with EMSGSIZE,
//    IPV6_V6ONLY for IPv6, SO_SNDTIMEO 20 ms, bind. A failure throws an Error carrying errno and the
//    step that failed; socket.ts maps it to a typed SystemError.
// 2. start(slotBufs, slotLens, slotAddrs, slotPorts, stride, maxDatagram, onBatch): JS hands over its
//    slot arrays, allocated once. The reader thread fills slot k, then k+1, ... round robin.
// 3. Reader: recvmmsg(MSG_DONTWAIT) into the slot; when nothing is there, poll() the socket and an
//    eventfd (close() wakes it through that). Sources are written in the 16-byte convention of
//    socket.ts. Queue (slot, count) on a thread-safe function.
// 4. JS thread: the TSFN callback calls onBatch(slot, count), then gives the slot back. The queue is
//    FIFO, so slots come back in the order they were filled and a counter of slots in flight is enough;
//    with every slot in JS's hands the reader waits on a condition variable (backpressure).
// 5. send(...): sendmmsg in chunks on the blocking socket. A full send buffer blocks up to SO_SNDTIMEO,
//    which is the backpressure; a timeout drops the rest of the batch. Any other per-datagram error is
//    counted and that datagram skipped. The socket is unconnected and has no IP_RECVERR, so ICMP
//    errors (ECONNREFUSED...) never surface asynchronously.
// 6. close(): wake the reader, join it, release the TSFN, close the socket.
#include <napi.h>

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace {

constexpr uint32_t kTxChunk = 256;  // datagrams per sendmmsg call
constexpr int kSendTimeoutMs = 20;

Napi::Value ThrowErrno(Napi::Env env, int err, const char* step) {
  Napi::Error e = Napi::Error::New(env, std::string(step) + ": " + strerror(err));
  e.Set("errno", Napi::Number::New(env, err));
  e.Set("syscall", Napi::String::New(env, step));
  e.ThrowAsJavaScriptException();
  return env.Undefined();
}

Napi::Value ThrowType(Napi::Env env, const char* msg) {
  Napi::TypeError::New(env, msg).ThrowAsJavaScriptException();
  return env.Undefined();
}

class Udp;
struct Batch {
  uint32_t slot;
  uint32_t count;
};
void CallJs(Napi::Env env, Napi::Function onBatch, Udp* udp, Batch* batch);
using Tsfn = Napi::TypedThreadSafeFunction<Udp, Batch, CallJs>;

class Udp : public Napi::ObjectWrap<Udp> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "Udp",
                       {InstanceMethod("open", &Udp::Open), InstanceMethod("start", &Udp::Start),
                        InstanceMethod("send", &Udp::Send), InstanceMethod("stats", &Udp::Stats),
                        InstanceMethod("close", &Udp::Close)});
  }

  explicit Udp(const Napi::CallbackInfo& info)
      : Napi::ObjectWrap<Udp>(info), txMsgs_(kTxChunk), txIov_(kTxChunk), txNames_(kTxChunk), txIndex_(kTxChunk) {}
  ~Udp() override { Shutdown(); }

  // Called on the JS thread for each queued batch, also after close() (then it only frees the slot).
  void Deliver(Napi::Env env, Napi::Function onBatch, Batch* b) {
    if (env != nullptr && !closed_) {
      onBatch.Call({Napi::Number::New(env, b->slot), Napi::Number::New(env, b->count)});
      // Node-API would only print a deprecation warning for a throwing handler and go on; a bug in the
      // data path must surface like any other uncaught exception instead.
      if (env.IsExceptionPending()) napi_fatal_exception(env, env.GetAndClearPendingException().Value());
    }
    std::lock_guard<std::mutex> lock(mu_);
    inFlight_--;
    cv_.notify_one();
  }

 private:
  Napi::Value Open(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!info[0].IsString() || !info[1].IsNumber() || !info[2].IsNumber() || !info[3].IsNumber()) {
      return ThrowType(env, "open(address, port, sndbuf, rcvbuf)");
    }
    if (fd_ >= 0 || closed_) return ThrowType(env, "already opened");
    std::string address = info[0].As<Napi::String>().Utf8Value();
    std::string port = std::to_string(info[1].As<Napi::Number>().Uint32Value());
    int sndbuf = info[2].As<Napi::Number>().Int32Value();
    int rcvbuf = info[3].As<Napi::Number>().Int32Value();

    // getaddrinfo with NUMERICHOST parses both families and IPv6 zones (fe80::1%eth0), no DNS.
    struct addrinfo hints, *res = nullptr;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_DGRAM;
    hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV | AI_PASSIVE;
    if (getaddrinfo(address.c_str(), port.c_str(), &hints, &res) != 0 || res == nullptr) {
      return ThrowErrno(env, EINVAL, "getaddrinfo");
    }
    struct sockaddr_storage local;
    socklen_t localLen = socklen_t(res->ai_addrlen);
    memcpy(&local, res->ai_addr, res->ai_addrlen);
    freeaddrinfo(res);
    int family = local.ss_family;

    int fd = socket(family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return ThrowErrno(env, errno, "socket");
    const char* step = Configure(fd, family, sndbuf, rcvbuf);
    if (step == nullptr && bind(fd, reinterpret_cast<sockaddr*>(&local), localLen) < 0) step = "bind";
    localLen = sizeof local;
    if (step == nullptr && getsockname(fd, reinterpret_cast<sockaddr*>(&local), &localLen) < 0) step = "getsockname";
    if (step == nullptr) wake_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (step == nullptr && wake_ < 0) step = "eventfd";
    if (step != nullptr) {
      int err = errno;
      close(fd);
      return ThrowErrno(env, err, step);
    }
    fd_ = fd;
    family_ = family;
    uint16_t boundPort;
    if (family == AF_INET6) {
      const sockaddr_in6* a = reinterpret_cast<sockaddr_in6*>(&local);
      scope_ = a->sin6_scope_id;
      boundPort = ntohs(a->sin6_port);
    } else {
      boundPort = ntohs(reinterpret_cast<sockaddr_in*>(&local)->sin_port);
    }
    Napi::Object out = Napi::Object::New(env);
    out.Set("family", Napi::Number::New(env, family == AF_INET6 ? 6 : 4));
    out.Set("port", Napi::Number::New(env, boundPort));
    return out;
  }

  // Returns the failing step, or nullptr.
  static const char* Configure(int fd, int family, int sndbuf, int rcvbuf) {
    // The FORCE variants pass net.core.[rw]mem_max but need CAP_NET_ADMIN; without it the plain ones
    // give what the sysctl allows, which is still a working socket.
    if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &sndbuf, sizeof sndbuf) < 0) {
      setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
    }
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof rcvbuf) < 0) {
      setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    }
    int on = 1, off = 0;
    if (family == AF_INET) {
      int pmtu = IP_PMTUDISC_DONT;
      if (setsockopt(fd, IPPROTO_IP, IP_MTU_DISCOVER, &pmtu, sizeof pmtu) < 0) return "setsockopt IP_MTU_DISCOVER";
    } else {
      int pmtu = IPV6_PMTUDISC_DONT;
      if (setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof on) < 0) return "setsockopt IPV6_V6ONLY";
      if (setsockopt(fd, IPPROTO_IPV6, IPV6_MTU_DISCOVER, &pmtu, sizeof pmtu) < 0) return "setsockopt IPV6_MTU_DISCOVER";
      if (setsockopt(fd, IPPROTO_IPV6, IPV6_DONTFRAG, &off, sizeof off) < 0) return "setsockopt IPV6_DONTFRAG";
    }
    struct timeval tv = {0, kSendTimeoutMs * 1000};
    if (setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) < 0) return "setsockopt SO_SNDTIMEO";
    return nullptr;
  }

  Napi::Value Start(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (fd_ < 0 || thread_.joinable()) return ThrowType(env, "start() needs an open, unstarted socket");
    if (!info[0].IsArray() || !info[1].IsArray() || !info[2].IsArray() || !info[3].IsArray() ||
        !info[4].IsNumber() || !info[5].IsNumber() || !info[6].IsFunction()) {
      return ThrowType(env, "start(slotBufs, slotLens, slotAddrs, slotPorts, stride, maxDatagram, onBatch)");
    }
    Napi::Array bufs = info[0].As<Napi::Array>(), lens = info[1].As<Napi::Array>();
    Napi::Array addrs = info[2].As<Napi::Array>(), ports = info[3].As<Napi::Array>();
    stride_ = info[4].As<Napi::Number>().Uint32Value();
    uint32_t space = info[5].As<Napi::Number>().Uint32Value();
    slots_ = bufs.Length();
    if (slots_ == 0 || lens.Length() != slots_ || addrs.Length() != slots_ || ports.Length() != slots_ ||
        space == 0 || space > stride_) {
      return ThrowType(env, "bad slot layout");
    }
    for (uint32_t i = 0; i < slots_; i++) {
      Napi::Value b = bufs[i], l = lens[i], a = addrs[i], p = ports[i];
      if (!b.IsTypedArray() || !l.IsTypedArray() || !a.IsTypedArray() || !p.IsTypedArray()) {
        return ThrowType(env, "slots must be typed arrays");
      }
      Napi::Uint8Array buf = b.As<Napi::Uint8Array>(), addr = a.As<Napi::Uint8Array>();
      Napi::Uint32Array len = l.As<Napi::Uint32Array>();
      Napi::Uint16Array port = p.As<Napi::Uint16Array>();
      if (i == 0) batch_ = len.ElementLength();
      if (batch_ == 0 || len.ElementLength() != batch_ || buf.ByteLength() < size_t(batch_) * stride_ ||
          addr.ByteLength() < size_t(batch_) * 16 || port.ElementLength() < batch_) {
        return ThrowType(env, "slot arrays smaller than the batch");
      }
      // The references keep the memory alive and in place while the reader thread writes into it.
      for (Napi::Value v : {b, l, a, p}) refs_.push_back(Napi::Persistent(v.As<Napi::Object>()));
      slotData_.push_back(buf.Data());
      slotLens_.push_back(len.Data());
      slotAddrs_.push_back(addr.Data());
      slotPorts_.push_back(port.Data());
      batches_.push_back(Batch{i, 0});
    }
    // Each mmsghdr points at its fixed place in its slot once; only msg_namelen needs a reset per call.
    rxMsgs_.assign(size_t(slots_) * batch_, mmsghdr{});
    rxIov_.assign(size_t(slots_) * batch_, iovec{});
    rxNames_.assign(size_t(slots_) * batch_, sockaddr_in6{});
    for (uint32_t s = 0; s < slots_; s++) {
      for (uint32_t i = 0; i < batch_; i++) {
        size_t k = size_t(s) * batch_ + i;
        rxIov_[k] = {slotData_[s] + size_t(i) * stride_, space};
        rxMsgs_[k].msg_hdr.msg_iov = &rxIov_[k];
        rxMsgs_[k].msg_hdr.msg_iovlen = 1;
        rxMsgs_[k].msg_hdr.msg_name = &rxNames_[k];
      }
    }
    // Unlimited queue: at most `slots` items are ever queued, so BlockingCall never blocks and close()
    // cannot deadlock against a full queue. The TSFN is ref'd: a started socket keeps the event loop
    // alive, like a node:dgram socket, until close().
    tsfn_ = Tsfn::New(env, info[6].As<Napi::Function>(), "realmnet_udp", 0, 1, this);
    napi_add_env_cleanup_hook(env, EnvCleanup, this);
    hooked_ = true;
    env_ = env;
    thread_ = std::thread(&Udp::ReadLoop, this);
    return env.Undefined();
  }

  Napi::Value Send(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    for (int i = 0; i < 5; i++) {
      if (!info[i].IsTypedArray()) return ThrowType(env, "send(buf, offsets, lengths, dstAddrs, dstPorts, count)");
    }
    Napi::Uint8Array buf = info[0].As<Napi::Uint8Array>();
    Napi::Uint32Array offsets = info[1].As<Napi::Uint32Array>(), lengths = info[2].As<Napi::Uint32Array>();
    Napi::Uint8Array addrs = info[3].As<Napi::Uint8Array>();
    Napi::Uint16Array ports = info[4].As<Napi::Uint16Array>();
    uint32_t count = info[5].As<Napi::Number>().Uint32Value();
    if (count > offsets.ElementLength() || count > lengths.ElementLength() || count > ports.ElementLength() ||
        size_t(count) * 16 > addrs.ByteLength()) {
      return ThrowType(env, "count is larger than one of the arrays");
    }
    if (fd_ < 0) return Napi::Number::New(env, 0);
    uint8_t* data = buf.Data();
    size_t size = buf.ByteLength();
    uint32_t sent = 0, next = 0, checked = 0;
    while (next < count) {
      // Build a chunk from `next`; txIndex_ maps chunk positions back to batch indices. A chunk is
      // rebuilt after an error, so `checked` keeps out-of-bounds datagrams from being counted twice.
      uint32_t n = 0, i = next;
      for (; i < count && n < kTxChunk; i++) {
        size_t off = offsets[i], len = lengths[i];
        if (off > size || len > size - off) {
          if (i >= checked) CountSendError(EINVAL, 1);
          continue;
        }
        txIov_[n] = {data + off, len};
        mmsghdr& m = txMsgs_[n];
        m.msg_hdr.msg_iov = &txIov_[n];
        m.msg_hdr.msg_iovlen = 1;
        m.msg_hdr.msg_name = &txNames_[n];
        m.msg_hdr.msg_namelen = FillAddress(&txNames_[n], addrs.Data() + size_t(i) * 16, ports[i]);
        txIndex_[n++] = i;
      }
      next = i;
      if (i > checked) checked = i;
      if (n == 0) break;
      int r;
      do r = sendmmsg(fd_, txMsgs_.data(), n, 0);
      while (r < 0 && errno == EINTR);
      if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        CountSendError(EAGAIN, n + (count - next));  // the send buffer stayed full for SO_SNDTIMEO
        break;
      } else if (r < 0) {
        CountSendError(errno, 1);  // the first datagram of the chunk failed: skip it
        next = txIndex_[0] + 1;
      } else {
        sent += uint32_t(r);
        // A short count means datagram r failed; the next call reports why.
        if (uint32_t(r) < n) next = txIndex_[r];
      }
    }
    txPackets_ += sent;
    return Napi::Number::New(env, sent);
  }

  socklen_t FillAddress(sockaddr_in6* out, const uint8_t* bytes, uint16_t port) const {
    if (family_ == AF_INET) {
      sockaddr_in* a = reinterpret_cast<sockaddr_in*>(out);
      a->sin_family = AF_INET;
      a->sin_port = htons(port);
      memcpy(&a->sin_addr, bytes, 4);
      memset(a->sin_zero, 0, sizeof a->sin_zero);
      return sizeof(sockaddr_in);
    }
    out->sin6_family = AF_INET6;
    out->sin6_port = htons(port);
    out->sin6_flowinfo = 0;
    memcpy(&out->sin6_addr, bytes, 16);
    // A link-local locator is reached through the interface the socket is bound to.
    out->sin6_scope_id = IN6_IS_ADDR_LINKLOCAL(&out->sin6_addr) ? scope_ : 0;
    return sizeof(sockaddr_in6);
  }

  void CountSendError(int err, uint32_t n) {
    sendErrors_ += n;
    lastSendErrno_ = err;
  }

  // Fills a Float64Array: rxPackets, rxBatches, txPackets, sendErrors, lastSendErrno, rxErrors,
  // rxTruncated, lastRxErrno. One call per stats read, not per packet.
  Napi::Value Stats(const Napi::CallbackInfo& info) {
    if (!info[0].IsTypedArray()) return ThrowType(info.Env(), "stats(Float64Array)");
    Napi::Float64Array out = info[0].As<Napi::Float64Array>();
    if (out.ElementLength() < 8) return ThrowType(info.Env(), "stats array too short");
    out[0] = double(rxPackets_.load(std::memory_order_relaxed));
    out[1] = double(rxBatches_.load(std::memory_order_relaxed));
    out[2] = double(txPackets_);
    out[3] = double(sendErrors_);
    out[4] = double(lastSendErrno_);
    out[5] = double(rxErrors_.load(std::memory_order_relaxed));
    out[6] = double(rxTruncated_.load(std::memory_order_relaxed));
    out[7] = double(lastRxErrno_.load(std::memory_order_relaxed));
    return info.Env().Undefined();
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    Shutdown();
    return info.Env().Undefined();
  }

  static void EnvCleanup(void* arg) {
    // The environment is going away with the socket still open: stop the thread before Node tears the
    // TSFN down under it. Registered after the TSFN, so it runs first.
    Udp* self = static_cast<Udp*>(arg);
    self->hooked_ = false;
    self->Shutdown();
  }

  void Shutdown() {
    if (closed_) return;
    closed_ = true;
    if (thread_.joinable()) {
      {
        std::lock_guard<std::mutex> lock(mu_);
        stopping_ = true;
      }
      cv_.notify_all();
      uint64_t one = 1;
      ssize_t ignored = write(wake_, &one, sizeof one);
      (void)ignored;
      thread_.join();
      tsfn_.Release();
      if (hooked_) napi_remove_env_cleanup_hook(env_, EnvCleanup, this);
      hooked_ = false;
    }
    if (fd_ >= 0) close(fd_);
    if (wake_ >= 0) close(wake_);
    fd_ = wake_ = -1;
  }

  void ReadLoop() {
    uint32_t slot = 0;
    for (;;) {
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [this] { return stopping_ || inFlight_ < slots_; });
        if (stopping_) return;
      }
      uint32_t count = 0;
      while (count == 0) {
        int err = 0;
        count = Receive(slot, &err);
        if (count > 0) break;
        // After an unexpected error poll() may report the fd ready at once: back off instead of spinning.
        if (!Wait(err == 0 ? -1 : 10)) return;
      }
      rxPackets_.fetch_add(count, std::memory_order_relaxed);
      rxBatches_.fetch_add(1, std::memory_order_relaxed);
      {
        std::lock_guard<std::mutex> lock(mu_);
        inFlight_++;  // before the call, so Deliver's decrement can never come first
      }
      batches_[slot].count = count;
      if (tsfn_.BlockingCall(&batches_[slot]) != napi_ok) return;  // the TSFN is closing
      slot = (slot + 1) % slots_;
    }
  }

  // One recvmmsg into `slot`, then sources into the 16-byte convention. Returns how many datagrams.
  uint32_t Receive(uint32_t slot, int* err) {
    mmsghdr* msgs = &rxMsgs_[size_t(slot) * batch_];
    for (uint32_t i = 0; i < batch_; i++) msgs[i].msg_hdr.msg_namelen = sizeof(sockaddr_in6);
    int r;
    do r = recvmmsg(fd_, msgs, batch_, MSG_DONTWAIT, nullptr);
    while (r < 0 && errno == EINTR);
    if (r < 0) {
      if (errno != EAGAIN && errno != EWOULDBLOCK) {
        *err = errno;
        rxErrors_.fetch_add(1, std::memory_order_relaxed);
        lastRxErrno_.store(errno, std::memory_order_relaxed);
      }
      return 0;
    }
    uint8_t* data = slotData_[slot];
    uint32_t* lens = slotLens_[slot];
    uint8_t* addrs = slotAddrs_[slot];
    uint16_t* ports = slotPorts_[slot];
    uint32_t n = 0;
    for (uint32_t i = 0; i < uint32_t(r); i++) {
      if (msgs[i].msg_hdr.msg_flags & MSG_TRUNC) {
        // Larger than maxDatagram: a cut datagram is garbage to every decoder, so it is not delivered.
        rxTruncated_.fetch_add(1, std::memory_order_relaxed);
        continue;
      }
      uint32_t len = msgs[i].msg_len;
      if (n != i) memmove(data + size_t(n) * stride_, data + size_t(i) * stride_, len);  // rare: after a cut one
      lens[n] = len;
      const sockaddr_in6* src = static_cast<const sockaddr_in6*>(msgs[i].msg_hdr.msg_name);
      uint8_t* a = addrs + size_t(n) * 16;
      if (src->sin6_family == AF_INET6) {
        memcpy(a, &src->sin6_addr, 16);
        ports[n] = ntohs(src->sin6_port);
      } else {
        const sockaddr_in* s4 = reinterpret_cast<const sockaddr_in*>(src);
        memcpy(a, &s4->sin_addr, 4);
        memset(a + 4, 0, 12);
        ports[n] = ntohs(s4->sin_port);
      }
      n++;
    }
    return n;
  }

  // Waits until the socket is readable (true) or close() asked the thread to stop (false).
  // A backoff wait (timeoutMs >= 0) watches only the eventfd.
  bool Wait(int timeoutMs) {
    struct pollfd p[2] = {{fd_, POLLIN, 0}, {wake_, POLLIN, 0}};
    struct pollfd* first = timeoutMs < 0 ? &p[0] : &p[1];
    int r;
    do r = poll(first, timeoutMs < 0 ? 2 : 1, timeoutMs);
    while (r < 0 && errno == EINTR);
    return !stopping_.load() && p[1].revents == 0;
  }

  int fd_ = -1;
  int wake_ = -1;
  int family_ = AF_INET;
  uint32_t scope_ = 0;
  bool closed_ = false;
  bool hooked_ = false;
  napi_env env_ = nullptr;
  uint32_t slots_ = 0, batch_ = 0, stride_ = 0;
  std::vector<Napi::ObjectReference> refs_;
  std::vector<uint8_t*> slotData_, slotAddrs_;
  std::vector<uint32_t*> slotLens_;
  std::vector<uint16_t*> slotPorts_;
  std::vector<Batch> batches_;
  std::vector<mmsghdr> rxMsgs_;  // reader thread only
  std::vector<iovec> rxIov_;
  std::vector<sockaddr_in6> rxNames_;
  std::vector<mmsghdr> txMsgs_;  // JS thread only
  std::vector<iovec> txIov_;
  std::vector<sockaddr_in6> txNames_;
  std::vector<uint32_t> txIndex_;
  Tsfn tsfn_;
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::atomic<bool> stopping_{false};
  uint32_t inFlight_ = 0;  // guarded by mu_
  std::atomic<uint64_t> rxPackets_{0}, rxBatches_{0}, rxErrors_{0}, rxTruncated_{0};
  std::atomic<int> lastRxErrno_{0};
  uint64_t txPackets_ = 0, sendErrors_ = 0;  // JS thread only
  int lastSendErrno_ = 0;
};

void CallJs(Napi::Env env, Napi::Function onBatch, Udp* udp, Batch* batch) {
  udp->Deliver(env, onBatch, batch);
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("Udp", Udp::Define(env));
  return exports;
}

}  // namespace

NODE_API_MODULE(realmnet_udp, Init)
