import { randomBytes } from 'node:crypto';
import { createSocket, type Socket } from 'node:dgram';
import { afterEach, describe, expect, it } from 'vitest';
import { generateKeyPair } from '../../shared/crypto/ed25519.ts';
import { mac } from '../../shared/crypto/blake2s.ts';
import { deriveHostId, parsePrefix } from '../../shared/ids.ts';
import { decodeBody, decodeHeader, encode, writeHeader } from '../../shared/wire/codec.ts';
import { signedHello } from '../../shared/wire/handshake.ts';
import { HEADER_LEN, MsgType, RegisterStatus, type ControlMessage } from '../../shared/wire/messages.ts';
import type { ControlSocket } from '../../mapping-server/sessions.ts';
import { openUdpSocket, type OnDatagram } from '../../mapping-server/udp.ts';
import { bindingFor, rawSession, REALM_PREFIX, startHarness, type Harness } from './rm-harness.ts';

/**
 * The RM under abuse (docs/security.md, decisions 4 and 5): the HELLO cookie, return routability,
 * no amplification towards a spoofed victim, spoofed floods against established sessions, quotas.
 *
 * Spoofed sources are simulated in process: the harness's socket is wrapped so that the test can hand
 * the RM's entry a datagram "from" any address, and everything the RM sends to an address other
 * than 127.0.0.1 is recorded instead of sent.
 */
let h: Harness | null = null;
const closers: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of closers.splice(0)) await c();
  await h?.close();
  h = null;
});

interface Spoofing {
  /** The RM's entry, as the socket calls it. */
  readonly entry: OnDatagram;
  readonly socket: ControlSocket;
  /** What the RM sent to addresses other than 127.0.0.1, by "address:port" (datagrams kept). */
  readonly sentTo: Map<string, Buffer[]>;
}

async function spoofingHarness(extra: Record<string, unknown> = {}): Promise<{ h: Harness; spoof: Spoofing }> {
  const sentTo = new Map<string, Buffer[]>();
  let wrapped: ControlSocket | undefined;
  let entry: OnDatagram | undefined;
  const harness = await startHarness(extra, undefined, {
    openSocket: async (address, port, onDatagram, onFault) => {
      entry = onDatagram;
      // Every datagram, real or injected, names the same socket object (sessions compare it).
      const real = await openUdpSocket(address, port, (b, a, p) => onDatagram(b, a, p, w), onFault);
      const w: ControlSocket = {
        local: real.local,
        send(buf, p, a, length = buf.length) {
          if (a === '127.0.0.1') return real.send(buf, p, a, length);
          const k = `${a}:${p}`;
          const list = sentTo.get(k) ?? [];
          list.push(Buffer.from(buf.subarray(0, length)));
          sentTo.set(k, list);
        },
        oversize: () => real.oversize?.() ?? 0,
        close: () => real.close(),
      };
      wrapped = w;
      return w;
    },
  });
  if (entry === undefined || wrapped === undefined) throw new Error('harness not set up as asked');
  return { h: harness, spoof: { entry, socket: wrapped, sentTo } };
}

function sum(c: Record<string, number>, prefix: string): number {
  return Object.entries(c)
    .filter(([k]) => k.startsWith(prefix))
    .reduce((a, [, v]) => a + v, 0);
}

const tick = () => new Promise((r) => setImmediate(r));

/** A UDP "NAT" between a client and the RM whose outside port can change (NAT rebinding). */
async function nat(rmPort: number): Promise<{ port: number; rebind(): Promise<void>; close(): Promise<void> }> {
  const bind = async (): Promise<Socket> => {
    const s = createSocket('udp4');
    await new Promise<void>((r) => s.bind(0, '127.0.0.1', () => r()));
    return s;
  };
  const inside = await bind();
  let client: { address: string; port: number } | null = null;
  let outside: Socket;
  const attach = async () => {
    outside = await bind();
    outside.on('message', (m) => {
      if (client) inside.send(m, client.port, client.address);
    });
  };
  await attach();
  inside.on('message', (m, r) => {
    client = { address: r.address, port: r.port };
    outside.send(m, rmPort, '127.0.0.1');
  });
  return {
    port: inside.address().port,
    async rebind() {
      const old = outside;
      await attach();
      old.close();
    },
    async close() {
      inside.close();
      outside.close();
    },
  };
}

describe('RM: HELLO cookie', () => {
  it('answers a HELLO without a valid cookie with a smaller COOKIE, and the HELLO with it with WELCOME', async () => {
    h = await startHarness();
    const sock = createSocket('udp4');
    await new Promise<void>((r) => sock.bind(0, '127.0.0.1', () => r()));
    closers.push(() => new Promise((r) => sock.close(() => r())));
    const inbox: Buffer[] = [];
    sock.on('message', (m) => inbox.push(m));
    const next = async (): Promise<{ buf: Buffer; msg: ControlMessage }> => {
      for (let i = 0; i < 200 && inbox.length === 0; i++) await new Promise((r) => setTimeout(r, 10));
      const buf = inbox.shift();
      if (buf === undefined) throw new Error('no answer');
      const hd = decodeHeader(buf);
      if (!hd.ok) throw new Error(hd.reason);
      const b = decodeBody(hd.msg, buf);
      if (!b.ok) throw new Error(b.reason);
      return { buf, msg: b.msg };
    };
    const key = generateKeyPair();
    // A member: the cookie comes first for anyone, and then only a member's HELLO gets a WELCOME.
    await h.admit(key);
    const prefix = parsePrefix(REALM_PREFIX);
    const id = deriveHostId(prefix, key.publicKey).toBytes();
    const first = encode(signedHello(key, id, prefix.length, 7).hello, null);
    sock.send(first, h.port, '127.0.0.1');
    const cookie = await next();
    expect(cookie.msg).toMatchObject({ type: 'cookie', reqId: 7 });
    expect(cookie.buf.length).toBeLessThan(first.length);
    if (cookie.msg.type !== 'cookie') throw new Error();
    // A made-up cookie gets a COOKIE again, not a WELCOME.
    sock.send(encode(signedHello(key, id, prefix.length, 8, { cookie: new Uint8Array(16) }).hello, null), h.port, '127.0.0.1');
    expect((await next()).msg).toMatchObject({ type: 'cookie', reqId: 8 });
    sock.send(encode(signedHello(key, id, prefix.length, 9, { cookie: cookie.msg.cookie }).hello, null), h.port, '127.0.0.1');
    expect((await next()).msg).toMatchObject({ type: 'welcome', reqId: 9 });
    const c = h.server.counters();
    expect(c['cookie.sent']).toBe(2);
    expect(c['cookie.stale']).toBe(1);
    expect(c['cookie.accepted']).toBe(1);
    expect(c['hello.welcome']).toBe(1);
  });

  it('a client goes through the cookie round trip by itself, and reuses the cookie for a new session', async () => {
    // One session per ID: a second client with the same key evicts the first one's session.
    h = await startHarness({ sessions: { perId: 1 } });
    const key = generateKeyPair();
    const c = await h.client({ key });
    expect(c.counters()['rx.handled.cookie']).toBe(1);
    expect(c.counters()['sessions.established']).toBe(1);
    expect((await c.lookup(c.hostId)).kind).toBe('negative');
    const before = h.server.counters()['cookie.sent'];
    await h.client({ key });
    expect(h.server.counters()['sessions.evicted']).toBe(1);
    // The evicted client is told (REJECT), sets up again, with the cookie it kept: no COOKIE this time.
    expect((await c.lookup(c.hostId)).kind).toBe('negative');
    expect(c.counters()['sessions.established']).toBe(2);
    expect(c.counters()['rx.handled.cookie']).toBe(1);
    expect(h.server.counters()['cookie.sent']).toBe(before + 1);
  });
});

describe('RM: return routability', () => {
  it('a session whose client changes port (NAT rebinding) keeps working, after a CHALLENGE', async () => {
    h = await startHarness();
    const n = await nat(h.port);
    closers.push(() => n.close());
    const c = await h.client({ rm: [{ address: '127.0.0.1', port: n.port, publicKey: h.rmKey.publicKey }] });
    expect((await c.lookup(c.hostId)).kind).toBe('negative');
    await n.rebind();
    expect((await c.lookup(c.hostId)).kind).toBe('negative');
    const s = h.server.counters();
    expect(s['challenge.sent']).toBeGreaterThanOrEqual(1);
    expect(s['challenge.moved']).toBe(1);
    expect(s['rx.drop.unvalidated']).toBeGreaterThanOrEqual(1);
    expect(s['sessions.created']).toBe(1);
    expect(c.counters()['rx.handled.challenge']).toBeGreaterThanOrEqual(1);
    // And keeps working there.
    expect((await c.lookup(c.hostId)).kind).toBe('negative');
  }, 20_000);

  it('a captured datagram sent with a victim source draws at most a smaller CHALLENGE there, and nothing moves', async () => {
    const { h: harness, spoof } = await spoofingHarness();
    h = harness;
    const s = await rawSession(h);
    let seq = 1_000_000;
    const captured = encode({ type: 'lookup', reqId: 1, hostId: s.hostId.toBytes() }, { sid: s.sid, seq: ++seq, key: s.keys.c2s });
    spoof.entry(captured, '203.0.113.9', 7777, spoof.socket);
    spoof.entry(captured, '203.0.113.9', 7777, spoof.socket); // again: a replay now
    spoof.entry(captured, '203.0.113.10', 7777, spoof.socket); // and to another victim
    const got = spoof.sentTo.get('203.0.113.9:7777') ?? [];
    expect(got.length).toBe(1);
    expect(got[0][1]).toBe(MsgType.challenge);
    expect(got[0].length).toBeLessThanOrEqual(captured.length);
    expect(spoof.sentTo.get('203.0.113.10:7777')).toBeUndefined();
    // A forged echo from the victim's address (the token is unknown there) moves nothing.
    spoof.entry(encode({ type: 'challengeReply', token: new Uint8Array(16) }, { sid: s.sid, seq: ++seq, key: s.keys.c2s }), '203.0.113.9', 7777, spoof.socket);
    // The session still answers at its own address, and only there (sequence numbers above ours).
    s.sendRaw(encode({ type: 'lookup', reqId: 2, hostId: s.hostId.toBytes() }, { sid: s.sid, seq: ++seq, key: s.keys.c2s }));
    expect(await s.next()).toMatchObject({ type: 'lookupReply', reqId: 2 });
    const c = h.server.counters();
    expect(c['rx.drop.unvalidated']).toBe(2);
    expect(c['rx.drop.replay']).toBe(2);
    expect(c['challenge.badReply']).toBe(1);
    expect(c['challenge.moved']).toBe(0);
    expect(spoof.sentTo.get('203.0.113.9:7777')?.length).toBe(1);
    await s.close();
  });

  it('a message shorter than a CHALLENGE from a new address draws nothing', async () => {
    const { h: harness, spoof } = await spoofingHarness();
    h = harness;
    const s = await rawSession(h);
    const ack = encode({ type: 'pushAck', pushId: 1 }, { sid: s.sid, seq: 1_000_000, key: s.keys.c2s });
    expect(ack.length).toBeLessThan(47);
    spoof.entry(ack, '203.0.113.9', 7777, spoof.socket);
    expect(spoof.sentTo.size).toBe(0);
    expect(h.server.counters()['challenge.tooShort']).toBe(1);
    await s.close();
  });
});

describe('RM: no amplification, spoofed floods', () => {
  it('sends a spoofed victim no more bytes than it "received" from it, over 10,000 random and mutated datagrams', async () => {
    const { h: harness, spoof } = await spoofingHarness({
      rateLimit: { perPrefixPerS: 1_000_000, prefixBurst: 1_000_000, repliesPerS: 1_000_000 },
      sessions: { hellosPerS: 1_000_000 },
    });
    h = harness;
    const s = await rawSession(h);
    const key = generateKeyPair();
    const prefix = parsePrefix(REALM_PREFIX);
    const id = deriveHostId(prefix, key.publicKey).toBytes();
    const hellos = [
      encode(signedHello(key, id, prefix.length, 1).hello, null),
      encode(signedHello(key, id, prefix.length, 0xffffffff, { cookie: randomBytes(16) }).hello, null),
    ];
    let seq = 1_000_000;
    const seeds: ControlMessage[] = [
      { type: 'lookup', reqId: 1, hostId: id },
      { type: 'register', reqId: 2, binding: bindingFor(s.key, 1).bytes },
      { type: 'subscribe', reqId: 3, hostIds: [id] },
      { type: 'pushAck', pushId: 4 },
      { type: 'challengeReply', token: randomBytes(16) },
    ];
    const mutate = (b: Uint8Array): Buffer => {
      const m = Buffer.from(b);
      const n = 1 + Math.floor(Math.random() * 4);
      for (let i = 0; i < n; i++) m[Math.floor(Math.random() * m.length)] = Math.floor(Math.random() * 256);
      return Math.random() < 0.2 ? m.subarray(0, Math.floor(Math.random() * m.length)) : m;
    };
    const sealed = (type: number, body: Uint8Array, sid: number): Buffer => {
      const out = Buffer.alloc(HEADER_LEN + body.length + 16);
      writeHeader(out, type, sid, ++seq);
      out.set(body, HEADER_LEN);
      mac(s.keys.c2s, out, 0, out.length - 16, out, out.length - 16);
      return out;
    };
    const types = Object.values(MsgType);
    const make = (i: number): Buffer => {
      switch (i % 8) {
        case 0:
          return randomBytes(1 + Math.floor(Math.random() * 1232));
        case 1:
          return hellos[i % 2];
        case 2:
          return mutate(hellos[i % 2]);
        case 3: // captured (valid MAC, fresh sequence number), sent with the victim's source
          return encode(seeds[i % seeds.length], { sid: s.sid, seq: ++seq, key: s.keys.c2s });
        case 4:
          return mutate(encode(seeds[i % seeds.length], { sid: s.sid, seq: ++seq, key: s.keys.c2s }));
        case 5: // an unknown session: REJECT
          return sealed(types[Math.floor(Math.random() * types.length)], randomBytes(Math.floor(Math.random() * 40)), (s.sid + 1 + i) >>> 0 || 1);
        case 6:
          return sealed(types[Math.floor(Math.random() * types.length)], randomBytes(1 + Math.floor(Math.random() * 100)), s.sid);
        default: {
          const b = Buffer.from(hellos[0]);
          return b.subarray(0, HEADER_LEN + Math.floor(Math.random() * (b.length - HEADER_LEN)));
        }
      }
    };
    const victim = { address: '198.51.100.23', port: 5353 };
    let received = 0;
    for (let i = 0; i < 10_000; i++) {
      const d = make(i);
      received += d.length;
      spoof.entry(d, victim.address, victim.port, spoof.socket);
      if (i % 500 === 0) await tick();
    }
    const sent = spoof.sentTo.get(`${victim.address}:${victim.port}`) ?? [];
    const bytes = sent.reduce((a, b) => a + b.length, 0);
    const kinds = new Set(sent.map((b) => b[1]));
    expect(bytes).toBeLessThanOrEqual(received);
    // Only the three small answers ever went there (and each kind did).
    expect([...kinds].sort()).toEqual([MsgType.reject, MsgType.cookie, MsgType.challenge].sort());
    expect([...spoof.sentTo.keys()]).toEqual([`${victim.address}:${victim.port}`]);
    const c = h.server.counters();
    expect(c['sessions.created']).toBe(1);
    expect(sum(c, 'rx.drop.') + sum(c, 'rx.handled.')).toBe(c['rx.datagrams']);
    // The session never moved to the victim: it still answers at its own address.
    s.sendRaw(encode({ type: 'lookup', reqId: 99, hostId: id }, { sid: s.sid, seq: ++seq, key: s.keys.c2s }));
    let got = await s.next();
    while (!(got.type === 'lookupReply' && got.reqId === 99)) got = await s.next();
    await s.close();
  }, 60_000);

  it('a spoofed flood (HELLOs, unknown and known sessions, the agent\'s own address among the sources) leaves established sessions\' lookups unaffected', async () => {
    const { h: harness, spoof } = await spoofingHarness({
      rateLimit: { perPrefixPerS: 50, prefixBurst: 50, maxPrefixes: 256, repliesPerS: 500, perSessionPerS: 2000, sessionBurst: 2000 },
      sessions: { hellosPerS: 50 },
    });
    h = harness;
    const a = await rawSession(h);
    const b = await rawSession(h);
    const key = generateKeyPair();
    const prefix = parsePrefix(REALM_PREFIX);
    const id = deriveHostId(prefix, key.publicKey).toBytes();
    const hello = encode(signedHello(key, id, prefix.length, 1).hello, null);
    const forged = (sid: number) => {
      const out = Buffer.concat([Buffer.from(encode({ type: 'lookup', reqId: 1, hostId: id }, { sid, seq: 5, key: a.keys.c2s }))]);
      out[out.length - 1] ^= 1;
      return out;
    };
    const source = (i: number): [string, number] =>
      i % 4 === 0 ? ['127.0.0.1', a.socket.address().port] : [`10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`, 1000 + (i % 60000)];
    let answered = 0;
    const rounds = 40;
    for (let r = 0; r < rounds; r++) {
      for (let i = 0; i < 2000; i++) {
        const k = r * 2000 + i;
        const [addr, port] = source(k);
        const d = k % 3 === 0 ? hello : k % 3 === 1 ? forged((a.sid + 7 + k) >>> 0 || 1) : forged(k % 2 ? a.sid : b.sid);
        spoof.entry(d, addr, port, spoof.socket);
      }
      for (const s of [a, b]) s.send({ type: 'lookup', reqId: r, hostId: id });
      for (const s of [a, b]) {
        const m = await s.next();
        if (m.type === 'lookupReply' && m.reqId === r) answered++;
      }
    }
    expect(answered).toBe(2 * rounds);
    const c = h.server.counters();
    expect(c['rx.drop.rateLimited']).toBeGreaterThan(0);
    expect(c['ratelimit.session']).toBe(0);
    expect(c['sessions.created']).toBe(2);
    expect(c['ratelimit.prefixes']).toBeLessThanOrEqual(256);
    await a.close();
    await b.close();
  }, 60_000);
});

describe('RM: per-session REGISTER rate', () => {
  it('a session gets its burst of registrations, then the rate', async () => {
    h = await startHarness({ registration: { perSessionPerS: 1, burst: 5 } });
    const s = await rawSession(h);
    for (let i = 1; i <= 12; i++) s.send({ type: 'register', reqId: i, binding: bindingFor(s.key, i).bytes });
    let ok = 0;
    for (;;) {
      try {
        const m = await s.next(500);
        if (m.type === 'registerReply' && m.status === RegisterStatus.ok) ok++;
      } catch {
        break;
      }
    }
    expect(ok).toBeGreaterThanOrEqual(5);
    expect(ok).toBeLessThanOrEqual(6);
    expect(h.server.counters()['ratelimit.register']).toBeGreaterThanOrEqual(6);
    await s.close();
  });
});
