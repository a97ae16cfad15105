import { Packr, Unpackr } from 'msgpackr';
import { MAC_LEN, mac, macVerify, type MacKey } from '../crypto/blake2s.ts';
import {
  HEADER_LEN,
  MAX_DATAGRAM,
  MAX_IDS_PER_MESSAGE,
  MsgType,
  PROTOCOL_VERSION,
  UNAUTHENTICATED_TYPES,
  type ControlMessage,
  type Decoded,
  type Header,
  type JoinProof,
  type HostAnswer,
  type LocatorPref,
  type MsgTypeName,
  type RmAnswer,
  type RmPush,
  type RmQuery,
} from './messages.ts';
import { DELEGATION_LEN, MAX_CHAIN } from '../delegation.ts';
import { MAX_GROUP_HOSTS, MAX_GROUP_LEN } from '../group.ts';
import { MAX_BINDING_LEN, MAX_LOCATORS } from '../binding.ts';
import { CERT_LEN } from '../membership.ts';

/** Every RM-QUERY datagram is at least this long (padded): answers are never larger (docs/hierarchy.md). */
export const RM_QUERY_MIN = 1200;

/** The signed part of an RM-QUERY (what signature covers), as the asking RM builds it. */
export function rmQuerySigned(f: Pick<RmQuery, 'reqId' | 'id' | 'time' | 'follow' | 'chain'>): Uint8Array {
  return packr.pack([f.reqId, f.id, f.time, f.follow ? 1 : 0, f.chain]);
}

export function rmAnswerSigned(f: Omit<RmAnswer, 'type' | 'signed' | 'signature'>): Uint8Array {
  return packr.pack([f.reqId, f.id, f.kind, f.ttl, f.cls, f.followed ? 1 : 0, f.referral, f.binding, f.cert, prefsOut(f.prefs)]);
}

export function rmPushSigned(f: Omit<RmPush, 'type' | 'signed' | 'signature'>): Uint8Array {
  return packr.pack([f.pushId, f.time, f.binding, f.cert, prefsOut(f.prefs), f.ttl, f.cls]);
}

/** Bytes in a CHALLENGE token. */
export const CHALLENGE_LEN = 16;

/**
 * The one edge where control datagrams become typed messages, in both directions.
 *
 *   header (12 bytes, fixed)  version u8 | type u8 | session ID u32 | sequence number u48
 *   body                      one msgpack array (fields in the order of docs/control-protocol.md)
 *   MAC (16 bytes)            keyed BLAKE2s-128 over header and body; only when session ID ≠ 0
 *
 * The header is fixed binary so that a receiver checks size, version, type, session and MAC before
 * msgpack ever sees a byte from an unauthenticated sender (only HELLO bodies are unpacked
 * unauthenticated, and they are small and rate-limited). Decoders never throw: they return a
 * DropReason, which the caller counts.
 */

// useRecords: false — msgpackr's record extension would let a sender define structures in our
// decoder; plain arrays and maps only. int64AsType 'number': sequence numbers stay below 2^53.
const packr = new Packr({ useRecords: false, int64AsType: 'number', bundleStrings: false });
const unpackr = new Unpackr({ useRecords: false, int64AsType: 'number', mapsAsObjects: false });

const TYPE_BY_NUMBER: ReadonlyMap<number, MsgTypeName> = new Map(
  (Object.entries(MsgType) as [MsgTypeName, number][]).map(([k, v]) => [v, k]),
);

export interface SendAuth {
  readonly sid: number;
  readonly seq: number;
  readonly key: MacKey;
}

/** Encodes a message into a fresh Buffer. auth is required for every type but hello/welcome/reject. */
export function encode(msg: ControlMessage, auth: SendAuth | null): Buffer {
  const typeNo = MsgType[msg.type];
  const authenticated = !UNAUTHENTICATED_TYPES.has(typeNo);
  if (authenticated && auth === null) throw new Error(`${msg.type} needs a session`);
  let body = packr.pack(bodyOf(msg));
  if (msg.type === 'rmQuery') {
    // Padded so that no answer is larger than the query: the empty pad (2 bytes) grows to fill.
    const short = RM_QUERY_MIN - HEADER_LEN - body.length;
    if (short > 0) body = packr.pack([msg.signed, msg.signature, new Uint8Array(short < 254 ? short : short - 1)]);
  }
  const len = HEADER_LEN + body.length + (authenticated ? MAC_LEN : 0);
  if (len > MAX_DATAGRAM) throw new RangeError(`${msg.type} is ${len} bytes, more than ${MAX_DATAGRAM}`);
  const out = Buffer.allocUnsafe(len);
  writeHeader(out, typeNo, authenticated && auth ? auth.sid : 0, authenticated && auth ? auth.seq : 0);
  body.copy(out, HEADER_LEN);
  if (authenticated && auth) mac(auth.key, out, 0, len - MAC_LEN, out, len - MAC_LEN);
  return out;
}

export function writeHeader(out: Buffer, typeNo: number, sid: number, seq: number): void {
  out[0] = PROTOCOL_VERSION;
  out[1] = typeNo;
  out.writeUInt32BE(sid >>> 0, 2);
  out.writeUIntBE(seq, 6, 6);
}

/** Step 1: size, version, type, and whether a session is required. */
export function decodeHeader(buf: Uint8Array): Decoded<Header> {
  if (buf.length < HEADER_LEN + 1) return { ok: false, reason: 'tooShort' };
  if (buf.length > MAX_DATAGRAM) return { ok: false, reason: 'tooLong' };
  if (buf[0] !== PROTOCOL_VERSION) return { ok: false, reason: 'badVersion' };
  const type = buf[1];
  if (!TYPE_BY_NUMBER.has(type)) return { ok: false, reason: 'badType' };
  const sid = ((buf[2] << 24) | (buf[3] << 16) | (buf[4] << 8) | buf[5]) >>> 0;
  const seq = (buf[6] * 0x10000 + ((buf[7] << 8) | buf[8])) * 0x1000000 + ((buf[9] << 16) | (buf[10] << 8) | buf[11]);
  const unauth = UNAUTHENTICATED_TYPES.has(type);
  if (unauth !== (sid === 0)) return { ok: false, reason: 'badSession' };
  if (!unauth && buf.length < HEADER_LEN + 1 + MAC_LEN) return { ok: false, reason: 'tooShort' };
  return { ok: true, msg: { version: buf[0], type, sid, seq } };
}

/** Step 2 (sessions only): the MAC over everything before the last 16 bytes. */
export function checkMac(buf: Uint8Array, key: MacKey): boolean {
  const end = buf.length - MAC_LEN;
  return macVerify(key, buf, 0, end, end);
}

/** Step 3: the msgpack body, validated field by field. */
export function decodeBody(h: Header, buf: Uint8Array): Decoded<ControlMessage> {
  const end = h.sid === 0 ? buf.length : buf.length - MAC_LEN;
  let raw: unknown;
  try {
    // msgpackr throws on truncated or invalid data; anything it throws is a malformed datagram.
    raw = unpackr.unpack(buf.subarray(HEADER_LEN, end));
  } catch {
    return MALFORMED;
  }
  if (!Array.isArray(raw)) return MALFORMED;
  const msg = validate(TYPE_BY_NUMBER.get(h.type) as MsgTypeName, raw);
  return msg === null ? MALFORMED : { ok: true, msg };
}

/** All three steps for callers that keep no replay state of their own (tests, tools). */
export function decode(buf: Uint8Array, keyFor: (sid: number) => MacKey | undefined): Decoded<{ header: Header; msg: ControlMessage }> {
  const h = decodeHeader(buf);
  if (!h.ok) return h;
  if (h.msg.sid !== 0) {
    const key = keyFor(h.msg.sid);
    if (key === undefined) return { ok: false, reason: 'badSession' };
    if (!checkMac(buf, key)) return { ok: false, reason: 'badMac' };
  }
  const b = decodeBody(h.msg, buf);
  if (!b.ok) return b;
  return { ok: true, msg: { header: h.msg, msg: b.msg } };
}

/** The request ID (or push ID) of a message, for matching answers. */
export function requestIdOf(m: ControlMessage): number {
  switch (m.type) {
    case 'push':
    case 'pushAck':
    case 'revoke':
    case 'groupPush':
    case 'rmPush':
    case 'rmPushAck':
      return m.pushId;
    case 'challenge':
    case 'challengeReply':
      return 0;
    default:
      return m.reqId;
  }
}

const MALFORMED = { ok: false, reason: 'malformed' } as const;

function bodyOf(m: ControlMessage): unknown[] {
  switch (m.type) {
    case 'hello':
      return [m.reqId, m.hostId, m.prefixLen, m.publicKey, m.ephemeral, m.nonce, m.signature, m.join === null ? null : [m.join.inviteId, m.join.expiresAt, m.join.proof], m.cookie];
    case 'welcome':
      return [m.reqId, m.sid, m.rmPublicKey, m.ephemeral, m.signature, m.cert];
    case 'cookie':
      return [m.reqId, m.cookie];
    case 'reject':
      return [m.reqId, m.code, m.sid];
    case 'lookup':
      return [m.reqId, m.hostId];
    case 'lookupReply':
      return m.endorsement ? [m.reqId, m.hostId, m.ttl, m.binding, prefsOut(m.prefs), m.cert, m.endorsement] : [m.reqId, m.hostId, m.ttl, m.binding, prefsOut(m.prefs), m.cert];
    case 'register':
      return [m.reqId, m.binding];
    case 'registerReply':
      return [m.reqId, m.hostId, m.seq, m.status, m.expiresIn, m.refresh];
    case 'subscribe':
    case 'unsubscribe':
      return [m.reqId, m.hostIds];
    case 'subscribeReply':
      return [m.reqId, m.accepted];
    case 'unsubscribeReply':
      return [m.reqId];
    case 'push':
      return m.endorsement ? [m.pushId, m.binding, m.ttl, prefsOut(m.prefs), m.cert, m.endorsement] : [m.pushId, m.binding, m.ttl, prefsOut(m.prefs), m.cert];
    case 'pushAck':
      return [m.pushId];
    case 'revoke':
      return [m.pushId, m.hostId];
    case 'renew':
      return [m.reqId];
    case 'renewReply':
      return [m.reqId, m.cert];
    case 'challenge':
    case 'challengeReply':
      return [m.token];
    case 'publish':
      return [m.reqId, m.binding];
    case 'publishReply':
      return [m.reqId, m.id, m.status, m.seq];
    case 'serve':
      return [m.reqId, m.id, m.binding];
    case 'serveReply':
      return [m.reqId, m.id, m.status, m.expiresIn];
    case 'groupReply':
      return [m.reqId, m.id, m.ttl, m.binding, m.present, m.hosts.map((h) => [h.binding, prefsOut(h.prefs), h.cert, h.ttl])];
    case 'groupPush':
      return [m.pushId, m.binding, m.present, m.ttl];
    case 'rmQuery':
      return [m.signed, m.signature, new Uint8Array(0)];
    case 'rmAnswer':
    case 'rmPush':
      return [m.signed, m.signature];
    case 'rmPushAck':
      return [m.pushId];
  }
}

/** The nested msgpack of an RM message's signed part; null when it is not an array. */
function unpackSigned(x: unknown, max: number): unknown[] | null {
  if (!(x instanceof Uint8Array) || x.length === 0 || x.length > max) return null;
  try {
    const a: unknown = unpackr.unpack(x);
    return Array.isArray(a) ? a : null;
  } catch {
    return null;
  }
}

function prefsOut(prefs: readonly LocatorPref[]): number[][] {
  return prefs.map((p) => [p.index, p.priority, p.weight, p.up ? 1 : 0]);
}

function validate(type: MsgTypeName, a: unknown[]): ControlMessage | null {
  switch (type) {
    case 'hello': {
      if (a.length !== 9 || !u32(a[0]) || !bin(a[1], 16) || !u8(a[2]) || !bin(a[3], 32) || !bin(a[4], 32) || !bin(a[5], 16) || !bin(a[6], 64)) return null;
      const cookie = a[8];
      if (!(cookie === null || bin(cookie, MAC_LEN))) return null;
      let join: JoinProof | null = null;
      if (a[7] !== null) {
        const j = a[7];
        if (!Array.isArray(j) || j.length !== 3 || !bin(j[0], 16) || !u32(j[1]) || !bin(j[2], MAC_LEN)) return null;
        join = { inviteId: j[0], expiresAt: j[1], proof: j[2] };
      }
      return { type, reqId: a[0], hostId: a[1], prefixLen: a[2], publicKey: a[3], ephemeral: a[4], nonce: a[5], signature: a[6], join, cookie };
    }
    case 'welcome':
      // Every session belongs to a member: WELCOME always carries its certificate.
      if (a.length !== 6 || !u32(a[0]) || !u32(a[1]) || a[1] === 0 || !bin(a[2], 32) || !bin(a[3], 32) || !bin(a[4], 64) || !bin(a[5], CERT_LEN)) return null;
      return { type, reqId: a[0], sid: a[1], rmPublicKey: a[2], ephemeral: a[3], signature: a[4], cert: a[5] };
    case 'cookie':
      if (a.length !== 2 || !u32(a[0]) || !bin(a[1], MAC_LEN)) return null;
      return { type, reqId: a[0], cookie: a[1] };
    case 'reject':
      if (a.length !== 3 || !u32(a[0]) || !u8(a[1]) || !u32(a[2])) return null;
      return { type, reqId: a[0], code: a[1], sid: a[2] };
    case 'lookup':
      if (a.length !== 2 || !u32(a[0]) || !bin(a[1], 16)) return null;
      return { type, reqId: a[0], hostId: a[1] };
    case 'lookupReply': {
      if (a.length === 7 && !bin(a[6], DELEGATION_LEN)) return null;
      if ((a.length !== 6 && a.length !== 7) || !u32(a[0]) || !bin(a[1], 16) || !u32(a[2]) || !(a[3] === null || binMax(a[3], MAX_BINDING_LEN))) return null;
      // A binding comes with its host's certificate; a negative answer carries none.
      if (!optBin(a[5], CERT_LEN) || (a[3] === null) !== (a[5] === null)) return null;
      const prefs = prefsIn(a[4]);
      if (prefs === null) return null;
      if (a.length === 7 && a[3] === null) return null;
      return { type, reqId: a[0], hostId: a[1], ttl: a[2], binding: a[3], prefs, cert: a[5], ...(a.length === 7 ? { endorsement: a[6] as Uint8Array } : {}) };
    }
    case 'register':
      if (a.length !== 2 || !u32(a[0]) || !binMax(a[1], MAX_BINDING_LEN)) return null;
      return { type, reqId: a[0], binding: a[1] };
    case 'registerReply':
      if (a.length !== 6 || !u32(a[0]) || !bin(a[1], 16) || !safeUint(a[2]) || !u8(a[3]) || !u32(a[4]) || !u32(a[5])) return null;
      return { type, reqId: a[0], hostId: a[1], seq: a[2], status: a[3], expiresIn: a[4], refresh: a[5] };
    case 'subscribe':
    case 'unsubscribe': {
      if (a.length !== 2 || !u32(a[0]) || !Array.isArray(a[1])) return null;
      const ids: unknown[] = a[1];
      if (ids.length < 1 || ids.length > MAX_IDS_PER_MESSAGE || !ids.every((x) => bin(x, 16))) return null;
      return { type, reqId: a[0], hostIds: ids as Uint8Array[] };
    }
    case 'subscribeReply':
      if (a.length !== 2 || !u32(a[0]) || !u32(a[1])) return null;
      return { type, reqId: a[0], accepted: a[1] };
    case 'unsubscribeReply':
      if (a.length !== 1 || !u32(a[0])) return null;
      return { type, reqId: a[0] };
    case 'push': {
      if ((a.length !== 5 && a.length !== 6) || !u32(a[0]) || !binMax(a[1], MAX_BINDING_LEN) || !u32(a[2]) || !bin(a[4], CERT_LEN)) return null;
      if (a.length === 6 && !bin(a[5], DELEGATION_LEN)) return null;
      const prefs = prefsIn(a[3]);
      if (prefs === null) return null;
      return { type, pushId: a[0], binding: a[1], ttl: a[2], prefs, cert: a[4], ...(a.length === 6 ? { endorsement: a[5] as Uint8Array } : {}) };
    }
    case 'pushAck':
      if (a.length !== 1 || !u32(a[0])) return null;
      return { type, pushId: a[0] };
    case 'revoke':
      if (a.length !== 2 || !u32(a[0]) || !bin(a[1], 16)) return null;
      return { type, pushId: a[0], hostId: a[1] };
    case 'renew':
      if (a.length !== 1 || !u32(a[0])) return null;
      return { type, reqId: a[0] };
    case 'renewReply':
      if (a.length !== 2 || !u32(a[0]) || !(a[1] === null || bin(a[1], CERT_LEN))) return null;
      return { type, reqId: a[0], cert: a[1] };
    case 'challenge':
    case 'challengeReply':
      if (a.length !== 1 || !bin(a[0], CHALLENGE_LEN)) return null;
      return { type, token: a[0] };
    case 'publish':
      if (a.length !== 2 || !u32(a[0]) || !binMax(a[1], MAX_GROUP_LEN)) return null;
      return { type, reqId: a[0], binding: a[1] };
    case 'publishReply':
      if (a.length !== 4 || !u32(a[0]) || !bin(a[1], 16) || !u8(a[2]) || !safeUint(a[3])) return null;
      return { type, reqId: a[0], id: a[1], status: a[2], seq: a[3] };
    case 'serve':
      if (a.length !== 3 || !u32(a[0]) || !bin(a[1], 16) || !(a[2] === null || binMax(a[2], MAX_GROUP_LEN))) return null;
      return { type, reqId: a[0], id: a[1], binding: a[2] };
    case 'serveReply':
      if (a.length !== 4 || !u32(a[0]) || !bin(a[1], 16) || !u8(a[2]) || !u32(a[3])) return null;
      return { type, reqId: a[0], id: a[1], status: a[2], expiresIn: a[3] };
    case 'groupReply': {
      if (a.length !== 6 || !u32(a[0]) || !bin(a[1], 16) || !u32(a[2]) || !(a[3] === null || binMax(a[3], MAX_GROUP_LEN)) || !flags(a[4])) return null;
      if (!Array.isArray(a[5]) || a[5].length > MAX_GROUP_HOSTS || (a[3] === null && (a[4].length > 0 || a[5].length > 0))) return null;
      const hosts: HostAnswer[] = [];
      for (const h of a[5] as unknown[]) {
        if (!Array.isArray(h) || h.length !== 4 || !binMax(h[0], MAX_BINDING_LEN) || !bin(h[2], CERT_LEN) || !u32(h[3])) return null;
        const prefs = prefsIn(h[1]);
        if (prefs === null) return null;
        hosts.push({ binding: h[0], prefs, cert: h[2], ttl: h[3] });
      }
      return { type, reqId: a[0], id: a[1], ttl: a[2], binding: a[3], present: a[4], hosts };
    }
    case 'groupPush':
      if (a.length !== 4 || !u32(a[0]) || !binMax(a[1], MAX_GROUP_LEN) || !flags(a[2]) || !u32(a[3])) return null;
      return { type, pushId: a[0], binding: a[1], present: a[2], ttl: a[3] };
    case 'rmQuery': {
      if (a.length !== 3 || !bin(a[1], 64) || !(a[2] instanceof Uint8Array)) return null;
      const f = unpackSigned(a[0], MAX_DATAGRAM);
      if (f === null || f.length !== 5 || !u32(f[0]) || !bin(f[1], 16) || !u32(f[2]) || (f[3] !== 0 && f[3] !== 1) || !Array.isArray(f[4])) return null;
      const chain: unknown[] = f[4];
      if (chain.length > MAX_CHAIN || !chain.every((x) => bin(x, DELEGATION_LEN))) return null;
      return { type, reqId: f[0], id: f[1], time: f[2], follow: f[3] === 1, chain: chain as Uint8Array[], signed: a[0] as Uint8Array, signature: a[1] };
    }
    case 'rmAnswer': {
      if (a.length !== 2 || !bin(a[1], 64)) return null;
      const f = unpackSigned(a[0], MAX_DATAGRAM);
      if (f === null || f.length !== 10 || !u32(f[0]) || !bin(f[1], 16) || !u8(f[2]) || f[2] > 2 || !u32(f[3]) || !u8(f[4]) || f[4] > 3 || (f[5] !== 0 && f[5] !== 1)) return null;
      if (!optBin(f[6], DELEGATION_LEN) || !(f[7] === null || binMax(f[7], MAX_BINDING_LEN)) || !optBin(f[8], CERT_LEN)) return null;
      // The fields present are exactly the kind's: a referral carries a delegation, a binding its certificate.
      if ((f[2] === 1) !== (f[6] !== null) || (f[2] === 2) !== (f[7] !== null) || (f[7] === null) !== (f[8] === null)) return null;
      const prefs = prefsIn(f[9]);
      if (prefs === null) return null;
      return { type, reqId: f[0], id: f[1], kind: f[2], ttl: f[3], cls: f[4], followed: f[5] === 1, referral: f[6], binding: f[7] as Uint8Array | null, cert: f[8], prefs, signed: a[0] as Uint8Array, signature: a[1] };
    }
    case 'rmPush': {
      if (a.length !== 2 || !bin(a[1], 64)) return null;
      const f = unpackSigned(a[0], MAX_DATAGRAM);
      if (f === null || f.length !== 7 || !u32(f[0]) || !u32(f[1]) || !binMax(f[2], MAX_BINDING_LEN) || !bin(f[3], CERT_LEN) || !u32(f[5]) || !u8(f[6]) || f[6] > 3) return null;
      const prefs = prefsIn(f[4]);
      if (prefs === null) return null;
      return { type, pushId: f[0], time: f[1], binding: f[2], cert: f[3], prefs, ttl: f[5], cls: f[6], signed: a[0] as Uint8Array, signature: a[1] };
    }
    case 'rmPushAck':
      if (a.length !== 1 || !u32(a[0])) return null;
      return { type, pushId: a[0] };
  }
}

/** One 0/1 byte per host of a group binding. */
function flags(x: unknown): x is Uint8Array {
  if (!(x instanceof Uint8Array) || x.length > MAX_GROUP_HOSTS) return false;
  for (const b of x) if (b > 1) return false;
  return true;
}

function prefsIn(x: unknown): LocatorPref[] | null {
  if (!Array.isArray(x) || x.length > MAX_LOCATORS) return null;
  const out: LocatorPref[] = [];
  for (const p of x as unknown[]) {
    if (!Array.isArray(p) || p.length !== 4) return null;
    const [index, priority, weight, up] = p as unknown[];
    if (!u8(index) || index >= MAX_LOCATORS || !u8(priority) || !u8(weight) || (up !== 0 && up !== 1)) return null;
    out.push({ index, priority, weight, up: up === 1 });
  }
  return out;
}

function u8(x: unknown): x is number {
  return typeof x === 'number' && Number.isInteger(x) && x >= 0 && x <= 0xff;
}
function u32(x: unknown): x is number {
  return typeof x === 'number' && Number.isInteger(x) && x >= 0 && x <= 0xffffffff;
}
function safeUint(x: unknown): x is number {
  return typeof x === 'number' && Number.isSafeInteger(x) && x >= 0;
}
function bin(x: unknown, len: number): x is Uint8Array {
  return x instanceof Uint8Array && x.length === len;
}
function optBin(x: unknown, len: number): x is Uint8Array | null {
  return x === null || bin(x, len);
}
function binMax(x: unknown, max: number): x is Uint8Array {
  return x instanceof Uint8Array && x.length > 0 && x.length <= max;
}
