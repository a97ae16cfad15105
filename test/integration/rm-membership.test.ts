import { createSocket, type Socket } from 'node:dgram';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { afterEach, describe, expect, it } from 'vitest';
import { generateKeyPair, type KeyPair } from '../../shared/crypto/ed25519.ts';
import { loadKeyPair, saveKeyPair } from '../../shared/keyfile.ts';
import { deriveHostId, parseHostId, parsePrefix } from '../../shared/ids.ts';
import { silentLogger } from '../../shared/log.ts';
import { mintToken, parseToken, type JoinToken } from '../../shared/membership.ts';
import { decodeBody, decodeHeader, encode } from '../../shared/wire/codec.ts';
import { signedHello } from '../../shared/wire/handshake.ts';
import { RejectCode } from '../../shared/wire/messages.ts';
import { createRmClient, type RmClient } from '../../agent/rm/client.ts';
import { RealmTrust } from '../../agent/rm/trust.ts';
import type { BindingAnswer } from '../../agent/rm/answers.ts';
import { runRm, loadResolvedRmConfig, type RunningRm } from '../../mapping-server/main.ts';
import { admit, backup, invite, members, revoke } from '../../mapping-server/admin.ts';
import { bound, ScriptedRm } from './rm-scripted.ts';
import { REALM_PREFIX, bindingFor, startHarness, type Harness } from './rm-harness.ts';

/**
 * Realm membership end to end, in process (docs/security.md, decisions 1–3): strangers are refused
 * before any signature work, tokens join once, certificates come with every answer and are checked
 * by clients, revocation reaches followers, and the operator's CLI functions change a running RM.
 */
let cleanup: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  const all = cleanup.reverse();
  cleanup = [];
  // Some were stopped by the test already (a second close throws): each is tried once.
  for (const c of all) await Promise.resolve().then(c).catch(() => undefined);
});

const until = async (f: () => boolean, ms = 4000, what = 'condition'): Promise<void> => {
  const t0 = Date.now();
  while (!f()) {
    if (Date.now() - t0 > ms) throw new Error(`${what} not met within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 10));
  }
};

const prefix = parsePrefix(REALM_PREFIX);

async function harness(extra: Record<string, unknown> = {}): Promise<Harness> {
  const h = await startHarness(extra);
  cleanup.push(() => h.close());
  return h;
}

/** A client that is not admitted (or joins with a token); started in the background. */
function stranger(port: number, rmKey: Uint8Array, o: { key?: KeyPair; join?: JoinToken } = {}): RmClient {
  const c = createRmClient({
    rm: [{ address: '127.0.0.1', port, publicKey: rmKey }],
    key: o.key ?? generateKeyPair(),
    prefix: o.join?.prefix ?? prefix,
    join: o.join,
    retransmit: { initialMs: 50, maxMs: 200, attempts: 4 },
  });
  c.start().catch(() => undefined);
  cleanup.push(() => c.stop());
  return c;
}

/**
 * Sends one HELLO, as a client does: first without a cookie, which draws the RM's COOKIE (every
 * HELLO needs one, docs/security.md decision 4), then the same HELLO with it. Returns the answer to
 * the HELLO with the cookie (helloSize: that HELLO's size), or throws "no answer".
 */
async function helloOnce(port: number, key: KeyPair, o: { join?: { inviteId: Uint8Array; expiresAt: number; secret: Uint8Array }; badSignature?: boolean } = {}): Promise<{ type: string; code?: number; size: number; helloSize: number }> {
  const sock: Socket = createSocket('udp4');
  await new Promise<void>((r) => sock.bind(0, '127.0.0.1', () => r()));
  cleanup.push(() => new Promise<void>((r) => sock.close(() => r())));
  const id = deriveHostId(prefix, key.publicKey);
  const { hello } = signedHello(key, id.toBytes(), prefix.length, 7, { join: o.join ?? null });
  const h = o.badSignature ? { ...hello, signature: new Uint8Array(64).fill(9) } : hello;
  const inbox: { type: string; code?: number; cookie?: Uint8Array; size: number }[] = [];
  let wake: (() => void) | null = null;
  sock.on('message', (buf) => {
    const hd = decodeHeader(buf);
    if (!hd.ok) return;
    const b = decodeBody(hd.msg, buf);
    if (!b.ok) return;
    inbox.push({ type: b.msg.type, code: b.msg.type === 'reject' ? b.msg.code : undefined, cookie: b.msg.type === 'cookie' ? Uint8Array.from(b.msg.cookie) : undefined, size: buf.length });
    wake?.();
  });
  const next = async () => {
    if (inbox.length === 0) {
      await new Promise<void>((r) => {
        const t = setTimeout(r, 2000);
        wake = () => {
          clearTimeout(t);
          r();
        };
      });
      wake = null;
    }
    const m = inbox.shift();
    if (m === undefined) throw new Error('no answer to HELLO');
    return m;
  };
  sock.send(encode(h, null), port, '127.0.0.1');
  const cookie = await next();
  if (cookie.type !== 'cookie' || cookie.cookie === undefined) throw new Error(`a HELLO without a cookie drew ${cookie.type}, not COOKIE`);
  // The cookie is not under the signature nor the join proof: the same HELLO, with it.
  const bytes = encode({ ...h, cookie: cookie.cookie }, null);
  sock.send(bytes, port, '127.0.0.1');
  const a = await next();
  return { type: a.type, code: a.code, size: a.size, helloSize: bytes.length };
}

describe('membership at the RM', () => {
  it('refuses a stranger before any signature work, with a REJECT smaller than its HELLO', async () => {
    const h = await harness();
    // A garbage signature: had the RM checked it first, the HELLO would count as invalid instead.
    const a = await helloOnce(h.port, generateKeyPair(), { badSignature: true });
    expect(a).toMatchObject({ type: 'reject', code: RejectCode.notMember });
    expect(a.size).toBeLessThan(a.helloSize);
    const c = h.server.counters();
    // Refused by the membership gate, after the cookie (which is checked first, and held).
    expect(c['cookie.accepted']).toBe(1);
    expect(c['hello.notMember']).toBe(1);
    expect(c['hello.invalid']).toBe(0);
    // The same for a token proof that does not check out: bad token, still no signature work.
    const t = mintToken(generateKeyPair(), prefix, Math.floor(Date.now() / 1000) + 600);
    const b = await helloOnce(h.port, generateKeyPair(), { join: t, badSignature: true });
    expect(b).toMatchObject({ type: 'reject', code: RejectCode.badToken });
    expect(h.server.counters()['hello.badToken']).toBe(1);
    expect(h.server.counters()['hello.invalid']).toBe(0);
    // A member's HELLO with a bad signature is checked, and dropped.
    const k = generateKeyPair();
    await h.admit(k);
    await expect(helloOnce(h.port, k, { badSignature: true })).rejects.toThrow(/no answer/);
    expect(h.server.counters()['hello.invalid']).toBe(1);
    // A stranger's client logs what to do and keeps trying; it never gets a session.
    const s = stranger(h.port, h.rmKey.publicKey);
    await until(() => s.counters()['hello.notMember'] >= 2);
    expect(s.counters()['sessions.established']).toBe(0);
  });

  it('admits a host with a join token once, and only once (also after an RM restart)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'rn-join-'));
    cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
    const cfg = writeRmConfig(dir);
    let rm: RunningRm = await runRm(cfg, { log: silentLogger });
    cleanup.push(() => rm.stop());
    const port = rm.server.addresses()[0].port;
    const config = loadResolvedRmConfig(cfg);
    const [inv] = invite(config, { ttlS: 3600, count: 1 });
    const token = parseToken(inv.token);
    const rmKey = token.realmKey;

    const joiner = stranger(port, rmKey, { join: token });
    await until(() => joiner.counters()['sessions.established'] === 1);
    expect(joiner.trust.cert?.hostId.equals(joiner.hostId)).toBe(true);
    expect(rm.server.counters()['hello.joined']).toBe(1);
    expect(members(config).map((m) => [m.hostId, m.via])).toEqual([[joiner.hostId.toString(), 'token']]);

    // Another host with the same token: refused.
    const second = stranger(port, rmKey, { join: token });
    await until(() => second.counters()['hello.badToken'] >= 1);
    expect(second.counters()['sessions.established']).toBe(0);
    await second.stop();

    // After a restart the spent invite is still spent, and the member still a member.
    await joiner.stop();
    await rm.stop();
    rm = await runRm(cfg, { log: silentLogger });
    const port2 = rm.server.addresses()[0].port;
    const third = stranger(port2, rmKey, { join: token });
    await until(() => third.counters()['hello.badToken'] >= 1);
    expect(third.counters()['sessions.established']).toBe(0);
    expect(rm.server.member(joiner.hostId)?.active).toBe(true);
  });

  it('rm backup copies the key and a consistent store while the RM runs; the copy serves after a restore', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'rn-backup-'));
    cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
    const cfg = writeRmConfig(dir);
    let rm: RunningRm = await runRm(cfg, { log: silentLogger });
    cleanup.push(() => rm.stop());
    const config = loadResolvedRmConfig(cfg);
    const k = generateKeyPair();
    const id = admit(config, { publicKey: k.publicKey }).hostId;
    const r = await backup(config, join(dir, 'bk'));
    expect(r).toMatchObject({ members: 1 });
    expect(statSync(join(dir, 'bk')).mode & 0o777).toBe(0o700);
    expect(statSync(r.store).mode & 0o777).toBe(0o600);
    expect(statSync(r.key).mode & 0o777).toBe(0o600);
    await expect(backup(config, join(dir, 'bk'))).rejects.toThrow(/already holds a backup/);
    // Disaster: the store and key are lost; restored from the copy, the RM knows its member and keeps its identity.
    await rm.stop();
    const before = readFileSync(config.key);
    rmSync(config.store.path);
    rmSync(config.key);
    copyFileSync(r.store, config.store.path);
    copyFileSync(r.key, config.key);
    rm = await runRm(cfg, { log: silentLogger });
    expect(readFileSync(config.key).equals(before)).toBe(true);
    expect(rm.server.member(parseHostId(id))?.active).toBe(true);
  });

  it('refuses an expired token and a token for another realm prefix', async () => {
    const h = await harness();
    const realmKey = h.rmKey;
    const expired = mintToken(realmKey, prefix, Math.floor(Date.now() / 1000) - 1);
    const a = await helloOnce(h.port, generateKeyPair(), { join: expired });
    expect(a).toMatchObject({ type: 'reject', code: RejectCode.badToken });
    // Minted by this RM's key, but for a prefix outside its realm.
    const foreign = mintToken(realmKey, parsePrefix('fd00:9::/32'), Math.floor(Date.now() / 1000) + 600);
    const k = generateKeyPair();
    const sock = stranger(h.port, realmKey.publicKey, { key: k, join: foreign });
    await until(() => sock.counters()['hello.badToken'] >= 1);
    expect(h.server.counters()['hello.joined']).toBe(0);
  });

  it('a join from a source prefix whose sessions are at quota is refused busy before the signature check, and its token is not spent', async () => {
    const h = await harness({ sessions: { perPrefix: 1 } });
    await h.client(); // 127.0.0.0/24 now holds its one session
    const token = mintToken(h.rmKey, prefix, Math.floor(Date.now() / 1000) + 600);
    // Bad signature: had the signature been checked first, this would be dropped as invalid.
    expect(await helloOnce(h.port, generateKeyPair(), { join: token, badSignature: true })).toMatchObject({ type: 'reject', code: RejectCode.busy });
    const k = generateKeyPair();
    expect(await helloOnce(h.port, k, { join: token })).toMatchObject({ type: 'reject', code: RejectCode.busy });
    const c = h.server.counters();
    expect(c['hello.invalid']).toBe(0);
    expect(c['hello.prefixFull']).toBe(2);
    expect(c['hello.joined']).toBe(0);
    expect(h.server.member(deriveHostId(prefix, k.publicKey))).toBeUndefined();
  });

  it('serves a certificate with every answer, which the client checks; RENEW gives a fresh one', async () => {
    // The RM's clock starts 40,000 s back, so that moving it to now ages the first certificate.
    let wall = Date.now() - 40_000_000;
    const h = await startHarness({}, undefined, { wallClock: () => wall });
    cleanup.push(() => h.close());
    const ka = generateKeyPair();
    const a = await h.client({ key: ka });
    const b = await h.client();
    expect(a.trust.cert?.notAfter).toBe(Math.floor(wall / 1000) + 86_400);
    await a.register(bindingFor(ka, 1));
    const got = (await b.lookup(a.hostId)) as BindingAnswer;
    expect(got.kind).toBe('binding');
    expect(got.certNotAfter).toBe(a.trust.cert?.notAfter);
    const first = a.trust.cert?.serial ?? 0;
    // Within the first third of its life the RM keeps the certificate it issued...
    expect(await a.renew()).toBe(true);
    expect(a.trust.cert?.serial).toBe(first);
    // ...and after it, signs a fresh one.
    wall += 40_000_000;
    expect(await a.renew()).toBe(true);
    expect(a.trust.cert?.serial).toBeGreaterThan(first);
    expect(h.server.counters()['renew.ok']).toBe(2);
  });

  it('revocation ends the host\'s sessions, expires its binding and tells its followers, who refuse it', async () => {
    const h = await harness();
    const kt = generateKeyPair();
    const target = await h.client({ key: kt });
    await target.register(bindingFor(kt, 1));
    const follower = await h.client();
    const revoked: string[] = [];
    follower.onRevoke((id) => revoked.push(id.toString()));
    expect((await follower.lookup(target.hostId)).kind).toBe('binding');
    await follower.subscribe([target.hostId]);
    expect(await h.server.revoke(target.hostId)).toBe(true);
    await until(() => revoked.length === 1, 4000, `REVOKE at the follower ${JSON.stringify(h.server.counters())} ${JSON.stringify(follower.counters())}`);
    expect(revoked).toEqual([target.hostId.toString()]);
    await until(() => h.server.counters()['push.pending'] === 0);
    const c = h.server.counters();
    expect(c['sessions.revoked']).toBe(1);
    expect(c['members.revokesPushed']).toBe(1);
    expect(h.server.bindingCount()).toBe(0);
    expect(follower.trust.answers.revokedCount()).toBe(1);
    // The revoked host's client learns it has no session at its next request, and is refused a new one.
    target.lookup(follower.hostId).catch(() => undefined);
    await until(() => target.counters()['hello.notMember'] >= 1);
    expect((await follower.lookup(target.hostId)).kind).toBe('negative');
  });
});

describe('the operator CLI against a running RM', () => {
  it('admit and revoke are applied by the running RM within about a second', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'rn-cli-'));
    cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
    const cfg = writeRmConfig(dir);
    const rm = await runRm(cfg, { log: silentLogger });
    cleanup.push(() => rm.stop());
    const port = rm.server.addresses()[0].port;
    const config = loadResolvedRmConfig(cfg);
    const rmKey = loadKeyPair(config.key).publicKey;

    const k = generateKeyPair();
    const c = stranger(port, rmKey, { key: k });
    await until(() => c.counters()['hello.notMember'] >= 1);
    const t0 = Date.now();
    expect(admit(config, { publicKey: k.publicKey }).already).toBe(false);
    await until(() => c.counters()['sessions.established'] === 1, 4000, 'session after the CLI admit');
    // The sweep polls once a second; the client's HELLO backoff adds at most ~200 ms.
    expect(Date.now() - t0).toBeLessThan(2500);
    expect(admit(config, { publicKey: k.publicKey }).already).toBe(true);

    revoke(config, { hostId: c.hostId.toString() });
    await until(() => rm.server.counters()['sessions.revoked'] === 1, 2500, 'session ended after the CLI revoke');
    expect(members(config).find((m) => m.hostId === c.hostId.toString())?.revokedAt).not.toBeNull();
  });
});

describe('a client checks the certificate of every binding', () => {
  it('refuses a foreign-realm, expired or mismatched certificate, and a changed key', async () => {
    const rm = new ScriptedRm(await bound(), generateKeyPair());
    cleanup.push(() => void rm.sock.close());
    const c = createRmClient({ rm: [{ address: '127.0.0.1', port: rm.port, publicKey: rm.key.publicKey }], key: generateKeyPair(), prefix, retransmit: { initialMs: 50, maxMs: 200, attempts: 4 } });
    await c.start();
    cleanup.push(() => c.stop());
    const peerKey = generateKeyPair();
    const peer = deriveHostId(prefix, peerKey.publicKey);
    const b1 = bindingFor(peerKey, 1);
    const nowS = Math.floor(Date.now() / 1000);
    const cases: [string, Uint8Array, string][] = [
      ['another realm key', rm.certFor(b1.bytes, { key: generateKeyPair() }), 'binding.badCert'],
      ['expired', rm.certFor(b1.bytes, { notBefore: nowS - 7200, notAfter: nowS - 10 }), 'binding.badCert'],
      ['for another host', rm.certFor(bindingFor(generateKeyPair(), 1).bytes), 'binding.badCert'],
    ];
    for (const [what, cert, counter] of cases) {
      rm.serve(b1);
      const before = c.counters()[counter];
      rm.nextLookupCert = cert;
      await expect(c.lookup(peer), what).rejects.toThrow(/invalid binding/);
      expect(c.counters()[counter], what).toBe(before + 1);
    }
    // With the realm's certificate it is accepted, and the key is pinned from then on.
    const ok = await c.lookup(peer);
    expect(ok.kind).toBe('binding');
    // A prefix length other than the certificate's (the realm's word) is refused.
    const b2 = bindingFor(peerKey, 2);
    rm.serve(b2);
    rm.nextLookupCert = rm.certFor(Buffer.concat([b2.bytes.subarray(0, 20), Uint8Array.of(48), b2.bytes.subarray(21)]));
    await expect(c.lookup(peer)).rejects.toThrow(/invalid binding/);
    expect(c.counters()['binding.prefixLen'] + c.counters()['binding.badCert']).toBeGreaterThanOrEqual(4);
  });

  it('a join needs the token; the host keeps its certificate (no token) across a restart', async () => {
    const h = await harness();
    const token = mintToken(h.rmKey, prefix, Math.floor(Date.now() / 1000) + 600);
    const key = generateKeyPair();
    const trust = new RealmTrust({ realmKeys: [], join: token });
    const c = createRmClient({ rm: [{ address: '127.0.0.1', port: h.port }], key, prefix, trust, retransmit: { initialMs: 50, maxMs: 200, attempts: 4 } });
    await c.start();
    const cert = trust.cert;
    expect(cert).not.toBeNull();
    await c.stop();
    // A restart: the state file gave back the realm key and the certificate; the token is spent.
    const again = new RealmTrust({ realmKeys: trust.realmKeys, join: token, cert: cert?.bytes });
    expect(again.joinFor()).toBeNull();
    const c2 = createRmClient({ rm: [{ address: '127.0.0.1', port: h.port }], key, prefix, trust: again, retransmit: { initialMs: 50, maxMs: 200, attempts: 4 } });
    await c2.start();
    cleanup.push(() => c2.stop());
    expect(c2.counters()['sessions.established']).toBe(1);
    expect(h.server.counters()['hello.joined']).toBe(1);
    expect(h.server.counters()['hello.badToken']).toBe(0);
  });
});

function writeRmConfig(dir: string): string {
  saveKeyPair(join(dir, 'rm.key'), generateKeyPair());
  const cfg = join(dir, 'rm.yaml');
  writeFileSync(
    cfg,
    stringify({
      realm: 'acme',
      prefix: REALM_PREFIX,
      listen: [{ address: '127.0.0.1', port: 0 }],
      key: 'rm.key',
      store: { path: 'rm.db', batchWindowMs: 1 },
      log: { level: 'silent' },
    }),
  );
  return cfg;
}
