import { describe, expect, it } from 'vitest';
import { generateKeyPair } from '../../shared/crypto/ed25519.ts';
import { deriveHostId, parsePrefix } from '../../shared/ids.ts';
import { decodeBody, decodeHeader } from '../../shared/wire/codec.ts';
import type { Hello } from '../../shared/wire/messages.ts';
import { DEFAULT_RETRANSMIT } from '../../agent/rm/requests.ts';
import { MAX_COOKIE_ROUNDS, RmSession } from '../../agent/rm/session.ts';
import { RealmTrust } from '../../agent/rm/trust.ts';

/** The client's side of the HELLO cookie (agent/rm/session.ts): when a COOKIE makes a new HELLO. */
const prefix = parsePrefix('fd00:1::/32');
const key = generateKeyPair();
const id = deriveHostId(prefix, key.publicKey).toBytes();

function helloOf(bytes: Uint8Array): Hello {
  const h = decodeHeader(bytes);
  if (!h.ok) throw new Error(h.reason);
  const b = decodeBody(h.msg, bytes);
  if (!b.ok || b.msg.type !== 'hello') throw new Error('not a hello');
  return b.msg;
}

const trust = new RealmTrust({ realmKeys: [generateKeyPair().publicKey] });
const cookie = (v: number) => ({ type: 'cookie' as const, reqId: 5, cookie: new Uint8Array(16).fill(v) });

describe('RM client: HELLO cookie', () => {
  it('a COOKIE for the HELLO in flight gives a fresh HELLO carrying it, with the attempts started again', () => {
    const s = new RmSession(key, id, prefix.length, DEFAULT_RETRANSMIT, () => 0.5, trust);
    const first = helloOf(s.begin(5, 0));
    expect(first.cookie).toBeNull();
    // Two retransmissions: attempts 3 of 6.
    s.helloDue(10_000);
    s.helloDue(20_000);
    const again = s.cookie(cookie(1), 20_000);
    if (again === null) throw new Error('no hello');
    const h = helloOf(again);
    expect(h.reqId).toBe(5);
    expect(Buffer.from(h.cookie ?? []).equals(Buffer.from(new Uint8Array(16).fill(1)))).toBe(true);
    expect(Buffer.from(h.nonce).equals(Buffer.from(first.nonce))).toBe(false);
    // Not a retransmission: the next resend is due one initial interval later, not a long backoff.
    expect(s.helloDue(20_000 + DEFAULT_RETRANSMIT.initialMs - 1).decision).toBe('wait');
    expect(s.helloDue(20_000 + DEFAULT_RETRANSMIT.initialMs).decision).toBe('resend');
  });

  it('ignores a COOKIE for another HELLO, the same cookie again, and rounds beyond the cap', () => {
    const s = new RmSession(key, id, prefix.length, DEFAULT_RETRANSMIT, () => 0.5, trust);
    expect(s.cookie(cookie(1), 0)).toBeNull(); // no HELLO in flight
    s.begin(5, 0);
    expect(s.cookie({ ...cookie(1), reqId: 6 }, 0)).toBeNull();
    expect(s.cookie(cookie(1), 0)).not.toBeNull();
    expect(s.cookie(cookie(1), 0)).toBeNull(); // the HELLO in flight carries it already
    for (let i = 2; i <= MAX_COOKIE_ROUNDS; i++) expect(s.cookie(cookie(i), 0)).not.toBeNull();
    expect(s.cookie(cookie(99), 0)).toBeNull();
  });

  it('begin() with a kept cookie sends it in the first HELLO', () => {
    const s = new RmSession(key, id, prefix.length, DEFAULT_RETRANSMIT, () => 0.5, trust);
    const h = helloOf(s.begin(1, 0, new Uint8Array(16).fill(7)));
    expect(h.cookie?.[0]).toBe(7);
  });
});
