import { randomBytes } from 'node:crypto';
import { createSocket } from 'node:dgram';
import { Packr } from 'msgpackr';
import { afterEach, describe, expect, it } from 'vitest';
import { mac } from '../../shared/crypto/blake2s.ts';
import { generateKeyPair, type KeyPair } from '../../shared/crypto/ed25519.ts';
import { deriveHostId, parsePrefix } from '../../shared/ids.ts';
import { mintToken, type JoinToken } from '../../shared/membership.ts';
import { decodeBody, decodeHeader, encode, writeHeader } from '../../shared/wire/codec.ts';
import { signedHello } from '../../shared/wire/handshake.ts';
import { HEADER_LEN, MsgType, type ControlMessage } from '../../shared/wire/messages.ts';
import { bindingFor, rawSession, REALM_PREFIX, startHarness, type Harness } from './rm-harness.ts';

/**
 * Throws 100k random and mutated control datagrams at an in-process RM on 127.0.0.1: raw garbage,
 * mutated HELLOs, mutated session messages (bad MACs), and session messages with a valid MAC but
 * random or mutated bodies (so the body decoder and the handlers see junk too), and HELLOs with a
 * valid cookie (strangers, foreign tokens, bad signatures) that reach the membership gate and the
 * signature check. The RM must not
 * crash, must receive every datagram (sending is paced so the kernel drops none), and its counters
 * must add up: rx.datagrams = Σ rx.drop.* + Σ rx.handled.*.
 */
const TOTAL = 100_000;
const CHUNK = 200;

let h: Harness | null = null;
afterEach(async () => {
  await h?.close();
  h = null;
});

function sum(c: Record<string, number>, prefix: string): number {
  return Object.entries(c)
    .filter(([k]) => k.startsWith(prefix))
    .reduce((a, [, v]) => a + v, 0);
}

describe('RM fuzz', () => {
  it(`survives ${TOTAL} random and mutated datagrams and counts every one`, async () => {
    h = await startHarness({
      rateLimit: { perSessionPerS: 1_000_000, sessionBurst: 1_000_000, perPrefixPerS: 1_000_000, prefixBurst: 1_000_000, repliesPerS: 1_000_000 },
      registration: { perSessionPerS: 1_000_000, burst: 1_000_000 },
      sessions: { hellosPerS: 100 },
      subscriptions: { perSession: 64, total: 1000 },
    });
    const port = h.port;
    const s = await rawSession(h);
    const packr = new Packr({ useRecords: false });
    const sock = createSocket('udp4');
    await new Promise<void>((r) => sock.bind(0, '127.0.0.1', () => r()));
    // sock's HELLO cookie (the RM answers a HELLO without one with COOKIE), so that some of the
    // fuzz's HELLOs get past it to the membership gate and the signature check.
    let cookie: Uint8Array | null = null;
    sock.on('message', (buf) => {
      const hd = decodeHeader(buf);
      if (cookie !== null || !hd.ok || hd.msg.sid !== 0) return;
      const b = decodeBody(hd.msg, buf);
      if (b.ok && b.msg.type === 'cookie') cookie = Uint8Array.from(b.msg.cookie);
    });

    const id = s.hostId.toBytes();
    const binding = bindingFor(s.key, 1).bytes;
    const seeds: ControlMessage[] = [
      { type: 'lookup', reqId: 1, hostId: id },
      { type: 'register', reqId: 2, binding },
      { type: 'subscribe', reqId: 3, hostIds: [id] },
      { type: 'unsubscribe', reqId: 4, hostIds: [id] },
      { type: 'pushAck', pushId: 5 },
      { type: 'lookupReply', reqId: 6, hostId: id, ttl: 1, binding: null, prefs: [], cert: null },
    ];
    const hello = (await import('../../shared/wire/codec.ts')).encode(
      { type: 'hello', reqId: 1, hostId: id, prefixLen: 32, publicKey: s.key.publicKey, ephemeral: new Uint8Array(32).fill(9), nonce: new Uint8Array(16), signature: new Uint8Array(64), join: null, cookie: null },
      null,
    );
    sock.send(hello, port, '127.0.0.1');
    for (let i = 0; i < 200 && cookie === null; i++) await new Promise((r) => setTimeout(r, 10));
    if (cookie === null) throw new Error('no COOKIE for the fuzz socket');
    const prefix = parsePrefix(REALM_PREFIX);
    const withCookie = (k: KeyPair, o: { join?: JoinToken; badSignature?: boolean } = {}): Buffer => {
      const { hello: m } = signedHello(k, deriveHostId(prefix, k.publicKey).toBytes(), prefix.length, 1, { join: o.join ?? null, cookie });
      return Buffer.from(encode(o.badSignature ? { ...m, signature: new Uint8Array(64).fill(9) } : m, null));
    };
    const expiresAt = Math.floor(Date.now() / 1000) + 600;
    const cookied = [
      withCookie(generateKeyPair()), // a stranger: REJECT notMember
      withCookie(generateKeyPair(), { join: mintToken(generateKeyPair(), prefix, expiresAt) }), // another realm's token: REJECT badToken
      withCookie(s.key, { badSignature: true }), // a member, bad signature: dropped (hello.invalid)
      withCookie(generateKeyPair(), { join: mintToken(h.rmKey, prefix, expiresAt), badSignature: true }), // a good token, bad signature
    ];
    let seq = 1_000_000; // above anything the raw session used
    const sealed = (type: number, body: Uint8Array): Buffer => {
      const out = Buffer.alloc(HEADER_LEN + body.length + 16);
      writeHeader(out, type, s.sid, ++seq);
      out.set(body, HEADER_LEN);
      mac(s.keys.c2s, out, 0, out.length - 16, out, out.length - 16);
      return out;
    };
    const mutate = (b: Uint8Array): Buffer => {
      const m = Buffer.from(b);
      const n = 1 + Math.floor(Math.random() * 4);
      for (let i = 0; i < n; i++) m[Math.floor(Math.random() * m.length)] = Math.floor(Math.random() * 256);
      return Math.random() < 0.2 ? m.subarray(0, Math.floor(Math.random() * m.length)) : m;
    };
    const types = Object.values(MsgType);
    const make = (i: number): Buffer => {
      switch (i % 6) {
        case 0:
          return randomBytes(Math.floor(Math.random() * 1300));
        case 1: {
          // From sock (as cases 0 to 2 are): half with its cookie, to the gate, some of those mutated.
          if (i % 12 !== 1) return mutate(hello);
          const c = cookied[Math.floor(i / 12) % cookied.length];
          return Math.random() < 0.5 ? c : mutate(c);
        }
        case 2:
          return mutate(encode(seeds[i % seeds.length], { sid: s.sid, seq: ++seq, key: s.keys.c2s }));
        case 3: {
          // Valid MAC, body of random msgpack values.
          const vals = [null, 1, -1, 2 ** 40, 'x', randomBytes(16), [randomBytes(16)], { a: 1 }, [1, 2, 3], randomBytes(200)];
          const arr = Array.from({ length: Math.floor(Math.random() * 7) }, () => vals[Math.floor(Math.random() * vals.length)]);
          return sealed(types[Math.floor(Math.random() * types.length)], packr.pack(arr));
        }
        case 4: {
          // Valid MAC, a real body with a few bytes changed.
          const m = seeds[i % seeds.length];
          const body = encode(m, { sid: s.sid, seq: 1, key: s.keys.c2s }).subarray(HEADER_LEN, -16);
          return sealed(MsgType[m.type], mutate(body));
        }
        default:
          return sealed(types[Math.floor(Math.random() * types.length)], randomBytes(1 + Math.floor(Math.random() * 300)));
      }
    };

    const rx = () => h!.server.counters()['rx.datagrams'];
    const base = rx();
    let sent = 0;
    while (sent < TOTAL) {
      const n = Math.min(CHUNK, TOTAL - sent);
      // Valid-MAC junk (cases 3 to 5) comes half from the session's own address, so the body decoder
      // and the handlers see it, and half from another one, so it is dropped as unvalidated (with a
      // CHALLENGE now and then).
      for (let i = 0; i < n; i++) {
        const k = sent + i;
        (k % 6 >= 3 && k % 12 < 6 ? s.socket : sock).send(make(k), port, '127.0.0.1');
      }
      sent += n;
      const t0 = Date.now();
      while (rx() - base < sent) {
        if (Date.now() - t0 > 5000) break;
        await new Promise((r) => setImmediate(r));
      }
    }
    await new Promise((r) => setTimeout(r, 100));
    const c = h.server.counters();
    const drops = sum(c, 'rx.drop.');
    const handled = sum(c, 'rx.handled.');
    expect(c['rx.datagrams'] - base).toBe(TOTAL);
    expect(drops + handled).toBe(c['rx.datagrams']);
    expect(drops).toBeGreaterThan(TOTAL / 2);
    expect(c['rx.drop.malformed']).toBeGreaterThan(0);
    expect(c['rx.drop.badMac']).toBeGreaterThan(0);
    expect(c['rx.drop.unvalidated']).toBeGreaterThan(0);
    expect(c['challenge.sent']).toBeGreaterThan(0);
    // HELLOs got past the cookie to the membership gate and the signature check, and were refused.
    expect(c['cookie.accepted']).toBeGreaterThan(0);
    expect(c['hello.notMember']).toBeGreaterThan(0);
    expect(c['hello.badToken']).toBeGreaterThan(0);
    expect(c['hello.invalid']).toBeGreaterThan(0);
    expect(c['hello.joined']).toBe(0);
    expect(c['sessions.created']).toBe(1);
    // Still serving: a normal request gets its answer.
    // (Sent from the session's own socket with a fresh sequence number: the fuzz moved both.)
    s.sendRaw(encode({ type: 'lookup', reqId: 777, hostId: id }, { sid: s.sid, seq: ++seq, key: s.keys.c2s }));
    let got = await s.next();
    while (!(got.type === 'lookupReply' && got.reqId === 777)) got = await s.next();
    expect(got.type).toBe('lookupReply');
    sock.close();
    await s.close();
  }, 180_000);
});
