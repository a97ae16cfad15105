import { describe, expect, it } from 'vitest';
import { idKey, parseHostId } from '../../shared/ids.ts';

describe('idKey: the one key of ID-keyed maps', () => {
  const id = parseHostId('fd00:1::8a3f:1c2d:9e0b:4a71');

  it('a key made from packet bytes finds the entry made from a HostId', () => {
    const packet = new Uint8Array(40);
    id.copyTo(packet, 24);
    expect(idKey(packet, 24)).toBe(id.key);
    expect(idKey(Buffer.from(packet).subarray(24))).toBe(id.key);
    expect(new Map([[id.key, 1]]).get(idKey(packet, 24))).toBe(1);
  });

  it('is 16 characters that give the bytes back, and the RM keys its maps the same way', () => {
    expect(id.key).toHaveLength(16);
    expect(Buffer.from(id.key, 'latin1').equals(Buffer.from(id.toBytes()))).toBe(true);
    // The RM's lookup hot path reads the key straight off the datagram the same way (handlers.ts).
    expect(Buffer.from(id.toBytes()).toString('latin1', 0, 16)).toBe(id.key);
  });

  it('tells different IDs apart', () => {
    expect(parseHostId('fd00:1::a').key).not.toBe(parseHostId('fd00:1::b').key);
    expect(parseHostId('fd00:1::a').equals(parseHostId('FD00:1:0::A'))).toBe(true);
  });
});
