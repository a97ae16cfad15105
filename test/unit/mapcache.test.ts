import { describe, expect, it } from 'vitest';
import { MapCache, newTraffic, type MapEntry } from '../../agent/mapcache/cache.ts';
import { hostIdBytes } from '../../shared/ids.ts';

function entry(id: string, tag = ''): MapEntry {
  return { hostId: id + tag, id: hostIdBytes(id), locators: [], path: null, source: 'static', createdAt: 0, expiresAt: Infinity, seq: 0, group: [], publicKey: null, traffic: newTraffic() };
}

function rmEntry(id: string): MapEntry {
  return { ...entry(id), source: 'rm', expiresAt: 1e15, seq: 1, traffic: newTraffic() };
}

describe('map-cache', () => {
  it('finds entries straight from packet bytes at any offset', () => {
    const c = new MapCache(10);
    c.set(entry('fd00:1::a'));
    c.set(entry('fd00:1::b'));
    const pkt = new Uint8Array(64);
    pkt.set(hostIdBytes('fd00:1::b'), 24);
    expect(c.lookup(pkt, 24)?.hostId).toBe('fd00:1::b');
    pkt[39] ^= 0x80;
    expect(c.lookup(pkt, 24)).toBeUndefined();
  });

  it('replaces an entry whole and keeps the count', () => {
    const c = new MapCache(10);
    c.set(entry('fd00:1::a', '-old'));
    c.set(entry('fd00:1::a', '-new'));
    expect(c.size).toBe(1);
    expect(c.lookup(hostIdBytes('fd00:1::a'), 0)?.hostId).toBe('fd00:1::a-new');
  });

  it('separates IDs that collide in the hash bucket', () => {
    // Same last eight bytes, different prefix: same hash, different IDs.
    const c = new MapCache(10);
    c.set(entry('fd00:1::a'));
    c.set(entry('fd00:2::a'));
    expect(c.size).toBe(2);
    expect(c.lookup(hostIdBytes('fd00:2::a'), 0)?.hostId).toBe('fd00:2::a');
    expect(c.lookup(hostIdBytes('fd00:1::a'), 0)?.hostId).toBe('fd00:1::a');
    expect(c.delete(hostIdBytes('fd00:1::a'))).toBe(true);
    expect(c.lookup(hostIdBytes('fd00:1::a'), 0)).toBeUndefined();
    expect(c.lookup(hostIdBytes('fd00:2::a'), 0)?.hostId).toBe('fd00:2::a');
    expect(c.size).toBe(1);
  });

  it('is bounded: a cache of pinned (static) entries refuses a new ID', () => {
    const c = new MapCache(2);
    expect(c.set(entry('fd00::1'))).toBe(true);
    expect(c.set(entry('fd00::2'))).toBe(true);
    expect(c.set(entry('fd00::3'))).toBe(false);
    expect(c.size).toBe(2);
    expect(c.evicted).toBe(0);
  });

  it('evicts the least recently used RM entry, by the traffic the data plane counts', () => {
    const c = new MapCache(3);
    const a = rmEntry('fd00:1::a');
    const b = rmEntry('fd00:1::b');
    const d = rmEntry('fd00:1::d');
    for (const e of [a, b, d]) expect(c.set(e)).toBe(true);
    // a and d carry traffic, b is idle.
    a.traffic.tx += 5;
    d.traffic.rx += 1;
    expect(c.set(rmEntry('fd00:1::e'))).toBe(true);
    expect(c.size).toBe(3);
    expect(c.evicted).toBe(1);
    expect(c.lookup(hostIdBytes('fd00:1::b'), 0)).toBeUndefined();
    for (const id of ['fd00:1::a', 'fd00:1::d', 'fd00:1::e']) expect(c.lookup(hostIdBytes(id), 0)?.hostId).toBe(id);
    // Next, a keeps sending; d and e go quiet: the victim is whichever of them the hand meets first,
    // never a.
    a.traffic.tx++;
    expect(c.set(rmEntry('fd00:1::f'))).toBe(true);
    expect(c.lookup(hostIdBytes('fd00:1::a'), 0)).toBeDefined();
    expect(c.lookup(hostIdBytes('fd00:1::f'), 0)).toBeDefined();
    expect(c.size).toBe(3);
    expect(c.evicted).toBe(2);
  });

  it('never evicts static peers, and lets them take the place of an RM entry', () => {
    const c = new MapCache(3);
    c.set(entry('fd00::1'));
    c.set(entry('fd00::2'));
    c.set(rmEntry('fd00:1::a'));
    // Many RM IDs come and go through the one evictable place; the static ones stay.
    for (let i = 0; i < 50; i++) expect(c.set(rmEntry(`fd00:1::${(i + 16).toString(16)}`))).toBe(true);
    expect(c.lookup(hostIdBytes('fd00::1'), 0)).toBeDefined();
    expect(c.lookup(hostIdBytes('fd00::2'), 0)).toBeDefined();
    expect(c.size).toBe(3);
    expect(c.evicted).toBe(50);
    // A static entry evicts the RM one; then the cache is all static and refuses.
    expect(c.set(entry('fd00::3'))).toBe(true);
    expect(c.set(rmEntry('fd00:1::ff'))).toBe(false);
    expect(c.entries().every((e) => e.source === 'static')).toBe(true);
  });

  it('keeps the recency of an ID across copy-on-write replacements of its entry', () => {
    const c = new MapCache(2);
    const a = rmEntry('fd00:1::a');
    c.set(a);
    c.set(rmEntry('fd00:1::b'));
    // The control plane swaps a's entry (new path, same traffic object), and a is in use.
    const a2 = Object.freeze({ ...a, seq: 2 });
    c.set(a2);
    a2.traffic.tx++;
    c.set(rmEntry('fd00:1::c'));
    expect(c.lookup(hostIdBytes('fd00:1::a'), 0)).toBe(a2);
    expect(c.lookup(hostIdBytes('fd00:1::b'), 0)).toBeUndefined();
  });

  it('looks up without allocating, full or not', () => {
    const c = new MapCache(64);
    for (let i = 0; i < 200; i++) c.set(rmEntry(`fd00:1::${(i + 1).toString(16)}`));
    const pkt = new Uint8Array(40);
    pkt.set(hostIdBytes('fd00:1::c8'), 24);
    expect(c.lookup(pkt, 24)?.hostId).toBe('fd00:1::c8');
    if (typeof globalThis.gc === 'function') globalThis.gc();
    const before = process.memoryUsage().heapUsed;
    let hits = 0;
    for (let i = 0; i < 200_000; i++) if (c.lookup(pkt, 24) !== undefined) hits++;
    expect(hits).toBe(200_000);
    // A per-call allocation of even 16 bytes would add ~3 MB here.
    expect(process.memoryUsage().heapUsed - before).toBeLessThan(1_000_000);
  });
});
