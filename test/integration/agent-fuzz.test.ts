import { randomBytes } from 'node:crypto';
import type { Socket } from 'node:dgram';
import { createConnection } from 'node:net';
import { Packr } from 'msgpackr';
import { afterEach, describe, expect, it } from 'vitest';
import { newControlCounters, queryControl, startControlServer } from '../../agent/control.ts';
import { createRmClient, type RmClient } from '../../agent/rm/client.ts';
import { signBinding, type Binding } from '../../shared/binding.ts';
import { deriveHostId, parsePrefix, type HostId } from '../../shared/ids.ts';
import { generateKeyPair, signBytes } from '../../shared/crypto/ed25519.ts';
import { encode } from '../../shared/wire/codec.ts';
import { HEADER_LEN, MsgType, type ControlMessage } from '../../shared/wire/messages.ts';
import { LOCATORS, REALM_PREFIX } from './rm-harness.ts';
import { until } from '../helpers/fake-agent.ts';
import { ScriptedRm, bound } from './rm-scripted.ts';

/**
 * The agent's side of the fuzz (the RM's is rm-fuzz.test.ts): 100k random and mutated control
 * datagrams at the agent's RM client, 100k random and mutated requests at its local control socket.
 *
 * The client talks to a scripted RM on 127.0.0.1 (this test), which sets up a real session (signed
 * WELCOME, X25519, session keys), so the fuzz reaches every stage of the client: source check, header,
 * session, MAC, replay window, msgpack body, and the binding checks behind them (pushes and answers
 * with forged, mismatched and replayed bindings, valid MAC). The client must not crash, must count
 * every datagram (rx.datagrams = Σ rx.drop.* + Σ rx.handled.*), must never deliver a binding that does
 * not verify, and must still work afterwards.
 */
const TOTAL = Number(process.env.FUZZ_TOTAL ?? 100_000);
const CHUNK = 200;
const prefix = parsePrefix(REALM_PREFIX);

function sum(c: Record<string, number>, p: string): number {
  return Object.entries(c)
    .filter(([k]) => k.startsWith(p))
    .reduce((a, [, v]) => a + v, 0);
}

let cleanup: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const f of cleanup.reverse()) await f();
  cleanup = [];
});

describe('agent fuzz', () => {
  it(`the RM client survives ${TOTAL} random and mutated datagrams, counts every one, delivers no bad binding, and still works`, async () => {
    const rm = new ScriptedRm(await bound(), generateKeyPair());
    const stranger = await bound();
    cleanup.push(async () => {
      rm.sock.close();
      stranger.close();
    });
    const delivered: Binding[] = [];
    // The client's socket, with room for a whole chunk of the fuzz: with the default receive buffer
    // (~200 KB) the kernel drops some of 200 datagrams of up to 1,300 bytes, and then they are not
    // the client's to count.
    const own = await bound();
    own.setRecvBufferSize(4 << 20);
    cleanup.push(async () => {
      own.close();
    });
    const client: RmClient = createRmClient({
      socket: own,
      rm: [{ address: '127.0.0.1', port: rm.port, publicKey: rm.key.publicKey }],
      key: generateKeyPair(),
      prefix,
      retransmit: { initialMs: 50, maxMs: 400, attempts: 5 },
      onPush: (a) => delivered.push(a.binding),
    });
    await client.start();
    cleanup.push(() => client.stop());

    // A peer the client follows, with bindings seq 1..3 (the client has seen seq 2 before the fuzz).
    const peerKey = generateKeyPair();
    const peer: HostId = deriveHostId(prefix, peerKey.publicKey);
    const peerBinding = (seq: number) => signBinding(peerKey, { prefix, locators: LOCATORS, seq, ttl: 300 });
    const b1 = peerBinding(1);
    const b2 = peerBinding(2);
    rm.serve(b2);
    expect(await client.subscribe([peer])).toBe(1);
    expect((await client.lookup(peer)).kind).toBe('binding');

    // Bindings that must never be delivered: a broken signature, a key that does not hash to the ID,
    // the replayed older one.
    const badSig = Buffer.from(peerBinding(10).bytes);
    badSig[badSig.length - 1] ^= 1;
    const otherKey = generateKeyPair();
    const mismatched = Buffer.from(signBinding(otherKey, { prefix, locators: LOCATORS, seq: 11, ttl: 300 }).bytes);
    Buffer.from(peer.toBytes()).copy(mismatched, 4); // the peer's ID over another key (re-signed below)
    const mismatchedSigned = Buffer.concat([mismatched.subarray(0, -64), signBytes(otherKey, mismatched.subarray(0, -64))]);
    const bad = [badSig, mismatchedSigned, b1.bytes];

    const packr = new Packr({ useRecords: false });
    const mutate = (b: Uint8Array): Buffer => {
      const m = Buffer.from(b);
      const n = 1 + Math.floor(Math.random() * 4);
      for (let i = 0; i < n; i++) m[Math.floor(Math.random() * m.length)] = Math.floor(Math.random() * 256);
      return Math.random() < 0.2 ? m.subarray(0, Math.floor(Math.random() * m.length)) : m;
    };
    const id = peer.toBytes();
    const seeds = (): ControlMessage[] => [
      { type: 'lookupReply', reqId: 1, hostId: id, ttl: 60, binding: b2.bytes, prefs: [], cert: null },
      { type: 'push', pushId: 7, binding: b2.bytes, ttl: 60, prefs: [{ index: 0, priority: 1, weight: 1, up: true }], cert: rm.certFor(b2.bytes) },
      { type: 'registerReply', reqId: 2, hostId: id, seq: 1, status: 0, expiresIn: 180, refresh: 60 },
      { type: 'subscribeReply', reqId: 3, accepted: 1 },
      { type: 'unsubscribeReply', reqId: 4 },
    ];
    const types = Object.values(MsgType);
    let forgedSent = 0;
    // Sent from the RM's own address and port unless said otherwise: only that reaches past the
    // source check.
    const make = (i: number): { buf: Buffer; from: Socket } => {
      const from = rm.sock;
      switch (i % 8) {
        case 0:
          return { buf: randomBytes(Math.floor(Math.random() * 1300)), from };
        case 1: {
          // Unauthenticated types, mutated: WELCOME (late or forged) and REJECT.
          const s = rm.session as NonNullable<ScriptedRm['session']>;
          const w = encode({ type: 'welcome', reqId: 1, sid: s.sid, rmPublicKey: rm.key.publicKey, ephemeral: randomBytes(32), signature: randomBytes(64), cert: randomBytes(197) }, null);
          const r = encode({ type: 'reject', reqId: 0, code: 1, sid: (s.sid ^ 1) >>> 0 }, null);
          return { buf: mutate(Math.random() < 0.5 ? w : r), from };
        }
        case 2: {
          const all = seeds();
          return { buf: mutate(rm.encode(all[i % all.length])), from };
        }
        case 3: {
          // Valid MAC, a body of random msgpack values under a random type.
          const vals = [null, 1, -1, 2 ** 40, 'x', randomBytes(16), [randomBytes(16)], { a: 1 }, [1, 2, 3], randomBytes(200), b2.bytes];
          const arr = Array.from({ length: Math.floor(Math.random() * 7) }, () => vals[Math.floor(Math.random() * vals.length)]);
          return { buf: rm.sealed(types[Math.floor(Math.random() * types.length)], packr.pack(arr)), from };
        }
        case 4: {
          // Valid MAC, a real body with a few bytes changed (bindings inside get corrupted too).
          const all = seeds();
          const m = all[i % all.length];
          const body = encode(m, { sid: 1, seq: 1, key: (rm.session as NonNullable<ScriptedRm['session']>).keys.s2c }).subarray(HEADER_LEN, -16);
          return { buf: rm.sealed(MsgType[m.type], mutate(body)), from };
        }
        case 5:
          return { buf: rm.sealed(types[Math.floor(Math.random() * types.length)], randomBytes(1 + Math.floor(Math.random() * 300))), from };
        case 6: {
          // Valid MAC, well-formed push or answer carrying a forged, mismatched or replayed binding.
          forgedSent++;
          const binding = bad[i % bad.length];
          const m: ControlMessage =
            Math.random() < 0.5
              ? { type: 'push', pushId: i, binding, ttl: 60, prefs: [], cert: rm.certFor(binding) }
              : { type: 'lookupReply', reqId: i, hostId: id, ttl: 60, binding, prefs: [], cert: null };
          return { buf: rm.encode(m), from };
        }
        default:
          // A real answer, but from another port: the source check drops it.
          return { buf: rm.encode(seeds()[0]), from: stranger };
      }
    };

    const rx = () => client.counters()['rx.datagrams'];
    const base = rx();
    // The scripted RM's own answers during the fuzz (a new WELCOME when a mutated REJECT happened to
    // name the session, answers to the re-subscription that follows) arrive on top of the fuzz.
    const answersBefore = rm.sent;
    const deliveredBefore = delivered.length;
    let sent = 0;
    while (sent < TOTAL) {
      const n = Math.min(CHUNK, TOTAL - sent);
      for (let i = 0; i < n; i++) {
        const { buf, from } = make(sent + i);
        from.send(buf, rm.clientPort, '127.0.0.1');
      }
      sent += n;
      const t0 = Date.now();
      while (rx() - base < sent + rm.sent - answersBefore) {
        if (Date.now() - t0 > 5000) {
          if (process.env.FUZZ_DEBUG) console.log('stalled', sent, rx() - base, client.counters());
          break;
        }
        await new Promise((r) => setImmediate(r));
      }
    }
    await new Promise((r) => setTimeout(r, 100));
    const c = client.counters();
    expect(c['rx.datagrams'] - base).toBe(TOTAL + rm.sent - answersBefore);
    expect(sum(c, 'rx.drop.') + sum(c, 'rx.handled.')).toBe(c['rx.datagrams']);
    for (const k of ['rx.drop.wrongSource', 'rx.drop.header', 'rx.drop.badMac', 'rx.drop.malformed', 'rx.handled.push', 'binding.forged', 'binding.stale']) {
      expect(c[k], k).toBeGreaterThan(0);
    }
    expect(c['binding.forged'] + c['binding.stale'] + c['binding.mismatch'] + c['binding.keyChanged']).toBeGreaterThanOrEqual(forgedSent / 2);
    // Every binding delivered during the fuzz verifies and is the current one (seq 2, the same bytes).
    for (const b of delivered.slice(deliveredBefore)) expect(Buffer.from(b.bytes).equals(Buffer.from(b2.bytes))).toBe(true);

    // Still works: a new binding is looked up, and a push of a newer one is delivered.
    const b3 = peerBinding(3);
    rm.serve(b3);
    const a = await client.lookup(peer);
    expect(a.kind === 'binding' && a.binding.seq).toBe(3);
    const b4 = peerBinding(4);
    rm.send(rm.encode({ type: 'push', pushId: 999_999, binding: b4.bytes, ttl: 60, prefs: [], cert: rm.certFor(b4.bytes) }));
    await until(() => delivered.some((b) => b.seq === 4));
  }, 180_000);

  it('the control socket survives 100k random and mutated requests, counts every one, and still answers', async () => {
    const path = `@realmnet-fuzz-${process.pid}`;
    const counters = newControlCounters();
    let served = 0;
    const server = await startControlServer(
      path,
      () => {
        served++;
        return { ok: true };
      },
      counters,
    );
    cleanup.push(() => new Promise((r) => server.close(() => r())));
    const N = 100_000;
    const PARALLEL = 64;
    const request = (i: number): Buffer => {
      switch (i % 6) {
        case 0:
          return randomBytes(Math.floor(Math.random() * 400));
        case 1: {
          const m = Buffer.from('status\n');
          m[Math.floor(Math.random() * m.length)] = Math.floor(Math.random() * 256);
          return m;
        }
        case 2:
          return Buffer.from('status'); // no newline: incomplete
        case 3:
          return Buffer.alloc(300 + Math.floor(Math.random() * 2000), 'x'); // too long
        case 4:
          return Buffer.concat([randomBytes(Math.floor(Math.random() * 40)), Buffer.from('\n')]);
        default:
          return Buffer.from('status\n');
      }
    };
    const one = (buf: Buffer): Promise<void> =>
      new Promise((resolve) => {
        const conn = createConnection(`\0${path.slice(1)}`);
        conn.on('error', () => resolve());
        conn.on('close', () => resolve());
        conn.on('data', () => {});
        conn.on('connect', () => conn.end(buf));
      });
    let next = 0;
    await Promise.all(
      Array.from({ length: PARALLEL }, async () => {
        while (next < N) await one(request(next++));
      }),
    );
    // Every connection ends in exactly one counter; the refusals (over 8 at once, say) are ends too.
    const ends = (): number => counters.ok + counters.unknown + counters.tooLong + counters.incomplete + counters.failed + counters.refusedPeer + counters.refusedBusy + counters.timedOut;
    await until(() => ends() === N);
    expect(counters.connections).toBe(N);
    expect(counters.ok).toBe(served);
    expect(counters.ok).toBeGreaterThanOrEqual(N / 6);
    for (const k of ['unknown', 'tooLong', 'incomplete'] as const) expect(counters[k], k).toBeGreaterThan(0);
    expect(counters.failed).toBe(0);
    expect(counters.refusedPeer).toBe(0); // all root, like the agent
    expect(await queryControl(path, 'status')).toEqual({ ok: true });
  }, 180_000);
});
