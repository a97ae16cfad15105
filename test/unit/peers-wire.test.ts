import { describe, expect, it } from 'vitest';
import { pairKey } from '../../agent/paths/pairkey.ts';
import { PEER_MAX_LEN, PEER_MIN_LEN, PeerType, encodePeer, openPeer, readPeer, verifyPeer } from '../../agent/paths/wire.ts';
import { generateKeyPair, privateSeed } from '../../shared/crypto/ed25519.ts';
import { checkHeader, HeaderCheck } from '../../shared/wire/header.ts';

const A = Uint8Array.from({ length: 16 }, (_, i) => 0xfd + i);
const B = Uint8Array.from({ length: 16 }, (_, i) => 0x20 + i);

describe('peer messages', () => {
  const ka = generateKeyPair();
  const kb = generateKeyPair();

  it('derives the same pair key on both ends, and another for another pair', () => {
    const ab = pairKey(privateSeed(ka), A, kb.publicKey, B);
    const ba = pairKey(privateSeed(kb), B, ka.publicKey, A);
    const ac = pairKey(privateSeed(ka), A, generateKeyPair().publicKey, B);
    expect(ab).not.toBeNull();
    expect(ab?.h0).toEqual(ba?.h0);
    expect(ac?.h0).not.toEqual(ab?.h0);
  });

  it('rejects a public key that is not a curve point', () => {
    const bad = new Uint8Array(32).fill(0xff);
    expect(pairKey(privateSeed(ka), A, bad, B)).toBeNull();
  });

  it('round-trips a probe and an update, MAC checked', () => {
    const key = pairKey(privateSeed(ka), A, kb.publicKey, B);
    if (key === null) throw new Error('key');
    const buf = Buffer.alloc(PEER_MAX_LEN);
    const n = encodePeer(buf, { type: PeerType.Probe, instanceId: 7, from: A, to: B, token: 2 ** 52 + 3, counter: 1_700_000_000_000_000 }, key);
    expect(n).toBe(PEER_MIN_LEN);
    const env = openPeer(buf, 0, n, 7);
    if (typeof env === 'string') throw new Error(env);
    expect(verifyPeer(key, buf, 0, n)).toBe(true);
    const m = readPeer(buf, 0, n, env);
    expect(m).toMatchObject({ type: PeerType.Probe, instanceId: 7, token: 2 ** 52 + 3, counter: 1_700_000_000_000_000 });
    expect(Buffer.from(m.from).equals(Buffer.from(A))).toBe(true);
    // The data path never takes a peer message for data.
    expect(checkHeader(buf, 0, n, 7)).toBe(HeaderCheck.BadFlags);

    const upd = encodePeer(buf, { type: PeerType.Update, instanceId: 7, from: A, to: B, token: 9, counter: 2, binding: new Uint8Array(100).fill(5) }, key);
    const e2 = openPeer(buf, 0, upd, 7);
    if (typeof e2 === 'string') throw new Error(e2);
    expect(readPeer(buf, 0, upd, e2).binding?.length).toBe(100);
  });

  it('refuses bad framing, versions, instances and any flipped bit', () => {
    const key = pairKey(privateSeed(ka), A, kb.publicKey, B);
    if (key === null) throw new Error('key');
    const buf = Buffer.alloc(PEER_MAX_LEN);
    const n = encodePeer(buf, { type: PeerType.Reply, instanceId: 7, from: A, to: B, token: 1, counter: 1 }, key);
    expect(openPeer(buf, 0, n - 1, 7)).toBe('peerMalformed');
    expect(openPeer(buf, 0, n, 8)).toBe('peerWrongInstance');
    const v = Buffer.from(buf.subarray(0, n));
    v[8] = 2;
    expect(openPeer(v, 0, n, 7)).toBe('peerVersion');
    const t = Buffer.from(buf.subarray(0, n));
    t[9] = PeerType.Update; // an update must carry a binding
    expect(openPeer(t, 0, n, 7)).toBe('peerMalformed');
    for (let bit = 0; bit < n * 8; bit += 7) {
      const f = Buffer.from(buf.subarray(0, n));
      f[bit >> 3] ^= 1 << (bit & 7);
      const env = openPeer(f, 0, n, 7);
      if (typeof env !== 'string') expect(verifyPeer(key, f, 0, n)).toBe(false);
    }
  });
});
