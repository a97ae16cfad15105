import { MAC_LEN, mac, type MacKey } from '../shared/crypto/blake2s.ts';
import { writeHeader } from '../shared/wire/codec.ts';
import { HEADER_LEN, MAX_DATAGRAM, MsgType, type LocatorPref } from '../shared/wire/messages.ts';

/**
 * The RM's hot path, written by hand: LOOKUP in, LOOKUP-REPLY and PUSH out.
 *
 * Profiling the RM handler (node --cpu-prof, in process, no sockets) put 9–12 µs on each positive
 * lookup, a third of it in msgpackr (unpack the request, pack the answer), Buffer allocation and GC.
 * Here each answer is written field by field straight into a caller-owned buffer (header | array
 * marker | request ID | ID | ttl | binding bytes | prefs | MAC): no intermediate objects, and nothing
 * kept per record (a memo of packed answers per record would add ~0.5 KB to each of a million
 * bindings once looked up).
 *
 * The bytes are exactly what shared/wire/codec.ts encode() writes for the same message (msgpack
 * concatenates: an array marker followed by its packed elements); test/unit/rm-fastpath.test.ts checks
 * byte equality against encode() and decode(). Anything that is not the canonical form of a LOOKUP
 * body (another integer width for the request ID, extra fields) goes to the general decoder instead,
 * so the fast path never accepts what the codec would refuse.
 */

/**
 * The request ID of a canonical LOOKUP body in buf[HEADER_LEN, len - MAC_LEN): 0x92, a msgpack
 * unsigned integer, 0xc4 0x10 and 16 bytes. Returns the offset of the 16-byte ID in the high bits
 * (see lookupIdOffset) or -1 when the body is anything else (then the general decoder decides).
 */
export function parseLookup(buf: Uint8Array, len: number): number {
  let o = HEADER_LEN;
  if (buf[o++] !== 0x92) return -1;
  const t = buf[o];
  let reqId: number;
  if (t < 0x80) {
    reqId = t;
    o += 1;
  } else if (t === 0xcc) {
    reqId = buf[o + 1];
    o += 2;
  } else if (t === 0xcd) {
    reqId = (buf[o + 1] << 8) | buf[o + 2];
    o += 3;
  } else if (t === 0xce) {
    reqId = ((buf[o + 1] << 24) | (buf[o + 2] << 16) | (buf[o + 3] << 8) | buf[o + 4]) >>> 0;
    o += 5;
  } else return -1;
  if (buf[o] !== 0xc4 || buf[o + 1] !== 16 || o + 18 !== len - MAC_LEN) return -1;
  lastReqId = reqId;
  return o + 2;
}

/** The request ID parsed by the last successful parseLookup() (kept out of the return value so that
 *  neither needs an object per lookup). */
export function parsedReqId(): number {
  return lastReqId;
}
let lastReqId = 0;

/** Writes a msgpack unsigned integer the way msgpackr does (smallest form); returns the new offset. */
function writeUint(out: Uint8Array, o: number, v: number): number {
  if (v < 0x80) {
    out[o] = v;
    return o + 1;
  }
  if (v < 0x100) {
    out[o] = 0xcc;
    out[o + 1] = v;
    return o + 2;
  }
  if (v < 0x10000) {
    out[o] = 0xcd;
    out[o + 1] = v >>> 8;
    out[o + 2] = v & 0xff;
    return o + 3;
  }
  out[o] = 0xce;
  out[o + 1] = v >>> 24;
  out[o + 2] = (v >>> 16) & 0xff;
  out[o + 3] = (v >>> 8) & 0xff;
  out[o + 4] = v & 0xff;
  return o + 5;
}

/** msgpack bin 8/16 header and bytes (a binding is at most MAX_BINDING_LEN < 65536 bytes). */
function writeBin(out: Uint8Array, o: number, b: Uint8Array): number {
  if (b.length < 0x100) {
    out[o] = 0xc4;
    out[o + 1] = b.length;
    o += 2;
  } else {
    out[o] = 0xc5;
    out[o + 1] = b.length >>> 8;
    out[o + 2] = b.length & 0xff;
    o += 3;
  }
  out.set(b, o);
  return o + b.length;
}

/** prefs as the codec packs them: [[index, priority, weight, up 0/1]…] (at most MAX_LOCATORS < 16). */
function writePrefs(out: Uint8Array, o: number, prefs: readonly LocatorPref[]): number {
  out[o++] = 0x90 | prefs.length;
  for (let i = 0; i < prefs.length; i++) {
    const p = prefs[i];
    out[o++] = 0x94;
    o = writeUint(out, o, p.index);
    o = writeUint(out, o, p.priority);
    o = writeUint(out, o, p.weight);
    out[o++] = p.up ? 1 : 0;
  }
  return o;
}

/** msgpack nil, or bin 8 of a certificate (CERT_LEN < 256). */
function writeCert(out: Uint8Array, o: number, cert: Uint8Array | null): number {
  if (cert === null) {
    out[o] = 0xc0;
    return o + 1;
  }
  out[o] = 0xc4;
  out[o + 1] = cert.length;
  out.set(cert, o + 2);
  return o + 2 + cert.length;
}

/** Room the variable fields take at most, so that a bug can never write past out. */
function fits(out: Uint8Array, o: number, binding: Uint8Array | null, prefs: readonly LocatorPref[], cert: Uint8Array | null): boolean {
  const need = o + 5 + 3 + (binding?.length ?? 1) + 1 + prefs.length * 9 + 2 + (cert?.length ?? 0) + MAC_LEN;
  if (cert !== null && cert.length > 255) return false;
  return need <= MAX_DATAGRAM && need <= out.length && prefs.length < 16;
}

/**
 * LOOKUP-REPLY into out[0, returned length): the ID is copied from id[idOff, idOff+16) (the request's
 * own bytes); binding null is the negative answer. Returns 0 if it might not fit a control datagram
 * (cannot happen for a valid binding).
 */
export function writeLookupReply(
  out: Buffer,
  sid: number,
  seq: number,
  key: MacKey,
  reqId: number,
  id: Uint8Array,
  idOff: number,
  ttl: number,
  binding: Uint8Array | null,
  prefs: readonly LocatorPref[],
  cert: Uint8Array | null,
): number {
  writeHeader(out, MsgType.lookupReply, sid, seq);
  let o = HEADER_LEN;
  out[o++] = 0x96;
  o = writeUint(out, o, reqId);
  out[o++] = 0xc4;
  out[o++] = 16;
  for (let i = 0; i < 16; i++) out[o + i] = id[idOff + i];
  o += 16;
  if (!fits(out, o, binding, prefs, cert)) return 0;
  o = writeUint(out, o, ttl);
  if (binding === null) out[o++] = 0xc0;
  else o = writeBin(out, o, binding);
  o = writePrefs(out, o, prefs);
  o = writeCert(out, o, cert);
  mac(key, out, 0, o, out, o);
  return o + MAC_LEN;
}

/** PUSH into out[0, returned length); 0 if it might not fit (see writeLookupReply). */
export function writePush(
  out: Buffer,
  sid: number,
  seq: number,
  key: MacKey,
  pushId: number,
  binding: Uint8Array,
  ttl: number,
  prefs: readonly LocatorPref[],
  cert: Uint8Array,
): number {
  writeHeader(out, MsgType.push, sid, seq);
  let o = HEADER_LEN;
  out[o++] = 0x95;
  o = writeUint(out, o, pushId);
  if (!fits(out, o, binding, prefs, cert)) return 0;
  o = writeBin(out, o, binding);
  o = writeUint(out, o, ttl);
  o = writePrefs(out, o, prefs);
  o = writeCert(out, o, cert);
  mac(key, out, 0, o, out, o);
  return o + MAC_LEN;
}
