import { describe, expect, it } from 'vitest';
import { generateKeyPair } from '../../shared/crypto/ed25519.ts';
import { DELEGATION_LEN, decodeDelegation, signDelegation, verifyChain, verifyDelegation } from '../../shared/delegation.ts';
import { deriveHostId, parsePrefix } from '../../shared/ids.ts';
import { decodeBody, decodeHeader, encode, rmAnswerSigned, rmPushSigned, rmQuerySigned, RM_QUERY_MIN } from '../../shared/wire/codec.ts';
import { DAY_MS, HOUR_MS, learnClass } from '../../mapping-server/classes.ts';
import { parseRmConfig } from '../../mapping-server/config.ts';
import { encodePeer, openPeer, readPeer, PeerType } from '../../agent/paths/wire.ts';
import { macKey } from '../../shared/crypto/blake2s.ts';
import { RealmTrust } from '../../agent/rm/trust.ts';

const NOW = 1_800_000_000;
const top = generateKeyPair();
const mid = generateKeyPair();
const bottom = generateKeyPair();
const P = { top: parsePrefix('fd00::/16'), mid: parsePrefix('fd00:2::/32'), b: parsePrefix('fd00:2:b::/48'), other: parsePrefix('fd00:3::/32') };

describe('delegations and referral chains', () => {
  const self = signDelegation(top, { prefix: P.top, subjectKey: top.publicKey, notBefore: NOW - 60, notAfter: NOW + 3600 });
  const toMid = signDelegation(top, { prefix: P.mid, subjectKey: mid.publicKey, notBefore: NOW - 60, notAfter: NOW + 3600, rms: [{ address: '203.0.113.130', port: 4342 }, { address: '2001:db8:42::2', port: 4342 }] });
  const toB = signDelegation(mid, { prefix: P.b, subjectKey: bottom.publicKey, notBefore: NOW - 60, notAfter: NOW + 3600, rms: [{ address: '192.0.2.66', port: 4342 }] });

  it('round-trips the fixed layout, addresses included', () => {
    expect(toMid.bytes.length).toBe(DELEGATION_LEN);
    const d = decodeDelegation(toMid.bytes);
    expect(d.ok && d.delegation.prefix.toString()).toBe('fd00:2::/32');
    expect(d.ok && d.delegation.rms).toEqual([{ address: '203.0.113.130', port: 4342 }, { address: '2001:db8:42::2', port: 4342 }]);
  });

  it('verifies against the issuer only, in its validity, and refuses every flipped bit', () => {
    expect(verifyDelegation(toMid.bytes, top.publicKey, NOW).ok).toBe(true);
    expect(verifyDelegation(toMid.bytes, mid.publicKey, NOW)).toEqual({ ok: false, reason: 'delegationIssuer' });
    expect(verifyDelegation(toMid.bytes, top.publicKey, NOW + 3600)).toEqual({ ok: false, reason: 'delegationExpired' });
    for (let i = 0; i < DELEGATION_LEN; i += 7) {
      const bad = Uint8Array.from(toMid.bytes);
      bad[i] ^= 0x10;
      expect(verifyDelegation(bad, top.publicKey, NOW).ok).toBe(false);
    }
    expect(verifyDelegation(toMid.bytes.subarray(0, 100), top.publicKey, NOW)).toEqual({ ok: false, reason: 'delegationLength' });
  });

  it('a chain proves the last prefix and key from the top key; a sideways, wider, long or foreign chain does not', () => {
    const v = verifyChain([self.bytes, toMid.bytes, toB.bytes], top.publicKey, NOW);
    expect(v.ok && v.delegation.prefix.toString()).toBe('fd00:2:b::/48');
    expect(v.ok && Buffer.from(v.delegation.subjectKey).equals(Buffer.from(bottom.publicKey))).toBe(true);
    expect(verifyChain([toMid.bytes, toB.bytes], top.publicKey, NOW).ok).toBe(true);
    expect(verifyChain([toB.bytes], top.publicKey, NOW)).toEqual({ ok: false, reason: 'delegationIssuer' });
    expect(verifyChain([], top.publicKey, NOW)).toEqual({ ok: false, reason: 'chainEmpty' });
    // mid signs a prefix outside its own: refused.
    const sideways = signDelegation(mid, { prefix: P.other, subjectKey: bottom.publicKey, notBefore: NOW - 60, notAfter: NOW + 3600 });
    expect(verifyChain([toMid.bytes, sideways.bytes], top.publicKey, NOW)).toEqual({ ok: false, reason: 'chainPrefix' });
    expect(verifyChain([self.bytes, self.bytes, self.bytes, self.bytes, self.bytes], top.publicKey, NOW)).toEqual({ ok: false, reason: 'chainLong' });
  });
});

describe('customer classes, learned', () => {
  const since = 0;
  it('two changes within an hour make a host mobile, for a day after the later one', () => {
    const t = 10 * DAY_MS;
    expect(learnClass([t - 30 * 60_000, t - 10 * 60_000], since, t, 'nomadic')).toBe('mobile');
    expect(learnClass([t - 30 * 60_000, t - 10 * 60_000], since, t + DAY_MS, 'nomadic')).toBe('nomadic');
  });
  it('daily renumbering is nomadic; a week without change is static; a new host keeps the fallback', () => {
    const t = 10 * DAY_MS;
    expect(learnClass([t - 2 * DAY_MS, t - DAY_MS], since, t, 'static')).toBe('nomadic');
    expect(learnClass([t - 8 * DAY_MS], since, t, 'nomadic')).toBe('static');
    expect(learnClass([], t - HOUR_MS, t, 'nomadic')).toBe('nomadic');
    expect(learnClass([], t - HOUR_MS, t, 'mobile')).toBe('mobile');
  });
});

describe('RM ↔ RM messages', () => {
  const id = deriveHostId(P.b, bottom.publicKey).toBytes();
  it('a query is padded to RM_QUERY_MIN and decodes with its signed part', () => {
    const f = { reqId: 5, id, time: NOW, follow: true, chain: [new Uint8Array(DELEGATION_LEN)] };
    const signed = rmQuerySigned(f);
    const buf = encode({ type: 'rmQuery', ...f, signed, signature: new Uint8Array(64) }, null);
    expect(buf.length).toBe(RM_QUERY_MIN);
    const h = decodeHeader(buf);
    expect(h.ok).toBe(true);
    const m = h.ok ? decodeBody(h.msg, buf) : null;
    expect(m?.ok && m.msg.type === 'rmQuery' && m.msg.follow && m.msg.reqId).toBe(5);
  });
  it('refuses answers whose fields disagree with their kind, and malformed signed parts', () => {
    const bad = { reqId: 1, id, kind: 2, ttl: 5, cls: 0, followed: false, referral: null, binding: null, cert: null, prefs: [] };
    const signed = rmAnswerSigned(bad);
    const buf = encode({ type: 'rmAnswer', ...bad, signed, signature: new Uint8Array(64) }, null);
    const h = decodeHeader(buf);
    expect(h.ok && decodeBody(h.msg, buf)).toEqual({ ok: false, reason: 'malformed' });
    const pf = { pushId: 1, time: NOW, binding: new Uint8Array(0), cert: new Uint8Array(0), prefs: [], ttl: 1, cls: 9 };
    const ps = rmPushSigned(pf);
    const pb = encode({ type: 'rmPush', ...pf, signed: ps, signature: new Uint8Array(64) }, null);
    const ph = decodeHeader(pb);
    expect(ph.ok && decodeBody(ph.msg, pb)).toEqual({ ok: false, reason: 'malformed' });
  });
});

describe('the stale-binding signal on the probe path', () => {
  it('a probe carries the low 24 bits of the sender binding sequence number, under the MAC', () => {
    const out = Buffer.alloc(2000);
    const key = macKey(new Uint8Array(32).fill(3));
    const n = encodePeer(out, { type: PeerType.Probe, instanceId: 1, from: new Uint8Array(16), to: new Uint8Array(16), token: 9, counter: 1, mapVersion: 0xabcdef }, key);
    const env = openPeer(out, 0, n, 1);
    expect(typeof env).toBe('object');
    if (typeof env === 'object') expect(readPeer(out, 0, n, env).mapVersion).toBe(0xabcdef);
  });
});

describe('foreign realm keys at the agent', () => {
  it('accepts another realm key only as its RM endorsed it, and only for that prefix', () => {
    const own = generateKeyPair();
    const t = new RealmTrust({ realmKeys: [own.publicKey], wallClock: () => NOW * 1000 });
    const e = signDelegation(own, { prefix: P.b, subjectKey: bottom.publicKey, notBefore: NOW - 60, notAfter: NOW + 3600 });
    const inB = deriveHostId(P.b, generateKeyPair().publicKey);
    const elsewhere = deriveHostId(P.other, generateKeyPair().publicKey);
    expect(t.keysFor(inB)).toHaveLength(1);
    expect(t.endorse(signDelegation(mid, { prefix: P.b, subjectKey: bottom.publicKey, notBefore: NOW - 60, notAfter: NOW + 3600 }).bytes)).toBe('delegationIssuer');
    expect(t.endorse(e.bytes)).toBeNull();
    expect(t.keysFor(inB)).toHaveLength(2);
    expect(t.keysFor(elsewhere)).toHaveLength(1);
  });
});

describe('hierarchy config', () => {
  const base = { realm: 'a', prefix: 'fd00:1::/32', store: { path: ':memory:' } };
  it('refuses a delegation outside the realm, overlapping another, or naming a bad key or address, in one line each', () => {
    const key = Buffer.from(bottom.publicKey).toString('base64');
    expect(() => parseRmConfig({ ...base, hierarchy: { delegations: [{ prefix: 'fd00:2::/48', rms: ['192.0.2.1'], publicKey: key }] } })).toThrow(/hierarchy\.delegations\[0\]\.prefix.*not strictly inside/);
    expect(() => parseRmConfig({ ...base, hierarchy: { delegations: [{ prefix: 'fd00:1:1::/48', rms: ['192.0.2.1'], publicKey: key }, { prefix: 'fd00:1::/40', rms: ['192.0.2.2'], publicKey: key }] } })).toThrow(/overlaps/);
    expect(() => parseRmConfig({ ...base, hierarchy: { delegations: [{ prefix: 'fd00:1:1::/48', rms: ['not-an-ip'], publicKey: key }] } })).toThrow(/rms/);
    const ok = parseRmConfig({ ...base, hierarchy: { delegations: [{ prefix: 'fd00:1:1::/48', rms: ['192.0.2.1', { address: '2001:db8::1', port: 5000 }], publicKey: key }] } });
    expect(ok.hierarchy.delegations[0].rms).toEqual([{ address: '192.0.2.1', port: 4342 }, { address: '2001:db8::1', port: 5000 }]);
    expect(ok.policy.lookup.otherRealms).toBe('deny');
  });
});
