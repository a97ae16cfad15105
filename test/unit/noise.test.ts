import { createCipheriv, randomBytes } from 'node:crypto';
import { edwardsToMontgomeryPriv, edwardsToMontgomeryPub } from '@noble/curves/ed25519';
import { describe, expect, it } from 'vitest';
import { ManualClock } from '../../shared/clock.ts';
import { generateKeyPair, privateSeed, type KeyPair } from '../../shared/crypto/ed25519.ts';
import { deriveHostId, parsePrefix } from '../../shared/ids.ts';
import { issueCertificate } from '../../shared/membership.ts';
import { admitConfigured, admitMembers } from '../../agent/sessions/admit.ts';
import { COOKIE_JAR_TTL_MS, COOKIE_ROTATE_MS, mac1Key, writeMacs } from '../../agent/sessions/cookie.ts';
import {
  COOKIE_REPLY_LEN,
  INITIATION_CERT_LEN,
  INITIATION_LEN,
  MAX_HANDSHAKE_LEN,
  MSG_INITIATION,
  RESPONSE_LEN,
  decodeCookieReply,
  decodeInitiation,
  decodeResponse,
  encodeIdentity,
  handshakeType,
  receiverIndexOf,
  writeHandshakeHeader,
  writeU32,
} from '../../agent/sessions/handshake-wire.ts';
import { Handshaker, type LocalIdentity, type PeerIdentity } from '../../agent/sessions/noise.ts';
import { dh, generateEphemeral, hash2, hchacha20, hkdf2, seal, x25519Private, x25519Public, xopen, xseal } from '../../agent/sessions/primitives.ts';
import { TimestampSource } from '../../agent/sessions/timestamps.ts';

const IID = 0x0a0b0c;
const PREFIX = parsePrefix('fd00:1::/32');
const realm = generateKeyPair();

interface Host {
  kp: KeyPair;
  me: LocalIdentity;
}

function host(opts: { cert?: boolean; instanceId?: number; realmKey?: KeyPair } = {}): Host {
  const kp = generateKeyPair();
  const id = deriveHostId(PREFIX, kp.publicKey);
  const cert =
    opts.cert === false
      ? null
      : issueCertificate(opts.realmKey ?? realm, { hostId: id, prefixLen: 32, publicKey: kp.publicKey, serial: 1, notBefore: 0, notAfter: 0xffff_fff0 }).bytes;
  return { kp, me: { id: id.toBytes(), edSeed: privateSeed(kp), edPublic: kp.publicKey, cert, instanceId: opts.instanceId ?? IID } };
}

const nowS = () => Math.floor(Date.now() / 1000);
const members = admitMembers(() => [realm.publicKey], nowS);

function hs(h: Host, clock: { now(): number } = { now: () => Date.now() }, admit: (p: PeerIdentity) => boolean = members): Handshaker {
  return new Handshaker(h.me, { now: () => clock.now(), admit });
}

const SRC = { addr: Uint8Array.from([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 0, 2, 1]), port: 4341 };
const SRC2 = { addr: Uint8Array.from([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 0, 2, 2]), port: 4341 };
const peerOf = (h: Host) => ({ id: h.me.id, edPublic: h.me.edPublic });
const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');

/** One full handshake; fails the test when it does not complete. */
function handshake(ia: Handshaker, rb: Handshaker, b: Host, idx = 1) {
  const m1 = Buffer.alloc(MAX_HANDSHAKE_LEN);
  const m2 = Buffer.alloc(MAX_HANDSHAKE_LEN);
  const { len, pending } = ia.initiate(peerOf(b), idx, m1);
  const r = rb.onInitiation(m1, 0, len, SRC, idx + 100, false, m2);
  if (r.kind !== 'response') throw new Error(`responder: ${JSON.stringify(r)}`);
  const c = ia.onResponse(pending, m2, 0, r.len);
  if (c.kind !== 'keys') throw new Error(`initiator: ${c.reason}`);
  return { init: c, resp: r, m1: m1.subarray(0, len), m2: m2.subarray(0, r.len) };
}

describe('Noise IK handshake', () => {
  const A = host();
  const B = host();

  it('gives both sides matching, distinct transport keys, fresh on every handshake', () => {
    const ia = hs(A);
    const rb = hs(B);
    const one = handshake(ia, rb, B);
    expect(hex(one.init.keys.send)).toBe(hex(one.resp.keys.recv));
    expect(hex(one.init.keys.recv)).toBe(hex(one.resp.keys.send));
    expect(hex(one.init.keys.send)).not.toBe(hex(one.init.keys.recv));
    expect(one.init.remoteIndex).toBe(101);
    expect(one.resp.remoteIndex).toBe(1);
    expect(hex(one.resp.peer.id)).toBe(hex(A.me.id));
    expect(hex(one.resp.peer.edPublic)).toBe(hex(A.me.edPublic));
    expect(hex(one.resp.peer.cert as Uint8Array)).toBe(hex(A.me.cert as Uint8Array));
    const two = handshake(ia, rb, B);
    // Same two static keys, new ephemerals: nothing repeats.
    expect(hex(two.init.keys.send)).not.toBe(hex(one.init.keys.send));
    expect(hex(two.init.keys.recv)).not.toBe(hex(one.init.keys.recv));
    expect(hex(two.m1.subarray(12, 44))).not.toBe(hex(one.m1.subarray(12, 44)));
    expect(one.m1.length).toBe(INITIATION_CERT_LEN);
    expect(one.m2.length).toBe(RESPONSE_LEN);
    expect(ia.stats.completed).toBe(2);
    expect(rb.stats.completed).toBe(2);
  });

  it('works without a certificate (static-config peer) with a 170-byte initiation', () => {
    const S = host({ cert: false });
    const rb = hs(B, undefined, admitConfigured(new Map([[Buffer.from(S.me.id).toString('latin1'), S.me.edPublic]])));
    const r = handshake(hs(S), rb, B);
    expect(r.m1.length).toBe(INITIATION_LEN);
    expect(r.resp.peer.cert).toBeNull();
  });

  it('a completed pending refuses a second response, and abandon() makes it unusable', () => {
    const ia = hs(A);
    const rb = hs(B);
    const { m2 } = handshake(ia, rb, B);
    const m1 = Buffer.alloc(MAX_HANDSHAKE_LEN);
    const { pending } = ia.initiate(peerOf(B), 1, m1);
    ia.abandon(pending);
    expect(ia.onResponse(pending, m2, 0, m2.length)).toEqual({ kind: 'drop', reason: 'consumed' });
  });

  it('refuses to build with a seed that does not belong to the public key', () => {
    expect(() => new Handshaker({ ...A.me, edSeed: B.me.edSeed }, { now: () => 0, admit: () => true })).toThrow(/does not belong/);
  });
});

/**
 * An initiator written from the Noise spec in the test, step by step, with the static X25519 key
 * chosen by the test: with the honest key it must be answered (so the construction is the spec's,
 * independently of noise.ts), with anyone else's it must not.
 */
function specInitiation(claim: Host, staticXPriv: Uint8Array, responder: Host, instanceId = IID): Buffer {
  const rs = edwardsToMontgomeryPub(responder.me.edPublic);
  const prologue = Buffer.concat([Buffer.from('realmnet v2'), Buffer.from([instanceId >> 16, (instanceId >> 8) & 0xff, instanceId & 0xff])]);
  let ck: Uint8Array = Buffer.from('Noise_IK_25519_ChaChaPoly_SHA256');
  let h: Uint8Array = hash2(hash2(ck, prologue), rs);
  const rsKey = x25519Public(rs);
  const e = generateEphemeral();
  const sKey = x25519Private(staticXPriv, edwardsToMontgomeryPub(claim.me.edPublic));
  const ident = encodeIdentity(claim.me.id, claim.me.edPublic, claim.me.cert);
  const out = Buffer.alloc(44 + ident.length + 16 + 28 + 32);
  writeHandshakeHeader(out, 0, MSG_INITIATION, instanceId);
  writeU32(out, 8, 7);
  out.set(e.pub, 12);
  h = hash2(h, e.pub);
  let k: Uint8Array;
  [ck, k] = hkdf2(ck, dh(e.priv, rsKey!)!);
  seal(k, 0, h, ident, out, 44);
  h = hash2(h, out.subarray(44, 44 + ident.length + 16));
  [ck, k] = hkdf2(ck, dh(sKey, rsKey!)!);
  const tsOff = 44 + ident.length + 16;
  seal(k, 0, h, new TimestampSource().next(Date.now()), out, tsOff);
  writeMacs(mac1Key(rs), null, out, 0, tsOff + 28);
  return out;
}

describe('authentication', () => {
  const A = host();
  const B = host();
  const M = host(); // Mallory: a member too, with her own key

  it('the spec-built initiation with the real key is answered; with Mallory\'s key it is not', () => {
    const rb = hs(B);
    const out = Buffer.alloc(MAX_HANDSHAKE_LEN);
    const honest = specInitiation(A, edwardsToMontgomeryPriv(A.me.edSeed), B);
    expect(rb.onInitiation(honest, 0, honest.length, SRC, 1, false, out).kind).toBe('response');
    // Mallory knows every public key and claims A's identity, but can only do ss with her own secret.
    const forged = specInitiation(A, edwardsToMontgomeryPriv(M.me.edSeed), B);
    expect(rb.onInitiation(forged, 0, forged.length, SRC, 1, false, out)).toEqual({ kind: 'drop', reason: 'decryptFailed' });
  });

  it('a third party cannot complete a handshake from the response it sees', () => {
    const ia = hs(A);
    const rb = hs(B);
    const m1 = Buffer.alloc(MAX_HANDSHAKE_LEN);
    const m2 = Buffer.alloc(MAX_HANDSHAKE_LEN);
    const { len, pending } = ia.initiate(peerOf(B), 5, m1);
    const r = rb.onInitiation(m1, 0, len, SRC, 9, false, m2);
    expect(r.kind).toBe('response');
    // Mallory's own initiation to B with the same index: the response to A's does not complete it.
    const im = hs(M);
    const mine = im.initiate(peerOf(B), 5, Buffer.alloc(MAX_HANDSHAKE_LEN));
    expect(im.onResponse(mine.pending, m2, 0, RESPONSE_LEN)).toEqual({ kind: 'drop', reason: 'badMac1' });
    // Even with mac1 redone for her key (she knows both public keys), the AEAD refuses it.
    const t = Buffer.from(m2.subarray(0, RESPONSE_LEN));
    writeMacs(mac1Key(im.xPublic), null, t, 0, 64);
    expect(im.onResponse(mine.pending, t, 0, RESPONSE_LEN)).toEqual({ kind: 'drop', reason: 'decryptFailed' });
    // A's pending is untouched by that and still completes.
    expect(ia.onResponse(pending, m2, 0, RESPONSE_LEN).kind).toBe('keys');
  });

  it('a stranger (no certificate, or one from another realm) is refused by admit, which runs only after authentication', () => {
    const seen: string[] = [];
    const admit = (p: PeerIdentity) => {
      seen.push(hex(p.id));
      return members(p);
    };
    const rb = hs(B, undefined, admit);
    const out = Buffer.alloc(MAX_HANDSHAKE_LEN);
    for (const stranger of [host({ cert: false }), host({ realmKey: generateKeyPair() })]) {
      const m1 = Buffer.alloc(MAX_HANDSHAKE_LEN);
      const { len } = hs(stranger).initiate(peerOf(B), 1, m1);
      expect(rb.onInitiation(m1, 0, len, SRC, 1, false, out)).toEqual({ kind: 'drop', reason: 'notAdmitted' });
    }
    expect(seen.length).toBe(2);
    const forged = specInitiation(A, edwardsToMontgomeryPriv(M.me.edSeed), B);
    rb.onInitiation(forged, 0, forged.length, SRC, 1, false, out);
    expect(seen.length).toBe(2); // the forgery never reached admit
    // A member whose certificate names another key is refused too (certMatches).
 const thief = { ...host().me, cert: A.me.cert };
    const m1 = Buffer.alloc(MAX_HANDSHAKE_LEN);
    const { len } = new Handshaker(thief, { now: () => Date.now(), admit: () => true }).initiate(peerOf(B), 1, m1);
    expect(rb.onInitiation(m1, 0, len, SRC, 1, false, out)).toEqual({ kind: 'drop', reason: 'notAdmitted' });
  });

  it('an initiation for another responder key fails mac1 without any DH', () => {
    const C = host();
    const ia = hs(A);
    const rb = hs(B);
    const m1 = Buffer.alloc(MAX_HANDSHAKE_LEN);
    const { len } = ia.initiate(peerOf(C), 1, m1);
    const before = rb.stats.dh;
    expect(rb.onInitiation(m1, 0, len, SRC, 1, false, Buffer.alloc(MAX_HANDSHAKE_LEN))).toEqual({ kind: 'drop', reason: 'badMac1' });
    expect(rb.stats.dh).toBe(before);
    expect(rb.stats.drops.badMac1).toBe(1);
  });

  it('a replayed initiation (same timestamp) is refused as stale', () => {
    const ia = hs(A);
    const rb = hs(B);
    const { m1 } = handshake(ia, rb, B);
    const out = Buffer.alloc(MAX_HANDSHAKE_LEN);
    expect(rb.onInitiation(m1, 0, m1.length, SRC, 1, false, out)).toEqual({ kind: 'drop', reason: 'staleTimestamp' });
    // A new initiation, even in the same millisecond, is fresh.
    const fixed = { now: () => 1_700_000_000_000 };
    const ia2 = hs(A, fixed);
    const rb2 = hs(B, fixed);
    handshake(ia2, rb2, B);
    handshake(ia2, rb2, B);
  });

  it('another realm instance: refused by the header, and by the prologue when the header is rewritten', () => {
    const ia = hs(host({ instanceId: IID + 1 }));
    const rb = hs(B);
    const m1 = Buffer.alloc(MAX_HANDSHAKE_LEN);
    const { len } = ia.initiate(peerOf(B), 1, m1);
    const out = Buffer.alloc(MAX_HANDSHAKE_LEN);
    expect(rb.onInitiation(m1, 0, len, SRC, 1, false, out)).toEqual({ kind: 'drop', reason: 'wrongInstance' });
    writeHandshakeHeader(m1, 0, MSG_INITIATION, IID);
    writeMacs(mac1Key(rb.xPublic), null, m1, 0, len - 32);
    expect(rb.onInitiation(m1, 0, len, SRC, 1, false, out)).toEqual({ kind: 'drop', reason: 'decryptFailed' });
  });
});

describe('tampering and truncation', () => {
  const A = host();
  const B = host();

  it('a flipped bit anywhere in an initiation is dropped with the reason of the field', () => {
    const ia = hs(A);
    const m1 = Buffer.alloc(MAX_HANDSHAKE_LEN);
    const { len } = ia.initiate(peerOf(B), 1, m1);
    const msg = Buffer.from(m1.subarray(0, len));
    const mac1Off = len - 32;
    for (let i = 0; i < len; i++) {
      for (let bit = 0; bit < 8; bit++) {
        const rb = hs(B); // fresh: the original's timestamp is never recorded
        const t = Buffer.from(msg);
        t[i] ^= 1 << bit;
        const r = rb.onInitiation(t, 0, len, SRC, 1, i >= len - 16, Buffer.alloc(MAX_HANDSHAKE_LEN));
        const expected =
          i === 1 ? 'badType' : i < 4 || i === 7 ? 'badHeader' : i < 8 ? 'wrongInstance' : i < len - 16 ? 'badMac1' : 'badMac2';
        const got = r.kind === 'drop' ? r.reason : r.kind === 'cookie' ? r.reason : 'accepted';
        if (got !== expected) expect(`byte ${i} bit ${bit}: ${got}`).toBe(`byte ${i} bit ${bit}: ${expected}`);
        // An attacker knows B's public key and can redo mac1: then the AEADs catch it.
        if (i >= 12 && i < mac1Off) {
          writeMacs(mac1Key(rb.xPublic), null, t, 0, mac1Off);
          const r2 = rb.onInitiation(t, 0, len, SRC, 1, false, Buffer.alloc(MAX_HANDSHAKE_LEN));
          const got2 = r2.kind === 'drop' ? r2.reason : r2.kind;
          if (!['decryptFailed', 'badKey'].includes(got2)) expect(`byte ${i} bit ${bit} with mac1 redone: ${got2}`).toBe('decryptFailed');
        }
      }
    }
  });

  it('a flipped bit anywhere in a response is dropped', () => {
    const ia = hs(A);
    const rb = hs(B);
    const m1 = Buffer.alloc(MAX_HANDSHAKE_LEN);
    const m2 = Buffer.alloc(MAX_HANDSHAKE_LEN);
    const { len, pending } = ia.initiate(peerOf(B), 3, m1);
    const r = rb.onInitiation(m1, 0, len, SRC, 4, false, m2);
    expect(r.kind).toBe('response');
    for (let i = 0; i < RESPONSE_LEN; i++) {
      for (let bit = 0; bit < 8; bit++) {
        const t = Buffer.from(m2.subarray(0, RESPONSE_LEN));
        t[i] ^= 1 << bit;
        const c = ia.onResponse(pending, t, 0, RESPONSE_LEN);
        const expected =
          i === 1 ? 'badType' : i < 4 || i === 7 ? 'badHeader' : i < 8 ? 'wrongInstance' : i >= 12 && i < 16 ? 'wrongIndex' : i < 80 ? 'badMac1' : 'badMac2';
        const got = c.kind === 'drop' ? c.reason : 'accepted';
        if (got !== expected) expect(`byte ${i} bit ${bit}: ${got}`).toBe(`byte ${i} bit ${bit}: ${expected}`);
        if (i >= 16 && i < 64) {
          writeMacs(mac1Key(ia.xPublic), null, t, 0, 64);
          const c2 = ia.onResponse(pending, t, 0, RESPONSE_LEN);
          const got2 = c2.kind === 'drop' ? c2.reason : c2.kind;
          if (!['decryptFailed', 'badKey'].includes(got2)) expect(`byte ${i} bit ${bit} with mac1 redone: ${got2}`).toBe('decryptFailed');
        }
      }
    }
    // None of that spent the pending: the real response still completes it.
    expect(ia.onResponse(pending, m2, 0, RESPONSE_LEN).kind).toBe('keys');
  });

  it('every truncation, an extra byte, bad offsets and random garbage are dropped without throwing', () => {
    const ia = hs(A);
    const rb = hs(B);
    const { m1, m2 } = handshake(ia, rb, B);
    const m1Copy = Buffer.from(m1);
    const out = Buffer.alloc(MAX_HANDSHAKE_LEN);
    const { pending } = ia.initiate(peerOf(B), 101, Buffer.alloc(MAX_HANDSHAKE_LEN));
    for (let n = 0; n < m1.length; n++) {
      const r = rb.onInitiation(Buffer.from(m1Copy.subarray(0, n)), 0, n, SRC, 1, false, out);
      // Cut at 170, a certificate-carrying initiation has the length of one without: its mac1 fails.
      expect(r).toEqual({ kind: 'drop', reason: n === INITIATION_LEN ? 'badMac1' : 'truncated' });
    }
    for (let n = 0; n < m2.length; n++) {
      expect(ia.onResponse(pending, Buffer.from(m2.subarray(0, n)), 0, n)).toEqual({ kind: 'drop', reason: 'truncated' });
    }
    const longer = Buffer.concat([m1Copy, Buffer.alloc(1)]);
    expect(rb.onInitiation(longer, 0, longer.length, SRC, 1, false, out)).toEqual({ kind: 'drop', reason: 'truncated' });
    // len past the end of the buffer, negative or fractional offsets.
    expect(rb.onInitiation(m1Copy, 1, m1Copy.length, SRC, 1, false, out)).toEqual({ kind: 'drop', reason: 'truncated' });
    expect(rb.onInitiation(m1Copy, -1, 10, SRC, 1, false, out)).toEqual({ kind: 'drop', reason: 'truncated' });
    expect(decodeResponse(m2, 0.5, 96, IID).ok).toBe(false);
    for (let n = 0; n < COOKIE_REPLY_LEN + 2; n++) expect(ia.onCookieReply(pending, Buffer.alloc(n), 0, n)).toBe(false);
    // The message at an offset inside a larger buffer decodes the same.
    const shifted = Buffer.concat([Buffer.alloc(5), m2]);
    expect(decodeResponse(shifted, 5, m2.length, IID).ok).toBe(true);
    for (let k = 0; k < 3000; k++) {
      const n = k % (MAX_HANDSHAKE_LEN + 4);
      const g = randomBytes(n);
      if (n > 1 && k % 2 === 0) {
        g[0] = 0x29; // the handshake flags, so the type and length checks are reached
        g[1] = 1 + (k % 3);
      }
      expect(() => {
        rb.onInitiation(g, 0, n, SRC, 1, k % 4 === 0, out);
        ia.onResponse(pending, g, 0, n);
        ia.onCookieReply(pending, g, 0, n);
        decodeInitiation(g, 0, n, IID);
        decodeCookieReply(g, 0, n, IID);
        handshakeType(g, 0, n);
        receiverIndexOf(g, 0, n);
      }).not.toThrow();
    }
  });
});

describe('cookies under load', () => {
  const A = host();
  const B = host();

  it('under load: no mac2 → cookie reply and no DH; with the cookie → response', () => {
    const clock = new ManualClock(1_700_000_000_000);
    const ia = hs(A, clock);
    const rb = hs(B, clock);
    const m1 = Buffer.alloc(MAX_HANDSHAKE_LEN);
    const out = Buffer.alloc(MAX_HANDSHAKE_LEN);
    const first = ia.initiate(peerOf(B), 42, m1);
    const r = rb.onInitiation(m1, 0, first.len, SRC, 7, true, out);
    expect(r).toEqual({ kind: 'cookie', len: COOKIE_REPLY_LEN, reason: 'needCookie' });
    expect(rb.stats.dh).toBe(0);
    expect(COOKIE_REPLY_LEN).toBeLessThan(first.len); // no amplification
    expect(receiverIndexOf(out, 0, COOKIE_REPLY_LEN)).toBe(42);
    // A cookie reply answering another initiation (other mac1) does not open.
    const other = ia.initiate(peerOf(B), 42, Buffer.alloc(MAX_HANDSHAKE_LEN));
    expect(ia.onCookieReply(other.pending, out, 0, COOKIE_REPLY_LEN)).toBe(false);
    expect(ia.onCookieReply(first.pending, out, 0, COOKIE_REPLY_LEN)).toBe(true);
    const second = ia.initiate(peerOf(B), 43, m1);
    const r2 = rb.onInitiation(m1, 0, second.len, SRC, 8, true, out);
    expect(r2.kind).toBe('response');
    if (r2.kind !== 'response') return;
    expect(ia.onResponse(second.pending, out, 0, r2.len).kind).toBe('keys');
  });

  it('a cookie for another source address is refused (badMac2) and answered with a new cookie', () => {
    const clock = new ManualClock(1_700_000_000_000);
    const ia = hs(A, clock);
    const rb = hs(B, clock);
    const m1 = Buffer.alloc(MAX_HANDSHAKE_LEN);
    const out = Buffer.alloc(MAX_HANDSHAKE_LEN);
    const first = ia.initiate(peerOf(B), 1, m1);
    rb.onInitiation(m1, 0, first.len, SRC, 7, true, out);
    expect(ia.onCookieReply(first.pending, out, 0, COOKIE_REPLY_LEN)).toBe(true);
    const second = ia.initiate(peerOf(B), 2, m1);
    expect(rb.onInitiation(m1, 0, second.len, SRC2, 8, true, out)).toEqual({ kind: 'cookie', len: COOKIE_REPLY_LEN, reason: 'badMac2' });
    expect(rb.onInitiation(m1, 0, second.len, { addr: SRC.addr, port: SRC.port + 1 }, 8, true, out).kind).toBe('cookie');
    expect(rb.stats.dh).toBe(0);
    expect(rb.onInitiation(m1, 0, second.len, SRC, 8, true, out).kind).toBe('response');
  });

  it('cookies expire: the jar stops using one after its TTL, the responder refuses one after two rotations', () => {
    const clock = new ManualClock(1_700_000_000_000);
    const ia = hs(A, clock);
    const rb = hs(B, clock);
    const m1 = Buffer.alloc(MAX_HANDSHAKE_LEN);
    const out = Buffer.alloc(MAX_HANDSHAKE_LEN);
    const first = ia.initiate(peerOf(B), 1, m1);
    rb.onInitiation(m1, 0, first.len, SRC, 7, true, out);
    expect(ia.onCookieReply(first.pending, out, 0, COOKIE_REPLY_LEN)).toBe(true);
    // Just inside the jar's lifetime the cookie is used and accepted.
    clock.advance(COOKIE_JAR_TTL_MS - 1);
    const inside = ia.initiate(peerOf(B), 2, m1);
    const held = Buffer.from(m1.subarray(0, inside.len));
    expect(rb.onInitiation(m1, 0, inside.len, SRC, 8, true, out).kind).toBe('response');
    // Past it, initiations go out without mac2 again.
    clock.advance(1);
    const after = ia.initiate(peerOf(B), 3, m1);
    expect(rb.onInitiation(m1, 0, after.len, SRC, 9, true, out)).toEqual({ kind: 'cookie', len: COOKIE_REPLY_LEN, reason: 'needCookie' });
    // The responder itself refuses a cookie from two secrets ago (held message, its mac2 intact).
    clock.advance(2 * COOKIE_ROTATE_MS);
    const rb2Result = rb.onInitiation(held, 0, held.length, SRC, 8, true, out);
    expect(rb2Result).toEqual({ kind: 'cookie', len: COOKIE_REPLY_LEN, reason: 'badMac2' });
  });

  it('not under load, mac2 is not needed', () => {
    const ia = hs(A);
    const rb = hs(B);
    handshake(ia, rb, B);
    expect(rb.stats.cookieRepliesSent).toBe(0);
  });
});

describe('primitives', () => {
  it('HChaCha20 matches draft-irtf-cfrg-xchacha section 2.2.1', () => {
    const key = Buffer.from('000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f', 'hex');
    const n = Buffer.from('000000090000004a0000000031415927', 'hex');
    expect(hex(hchacha20(key, n))).toBe('82413b4227b27bfed30e42508a877d73a0f9e4d58a74a853c12ec41326d3ecdc');
  });

  it('XChaCha20-Poly1305 matches draft-irtf-cfrg-xchacha appendix A.3.1 and refuses a changed byte', () => {
    const plain = Buffer.from(
      "Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.",
      'latin1',
    );
    const ad = Buffer.from('50515253c0c1c2c3c4c5c6c7', 'hex');
    const key = Buffer.from('808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f', 'hex');
    const nonce = Buffer.from('404142434445464748494a4b4c4d4e4f5051525354555657', 'hex');
    const out = Buffer.alloc(plain.length + 16);
    xseal(key, nonce, ad, plain, out, 0);
    expect(hex(out.subarray(0, 32))).toBe('bd6d179d3e83d43b9576579493c0e939572a1700252bfaccbed2902c21396cbb');
    expect(hex(out.subarray(plain.length))).toBe('c0875924c1c7987947deafd8780acf49');
    expect(Buffer.from(xopen(key, nonce, ad, out, 0, out.length) as Uint8Array).equals(plain)).toBe(true);
    out[3] ^= 1;
    expect(xopen(key, nonce, ad, out, 0, out.length)).toBeNull();
  });

  it('rejects small-order public keys (all-zero DH)', () => {
    const e = generateEphemeral();
    for (const lo of [new Uint8Array(32), Uint8Array.from([1, ...new Uint8Array(31)])]) {
      const k = x25519Public(lo);
      expect(k === null || dh(e.priv, k) === null).toBe(true);
    }
  });

  it('ChaCha20-Poly1305 uses the Noise nonce (4 zero bytes, then the counter little endian)', () => {
    const key = randomBytes(32);
    const out = Buffer.alloc(16 + 16);
    seal(key, 0x0102, new Uint8Array(0), new Uint8Array(16), out, 0);
    const iv = Buffer.from('000000000201000000000000', 'hex');
    const c = createCipheriv('chacha20-poly1305', key, iv, { authTagLength: 16 });
    expect(hex(c.update(new Uint8Array(16)))).toBe(hex(out.subarray(0, 16)));
  });

  it('timestamps strictly increase, even within one millisecond', () => {
    const src = new TimestampSource();
    let prev = src.next(1000);
    for (let i = 0; i < 5; i++) {
      const t = src.next(1000);
      expect(Buffer.compare(Buffer.from(t), Buffer.from(prev))).toBe(1);
      prev = t;
    }
    expect(Buffer.compare(Buffer.from(src.next(999)), Buffer.from(prev))).toBe(1); // clock stepped back
  });
});

describe('rate', () => {
  it('measures full handshakes per second (initiate + respond + complete, one thread)', () => {
    const A = host();
    const B = host();
    const ia = hs(A);
    const rb = hs(B);
    handshake(ia, rb, B); // warm caches
    const n = 300;
    const t0 = performance.now();
    for (let i = 0; i < n; i++) handshake(ia, rb, B, i);
    const perS = n / ((performance.now() - t0) / 1000);
    console.log(`noise handshakes: ${perS.toFixed(0)}/s (${(1000 / perS).toFixed(2)} ms each, both sides on one thread); dh per handshake: ${(ia.stats.dh + rb.stats.dh) / (n + 1)}`);
    expect(perS).toBeGreaterThan(50);
  });
});
