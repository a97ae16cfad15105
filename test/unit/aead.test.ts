// The native AEAD (shared/crypto/native/aead.cc) through its wrapper, on the real addon. Two tables
// model two hosts: A seals with its send key, B opens with the same key as its receive key.
import { createCipheriv, createDecipheriv, randomBytes, type CipherChaCha20Poly1305, type CipherGCM, type DecipherChaCha20Poly1305, type DecipherGCM } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { Cipher, DEFAULT_SEND_LIMIT, OpenResult, REPLAY_WINDOW, REPLAY_WINDOW_BITS, SessionTable, newIndex } from '../../shared/crypto/aead.ts';
import { FLAG_I, FLAG_K, FLAG_N, SEALED_COUNTER_OFF, SEALED_HEADER_LEN, SEALED_INDEX_OFF, TAG_LEN, writeHeader } from '../../shared/wire/header.ts';

const SLOTS = 16;
const INSTANCE = 0x00abcd;
const CIPHERS = [
  ['AES-256-GCM', Cipher.Aes256Gcm, 'aes-256-gcm'],
  ['ChaCha20-Poly1305', Cipher.ChaCha20Poly1305, 'chacha20-poly1305'],
] as const;

interface Pair {
  a: SessionTable;
  b: SessionTable;
  aSlot: number;
  bSlot: number;
  /** The index B chose: A writes it into the packets it sends to B. */
  bIndex: number;
  aIndex: number;
  /** Copies of the keys (install() zero-fills the arrays it is given). */
  k1: Buffer;
  k2: Buffer;
}

/** Host A (slot 3) and host B (slot 5) with one session: A sends with k1, B sends with k2. */
function pair(cipher: Cipher, opts?: { sendLimit?: number; firstSendCounter?: number }): Pair {
  const a = new SessionTable(SLOTS);
  const b = new SessionTable(SLOTS);
  const k1 = randomBytes(32);
  const k2 = randomBytes(32);
  const aIndex = newIndex(3, SLOTS);
  const bIndex = newIndex(5, SLOTS);
  a.install(3, aIndex, cipher, Uint8Array.from(k1), Uint8Array.from(k2), opts);
  b.install(5, bIndex, cipher, Uint8Array.from(k2), Uint8Array.from(k1));
  return { a, b, aSlot: 3, bSlot: 5, aIndex, bIndex, k1, k2 };
}

/** A batch buffer holding `frames` with room for the header before and the tag after each. */
function batch(frames: readonly Uint8Array[], receiverIndex: number): { buf: Buffer; offsets: Uint32Array; lengths: Uint32Array; count: number } {
  const stride = Math.max(...frames.map((f) => f.length)) + SEALED_HEADER_LEN + TAG_LEN + 3;
  const buf = Buffer.alloc(stride * frames.length + 5, 0xee);
  const offsets = new Uint32Array(frames.length);
  const lengths = new Uint32Array(frames.length);
  frames.forEach((f, i) => {
    const off = 5 + i * stride; // odd offsets on purpose: nothing may assume alignment
    writeHeader(buf, off, 0, INSTANCE, false);
    buf[off] |= FLAG_K;
    buf.writeUInt32BE(receiverIndex, off + SEALED_INDEX_OFF);
    buf.set(f, off + SEALED_HEADER_LEN);
    offsets[i] = off;
    lengths[i] = SEALED_HEADER_LEN + f.length;
  });
  return { buf, offsets, lengths, count: frames.length };
}

/** Seals `n` frames of `size` random bytes (or the given frames) from A to B; returns each sealed packet and its frame. */
function sealFrames(p: Pair, frames: readonly Uint8Array[]): { packets: Buffer[]; frames: readonly Uint8Array[] } {
  const { buf, offsets, lengths, count } = batch(frames, p.bIndex);
  const sealed = p.a.seal(buf, offsets, lengths, new Uint16Array(count).fill(p.aSlot), count);
  expect(sealed).toBe(count);
  const packets = frames.map((f, i) => {
    expect(lengths[i]).toBe(SEALED_HEADER_LEN + f.length + TAG_LEN);
    return Buffer.from(buf.subarray(offsets[i], offsets[i] + lengths[i]));
  });
  return { packets, frames };
}

function randomFrames(n: number, size: number): Uint8Array[] {
  return Array.from({ length: n }, () => randomBytes(size));
}

/** Opens copies of `packets` on `table` as one batch; returns the results and the frames of Ok ones. */
function openPackets(table: SessionTable, packets: readonly Uint8Array[]): { results: number[]; slots: number[]; frames: (Buffer | null)[]; opened: number } {
  const stride = Math.max(...packets.map((p) => p.length)) + 7;
  const buf = Buffer.alloc(stride * packets.length + 1);
  const offsets = new Uint32Array(packets.length);
  const lengths = new Uint32Array(packets.length);
  packets.forEach((p, i) => {
    offsets[i] = 1 + i * stride;
    lengths[i] = p.length;
    buf.set(p, offsets[i]);
  });
  const results = new Uint8Array(packets.length).fill(0xff);
  const slotsOut = new Uint16Array(packets.length).fill(0xffff);
  const opened = table.open(buf, offsets, lengths, packets.length, results, slotsOut);
  const frames = packets.map((p, i) => {
    if (results[i] !== OpenResult.Ok) {
      expect(lengths[i]).toBe(p.length); // only Ok packets lose the tag
      return null;
    }
    expect(lengths[i]).toBe(p.length - TAG_LEN);
    return Buffer.from(buf.subarray(offsets[i] + SEALED_HEADER_LEN, offsets[i] + lengths[i]));
  });
  return { results: Array.from(results), slots: Array.from(slotsOut), frames, opened };
}

function openOne(table: SessionTable, packet: Uint8Array): number {
  return openPackets(table, [packet]).results[0];
}

type NodeAead = (typeof CIPHERS)[number][2];
/** node:crypto's own implementation of the same AEAD (its overloads want one literal type each). */
function nodeCipher(name: NodeAead, key: Buffer, nonce: Buffer): CipherGCM | CipherChaCha20Poly1305 {
  return name === 'aes-256-gcm' ? createCipheriv(name, key, nonce, { authTagLength: 16 }) : createCipheriv(name, key, nonce, { authTagLength: 16 });
}
function nodeDecipher(name: NodeAead, key: Buffer, nonce: Buffer): DecipherGCM | DecipherChaCha20Poly1305 {
  return name === 'aes-256-gcm' ? createDecipheriv(name, key, nonce, { authTagLength: 16 }) : createDecipheriv(name, key, nonce, { authTagLength: 16 });
}

function flipped(packet: Uint8Array, byte: number, bit: number): Buffer {
  const copy = Buffer.from(packet);
  copy[byte] ^= 1 << bit;
  return copy;
}

describe.each(CIPHERS)('AEAD %s', (_name, cipher, nodeName) => {
  it('round-trips a batch between two hosts, frames of 0 bytes to 64 KiB, both directions', () => {
    const p = pair(cipher);
    const frames = [0, 1, 15, 16, 17, 1400, 9000, 65535 - SEALED_HEADER_LEN - TAG_LEN].map((n) => randomBytes(n));
    const { packets } = sealFrames(p, frames);
    packets.forEach((pkt, i) => {
      // The counter is in the header (u64 big-endian) and its low 24 bits are the LISP nonce.
      expect(pkt.readBigUInt64BE(SEALED_COUNTER_OFF)).toBe(BigInt(i));
      expect(pkt.readUIntBE(1, 3)).toBe(i);
      expect(pkt[0]).toBe(FLAG_N | FLAG_I | FLAG_K);
      expect(pkt.readUInt32BE(SEALED_INDEX_OFF)).toBe(p.bIndex);
      if (frames[i].length >= 16) expect(pkt.subarray(SEALED_HEADER_LEN, SEALED_HEADER_LEN + frames[i].length).equals(frames[i])).toBe(false);
    });
    expect(p.a.sendCounter(p.aSlot)).toBe(frames.length);
    const got = openPackets(p.b, packets);
    expect(got.opened).toBe(frames.length);
    expect(got.results).toEqual(frames.map(() => OpenResult.Ok));
    expect(got.slots).toEqual(frames.map(() => p.bSlot));
    got.frames.forEach((f, i) => expect(f?.equals(frames[i])).toBe(true));

    // B -> A with B's send key, which is A's receive key.
    const back = batch([Buffer.from('reply')], p.aIndex);
    expect(p.b.seal(back.buf, back.offsets, back.lengths, Uint16Array.of(p.bSlot), 1)).toBe(1);
    const r = openPackets(p.a, [back.buf.subarray(back.offsets[0], back.offsets[0] + back.lengths[0])]);
    expect(r.results).toEqual([OpenResult.Ok]);
    expect(r.frames[0]?.toString()).toBe('reply');
    expect(p.a.stats(p.aSlot)).toMatchObject({ sealed: frames.length, opened: 1 });
    expect(p.b.stats()).toMatchObject({ sealed: 1, opened: frames.length });
  });

  it('a host cannot open what it sealed itself (the directions have different keys)', () => {
    const p = pair(cipher);
    const { packets } = sealFrames(p, randomFrames(1, 40));
    // Readdressed to A's own index, A's receive key (k2) is not the key it sealed with (k1).
    packets[0].writeUInt32BE(p.aIndex, SEALED_INDEX_OFF);
    expect(openOne(p.a, packets[0])).toBe(OpenResult.Forged);
  });

  it('uses the standard construction: node:crypto with nonce 0^4 || counter and AAD = header gives the same bytes', () => {
    const p = pair(cipher, { firstSendCounter: 0x0102030405, sendLimit: Number.MAX_SAFE_INTEGER });
    const frame = randomBytes(333);
    const { packets } = sealFrames(p, [frame]);
    const pkt = packets[0];
    const header = pkt.subarray(0, SEALED_HEADER_LEN);
    const nonce = Buffer.concat([Buffer.alloc(4), pkt.subarray(SEALED_COUNTER_OFF, SEALED_COUNTER_OFF + 8)]);
    expect(nonce.toString('hex')).toBe('000000000000000102030405');
    const c = nodeCipher(nodeName, p.k1, nonce);
    c.setAAD(header, { plaintextLength: frame.length });
    const expected = Buffer.concat([c.update(frame), c.final(), c.getAuthTag()]);
    expect(pkt.subarray(SEALED_HEADER_LEN).equals(expected)).toBe(true);

    // And node:crypto opens what we sealed, and we open what node:crypto sealed.
    const d = nodeDecipher(nodeName, p.k1, nonce);
    d.setAAD(header, { plaintextLength: frame.length });
    d.setAuthTag(pkt.subarray(pkt.length - TAG_LEN));
    expect(Buffer.concat([d.update(pkt.subarray(SEALED_HEADER_LEN, pkt.length - TAG_LEN)), d.final()]).equals(frame)).toBe(true);

    const h2 = Buffer.from(header);
    h2.writeBigUInt64BE(0x0a0b0c0dn, SEALED_COUNTER_OFF);
    const n2 = Buffer.concat([Buffer.alloc(4), h2.subarray(SEALED_COUNTER_OFF)]);
    const e = nodeCipher(nodeName, p.k1, n2);
    e.setAAD(h2, { plaintextLength: frame.length });
    const theirs = Buffer.concat([h2, e.update(frame), e.final(), e.getAuthTag()]);
    const r = openPackets(p.b, [theirs]);
    expect(r.results).toEqual([OpenResult.Ok]);
    expect(r.frames[0]?.equals(frame)).toBe(true);
  });

  it('refuses any single flipped bit (header, ciphertext, tag) without moving the window', () => {
    const p = pair(cipher);
    const { packets } = sealFrames(p, randomFrames(1, 24));
    const pkt = packets[0];
    for (let byte = 0; byte < pkt.length; byte++) {
      for (let bit = 0; bit < 8; bit++) {
        const want = byte >= SEALED_INDEX_OFF && byte < SEALED_INDEX_OFF + 4 ? OpenResult.NoSession : OpenResult.Forged;
        expect([byte, bit, openOne(p.b, flipped(pkt, byte, bit))]).toEqual([byte, bit, want]);
      }
    }
    const forged = (pkt.length - 4) * 8;
    expect(p.b.stats(p.bSlot)).toMatchObject({ forged, opened: 0, replayed: 0, tooOld: 0 });
    expect(openOne(p.b, pkt)).toBe(OpenResult.Ok);
  });

  it('a forged packet far ahead does not slide the window, and its frame is zeroed', () => {
    const p = pair(cipher);
    const { packets } = sealFrames(p, randomFrames(REPLAY_WINDOW + 100, 8));
    const last = packets[packets.length - 1];
    const bad = flipped(last, SEALED_HEADER_LEN + 2, 0);
    const r = openPackets(p.b, [bad]);
    expect(r.results).toEqual([OpenResult.Forged]);
    // (openPackets copies; look at the zeroing directly)
    const buf = Buffer.from(bad);
    p.b.open(buf, Uint32Array.of(0), Uint32Array.of(buf.length), 1, new Uint8Array(1), new Uint16Array(1));
    expect(buf.subarray(SEALED_HEADER_LEN, buf.length - TAG_LEN).every((x) => x === 0)).toBe(true);
    // Had the forgery moved the window to its counter, packet 0 would now be too old.
    expect(openOne(p.b, packets[0])).toBe(OpenResult.Ok);
    expect(openOne(p.b, last)).toBe(OpenResult.Ok);
  });

  it('reports truncated packets', () => {
    const p = pair(cipher);
    const { packets } = sealFrames(p, [new Uint8Array(0)]);
    expect(packets[0].length).toBe(SEALED_HEADER_LEN + TAG_LEN);
    const r = openPackets(p.b, [packets[0].subarray(0, 35), packets[0].subarray(0, 0), packets[0].subarray(0, 20), packets[0]]);
    expect(r.results).toEqual([OpenResult.Truncated, OpenResult.Truncated, OpenResult.Truncated, OpenResult.Ok]);
    expect(r.frames[3]?.length).toBe(0);
    expect(p.b.stats()).toMatchObject({ truncated: 3, opened: 1 });
  });

  it('refuses unknown and stale indexes (NoSession)', () => {
    const p = pair(cipher);
    const { packets } = sealFrames(p, randomFrames(2, 50));
    const wrongUpper = Buffer.from(packets[0]);
    wrongUpper.writeUInt32BE((p.bIndex ^ 0x80000000) >>> 0, SEALED_INDEX_OFF);
    const emptySlot = Buffer.from(packets[0]);
    emptySlot.writeUInt32BE(((p.bIndex & ~(SLOTS - 1)) | 6) >>> 0, SEALED_INDEX_OFF);
    expect(openPackets(p.b, [wrongUpper, emptySlot]).results).toEqual([OpenResult.NoSession, OpenResult.NoSession]);
    // The slot gets a new session with a new index: the old session's packets find no session.
    p.b.install(p.bSlot, newIndex(p.bSlot, SLOTS, p.bIndex), cipher, randomBytes(32), Uint8Array.from(p.k1));
    expect(openOne(p.b, packets[1])).toBe(OpenResult.NoSession);
    expect(p.b.stats()).toMatchObject({ noSession: 3, opened: 0 });
  });

  it('a packet sealed under a replaced key never opens, whatever index the new session has', () => {
    const p = pair(cipher);
    const { packets } = sealFrames(p, randomFrames(2, 50));
    // A rekey that kept the index: the tag cannot verify under the new receive key.
    p.b.install(p.bSlot, p.bIndex, cipher, randomBytes(32), randomBytes(32));
    expect(openOne(p.b, packets[0])).toBe(OpenResult.Forged);
    // A rekey with a new index: the old index finds no session.
    p.b.install(p.bSlot, newIndex(p.bSlot, SLOTS, p.bIndex), cipher, randomBytes(32), Uint8Array.from(p.k1));
    expect(openOne(p.b, packets[1])).toBe(OpenResult.NoSession);
    expect(p.b.stats().opened).toBe(0);
  });

  it('wipe() ends a session: NoSession on open, length 0 on seal', () => {
    const p = pair(cipher);
    const { packets } = sealFrames(p, randomFrames(1, 50));
    p.b.wipe(p.bSlot);
    expect(p.b.hasSession(p.bSlot)).toBe(false);
    expect(openOne(p.b, packets[0])).toBe(OpenResult.NoSession);
    p.a.wipe(p.aSlot);
    const b = batch([randomBytes(10)], p.bIndex);
    expect(p.a.seal(b.buf, b.offsets, b.lengths, Uint16Array.of(p.aSlot), 1)).toBe(0);
    expect(b.lengths[0]).toBe(0);
    expect(p.a.sendCounter(p.aSlot)).toBe(0);
    expect(p.a.stats()).toMatchObject({ sealNoSession: 1 });
    p.a.wipeAll();
    expect(p.a.hasSession(p.aSlot)).toBe(false);
  });

  it('delivers each counter once: replays are refused, reordering within the window is delivered once each', () => {
    const p = pair(cipher);
    const { packets } = sealFrames(p, randomFrames(300, 30));
    const order = packets.map((_, i) => i);
    for (let i = order.length - 1; i > 0; i--) {
      const j = Math.floor(Math.random() * (i + 1));
      [order[i], order[j]] = [order[j], order[i]];
    }
    const first = openPackets(p.b, order.map((i) => packets[i]));
    expect(first.opened).toBe(300);
    const again = openPackets(p.b, packets);
    expect(again.results.every((r) => r === OpenResult.Replayed)).toBe(true);
    // A duplicate inside one batch too.
    const { packets: more } = sealFrames(p, randomFrames(1, 30));
    expect(openPackets(p.b, [more[0], more[0]]).results).toEqual([OpenResult.Ok, OpenResult.Replayed]);
    expect(p.b.stats(p.bSlot)).toMatchObject({ opened: 301, replayed: 301 });
  });

  it(`accepts counters up to ${REPLAY_WINDOW} behind the highest, refuses older ones (TooOld)`, () => {
    expect(REPLAY_WINDOW_BITS).toBe(8192);
    expect(REPLAY_WINDOW).toBeGreaterThanOrEqual(4096);
    const p = pair(cipher);
    const { packets } = sealFrames(p, randomFrames(REPLAY_WINDOW + 2, 4));
    const top = REPLAY_WINDOW + 1;
    const r = openPackets(p.b, [packets[top], packets[1], packets[0], packets[2], packets[top - 1]]);
    expect(r.results).toEqual([OpenResult.Ok, OpenResult.Ok, OpenResult.TooOld, OpenResult.Ok, OpenResult.Ok]);
    // A failover re-sends up to 2048 packets: all of them, behind a newer one, are delivered once.
    const q = pair(cipher);
    const { packets: resend } = sealFrames(q, randomFrames(2100, 4));
    expect(openPackets(q.b, [resend[2099]]).opened).toBe(1);
    expect(openPackets(q.b, resend.slice(0, 2099)).opened).toBe(2099);
    expect(openPackets(q.b, resend.slice(0, 2099)).opened).toBe(0);
  });

  it('keeps the window right across long jumps (whole-ring clears)', () => {
    const p = pair(cipher, { firstSendCounter: 0 });
    const early = sealFrames(p, randomFrames(3, 4)).packets;
    expect(openPackets(p.b, early).opened).toBe(3);
    const q: Pair = { ...p, a: new SessionTable(SLOTS) };
    // A second sender sharing the key (a test device only) jumps the counter far ahead, to counters
    // whose ring bits are those the early ones set: the jump must have cleared them.
    q.a.install(p.aSlot, p.aIndex, cipher, Uint8Array.from(p.k1), randomBytes(32), { firstSendCounter: REPLAY_WINDOW_BITS * 100, sendLimit: Number.MAX_SAFE_INTEGER });
    const far = sealFrames(q, randomFrames(2, 4)).packets;
    expect(openPackets(p.b, [far[1], far[0], early[2], far[1]]).results).toEqual([OpenResult.Ok, OpenResult.Ok, OpenResult.TooOld, OpenResult.Replayed]);
  });

  it('stops sealing at the send limit (lengths 0) and writes counters across the 24- and 32-bit boundaries', () => {
    const p = pair(cipher, { firstSendCounter: 0xfffffe, sendLimit: 0x1000001 });
    const frames = randomFrames(4, 10);
    const b = batch(frames, p.bIndex);
    expect(p.a.seal(b.buf, b.offsets, b.lengths, new Uint16Array(4).fill(p.aSlot), 4)).toBe(3);
    expect(Array.from(b.lengths)).toEqual([46, 46, 46, 0]);
    const sealed = [0, 1, 2].map((i) => Buffer.from(b.buf.subarray(b.offsets[i], b.offsets[i] + b.lengths[i])));
    expect(sealed.map((s) => s.subarray(1, 4).toString('hex'))).toEqual(['fffffe', 'ffffff', '000000']);
    expect(sealed.map((s) => s.readBigUInt64BE(SEALED_COUNTER_OFF))).toEqual([0xfffffen, 0xffffffn, 0x1000000n]);
    expect(p.a.sendCounter(p.aSlot)).toBe(0x1000001);
    expect(p.a.stats(p.aSlot)).toMatchObject({ sealed: 3, sealExhausted: 1 });
    expect(openPackets(p.b, sealed).opened).toBe(3);

    const q = pair(cipher, { firstSendCounter: 2 ** 32 - 1, sendLimit: Number.MAX_SAFE_INTEGER });
    const s2 = sealFrames(q, randomFrames(2, 10)).packets;
    expect(s2.map((s) => s.readBigUInt64BE(SEALED_COUNTER_OFF))).toEqual([0xffffffffn, 0x100000000n]);
    expect(openPackets(q.b, s2).opened).toBe(2);

    // The ceiling: the last counter JS can represent is the last one sealed.
    const r = pair(cipher, { firstSendCounter: Number.MAX_SAFE_INTEGER - 1, sendLimit: Number.MAX_SAFE_INTEGER });
    const c = batch(randomFrames(2, 10), r.bIndex);
    expect(r.a.seal(c.buf, c.offsets, c.lengths, new Uint16Array(2).fill(r.aSlot), 2)).toBe(1);
    expect(c.buf.readBigUInt64BE(c.offsets[0] + SEALED_COUNTER_OFF)).toBe(BigInt(Number.MAX_SAFE_INTEGER - 1));
    expect(openPackets(r.b, [c.buf.subarray(c.offsets[0], c.offsets[0] + c.lengths[0])]).opened).toBe(1);
    expect(r.a.sendCounter(r.aSlot)).toBe(Number.MAX_SAFE_INTEGER);
  });

  it('mixes sessions and outcomes in one batch, one result each', () => {
    const p = pair(cipher);
    // A second session on B (slot 9) from a third host C.
    const c = new SessionTable(SLOTS);
    const kc = randomBytes(32);
    const b9 = newIndex(9, SLOTS);
    c.install(0, newIndex(0, SLOTS), cipher, Uint8Array.from(kc), randomBytes(32));
    p.b.install(9, b9, cipher, randomBytes(32), Uint8Array.from(kc));
    const fromA = sealFrames(p, randomFrames(2, 100)).packets;
    const cb = batch([Buffer.from('from C')], b9);
    expect(c.seal(cb.buf, cb.offsets, cb.lengths, Uint16Array.of(0), 1)).toBe(1);
    const fromC = Buffer.from(cb.buf.subarray(cb.offsets[0], cb.offsets[0] + cb.lengths[0]));
    const r = openPackets(p.b, [fromA[0], fromC, flipped(fromA[1], 30, 3), fromA[0], fromA[1].subarray(0, 30), fromA[1]]);
    expect(r.results).toEqual([OpenResult.Ok, OpenResult.Ok, OpenResult.Forged, OpenResult.Replayed, OpenResult.Truncated, OpenResult.Ok]);
    expect([r.slots[0], r.slots[1], r.slots[5]]).toEqual([p.bSlot, 9, p.bSlot]);
    expect(r.frames[1]?.toString()).toBe('from C');
    expect(r.opened).toBe(3);
  });
});

describe('AEAD session table', () => {
  it('zero-fills the caller key arrays on install, and only then', () => {
    const t = new SessionTable(4);
    const s = randomBytes(32);
    const r = new Uint8Array(64).fill(7).subarray(16, 48);
    t.install(1, newIndex(1, 4), Cipher.Aes256Gcm, s, r);
    expect(s.every((x) => x === 0)).toBe(true);
    expect(r.every((x) => x === 0)).toBe(true);
    expect(new Uint8Array(r.buffer).subarray(0, 16).every((x) => x === 7)).toBe(true); // only the view
    const kept = randomBytes(32);
    const copy = Buffer.from(kept);
    expect(() => t.install(1, 0, Cipher.Aes256Gcm, kept, randomBytes(32))).toThrow(RangeError);
    expect(kept.equals(copy)).toBe(true);
  });

  it('sets default send limits per cipher', () => {
    expect(DEFAULT_SEND_LIMIT[Cipher.Aes256Gcm]).toBe(2 ** 24);
    expect(DEFAULT_SEND_LIMIT[Cipher.ChaCha20Poly1305]).toBe(Number.MAX_SAFE_INTEGER);
    const t = new SessionTable(1);
    t.install(0, newIndex(0, 1), Cipher.Aes256Gcm, randomBytes(32), randomBytes(32), { firstSendCounter: 2 ** 24 - 1 });
    const b = batch(randomFrames(2, 4), 0);
    expect(t.seal(b.buf, b.offsets, b.lengths, new Uint16Array(2), 2)).toBe(1);
  });

  it('newIndex keeps the slot in the low bits and varies the rest', () => {
    const seen = new Set<number>();
    for (let i = 0; i < 50; i++) {
      const x = newIndex(37, 4096);
      expect(x & 4095).toBe(37);
      expect(x).toBeGreaterThanOrEqual(0);
      expect(x).toBeLessThanOrEqual(0xffffffff);
      seen.add(x);
    }
    expect(seen.size).toBeGreaterThan(45);
    const prev = newIndex(1, 2);
    for (let i = 0; i < 20; i++) expect(newIndex(1, 2, prev)).not.toBe(prev);
    expect(() => newIndex(4, 4)).toThrow(RangeError);
    expect(() => newIndex(0, 3)).toThrow(RangeError);
  });

  it('refuses bad arguments with clear errors and changes nothing', () => {
    expect(() => new SessionTable(3)).toThrow(/power of two/);
    expect(() => new SessionTable(8192)).toThrow(/power of two/);
    const t = new SessionTable(4);
    const idx = newIndex(2, 4);
    t.install(2, idx, Cipher.ChaCha20Poly1305, randomBytes(32), randomBytes(32));
    expect(() => t.install(4, idx, Cipher.ChaCha20Poly1305, randomBytes(32), randomBytes(32))).toThrow(/slot must be an integer from 0 to 3/);
    expect(() => t.install(1, idx, Cipher.ChaCha20Poly1305, randomBytes(32), randomBytes(32))).toThrow(/low bits are the slot/);
    expect(() => t.install(2, idx, 2 as Cipher, randomBytes(32), randomBytes(32))).toThrow(/unknown cipher/);
    expect(() => t.install(2, idx, Cipher.Aes256Gcm, randomBytes(16), randomBytes(32))).toThrow(/32 bytes/);
    expect(() => t.install(2, idx, Cipher.Aes256Gcm, randomBytes(32), randomBytes(32), { sendLimit: 2 ** 53 })).toThrow(/sendLimit/);
    expect(() => t.install(2, idx, Cipher.Aes256Gcm, randomBytes(32), randomBytes(32), { sendLimit: 5, firstSendCounter: 6 })).toThrow(/firstSendCounter/);
    expect(() => t.wipe(-1)).toThrow(RangeError);
    expect(() => t.stats(4)).toThrow(RangeError);
    expect(() => t.stats(-1)).toThrow(RangeError);

    const b = batch([randomBytes(10), randomBytes(10)], idx);
    const before = Buffer.from(b.buf);
    const slots = new Uint16Array(2).fill(2);
    const seal = (buf: Uint8Array, offsets: Uint32Array, lengths: Uint32Array, s: Uint16Array, count: number) => () => t.seal(buf, offsets, lengths, s, count);
    expect(seal(b.buf, b.offsets, b.lengths, slots, 3)).toThrow(/count 3 exceeds offsets \(2\)/);
    expect(seal(b.buf, b.offsets, b.lengths, slots, 1.5)).toThrow(/count must be a non-negative integer/);
    expect(seal(b.buf, b.offsets, b.lengths, slots, -1)).toThrow(RangeError);
    expect(seal(b.buf, new Uint16Array(2) as unknown as Uint32Array, b.lengths, slots, 2)).toThrow(/offsets must be a Uint32Array/);
    expect(seal(new Uint16Array(8) as unknown as Uint8Array, b.offsets, b.lengths, slots, 2)).toThrow(/buf must be a Uint8Array/);
    expect(seal(b.buf, b.offsets, b.lengths, new Uint16Array(1), 2)).toThrow(/slots must be a Uint16Array of at least count/);
    expect(seal(b.buf, b.offsets, b.lengths, Uint16Array.of(2, 4), 2)).toThrow(/packet 1 names slot 4 of a table of 4/);
    expect(seal(b.buf, b.offsets, Uint32Array.of(30, 19), slots, 2)).toThrow(/packet 1 is shorter than the 20-byte sealed header/);
    // No room for the tag after the last packet.
    const tight = b.buf.subarray(0, b.offsets[1] + b.lengths[1] + 15);
    expect(seal(tight, b.offsets, b.lengths, slots, 2)).toThrow(/packet 1 .* ends past buf/);
    expect(seal(b.buf, Uint32Array.of(0, 0xffffffff), b.lengths, slots, 2)).toThrow(/ends past buf/);
    // Nothing was touched: same bytes, same lengths, same counter.
    expect(b.buf.equals(before)).toBe(true);
    expect(Array.from(b.lengths)).toEqual([30, 30]);
    expect(t.sendCounter(2)).toBe(0);

    const res = new Uint8Array(2);
    const out = new Uint16Array(2);
    expect(() => t.open(b.buf, b.offsets, b.lengths, 2, new Uint8Array(1), out)).toThrow(/results must be a Uint8Array of at least count/);
    expect(() => t.open(b.buf, b.offsets, b.lengths, 2, res, new Uint32Array(2) as unknown as Uint16Array)).toThrow(/slotsOut must be a Uint16Array/);
    expect(() => t.open(b.buf, b.offsets, Uint32Array.of(30, 2 ** 31), 2, res, out)).toThrow(/ends past buf/);
    expect(() => t.open(b.buf, b.offsets, b.lengths, 3, res, out)).toThrow(/count 3 exceeds/);
    expect(b.buf.equals(before)).toBe(true);
    expect(t.stats()).toMatchObject({ sealed: 0, opened: 0, truncated: 0, noSession: 0 });
    // An empty batch is fine.
    expect(t.seal(b.buf, b.offsets, b.lengths, slots, 0)).toBe(0);
    expect(t.open(b.buf, b.offsets, b.lengths, 0, res, out)).toBe(0);
  });
});

describe('session indexes', () => {
  it('name their slot, differ from the previous one, and never start with an IP version nibble (4 or 6)', () => {
    for (let i = 0; i < 5000; i++) {
      const slot = i % 64;
      const prev = i;
      const x = newIndex(slot, 64, prev);
      expect(x & 63).toBe(slot);
      expect(x).not.toBe(prev);
      expect([4, 6]).not.toContain(x >>> 28);
    }
  });
});
