// realmnet_tun: one Linux TUN device, read in batches on a thread, written in batches from JS.
//
// 1. open(name, offload): open /dev/net/tun, TUNSETIFF with IFF_TUN|IFF_NO_PI (|IFF_VNET_HDR and
//    TUNSETOFFLOAD in offload mode), O_NONBLOCK. A failure throws an Error carrying errno and the
//    step that failed; tun.ts maps it to a typed SystemError.
// 2. start(slotBufs, slotLens, stride, headroom, space, onBatch): JS hands over its slot buffers,
//    allocated once, and one callback. The reader thread fills slot k, then k+1, ... round robin.
// 3. Reader (shared/native/reader.h, as for UDP): Fill() drains read() into the slot until EAGAIN or
//    batchSize; when nothing is there, the reader polls the tun fd and an eventfd (close() wakes it
//    through that), and queues (slot, count) on a thread-safe function.
// 4. JS thread: the TSFN callback calls onBatch(slot, count), then gives the slot back (reader.h).
// 5. write(buf, offsets, lengths, count): one write() per packet on the JS thread (TUN has no batch
//    write); a refused packet is skipped and counted, EAGAIN ends the batch.
//    Coalescing mode (MTU mode with open(..., coalesce)): the device has IFF_VNET_HDR and offers the
//    kernel checksum offload and TSO for IPv6, so the kernel hands over TCP super-packets of up to
//    64 KB; the reader cuts them into MTU-sized segments with complete checksums (GSO in userspace,
//    coalesce.h SplitSegment) and finishes the checksum of any packet that still needs it, so JS
//    sees ordinary packets. Writes merge runs of consecutive TCP/IPv6 segments of one flow into one
//    GSO super-packet (coalesce.h), as Linux GRO would: the kernel then takes one packet instead of
//    tens. Both sides keep MTU-mode semantics on the wire.
// 6. close(): wake the reader, join it, release the TSFN (so the loop may exit), close the fd: the
//    kernel removes the device.
#include <napi.h>

#include "shared/native/reader.h"
#include "agent/tun/native/coalesce.h"

#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <sys/ioctl.h>
#include <sys/uio.h>
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

constexpr int kVnetHdrSize = 10;  // struct virtio_net_hdr, what tun.ts documents to its callers

class Tun : public Napi::ObjectWrap<Tun>, public realmnet::BatchReader<Tun> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "Tun",
                       {InstanceMethod("open", &Tun::Open), InstanceMethod("start", &Tun::Start),
                        InstanceMethod("write", &Tun::Write), InstanceMethod("stats", &Tun::Stats),
                        InstanceMethod("close", &Tun::Close)});
  }

  explicit Tun(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Tun>(info) {}
  ~Tun() override { Shutdown(); }

 private:
  friend class realmnet::BatchReader<Tun>;

  Napi::Value Open(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!info[0].IsString() || !info[1].IsBoolean()) return ThrowType(env, "open(name, offload, coalesce)");
    if (!Openable()) return ThrowType(env, "already opened");
    std::string name = info[0].As<Napi::String>().Utf8Value();
    bool offload = info[1].As<Napi::Boolean>().Value();
    bool coalesce = !offload && info[2].IsBoolean() && info[2].As<Napi::Boolean>().Value();

    int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return ThrowErrno(env, errno, "open /dev/net/tun");
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    ifr.ifr_flags = IFF_TUN | IFF_NO_PI | (offload || coalesce ? IFF_VNET_HDR : 0);
    strncpy(ifr.ifr_name, name.c_str(), IFNAMSIZ - 1);
    if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
      int err = errno;
      close(fd);
      return ThrowErrno(env, err, "TUNSETIFF");
    }
    if (offload) {
      int hdr = kVnetHdrSize;
      unsigned int features = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6;
      const char* step = nullptr;
      if (ioctl(fd, TUNSETVNETHDRSZ, &hdr) < 0) step = "TUNSETVNETHDRSZ";
      else if (ioctl(fd, TUNSETOFFLOAD, features) < 0) step = "TUNSETOFFLOAD";
      if (step != nullptr) {
        int err = errno;
        close(fd);
        return ThrowErrno(env, err, step);
      }
    }
    if (coalesce) {
      // Checksum offload and TSO6: the kernel's TCP sends 64 KB super-packets into the device, the
      // reader splits them. (It takes the super-packets we write whatever the features.)
      int hdr = kVnetHdrSize;
      const char* step = nullptr;
      if (ioctl(fd, TUNSETVNETHDRSZ, &hdr) < 0) step = "TUNSETVNETHDRSZ";
      else if (ioctl(fd, TUNSETOFFLOAD, TUN_F_CSUM | TUN_F_TSO6) < 0) step = "TUNSETOFFLOAD";
      if (step != nullptr) {
        int err = errno;
        close(fd);
        return ThrowErrno(env, err, step);
      }
      coalesce_ = true;
      scratch_.resize(kVnetHdrSize + realmnet::kMaxSuper);
      rbuf_.resize(kVnetHdrSize + realmnet::kMaxSuper);
    }
    if (!OpenWake()) {
      int err = errno;
      close(fd);
      return ThrowErrno(env, err, "eventfd");
    }
    fd_ = fd;
    ifr.ifr_name[IFNAMSIZ - 1] = '\0';
    return Napi::String::New(env, ifr.ifr_name);
  }

  Napi::Value Start(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!Startable()) return ThrowType(env, "start() needs an open, unstarted device");
    if (!info[0].IsArray() || !info[1].IsArray() || !info[5].IsFunction()) {
      return ThrowType(env, "start(slotBufs, slotLens, stride, headroom, space, onBatch)");
    }
    Napi::Array bufs = info[0].As<Napi::Array>();
    Napi::Array lens = info[1].As<Napi::Array>();
    stride_ = info[2].As<Napi::Number>().Uint32Value();
    headroom_ = info[3].As<Napi::Number>().Uint32Value();
    space_ = info[4].As<Napi::Number>().Uint32Value();
    slots_ = bufs.Length();
    if (slots_ == 0 || lens.Length() != slots_ || headroom_ + space_ > stride_ || (coalesce_ && headroom_ < kVnetHdrSize)) {
      return ThrowType(env, "bad slot layout");
    }
    for (uint32_t i = 0; i < slots_; i++) {
      Napi::Value b = bufs[i], l = lens[i];
      if (!b.IsTypedArray() || !l.IsTypedArray()) return ThrowType(env, "slots must be typed arrays");
      Napi::Uint8Array buf = b.As<Napi::Uint8Array>();
      Napi::Uint32Array len = l.As<Napi::Uint32Array>();
      if (i == 0) batch_ = len.ElementLength();
      if (batch_ == 0 || len.ElementLength() != batch_ || buf.ByteLength() < size_t(batch_) * stride_) {
        return ThrowType(env, "slot buffer smaller than batchSize * stride");
      }
      Keep(b);
      Keep(l);
      slotData_.push_back(buf.Data());
      slotLens_.push_back(len.Data());
    }
    StartReader(env, info[5].As<Napi::Function>(), "realmnet_tun");
    return env.Undefined();
  }

  Napi::Value Write(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!info[0].IsTypedArray() || !info[1].IsTypedArray() || !info[2].IsTypedArray() || !info[3].IsNumber()) {
      return ThrowType(env, "write(buf, offsets, lengths, count)");
    }
    Napi::Uint8Array buf = info[0].As<Napi::Uint8Array>();
    Napi::Uint32Array offsets = info[1].As<Napi::Uint32Array>();
    Napi::Uint32Array lengths = info[2].As<Napi::Uint32Array>();
    uint32_t count = info[3].As<Napi::Number>().Uint32Value();
    if (fd_ < 0) return Napi::Number::New(env, 0);
    // A count past the arrays' end is the caller's bug, but a throw would escape into whatever
    // promise or native callback called us: write what the arrays describe, count the rest.
    uint32_t fit = std::min<size_t>({count, offsets.ElementLength(), lengths.ElementLength()});
    if (fit < count) {
      writeErrors_ += count - fit;
      lastWriteErrno_ = EINVAL;
      count = fit;
    }
    const uint8_t* data = buf.Data();
    size_t size = buf.ByteLength();
    if (coalesce_) return Napi::Number::New(env, WriteCoalesced(data, size, offsets.Data(), lengths.Data(), count));
    uint32_t written = 0;
    for (uint32_t i = 0; i < count; i++) {
      size_t off = offsets[i], len = lengths[i];
      if (off > size || len > size - off) {
        writeErrors_++;
        lastWriteErrno_ = EINVAL;
        continue;
      }
      ssize_t r;
      do r = write(fd_, data + off, len);
      while (r < 0 && errno == EINTR);
      if (r >= 0) {
        written++;
      } else if (errno == EAGAIN) {
        break;
      } else {
        writeErrors_++;
        lastWriteErrno_ = errno;
      }
    }
    writePackets_ += written;
    return Napi::Number::New(env, written);
  }

  // One datagram out through writev: the virtio header, then the packet where it lies. True if the
  // kernel took it; EAGAIN sets *full (the batch ends there).
  bool Emit(const uint8_t* hdr, const uint8_t* pkt, size_t len, bool* full) {
    struct iovec iov[2] = {{const_cast<uint8_t*>(hdr), size_t(kVnetHdrSize)}, {const_cast<uint8_t*>(pkt), len}};
    ssize_t r;
    do r = writev(fd_, iov, 2);
    while (r < 0 && errno == EINTR);
    if (r >= 0) return true;
    if (errno == EAGAIN) *full = true;
    else {
      writeErrors_++;
      lastWriteErrno_ = errno;
    }
    return false;
  }

  // Coalescing mode's write: runs of packets that coalesce.h says may merge become one GSO
  // super-packet (built in scratch_), the others go out alone behind a zero virtio header. Returns
  // the number of the caller's packets the kernel took (a merged run counts all of its packets).
  uint32_t WriteCoalesced(const uint8_t* data, size_t size, const uint32_t* offsets, const uint32_t* lengths, uint32_t count) {
    static const uint8_t kPlain[kVnetHdrSize] = {0};
    uint32_t written = 0;
    bool full = false;
    for (uint32_t i = 0; i < count && !full;) {
      size_t off = offsets[i], len = lengths[i];
      if (off > size || len > size - off) {
        writeErrors_++;
        lastWriteErrno_ = EINVAL;
        i++;
        continue;
      }
      uint32_t end = realmnet::RunEnd(data, size, offsets, lengths, i, count);
      if (end == i + 1) {
        if (Emit(kPlain, data + off, len, &full)) written++;
        i++;
        continue;
      }
      size_t n = realmnet::BuildSuper(data, offsets, lengths, i, end, scratch_.data());
      if (Emit(scratch_.data(), scratch_.data() + kVnetHdrSize, n, &full)) {
        written += end - i;
        superPackets_++;
        coalesced_ += end - i;
      }
      i = end;
    }
    writePackets_ += written;
    return written;
  }

  // Fills a Float64Array: readPackets, readBatches, writePackets, writeErrors, readErrors,
  // lastReadErrno, lastWriteErrno, superPackets (coalescing: written), coalesced (packets merged
  // into them). One call per stats read, not per packet.
  Napi::Value Stats(const Napi::CallbackInfo& info) {
    if (!info[0].IsTypedArray()) return ThrowType(info.Env(), "stats(Float64Array)");
    Napi::Float64Array out = info[0].As<Napi::Float64Array>();
    if (out.ElementLength() < 9) return ThrowType(info.Env(), "stats array too short");
    out[0] = double(readPackets_.load(std::memory_order_relaxed));
    out[1] = double(readBatches_.load(std::memory_order_relaxed));
    out[2] = double(writePackets_);
    out[3] = double(writeErrors_);
    out[4] = double(readErrors_.load(std::memory_order_relaxed));
    out[5] = double(lastReadErrno_.load(std::memory_order_relaxed));
    out[6] = double(lastWriteErrno_);
    out[7] = double(superPackets_);
    out[8] = double(coalesced_);
    if (out.ElementLength() >= 12) {
      out[9] = double(splitSupers_.load(std::memory_order_relaxed));
      out[10] = double(splitSegments_.load(std::memory_order_relaxed));
      out[11] = double(splitDropped_.load(std::memory_order_relaxed));
    }
    return info.Env().Undefined();
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    Shutdown();
    return info.Env().Undefined();
  }

  // The reader's Fill (reader.h): reads packets into `slot` until EAGAIN or the batch is full. Returns
  // how many.
  uint32_t Fill(uint32_t slot, int* err) {
    if (coalesce_) return FillSplit(slot, err);
    uint8_t* base = slotData_[slot] + headroom_;
    uint32_t* lens = slotLens_[slot];
    uint32_t n = 0;
    while (n < batch_) {
      ssize_t r = read(fd_, base + size_t(n) * stride_, space_);
      if (r >= 0) {
        lens[n++] = uint32_t(r);
        continue;
      }
      if (errno == EINTR) continue;
      if (errno != EAGAIN) {
        *err = errno;
        readErrors_.fetch_add(1, std::memory_order_relaxed);
        lastReadErrno_.store(errno, std::memory_order_relaxed);
      }
      break;
    }
    return n;
  }

  // Coalescing mode's reader: every read goes to rbuf_ (a super-packet does not fit a slot); a plain
  // packet is copied into the slot (its checksum finished if the kernel left it partial), a TCP
  // super-packet is cut into segments there. A super-packet that does not fit the rest of the batch
  // is carried over to the next Fill (the reader calls it again at once for a full batch).
  uint32_t FillSplit(uint32_t slot, int* err) {
    uint8_t* base = slotData_[slot] + headroom_;
    uint32_t* lens = slotLens_[slot];
    uint32_t n = 0;
    while (n < batch_) {
      if (carryNext_ < carrySegs_) {
        const uint8_t* pkt = rbuf_.data() + kVnetHdrSize;
        while (n < batch_ && carryNext_ < carrySegs_) {
          size_t len = realmnet::SplitSegment(pkt, carryLen_, carryHdr_, carryGso_, carryNext_, carrySegs_, base + size_t(n) * stride_);
          lens[n++] = uint32_t(len);
          carryNext_++;
        }
        continue;
      }
      ssize_t r = read(fd_, rbuf_.data(), rbuf_.size());
      if (r < 0) {
        if (errno == EINTR) continue;
        if (errno != EAGAIN) {
          *err = errno;
          readErrors_.fetch_add(1, std::memory_order_relaxed);
          lastReadErrno_.store(errno, std::memory_order_relaxed);
        }
        break;
      }
      if (r < kVnetHdrSize) continue;
      uint8_t* pkt = rbuf_.data() + kVnetHdrSize;
      size_t len = size_t(r) - kVnetHdrSize;
      realmnet::VnetHdr h = realmnet::ReadVnetHdr(rbuf_.data());
      if (h.gsoType == 0) {
        if (len > space_ || ((h.flags & 1) != 0 && !realmnet::FinishChecksum(pkt, len, h.csumStart, h.csumOffset))) {
          splitDropped_.fetch_add(1, std::memory_order_relaxed);
          continue;
        }
        memcpy(base + size_t(n) * stride_, pkt, len);
        lens[n++] = uint32_t(len);
        continue;
      }
      uint32_t hdr = realmnet::SplitPlan(pkt, len, h);
      if (hdr == 0 || h.gsoSize == 0 || hdr + h.gsoSize > space_) {
        splitDropped_.fetch_add(1, std::memory_order_relaxed);  // UDP GSO, IPv4, extension headers: not ours
        continue;
      }
      carryLen_ = len;
      carryHdr_ = hdr;
      carryGso_ = h.gsoSize;
      carryNext_ = 0;
      carrySegs_ = uint32_t((len - hdr + h.gsoSize - 1) / h.gsoSize);
      splitSupers_.fetch_add(1, std::memory_order_relaxed);
      splitSegments_.fetch_add(carrySegs_, std::memory_order_relaxed);
    }
    return n;
  }

  std::vector<uint8_t> rbuf_;  // reader thread only
  size_t carryLen_ = 0;
  uint32_t carryHdr_ = 0, carryGso_ = 0, carryNext_ = 0, carrySegs_ = 0;
  std::atomic<uint64_t> splitSupers_{0}, splitSegments_{0}, splitDropped_{0};

  uint32_t stride_ = 0, headroom_ = 0, space_ = 0;
  std::vector<uint8_t*> slotData_;
  std::vector<uint32_t*> slotLens_;
  std::atomic<uint64_t> readErrors_{0};
  std::atomic<int> lastReadErrno_{0};
  uint64_t writePackets_ = 0, writeErrors_ = 0;  // JS thread only
  uint64_t superPackets_ = 0, coalesced_ = 0;     // JS thread only
  bool coalesce_ = false;
  std::vector<uint8_t> scratch_;                  // one super-packet with its virtio header
  int lastWriteErrno_ = 0;
};

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("Tun", Tun::Define(env));
  exports.Set("VNET_HDR_SIZE", Napi::Number::New(env, kVnetHdrSize));
  exports.Set("coalesceForTest", Napi::Function::New(env, realmnet::CoalesceForTest));
  exports.Set("splitForTest", Napi::Function::New(env, realmnet::SplitForTest));
  return exports;
}

}  // namespace

NODE_API_MODULE(realmnet_tun, Init)
