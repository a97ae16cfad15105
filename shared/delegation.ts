import { signBytes, verifyBytes, type KeyPair } from './crypto/ed25519.ts';
import { addressFamily, addressToBytes, bytesToAddress } from './address.ts';
import { RealmnetError } from './errors.ts';
import { HostId, MAX_ID_PREFIX_LEN, Prefix } from './ids.ts';

/**
 * A delegation (docs/hierarchy.md): "the realm prefix P is managed by the RM holding key K, reachable
 * at these addresses, until notAfter", signed by the issuer. It is both
 * - the referral a parent RM answers for an ID under a prefix it delegated (issuer = the parent;
 *   LISP-DDT's Map-Referral, signed as DDT's are), chained from the top RM's key down, and
 * - an endorsement a bottom RM hands its own agents with a foreign binding (issuer = the agents' own
 *   RM, no addresses): how an agent, which pins only its own realm's key, learns which key speaks for
 *   another realm's prefix, so it can check that realm's membership certificates.
 *
 * Fixed layout, like membership certificates: what is signed is exactly what travels.
 *   magic "RND1" | prefix 16 | prefixLen 1 | subjectKey 32 | issuerKey 32 | notBefore u32 | notAfter u32
 *   | address count 1 | 4 × (family 1 | address 16 | port 2) | Ed25519 signature 64
 */
export const DELEGATION_MAGIC = Buffer.from('RND1', 'latin1');
export const MAX_DELEGATION_ADDRESSES = 4;
const ADDR_LEN = 19;
const SIGNED_LEN = 4 + 16 + 1 + 32 + 32 + 4 + 4 + 1 + MAX_DELEGATION_ADDRESSES * ADDR_LEN;
export const DELEGATION_LEN = SIGNED_LEN + 64;
const DOMAIN = Buffer.from('realmnet/delegation/v1', 'latin1');
/** Clock skew tolerated before notBefore, seconds (as for certificates). */
const SKEW_S = 300;

export interface RmAddress {
  readonly address: string;
  readonly port: number;
}

export interface Delegation {
  readonly prefix: Prefix;
  /** The key of the RM the prefix is delegated to. */
  readonly subjectKey: Uint8Array;
  /** The key that signed. */
  readonly issuerKey: Uint8Array;
  /** Unix seconds. */
  readonly notBefore: number;
  readonly notAfter: number;
  readonly rms: readonly RmAddress[];
  readonly bytes: Uint8Array;
}

export interface DelegationInput {
  readonly prefix: Prefix;
  readonly subjectKey: Uint8Array;
  readonly notBefore: number;
  readonly notAfter: number;
  readonly rms?: readonly RmAddress[];
}

export function signDelegation(issuer: KeyPair, d: DelegationInput): Delegation {
  const rms = d.rms ?? [];
  if (d.subjectKey.length !== 32) throw new RealmnetError('KEY_INVALID', `an Ed25519 public key is 32 bytes, got ${d.subjectKey.length}`);
  if (rms.length > MAX_DELEGATION_ADDRESSES) throw new RangeError(`a delegation names at most ${MAX_DELEGATION_ADDRESSES} RM addresses, got ${rms.length}`);
  const out = Buffer.alloc(DELEGATION_LEN);
  DELEGATION_MAGIC.copy(out, 0);
  out.set(d.prefix.toBytes(), 4);
  out[20] = d.prefix.length;
  out.set(d.subjectKey, 21);
  out.set(issuer.publicKey, 53);
  out.writeUInt32BE(d.notBefore >>> 0, 85);
  out.writeUInt32BE(d.notAfter >>> 0, 89);
  out[93] = rms.length;
  rms.forEach((r, i) => {
    const off = 94 + i * ADDR_LEN;
    out[off] = addressToBytes(r.address, out, off + 1);
    out.writeUInt16BE(r.port, off + 17);
  });
  out.set(signBytes(issuer, Buffer.concat([DOMAIN, out.subarray(0, SIGNED_LEN)])), SIGNED_LEN);
  const dec = decodeDelegation(out);
  if (!dec.ok) throw new RealmnetError('INTERNAL', `signed a delegation that does not decode: ${dec.reason}`);
  return dec.delegation;
}

export type DelegationRefusal = 'delegationLength' | 'delegationMagic' | 'delegationField' | 'delegationIssuer' | 'delegationSignature' | 'delegationExpired' | 'delegationNotYetValid';

/** Structure only (no signature check). */
export function decodeDelegation(bytes: Uint8Array): { ok: true; delegation: Delegation } | { ok: false; reason: DelegationRefusal } {
  if (bytes.length !== DELEGATION_LEN) return { ok: false, reason: 'delegationLength' };
  const b = Buffer.from(Uint8Array.from(bytes));
  if (!b.subarray(0, 4).equals(DELEGATION_MAGIC)) return { ok: false, reason: 'delegationMagic' };
  const len = b[20];
  const n = b[93];
  if (len > MAX_ID_PREFIX_LEN || n > MAX_DELEGATION_ADDRESSES) return { ok: false, reason: 'delegationField' };
  let prefix: Prefix;
  try {
    prefix = Prefix.of(b.subarray(4, 20), len);
  } catch {
    return { ok: false, reason: 'delegationField' };
  }
  if (!Buffer.from(prefix.toBytes()).equals(b.subarray(4, 20))) return { ok: false, reason: 'delegationField' };
  const rms: RmAddress[] = [];
  for (let i = 0; i < n; i++) {
    const off = 94 + i * ADDR_LEN;
    const fam = b[off];
    const port = b.readUInt16BE(off + 17);
    if ((fam !== 4 && fam !== 6) || port === 0) return { ok: false, reason: 'delegationField' };
    rms.push(Object.freeze({ address: bytesToAddress(fam, b, off + 1), port }));
  }
  return {
    ok: true,
    delegation: Object.freeze({
      prefix,
      subjectKey: b.subarray(21, 53),
      issuerKey: b.subarray(53, 85),
      notBefore: b.readUInt32BE(85),
      notAfter: b.readUInt32BE(89),
      rms: Object.freeze(rms),
      bytes: b,
    }),
  };
}

/**
 * A delegation valid at nowS, signed by issuerKey. The caller checks what it means: that the prefix
 * lies inside what the issuer itself speaks for (verifyChain does for referral chains).
 */
export function verifyDelegation(bytes: Uint8Array, issuerKey: Uint8Array, nowS: number): { ok: true; delegation: Delegation } | { ok: false; reason: DelegationRefusal } {
  const d = decodeDelegation(bytes);
  if (!d.ok) return d;
  const g = d.delegation;
  if (!Buffer.from(g.issuerKey).equals(Buffer.from(issuerKey))) return { ok: false, reason: 'delegationIssuer' };
  if (nowS >= g.notAfter) return { ok: false, reason: 'delegationExpired' };
  if (nowS + SKEW_S < g.notBefore) return { ok: false, reason: 'delegationNotYetValid' };
  if (!verifyBytes(issuerKey, Buffer.concat([DOMAIN, g.bytes.subarray(0, SIGNED_LEN)]), g.bytes.subarray(SIGNED_LEN))) return { ok: false, reason: 'delegationSignature' };
  return d;
}

export type ChainRefusal = DelegationRefusal | 'chainEmpty' | 'chainLong' | 'chainPrefix';

/** Longest referral chain followed or accepted: top → middle → bottom is 2 links; room for two more tiers. */
export const MAX_CHAIN = 4;

/**
 * A chain of delegations from the top RM's key down: each link signed by the previous link's subject
 * (the first by rootKey), each prefix inside the previous one. Returns the last link: the prefix and
 * key the chain proves.
 */
export function verifyChain(chain: readonly Uint8Array[], rootKey: Uint8Array, nowS: number): { ok: true; delegation: Delegation } | { ok: false; reason: ChainRefusal } {
  if (chain.length === 0) return { ok: false, reason: 'chainEmpty' };
  if (chain.length > MAX_CHAIN) return { ok: false, reason: 'chainLong' };
  let issuer = rootKey;
  let within: Prefix | null = null;
  let last: Delegation | null = null;
  for (const link of chain) {
    const v = verifyDelegation(link, issuer, nowS);
    if (!v.ok) return v;
    if (within !== null && !within.covers(v.delegation.prefix)) return { ok: false, reason: 'chainPrefix' };
    within = v.delegation.prefix;
    issuer = v.delegation.subjectKey;
    last = v.delegation;
  }
  return { ok: true, delegation: last as Delegation };
}

/** True when a validated address literal fits the layout (IPv4 or IPv6). */
export function isDelegationAddress(address: string): boolean {
  return addressFamily(address) !== 0;
}

/** True when id lies in the delegation's prefix. */
export function delegationCovers(d: Delegation, id: HostId | Uint8Array): boolean {
  return d.prefix.contains(id);
}
