import { describe, expect, it } from 'vitest';
import { MapCache, type MapEntry } from '../../agent/mapcache/cache.ts';
import { hostIdBytes } from '../../shared/locator.ts';

function entry(id: string, tag = ''): MapEntry {
  return { hostId: id + tag, id: hostIdBytes(id), locators: [], path: null, source: 'static', createdAt: 0, expiresAt: Infinity, seq: 0, group: [], publicKey: null, traffic: { tx: 0, rx: 0 } };
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

  it('is bounded', () => {
    const c = new MapCache(2);
    expect(c.set(entry('fd00::1'))).toBe(true);
    expect(c.set(entry('fd00::2'))).toBe(true);
    expect(c.set(entry('fd00::3'))).toBe(false);
    expect(c.size).toBe(2);
  });
});
