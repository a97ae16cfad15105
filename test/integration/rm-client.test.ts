import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { generateKeyPair } from '../../shared/crypto/ed25519.ts';
import { parsePrefix } from '../../shared/ids.ts';
import { silentLogger } from '../../shared/log.ts';
import { systemClock } from '../../shared/clock.ts';
import { parseRmConfig } from '../../mapping-server/config.ts';
import { createMappingServer } from '../../mapping-server/server.ts';
import { createRmClient } from '../../agent/rm/client.ts';
import type { BindingAnswer } from '../../agent/rm/answers.ts';
import { LOCATORS, bindingFor, startHarness, type Harness } from './rm-harness.ts';

let h: Harness | null = null;
afterEach(async () => {
  await h?.close();
  h = null;
});

const until = async (f: () => boolean, ms = 3000): Promise<void> => {
  const t0 = Date.now();
  while (!f()) {
    if (Date.now() - t0 > ms) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 5));
  }
};

describe('RM and client, in process', () => {
  it('register, lookup (negative then positive), newer replaces older, stale refused', async () => {
    h = await startHarness();
    const ka = generateKeyPair();
    const a = await h.client({ key: ka });
    const b = await h.client();
    const neg = await b.lookup(a.hostId);
    expect(neg).toEqual({ kind: 'negative', hostId: a.hostId, ttl: 60 });
    expect(await a.register(bindingFor(ka, 1))).toEqual({ ok: true, seq: 1, expiresIn: 180, refresh: 60 });
    const pos = await b.lookup(a.hostId);
    expect(pos.kind).toBe('binding');
    expect((pos as BindingAnswer).locators).toEqual(LOCATORS);
    expect((pos as BindingAnswer).ttl).toBe(300);
    await a.register(bindingFor(ka, 2, { locators: LOCATORS.slice(1) }));
    const pos2 = (await b.lookup(a.hostId)) as BindingAnswer;
    expect(pos2.binding.seq).toBe(2);
    expect(pos2.locators).toHaveLength(1);
    expect(await a.register(bindingFor(ka, 1))).toEqual({ ok: false, status: 'stale', seq: 2 });
    // The same binding again is a refresh: acknowledged, nothing changes.
    expect((await a.register(bindingFor(ka, 2, { locators: LOCATORS.slice(1) }))).ok).toBe(true);
    expect(h.server.counters()['register.refresh']).toBe(1);
  });

  it('pushes every new binding to subscribers, who acknowledge', async () => {
    h = await startHarness();
    const ka = generateKeyPair();
    const a = await h.client({ key: ka });
    const subs = await Promise.all([h.client(), h.client(), h.client()]);
    const got: number[][] = subs.map(() => []);
    subs.forEach((s, i) => s.onPush((x) => got[i].push(x.binding.seq)));
    for (const s of subs) expect(await s.subscribe([a.hostId])).toBe(1);
    await a.register(bindingFor(ka, 10));
    await a.register(bindingFor(ka, 11));
    await until(() => got.every((g) => g.includes(11)));
    expect(got.map((g) => g[g.length - 1])).toEqual([11, 11, 11]);
    await until(() => h!.server.counters()['push.pending'] === 0);
    expect(h.server.counters()['push.acked']).toBeGreaterThanOrEqual(3);
    // Unsubscribed: no more pushes.
    await subs[0].unsubscribe([a.hostId]);
    await a.register(bindingFor(ka, 12));
    await until(() => got[1].includes(12) && got[2].includes(12));
    expect(got[0]).not.toContain(12);
  });

  it('serves the realm policy on uplinks (ispb backup only) with the signed binding', async () => {
    h = await startHarness({ policy: { uplinks: { ispb: { use: 'backup' } } } });
    // The harness store has no describe-time prefs; prefs are computed at registration.
    const ka = generateKeyPair();
    const a = await h.client({ key: ka });
    await a.register(bindingFor(ka, 1));
    const r = (await (await h.client()).lookup(a.hostId)) as BindingAnswer;
    expect(r.binding.locators.map((l) => l.priority)).toEqual([1, 1]);
    expect(r.locators.map((l) => [l.uplink, l.priority])).toEqual([
      ['ispa', 1],
      ['ispb', 200],
    ]);
  });

  it('accepts hosts of sub-realms, refuses IDs of other realms', async () => {
    h = await startHarness({ subRealms: [{ name: 'lab', prefix: 'fd00:1:5::/48' }] });
    const kl = generateKeyPair();
    const lab = await h.client({ key: kl, prefix: parsePrefix('fd00:1:5::/48') });
    expect((await lab.register(bindingFor(kl, 1, { prefix: 'fd00:1:5::/48' }))).ok).toBe(true);
    const ko = generateKeyPair();
    const other = await h.client({ key: ko, prefix: parsePrefix('fd00:2::/32') });
    expect(await other.register(bindingFor(ko, 1, { prefix: 'fd00:2::/32' }))).toEqual({ ok: false, status: 'notInRealm', seq: 0 });
  });

  it('expires registrations that are not refreshed', async () => {
    h = await startHarness({ registration: { refreshS: 1, expiryS: 2 }, sweep: { intervalMs: 20, batch: 1000 } });
    const ka = generateKeyPair();
    const a = await h.client({ key: ka });
    await a.register(bindingFor(ka, 1), { keep: false });
    expect(h.server.bindingCount()).toBe(1);
    await until(() => h!.server.bindingCount() === 0, 4000);
    expect((await (await h.client()).lookup(a.hostId)).kind).toBe('negative');
    // The expired binding cannot be replayed as new: its sequence number is remembered.
    expect((await a.register(bindingFor(ka, 1))).ok).toBe(true); // the same bytes: a re-registration
    expect(h.server.bindingCount()).toBe(1);
  }, 10_000);

  it('refuses more than maxOutstanding requests at once and times out against a silent RM', async () => {
    const c = createRmClient({
      rm: [{ address: '127.0.0.1', port: 9, publicKey: generateKeyPair().publicKey }],
      key: generateKeyPair(),
      prefix: parsePrefix('fd00:1::/32'),
      retransmit: { initialMs: 20, maxMs: 40, attempts: 3 },
      maxOutstanding: 2,
    });
    const started = c.start();
    started.catch(() => {});
    const p1 = c.lookup(c.hostId);
    const p2 = c.lookup(c.hostId);
    p1.catch(() => {});
    p2.catch(() => {});
    await new Promise((r) => setTimeout(r, 10));
    await c.stop();
    await expect(p1).rejects.toThrow(/stopped/);
  });

  it('sets up a new session when the RM restarts, and re-subscribes', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'rn-rm-'));
    const cfg = (port: number) =>
      parseRmConfig({ realm: 'acme', prefix: 'fd00:1::/32', listen: [{ address: '127.0.0.1', port }], store: { path: join(dir, 'rm.db'), batchWindowMs: 1 }, log: { level: 'silent' } });
    const rmKey = generateKeyPair();
    const s1 = createMappingServer(cfg(0), { clock: systemClock, log: silentLogger, key: rmKey });
    await s1.start();
    const port = s1.addresses()[0].port;
    const ka = generateKeyPair();
    const mk = (key = generateKeyPair()) =>
      createRmClient({ rm: [{ address: '127.0.0.1', port, publicKey: rmKey.publicKey }], key, prefix: parsePrefix('fd00:1::/32'), retransmit: { initialMs: 30, maxMs: 200, attempts: 8 } });
    const kb = generateKeyPair();
    await s1.admit(ka.publicKey);
    await s1.admit(kb.publicKey);
    const a = mk(ka);
    const b = mk(kb);
    await a.start();
    await b.start();
    const got: number[] = [];
    b.onPush((x) => got.push(x.binding.seq));
    await b.subscribe([a.hostId]);
    await a.register(bindingFor(ka, 1));
    await s1.stop();
    const s2 = createMappingServer(cfg(port), { clock: systemClock, log: silentLogger, key: rmKey });
    await s2.start();
    try {
      // The durable store kept the binding across the restart.
      expect(((await b.lookup(a.hostId)) as BindingAnswer).binding.seq).toBe(1);
      expect(b.counters()['sessions.lost']).toBe(1);
      // b re-subscribed after its new session, so it hears of seq 2.
      await until(() => s2.counters()['subscriptions.live'] === 1);
      await a.register(bindingFor(ka, 2));
      await until(() => got.includes(2));
    } finally {
      await a.stop();
      await b.stop();
      await s2.stop();
    }
  });
});
