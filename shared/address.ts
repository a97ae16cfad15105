import { isIP } from 'node:net';
import { ConfigError } from './errors.ts';

/**
 * IP address text ↔ bytes: the one converter every part of realmnet uses (locators, host IDs, the UDP
 * socket's source and destination arrays).
 *
 * Addresses travel through the data plane as 16 raw bytes plus a family: IPv4 in the first four bytes
 * (the other twelve zero), IPv6 in all sixteen. That lets the hot path compare a datagram's source
 * with a binding's locators byte by byte, without strings, and lets one 16-byte slot per datagram
 * carry either family to and from the UDP addon.
 *
 * Text is parsed by hand after node's isIP has validated it, rather than through ip-address, so that
 * addressToBytes writes into the caller's buffer without building address objects (mapping-server's
 * reply path converts a destination whenever it changes). The text form we print is RFC 5952's, as
 * node:dgram prints a source address, so a configured locator and a received source read the same.
 */
export type Family = 4 | 6;

/** 4 or 6 for an IPv4 or IPv6 literal (an IPv6 one may carry a %zone), 0 for anything else. Never throws. */
export function addressFamily(text: string): Family | 0 {
  const f = isIP(text);
  return f === 4 || f === 6 ? f : 0;
}

/** The family of an address literal. Throws CONFIG_INVALID for anything else. */
export function familyOf(address: string): Family {
  const f = addressFamily(address);
  if (f === 0) throw new ConfigError(`"${address}" is not an IPv4 or IPv6 address`, 'write it as a literal such as 192.0.2.1 or 2001:db8::1');
  return f;
}

/**
 * Writes an address literal into out[offset, offset+16) (IPv4: 4 bytes then 12 zeros; an IPv6 %zone
 * is ignored) and returns its family. Allocates no buffer: for a caller's reused arrays. Throws
 * CONFIG_INVALID.
 */
export function addressToBytes(address: string, out: Uint8Array, offset: number): Family {
  const family = familyOf(address);
  if (family === 4) {
    const parts = address.split('.');
    for (let i = 0; i < 4; i++) out[offset + i] = Number(parts[i]);
    out.fill(0, offset + 4, offset + 16);
  } else {
    writeIpv6(address, out, offset);
  }
  return family;
}

/** The 16 bytes of an address literal in a new array (control plane: locators kept in bindings). */
export function addressBytes(address: string): Uint8Array {
  const out = new Uint8Array(16);
  addressToBytes(address, out, 0);
  return out;
}

// `address` is already known to be valid IPv6 (isIP), so only the shape needs handling here.
function writeIpv6(address: string, out: Uint8Array, offset: number): void {
  const zone = address.indexOf('%');
  let text = zone < 0 ? address : address.slice(0, zone);
  const groups: number[] = [];
  const lastColon = text.lastIndexOf(':');
  let tailV4: number[] = [];
  if (text.includes('.', lastColon)) {
    tailV4 = text.slice(lastColon + 1).split('.').map(Number);
    text = text.slice(0, lastColon + 1) + '0:0'; // placeholder groups, overwritten below
  }
  const gap = text.indexOf('::');
  const parse = (s: string): number[] => (s === '' ? [] : s.split(':').map((g) => parseInt(g, 16)));
  if (gap < 0) {
    groups.push(...parse(text));
  } else {
    const head = parse(text.slice(0, gap));
    const tail = parse(text.slice(gap + 2));
    groups.push(...head, ...new Array<number>(8 - head.length - tail.length).fill(0), ...tail);
  }
  for (let i = 0; i < 8; i++) {
    out[offset + 2 * i] = groups[i] >> 8;
    out[offset + 2 * i + 1] = groups[i] & 0xff;
  }
  if (tailV4.length === 4) for (let i = 0; i < 4; i++) out[offset + 12 + i] = tailV4[i];
}

/** The text form of 16 bytes in the convention above: dotted IPv4, or RFC 5952 IPv6 (lowercase, the
 *  longest run of zero groups compressed, IPv4-mapped as ::ffff:a.b.c.d), as node:dgram prints it. */
export function bytesToAddress(family: Family, bytes: Uint8Array, offset: number): string {
  if (family === 4) return `${bytes[offset]}.${bytes[offset + 1]}.${bytes[offset + 2]}.${bytes[offset + 3]}`;
  const groups: number[] = [];
  for (let i = 0; i < 8; i++) groups.push((bytes[offset + 2 * i] << 8) | bytes[offset + 2 * i + 1]);
  if (groups.slice(0, 5).every((g) => g === 0) && groups[5] === 0xffff) {
    return `::ffff:${bytes[offset + 12]}.${bytes[offset + 13]}.${bytes[offset + 14]}.${bytes[offset + 15]}`;
  }
  let bestStart = -1;
  let bestLen = 1; // RFC 5952 4.2.2: a single zero group is not compressed
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (gs: number[]): string => gs.map((g) => g.toString(16)).join(':');
  if (bestStart < 0) return hex(groups);
  return `${hex(groups.slice(0, bestStart))}::${hex(groups.slice(bestStart + bestLen))}`;
}

/** The spelling bytesToAddress gives (2001:db8::1, not 2001:0DB8:0:0::1), so that two spellings of
 *  one address compare equal as text; a %zone is kept. Throws CONFIG_INVALID. */
export function canonicalAddress(address: string): string {
  const zone = address.indexOf('%');
  const bare = zone < 0 ? address : address.slice(0, zone);
  const bytes = new Uint8Array(16);
  const family = addressToBytes(bare, bytes, 0);
  return bytesToAddress(family, bytes, 0) + (zone < 0 ? '' : address.slice(zone));
}

/** "192.0.2.1:4341" or "[2001:db8::1]:4341": how status and logs write a locator. For text already
 *  known to be an address, where only IPv6 has a colon. */
export function locatorText(address: string, port: number): string {
  return address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`;
}

/**
 * True when a datagram's source address (as a socket reports it: IPv4 on a dual-stack socket as
 * ::ffff:a.b.c.d) is the canonical address `expected` (canonicalAddress / bytesToAddress spelling).
 */
export function isSameAddress(source: string, expected: string): boolean {
  if (source === expected) return true;
  const bare = source.startsWith('::ffff:') && source.includes('.') ? source.slice(7) : source;
  try {
    return canonicalAddress(bare) === expected;
  } catch {
    return false;
  }
}
