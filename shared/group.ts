import { verify as cryptoVerify } from 'node:crypto';
import { RealmnetError } from './errors.ts';
import { HostId, MAX_ID_PREFIX_LEN, Prefix, deriveTaggedId } from './ids.ts';
import { publicKeyObject, signBytes, type KeyPair } from './crypto/ed25519.ts';

/**
 * Slice 2: user IDs and data IDs, and their bindings to hosts (docs/slice2.md).
 *
 * A user ID is derived like a host ID (shared/ids.ts) from the user's Ed25519 key under the realm's
 * user prefix; a data ID from the publisher's key and the data's name under the realm's data prefix.
 * Both are 128-bit IPv6-shaped IDs that applications address like host IDs, and both are
 * self-certifying: whoever holds the binding can check that the ID belongs to the key that signed it.
 *
 * A group binding (the user RHB's "user ID → host IDs", the data RHB's "data ID → replica hosts")
 * lists host IDs with priority and weight, signed by the owner's key and sequenced like host bindings.
 * Listing a host is the owner's delegation; the host's consent is its own SERVE registration at the
 * RM (docs/slice2.md): a host that did not register is never offered.
 *
 * Wire form (big-endian), which is also what the signature covers, then the signature:
 *
 *   0   "RNG1"            magic: format version and signature domain separation
 *   4   kind              1   1 user, 2 data
 *   5   ID                16
 *   21  prefix length     1
 *   22  public key        32  Ed25519 (the user's or the publisher's)
 *   54  name length       1   0 for users; 1..MAX_DATA_NAME for data (it is inside the data ID's hash)
 *   55  name              UTF-8
 *   ..  seq               8   u64 ≤ 2^53 - 1, only ever grows
 *   ..  ttl               4   u32 seconds a holder may cache it
 *   ..  host count        1   0..MAX_GROUP_HOSTS
 *   ..  hosts             host ID (16), priority (1, lower first), weight (1)
 *   ..  signature         64
 */
export type GroupKind = 'user' | 'data';

export interface GroupHost {
  readonly hostId: HostId;
  /** Lower is tried first (users: sequential forking order); 255 = never. */
  readonly priority: number;
  /** Share among hosts of equal priority (users) or the tie-break among equally fast replicas (data). */
  readonly weight: number;
}

export interface GroupBinding {
  readonly kind: GroupKind;
  readonly id: HostId;
  readonly prefixLen: number;
  readonly publicKey: Uint8Array;
  /** The data's name ('' for users). */
  readonly name: string;
  readonly seq: number;
  readonly ttl: number;
  readonly hosts: readonly GroupHost[];
  readonly signature: Uint8Array;
  readonly bytes: Uint8Array;
}

export const GROUP_MAGIC = Buffer.from('RNG1', 'latin1');
export const MAX_GROUP_HOSTS = 8;
export const MAX_DATA_NAME = 64;
export const MAX_GROUP_TTL = 86_400;
const SIG_LEN = 64;
const HEAD_LEN = 55;
const MIN_LEN = HEAD_LEN + 8 + 4 + 1 + SIG_LEN;
export const MAX_GROUP_LEN = MIN_LEN + MAX_DATA_NAME + MAX_GROUP_HOSTS * 18;
const KIND_NO: Record<GroupKind, number> = { user: 1, data: 2 };
const USER_TAG = Buffer.from('realmnet/user-id/v1', 'utf8');
const DATA_TAG = Buffer.from('realmnet/data-id/v1', 'utf8');
const NAME_RE = /^[A-Za-z0-9._/+-]{1,64}$/;

/** The user ID of the holder of publicKey under the realm's user prefix. */
export function deriveUserId(prefix: Prefix, publicKey: Uint8Array): HostId {
  return deriveTaggedId(USER_TAG, prefix, publicKey, new Uint8Array(0));
}

/** The data ID of `name` published by the holder of publicKey under the realm's data prefix. */
export function deriveDataId(prefix: Prefix, publicKey: Uint8Array, name: string): HostId {
  checkName(name);
  const n = Buffer.from(name, 'utf8');
  return deriveTaggedId(DATA_TAG, prefix, publicKey, Buffer.concat([Uint8Array.of(n.length), n]));
}

export interface GroupInput {
  readonly kind: GroupKind;
  readonly prefix: Prefix;
  /** Data only. */
  readonly name?: string;
  readonly hosts: readonly GroupHost[];
  readonly seq: number;
  readonly ttl: number;
}

/** Builds and signs a group binding. Throws BINDING_INVALID for bad input. */
export function signGroup(key: KeyPair, input: GroupInput): GroupBinding {
  const name = input.kind === 'data' ? (input.name ?? '') : '';
  if (input.kind === 'data') checkName(name);
  const id = input.kind === 'user' ? deriveUserId(input.prefix, key.publicKey) : deriveDataId(input.prefix, key.publicKey, name);
  if (!Number.isSafeInteger(input.seq) || input.seq < 0) throw invalid(`seq ${input.seq} is not an integer in 0..2^53-1`);
  if (!Number.isInteger(input.ttl) || input.ttl < 0 || input.ttl > MAX_GROUP_TTL) throw invalid(`ttl ${input.ttl} is not in 0..${MAX_GROUP_TTL}`);
  if (input.hosts.length > MAX_GROUP_HOSTS) throw invalid(`${input.hosts.length} hosts; at most ${MAX_GROUP_HOSTS}`);
  const seen = new Set<string>();
  for (const h of input.hosts) {
    // One entry per host: SIP's duplicate deliveries to one device come from listing it twice.
    if (seen.has(h.hostId.key)) throw invalid(`host ${h.hostId.toString()} is listed twice`);
    seen.add(h.hostId.key);
    for (const [k, v] of [['priority', h.priority], ['weight', h.weight]] as const) {
      if (!Number.isInteger(v) || v < 0 || v > 255) throw invalid(`host ${h.hostId.toString()}: ${k} ${v} is not 0..255`);
    }
  }
  const nameBytes = Buffer.from(name, 'utf8');
  const body = Buffer.alloc(HEAD_LEN + nameBytes.length + 13 + input.hosts.length * 18);
  GROUP_MAGIC.copy(body, 0);
  body[4] = KIND_NO[input.kind];
  id.copyTo(body, 5);
  body[21] = input.prefix.length;
  body.set(key.publicKey, 22);
  body[54] = nameBytes.length;
  nameBytes.copy(body, 55);
  let off = 55 + nameBytes.length;
  body.writeUInt32BE(Math.floor(input.seq / 0x1_0000_0000), off);
  body.writeUInt32BE(input.seq >>> 0, off + 4);
  body.writeUInt32BE(input.ttl, off + 8);
  body[off + 12] = input.hosts.length;
  off += 13;
  for (const h of input.hosts) {
    h.hostId.copyTo(body, off);
    body[off + 16] = h.priority;
    body[off + 17] = h.weight;
    off += 18;
  }
  const bytes = Buffer.concat([body, signBytes(key, body)]);
  const d = decodeGroup(bytes);
  if (!d.ok) throw invalid(`does not decode: ${d.reason}`);
  return d.group;
}

export type GroupDecoded = { ok: true; group: GroupBinding } | { ok: false; reason: 'tooShort' | 'tooLong' | 'badMagic' | 'badField' | 'trailingBytes' };

/** Parses the wire form. Structure only: call verifyGroup before using it. Never throws. */
export function decodeGroup(bytes: Uint8Array): GroupDecoded {
  if (bytes.length < MIN_LEN) return { ok: false, reason: 'tooShort' };
  if (bytes.length > MAX_GROUP_LEN) return { ok: false, reason: 'tooLong' };
  const b = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length);
  if (!b.subarray(0, 4).equals(GROUP_MAGIC)) return { ok: false, reason: 'badMagic' };
  const kind: GroupKind | null = b[4] === 1 ? 'user' : b[4] === 2 ? 'data' : null;
  const prefixLen = b[21];
  const nameLen = b[54];
  if (kind === null || prefixLen > 128 || nameLen > MAX_DATA_NAME || (kind === 'user') !== (nameLen === 0)) return { ok: false, reason: 'badField' };
  let off = 55 + nameLen;
  if (off + 13 + SIG_LEN > b.length) return { ok: false, reason: 'tooShort' };
  const name = b.toString('utf8', 55, 55 + nameLen);
  if (kind === 'data' && !NAME_RE.test(name)) return { ok: false, reason: 'badField' };
  const seqHi = b.readUInt32BE(off);
  if (seqHi > 0x1fffff) return { ok: false, reason: 'badField' };
  const seq = seqHi * 0x1_0000_0000 + b.readUInt32BE(off + 4);
  const ttl = b.readUInt32BE(off + 8);
  const count = b[off + 12];
  if (ttl > MAX_GROUP_TTL || count > MAX_GROUP_HOSTS) return { ok: false, reason: 'badField' };
  off += 13;
  const end = off + count * 18;
  if (end + SIG_LEN > b.length) return { ok: false, reason: 'tooShort' };
  if (end + SIG_LEN < b.length) return { ok: false, reason: 'trailingBytes' };
  const own = Uint8Array.from(bytes);
  const hosts: GroupHost[] = [];
  const seen = new Set<string>();
  for (; off < end; off += 18) {
    const hostId = HostId.fromBytes(own, off);
    if (seen.has(hostId.key)) return { ok: false, reason: 'badField' };
    seen.add(hostId.key);
    hosts.push(Object.freeze({ hostId, priority: own[off + 16], weight: own[off + 17] }));
  }
  const group: GroupBinding = Object.freeze({
    kind,
    id: HostId.fromBytes(own, 5),
    prefixLen,
    publicKey: own.subarray(22, 54),
    name,
    seq,
    ttl,
    hosts: Object.freeze(hosts),
    signature: own.subarray(end),
    bytes: own,
  });
  return { ok: true, group };
}

export type GroupCheck = { ok: true } | { ok: false; reason: 'prefixTooLong' | 'idMismatch' | 'badSignature' };

/** Checks that the ID derives from the key (and name) and that the key signed the binding. */
export function verifyGroup(g: GroupBinding): GroupCheck {
  if (g.prefixLen > MAX_ID_PREFIX_LEN) return { ok: false, reason: 'prefixTooLong' };
  const prefix = Prefix.of(g.id.toBytes(), g.prefixLen);
  const expect = g.kind === 'user' ? deriveUserId(prefix, g.publicKey) : deriveDataId(prefix, g.publicKey, g.name);
  if (!expect.equals(g.id)) return { ok: false, reason: 'idMismatch' };
  let good = false;
  try {
    good = cryptoVerify(null, g.bytes.subarray(0, g.bytes.length - SIG_LEN), publicKeyObject(g.publicKey), g.signature);
  } catch {
    good = false;
  }
  return good ? { ok: true } : { ok: false, reason: 'badSignature' };
}

/** The group's entry for a host, or undefined when the owner does not list it. */
export function groupHost(g: GroupBinding, hostKey: string): GroupHost | undefined {
  return g.hosts.find((h) => h.hostId.key === hostKey);
}

function checkName(name: string): void {
  if (!NAME_RE.test(name)) throw invalid(`data name "${name}" must be 1-64 of A-Z a-z 0-9 . _ / + -`);
}

function invalid(message: string): RealmnetError {
  return new RealmnetError('BINDING_INVALID', `group binding: ${message}`, 'fix the user or data binding input');
}
