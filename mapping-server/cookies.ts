import { randomBytes } from 'node:crypto';
import { MAC_LEN, mac, macKey, type MacKey } from '../shared/crypto/blake2s.ts';
import { encode } from '../shared/wire/codec.ts';

/**
 * HELLO cookies (docs/security.md, decision 4 and "HELLO cookie"): the RM answers a HELLO without a
 * valid cookie with COOKIE, and a client that really is at the source address sends its HELLO again
 * with it. So WELCOME (larger than HELLO) only goes to an address that proved it receives, and a
 * spoofed HELLO flood costs one BLAKE2s per datagram: no state, no public-key work.
 *
 *   cookie = keyed BLAKE2s-128(secret, address text ‖ ":" ‖ port)
 *
 * The secret is 32 random bytes replaced every 120 s; the previous one is still accepted, so a
 * cookie lives 120 to 240 s (WireGuard's cookie secret changes every 2 minutes too). Nothing else is
 * kept: there is nothing to fill.
 */
export const COOKIE_ROTATE_MS = 120_000;

/** Pure: keep the secrets, rotate once (current → previous), or replace both (idle > 2 periods). */
export function cookieRotation(rotatedAt: number, now: number, periodMs: number): 'keep' | 'rotate' | 'reset' {
  const age = now - rotatedAt;
  if (age < periodMs) return 'keep';
  return age < 2 * periodMs ? 'rotate' : 'reset';
}

export class CookieJar {
  private cur: MacKey;
  private prev: MacKey | null = null;
  private rotatedAt: number;
  /** "address:port" is written here: an IPv6 address with a zone fits in 128 bytes. */
  private readonly text = Buffer.allocUnsafe(128);
  private readonly tag = new Uint8Array(MAC_LEN);

  constructor(
    now: number,
    private readonly periodMs = COOKIE_ROTATE_MS,
    private readonly random: (n: number) => Uint8Array = randomBytes,
  ) {
    this.cur = macKey(this.random(32));
    this.rotatedAt = now;
  }

  /** The cookie for address:port now (a fresh array: it goes into a COOKIE). */
  make(address: string, port: number, now: number): Uint8Array {
    this.rotate(now);
    const out = new Uint8Array(MAC_LEN);
    this.compute(this.cur, address, port, out);
    return out;
  }

  /** The COOKIE datagram answering a HELLO with reqId from address:port (at most 36 bytes). */
  answer(reqId: number, address: string, port: number, now: number): Buffer {
    return encode({ type: 'cookie', reqId, cookie: this.make(address, port, now) }, null);
  }

  /** Whether cookie is the one for address:port under the current or the previous secret. */
  check(cookie: Uint8Array, address: string, port: number, now: number): boolean {
    this.rotate(now);
    if (cookie.length !== MAC_LEN) return false;
    this.compute(this.cur, address, port, this.tag);
    if (equal16(this.tag, cookie)) return true;
    if (this.prev === null) return false;
    this.compute(this.prev, address, port, this.tag);
    return equal16(this.tag, cookie);
  }

  private rotate(now: number): void {
    const d = cookieRotation(this.rotatedAt, now, this.periodMs);
    if (d === 'keep') return;
    this.prev = d === 'rotate' ? this.cur : null;
    this.cur = macKey(this.random(32));
    this.rotatedAt = now;
  }

  private compute(key: MacKey, address: string, port: number, out: Uint8Array): void {
    const t = this.text;
    // Longer text than any real address: cut, which only makes the cookie fail for that sender.
    let n = t.write(address, 0, t.length - 6, 'latin1');
    t[n++] = 0x3a; // ':'
    n += t.write(String(port), n, 'latin1');
    mac(key, t, 0, n, out, 0);
  }
}

/** Constant-time comparison of two 16-byte tags. */
function equal16(a: Uint8Array, b: Uint8Array): boolean {
  let d = 0;
  for (let i = 0; i < MAC_LEN; i++) d |= a[i] ^ b[i];
  return d === 0;
}
