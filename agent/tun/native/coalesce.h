// Receive-side coalescing for the TUN device (docs/dataplane-coalescing.md): which consecutive
// packets of a write batch merge into one TCP/IPv6 GSO super-packet, and building it. Pure
// functions over the caller's bytes, no state: tun.cc writes what they decide; coalesceForTest
// exposes them to the unit tests without a device.
//
// The rules are Linux GRO's for TCP (tcp_gro_receive): the same flow (addresses, ports), the same
// IPv6 first word (traffic class, flow label) and hop limit, no extension headers, the same TCP
// header length and identical option bytes (so equal timestamps), the same ACK number and window,
// each segment starting where the previous one ended, flags exactly ACK on all but the last (which
// may add PSH), all segments of the first one's payload size but the last (which may be smaller and
// then ends the run), at most 65535 bytes of IPv6 payload. Anything else (SYN, FIN, RST, URG, ECE,
// CWR, a pure ACK, a non-TCP packet) is written alone, in its place: order within every flow holds
// because only neighbours merge.
//
// Checksums: the merged packet carries NEEDS_CSUM with the pseudo-header sum in the TCP checksum
// field, as the kernel expects of CHECKSUM_PARTIAL; the segments' own checksums are not verified.
// Sealed traffic was authenticated by the AEAD before it got here (what the peer's kernel sent is
// what we merge); unsealed traffic (measurement only) relies on the UDP checksum of the underlay,
// as wireguard-go's GRO does.
#pragma once

#include <napi.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

namespace realmnet {

constexpr size_t kMaxSuper = 65535 + 40;  // an IPv6 header and the largest payload its length field allows
constexpr uint32_t kMaxRun = 64;          // segments per super-packet (a 64-packet batch at most anyway)
constexpr uint8_t kTcpAck = 0x10, kTcpPsh = 0x08;

inline uint16_t Be16(const uint8_t* p) { return uint16_t(p[0] << 8 | p[1]); }
inline uint32_t Be32(const uint8_t* p) { return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | p[3]; }

// The TCP header length of a packet that may take part in a run (whole TCP/IPv6, no extension
// header, lengths consistent, a payload, no flag but ACK and PSH), else 0.
inline uint32_t MergeableTcp(const uint8_t* p, size_t len) {
  if (len < 60 || (p[0] >> 4) != 6 || p[6] != 6) return 0;
  if (size_t(Be16(p + 4)) + 40 != len) return 0;
  uint32_t th = uint32_t(p[40 + 12] >> 4) * 4;
  if (th < 20 || 40 + th >= len) return 0;  // no payload: a pure ACK is never merged
  uint8_t flags = p[40 + 13];
  if ((flags & ~uint8_t(kTcpAck | kTcpPsh)) != 0 || (flags & kTcpAck) == 0) return 0;
  return th;
}

// Where the run that starts at packet `first` ends (exclusive): first + 1 when it merges with
// nothing. Packets out of the buffer's bounds end a run (the writer counts them).
inline uint32_t RunEnd(const uint8_t* data, size_t size, const uint32_t* offsets, const uint32_t* lengths, uint32_t first, uint32_t count) {
  const uint8_t* a = data + offsets[first];
  size_t alen = lengths[first];
  uint32_t th = MergeableTcp(a, alen);
  if (th == 0 || (a[40 + 13] & kTcpPsh) != 0) return first + 1;
  const size_t gso = alen - 40 - th;
  size_t total = alen - 40;  // IPv6 payload of the super-packet so far
  const uint8_t* prev = a;
  size_t prevPayload = gso;
  uint32_t i = first + 1;
  for (; i < count && i - first < kMaxRun; i++) {
    size_t off = offsets[i], len = lengths[i];
    if (off > size || len > size - off) break;
    const uint8_t* q = data + off;
    if (MergeableTcp(q, len) != th) break;
    size_t payload = len - 40 - th;
    if (payload > gso || total + payload > 65535) break;
    if (memcmp(a, q, 4) != 0 || a[7] != q[7] || memcmp(a + 8, q + 8, 32) != 0) break;  // tc/flow, hop limit, addresses
    const uint8_t* ta = a + 40;
    const uint8_t* tq = q + 40;
    if (memcmp(ta, tq, 4) != 0) break;                                    // ports
    if (Be32(tq + 4) != uint32_t(Be32(prev + 40 + 4) + prevPayload)) break;  // in sequence
    if (memcmp(ta + 8, tq + 8, 4) != 0 || memcmp(ta + 14, tq + 14, 2) != 0) break;  // ACK number, window
    if (th > 20 && memcmp(ta + 20, tq + 20, th - 20) != 0) break;           // options, timestamps
    total += payload;
    prev = q;
    prevPayload = payload;
    if (payload < gso || (tq[13] & kTcpPsh) != 0) {
      i++;
      break;  // a short or pushed segment is the last of its run
    }
  }
  return i;
}

inline uint16_t Fold(uint64_t s) {
  while ((s >> 16) != 0) s = (s & 0xffff) + (s >> 16);
  return uint16_t(s);
}

// One's-complement sum of p[0, n) as big-endian 16-bit words, folded to 16 bits. Sums native
// 32-bit words (the sum is byte-order independent up to a final swap, RFC 1071 2(B)).
inline uint16_t CsumBE(const uint8_t* p, size_t n) {
  uint64_t acc = 0;
  size_t k = 0;
  for (; k + 4 <= n; k += 4) {
    uint32_t w;
    memcpy(&w, p + k, 4);
    acc += w;
  }
  uint8_t tail[4] = {0, 0, 0, 0};
  memcpy(tail, p + k, n - k);
  uint32_t w;
  memcpy(&w, tail, 4);
  acc += w;
  uint16_t x = Fold(acc);
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  x = uint16_t(x >> 8 | x << 8);
#endif
  return x;
}

// Builds the super-packet of packets [first, end) at out: a virtio_net_hdr (NEEDS_CSUM, GSO_TCPV6,
// little-endian fields as the TUN device uses on this architecture), the first packet's IPv6 and
// TCP headers with the total length and the last segment's flags, then every payload in order.
// Returns the packet's length (without the virtio header). out holds 10 + kMaxSuper bytes.
inline size_t BuildSuper(const uint8_t* data, const uint32_t* offsets, const uint32_t* lengths, uint32_t first, uint32_t end, uint8_t* out) {
  const uint8_t* a = data + offsets[first];
  const uint32_t th = uint32_t(a[40 + 12] >> 4) * 4;
  const size_t hdr = 40 + th;
  uint8_t* pkt = out + 10;
  memcpy(pkt, a, hdr);
  size_t at = hdr;
  for (uint32_t i = first; i < end; i++) {
    const uint8_t* q = data + offsets[i];
    size_t payload = lengths[i] - hdr;
    memcpy(pkt + at, q + hdr, payload);
    at += payload;
  }
  const uint16_t plen = uint16_t(at - 40);
  pkt[4] = uint8_t(plen >> 8);
  pkt[5] = uint8_t(plen);
  pkt[40 + 13] = (data + offsets[end - 1])[40 + 13];  // PSH, if any, is the last segment's
  // The pseudo-header sum (addresses, upper-layer length, next header), folded, not complemented.
  uint16_t ps = Fold(uint64_t(CsumBE(pkt + 8, 32)) + plen + 6);
  pkt[40 + 16] = uint8_t(ps >> 8);
  pkt[40 + 17] = uint8_t(ps);
  const uint16_t gso = uint16_t(lengths[first] - hdr);
  // struct virtio_net_hdr: flags, gso_type, hdr_len, gso_size, csum_start, csum_offset.
  out[0] = 1;  // VIRTIO_NET_HDR_F_NEEDS_CSUM
  out[1] = 4;  // VIRTIO_NET_HDR_GSO_TCPV6
  out[2] = uint8_t(hdr);
  out[3] = uint8_t(hdr >> 8);
  out[4] = uint8_t(gso);
  out[5] = uint8_t(gso >> 8);
  out[6] = 40;
  out[7] = 0;
  out[8] = 16;
  out[9] = 0;
  return at;
}

// ---- the send side: cutting the kernel's TSO super-packets into segments (GSO in userspace) ----

struct VnetHdr {
  uint8_t flags, gsoType;
  uint16_t hdrLen, gsoSize, csumStart, csumOffset;
};

inline VnetHdr ReadVnetHdr(const uint8_t* p) {
  auto le = [p](int i) { return uint16_t(p[i] | p[i + 1] << 8); };
  return VnetHdr{p[0], p[1], le(2), le(4), le(6), le(8)};
}

// A packet the kernel left with a partial checksum (VIRTIO_NET_HDR_F_NEEDS_CSUM): the field at
// start+off holds the pseudo-header sum; the checksum over [start, len) goes there. False if the
// offsets lie outside the packet.
inline bool FinishChecksum(uint8_t* pkt, size_t len, size_t start, size_t off) {
  if (start >= len || start + off + 2 > len) return false;
  uint16_t c = uint16_t(~CsumBE(pkt + start, len - start));
  pkt[start + off] = uint8_t(c >> 8);
  pkt[start + off + 1] = uint8_t(c);
  return true;
}

// The header length (IPv6 + TCP) of a TCP/IPv6 TSO super-packet we can cut, else 0: gso type TCPV6
// (the ECN bit allowed), no extension header, the checksum at the TCP header, the lengths inside.
inline uint32_t SplitPlan(const uint8_t* pkt, size_t len, const VnetHdr& h) {
  if ((h.gsoType & 0x7f) != 4 || len < 60 || (pkt[0] >> 4) != 6 || pkt[6] != 6 || h.csumStart != 40) return 0;
  uint32_t th = uint32_t(pkt[52] >> 4) * 4;
  if (th < 20 || 40 + th >= len || len > kMaxSuper) return 0;
  return 40 + th;
}

// Segment k of `segs` of the super-packet pkt[0, len) with headers of `hdr` bytes and `gso` bytes
// of payload each (the last may be shorter), written whole at out: headers copied, the IPv6 length,
// the sequence number and the flags set as the kernel's tcp_gso_segment does (FIN and PSH only on
// the last, CWR only on the first), the TCP checksum computed in full. Returns its length.
inline size_t SplitSegment(const uint8_t* pkt, size_t len, uint32_t hdr, uint32_t gso, uint32_t k, uint32_t segs, uint8_t* out) {
  const size_t at = hdr + size_t(k) * gso;
  const size_t n = std::min<size_t>(gso, len - at);
  memcpy(out, pkt, hdr);
  memcpy(out + hdr, pkt + at, n);
  const uint16_t tcpLen = uint16_t(hdr - 40 + n);
  out[4] = uint8_t(tcpLen >> 8);
  out[5] = uint8_t(tcpLen);
  uint32_t seq = Be32(pkt + 44) + uint32_t(k) * gso;
  out[44] = uint8_t(seq >> 24);
  out[45] = uint8_t(seq >> 16);
  out[46] = uint8_t(seq >> 8);
  out[47] = uint8_t(seq);
  uint8_t flags = pkt[53];
  if (k + 1 != segs) flags &= uint8_t(~(0x01 | kTcpPsh));
  if (k != 0) flags &= uint8_t(~0x80);
  out[53] = flags;
  out[56] = 0;
  out[57] = 0;
  uint64_t sum = uint64_t(CsumBE(out + 8, 32)) + tcpLen + 6 + CsumBE(out + 40, tcpLen);
  uint16_t c = uint16_t(~Fold(sum));
  out[56] = uint8_t(c >> 8);
  out[57] = uint8_t(c);
  return hdr + n;
}

// coalesceForTest(buf, offsets, lengths, count) → [[first, end, Buffer(vnet header + packet) | null], ...]:
// what a write of these packets would emit, without a device.
inline Napi::Value CoalesceForTest(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsTypedArray() || !info[1].IsTypedArray() || !info[2].IsTypedArray() || !info[3].IsNumber()) {
    Napi::TypeError::New(env, "coalesceForTest(buf, offsets, lengths, count)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Napi::Uint8Array buf = info[0].As<Napi::Uint8Array>();
  Napi::Uint32Array offsets = info[1].As<Napi::Uint32Array>();
  Napi::Uint32Array lengths = info[2].As<Napi::Uint32Array>();
  uint32_t count = info[3].As<Napi::Number>().Uint32Value();
  if (count > offsets.ElementLength() || count > lengths.ElementLength()) {
    Napi::RangeError::New(env, "count is past the arrays").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Napi::Array out = Napi::Array::New(env);
  std::vector<uint8_t> scratch(10 + kMaxSuper);
  uint32_t n = 0;
  for (uint32_t i = 0; i < count;) {
    size_t off = offsets[i], len = lengths[i];
    if (off > buf.ByteLength() || len > buf.ByteLength() - off) {
      i++;
      continue;
    }
    uint32_t end = RunEnd(buf.Data(), buf.ByteLength(), offsets.Data(), lengths.Data(), i, count);
    Napi::Array item = Napi::Array::New(env, 3);
    item.Set(uint32_t(0), Napi::Number::New(env, i));
    item.Set(uint32_t(1), Napi::Number::New(env, end));
    if (end > i + 1) {
      size_t pl = BuildSuper(buf.Data(), offsets.Data(), lengths.Data(), i, end, scratch.data());
      item.Set(uint32_t(2), Napi::Buffer<uint8_t>::Copy(env, scratch.data(), 10 + pl));
    } else {
      item.Set(uint32_t(2), env.Null());
    }
    out.Set(n++, item);
    i = end;
  }
  return out;
}

// splitForTest(frame: virtio header + packet) → the packets the reader would hand over (segments of
// a super-packet, or the packet with its checksum finished), or null if it would drop it.
inline Napi::Value SplitForTest(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsTypedArray()) {
    Napi::TypeError::New(env, "splitForTest(frame)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Napi::Uint8Array in = info[0].As<Napi::Uint8Array>();
  if (in.ByteLength() < 10 || in.ByteLength() > 10 + kMaxSuper) return env.Null();
  std::vector<uint8_t> pkt(in.Data() + 10, in.Data() + in.ByteLength());
  VnetHdr h = ReadVnetHdr(in.Data());
  Napi::Array out = Napi::Array::New(env);
  if (h.gsoType == 0) {
    if ((h.flags & 1) != 0 && !FinishChecksum(pkt.data(), pkt.size(), h.csumStart, h.csumOffset)) return env.Null();
    out.Set(uint32_t(0), Napi::Buffer<uint8_t>::Copy(env, pkt.data(), pkt.size()));
    return out;
  }
  uint32_t hdr = SplitPlan(pkt.data(), pkt.size(), h);
  if (hdr == 0 || h.gsoSize == 0) return env.Null();
  uint32_t segs = uint32_t((pkt.size() - hdr + h.gsoSize - 1) / h.gsoSize);
  std::vector<uint8_t> seg(hdr + h.gsoSize);
  for (uint32_t k = 0; k < segs; k++) {
    size_t n = SplitSegment(pkt.data(), pkt.size(), hdr, h.gsoSize, k, segs, seg.data());
    out.Set(k, Napi::Buffer<uint8_t>::Copy(env, seg.data(), n));
  }
  return out;
}

}  // namespace realmnet
