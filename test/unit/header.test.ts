import { describe, expect, it } from 'vitest';
import { FLAG_I, FLAG_N, FLAG_VNET, HEADER_LEN, HeaderCheck, checkHeader, headerHasVnet, headerNonce, writeHeader } from '../../shared/wire/header.ts';

describe('data header (LISP, RFC 9300 5.1)', () => {
  it('writes N and I flags, the nonce and the instance ID in network order', () => {
    const b = new Uint8Array(12).fill(0xee);
    writeHeader(b, 2, 0x123456, 0xabcdef, false);
    expect(Array.from(b.subarray(2, 2 + HEADER_LEN))).toEqual([FLAG_N | FLAG_I, 0x12, 0x34, 0x56, 0xab, 0xcd, 0xef, 0]);
    expect(b[0]).toBe(0xee);
    expect(b[10]).toBe(0xee);
    expect(headerNonce(b, 2)).toBe(0x123456);
    expect(checkHeader(b, 2, 10, 0xabcdef)).toBe(HeaderCheck.Ok);
  });

  it('marks offload frames with the reserved bit', () => {
    const b = new Uint8Array(8);
    writeHeader(b, 0, 1, 7, true);
    expect(b[0] & FLAG_VNET).toBe(FLAG_VNET);
    expect(headerHasVnet(b, 0)).toBe(true);
    expect(checkHeader(b, 0, 8, 7)).toBe(HeaderCheck.Ok);
  });

  it('rejects truncated, foreign-flag and other-instance datagrams', () => {
    const b = new Uint8Array(8);
    writeHeader(b, 0, 1, 7, false);
    expect(checkHeader(b, 0, 7, 7)).toBe(HeaderCheck.Truncated);
    expect(checkHeader(b, 0, 8, 8)).toBe(HeaderCheck.WrongInstance);
    for (const bad of [0x00 /* no I */, FLAG_I | 0x40 /* L */, FLAG_I | 0x20 /* E */, FLAG_I | 0x10 /* V */, FLAG_I | 0x02 /* K=10 */, FLAG_I | 0x03 /* K=11 */]) {
      b[0] = bad;
      expect(checkHeader(b, 0, 8, 7)).toBe(HeaderCheck.BadFlags);
    }
    // K=01: sealed (docs/dataplane-crypto.md); the receive path tells sealed from plain.
    b[0] = FLAG_I | 0x01;
    expect(checkHeader(b, 0, 8, 7)).toBe(HeaderCheck.Ok);
  });

  it('keeps the nonce to 24 bits', () => {
    const b = new Uint8Array(8);
    writeHeader(b, 0, 0x1ffffff, 0, false);
    expect(headerNonce(b, 0)).toBe(0xffffff);
  });
});
