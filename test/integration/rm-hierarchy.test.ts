import { afterEach, describe, expect, it } from 'vitest';
import { createSocket } from 'node:dgram';
import { generateKeyPair, signBytes, type KeyPair } from '../../shared/crypto/ed25519.ts';
import { deriveHostId, parsePrefix, type HostId } from '../../shared/ids.ts';
import { encode, rmAnswerSigned, rmQuerySigned, RM_QUERY_MIN } from '../../shared/wire/codec.ts';
import type { RmClient } from '../../agent/rm/client.ts';
import type { BindingAnswer } from '../../agent/rm/answers.ts';
import { until } from '../helpers/fake-agent.ts';
import { LOCATORS, bindingFor, startHarness, type Harness } from './rm-harness.ts';

/**
 * The realm hierarchy (docs/hierarchy.md) with five real RMs on loopback: top (fd00::/16) delegates
 * to two middles (fd00:1::/32, fd00:2::/32), each to one bottom realm (A fd00:1:a::/48, B
 * fd00:2:b::/48). Real RM clients in A and B; every RM ↔ RM message is real UDP.
 */
const P = { top: 'fd00::/16', mid1: 'fd00:1::/32', mid2: 'fd00:2::/32', a: 'fd00:1:a::/48', b: 'fd00:2:b::/48' };

let cleanup: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanup.reverse()) await c().catch(() => undefined);
  cleanup = [];
});

interface Tree {
  top: Harness;
  mid1: Harness;
  mid2: Harness;
  a: Harness;
  b: Harness;
}

const b64 = (k: KeyPair) => Buffer.from(k.publicKey).toString('base64');

/** Five RMs on 127.0.0.1, fixed random ports (each names the others before any starts). */
async function tree(o: { referralTtlS?: number; bPolicy?: Record<string, unknown>; bHierarchy?: Record<string, unknown> } = {}): Promise<Tree> {
  const base = 20_000 + Math.floor(Math.random() * 40_000);
  const port = { top: base, mid1: base + 1, mid2: base + 2, a: base + 3, b: base + 4 };
  const key = { top: generateKeyPair(), mid1: generateKeyPair(), mid2: generateKeyPair(), a: generateKeyPair(), b: generateKeyPair() };
  const rm = (n: keyof typeof port) => ({ rms: [{ address: '127.0.0.1', port: port[n] }], publicKey: b64(key[n]) });
  const root = rm('top');
  const h = { referralTtlS: o.referralTtlS ?? 3600, queryTimeoutMs: 100, queryAttempts: 2, negativeTtlS: 2 };
  const listen = (n: keyof typeof port) => [{ address: '127.0.0.1', port: port[n] }];
  const start = async (n: keyof typeof port, extra: Record<string, unknown>) => {
    const hh = await startHarness({ realm: n, prefix: P[n], listen: listen(n), ...extra }, undefined, { key: key[n] });
    cleanup.push(() => hh.close());
    return hh;
  };
  const top = await start('top', { hierarchy: { ...h, delegations: [{ prefix: P.mid1, name: 'mid1', ...rm('mid1') }, { prefix: P.mid2, name: 'mid2', ...rm('mid2') }] } });
  const mid1 = await start('mid1', { hierarchy: { ...h, root, delegations: [{ prefix: P.a, name: 'a', ...rm('a') }] } });
  const mid2 = await start('mid2', { hierarchy: { ...h, root, delegations: [{ prefix: P.b, name: 'b', ...rm('b') }] } });
  const a = await start('a', { hierarchy: { ...h, root }, policy: { lookup: { otherRealms: 'allow' } } });
  const b = await start('b', { hierarchy: { ...h, root, ...o.bHierarchy }, policy: o.bPolicy ?? { lookup: { otherRealms: 'allow' } } });
  // Each bottom RM finds its own chain from the top before it can ask on its hosts' behalf.
  await until(() => a.server.counters()['hierarchy.chainKnown'] === 1 && b.server.counters()['hierarchy.chainKnown'] === 1, 5000, 'both bottom RMs know their delegation chain');
  return { top, mid1, mid2, a, b };
}

interface Host {
  key: KeyPair;
  id: HostId;
  client: RmClient;
}

async function host(h: Harness, prefix: string, register = true, seq = 1): Promise<Host> {
  const key = generateKeyPair();
  const client = await h.client({ key, prefix: parsePrefix(prefix) });
  const id = deriveHostId(parsePrefix(prefix), key.publicKey);
  if (register) expect((await client.register(bindingFor(key, seq, { prefix }))).ok).toBe(true);
  return { key, id, client };
}

describe('the realm hierarchy', () => {
  it('an agent of realm A reaches a host of realm B by host ID through referrals; the second lookup is served from A\'s shared cache', async () => {
    const t = await tree();
    const a1 = await host(t.a, P.a);
    const a2 = await host(t.a, P.a);
    const b1 = await host(t.b, P.b);
    const r = await a1.client.lookup(b1.id);
    expect(r.kind).toBe('binding');
    const ans = r as BindingAnswer;
    expect(ans.hostId.equals(b1.id)).toBe(true);
    expect(ans.locators.map((l) => l.address)).toEqual(LOCATORS.map((l) => l.address));
    // B's certificate was checked against B's key, which A's RM endorsed for B's prefix only.
    expect(a1.client.counters()['endorse.accepted']).toBe(1);
    const ca = t.a.server.counters();
    expect(ca['hierarchy.referralsIn']).toBeGreaterThanOrEqual(2);
    expect(ca['hierarchy.bindingsIn']).toBe(1);
    expect(t.top.server.counters()['hierarchy.referralsOut']).toBeGreaterThanOrEqual(1);
    expect(t.mid2.server.counters()['hierarchy.referralsOut']).toBeGreaterThanOrEqual(1);
    // Another host of A: from the shared cache, no RM asked.
    const out = ca['hierarchy.queriesOut'];
    expect((await a2.client.lookup(b1.id)).kind).toBe('binding');
    expect(t.a.server.counters()['hierarchy.queriesOut']).toBe(out);
    expect(t.a.server.counters()['hierarchy.cacheHits']).toBe(1);
    // And the other way: B reaches A.
    expect((await b1.client.lookup(a1.id)).kind).toBe('binding');
  });

  it('applies B\'s location privacy to realm A as a whole: a rule naming A\'s prefix opens one host, the rest stay unknown', async () => {
    const b1Key = generateKeyPair();
    const b1Id = deriveHostId(parsePrefix(P.b), b1Key.publicKey);
    const t = await tree({ bPolicy: { lookup: { otherRealms: 'deny', rules: [{ askers: [P.a], targets: [b1Id.toString()] }] } } });
    const a1 = await host(t.a, P.a);
    const b1c = await t.b.client({ key: b1Key, prefix: parsePrefix(P.b) });
    expect((await b1c.register(bindingFor(b1Key, 1, { prefix: P.b }))).ok).toBe(true);
    const b2 = await host(t.b, P.b);
    expect((await a1.client.lookup(b1Id)).kind).toBe('binding');
    expect((await a1.client.lookup(b2.id)).kind).toBe('negative');
    expect(t.b.server.counters()['hierarchy.denied']).toBe(1);
    // Within B, the same-realm rule still lets b2 see b1.
    expect((await b2.client.lookup(b1Id)).kind).toBe('binding');
  });

  it('pushes a change of a mobile host across realms to the following RM and on to the agents that follow it', async () => {
    const t = await tree({ bPolicy: { lookup: { otherRealms: 'allow' }, classes: [{ targets: [P.b], class: 'mobile' }] } });
    const a1 = await host(t.a, P.a);
    const b1 = await host(t.b, P.b);
    expect((await a1.client.lookup(b1.id)).kind).toBe('binding');
    expect(await a1.client.subscribe([b1.id])).toBe(1);
    expect(t.b.server.counters()['hierarchy.follows']).toBe(1);
    const pushed: BindingAnswer[] = [];
    a1.client.onPush((x) => pushed.push(x));
    const moved = [{ ...LOCATORS[0], state: 'down' as const }, LOCATORS[1]];
    const t0 = performance.now();
    expect((await b1.client.register(bindingFor(b1.key, 2, { prefix: P.b, locators: moved }))).ok).toBe(true);
    await until(() => pushed.length > 0, 3000, 'the change pushed to a1');
    const ms = performance.now() - t0;
    expect(pushed[0].binding.seq).toBe(2);
    expect(pushed[0].locators[0].state).toBe('down');
    expect(ms).toBeLessThan(1000);
    expect(t.b.server.counters()['hierarchy.pushesOut']).toBe(1);
    await until(() => t.b.server.counters()['hierarchy.pushesAcked'] === 1, 2000, 'the push acknowledged');
    expect(t.a.server.counters()['hierarchy.pushesToHosts']).toBe(1);
  });

  it('a nomadic host is pulled (its class TTL, no follow); a learned failover burst makes it mobile: shorter TTL, followed', async () => {
    const t = await tree({ bHierarchy: { classes: { nomadic: { ttlS: 3 }, mobile: { ttlS: 2 } } } });
    const a1 = await host(t.a, P.a);
    const b1 = await host(t.b, P.b);
    const r = (await a1.client.lookup(b1.id)) as BindingAnswer;
    expect(r.kind).toBe('binding');
    expect(r.ttl).toBeLessThanOrEqual(3);
    expect(t.b.server.counters()['hierarchy.follows']).toBe(0);
    // A failover and its return within the hour: learned mobile.
    expect((await b1.client.register(bindingFor(b1.key, 2, { prefix: P.b }))).ok).toBe(true);
    expect((await b1.client.register(bindingFor(b1.key, 3, { prefix: P.b }))).ok).toBe(true);
    // A's cached answer lapses with the nomadic TTL; the next one comes with the mobile class.
    await new Promise((res) => setTimeout(res, 3100));
    const again = (await a1.client.lookup(b1.id)) as BindingAnswer;
    expect(again.kind).toBe('binding');
    expect(again.binding.seq).toBe(3);
    expect(again.ttl).toBeLessThanOrEqual(2);
    expect(t.b.server.counters()['hierarchy.follows']).toBe(1);
  });

  it('a host asking again for a binding it holds (its peer announced a newer one) makes its RM re-ask the authoritative RM', async () => {
    const t = await tree();
    const a1 = await host(t.a, P.a);
    const b1 = await host(t.b, P.b);
    expect(((await a1.client.lookup(b1.id)) as BindingAnswer).binding.seq).toBe(1);
    // A nomadic host: not pushed, so A's shared cache keeps seq 1 for its whole TTL...
    expect((await b1.client.register(bindingFor(b1.key, 2, { prefix: P.b }))).ok).toBe(true);
    expect(((await a1.client.lookup(b1.id)) as BindingAnswer).binding.seq).toBe(1);
    // ...unless a host that already got the answer asks again after REVALIDATE_MS (2 s).
    await new Promise((r) => setTimeout(r, 2100));
    expect(((await a1.client.lookup(b1.id)) as BindingAnswer).binding.seq).toBe(2);
    expect(t.a.server.counters()['hierarchy.revalidations']).toBe(1);
  });

  it('a middle RM killed: cached referrals keep working until their TTL, then a clear negative answer', async () => {
    const t = await tree({ referralTtlS: 2 });
    const a1 = await host(t.a, P.a);
    const b1 = await host(t.b, P.b);
    const b2 = await host(t.b, P.b);
    const b3 = await host(t.b, P.b);
    expect((await a1.client.lookup(b1.id)).kind).toBe('binding');
    await t.mid2.server.stop();
    // B's referral is cached at A: B is asked directly, the dead middle is not needed.
    expect((await a1.client.lookup(b2.id)).kind).toBe('binding');
    await new Promise((r) => setTimeout(r, 2300));
    const before = t.a.server.counters()['hierarchy.unreachable'];
    const r = await a1.client.lookup(b3.id);
    expect(r.kind).toBe('negative');
    if (r.kind === 'negative') expect(r.ttl).toBeLessThanOrEqual(2);
    expect(t.a.server.counters()['hierarchy.unreachable']).toBe(before + 1);
  });

  it('drops forged, short, skewed and malformed RM messages, counted, and keeps answering', async () => {
    const t = await tree();
    const a1 = await host(t.a, P.a);
    const b1 = await host(t.b, P.b);
    const port = t.b.port;
    const sock = createSocket('udp4');
    cleanup.push(() => new Promise<void>((r) => sock.close(() => r())));
    await new Promise<void>((r) => sock.bind(0, '127.0.0.1', () => r()));
    const send = (buf: Uint8Array) => new Promise<void>((r) => sock.send(buf, port, '127.0.0.1', () => r()));
    const stranger = generateKeyPair();
    const before = t.b.server.counters();
    // A query signed by a key no chain vouches for: a negative answer, no binding.
    const fields = { reqId: 7, id: b1.id.toBytes(), time: Math.floor(Date.now() / 1000), follow: true, chain: [] };
    const signed = rmQuerySigned(fields);
    const q = encode({ type: 'rmQuery', ...fields, signed, signature: signBytes(stranger, signed) }, null);
    expect(q.length).toBeGreaterThanOrEqual(RM_QUERY_MIN);
    const answers: Buffer[] = [];
    sock.on('message', (m) => answers.push(m));
    await send(q);
    // Too short (unpadded), skewed by an hour, a forged answer nobody asked for, garbage.
    await send(q.subarray(0, 300));
    const old = { ...fields, time: fields.time - 3600 };
    const so = rmQuerySigned(old);
    await send(encode({ type: 'rmQuery', ...old, signed: so, signature: signBytes(stranger, so) }, null));
    const af = { reqId: 9, id: b1.id.toBytes(), kind: 0, ttl: 5, cls: 0, followed: false, referral: null, binding: null, cert: null, prefs: [] };
    const sa = rmAnswerSigned(af);
    await send(encode({ type: 'rmAnswer', ...af, signed: sa, signature: signBytes(stranger, sa) }, null));
    const junk = Buffer.alloc(RM_QUERY_MIN, 0xab);
    junk[0] = 1;
    junk[1] = 50;
    junk.fill(0, 2, 12);
    await send(junk);
    await until(() => t.b.server.counters()['rx.datagrams'] >= before['rx.datagrams'] + 5, 2000, 'all five received');
    const c = t.b.server.counters();
    expect(c['hierarchy.askerRefused']).toBe(before['hierarchy.askerRefused'] + 1);
    expect(c['rx.drop.tooShort']).toBe(before['rx.drop.tooShort'] + 1);
    expect(c['hierarchy.queriesSkewed']).toBe(before['hierarchy.queriesSkewed'] + 1);
    expect(c['hierarchy.answersLate']).toBe(before['hierarchy.answersLate'] + 1);
    expect(c['rx.drop.malformed']).toBe(before['rx.drop.malformed'] + 1);
    // The one answer (to the stranger's query) is negative and no larger than the query.
    await until(() => answers.length >= 1, 2000, 'the negative answer');
    expect(answers.length).toBe(1);
    expect(answers[0].length).toBeLessThanOrEqual(q.length);
    expect(answers[0].includes(Buffer.from(LOCATORS[0].address))).toBe(false);
    // Still answering real RMs.
    expect((await a1.client.lookup(b1.id)).kind).toBe('binding');
  });
});
