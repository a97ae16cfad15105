import type { KeyObject } from 'node:crypto';
import { edwardsToMontgomeryPriv, edwardsToMontgomeryPub, x25519 } from '@noble/curves/ed25519';
import type { MacKey } from '../../shared/crypto/blake2s.ts';
import type { Clock } from '../../shared/clock.ts';
import { RealmnetError } from '../../shared/errors.ts';
import { CERT_LEN } from '../../shared/membership.ts';
import { MAX_INSTANCE_ID } from '../../shared/wire/header.ts';
import { CookieChecker, CookieJar, checkMac1, cookieSealKey, mac1Key, writeMacs, type SourceAddress } from './cookie.ts';
import {
  AEAD_TAG_LEN,
  INIT_EPHEMERAL_OFF,
  INIT_SENDER_OFF,
  INIT_STATIC_OFF,
  MAC_LEN,
  MSG_INITIATION,
  MSG_RESPONSE,
  RESP_EMPTY_OFF,
  RESP_EPHEMERAL_OFF,
  RESP_MAC1_OFF,
  RESP_RECEIVER_OFF,
  RESP_SENDER_OFF,
  RESPONSE_LEN,
  TIMESTAMP_LEN,
  decodeCookieReply,
  decodeIdentity,
  decodeInitiation,
  decodeResponse,
  encodeIdentity,
  writeHandshakeHeader,
  writeU32,
  type HandshakeDropReason,
} from './handshake-wire.ts';
import { dh, generateEphemeral, hash2, hkdf2, open, seal, x25519Private, x25519Public } from './primitives.ts';
import { TimestampMemory, TimestampSource } from './timestamps.ts';

/**
 * The per-pair session handshake (issue #13): Noise_IK_25519_ChaChaPoly_SHA256 (Noise spec rev. 34,
 * sections 5 and 7.5) in WireGuard's message framing (whitepaper section 5.4).
 *
 *   IK:  <- s
 *        ...
 *        -> e, es, s, ss      initiation: ephemeral, identity record, timestamp
 *        <- e, ee, se         response:   ephemeral, empty payload
 *
 * IK because the initiator always knows the responder's static key before it sends (from the
 * responder's signed binding), so one round trip gives both sides keys, the initiator's identity
 * stays hidden from onlookers, and the responder keeps no state until a full, authenticated
 * initiation arrived. Forward secrecy comes from ee and se: once both sides dropped their
 * ephemerals, a later theft of a static key does not open recorded sessions.
 *
 * Static keys are the hosts' Ed25519 identity keys mapped to X25519 (RFC 7748 section 4.1, via
 * @noble/curves: node:crypto has no such conversion). The s token carries not the bare X25519 key
 * but the initiator's identity record (host ID, Ed25519 key, certificate: handshake-wire.ts), from
 * which the responder derives the X25519 key for ss; the record is hashed into h like any s token,
 * so the record, not just the derived key, is what both sides' keys are bound to. (Ed25519 points A
 * and -A map to one X25519 key; whoever holds one's secret holds the other's, so that adds no
 * impersonation. Small-order Ed25519 keys map to small-order X25519 keys, whose all-zero DH is
 * refused.)
 *
 * prologue = "realmnet v2" ‖ the realm's 24-bit instance ID, so a handshake of one realm never
 * completes in another even between the same two keys.
 *
 * The order of checks on the responder (cheapest first): exact length and header (no crypto), mac1
 * (one BLAKE2s), mac2 when under load (one BLAKE2s, else a cookie reply and nothing more), then the
 * DHs and AEADs, then the timestamp, then the caller's admission predicate. Nothing is recorded
 * before the message authenticated and was admitted.
 */

const PROTOCOL_NAME = Buffer.from('Noise_IK_25519_ChaChaPoly_SHA256', 'latin1'); // exactly HASHLEN bytes: h = name
const PROLOGUE_LABEL = Buffer.from('realmnet v2', 'latin1');
/** Peers whose converted static keys are cached; each conversion costs ~220 µs (noble). */
export const STATIC_CACHE_MAX = 4096;

export interface LocalIdentity {
  /** The host ID, 16 bytes. */
  readonly id: Uint8Array;
  /** The Ed25519 seed (the raw 32-byte private key). Not kept: only the derived X25519 key object is. */
  readonly edSeed: Uint8Array;
  readonly edPublic: Uint8Array;
  /** The membership certificate (CERT_LEN bytes), or null for a static-config host. */
  readonly cert: Uint8Array | null;
  /** The realm's 24-bit instance ID. */
  readonly instanceId: number;
}

/** Who an initiation claims to come from: authenticated (the initiator holds the key), not yet admitted. */
export interface PeerIdentity {
  readonly id: Uint8Array;
  readonly edPublic: Uint8Array;
  readonly cert: Uint8Array | null;
}

/** 32-byte ChaCha20-Poly1305 keys. The initiator's send is the responder's recv, and vice versa. The caller wipes them when the session ends. */
export interface TransportKeys {
  readonly send: Uint8Array;
  readonly recv: Uint8Array;
}

export interface HandshakerOptions {
  /** Unix milliseconds (the timestamp is wall-clock time; shared/clock.ts systemClock qualifies). */
  now(): number;
  /**
   * Called after the initiation authenticated (the initiator holds the Ed25519 key it claims) and its
   * timestamp is fresh. Must check that the ID belongs to the key: a certificate from a pinned realm
   * key for that ID and key, or a configured peer key (admit.ts has both).
   */
  admit(peer: PeerIdentity): boolean;
  cookieRotateMs?: number;
  timestampMemory?: number;
  staticCacheMax?: number;
}

export type InitiationResult =
  | { kind: 'response'; len: number; peer: PeerIdentity; remoteIndex: number; keys: TransportKeys }
  | { kind: 'cookie'; len: number; reason: 'needCookie' | 'badMac2' }
  | { kind: 'drop'; reason: HandshakeDropReason };

export type ResponseResult = { kind: 'keys'; remoteIndex: number; keys: TransportKeys } | { kind: 'drop'; reason: HandshakeDropReason };

export interface HandshakeStats {
  /** X25519 operations done (each ~36 µs): how much a flood made us work. */
  dh: number;
  initiationsSent: number;
  responsesSent: number;
  cookieRepliesSent: number;
  cookiesStored: number;
  completed: number;
  readonly drops: Record<HandshakeDropReason, number>;
}

/** A peer's static key in every form the handshake needs, derived once. */
interface StaticPeer {
  readonly xpub: Uint8Array;
  readonly key: KeyObject;
  readonly mac1: MacKey;
  readonly cookieSeal: Uint8Array;
}

/**
 * The initiator's state between initiation and response. Opaque to the caller, who keys it by
 * localIndex (receiverIndexOf() of a response or cookie reply) and hands it back. Its secrets are
 * wiped when the response completes it or the caller abandons it.
 */
export class PendingInitiation {
  constructor(
    readonly peerId: Uint8Array,
    readonly localIndex: number,
    /** now() when it was sent: the caller's retry timer (WireGuard retries after 5 s) starts here. */
    readonly sentAt: number,
  ) {}
}

interface InitiatorState {
  ss: SymmetricState;
  e: KeyObject | null;
  readonly peer: StaticPeer;
  readonly sentMac1: Uint8Array;
}

/**
 * Noise's SymmetricState with SHA-256 (spec section 5.2). k is used for exactly one encryption or
 * decryption after each MixKey, so its nonce is always 0.
 */
class SymmetricState {
  constructor(
    public ck: Uint8Array,
    public h: Uint8Array,
    public k: Uint8Array | null = null,
  ) {}

  clone(): SymmetricState {
    return new SymmetricState(Uint8Array.from(this.ck), Uint8Array.from(this.h), this.k === null ? null : Uint8Array.from(this.k));
  }

  mixHash(data: Uint8Array): void {
    this.h = hash2(this.h, data);
  }

  /** MixKey(dh); wipes dh and the previous chaining key. */
  mixKey(dhOut: Uint8Array): void {
    const [ck, k] = hkdf2(this.ck, dhOut);
    dhOut.fill(0);
    this.ck.fill(0);
    if (this.k !== null) this.k.fill(0);
    this.ck = ck;
    this.k = k;
  }

  /** Writes ciphertext ‖ tag of plain at out[off] and mixes it into h. */
  encryptAndHash(plain: Uint8Array, out: Uint8Array, off: number): void {
    seal(this.k as Uint8Array, 0, this.h, plain, out, off);
    this.mixHash(out.subarray(off, off + plain.length + AEAD_TAG_LEN));
  }

  decryptAndHash(buf: Uint8Array, off: number, len: number): Uint8Array | null {
    const plain = open(this.k as Uint8Array, 0, this.h, buf, off, len);
    if (plain !== null) this.mixHash(buf.subarray(off, off + len));
    return plain;
  }

  /** Split(): the two transport keys (initiator→responder, responder→initiator); wipes the state. */
  split(): [Uint8Array, Uint8Array] {
    const [k1, k2] = hkdf2(this.ck, EMPTY);
    const out: [Uint8Array, Uint8Array] = [Uint8Array.from(k1), Uint8Array.from(k2)];
    k1.fill(0);
    k2.fill(0);
    this.wipe();
    return out;
  }

  wipe(): void {
    this.ck.fill(0);
    this.h.fill(0);
    if (this.k !== null) this.k.fill(0);
    this.k = null;
  }
}

export class Handshaker {
  readonly stats: HandshakeStats = {
    dh: 0,
    initiationsSent: 0,
    responsesSent: 0,
    cookieRepliesSent: 0,
    cookiesStored: 0,
    completed: 0,
    drops: {
      truncated: 0,
      badHeader: 0,
      badType: 0,
      wrongInstance: 0,
      badMac1: 0,
      needCookie: 0,
      badMac2: 0,
      decryptFailed: 0,
      badKey: 0,
      badIdentity: 0,
      staleTimestamp: 0,
      notAdmitted: 0,
      wrongIndex: 0,
      consumed: 0,
    },
  };
  /** Our static X25519 public key (what peers' mac1 and cookie keys are derived from). */
  readonly xPublic: Uint8Array;

  readonly #instanceId: number;
  readonly #xPrivate: KeyObject;
  readonly #mac1: MacKey;
  #identity: Uint8Array;
  readonly #ck0: Uint8Array;
  readonly #h0: Uint8Array;
  /** h after mixing in our own static key: every initiation to us starts here. */
  readonly #hResponder: Uint8Array;
  readonly #statics = new Map<string, StaticPeer>();
  readonly #pending = new WeakMap<PendingInitiation, InitiatorState>();
  readonly #timestamps: TimestampMemory;
  readonly #tsSource = new TimestampSource();
  readonly #checker: CookieChecker;
  readonly #jar: CookieJar;
  readonly #clock: Clock;
  readonly #admit: (p: PeerIdentity) => boolean;
  readonly #staticMax: number;

  constructor(me: LocalIdentity, opts: HandshakerOptions) {
    if (me.id.length !== 16) throw keyError(`a host ID is 16 bytes, got ${me.id.length}`);
    if (me.edSeed.length !== 32 || me.edPublic.length !== 32) throw keyError('an Ed25519 seed and public key are 32 bytes each');
    if (me.cert !== null && me.cert.length !== CERT_LEN) throw keyError(`a membership certificate is ${CERT_LEN} bytes, got ${me.cert.length}`);
    if (!Number.isInteger(me.instanceId) || me.instanceId < 0 || me.instanceId > MAX_INSTANCE_ID) {
      throw new RealmnetError('CONFIG_INVALID', `instance ID ${me.instanceId} is not in 0..${MAX_INSTANCE_ID}`);
    }
    this.#instanceId = me.instanceId;
    const priv = edwardsToMontgomeryPriv(me.edSeed);
    const pub = x25519.getPublicKey(priv);
    // The seed's X25519 key must be the public key's image, or every peer would fail our handshakes
    // with decryptFailed and nobody would know why.
    if (!Buffer.from(pub).equals(Buffer.from(edwardsToMontgomeryPub(me.edPublic)))) throw keyError('the Ed25519 seed does not belong to the public key');
    this.#xPrivate = x25519Private(priv, pub);
    priv.fill(0);
    this.xPublic = pub;
    this.#mac1 = mac1Key(pub);
    this.#identity = encodeIdentity(me.id, me.edPublic, me.cert);
    this.#clock = { now: () => opts.now() };
    this.#admit = opts.admit;
    this.#staticMax = opts.staticCacheMax ?? STATIC_CACHE_MAX;
    this.#timestamps = new TimestampMemory(opts.timestampMemory);
    this.#checker = new CookieChecker(pub, this.#clock, opts.cookieRotateMs);
    this.#jar = new CookieJar(this.#clock);

    const prologue = new Uint8Array(PROLOGUE_LABEL.length + 3);
    prologue.set(PROLOGUE_LABEL, 0);
    prologue[PROLOGUE_LABEL.length] = (me.instanceId >>> 16) & 0xff;
    prologue[PROLOGUE_LABEL.length + 1] = (me.instanceId >>> 8) & 0xff;
    prologue[PROLOGUE_LABEL.length + 2] = me.instanceId & 0xff;
    this.#ck0 = Uint8Array.from(PROTOCOL_NAME);
    this.#h0 = hash2(PROTOCOL_NAME, prologue);
    this.#hResponder = hash2(this.#h0, pub);
    this.#me = { id: Uint8Array.from(me.id), edPublic: Uint8Array.from(me.edPublic) };
  }

  readonly #me: { readonly id: Uint8Array; readonly edPublic: Uint8Array };

  /** A renewed membership certificate: initiations from now on carry it. */
  setCertificate(cert: Uint8Array | null): void {
    if (cert !== null && cert.length !== CERT_LEN) throw keyError(`a membership certificate is ${CERT_LEN} bytes, got ${cert.length}`);
    this.#identity = encodeIdentity(this.#me.id, this.#me.edPublic, cert);
  }

  /**
   * Writes an initiation to the peer into out (at least MAX_HANDSHAKE_LEN bytes) and returns its
   * length and the state to complete it with. The peer's key comes from a verified binding or the
   * config; a key that is not a usable curve point throws KEY_INVALID. mac2 is set when the jar holds
   * a fresh cookie from this peer.
   */
  initiate(peer: { id: Uint8Array; edPublic: Uint8Array }, localIndex: number, out: Uint8Array): { len: number; pending: PendingInitiation } {
    const sp = this.#staticFor(peer.edPublic, true);
    if (sp === null) throw keyError("the peer's Ed25519 public key is not a usable curve point");
    const len = INIT_STATIC_OFF + this.#identity.length + AEAD_TAG_LEN + TIMESTAMP_LEN + AEAD_TAG_LEN + 2 * MAC_LEN;
    if (out.length < len) throw new RangeError(`out has ${out.length} bytes, the initiation needs ${len}`);
    const ss = new SymmetricState(Uint8Array.from(this.#ck0), hash2(this.#h0, sp.xpub));
    const e = generateEphemeral();
    writeHandshakeHeader(out, 0, MSG_INITIATION, this.#instanceId);
    writeU32(out, INIT_SENDER_OFF, localIndex);
    out.set(e.pub, INIT_EPHEMERAL_OFF);
    ss.mixHash(e.pub); // e
    const es = this.#dh(e.priv, sp.key);
    const ssDh = es === null ? null : this.#dh(this.#xPrivate, sp.key);
    if (es === null || ssDh === null) {
      ss.wipe();
      throw keyError("the peer's static key is of small order");
    }
    ss.mixKey(es); // es
    ss.encryptAndHash(this.#identity, out, INIT_STATIC_OFF); // s
    ss.mixKey(ssDh); // ss
    const tsOff = INIT_STATIC_OFF + this.#identity.length + AEAD_TAG_LEN;
    ss.encryptAndHash(this.#tsSource.next(this.#clock.now()), out, tsOff);
    const mac1Off = tsOff + TIMESTAMP_LEN + AEAD_TAG_LEN;
    writeMacs(sp.mac1, this.#jar.get(peer.id), out, 0, mac1Off);
    const pending = new PendingInitiation(Uint8Array.from(peer.id), localIndex >>> 0, this.#clock.now());
    this.#pending.set(pending, { ss, e: e.priv, peer: sp, sentMac1: out.slice(mac1Off, mac1Off + MAC_LEN) });
    this.stats.initiationsSent++;
    return { len, pending };
  }

  /**
   * The responder's side. buf[off, off+len) is borrowed (read only during the call). On 'response',
   * out[0, len) is the response to send to src and the session is keyed; on 'cookie', out[0, len) is
   * a cookie reply to send to src; on 'drop', nothing is sent. underLoad: the caller's decision that
   * initiations must prove their source address (mac2) before any DH.
   */
  onInitiation(buf: Uint8Array, off: number, len: number, src: SourceAddress, localIndex: number, underLoad: boolean, out: Uint8Array): InitiationResult {
    const d = decodeInitiation(buf, off, len, this.#instanceId);
    if (!d.ok) return this.#drop(d.reason);
    const m = d.msg;
    if (!checkMac1(this.#mac1, buf, off, m.mac1Off)) return this.#drop('badMac1');
    if (underLoad && !this.#checker.checkMac2(buf, off, m.mac2Off, src)) {
      const reason = isZero(buf, m.mac2Off, MAC_LEN) ? 'needCookie' : 'badMac2';
      this.stats.drops[reason]++;
      const n = this.#checker.writeReply(out, m.senderIndex, buf.subarray(m.mac1Off, m.mac1Off + MAC_LEN), src, this.#instanceId);
      this.stats.cookieRepliesSent++;
      return { kind: 'cookie', len: n, reason };
    }
    const ePub = buf.slice(m.ephemeralOff, m.ephemeralOff + 32);
    const eKey = x25519Public(ePub);
    if (eKey === null) return this.#drop('badKey');

    const ss = new SymmetricState(Uint8Array.from(this.#ck0), Uint8Array.from(this.#hResponder));
    try {
      ss.mixHash(ePub); // e
      const es = this.#dh(this.#xPrivate, eKey);
      if (es === null) return this.#drop('badKey');
      ss.mixKey(es); // es
      const rec = ss.decryptAndHash(buf, m.staticOff, m.staticLen); // s
      if (rec === null) return this.#drop('decryptFailed');
      const ident = decodeIdentity(rec);
      rec.fill(0);
      if (!ident.ok) return this.#drop(ident.reason);
      const peer = ident.msg;
      const sp = this.#staticFor(peer.edPublic, false);
      if (sp === null) return this.#drop('badKey');
      const ssDh = this.#dh(this.#xPrivate, sp.key);
      if (ssDh === null) return this.#drop('badKey');
      ss.mixKey(ssDh); // ss
      const ts = ss.decryptAndHash(buf, m.timestampOff, TIMESTAMP_LEN + AEAD_TAG_LEN);
      if (ts === null) return this.#drop('decryptFailed');
      // Authenticated from here: only the holder of the claimed key's secret could produce ss.
      if (!this.#timestamps.isFresh(peer.id, ts)) return this.#drop('staleTimestamp');
      if (!this.#admit(peer)) return this.#drop('notAdmitted');
      this.#timestamps.record(peer.id, ts);
      this.#remember(peer.edPublic, sp);

      // The response: <- e, ee, se
      const er = generateEphemeral();
      writeHandshakeHeader(out, 0, MSG_RESPONSE, this.#instanceId);
      writeU32(out, RESP_SENDER_OFF, localIndex);
      writeU32(out, RESP_RECEIVER_OFF, m.senderIndex);
      out.set(er.pub, RESP_EPHEMERAL_OFF);
      ss.mixHash(er.pub); // e
      const ee = this.#dh(er.priv, eKey);
      const se = ee === null ? null : this.#dh(er.priv, sp.key);
      if (ee === null || se === null) return this.#drop('badKey'); // not reached: both keys passed a DH above
      ss.mixKey(ee); // ee
      ss.mixKey(se); // se
      ss.encryptAndHash(EMPTY, out, RESP_EMPTY_OFF);
      writeMacs(sp.mac1, null, out, 0, RESP_MAC1_OFF);
      const [i2r, r2i] = ss.split();
      this.stats.responsesSent++;
      this.stats.completed++;
      return { kind: 'response', len: RESPONSE_LEN, peer, remoteIndex: m.senderIndex, keys: { send: r2i, recv: i2r } };
    } finally {
      ss.wipe();
    }
  }

  /**
   * The initiator's side: completes `pending` with the response in buf[off, off+len). A response
   * that fails leaves pending usable (a forged one must not cancel the real handshake); a completed
   * pending is wiped and refuses further responses ('consumed').
   */
  onResponse(pending: PendingInitiation, buf: Uint8Array, off: number, len: number): ResponseResult {
    const st = this.#pending.get(pending);
    if (st === undefined || st.e === null) return this.#drop('consumed');
    const d = decodeResponse(buf, off, len, this.#instanceId);
    if (!d.ok) return this.#drop(d.reason);
    const m = d.msg;
    if (m.receiverIndex !== pending.localIndex) return this.#drop('wrongIndex');
    if (!checkMac1(this.#mac1, buf, off, m.mac1Off)) return this.#drop('badMac1');
    // We never send cookies to responders, so a response's mac2 is zeros: anything else is altered.
    if (!isZero(buf, m.mac2Off, MAC_LEN)) return this.#drop('badMac2');
    const erPub = buf.slice(m.ephemeralOff, m.ephemeralOff + 32);
    const erKey = x25519Public(erPub);
    if (erKey === null) return this.#drop('badKey');
    // Work on a copy: the pending state stays intact until a response really completes it.
    const ss = st.ss.clone();
    try {
      ss.mixHash(erPub); // e
      const ee = this.#dh(st.e, erKey);
      if (ee === null) return this.#drop('badKey');
      ss.mixKey(ee); // ee
      const se = this.#dh(this.#xPrivate, erKey);
      if (se === null) return this.#drop('badKey');
      ss.mixKey(se); // se
      if (ss.decryptAndHash(buf, m.emptyOff, AEAD_TAG_LEN) === null) return this.#drop('decryptFailed');
      const [i2r, r2i] = ss.split();
      this.abandon(pending);
      this.stats.completed++;
      return { kind: 'keys', remoteIndex: m.senderIndex, keys: { send: i2r, recv: r2i } };
    } finally {
      ss.wipe();
    }
  }

  /**
   * A cookie reply to `pending`: when it opens (it answers that very initiation), the cookie is
   * stored for the peer and the next initiate() to it carries mac2. Returns whether it was stored.
   * The caller re-initiates on its retry timer, as WireGuard does, not at once.
   */
  onCookieReply(pending: PendingInitiation, buf: Uint8Array, off: number, len: number): boolean {
    const st = this.#pending.get(pending);
    if (st === undefined || st.e === null) {
      this.stats.drops.consumed++;
      return false;
    }
    const d = decodeCookieReply(buf, off, len, this.#instanceId);
    if (!d.ok) {
      this.stats.drops[d.reason]++;
      return false;
    }
    if (d.msg.receiverIndex !== pending.localIndex) {
      this.stats.drops.wrongIndex++;
      return false;
    }
    if (!this.#jar.accept(pending.peerId, st.peer.cookieSeal, buf, d.msg, st.sentMac1)) {
      this.stats.drops.decryptFailed++;
      return false;
    }
    this.stats.cookiesStored++;
    return true;
  }

  /** Wipes a pending initiation the caller gives up on (timeout, or a newer one replaced it). */
  abandon(pending: PendingInitiation): void {
    const st = this.#pending.get(pending);
    if (st === undefined) return;
    st.ss.wipe();
    st.e = null; // OpenSSL clears the key when the object is collected; no JS copy exists
    this.#pending.delete(pending);
  }

  #dh(priv: KeyObject, pub: KeyObject): Uint8Array | null {
    this.stats.dh++;
    return dh(priv, pub);
  }

  #drop(reason: HandshakeDropReason): { kind: 'drop'; reason: HandshakeDropReason } {
    this.stats.drops[reason]++;
    return { kind: 'drop', reason };
  }

  /**
   * The static key forms for an Ed25519 public key, from the cache or computed (null: not a curve
   * point). The responder caches only keys of admitted initiators (remember()), so a flood of
   * made-up keys cannot push real peers out.
   */
  #staticFor(edPublic: Uint8Array, cache: boolean): StaticPeer | null {
    if (edPublic.length !== 32) return null;
    const k = Buffer.from(edPublic.buffer, edPublic.byteOffset, 32).toString('latin1');
    const hit = this.#statics.get(k);
    if (hit !== undefined) return hit;
    let xpub: Uint8Array;
    try {
      xpub = edwardsToMontgomeryPub(edPublic);
    } catch {
      return null;
    }
    const key = x25519Public(xpub);
    if (key === null) return null;
    const sp: StaticPeer = { xpub, key, mac1: mac1Key(xpub), cookieSeal: cookieSealKey(xpub) };
    if (cache) this.#remember(edPublic, sp);
    return sp;
  }

  #remember(edPublic: Uint8Array, sp: StaticPeer): void {
    const k = Buffer.from(edPublic.buffer, edPublic.byteOffset, 32).toString('latin1');
    this.#statics.delete(k);
    this.#statics.set(k, sp);
    if (this.#statics.size > this.#staticMax) {
      const oldest = this.#statics.keys().next();
      if (oldest.done !== true) this.#statics.delete(oldest.value);
    }
  }
}

const EMPTY = new Uint8Array(0);

function isZero(b: Uint8Array, off: number, len: number): boolean {
  let acc = 0;
  for (let i = 0; i < len; i++) acc |= b[off + i];
  return acc === 0;
}

function keyError(message: string): RealmnetError {
  return new RealmnetError('KEY_INVALID', message, 'keys come from a verified binding or the config; check the peer entry');
}
