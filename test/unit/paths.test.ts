import { describe, expect, it } from 'vitest';
import { choosePath, type UplinkView } from '../../agent/paths/rank.ts';
import type { BoundLocator } from '../../agent/mapcache/cache.ts';
import { addressBytes, familyOf } from '../../shared/address.ts';

const loc = (address: string, priority: number, up = true): BoundLocator => ({ address, port: 4341, family: familyOf(address), bytes: addressBytes(address), priority, weight: 1, up });
const ul = (_name: string, family: 4 | 6, priority: number, up = true): UplinkView => ({ family, priority, weight: 1, up });

describe('choosePath', () => {
  it('prefers the remote priority, then the local one', () => {
    const p = choosePath([ul('a', 4, 2), ul('b', 4, 1)], [loc('203.0.113.9', 2), loc('203.0.113.2', 1)]);
    expect(p?.uplink).toBe(1);
    expect(p?.locator.address).toBe('203.0.113.2');
  });

  it('skips down uplinks and down locators', () => {
    const p = choosePath([ul('a', 4, 1, false), ul('b', 4, 2)], [loc('203.0.113.2', 1, false), loc('203.0.113.9', 2)]);
    expect(p).toMatchObject({ uplink: 1, locator: { address: '203.0.113.9' } });
  });

  it('only pairs matching address families', () => {
    expect(choosePath([ul('a', 4, 1)], [loc('2001:db8:c::2', 1)])).toBeNull();
    const p = choosePath([ul('a', 4, 1), ul('b', 6, 5)], [loc('2001:db8:c::2', 1)]);
    expect(p?.uplink).toBe(1);
  });
});
