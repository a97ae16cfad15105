import { describe, expect, it } from 'vitest';
import { generateKeyPair, type KeyPair } from '../../shared/crypto/ed25519.ts';
import { macKey } from '../../shared/crypto/blake2s.ts';
import { deriveHostId, parsePrefix } from '../../shared/ids.ts';
import { encode } from '../../shared/wire/codec.ts';
import { signedHello } from '../../shared/wire/handshake.ts';
import { parseRmConfig } from '../../mapping-server/config.ts';
import { CookieJar, cookieRotation } from '../../mapping-server/cookies.ts';
import { CHALLENGE_WIRE_LEN } from '../../mapping-server/dispatch.ts';
import { createPolicy } from '../../mapping-server/policy.ts';
import { PushQueue, Subscriptions } from '../../mapping-server/push.ts';
import { fullBucket, prefixKey, takeToken } from '../../mapping-server/ratelimit.ts';
import { Realm } from '../../mapping-server/realm.ts';
import { Session, SessionTable, pickEvictee, type ControlSocket, type PendingPush } from '../../mapping-server/sessions.ts';

/** Any certificate-sized bytes: the session table and push queue only carry them. */
const CERT = new Uint8Array(197);

const config = parseRmConfig({ realm: 'acme', prefix: 'fd00:1::/32' });
const realm = Realm.fromConfig(config);
const policy = createPolicy(config.policy, realm);
const prefix = parsePrefix('fd00:1::/32');
const rmKey = generateKeyPair();
const socket: ControlSocket = { local: { address: '0.0.0.0', port: 4342 }, send: () => {}, close: async () => {} };

function hello(key: KeyPair, reqId = 1) {
  return signedHello(key, deriveHostId(prefix, key.publicKey).toBytes(), prefix.length, reqId).hello;
}

let nextSid = 1;
function session(key: KeyPair, lastSeen = 0): Session {
  const id = deriveHostId(prefix, key.publicKey);
  const k = macKey(new Uint8Array(32));
  return new Session(nextSid++, id, { c2s: k, s2c: k }, policy.viewFor(id), socket, '192.0.2.1', 4000, lastSeen);
}

describe('source prefixes (prefixKey)', () => {
  it('IPv4: the /24; IPv4-mapped IPv6 is the same sender', () => {
    expect(prefixKey('192.0.2.77')).toBe('192.0.2.0/24');
    expect(prefixKey('192.0.2.1')).toBe(prefixKey('192.0.2.254'));
    expect(prefixKey('192.0.3.1')).not.toBe(prefixKey('192.0.2.1'));
    expect(prefixKey('::ffff:192.0.2.77')).toBe('192.0.2.0/24');
    expect(prefixKey('::FFFF:c000:024d')).toBe('192.0.2.0/24');
  });

  it('IPv6: the /64, whatever the text form', () => {
    expect(prefixKey('2001:db8:0:1::5')).toBe('2001:db8:0:1::/64');
    expect(prefixKey('2001:0db8:0000:0001:ffff:0:0:5')).toBe('2001:db8:0:1::/64');
    expect(prefixKey('2001:db8::1')).toBe('2001:db8:0:0::/64');
    expect(prefixKey('2001:db8::1:2:3:4:5')).toBe('2001:db8:0:1::/64');
    expect(prefixKey('fe80::1%eth0')).toBe('fe80:0:0:0::/64');
    expect(prefixKey('::1')).toBe('0:0:0:0::/64');
    expect(prefixKey('64:ff9b::192.0.2.1')).toBe('64:ff9b:0:0::/64');
    expect(prefixKey('2001:db8:0:1::5')).not.toBe(prefixKey('2001:db8:0:2::5'));
  });

  it('text it cannot parse is its own key', () => {
    expect(prefixKey('2001:db8::1::2')).toBe('2001:db8::1::2');
    expect(prefixKey('2001:zz::1')).toBe('2001:zz::1');
    expect(prefixKey('1:2:3:4:5:6:7:8:9')).toBe('1:2:3:4:5:6:7:8:9');
  });
});

describe('per-session buckets', () => {
  it('a new bucket is full on first use and then refills at the rate', () => {
    const b = fullBucket();
    for (let i = 0; i < 3; i++) expect(takeToken(b, 1000, 10, 3)).toBe(true);
    expect(takeToken(b, 1000, 10, 3)).toBe(false);
    expect(takeToken(b, 1100, 10, 3)).toBe(true);
    expect(takeToken(b, 1100, 10, 3)).toBe(false);
  });

  it('each session has its own: draining one leaves another untouched', () => {
    const a = session(generateKeyPair());
    const b = session(generateKeyPair());
    while (takeToken(a.bucket, 0, 1, 5));
    expect(takeToken(a.bucket, 0, 1, 5)).toBe(false);
    expect(takeToken(b.bucket, 0, 1, 5)).toBe(true);
  });
});

describe('session quotas', () => {
  it('pickEvictee: a session that never carried a message first, then the least recently seen', () => {
    const s = (proven: boolean, lastSeen: number) => ({ proven, lastSeen });
    const a = s(true, 10);
    const b = s(false, 50);
    const c = s(true, 5);
    expect(pickEvictee([a, b, c])).toBe(b);
    expect(pickEvictee([a, c])).toBe(c);
    expect(pickEvictee([])).toBeUndefined();
  });

  it('sessions per host ID: the least valuable session of that ID is evicted, not the HELLO refused', () => {
    const ended: Session[] = [];
    const t = new SessionTable(rmKey, policy, 100, 600_000, { perId: 2, perPrefix: 100 }, (s) => ended.push(s));
    const key = generateKeyPair();
    const other = generateKeyPair();
    const w = (k: KeyPair, now: number) => {
      const r = t.hello(hello(k), socket, '192.0.2.1', 4000, now, () => CERT);
      if (r.kind !== 'welcome') throw new Error(r.kind);
      return r.session;
    };
    const s1 = w(key, 1);
    const s2 = w(key, 2);
    const o = w(other, 3);
    s1.proven = true;
    s1.lastSeen = 10; // the real host's session, in use
    const s3 = w(key, 11); // s2 never carried a message (a replayed HELLO's session): it goes
    expect(ended).toEqual([s2]);
    expect(t.get(s2.sid)).toBeUndefined();
    expect(t.get(s1.sid)).toBe(s1);
    expect(t.get(o.sid)).toBe(o);
    expect(t.sessionsOf(s1.hostId.key)).toBe(2);
    s3.proven = true;
    s3.lastSeen = 20;
    w(key, 21); // both proven now: the least recently seen (s1) goes
    expect(ended).toEqual([s2, s1]);
    expect(t.size).toBe(3);
  });

  it('sessions per source prefix: beyond the quota, busy; other prefixes and moves are counted', () => {
    const t = new SessionTable(rmKey, policy, 100, 600_000, { perId: 16, perPrefix: 2 });
    const from = (address: string) => t.hello(hello(generateKeyPair()), socket, address, 4000, 0, () => CERT);
    const a = from('192.0.2.1');
    expect(a.kind).toBe('welcome');
    expect(from('192.0.2.200').kind).toBe('welcome');
    expect(from('192.0.2.3')).toEqual({ kind: 'busy', reason: 'prefix' });
    expect(from('::ffff:192.0.2.3')).toEqual({ kind: 'busy', reason: 'prefix' });
    expect(from('192.0.3.1').kind).toBe('welcome');
    // A session that moves away (return routability) frees its place in the old prefix.
    if (a.kind !== 'welcome') throw new Error();
    t.move(a.session, socket, '198.51.100.7', 5000);
    expect(a.session.address).toBe('198.51.100.7');
    expect(from('192.0.2.3').kind).toBe('welcome');
  });
});

describe('subscription and push quotas', () => {
  it('subscriptions per host ID are summed over its sessions', () => {
    const subs = new Subscriptions(10, 1000, 3);
    const key = generateKeyPair();
    const a = session(key);
    const b = session(key);
    const c = session(generateKeyPair());
    expect(subs.add(a, 'x')).toBe('added');
    expect(subs.add(a, 'y')).toBe('added');
    expect(subs.add(b, 'x')).toBe('added');
    expect(subs.add(b, 'z')).toBe('idFull');
    expect(subs.add(c, 'z')).toBe('added'); // another ID has its own quota
    subs.dropSession(a);
    expect(subs.add(b, 'z')).toBe('added');
  });

  it('a session over its pending-push cap loses its own oldest push, never another session\'s', () => {
    const sent: [Session, PendingPush][] = [];
    const q = new PushQueue(100, 200, 6, (s, p) => sent.push([s, p]), 2);
    const a = session(generateKeyPair());
    const b = session(generateKeyPair());
    const bytes = new Uint8Array(1);
    expect(q.push(b, 'k1', bytes, 60, [], 0, CERT)).toBe(true);
    expect(q.push(a, 'k1', bytes, 60, [], 0, CERT)).toBe(true);
    expect(q.push(a, 'k2', bytes, 60, [], 0, CERT)).toBe(true);
    expect(q.push(a, 'k3', bytes, 60, [], 0, CERT)).toBe(true);
    expect([...a.pushByKey.keys()]).toEqual(['k2', 'k3']);
    expect([...b.pushByKey.keys()]).toEqual(['k1']);
    expect(q.counters.sessionFull).toBe(1);
    expect(q.pending).toBe(3);
    // A newer binding for a followed ID replaces its pending push and refreshes its age.
    expect(q.push(a, 'k2', bytes, 60, [], 1, CERT)).toBe(true);
    expect(q.push(a, 'k4', bytes, 60, [], 1, CERT)).toBe(true);
    expect([...a.pushByKey.keys()]).toEqual(['k2', 'k4']);
    expect(q.pending).toBe(3);
  });

  it('the global cap still holds across sessions', () => {
    const q = new PushQueue(2, 200, 6, () => {}, 10);
    const bytes = new Uint8Array(1);
    expect(q.push(session(generateKeyPair()), 'k', bytes, 60, [], 0, CERT)).toBe(true);
    expect(q.push(session(generateKeyPair()), 'k', bytes, 60, [], 0, CERT)).toBe(true);
    expect(q.push(session(generateKeyPair()), 'k', bytes, 60, [], 0, CERT)).toBe(false);
    expect(q.counters.overflow).toBe(1);
  });
});

describe('HELLO cookies', () => {
  it('a cookie is good for its address and port, across one rotation of the secret, not two', () => {
    const jar = new CookieJar(0, 120_000);
    const c = jar.make('192.0.2.1', 4000, 0);
    expect(jar.check(c, '192.0.2.1', 4000, 1)).toBe(true);
    expect(jar.check(c, '192.0.2.1', 4001, 1)).toBe(false);
    expect(jar.check(c, '192.0.2.2', 4000, 1)).toBe(false);
    expect(jar.check(c, '192.0.2.1', 4000, 150_000)).toBe(true); // previous secret
    expect(jar.check(c, '192.0.2.1', 4000, 280_000)).toBe(false); // rotated twice
    expect(jar.check(new Uint8Array(16), '192.0.2.1', 4000, 280_000)).toBe(false);
    expect(jar.check(new Uint8Array(3), '192.0.2.1', 4000, 280_000)).toBe(false);
  });

  it('rotation: keep, rotate once, or replace both after a long idle', () => {
    expect(cookieRotation(0, 119_999, 120_000)).toBe('keep');
    expect(cookieRotation(0, 120_000, 120_000)).toBe('rotate');
    expect(cookieRotation(0, 240_000, 120_000)).toBe('reset');
  });

  it('COOKIE is smaller than any HELLO that draws it; CHALLENGE is 47 bytes', () => {
    const jar = new CookieJar(0);
    const cookie = jar.answer(0xffffffff, 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff', 65535, 0);
    const smallest = encode(hello(generateKeyPair(), 0), null);
    expect(cookie.length).toBeLessThanOrEqual(36);
    expect(cookie.length).toBeLessThan(smallest.length);
    expect(CHALLENGE_WIRE_LEN).toBe(47);
  });
});
