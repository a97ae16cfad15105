import { addressFamily, addressToBytes, bytesToAddress } from './address.ts';
import { RealmnetError } from './errors.ts';
import { HostId, MAX_ID_PREFIX_LEN, Prefix, deriveHostId, verifyHostId } from './ids.ts';
import { signBytes, publicKeyObject, type KeyPair } from './crypto/ed25519.ts';
import { verify as cryptoVerify } from 'node:crypto';

/**
 * Bindings: host ID → locators, signed by the host's own key and sequenced.
 *
 * Wire form (big-endian), which is also exactly what the signature covers, followed by the signature:
 *
 *   0   "RNB1"            magic: format version and signature domain separation
 *   4   host ID           16
 *   20  prefix length     1   the ID's hash part starts here (shared/ids.ts)
 *   21  public key        32  Ed25519
 *   53  seq               8   u64, at most 2^53 - 1, only ever grows
 *   61  ttl               4   u32 seconds a holder may cache the binding
 *   65  locator count     1   0..MAX_LOCATORS
 *   66  locators          family (4|6), address (4|16), port (2), priority (1), weight (1),
 *                          state (0 down, 1 up), uplink name length (1), uplink name (ASCII)
 *   ..  signature         64  Ed25519 over every byte before it
 *
 * One canonical byte form means a binding verifies the same everywhere and can be stored and served
 * as the bytes the host signed (the RM keeps exactly these bytes in memory and in its journal).
 */
export type LocatorState = 'up' | 'down';

export interface Locator {
  /** Underlay IPv4 or IPv6 address, canonical text form. */
  readonly address: string;
  readonly port: number;
  /** The host's name for the uplink this locator is on, e.g. "ispa". */
  readonly uplink: string;
  /** Lower is preferred (as in LISP); 255 means "do not use". */
  readonly priority: number;
  /** Share of traffic among locators of equal priority. */
  readonly weight: number;
  readonly state: LocatorState;
}

export interface Binding {
  readonly hostId: HostId;
  readonly prefixLen: number;
  /** Ed25519, 32 bytes. */
  readonly publicKey: Uint8Array;
  readonly locators: readonly Locator[];
  readonly seq: number;
  /** Seconds. */
  readonly ttl: number;
  readonly signature: Uint8Array;
  /** The complete signed wire form (what register sends and the RM stores and serves). */
  readonly bytes: Uint8Array;
}

export const BINDING_MAGIC = Buffer.from('RNB1', 'latin1');
export const MAX_LOCATORS = 8;
export const MAX_UPLINK_NAME = 32;
export const MAX_BINDING_TTL = 86_400;
const FIXED_LEN = 66;
const SIG_LEN = 64;
export const MAX_BINDING_LEN = FIXED_LEN + MAX_LOCATORS * (1 + 16 + 2 + 3 + 1 + MAX_UPLINK_NAME) + SIG_LEN;
const UPLINK_RE = /^[A-Za-z0-9._-]{1,32}$/;

export interface BindingInput {
  /** The realm (or sub-realm) prefix the host ID lies in. */
  readonly prefix: Prefix;
  readonly locators: readonly Locator[];
  readonly seq: number;
  readonly ttl: number;
}

/**
 * A sequence number that grows across restarts: the wall-clock milliseconds (the agent also keeps the
 * last one it used, agent/hoststate.ts, and starts above it),
 * or previous + 1 if that is not larger (several updates in one millisecond, or a clock step back).
 */
export function nextSeq(previous: number, wallClockMs: number = Date.now()): number {
  return Math.max(previous + 1, Math.floor(wallClockMs));
}

/** Builds and signs a binding. Throws BINDING_INVALID for bad input. */
export function signBinding(key: KeyPair, input: BindingInput): Binding {
  const hostId = deriveHostId(input.prefix, key.publicKey);
  const body = encodeBody(hostId, input.prefix.length, key.publicKey, input.locators, input.seq, input.ttl);
  const signature = signBytes(key, body);
  const bytes = new Uint8Array(body.length + SIG_LEN);
  bytes.set(body);
  bytes.set(signature, body.length);
  const d = decodeBinding(bytes);
  if (!d.ok) throw new RealmnetError('BINDING_INVALID', `binding does not decode: ${d.reason}`);
  return d.binding;
}

export type BindingDecodeReason = 'tooShort' | 'tooLong' | 'badMagic' | 'badField' | 'trailingBytes';
export type BindingDecoded = { ok: true; binding: Binding } | { ok: false; reason: BindingDecodeReason };

/** Parses the wire form. Structure only: call verifyBinding before using it. Never throws. */
export function decodeBinding(bytes: Uint8Array): BindingDecoded {
  if (bytes.length < FIXED_LEN + SIG_LEN) return { ok: false, reason: 'tooShort' };
  if (bytes.length > MAX_BINDING_LEN) return { ok: false, reason: 'tooLong' };
  const b = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length);
  if (b[0] !== 0x52 || b[1] !== 0x4e || b[2] !== 0x42 || b[3] !== 0x31) return { ok: false, reason: 'badMagic' };
  const prefixLen = b[20];
  const seqHi = b.readUInt32BE(53);
  const seqLo = b.readUInt32BE(57);
  if (seqHi > 0x1fffff) return { ok: false, reason: 'badField' };
  const seq = seqHi * 0x1_0000_0000 + seqLo;
  const ttl = b.readUInt32BE(61);
  const count = b[65];
  if (prefixLen > 128 || ttl > MAX_BINDING_TTL || count > MAX_LOCATORS) return { ok: false, reason: 'badField' };
  const end = b.length - SIG_LEN;
  let off = FIXED_LEN;
  const locators: Locator[] = [];
  for (let i = 0; i < count; i++) {
    if (off + 1 > end) return { ok: false, reason: 'tooShort' };
    const family = b[off++];
    let address: string;
    if (family === 4) {
      if (off + 4 > end) return { ok: false, reason: 'tooShort' };
      address = bytesToAddress(4, b, off);
      off += 4;
    } else if (family === 6) {
      if (off + 16 > end) return { ok: false, reason: 'tooShort' };
      address = bytesToAddress(6, b, off);
      off += 16;
    } else return { ok: false, reason: 'badField' };
    if (off + 6 > end) return { ok: false, reason: 'tooShort' };
    const port = b.readUInt16BE(off);
    const priority = b[off + 2];
    const weight = b[off + 3];
    const st = b[off + 4];
    const nameLen = b[off + 5];
    off += 6;
    if (port === 0 || st > 1 || nameLen < 1 || nameLen > MAX_UPLINK_NAME || off + nameLen > end) {
      return { ok: false, reason: off + nameLen > end ? 'tooShort' : 'badField' };
    }
    const uplink = b.toString('latin1', off, off + nameLen);
    if (!UPLINK_RE.test(uplink)) return { ok: false, reason: 'badField' };
    off += nameLen;
    locators.push(Object.freeze({ address, port, uplink, priority, weight, state: st === 1 ? 'up' : 'down' }));
  }
  if (off !== end) return { ok: false, reason: 'trailingBytes' };
  const own = Uint8Array.from(bytes);
  const binding: Binding = Object.freeze({
    hostId: HostId.fromBytes(own, 4),
    prefixLen,
    publicKey: own.subarray(21, 53),
    locators: Object.freeze(locators),
    seq,
    ttl,
    signature: own.subarray(end),
    bytes: own,
  });
  return { ok: true, binding };
}

export type BindingCheck = { ok: true } | { ok: false; reason: 'prefixTooLong' | 'idMismatch' | 'badSignature' };

/**
 * Checks that the ID is the hash of the key (self-certification) and that the key signed the
 * binding. The caller still checks the sequence number (compareSeq) and, at an RM, the realm.
 * Costs one Ed25519 verify (~0.2 ms on the project's 2-vCPU machines): check cheap things first.
 */
export function verifyBinding(b: Binding): BindingCheck {
  if (b.prefixLen > MAX_ID_PREFIX_LEN) return { ok: false, reason: 'prefixTooLong' };
  if (!verifyHostId(b.hostId, b.prefixLen, b.publicKey)) return { ok: false, reason: 'idMismatch' };
  let good = false;
  try {
    good = cryptoVerify(null, b.bytes.subarray(0, b.bytes.length - SIG_LEN), publicKeyObject(b.publicKey), b.signature);
  } catch {
    good = false;
  }
  return good ? { ok: true } : { ok: false, reason: 'badSignature' };
}

export type SeqOrder = 'newer' | 'same' | 'conflict' | 'stale';

/**
 * The sequence rule, for an incoming binding against the one held for the same ID:
 * newer (higher seq) replaces; the same bytes again is a refresh (idempotent); the same seq with
 * other content is a conflict (rejected: a host never signs two bindings with one seq, so one is
 * forged or replayed from another life); a lower seq is stale (rejected: a replay).
 */
export function compareSeq(held: { seq: number; bytes: Uint8Array } | undefined, incoming: { seq: number; bytes: Uint8Array }): SeqOrder {
  if (held === undefined || incoming.seq > held.seq) return 'newer';
  if (incoming.seq < held.seq) return 'stale';
  return Buffer.compare(Buffer.from(held.bytes.buffer, held.bytes.byteOffset, held.bytes.length), Buffer.from(incoming.bytes.buffer, incoming.bytes.byteOffset, incoming.bytes.length)) === 0
    ? 'same'
    : 'conflict';
}

/** The locators with realm policy applied (see mapping-server/policy.ts), as a new frozen array. */
export function applyPrefs(
  locators: readonly Locator[],
  prefs: readonly { index: number; priority: number; weight: number; up: boolean }[],
): readonly Locator[] {
  if (prefs.length === 0) return locators;
  const out = locators.slice();
  for (const p of prefs) {
    const l = out[p.index];
    if (l === undefined) continue;
    out[p.index] = Object.freeze({ ...l, priority: p.priority, weight: p.weight, state: p.up && l.state === 'up' ? 'up' : 'down' });
  }
  return Object.freeze(out);
}

function encodeBody(hostId: HostId, prefixLen: number, publicKey: Uint8Array, locators: readonly Locator[], seq: number, ttl: number): Uint8Array {
  if (!Number.isSafeInteger(seq) || seq < 0) throw invalid(`seq ${seq} is not an integer in 0..2^53-1`);
  if (!Number.isInteger(ttl) || ttl < 0 || ttl > MAX_BINDING_TTL) throw invalid(`ttl ${ttl} is not in 0..${MAX_BINDING_TTL} seconds`);
  if (locators.length > MAX_LOCATORS) throw invalid(`${locators.length} locators; at most ${MAX_LOCATORS}`);
  const parts: Buffer[] = [];
  const fixed = Buffer.alloc(FIXED_LEN);
  BINDING_MAGIC.copy(fixed, 0);
  hostId.copyTo(fixed, 4);
  fixed[20] = prefixLen;
  fixed.set(publicKey, 21);
  fixed.writeUInt32BE(Math.floor(seq / 0x1_0000_0000), 53);
  fixed.writeUInt32BE(seq >>> 0, 57);
  fixed.writeUInt32BE(ttl, 61);
  fixed[65] = locators.length;
  parts.push(fixed);
  locators.forEach((l, i) => {
    const where = `locators[${i}]`;
    // A zone names an interface of the signer's machine: meaningless to whoever reads the binding.
    const family = l.address.includes('%') ? 0 : addressFamily(l.address);
    if (family === 0) throw invalid(`${where}.address: "${l.address}" is not an IPv4 or IPv6 address`);
    const addr = Buffer.alloc(16);
    addressToBytes(l.address, addr, 0);
    if (!Number.isInteger(l.port) || l.port < 1 || l.port > 65535) throw invalid(`${where}.port: ${l.port} is not 1..65535`);
    for (const [k, v] of [['priority', l.priority], ['weight', l.weight]] as const) {
      if (!Number.isInteger(v) || v < 0 || v > 255) throw invalid(`${where}.${k}: ${v} is not 0..255`);
    }
    if (!UPLINK_RE.test(l.uplink)) throw invalid(`${where}.uplink: "${l.uplink}" must be 1-32 of A-Z a-z 0-9 . _ -`);
    if (l.state !== 'up' && l.state !== 'down') throw invalid(`${where}.state: must be "up" or "down"`);
    const tail = Buffer.alloc(6);
    tail.writeUInt16BE(l.port, 0);
    tail[2] = l.priority;
    tail[3] = l.weight;
    tail[4] = l.state === 'up' ? 1 : 0;
    tail[5] = l.uplink.length;
    parts.push(Buffer.of(family), family === 4 ? addr.subarray(0, 4) : addr, tail, Buffer.from(l.uplink, 'latin1'));
  });
  return Buffer.concat(parts);
}

function invalid(message: string): RealmnetError {
  return new RealmnetError('BINDING_INVALID', `binding: ${message}`, 'fix the locator list the binding is built from');
}
