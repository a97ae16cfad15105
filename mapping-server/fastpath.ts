import { Packr } from 'msgpackr';
import { MAC_LEN, mac, type MacKey } from '../shared/wire/auth.ts';
import { writeHeader } from '../shared/wire/codec.ts';
import { HEADER_LEN, MAX_DATAGRAM, MsgType, type LocatorPref } from '../shared/wire/messages.ts';

/**
 * The RM's hot path, written by hand: LOOKUP in, LOOKUP-REPLY and PUSH out.
 *
 * Profiling the RM handler (node --cpu-prof, in process, no sockets) put 9–12 µs on each positive
 * lookup, a third of it in msgpackr (unpack the request, pack the answer), Buffer allocation and GC.
 * The answer's bulky part (ttl, binding bytes, prefs) depends only on the stored record, so it is
 * packed once per record (AnswerTails) and each answer is: header | array marker | request ID | the
 * 16-byte ID | the record's tail | MAC, written into a caller-owned buffer.
 *
 * The bytes are exactly what shared/wire/codec.ts encode() writes for the same message (msgpack
 * concatenates: an array marker followed by its packed elements); test/unit/rm-fastpath.test.ts checks
 * byte equality against encode() and decode(). Anything that is not the canonical form of a LOOKUP
 * body (another integer width for the request ID, extra fields) goes to the general decoder instead,
 * so the fast path never accepts what the codec would refuse.
 */

const packr = new Packr({ useRecords: false, int64AsType: 'number', bundleStrings: false });

/** The packed fields of a record's answers, shared by every asker and subscriber. Immutable. */
export interface AnswerTails {
  /** ttl | binding | prefs — LOOKUP-REPLY fields 3..5. */
  readonly lookup: Buffer;
  /** binding | ttl | prefs — PUSH fields 2..4. */
  readonly push: Buffer;
}

export function answerTails(binding: Uint8Array | null, ttl: number, prefs: readonly LocatorPref[]): AnswerTails {
  const b = packr.pack(binding);
  const t = packr.pack(ttl);
  const p = packr.pack(prefs.map((x) => [x.index, x.priority, x.weight, x.up ? 1 : 0]));
  return Object.freeze({ lookup: Buffer.concat([t, b, p]), push: Buffer.concat([b, t, p]) });
}

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

/**
 * LOOKUP-REPLY into out[0, returned length): the ID is copied from id[idOff, idOff+16) (the request's
 * own bytes), the rest from the tail. Returns 0 if it would not fit a control datagram (cannot happen
 * for a valid binding; checked so that a bug can never write past out).
 */
export function writeLookupReply(out: Buffer, sid: number, seq: number, key: MacKey, reqId: number, id: Uint8Array, idOff: number, tail: Buffer): number {
  writeHeader(out, MsgType.lookupReply, sid, seq);
  let o = HEADER_LEN;
  out[o++] = 0x95;
  o = writeUint(out, o, reqId);
  out[o++] = 0xc4;
  out[o++] = 16;
  for (let i = 0; i < 16; i++) out[o + i] = id[idOff + i];
  o += 16;
  if (o + tail.length + MAC_LEN > MAX_DATAGRAM || o + tail.length + MAC_LEN > out.length) return 0;
  tail.copy(out, o);
  o += tail.length;
  mac(key, out, 0, o, out, o);
  return o + MAC_LEN;
}

/** PUSH into out[0, returned length); 0 if it would not fit (see writeLookupReply). */
export function writePush(out: Buffer, sid: number, seq: number, key: MacKey, pushId: number, tail: Buffer): number {
  writeHeader(out, MsgType.push, sid, seq);
  let o = HEADER_LEN;
  out[o++] = 0x94;
  o = writeUint(out, o, pushId);
  if (o + tail.length + MAC_LEN > MAX_DATAGRAM || o + tail.length + MAC_LEN > out.length) return 0;
  tail.copy(out, o);
  o += tail.length;
  mac(key, out, 0, o, out, o);
  return o + MAC_LEN;
}
