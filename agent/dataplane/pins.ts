import { bytesToAddress } from '../../shared/address.ts';

/*
 * pins: the flow table of slice 2 (docs/slice2.md). Each flow to or from a user or data ID is pinned
 * to one of its hosts for the flow's life; the data plane finds the pin per packet.
 *
 * 1. The key is the flow seen from this host, the same for both directions: local ID, remote ID (the
 *    user/data ID), protocol, local port, remote port (37 bytes). Ports for TCP and UDP; ICMPv6 echo
 *    uses its identifier as both ports (separate pings are separate flows); anything else has none.
 * 2. Set-associative, like a CPU cache: the key's hash picks a bucket of WAYS slots; a new flow takes
 *    a free way, else evicts the bucket's least recently used one (counted: idle or still active).
 *    The table never grows past its capacity, needs no deletion bookkeeping (no tombstones, no
 *    rehash), and an attacker spraying flows can only evict flows of its own bucket's hash.
 * 3. TCP flows track sequence numbers both ways, so that when their host dies a RST can be written
 *    into the TUN that the local stack accepts: Linux (RFC 5961 §3) resets an established connection
 *    only if the RST's sequence number is exactly rcv_nxt; an in-window one makes it send a challenge
 *    ACK, whose acknowledgement number is the exact rcv_nxt, answered with writeResetFor(). In
 *    SYN_SENT it accepts a RST only with ACK and ack == snd_nxt (RFC 793).
 * Everything lives in typed arrays allocated once; find/insert/track allocate nothing.
 */

export const PIN_FREE = 0;
export const PIN_LIVE = 1;
export const PIN_DEAD = 2;

const WAYS = 8;
const KEY = 37;
const TCP = 6;
const UDP = 17;
const ICMPV6 = 58;
const F_FIN = 0x01;
const F_SYN = 0x02;
const F_RST = 0x04;
const F_ACK = 0x10;
/** Set once an outbound segment was seen (sndNxt holds), an inbound one (rcvEnd), an outbound ACK (rcvAck). */
const HAS_SND = 1;
const HAS_RCV = 2;
const HAS_ACK = 4;

export interface PinTableOptions {
  /** Flows at most: a power of two, at least WAYS. */
  readonly capacity: number;
  /** A flow unused this long is freed by sweep(). */
  readonly idleMs: number;
  /** A dead flow (its host died; its RSTs written) is kept this long to answer its app's last packets. */
  readonly deadHoldMs?: number;
}

export interface PinStats {
  flows: number;
  inserted: number;
  evictedIdle: number;
  evictedActive: number;
  expired: number;
}

export interface PinInfo {
  readonly slot: number;
  readonly local: string;
  readonly remote: string;
  readonly proto: number;
  readonly localPort: number;
  readonly remotePort: number;
  readonly host: number;
  readonly state: 'live' | 'dead';
  readonly idleMs: number;
}

export class PinTable {
  private readonly keys: Uint8Array;
  private readonly states: Uint8Array;
  private readonly hosts: Uint32Array;
  private readonly used: Float64Array;
  private readonly sndNxt: Uint32Array;
  private readonly rcvEnd: Uint32Array;
  private readonly rcvAck: Uint32Array;
  private readonly seen: Uint8Array;
  private readonly buckets: number;
  private readonly deadHoldMs: number;
  /** The canonical key of the packet being looked at (find/insert), built in place. */
  private readonly k = new Uint8Array(KEY);
  readonly stats: PinStats = { flows: 0, inserted: 0, evictedIdle: 0, evictedActive: 0, expired: 0 };

  constructor(private readonly opts: PinTableOptions) {
    const n = opts.capacity;
    if (!Number.isInteger(n) || n < WAYS || (n & (n - 1)) !== 0) throw new RangeError(`flow table capacity ${n} must be a power of two ≥ ${WAYS}`);
    this.buckets = n / WAYS;
    this.keys = new Uint8Array(n * KEY);
    this.states = new Uint8Array(n);
    this.hosts = new Uint32Array(n);
    this.used = new Float64Array(n);
    this.sndNxt = new Uint32Array(n);
    this.rcvEnd = new Uint32Array(n);
    this.rcvAck = new Uint32Array(n);
    this.seen = new Uint8Array(n);
    this.deadHoldMs = opts.deadHoldMs ?? 2_000;
  }

  get capacity(): number {
    return this.states.length;
  }

  /** Hot path: the slot of this packet's flow (IPv6 packet at buf[ip, ip+len)), or -1. */
  find(buf: Uint8Array, ip: number, len: number, outbound: boolean): number {
    if (!this.keyOf(buf, ip, len, outbound)) return -1;
    const base = this.bucketOf() * WAYS;
    for (let w = 0; w < WAYS; w++) {
      const s = base + w;
      if (this.states[s] !== PIN_FREE && this.sameKey(s)) return s;
    }
    return -1;
  }

  /** Pins a new flow to `host` (an opaque handle); returns its slot (-1 only for a packet too short to key). */
  insert(buf: Uint8Array, ip: number, len: number, outbound: boolean, host: number, now: number): number {
    if (!this.keyOf(buf, ip, len, outbound)) return -1;
    const base = this.bucketOf() * WAYS;
    let victim = -1;
    for (let w = 0; w < WAYS; w++) {
      const s = base + w;
      if (this.states[s] === PIN_FREE) {
        victim = s;
        break;
      }
      if (victim < 0 || this.used[s] < this.used[victim]) victim = s;
    }
    if (this.states[victim] !== PIN_FREE) {
      if (now - this.used[victim] > this.opts.idleMs) this.stats.evictedIdle++;
      else this.stats.evictedActive++;
      this.stats.flows--;
    }
    this.keys.set(this.k, victim * KEY);
    this.states[victim] = PIN_LIVE;
    this.hosts[victim] = host;
    this.used[victim] = now;
    this.seen[victim] = 0;
    this.stats.flows++;
    this.stats.inserted++;
    return victim;
  }

  host(slot: number): number {
    return this.hosts[slot];
  }

  state(slot: number): number {
    return this.states[slot];
  }

  proto(slot: number): number {
    return this.keys[slot * KEY + 32];
  }

  touch(slot: number, now: number): void {
    this.used[slot] = now;
  }

  /** An outbound TCP segment: what it sends (snd_nxt) and, with ACK, what the app has received. */
  trackOut(slot: number, buf: Uint8Array, ip: number, len: number): void {
    const t = tcpAt(buf, ip, len);
    if (t < 0) return;
    const seq = read32(buf, t + 4);
    const end = (seq + segLen(buf, ip, t, len)) >>> 0;
    const seen = this.seen[slot];
    if ((seen & HAS_SND) === 0 || after(end, this.sndNxt[slot])) this.sndNxt[slot] = end;
    if ((buf[t + 13] & F_ACK) !== 0) {
      const ack = read32(buf, t + 8);
      if ((seen & HAS_ACK) === 0 || after(ack, this.rcvAck[slot])) this.rcvAck[slot] = ack;
      this.seen[slot] |= HAS_ACK;
    }
    this.seen[slot] |= HAS_SND;
  }

  /** An inbound TCP segment: how far the peer has sent. */
  trackIn(slot: number, buf: Uint8Array, ip: number, len: number): void {
    const t = tcpAt(buf, ip, len);
    if (t < 0 || (buf[t + 13] & F_RST) !== 0) return;
    const end = (read32(buf, t + 4) + segLen(buf, ip, t, len)) >>> 0;
    if ((this.seen[slot] & HAS_RCV) === 0 || after(end, this.rcvEnd[slot])) this.rcvEnd[slot] = end;
    this.seen[slot] |= HAS_RCV;
  }

  markDead(slot: number, now: number): void {
    if (this.states[slot] === PIN_FREE) return;
    this.states[slot] = PIN_DEAD;
    this.used[slot] = now;
  }

  release(slot: number): void {
    if (this.states[slot] === PIN_FREE) return;
    this.states[slot] = PIN_FREE;
    this.stats.flows--;
  }

  /** Frees idle flows and dead ones past their hold; returns how many. Control plane, once a second. */
  sweep(now: number): number {
    let n = 0;
    for (let s = 0; s < this.states.length; s++) {
      const st = this.states[s];
      if (st === PIN_FREE) continue;
      const limit = st === PIN_DEAD ? this.deadHoldMs : this.opts.idleMs;
      if (now - this.used[s] <= limit) continue;
      this.states[s] = PIN_FREE;
      this.stats.flows--;
      n++;
    }
    this.stats.expired += n;
    return n;
  }

  /** Calls fn with every live flow pinned to host. */
  forEachOfHost(host: number, fn: (slot: number) => void): void {
    for (let s = 0; s < this.states.length; s++) if (this.states[s] === PIN_LIVE && this.hosts[s] === host) fn(s);
  }

  /** For status (allocates). */
  list(now: number): PinInfo[] {
    const out: PinInfo[] = [];
    for (let s = 0; s < this.states.length; s++) {
      const st = this.states[s];
      if (st === PIN_FREE) continue;
      const o = s * KEY;
      const k = this.keys;
      out.push({
        slot: s,
        local: bytesToAddress(6, k, o),
        remote: bytesToAddress(6, k, o + 16),
        proto: k[o + 32],
        localPort: (k[o + 33] << 8) | k[o + 34],
        remotePort: (k[o + 35] << 8) | k[o + 36],
        host: this.hosts[s],
        state: st === PIN_DEAD ? 'dead' : 'live',
        idleMs: Math.max(0, Math.round(now - this.used[s])),
      });
    }
    return out;
  }

  /**
   * Writes at out[off..] a 60-byte IPv6 + TCP RST from the remote (the user/data ID) to the local
   * application: RST|ACK, seq = how far the peer had got (the later of its last segment's end and
   * the app's last ACK), ack = snd_nxt; in SYN_SENT (nothing received, no ACK sent) seq 0 and
   * ack = the SYN's seq + 1. Returns 60, or 0 for a non-TCP flow or one with nothing sent yet.
   */
  writeReset(slot: number, out: Uint8Array, off: number): number {
    const o = slot * KEY;
    const k = this.keys;
    if (k[o + 32] !== TCP || (this.seen[slot] & HAS_SND) === 0) return 0;
    const seen = this.seen[slot];
    let seq = 0;
    if ((seen & HAS_RCV) !== 0 && (seen & HAS_ACK) !== 0) seq = after(this.rcvEnd[slot], this.rcvAck[slot]) ? this.rcvEnd[slot] : this.rcvAck[slot];
    else if ((seen & HAS_RCV) !== 0) seq = this.rcvEnd[slot];
    else if ((seen & HAS_ACK) !== 0) seq = this.rcvAck[slot];
    writeRst(out, off, k, o + 16, k, o, (k[o + 35] << 8) | k[o + 36], (k[o + 33] << 8) | k[o + 34], seq, this.sndNxt[slot]);
    return 60;
  }

  /**
   * The RST that answers one outbound TCP segment exactly: seq = its ack number (rcv_nxt), ack = its
   * seq + length; returns 60, or 0 if it is not TCP or is itself a RST.
   */
  writeResetFor(buf: Uint8Array, ip: number, len: number, out: Uint8Array, off: number): number {
    const t = tcpAt(buf, ip, len);
    if (t < 0 || (buf[t + 13] & F_RST) !== 0) return 0;
    const seq = (buf[t + 13] & F_ACK) !== 0 ? read32(buf, t + 8) : 0;
    const ack = (read32(buf, t + 4) + segLen(buf, ip, t, len)) >>> 0;
    writeRst(out, off, buf, ip + 24, buf, ip + 8, (buf[t + 2] << 8) | buf[t + 3], (buf[t] << 8) | buf[t + 1], seq, ack);
    return 60;
  }

  // ---- inside the class ----

  /** Builds the canonical key of the packet in this.k; false when it is too short to tell. */
  private keyOf(buf: Uint8Array, ip: number, len: number, outbound: boolean): boolean {
    if (len < 40 || ip + len > buf.length) return false;
    const k = this.k;
    const local = outbound ? ip + 8 : ip + 24;
    const remote = outbound ? ip + 24 : ip + 8;
    for (let i = 0; i < 16; i++) {
      k[i] = buf[local + i];
      k[16 + i] = buf[remote + i];
    }
    const nh = buf[ip + 6];
    k[32] = nh;
    let lp = 0;
    let rp = 0;
    const t = ip + 40;
    if ((nh === TCP || nh === UDP) && len >= 44) {
      const sp = (buf[t] << 8) | buf[t + 1];
      const dp = (buf[t + 2] << 8) | buf[t + 3];
      lp = outbound ? sp : dp;
      rp = outbound ? dp : sp;
    } else if (nh === ICMPV6 && len >= 46 && (buf[t] === 128 || buf[t] === 129)) {
      lp = rp = (buf[t + 4] << 8) | buf[t + 5];
    }
    k[33] = lp >> 8;
    k[34] = lp & 0xff;
    k[35] = rp >> 8;
    k[36] = rp & 0xff;
    return true;
  }

  private bucketOf(): number {
    const k = this.k;
    let h = 0x2545f491;
    for (let i = 0; i + 4 <= 36; i += 4) h = mix(h, (k[i] << 24) | (k[i + 1] << 16) | (k[i + 2] << 8) | k[i + 3]);
    h = mix(h, k[36]);
    h ^= h >>> 16;
    h = Math.imul(h, 0x85ebca6b);
    h ^= h >>> 13;
    return (h >>> 0) % this.buckets;
  }

  private sameKey(slot: number): boolean {
    const o = slot * KEY;
    const keys = this.keys;
    const k = this.k;
    for (let i = 0; i < KEY; i++) if (keys[o + i] !== k[i]) return false;
    return true;
  }
}

/** Offset of the TCP header of a whole-enough IPv6/TCP packet, or -1. */
function tcpAt(buf: Uint8Array, ip: number, len: number): number {
  if (len < 60 || buf[ip + 6] !== TCP || ip + 60 > buf.length) return -1;
  const t = ip + 40;
  const doff = (buf[t + 12] >> 4) * 4;
  return doff < 20 || 40 + doff > len ? -1 : t;
}

/** Sequence space a segment takes: payload (from the IPv6 payload length) + SYN + FIN. */
function segLen(buf: Uint8Array, ip: number, t: number, len: number): number {
  const ipLen = Math.min(len, ((buf[ip + 4] << 8) | buf[ip + 5]) + 40);
  const payload = Math.max(0, ipLen - 40 - (buf[t + 12] >> 4) * 4);
  const f = buf[t + 13];
  return payload + ((f & F_SYN) !== 0 ? 1 : 0) + ((f & F_FIN) !== 0 ? 1 : 0);
}

function read32(b: Uint8Array, i: number): number {
  return ((b[i] << 24) | (b[i + 1] << 16) | (b[i + 2] << 8) | b[i + 3]) >>> 0;
}

function write32(b: Uint8Array, i: number, v: number): void {
  b[i] = v >>> 24;
  b[i + 1] = (v >>> 16) & 0xff;
  b[i + 2] = (v >>> 8) & 0xff;
  b[i + 3] = v & 0xff;
}

/** RFC 1982 serial order on 32 bits: a is after b. */
function after(a: number, b: number): boolean {
  return ((a - b) | 0) > 0;
}

function mix(h: number, k: number): number {
  k = Math.imul(k, 0xcc9e2d51);
  k = (k << 15) | (k >>> 17);
  k = Math.imul(k, 0x1b873593);
  h ^= k;
  h = (h << 13) | (h >>> 19);
  return (Math.imul(h, 5) + 0xe6546b64) | 0;
}

/** IPv6 header + 20-byte TCP RST|ACK with its checksum, at out[off..off+60). */
function writeRst(out: Uint8Array, off: number, src: Uint8Array, srcOff: number, dst: Uint8Array, dstOff: number, sport: number, dport: number, seq: number, ack: number): void {
  out.fill(0, off, off + 60);
  out[off] = 0x60;
  out[off + 5] = 20; // payload length
  out[off + 6] = TCP;
  out[off + 7] = 64;
  for (let i = 0; i < 16; i++) {
    out[off + 8 + i] = src[srcOff + i];
    out[off + 24 + i] = dst[dstOff + i];
  }
  const t = off + 40;
  out[t] = sport >> 8;
  out[t + 1] = sport & 0xff;
  out[t + 2] = dport >> 8;
  out[t + 3] = dport & 0xff;
  write32(out, t + 4, seq);
  write32(out, t + 8, ack);
  out[t + 12] = 5 << 4;
  out[t + 13] = F_RST | F_ACK;
  // Checksum: pseudo-header (addresses, length 20, next header 6) + the segment.
  let sum = 20 + TCP;
  for (let i = 8; i < 40; i += 2) sum += (out[off + i] << 8) | out[off + i + 1];
  for (let i = 0; i < 20; i += 2) sum += (out[t + i] << 8) | out[t + i + 1];
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  const c = ~sum & 0xffff;
  out[t + 16] = c >> 8;
  out[t + 17] = c & 0xff;
}
