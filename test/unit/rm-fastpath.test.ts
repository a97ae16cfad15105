import type { ControlMessage } from '../../shared/wire/messages.ts';
import { describe, expect, it } from 'vitest';
import { parseLookup, parsedReqId, writeLookupReply, writePush } from '../../mapping-server/fastpath.ts';
import { macKey } from '../../shared/crypto/blake2s.ts';
import { decode, encode } from '../../shared/wire/codec.ts';
import { MAX_DATAGRAM, type LocatorPref } from '../../shared/wire/messages.ts';
import { CERT_LEN } from '../../shared/membership.ts';

/**
 * The RM's hand-written LOOKUP / LOOKUP-REPLY / PUSH must be byte for byte what the codec writes, and
 * must hand anything non-canonical back to the codec.
 */
const key = macKey(new Uint8Array(32).fill(7));
const id = Uint8Array.from({ length: 16 }, (_, i) => 0xf0 + i);
const binding = Uint8Array.from({ length: 170 }, (_, i) => i);
// Longer than 255 bytes: msgpack bin 16 instead of bin 8 (a binding with several IPv6 locators).
const longBinding = Uint8Array.from({ length: 300 }, (_, i) => i & 0xff);
const fakeCert = Uint8Array.from({ length: CERT_LEN }, (_, i) => (i * 7) & 0xff);
const prefs: LocatorPref[] = [
  { index: 0, priority: 1, weight: 50, up: true },
  { index: 1, priority: 200, weight: 0, up: false },
];
const REQ_IDS = [0, 1, 127, 128, 255, 256, 65535, 65536, 0xffffffff];

describe('RM fast path', () => {
  it('parses every canonical LOOKUP the codec writes, whatever the request ID width', () => {
    for (const reqId of REQ_IDS) {
      const buf = encode({ type: 'lookup', reqId, hostId: id }, { sid: 9, seq: 3, key });
      const off = parseLookup(buf, buf.length);
      expect(off).toBeGreaterThan(0);
      expect(parsedReqId()).toBe(reqId);
      expect([...buf.subarray(off, off + 16)]).toEqual([...id]);
    }
  });

  it('refuses what is not a canonical LOOKUP body', () => {
    const good = encode({ type: 'lookup', reqId: 5, hostId: id }, { sid: 9, seq: 3, key });
    const extra = Buffer.concat([good.subarray(0, good.length - 16), Buffer.from([0xc0]), good.subarray(good.length - 16)]);
    extra[12] = 0x93;
    expect(parseLookup(extra, extra.length)).toBe(-1);
    const u64 = Buffer.from(good);
    u64[13] = 0xcf;
    expect(parseLookup(u64, u64.length)).toBe(-1);
    const shortId = encode({ type: 'register', reqId: 5, binding: id.subarray(0, 15) }, { sid: 9, seq: 3, key });
    expect(parseLookup(shortId, shortId.length)).toBe(-1);
  });

  it('writes LOOKUP-REPLY exactly as encode() does, positive and negative', () => {
    const out = Buffer.alloc(MAX_DATAGRAM);
    for (const reqId of REQ_IDS) {
      for (const [b, ttl, p, cert] of [
        [binding, 300, prefs, fakeCert],
        [longBinding, 86400, prefs, fakeCert],
        [null, 60, [], null],
      ] as const) {
        const n = writeLookupReply(out, 77, 1234567, key, reqId, id, 0, ttl, b, p, cert);
        const want = encode({ type: 'lookupReply', reqId, hostId: id, ttl, binding: b, prefs: p, cert } as ControlMessage, { sid: 77, seq: 1234567, key });
        expect(out.subarray(0, n).equals(want)).toBe(true);
        const d = decode(out.subarray(0, n), () => key);
        expect(d.ok).toBe(true);
      }
    }
  });

  it('writes PUSH exactly as encode() does', () => {
    const out = Buffer.alloc(MAX_DATAGRAM);
    for (const pushId of REQ_IDS) {
      for (const cert of [fakeCert]) {
        const n = writePush(out, 5, 2 ** 40, key, pushId, binding, 86400, prefs, cert);
        expect(out.subarray(0, n).equals(encode({ type: 'push', pushId, binding, ttl: 86400, prefs, cert }, { sid: 5, seq: 2 ** 40, key }))).toBe(true);
      }
    }
  });

  it('never writes past the buffer it is given', () => {
    const small = Buffer.alloc(64);
    expect(writeLookupReply(small, 1, 1, key, 1, id, 0, 1, binding, prefs, null)).toBe(0);
    expect(writePush(small, 1, 1, key, 1, binding, 1, prefs, fakeCert)).toBe(0);
  });
});
