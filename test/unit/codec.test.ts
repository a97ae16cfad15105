import { CERT_LEN } from '../../shared/membership.ts';
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { MAC_LEN, blake2s, mac, macKey } from '../../shared/crypto/blake2s.ts';
import { createEphemeral, deriveSessionKeys } from '../../shared/wire/handshake.ts';
import { ReplayWindow } from '../../shared/wire/replay.ts';
import { checkMac, decode, decodeBody, decodeHeader, encode } from '../../shared/wire/codec.ts';
import { HEADER_LEN, MAX_DATAGRAM, type ControlMessage } from '../../shared/wire/messages.ts';

const id = new Uint8Array(16).fill(7);
const key = macKey(new Uint8Array(32).fill(3));
const auth = { sid: 0x01020304, seq: 99, key };

const samples: ControlMessage[] = [
  { type: 'lookup', reqId: 1, hostId: id },
  { type: 'lookupReply', reqId: 2, hostId: id, ttl: 60, binding: null, prefs: [], cert: null },
  { type: 'lookupReply', reqId: 3, hostId: id, ttl: 60, binding: new Uint8Array(150).fill(1), prefs: [{ index: 1, priority: 200, weight: 3, up: true }], cert: new Uint8Array(CERT_LEN).fill(5) },
  { type: 'register', reqId: 4, binding: new Uint8Array(172).fill(2) },
  { type: 'registerReply', reqId: 5, hostId: id, seq: 1_764_000_000_123, status: 0, expiresIn: 180, refresh: 60 },
  { type: 'subscribe', reqId: 6, hostIds: [id, id] },
  { type: 'subscribeReply', reqId: 7, accepted: 2 },
  { type: 'unsubscribe', reqId: 8, hostIds: [id] },
  { type: 'unsubscribeReply', reqId: 9 },
  { type: 'push', pushId: 10, binding: new Uint8Array(100).fill(4), ttl: 30, prefs: [], cert: new Uint8Array(CERT_LEN).fill(6) },
  { type: 'pushAck', pushId: 11 },
];

/** Byte strings as hex, so Buffer and Uint8Array compare equal. */
function norm(x: unknown): unknown {
  if (x instanceof Uint8Array) return Buffer.from(x).toString('hex');
  if (Array.isArray(x)) return x.map(norm);
  if (x !== null && typeof x === 'object') return Object.fromEntries(Object.entries(x).map(([k, v]) => [k, norm(v)]));
  return x;
}

describe('control codec', () => {
  it('round-trips every session message with its MAC', () => {
    for (const m of samples) {
      const buf = encode(m, auth);
      expect(buf.length).toBeLessThanOrEqual(MAX_DATAGRAM);
      const d = decode(buf, (sid) => (sid === auth.sid ? key : undefined));
      expect(d.ok).toBe(true);
      if (!d.ok) continue;
      expect(d.msg.header).toEqual({ version: 1, type: buf[1], sid: auth.sid, seq: 99 });
      expect(norm(d.msg.msg)).toEqual(norm(m));
    }
  });

  it('round-trips the unauthenticated set-up messages', () => {
    const hello: ControlMessage = {
      type: 'hello',
      reqId: 1,
      hostId: id,
      prefixLen: 32,
      publicKey: new Uint8Array(32).fill(1),
      ephemeral: new Uint8Array(32).fill(2),
      nonce: new Uint8Array(16).fill(3),
      signature: new Uint8Array(64).fill(4),
      join: { inviteId: new Uint8Array(16).fill(5), expiresAt: 1_900_000_000, proof: new Uint8Array(16).fill(6) },
      cookie: new Uint8Array(16).fill(7),
    };
    const d = decode(encode(hello, null), () => undefined);
    expect(d.ok && norm(d.msg.msg)).toEqual(norm(hello));
    const rej: ControlMessage = { type: 'reject', reqId: 0, code: 1, sid: 5 };
    const r = decode(encode(rej, null), () => undefined);
    expect(r.ok && r.msg.msg).toEqual(rej);
  });

  it('refuses to send a session message without a session', () => {
    expect(() => encode(samples[0], null)).toThrow(/needs a session/);
  });

  it('drops with a reason: size, version, type, session, MAC, body', () => {
    const good = encode(samples[0], auth);
    expect(decodeHeader(good.subarray(0, 5))).toEqual({ ok: false, reason: 'tooShort' });
    expect(decodeHeader(Buffer.alloc(MAX_DATAGRAM + 1, 1))).toEqual({ ok: false, reason: 'tooLong' });
    const v2 = Buffer.from(good);
    v2[0] = 2;
    expect(decodeHeader(v2)).toEqual({ ok: false, reason: 'badVersion' });
    const t = Buffer.from(good);
    t[1] = 99;
    expect(decodeHeader(t)).toEqual({ ok: false, reason: 'badType' });
    const nosid = Buffer.from(good);
    nosid.writeUInt32BE(0, 2);
    expect(decodeHeader(nosid)).toEqual({ ok: false, reason: 'badSession' });
    const flipped = Buffer.from(good);
    flipped[HEADER_LEN] ^= 1;
    expect(checkMac(flipped, key)).toBe(false);
    expect(decode(flipped, () => key)).toEqual({ ok: false, reason: 'badMac' });
    expect(decode(good, () => macKey(new Uint8Array(32)))).toEqual({ ok: false, reason: 'badMac' });
    const h = decodeHeader(good);
    expect(h.ok).toBe(true);
    if (h.ok) expect(decodeBody(h.msg, Buffer.concat([good.subarray(0, HEADER_LEN), Buffer.from([0xc1]), Buffer.alloc(MAC_LEN)]))).toEqual({ ok: false, reason: 'malformed' });
  });

  it('never throws on random or mutated input', () => {
    const seeds = samples.map((m) => encode(m, auth));
    for (let i = 0; i < 20_000; i++) {
      let buf: Buffer;
      if (i % 2 === 0) buf = randomBytes(Math.floor(Math.random() * 80));
      else {
        buf = Buffer.from(seeds[i % seeds.length]);
        for (let j = 0; j < 3; j++) buf[Math.floor(Math.random() * buf.length)] = Math.floor(Math.random() * 256);
      }
      expect(() => decode(buf, () => key)).not.toThrow();
      const h = decodeHeader(buf);
      if (h.ok) expect(() => decodeBody(h.msg, buf)).not.toThrow();
    }
  });
});

describe('keyed BLAKE2s MAC', () => {
  it('matches node (unkeyed) and Python hashlib (keyed) on every length around block edges', () => {
    const lens = [1, 2, 55, 63, 64, 65, 127, 128, 129, 300, 1232];
    const k = Buffer.from(Array.from({ length: 32 }, (_, i) => i));
    const py = `import hashlib,sys
k=bytes(range(32))
for n in [${lens.join(',')}]:
    d=bytes(((i*7+3)&255) for i in range(n))
    print(hashlib.blake2s(d,key=k,digest_size=16).hexdigest())`;
    let expected: string[] | null = null;
    try {
      expected = execFileSync('python3', ['-c', py], { encoding: 'utf8' }).trim().split('\n');
    } catch {
      expected = null; // no python3: the unkeyed comparison below still runs
    }
    lens.forEach((n, i) => {
      const d = Buffer.alloc(n);
      for (let j = 0; j < n; j++) d[j] = (j * 7 + 3) & 255;
      expect(Buffer.from(blake2s(d)).toString('hex')).toBe(createHash('blake2s256').update(d).digest('hex'));
      const out = new Uint8Array(16);
      mac(macKey(k), d, 0, n, out, 0);
      expect(Buffer.from(out).toString('hex')).toBe(Buffer.from(blake2s(d, 16, k)).toString('hex'));
      if (expected) expect(Buffer.from(out).toString('hex')).toBe(expected[i]);
    });
  });

  it('RFC 7693 appendix B: BLAKE2s-256("abc")', () => {
    expect(Buffer.from(blake2s(Buffer.from('abc'))).toString('hex')).toBe('508c5e8c327c14e2e1a72ba34eeb452f37458b209ed63a294d999b4c86675982');
  });
});

describe('session keys and replay window', () => {
  it('both sides derive the same keys; a different share gives different keys', () => {
    const c = createEphemeral();
    const r = createEphemeral();
    const ctx = { sid: 9, clientHostId: id, clientEphemeral: c.publicKey, rmEphemeral: r.publicKey, nonce: new Uint8Array(16) };
    const kc = deriveSessionKeys(c, r.publicKey, ctx);
    const kr = deriveSessionKeys(r, c.publicKey, ctx);
    expect(kc && kr).toBeTruthy();
    const msg = encode(samples[0], { sid: 9, seq: 1, key: kc!.c2s });
    expect(checkMac(msg, kr!.c2s)).toBe(true);
    expect(checkMac(msg, kr!.s2c)).toBe(false);
    expect(deriveSessionKeys(c, new Uint8Array(32), ctx)).toBeNull();
  });

  it('accepts each sequence number once, tolerates reordering, refuses what fell out of the window', () => {
    const w = new ReplayWindow();
    expect(w.check(1)).toBe(true);
    expect(w.check(1)).toBe(false);
    expect(w.check(5)).toBe(true);
    expect(w.check(3)).toBe(true);
    expect(w.check(3)).toBe(false);
    expect(w.check(0)).toBe(false);
    expect(w.check(5000)).toBe(true);
    expect(w.check(5)).toBe(false);
    expect(w.check(4999)).toBe(true);
    expect(w.check(3977)).toBe(true);
    expect(w.check(3976)).toBe(false);
  });
});
