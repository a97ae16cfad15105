import { describe, expect, it } from 'vitest';
import { addressBytes, addressFamily, canonicalAddress, familyOf, locatorText } from '../../shared/address.ts';
import { signBinding } from '../../shared/binding.ts';
import { generateKeyPair } from '../../shared/crypto/ed25519.ts';
import { hostIdBytes, parseHostId, parsePrefix } from '../../shared/ids.ts';

// addressToBytes and bytesToAddress have their table in udp-memory.test.ts; these are the helpers
// built on them, and the modules that now share them.
describe('shared/address.ts', () => {
  it('tells the family, or 0 / CONFIG_INVALID for what is not an address literal', () => {
    expect(addressFamily('192.0.2.1')).toBe(4);
    expect(addressFamily('fe80::1%eth0')).toBe(6);
    for (const bad of ['', '192.0.2.1/24', '::1/128', 'localhost', '01.2.3.4']) expect(addressFamily(bad)).toBe(0);
    expect(familyOf('2001:db8::1')).toBe(6);
    expect(() => familyOf('192.0.2.1/24')).toThrow(expect.objectContaining({ code: 'CONFIG_INVALID' }));
  });

  it('spells an address one way, keeping a zone', () => {
    expect(canonicalAddress('2001:DB8:0:0:1::1')).toBe('2001:db8::1:0:0:1');
    expect(canonicalAddress('FE80::0:1%eth0')).toBe('fe80::1%eth0');
    expect(canonicalAddress('192.0.2.1')).toBe('192.0.2.1');
  });

  it('writes a locator as address:port, brackets around IPv6', () => {
    expect(locatorText('192.0.2.1', 4341)).toBe('192.0.2.1:4341');
    expect(locatorText('2001:db8::1', 4341)).toBe('[2001:db8::1]:4341');
  });

  it('gives a fresh 16-byte array', () => {
    const a = addressBytes('192.0.2.1');
    expect(Buffer.from(a).toString('hex')).toBe('c0000201000000000000000000000000');
    expect(addressBytes('192.0.2.1')).not.toBe(a);
  });

  it('host IDs and prefixes read and print through it', () => {
    expect(Buffer.from(hostIdBytes('fd00:1::a')).toString('hex')).toBe('fd00000100000000000000000000000a');
    expect(() => hostIdBytes('192.0.2.1')).toThrow(/is not a host ID/);
    expect(parseHostId('FD00:1:0::A').toString()).toBe('fd00:1::a');
    expect(parsePrefix('FD00:1::/32').toString()).toBe('fd00:1::/32');
  });

  it('a binding carries its locators in both families, printed as the UDP socket prints a source', () => {
    const key = generateKeyPair();
    const locators = [
      { address: '192.0.2.1', port: 4341, priority: 1, weight: 1, uplink: 'a', state: 'up' as const },
      { address: '2001:DB8::1', port: 4341, priority: 1, weight: 1, uplink: 'b', state: 'up' as const },
    ];
    const b = signBinding(key, { prefix: parsePrefix('fd00:1::/32'), locators, seq: 1, ttl: 60 });
    expect(b.locators.map((l) => l.address)).toEqual(['192.0.2.1', '2001:db8::1']);
    const zoned = [{ ...locators[1], address: 'fe80::1%eth0' }];
    expect(() => signBinding(key, { prefix: parsePrefix('fd00:1::/32'), locators: zoned, seq: 1, ttl: 60 })).toThrow(/is not an IPv4 or IPv6 address/);
  });
});
