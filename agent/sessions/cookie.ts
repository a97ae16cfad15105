import { randomBytes } from 'node:crypto';
import { blake2s, mac, macKey, macVerify, type MacKey } from '../../shared/crypto/blake2s.ts';
import type { Clock } from '../../shared/clock.ts';
import { idKey } from '../../shared/ids.ts';
import {
  COOKIE_CT_OFF,
  COOKIE_LEN,
  COOKIE_NONCE_LEN,
  COOKIE_NONCE_OFF,
  COOKIE_RECEIVER_OFF,
  COOKIE_REPLY_LEN,
  MAC_LEN,
  MSG_COOKIE_REPLY,
  writeHandshakeHeader,
  writeU32,
  type CookieReplyView,
} from './handshake-wire.ts';
import { xopen, xseal } from './primitives.ts';

/**
 * mac1, mac2 and cookies: the handshake's defence against floods, as in WireGuard (whitepaper
 * section 5.4.4 and 5.4.7; wireguard-go's device/cookie.go).
 *
 * - mac1 = BLAKE2s-128 keyed by BLAKE2s-256("mac1----" ‖ receiver's static X25519 key) over the
 *   message up to mac1. Anyone who knows the receiver's public key can compute it, so it proves
 *   nothing about the sender; it makes random garbage and messages for another host cost one hash
 *   (about 1 µs with shared/crypto/blake2s.ts) and no Diffie-Hellman (36 µs each, four per side).
 *   BLAKE2s rather than truncated HMAC-SHA256: our BLAKE2s is ~5 times cheaper than a node:crypto
 *   HMAC call here (shared/crypto/blake2s.ts measured both), and the mac is the one thing a flood
 *   makes us compute per datagram.
 * - cookie = BLAKE2s-128(secret, source address 16 ‖ port u16), the secret 32 random bytes replaced
 *   every 120 s (the previous one still accepted, so a cookie lives 120 to 240 s: at least as long as
 *   the initiator's jar keeps it). A responder under load answers an initiation without a valid
 *   mac2 with a cookie reply (68 bytes, smaller than the 170-byte initiation: no amplification) and
 *   does no DH; an initiator that really is at that address puts mac2 = BLAKE2s-128(cookie, message
 *   up to mac2) into its next initiation.
 * - The cookie travels encrypted with XChaCha20-Poly1305 under BLAKE2s-256("cookie--" ‖ responder's
 *   static key), with the answered initiation's mac1 as associated data, so only the initiator that
 *   sent that initiation (and knows the responder's key) can use the reply, and an on-path observer
 *   cannot lift the cookie for another source address.
 */

const LABEL_MAC1 = Buffer.from('mac1----', 'latin1');
const LABEL_COOKIE = Buffer.from('cookie--', 'latin1');

/** Cookie secret rotation period (WireGuard's CookieRefreshTime). */
export const COOKIE_ROTATE_MS = 120_000;
/**
 * How long an initiator uses a cookie: the responder accepts it at least COOKIE_ROTATE_MS; the
 * margin covers the reply's flight and a retransmitted initiation's.
 */
export const COOKIE_JAR_TTL_MS = COOKIE_ROTATE_MS - 10_000;
/** Peers whose cookie a jar keeps at most; the least recently stored is forgotten first. */
export const COOKIE_JAR_MAX = 4096;

export interface SourceAddress {
  /** 16 bytes: an IPv6 address, or an IPv4 one IPv4-mapped (::ffff:a.b.c.d). */
  readonly addr: Uint8Array;
  readonly port: number;
}

/** The mac1 key of the host whose static X25519 public key is xpub. */
export function mac1Key(xpub: Uint8Array): MacKey {
  return macKey(blake2s(concat(LABEL_MAC1, xpub), 32));
}

/** The key cookie replies from the host whose static X25519 public key is xpub are sealed with. */
export function cookieSealKey(xpub: Uint8Array): Uint8Array {
  return blake2s(concat(LABEL_COOKIE, xpub), 32);
}

/** Writes mac1 over buf[start, mac1Off) and mac2 (under cookie, or zeros) over buf[start, mac1Off+16). */
export function writeMacs(key: MacKey, cookie: Uint8Array | null, buf: Uint8Array, start: number, mac1Off: number): void {
  mac(key, buf, start, mac1Off, buf, mac1Off);
  const mac2Off = mac1Off + MAC_LEN;
  if (cookie === null) buf.fill(0, mac2Off, mac2Off + MAC_LEN);
  else mac(macKey(cookie), buf, start, mac2Off, buf, mac2Off);
}

export function checkMac1(key: MacKey, buf: Uint8Array, start: number, mac1Off: number): boolean {
  return macVerify(key, buf, start, mac1Off, mac1Off);
}

/** Pure: keep the secrets, rotate once (current → previous), or replace both (idle two periods or more). */
export function cookieRotation(rotatedAt: number, now: number, periodMs: number): 'keep' | 'rotate' | 'reset' {
  const age = now - rotatedAt;
  if (age < periodMs) return 'keep';
  return age < 2 * periodMs ? 'rotate' : 'reset';
}

/**
 * The responder's side: makes cookies and checks mac2. Keeps two 32-byte secrets and nothing per
 * source, so there is nothing a flood can fill. Whether the responder is under load is the caller's
 * decision (e.g. pending handshakes or handshake CPU over a threshold); this class only says whether
 * an initiation proved its source address.
 */
export class CookieChecker {
  private cur: MacKey;
  private prev: MacKey | null = null;
  private rotatedAt: number;
  private readonly sealKey: Uint8Array;
  private readonly input = new Uint8Array(18);
  private readonly cookie = new Uint8Array(COOKIE_LEN);

  constructor(
    ownXPublic: Uint8Array,
    private readonly clock: Clock,
    private readonly periodMs = COOKIE_ROTATE_MS,
    private readonly random: (n: number) => Uint8Array = randomBytes,
  ) {
    this.sealKey = cookieSealKey(ownXPublic);
    this.cur = macKey(this.random(32));
    this.rotatedAt = clock.now();
  }

  /** Whether buf[start, mac2Off) carries at mac2Off the mac2 of a cookie for src (current or previous secret). */
  checkMac2(buf: Uint8Array, start: number, mac2Off: number, src: SourceAddress): boolean {
    this.rotate();
    if (src.addr.length !== 16) return false;
    this.compute(this.cur, src);
    if (macVerify(macKey(this.cookie), buf, start, mac2Off, mac2Off)) return true;
    if (this.prev === null) return false;
    this.compute(this.prev, src);
    return macVerify(macKey(this.cookie), buf, start, mac2Off, mac2Off);
  }

  /**
   * Writes into out[0, 68) the cookie reply to the initiation whose sender index is receiverIndex and
   * whose mac1 is mac1[0, 16), from src. Returns the length.
   */
  writeReply(out: Uint8Array, receiverIndex: number, mac1: Uint8Array, src: SourceAddress, instanceId: number): number {
    this.rotate();
    writeHandshakeHeader(out, 0, MSG_COOKIE_REPLY, instanceId);
    writeU32(out, COOKIE_RECEIVER_OFF, receiverIndex);
    const nonce = this.random(COOKIE_NONCE_LEN);
    out.set(nonce, COOKIE_NONCE_OFF);
    this.compute(this.cur, src);
    xseal(this.sealKey, nonce, mac1, this.cookie, out, COOKIE_CT_OFF);
    this.cookie.fill(0);
    return COOKIE_REPLY_LEN;
  }

  private rotate(): void {
    const now = this.clock.now();
    const d = cookieRotation(this.rotatedAt, now, this.periodMs);
    if (d === 'keep') return;
    this.prev = d === 'rotate' ? this.cur : null;
    this.cur = macKey(this.random(32));
    this.rotatedAt = now;
  }

  private compute(key: MacKey, src: SourceAddress): void {
    this.input.set(src.addr.subarray(0, 16), 0);
    this.input[16] = (src.port >>> 8) & 0xff;
    this.input[17] = src.port & 0xff;
    mac(key, this.input, 0, 18, this.cookie, 0);
  }
}

/**
 * The initiator's side: the cookie each responder last sent, used for mac2 until COOKIE_JAR_TTL_MS
 * after it arrived. Bounded (COOKIE_JAR_MAX peers, oldest stored forgotten first).
 */
export class CookieJar {
  private readonly cookies = new Map<string, { cookie: Uint8Array; at: number }>();

  constructor(
    private readonly clock: Clock,
    private readonly ttlMs = COOKIE_JAR_TTL_MS,
    private readonly max = COOKIE_JAR_MAX,
  ) {}

  /**
   * Opens a cookie reply (decoded by decodeCookieReply) with the responder's cookieSealKey and the
   * mac1 of the initiation it answers; stores the cookie for peerId. False when it does not open.
   */
  accept(peerId: Uint8Array, sealKey: Uint8Array, buf: Uint8Array, view: CookieReplyView, sentMac1: Uint8Array): boolean {
    const nonce = buf.subarray(view.nonceOff, view.nonceOff + COOKIE_NONCE_LEN);
    const cookie = xopen(sealKey, nonce, sentMac1, buf, view.cookieOff, COOKIE_LEN + 16);
    if (cookie === null) return false;
    const k = idKey(peerId);
    this.cookies.delete(k);
    this.cookies.set(k, { cookie: Uint8Array.from(cookie), at: this.clock.now() });
    if (this.cookies.size > this.max) {
      const oldest = this.cookies.keys().next();
      if (oldest.done !== true) this.cookies.delete(oldest.value);
    }
    return true;
  }

  /** The cookie for peerId while it is fresh, else null (and an expired one is forgotten). */
  get(peerId: Uint8Array): Uint8Array | null {
    const k = idKey(peerId);
    const e = this.cookies.get(k);
    if (e === undefined) return null;
    if (this.clock.now() - e.at >= this.ttlMs) {
      e.cookie.fill(0);
      this.cookies.delete(k);
      return null;
    }
    return e.cookie;
  }

  get size(): number {
    return this.cookies.size;
  }
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a, 0);
  out.set(b, a.length);
  return out;
}
