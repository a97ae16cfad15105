import { Address4, Address6 } from 'ip-address';
import { ConfigError } from './errors.ts';

/**
 * Locators travel through the data plane as 16 raw bytes plus a family: IPv4 in the first four bytes
 * (the rest zero), IPv6 in all sixteen. That lets the hot path compare a datagram's source with a
 * binding's locators byte by byte, without strings.
 */
export type Family = 4 | 6;

export function familyOf(address: string): Family {
  if (Address4.isValid(address)) return 4;
  if (Address6.isValid(address)) return 6;
  throw new ConfigError(`"${address}" is not an IPv4 or IPv6 address`, 'e.g. 192.0.2.1 or 2001:db8::1');
}

export function locatorBytes(address: string, out: Uint8Array = new Uint8Array(16), offset = 0): Uint8Array {
  out.fill(0, offset, offset + 16);
  if (Address4.isValid(address)) {
    const b = new Address4(address).toArray();
    for (let i = 0; i < 4; i++) out[offset + i] = b[i];
  } else {
    const b = new Address6(address).toByteArray();
    // toByteArray drops leading zero bytes; right-align into 16.
    const pad = 16 - b.length;
    for (let i = 0; i < b.length; i++) out[offset + pad + i] = b[i];
  }
  return out;
}

export function hostIdBytes(id: string): Uint8Array {
  if (!Address6.isValid(id) || Address4.isValid(id)) {
    throw new ConfigError(`"${id}" is not a host ID`, 'host IDs are IPv6 addresses, e.g. fd00:1::a');
  }
  return locatorBytes(id);
}

export function bytesToString(family: Family, b: Uint8Array, offset = 0): string {
  if (family === 4) return `${b[offset]}.${b[offset + 1]}.${b[offset + 2]}.${b[offset + 3]}`;
  return Address6.fromByteArray(Array.from(b.subarray(offset, offset + 16))).correctForm();
}

export function formatLocator(address: string, port: number): string {
  return familyOf(address) === 6 ? `[${address}]:${port}` : `${address}:${port}`;
}
