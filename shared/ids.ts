import { createHash } from 'node:crypto';
import { addressBytes, addressFamily, bytesToAddress } from './address.ts';
import { ConfigError, RealmnetError } from './errors.ts';

/**
 * Host IDs and realm prefixes.
 *
 * A host ID is 128 bits written as an IPv6 address: the realm prefix (hierarchical, aggregatable)
 * followed by the first (128 - prefixLen) bits of
 *
 *   SHA-256( "realmnet/host-id/v1" || prefixLen (1 byte) || prefix (16 bytes, host bits zero) || Ed25519 public key (32 bytes) )
 *
 * so anyone holding the public key can check that the ID belongs to it (self-certifying, like HIP's
 * ORCHIDv2, which also hashes a context tag). The prefix is inside the hash so the same key yields
 * unrelated flat parts in different realms.
 *
 * The flat part is what an attacker must match to steal an ID: with a prefix of length L it costs
 * 2^(128-L) hashes. MAX_ID_PREFIX_LEN keeps that at 2^64 or more; a verifier must refuse longer
 * prefixes, or an attacker could claim a /120 and match 8 bits.
 */
export const MAX_ID_PREFIX_LEN = 64;
const HOST_ID_TAG = Buffer.from('realmnet/host-id/v1', 'utf8');

/**
 * The key of a Map or Set keyed by host ID: the 16 bytes at bytes[off..] as a 16-character latin1
 * string. Every ID-keyed map uses it, so a key made from packet bytes finds the entry made from a
 * HostId (HostId.key). Latin1 rather than hex: 16 characters instead of 32 to build and hash.
 * Buffer.from(key, 'latin1') gives the 16 bytes back (the RM's binding store writes keys to SQLite
 * that way). Not text for people or the wire: print HostId.toString() (or .hex).
 */
export function idKey(bytes: Uint8Array, off = 0): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset + off, 16).toString('latin1');
}

/** A 128-bit host ID. Immutable: the bytes are private and copied out. */
export class HostId {
  readonly #bytes: Uint8Array;
  /** idKey() of the ID: what ID-keyed maps and sets are keyed by. */
  readonly key: string;
  /** 32 lowercase hex digits, for text that is not an IPv6 address (fromHex reads it back). */
  readonly hex: string;

  private constructor(bytes: Uint8Array) {
    this.#bytes = Uint8Array.from(bytes);
    this.key = idKey(this.#bytes);
    this.hex = Buffer.from(this.#bytes).toString('hex');
    Object.freeze(this);
  }

  /** Copies 16 bytes. */
  static fromBytes(bytes: Uint8Array, offset = 0): HostId {
    if (bytes.length - offset < 16) throw idError(`a host ID is 16 bytes, got ${bytes.length - offset}`);
    return new HostId(bytes.subarray(offset, offset + 16));
  }

  static fromHex(hex: string): HostId {
    if (!/^[0-9a-fA-F]{32}$/.test(hex)) throw idError(`"${hex}" is not 32 hex digits`);
    return new HostId(Buffer.from(hex, 'hex'));
  }

  /** A copy of the 16 bytes. */
  toBytes(): Uint8Array {
    return Uint8Array.from(this.#bytes);
  }

  /** Writes the 16 bytes into out at offset, without allocating. */
  copyTo(out: Uint8Array, offset = 0): void {
    out.set(this.#bytes, offset);
  }

  byteAt(i: number): number {
    return this.#bytes[i];
  }

  equals(other: HostId): boolean {
    return this.key === other.key;
  }

  /** The canonical (RFC 5952) IPv6 text form, e.g. fd00:1::8a3f:1c2d:9e0b:4a71. */
  toString(): string {
    return bytesToAddress(6, this.#bytes, 0);
  }

  toJSON(): string {
    return this.toString();
  }
}

/** Parses the IPv6 text form of a host ID. Throws ID_INVALID with the reason. */
export function parseHostId(text: string): HostId {
  const s = text.trim();
  if (s.includes('/')) throw idError(`"${text}" is a prefix, not a host ID`);
  if (s.includes('%')) throw idError(`"${text}" has a zone index; host IDs have none`);
  if (addressFamily(s) !== 6) throw idError(`"${text}" is not a host ID (not an IPv6 address)`);
  return HostId.fromBytes(addressBytes(s));
}

/**
 * The 16 bytes of a host ID written as IPv6 text, for IDs from config files and command lines:
 * throws CONFIG_INVALID, the code those sources report (parseHostId throws ID_INVALID).
 */
export function hostIdBytes(id: string): Uint8Array {
  if (addressFamily(id) !== 6) throw new ConfigError(`"${id}" is not a host ID`, 'host IDs are IPv6 addresses, e.g. fd00:1::a');
  return addressBytes(id);
}

/** A realm prefix: an IPv6 prefix whose host bits are zero. */
export class Prefix {
  readonly #bytes: Uint8Array;
  readonly length: number;

  private constructor(bytes: Uint8Array, length: number) {
    this.#bytes = maskBytes(bytes, length);
    this.length = length;
    Object.freeze(this);
  }

  static of(bytes: Uint8Array, length: number): Prefix {
    if (!Number.isInteger(length) || length < 0 || length > 128) throw prefixError(`prefix length ${length} is not in 0..128`);
    if (bytes.length < 16) throw prefixError(`a prefix is 16 bytes, got ${bytes.length}`);
    return new Prefix(bytes.subarray(0, 16), length);
  }

  toBytes(): Uint8Array {
    return Uint8Array.from(this.#bytes);
  }

  /** True when the host ID lies inside this prefix. */
  contains(id: HostId | Uint8Array, offset = 0): boolean {
    const full = this.length >> 3;
    const rest = this.length & 7;
    if (id instanceof HostId) {
      for (let i = 0; i < full; i++) if (id.byteAt(i) !== this.#bytes[i]) return false;
      if (rest === 0) return true;
      const m = (0xff << (8 - rest)) & 0xff;
      return (id.byteAt(full) & m) === this.#bytes[full];
    }
    for (let i = 0; i < full; i++) if (id[offset + i] !== this.#bytes[i]) return false;
    if (rest === 0) return true;
    const m = (0xff << (8 - rest)) & 0xff;
    return (id[offset + full] & m) === this.#bytes[full];
  }

  /** True when other is this prefix or nested inside it (a sub-realm). */
  covers(other: Prefix): boolean {
    return other.length >= this.length && this.contains(other.#bytes);
  }

  equals(other: Prefix): boolean {
    return this.length === other.length && this.covers(other);
  }

  toString(): string {
    return `${bytesToAddress(6, this.#bytes, 0)}/${this.length}`;
  }

  toJSON(): string {
    return this.toString();
  }
}

/**
 * Parses "fd00:1::/32". Host bits must be zero ("fd00:1::5/32" is refused: it is more likely a typo
 * than a prefix). Throws PREFIX_INVALID.
 */
export function parsePrefix(text: string): Prefix {
  const s = text.trim();
  const slash = s.indexOf('/');
  if (slash < 0) throw prefixError(`"${text}" has no prefix length (e.g. fd00:1::/32)`);
  const lenText = s.slice(slash + 1);
  if (!/^\d{1,3}$/.test(lenText) || Number(lenText) > 128) throw prefixError(`"${text}": prefix length must be 0..128`);
  const addr = s.slice(0, slash);
  if (addr.includes('%') || addressFamily(addr) !== 6) throw prefixError(`"${text}" is not an IPv6 prefix (e.g. fd00:1::/32)`);
  const bytes = addressBytes(addr);
  const p = Prefix.of(bytes, Number(lenText));
  if (Buffer.compare(Buffer.from(p.toBytes()), Buffer.from(bytes)) !== 0) {
    throw prefixError(`"${text}" has bits set after /${lenText}`, `did you mean ${p.toString()}?`);
  }
  return p;
}

/** The ID of the holder of publicKey (32 raw Ed25519 bytes) in the realm with this prefix. */
export function deriveHostId(prefix: Prefix, publicKey: Uint8Array): HostId {
  return deriveTaggedId(HOST_ID_TAG, prefix, publicKey, EMPTY);
}

const EMPTY = new Uint8Array(0);

/**
 * The derivation behind every self-certifying ID (host, user, data: shared/group.ts): the prefix,
 * then the first (128 - prefixLen) bits of SHA-256(tag || prefixLen || prefix || key || extra).
 * A distinct tag per kind keeps a user ID from ever being a valid host ID of the same key.
 */
export function deriveTaggedId(tag: Uint8Array, prefix: Prefix, publicKey: Uint8Array, extra: Uint8Array): HostId {
  if (prefix.length > MAX_ID_PREFIX_LEN) {
    throw prefixError(
      `prefix ${prefix.toString()} is longer than /${MAX_ID_PREFIX_LEN}`,
      `IDs need at least ${128 - MAX_ID_PREFIX_LEN} hash bits to be self-certifying; use a shorter prefix`,
    );
  }
  if (publicKey.length !== 32) throw new RealmnetError('KEY_INVALID', `an Ed25519 public key is 32 bytes, got ${publicKey.length}`);
  const digest = createHash('sha256').update(tag).update(Uint8Array.of(prefix.length)).update(prefix.toBytes()).update(publicKey).update(extra).digest();
  const out = prefix.toBytes();
  // Copy the hash into the host bits, starting at bit prefix.length.
  for (let bit = prefix.length; bit < 128; bit++) {
    const hb = bit - prefix.length;
    if ((digest[hb >> 3] >> (7 - (hb & 7))) & 1) out[bit >> 3] |= 1 << (7 - (bit & 7));
  }
  return HostId.fromBytes(out);
}

/**
 * True when id is the ID of publicKey under the prefix of length prefixLen that id itself starts
 * with. Does not throw: a bad length or key is simply false. The caller still decides whether that
 * prefix is one it accepts (a realm checks it is its own prefix or a sub-realm's).
 */
export function verifyHostId(id: HostId, prefixLen: number, publicKey: Uint8Array): boolean {
  if (!Number.isInteger(prefixLen) || prefixLen < 0 || prefixLen > MAX_ID_PREFIX_LEN || publicKey.length !== 32) return false;
  const expect = deriveHostId(Prefix.of(id.toBytes(), prefixLen), publicKey);
  return expect.key === id.key;
}

function maskBytes(bytes: Uint8Array, length: number): Uint8Array {
  const out = Uint8Array.from(bytes);
  for (let bit = length; bit < 128; bit++) out[bit >> 3] &= ~(1 << (7 - (bit & 7)));
  return out;
}

function idError(message: string): RealmnetError {
  return new RealmnetError('ID_INVALID', message, 'host IDs are IPv6 addresses, e.g. fd00:1::8a3f:1c2d:9e0b:4a71');
}

function prefixError(message: string, hint = 'realm prefixes are IPv6 prefixes, e.g. fd00:1::/32'): RealmnetError {
  return new RealmnetError('PREFIX_INVALID', message, hint);
}
