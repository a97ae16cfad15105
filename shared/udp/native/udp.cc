// realmnet_udp: one unconnected UDP socket per uplink, received in batches on a thread (recvmmsg),
// sent in batches from JS (sendmmsg).
//
// 1. open(address, port, sndbuf, rcvbuf, gso, gro): socket, buffer sizes (FORCE variants first),
//    path-MTU discovery off so the kernel fragments datagrams up to 64 KB instead of failing with
//    EMSGSIZE, IPV6_V6ONLY for IPv6, SO_SNDTIMEO 20 ms, bind. A failure throws an Error carrying errno
//    and the step that failed; socket.ts maps it to a typed SystemError. UDP GSO (Linux >= 4.18) and
//    GRO (>= 5.0) are probed here; a kernel without them just leaves them off.
// 2. start(slotBufs, slotLens, slotAddrs, slotPorts, stride, maxDatagram, onBatch): JS hands over its
//    slot arrays, allocated once. The reader thread fills slot k, then k+1, ... round robin.
// 3. Reader (shared/native/reader.h, as for TUN): Fill() does recvmmsg(MSG_DONTWAIT) into the slot;
//    when nothing is there, the reader polls the socket and an eventfd (close() wakes it through that),
//    and queues (slot, count) on a thread-safe function. Sources are written in the 16-byte convention
//    of socket.ts.
//    With UDP_GRO one recvmmsg entry may hold up to 64 KB of coalesced datagrams of one size S (the
//    UDP_GRO cmsg), so recvmmsg goes into a staging area of 64 KB entries instead, and the reader splits
//    each entry into S-byte datagrams copied to their slot positions: JS sees the same batches as
//    without GRO. What does not fit in the slot stays staged for the next one.
// 4. JS thread: the TSFN callback calls onBatch(slot, count), then gives the slot back (reader.h).
// 5. send(...): sendmmsg in chunks on the blocking socket. A full send buffer blocks up to SO_SNDTIMEO,
//    which is the backpressure; a timeout drops the rest of the batch. Any other per-datagram error is
//    counted and that datagram skipped. The socket is unconnected and has no IP_RECVERR, so ICMP
//    errors (ECONNREFUSED...) never surface asynchronously.
//    With GSO, a run of consecutive same-size datagrams to one destination goes as ONE message: one
//    iovec per datagram (no copy) and a UDP_SEGMENT cmsg, so the stack is crossed once per run, not once
//    per datagram. The kernel, or the device, cuts it back into the same datagrams. If the kernel
//    refuses a GSO message (no checksum offload on the egress device, a path MTU under 1500...), the
//    run is sent again one datagram per message and GSO stays off for this socket.
// 6. close(): wake the reader, join it, release the TSFN, close the socket.
#include <napi.h>

#include "shared/native/reader.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

namespace {

using realmnet::ThrowErrno;
using realmnet::ThrowType;

constexpr uint32_t kTxChunk = 256;  // datagrams per sendmmsg call (a GSO message carries several)
constexpr int kSendTimeoutMs = 20;

// GSO limits. UDP_MAX_SEGMENTS is 64 in include/linux/udp.h. 65000 keeps a GSO message under the
// 64 KB IP limit of both families with room for the headers. The segment size must fit the path MTU
// (the kernel refuses gso_size + headers > MTU), which we do not know, so only datagrams that a
// 1500-byte underlay carries unfragmented are coalesced: 1500 - 20 - 8 and 1500 - 40 - 8. Larger ones
// (the TSO offload mode's 64 KB frames) go as before, one message each, fragmented by IP.
constexpr uint32_t kMaxSegments = 64;
constexpr size_t kMaxGsoBytes = 65000;
constexpr size_t kMaxSegment4 = 1472;
constexpr size_t kMaxSegment6 = 1452;
// A GRO'd receive holds up to a whole IP packet's payload.
constexpr size_t kStageSize = 65535;

struct alignas(cmsghdr) TxControl {
  char buf[CMSG_SPACE(sizeof(uint16_t))];
};
struct alignas(cmsghdr) RxControl {
  char buf[CMSG_SPACE(sizeof(int)) + 32];
};

class Udp : public Napi::ObjectWrap<Udp>, public realmnet::BatchReader<Udp> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "Udp",
                       {InstanceMethod("open", &Udp::Open), InstanceMethod("start", &Udp::Start),
                        InstanceMethod("send", &Udp::Send), InstanceMethod("stats", &Udp::Stats),
                        InstanceMethod("close", &Udp::Close)});
  }

  explicit Udp(const Napi::CallbackInfo& info)
      : Napi::ObjectWrap<Udp>(info),
        txMsgs_(kTxChunk),
        txIov_(kTxChunk),
        txNames_(kTxChunk),
        txControl_(kTxChunk),
        txIndex_(kTxChunk),
        txSegments_(kTxChunk) {}
  ~Udp() override { Shutdown(); }

 private:
  friend class realmnet::BatchReader<Udp>;

  Napi::Value Open(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!info[0].IsString() || !info[1].IsNumber() || !info[2].IsNumber() || !info[3].IsNumber() ||
        !info[4].IsBoolean() || !info[5].IsBoolean()) {
      return ThrowType(env, "open(address, port, sndbuf, rcvbuf, gso, gro)");
    }
    if (!Openable()) return ThrowType(env, "already opened");
    std::string address = info[0].As<Napi::String>().Utf8Value();
    std::string port = std::to_string(info[1].As<Napi::Number>().Uint32Value());
    int sndbuf = info[2].As<Napi::Number>().Int32Value();
    int rcvbuf = info[3].As<Napi::Number>().Int32Value();
    bool wantGso = info[4].As<Napi::Boolean>().Value();
    bool wantGro = info[5].As<Napi::Boolean>().Value();

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
    if (step == nullptr && !OpenWake()) step = "eventfd";
    if (step != nullptr) {
      int err = errno;
      close(fd);
      return ThrowErrno(env, err, step);
    }
    fd_ = fd;
    family_ = family;
    // Kernels before 4.18 ignore a SOL_UDP cmsg and would send a run as one big datagram: GSO is used
    // only where the UDP_SEGMENT option exists, which came with the cmsg.
    int value = 0;
    socklen_t valueLen = sizeof value;
    gso_ = wantGso && getsockopt(fd, SOL_UDP, UDP_SEGMENT, &value, &valueLen) == 0;
    int on = 1;
    gro_ = wantGro && setsockopt(fd, SOL_UDP, UDP_GRO, &on, sizeof on) == 0;
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
    if (!Startable()) return ThrowType(env, "start() needs an open, unstarted socket");
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
      for (Napi::Value v : {b, l, a, p}) Keep(v);
      slotData_.push_back(buf.Data());
      slotLens_.push_back(len.Data());
      slotAddrs_.push_back(addr.Data());
      slotPorts_.push_back(port.Data());
    }
    space_ = space;
    if (gro_) {
      // One staging entry per datagram of a batch; with GRO each may hold many datagrams.
      stage_.assign(size_t(batch_) * kStageSize, 0);
      stageMsgs_.assign(batch_, mmsghdr{});
      stageIov_.assign(batch_, iovec{});
      stageNames_.assign(batch_, sockaddr_in6{});
      stageControl_.assign(batch_, RxControl{});
      for (uint32_t i = 0; i < batch_; i++) {
        stageIov_[i] = {stage_.data() + size_t(i) * kStageSize, kStageSize};
        stageMsgs_[i].msg_hdr.msg_iov = &stageIov_[i];
        stageMsgs_[i].msg_hdr.msg_iovlen = 1;
        stageMsgs_[i].msg_hdr.msg_name = &stageNames_[i];
        stageMsgs_[i].msg_hdr.msg_control = stageControl_[i].buf;
      }
    }
    // Each mmsghdr points at its fixed place in its slot once; only msg_namelen needs a reset per call.
    rxMsgs_.assign(gro_ ? 0 : size_t(slots_) * batch_, mmsghdr{});
    rxIov_.assign(rxMsgs_.size(), iovec{});
    rxNames_.assign(rxMsgs_.size(), sockaddr_in6{});
    for (uint32_t s = 0; s < slots_ && !gro_; s++) {
      for (uint32_t i = 0; i < batch_; i++) {
        size_t k = size_t(s) * batch_ + i;
        rxIov_[k] = {slotData_[s] + size_t(i) * stride_, space};
        rxMsgs_[k].msg_hdr.msg_iov = &rxIov_[k];
        rxMsgs_[k].msg_hdr.msg_iovlen = 1;
        rxMsgs_[k].msg_hdr.msg_name = &rxNames_[k];
      }
    }
    StartReader(env, info[6].As<Napi::Function>(), "realmnet_udp");
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
    if (fd_ < 0) return Napi::Number::New(env, 0);
    // A count past one array's end is the caller's bug, but a throw would escape into whatever
    // promise or native callback called us: send what the arrays describe, count the rest.
    uint32_t fit = std::min<size_t>({count, offsets.ElementLength(), lengths.ElementLength(), ports.ElementLength(), addrs.ByteLength() / 16});
    if (fit < count) {
      CountSendError(EINVAL, count - fit);
      count = fit;
    }
    const uint8_t* data = buf.Data();
    const uint8_t* dsts = addrs.Data();
    size_t size = buf.ByteLength();
    size_t maxSegment = family_ == AF_INET6 ? kMaxSegment6 : kMaxSegment4;
    uint32_t sent = 0, next = 0, checked = 0;
    while (next < count) {
      // Build a chunk of messages from `next`. Message k holds datagrams txIndex_[k] .. +txSegments_[k]
      // (consecutive in the batch), one iovec each. A chunk is rebuilt after an error, so `checked`
      // keeps out-of-bounds datagrams from being counted twice.
      uint32_t n = 0, iovs = 0, i = next;
      bool gso = gso_;
      while (i < count && iovs < kTxChunk) {
        size_t off = offsets[i], len = lengths[i];
        if (off > size || len > size - off) {
          if (i >= checked) CountSendError(EINVAL, 1);
          i++;
          continue;
        }
        const uint32_t first = i;
        const uint8_t* dst = dsts + size_t(i) * 16;
        uint16_t port = ports[i];
        txIov_[iovs] = {const_cast<uint8_t*>(data + off), len};
        uint32_t segments = 1;
        size_t total = len;
        i++;
        if (gso && len > 0 && len <= maxSegment) {
          // Extend the run: same destination, same length; a shorter datagram may end it. An
          // out-of-bounds one ends it too and is counted when the loop above reaches it.
          while (i < count && segments < kMaxSegments && iovs + segments < kTxChunk) {
            size_t o = offsets[i], l = lengths[i];
            if (l == 0 || l > len || total + l > kMaxGsoBytes || o > size || l > size - o) break;
            if (ports[i] != port || memcmp(dsts + size_t(i) * 16, dst, 16) != 0) break;
            txIov_[iovs + segments] = {const_cast<uint8_t*>(data + o), l};
            segments++;
            total += l;
            i++;
            if (l < len) break;
          }
        }
        mmsghdr& m = txMsgs_[n];
        m.msg_hdr.msg_iov = &txIov_[iovs];
        m.msg_hdr.msg_iovlen = segments;
        m.msg_hdr.msg_name = &txNames_[n];
        m.msg_hdr.msg_namelen = FillAddress(&txNames_[n], dst, port);
        if (segments > 1) {
          m.msg_hdr.msg_control = txControl_[n].buf;
          m.msg_hdr.msg_controllen = sizeof txControl_[n].buf;
          cmsghdr* c = CMSG_FIRSTHDR(&m.msg_hdr);
          c->cmsg_level = SOL_UDP;
          c->cmsg_type = UDP_SEGMENT;
          c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
          uint16_t segmentSize = uint16_t(len);
          memcpy(CMSG_DATA(c), &segmentSize, sizeof segmentSize);
        } else {
          m.msg_hdr.msg_control = nullptr;
          m.msg_hdr.msg_controllen = 0;
        }
        txIndex_[n] = first;
        txSegments_[n] = segments;
        n++;
        iovs += segments;
      }
      next = i;
      if (i > checked) checked = i;
      if (n == 0) break;
      int r;
      do r = sendmmsg(fd_, txMsgs_.data(), n, 0);
      while (r < 0 && errno == EINTR);
      if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        CountSendError(EAGAIN, iovs + (count - next));  // the send buffer stayed full for SO_SNDTIMEO
        break;
      } else if (r < 0 && txSegments_[0] > 1 && MaybeGsoRefusal(errno)) {
        // The kernel refused a GSO message. EIO: the egress device has no checksum offload; EINVAL or
        // EMSGSIZE: segment + headers exceed the route's MTU. But EINVAL also comes from causes that
        // have nothing to do with GSO (a source address the route cannot use): the run's first
        // datagram alone tells which.
        uint32_t first = txIndex_[0], segments = txSegments_[0];
        msghdr& h = txMsgs_[0].msg_hdr;
        h.msg_iovlen = 1;
        h.msg_control = nullptr;
        h.msg_controllen = 0;
        ssize_t one;
        do one = sendmsg(fd_, &h, 0);
        while (one < 0 && errno == EINTR);
        if (one >= 0) {
          // It was GSO. That will not change for this socket's route: never coalesce again, and send
          // the rest of the run one datagram per message.
          gso_ = false;
          sent++;
          next = first + 1;
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
          CountSendError(EAGAIN, iovs + (count - next));
          break;
        } else {
          CountSendError(errno, segments);  // not GSO: the run fails as its datagrams would have
          next = first + segments;
        }
      } else if (r < 0) {
        CountSendError(errno, txSegments_[0]);  // the first message of the chunk failed: skip it
        next = txIndex_[0] + txSegments_[0];
      } else {
        for (int k = 0; k < r; k++) {
          sent += txSegments_[k];
          if (txSegments_[k] > 1) gsoMessages_++;
        }
        // A short count means message r failed; the next call reports why.
        if (uint32_t(r) < n) next = txIndex_[r];
      }
    }
    txPackets_ += sent;
    return Napi::Number::New(env, sent);
  }

  static bool MaybeGsoRefusal(int err) { return err == EINVAL || err == EOPNOTSUPP || err == EIO || err == EMSGSIZE; }

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
  // rxTruncated, lastRxErrno, gso (0/1), gsoMessages, gro (0/1), groMessages. One call per stats read,
  // not per packet.
  Napi::Value Stats(const Napi::CallbackInfo& info) {
    if (!info[0].IsTypedArray()) return ThrowType(info.Env(), "stats(Float64Array)");
    Napi::Float64Array out = info[0].As<Napi::Float64Array>();
    if (out.ElementLength() < 12) return ThrowType(info.Env(), "stats array too short");
    out[0] = double(readPackets_.load(std::memory_order_relaxed));
    out[1] = double(readBatches_.load(std::memory_order_relaxed));
    out[2] = double(txPackets_);
    out[3] = double(sendErrors_);
    out[4] = double(lastSendErrno_);
    out[5] = double(rxErrors_.load(std::memory_order_relaxed));
    out[6] = double(rxTruncated_.load(std::memory_order_relaxed));
    out[7] = double(lastRxErrno_.load(std::memory_order_relaxed));
    out[8] = gso_ ? 1 : 0;
    out[9] = double(gsoMessages_);
    out[10] = gro_ ? 1 : 0;
    out[11] = double(groMessages_.load(std::memory_order_relaxed));
    return info.Env().Undefined();
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    Shutdown();
    return info.Env().Undefined();
  }

  // The reader's Fill (reader.h): the datagrams there are, into `slot`. Returns how many.
  uint32_t Fill(uint32_t slot, int* err) { return gro_ ? ReceiveStaged(slot, err) : ReceiveDirect(slot, err); }

  // recvmmsg(MSG_DONTWAIT); counts unexpected errors. Returns the number of messages, 0 for none.
  uint32_t ReceiveMessages(mmsghdr* msgs, uint32_t n, int* err) {
    int r;
    do r = recvmmsg(fd_, msgs, n, MSG_DONTWAIT, nullptr);
    while (r < 0 && errno == EINTR);
    if (r < 0) {
      if (errno != EAGAIN && errno != EWOULDBLOCK) {
        *err = errno;
        rxErrors_.fetch_add(1, std::memory_order_relaxed);
        lastRxErrno_.store(errno, std::memory_order_relaxed);
      }
      return 0;
    }
    return uint32_t(r);
  }

  // Without GRO: one recvmmsg straight into `slot`, then sources into the 16-byte convention.
  // Returns how many datagrams.
  uint32_t ReceiveDirect(uint32_t slot, int* err) {
    mmsghdr* msgs = &rxMsgs_[size_t(slot) * batch_];
    for (uint32_t i = 0; i < batch_; i++) msgs[i].msg_hdr.msg_namelen = sizeof(sockaddr_in6);
    uint32_t r = ReceiveMessages(msgs, batch_, err);
    uint8_t* data = slotData_[slot];
    uint32_t n = 0;
    for (uint32_t i = 0; i < r; i++) {
      if (msgs[i].msg_hdr.msg_flags & MSG_TRUNC) {
        // Larger than maxDatagram: a cut datagram is garbage to every decoder, so it is not delivered.
        rxTruncated_.fetch_add(1, std::memory_order_relaxed);
        continue;
      }
      uint32_t len = msgs[i].msg_len;
      if (n != i) memmove(data + size_t(n) * stride_, data + size_t(i) * stride_, len);  // rare: after a cut one
      slotLens_[slot][n] = len;
      WriteSource(msgs[i].msg_hdr, slot, n);
      n++;
    }
    return n;
  }

  // With GRO: fills `slot` from the staging area, refilled by at most one recvmmsg per batch (as in
  // the direct path), splitting each coalesced entry into its datagrams. A GRO'd entry's datagrams
  // are all S bytes (the UDP_GRO cmsg) but the last, which may be shorter, and share one source.
  // Whatever does not fit in this slot stays staged for the next. Returns how many datagrams.
  uint32_t ReceiveStaged(uint32_t slot, int* err) {
    uint8_t* data = slotData_[slot];
    uint32_t n = 0;
    bool received = false;
    while (n < batch_) {
      if (stageNext_ >= stageCount_) {
        if (received) break;
        received = true;
        for (uint32_t i = 0; i < batch_; i++) {
          stageMsgs_[i].msg_hdr.msg_namelen = sizeof(sockaddr_in6);
          stageMsgs_[i].msg_hdr.msg_controllen = sizeof(RxControl::buf);
        }
        stageCount_ = ReceiveMessages(stageMsgs_.data(), batch_, err);
        stageNext_ = 0;
        stageOffset_ = 0;
        if (stageCount_ == 0) break;
      }
      const mmsghdr& m = stageMsgs_[stageNext_];
      const uint8_t* entry = stage_.data() + size_t(stageNext_) * kStageSize;
      size_t total = m.msg_len;
      if (m.msg_hdr.msg_flags & MSG_TRUNC) {
        // Cannot happen with 64 KB entries; if it did, the segment boundaries would be unknown.
        rxTruncated_.fetch_add(1, std::memory_order_relaxed);
        stageNext_++;
        continue;
      }
      size_t segment = total;
      if (stageOffset_ == 0) {
        stageSegment_ = GroSegmentSize(m.msg_hdr);
        if (stageSegment_ > 0 && stageSegment_ < total) groMessages_.fetch_add(1, std::memory_order_relaxed);
      }
      if (stageSegment_ > 0) segment = stageSegment_;
      // do-while: a zero-length datagram is still one datagram.
      do {
        size_t len = std::min(segment, total - stageOffset_);
        if (len > space_) {
          rxTruncated_.fetch_add(1, std::memory_order_relaxed);  // larger than maxDatagram, as above
        } else {
          memcpy(data + size_t(n) * stride_, entry + stageOffset_, len);
          slotLens_[slot][n] = uint32_t(len);
          WriteSource(m.msg_hdr, slot, n);
          n++;
        }
        stageOffset_ += len;
      } while (stageOffset_ < total && n < batch_);
      if (stageOffset_ >= total) {
        stageNext_++;
        stageOffset_ = 0;
      }
    }
    return n;
  }

  // The UDP_GRO cmsg's segment size, or 0 when the entry is a single datagram.
  static size_t GroSegmentSize(const msghdr& h) {
    for (cmsghdr* c = CMSG_FIRSTHDR(&h); c != nullptr; c = CMSG_NXTHDR(const_cast<msghdr*>(&h), c)) {
      if (c->cmsg_level == SOL_UDP && c->cmsg_type == UDP_GRO && c->cmsg_len >= CMSG_LEN(sizeof(int))) {
        int size;
        memcpy(&size, CMSG_DATA(c), sizeof size);
        return size > 0 ? size_t(size) : 0;
      }
    }
    return 0;
  }

  // The source of datagram i of `slot`, in the 16-byte convention.
  void WriteSource(const msghdr& h, uint32_t slot, uint32_t i) {
    const sockaddr_in6* src = static_cast<const sockaddr_in6*>(h.msg_name);
    uint8_t* a = slotAddrs_[slot] + size_t(i) * 16;
    if (src->sin6_family == AF_INET6) {
      memcpy(a, &src->sin6_addr, 16);
      slotPorts_[slot][i] = ntohs(src->sin6_port);
    } else {
      const sockaddr_in* s4 = reinterpret_cast<const sockaddr_in*>(src);
      memcpy(a, &s4->sin_addr, 4);
      memset(a + 4, 0, 12);
      slotPorts_[slot][i] = ntohs(s4->sin_port);
    }
  }

  int family_ = AF_INET;
  uint32_t scope_ = 0;
  bool gso_ = false;  // JS thread only; cleared for good when the kernel refuses a GSO message
  bool gro_ = false;  // set in open(), before the reader thread exists
  uint32_t stride_ = 0, space_ = 0;
  std::vector<uint8_t*> slotData_, slotAddrs_;
  std::vector<uint32_t*> slotLens_;
  std::vector<uint16_t*> slotPorts_;
  std::vector<mmsghdr> rxMsgs_;  // reader thread only
  std::vector<iovec> rxIov_;
  std::vector<sockaddr_in6> rxNames_;
  std::vector<uint8_t> stage_;  // GRO staging, reader thread only: batch_ entries of kStageSize
  std::vector<mmsghdr> stageMsgs_;
  std::vector<iovec> stageIov_;
  std::vector<sockaddr_in6> stageNames_;
  std::vector<RxControl> stageControl_;
  uint32_t stageCount_ = 0, stageNext_ = 0;  // entries received, entry being split
  size_t stageOffset_ = 0, stageSegment_ = 0;  // within that entry
  std::vector<mmsghdr> txMsgs_;  // JS thread only
  std::vector<iovec> txIov_;
  std::vector<sockaddr_in6> txNames_;
  std::vector<TxControl> txControl_;
  std::vector<uint32_t> txIndex_;     // message -> its first datagram in the batch
  std::vector<uint32_t> txSegments_;  // message -> how many datagrams it carries
  std::atomic<uint64_t> rxErrors_{0}, rxTruncated_{0}, groMessages_{0};
  std::atomic<int> lastRxErrno_{0};
  uint64_t txPackets_ = 0, sendErrors_ = 0, gsoMessages_ = 0;  // JS thread only
  int lastSendErrno_ = 0;
};

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("Udp", Udp::Define(env));
  return exports;
}

}  // namespace

NODE_API_MODULE(realmnet_udp, Init)
