import { describe, expect, it } from 'vitest';
import { ManualClock } from '../../shared/clock.ts';
import { silentLogger } from '../../shared/log.ts';
import { generateKeyPair } from '../../shared/crypto/ed25519.ts';
import { deriveHostId, parsePrefix, type HostId } from '../../shared/ids.ts';
import { signBinding } from '../../shared/binding.ts';
import { RealmnetError } from '../../shared/errors.ts';
import { MapCache, boundLocator } from '../../agent/mapcache/cache.ts';
import { Resolver, type ResolverLookup } from '../../agent/rm/resolver.ts';
import type { BindingAnswer, LookupResult } from '../../agent/rm/answers.ts';
import type { UplinkView } from '../../agent/paths/rank.ts';
import { ipv6Packet } from '../helpers/packets.ts';

/** The resolver between the data plane's misses and the RM: bounded, never spinning, never moving traffic that is fine. */
const prefix = parsePrefix('fd00:1::/32');
const UPLINKS: UplinkView[] = [
  { family: 4, priority: 1, weight: 1, up: true },
  { family: 4, priority: 2, weight: 1, up: true },
];
const STRIDE = 2048;

function answerFor(seq = 1): { id: HostId; answer: BindingAnswer } {
  const key = generateKeyPair();
  const locators = [
    { address: '203.0.113.2', port: 4341, uplink: 'a', priority: 1, weight: 1, state: 'up' as const },
    { address: '203.0.113.3', port: 4341, uplink: 'b', priority: 1, weight: 1, state: 'up' as const },
  ];
  const binding = signBinding(key, { prefix, locators, seq, ttl: 60 });
  const id = deriveHostId(prefix, key.publicKey);
  return { id, answer: { kind: 'binding', hostId: id, binding, locators, ttl: 60, certNotAfter: Infinity } };
}

function setup(rm: ResolverLookup, batchSize = 64, missAgain = true) {
  const clock = new ManualClock(1_000_000);
  const cache = new MapCache(64);
  const reinjected: number[] = [];
  const res = new Resolver(
    { pendingPerId: 32, pendingTotal: 1024, refreshBeforeExpiryMs: 10_000, maxNegative: 64, negativeTtlMaxMs: 5_000, tunStride: STRIDE, tunHeadroom: 0, udpStride: STRIDE, batchSize },
    {
      rm,
      cache,
      uplinks: () => UPLINKS,
      clock,
      log: silentLogger,
      reinjectInside: (_buf, _lengths, count) => {
        reinjected.push(count);
        // The data plane misses again for anything still unbound: that is what a storm feeds on.
        if (missAgain) for (let i = 0; i < count; i++) miss(res, dst);
      },
      reinjectOutside: () => undefined,
    },
  );
  let dst = 'fd00:1::99';
  return { res, clock, cache, reinjected, setDst: (d: string) => void (dst = d) };
}

function miss(res: Resolver, dst: string): boolean {
  const p = ipv6Packet('fd00:1::1', dst, 16);
  return res.missInside(p, 0, p.length, 24);
}

/** A resolver whose RM never answers, holding one peer's binding pushed to it. */
function installedPeer() {
  const rm: ResolverLookup = { lookup: () => new Promise<LookupResult>(() => {}), subscribe: () => Promise.resolve(0), hasRoom: () => true };
  const t = setup(rm);
  const first = answerFor(1);
  t.res.applyPush(first.answer);
  const e = t.cache.lookup(first.id.toBytes(), 0);
  if (e === undefined) throw new Error('not installed');
  return { t, first, e };
}

const turns = async (n: number) => {
  for (let i = 0; i < n; i++) await new Promise<void>((r) => setImmediate(r));
};

describe('Resolver', () => {
  it('a lookup that fails at once does not become a lookup storm: the packets are dropped and the ID backs off', async () => {
    let lookups = 0;
    const rm: ResolverLookup = {
      lookup: () => {
        lookups++;
        return Promise.reject(new RealmnetError('RM_CLIENT_BUSY', 'busy'));
      },
      subscribe: () => Promise.resolve(0),
      hasRoom: () => true,
    };
    const t = setup(rm);
    for (let i = 0; i < 10; i++) miss(t.res, 'fd00:1::99');
    await turns(20);
    expect(lookups).toBe(1);
    expect(t.reinjected).toEqual([]);
    expect(t.res.counters.droppedAfterFailure).toBe(10);
    // Within the backoff no new lookup; after it, one.
    miss(t.res, 'fd00:1::99');
    expect(t.res.counters.backoffHits).toBe(1);
    t.clock.advance(1_001);
    miss(t.res, 'fd00:1::99');
    await turns(5);
    expect(lookups).toBe(2);
  });

  it('starts no lookup while the RM client has no room, and counts it', async () => {
    let lookups = 0;
    const rm: ResolverLookup = { lookup: () => (lookups++, new Promise<LookupResult>(() => {})), subscribe: () => Promise.resolve(0), hasRoom: () => false };
    const t = setup(rm);
    expect(miss(t.res, 'fd00:1::99')).toBe(false);
    await turns(2);
    expect(lookups).toBe(0);
    expect(t.res.counters.busy).toBe(1);
  });

  it('hands kept packets back on a later turn of the loop, in batches no larger than the data plane takes', async () => {
    const answers = [answerFor(), answerFor(), answerFor()];
    const rm: ResolverLookup = {
      lookup: (id) => Promise.resolve(answers.find((a) => a.id.equals(id))?.answer ?? { kind: 'negative', hostId: id, ttl: 5 }),
      subscribe: () => Promise.resolve(1),
      hasRoom: () => true,
    };
    const t = setup(rm, 16, false);
    for (const a of answers) for (let i = 0; i < 12; i++) miss(t.res, a.id.toString());
    // The answers arrive as microtasks; nothing goes back from within them.
    for (let i = 0; i < 10; i++) await Promise.resolve();
    expect(t.reinjected).toEqual([]);
    await turns(2);
    expect(t.reinjected.reduce((a, b) => a + b, 0)).toBe(36);
    expect(Math.max(...t.reinjected)).toBeLessThanOrEqual(16);
  });

  it('a new binding keeps the path in use while its locators are still up (no detour through the static choice)', () => {
    const { t, first, e } = installedPeer();
    // The static choice is uplink 0 (lower local priority); probing moved the peer to uplink 1.
    expect(e.path?.uplink).toBe(0);
    const probed = e.locators[1];
    t.cache.set(Object.freeze({ ...e, path: { uplink: 1, locator: probed } }));
    // The peer re-signs (say its third uplink came back): same locators, higher sequence number.
    t.res.applyDirect({ ...first.answer.binding, seq: 2 });
    const after = t.cache.lookup(first.id.toBytes(), 0);
    expect(after?.seq).toBe(2);
    expect(after?.path?.uplink).toBe(1);
    expect(after?.path?.locator.address).toBe(probed.address);
    expect(after?.traffic).toBe(e.traffic);
  });

  it('a new binding without the locator in use falls back to the static choice', () => {
    const { t, first, e } = installedPeer();
    t.cache.set(Object.freeze({ ...e, path: { uplink: 1, locator: boundLocator('203.0.113.3', 4341, 1, 1, true) } }));
    const down = first.answer.locators.map((l) => (l.address === '203.0.113.3' ? { ...l, state: 'down' as const } : l));
    t.res.applyPush({ ...first.answer, locators: down, binding: { ...first.answer.binding, seq: 3 } });
    expect(t.cache.lookup(first.id.toBytes(), 0)?.path?.locator.address).toBe('203.0.113.2');
  });

  it("never keeps a binding past its host's certificate, whatever its TTL", () => {
    const { t } = installedPeer();
    const p = answerFor(1);
    // The certificate ends in 20 s (wall clock); the binding's TTL is 60 s.
    t.res.applyPush({ ...p.answer, certNotAfter: Math.floor(Date.now() / 1000) + 20 });
    const e = t.cache.lookup(p.id.toBytes(), 0);
    expect(e).toBeDefined();
    expect((e?.expiresAt ?? 0) - t.clock.now()).toBeLessThanOrEqual(21_000);
    t.clock.advance(21_000);
    t.res.sweep(t.clock.now());
    expect(t.cache.lookup(p.id.toBytes(), 0)).toBeUndefined();
    expect(t.res.counters.certExpired).toBe(1);
  });

  it('a revoked peer is dropped and refused (misses, pushes, direct updates) until its certificate would end', async () => {
    let lookups = 0;
    const rm: ResolverLookup = { lookup: () => (lookups++, new Promise<LookupResult>(() => {})), subscribe: () => Promise.resolve(0), hasRoom: () => true };
    const t = setup(rm);
    const p = answerFor(1);
    t.res.applyPush(p.answer);
    t.res.revoke(p.id, Math.floor(Date.now() / 1000) + 3600);
    expect(t.cache.lookup(p.id.toBytes(), 0)).toBeUndefined();
    expect(miss(t.res, p.id.toString())).toBe(false);
    t.res.applyPush({ ...p.answer, binding: { ...p.answer.binding, seq: 2 } });
    expect(t.cache.lookup(p.id.toBytes(), 0)).toBeUndefined();
    await turns(2);
    expect(lookups).toBe(0);
    expect(t.res.counters.revokedHits).toBeGreaterThanOrEqual(2);
    expect(t.res.revokedCount()).toBe(1);
    t.clock.advance(3_601_000);
    t.res.sweep(t.clock.now());
    expect(t.res.revokedCount()).toBe(0);
  });

  it('refuses a direct update carrying another key than the entry the realm vouched for', () => {
    const { t, first } = installedPeer();
    const other = generateKeyPair();
    const forged = signBinding(other, { prefix, locators: first.answer.locators, seq: 9, ttl: 60 });
    t.res.applyDirect({ ...forged, hostId: first.id });
    expect(t.cache.lookup(first.id.toBytes(), 0)?.seq).toBe(1);
    expect(t.res.counters.directKeyChanged).toBe(1);
  });
});
