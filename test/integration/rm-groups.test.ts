import { afterEach, describe, expect, it } from 'vitest';
import { mkdtemp, rm as rmDir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateKeyPair, type KeyPair } from '../../shared/crypto/ed25519.ts';
import { deriveHostId, parsePrefix, type HostId } from '../../shared/ids.ts';
import { signGroup, type GroupBinding, type GroupHost } from '../../shared/group.ts';
import type { GroupAnswer } from '../../agent/rm/answers.ts';
import type { RmClient } from '../../agent/rm/client.ts';
import { until } from '../helpers/fake-agent.ts';
import { LOCATORS, REALM_PREFIX, bindingFor, startHarness, type Harness } from './rm-harness.ts';

/**
 * Slice 2 at the Realm Manager (mapping-server/groups.ts), through real RM clients over UDP:
 * owner-signed user/data bindings, hosts' consent, presence (the RCA), pushes, durability.
 */
const USER_PREFIX = 'fd00:2:1::/48';
const DATA_PREFIX = 'fd00:2:2::/48';
const slice2 = { slice2: { userPrefix: USER_PREFIX, dataPrefix: DATA_PREFIX } };

let cleanup: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanup.reverse()) await c();
  cleanup = [];
});

async function harness(extra: Record<string, unknown> = {}): Promise<Harness> {
  const h = await startHarness({ ...slice2, ...extra });
  cleanup.push(() => h.close());
  return h;
}

interface Host {
  key: KeyPair;
  id: HostId;
  client: RmClient;
}

async function host(h: Harness, key = generateKeyPair(), register = true): Promise<Host> {
  const client = await h.client({ key });
  const id = deriveHostId(parsePrefix(REALM_PREFIX), key.publicKey);
  if (register) expect((await client.register(bindingFor(key, Date.now()))).ok).toBe(true);
  return { key, id, client };
}

function userBinding(owner: KeyPair, hosts: readonly GroupHost[], seq: number, prefix = USER_PREFIX): GroupBinding {
  return signGroup(owner, { kind: 'user', prefix: parsePrefix(prefix), hosts, seq, ttl: 300 });
}

async function lookupGroup(c: RmClient, id: HostId): Promise<GroupAnswer> {
  const a = await c.lookup(id);
  if (a.kind !== 'group') throw new Error(`expected a group answer, got ${a.kind}`);
  return a;
}

describe('user and data IDs at the Realm Manager', () => {
  it('serves an owner-signed binding, offers only hosts that consented and are registered, inline in one answer', async () => {
    const h = await harness();
    const [lap, pho, cor] = [await host(h), await host(h), await host(h)];
    const alice = generateKeyPair();
    const g = userBinding(alice, [{ hostId: lap.id, priority: 1, weight: 1 }, { hostId: pho.id, priority: 2, weight: 1 }], 1);
    // Before it is published the ID is unknown (the same negative answer as for an unknown host).
    expect((await cor.client.lookup(g.id)).kind).toBe('negative');
    expect((await lap.client.publish(g.bytes)).status).toBe('ok');
    let a = await lookupGroup(cor.client, g.id);
    expect(a.present).toEqual([false, false]);
    expect(a.hosts).toEqual([]);
    // The laptop consents: now present, and its host binding comes inline, verified.
    expect((await lap.client.serve(g.id, null)).status).toBe('ok');
    a = await lookupGroup(cor.client, g.id);
    expect(a.present).toEqual([true, false]);
    expect(a.hosts.map((x) => x.hostId.toString())).toEqual([lap.id.toString()]);
    expect(a.hosts[0].locators.map((l) => l.address)).toEqual(LOCATORS.map((l) => l.address));
    // A host the owner does not list cannot consent (nobody points traffic at a host that did not agree,
    // and no host makes itself part of someone's user ID).
    expect((await cor.client.serve(g.id, null)).status).toBe('notListed');
    // The phone consents with its own copy of the binding.
    expect((await pho.client.serve(g.id, g.bytes)).status).toBe('ok');
    a = await lookupGroup(cor.client, g.id);
    expect(a.present).toEqual([true, true]);
    expect(a.hosts.map((x) => x.hostId.toString()).sort()).toEqual([lap.id.toString(), pho.id.toString()].sort());
  });

  it('refuses forged, stale and out-of-realm bindings', async () => {
    const h = await harness();
    const lap = await host(h);
    const alice = generateKeyPair();
    const mallory = generateKeyPair();
    const g = userBinding(alice, [{ hostId: lap.id, priority: 1, weight: 1 }], 10);
    expect((await lap.client.publish(g.bytes)).status).toBe('ok');
    // Mallory signs a binding with her key but alice's ID in it.
    const forged = Uint8Array.from(userBinding(mallory, [{ hostId: lap.id, priority: 1, weight: 1 }], 11).bytes);
    g.id.copyTo(forged, 5);
    expect((await lap.client.publish(forged)).status).toBe('forged');
    expect((await lap.client.publish(userBinding(alice, [], 9).bytes)).status).toBe('stale');
    expect((await lap.client.publish(userBinding(alice, [], 12, 'fd00:9::/48').bytes)).status).toBe('notInRealm');
    expect((await lap.client.publish(new Uint8Array(80))).status).toBe('malformed');
    // What is held is still alice's binding with the laptop.
    const a = await lookupGroup(lap.client, g.id);
    expect(a.group.seq).toBe(10);
  });

  it('pushes presence changes to followers (the RCA): consent, a host whose locators all go down, a revoked host, removal by the owner', async () => {
    const h = await harness();
    const [lap, pho, cor] = [await host(h), await host(h), await host(h)];
    const alice = generateKeyPair();
    const g = userBinding(alice, [{ hostId: lap.id, priority: 1, weight: 1 }, { hostId: pho.id, priority: 2, weight: 1 }], 1);
    expect((await lap.client.publish(g.bytes)).status).toBe('ok');
    expect((await lap.client.serve(g.id, null)).status).toBe('ok');
    const pushes: GroupAnswer[] = [];
    cor.client.onGroupPush((p) => pushes.push(p));
    await lookupGroup(cor.client, g.id);
    await cor.client.subscribe([g.id]);
    expect((await pho.client.serve(g.id, null)).status).toBe('ok');
    await until(() => pushes.some((p) => p.present.every((x) => x)), 3000, 'a push with both hosts present');
    // The laptop's uplinks all fail: its new binding has no locator up, so it is absent.
    const down = LOCATORS.map((l) => ({ ...l, state: 'down' as const }));
    expect((await lap.client.register(bindingFor(lap.key, Date.now() + 1000, { locators: down }))).ok).toBe(true);
    await until(() => pushes.at(-1)?.present[0] === false, 3000, 'a push with the laptop absent');
    // The operator revokes the phone from the realm: absent at once, pushed.
    expect(pushes.at(-1)?.present[1]).toBe(true);
    expect(await h.server.revoke(pho.id)).toBe(true);
    await until(() => pushes.at(-1)?.present[1] === false, 3000, 'a push with the revoked phone absent');
    // The owner removes the phone: a newer binding, pushed.
    const g2 = userBinding(alice, [{ hostId: lap.id, priority: 1, weight: 1 }], 2);
    expect((await cor.client.publish(g2.bytes)).status).toBe('ok');
    await until(() => pushes.at(-1)?.group.seq === 2, 3000, 'the owner’s new binding pushed');
    expect(pushes.at(-1)?.group.hosts.map((x) => x.hostId.toString())).toEqual([lap.id.toString()]);
  });

  it('keeps acknowledged bindings and consents across a restart', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'rn-groups-'));
    cleanup.push(() => rmDir(dir, { recursive: true, force: true }));
    const store = { store: { path: join(dir, 'rm.db'), batchWindowMs: 1 } };
    const lapKey = generateKeyPair();
    const alice = generateKeyPair();
    const h1 = await startHarness({ ...slice2, ...store });
    const lap = await host(h1, lapKey);
    const g = userBinding(alice, [{ hostId: lap.id, priority: 1, weight: 1 }], 1);
    expect((await lap.client.publish(g.bytes)).status).toBe('ok');
    expect((await lap.client.serve(g.id, null)).status).toBe('ok');
    await h1.close();
    const h2 = await harness(store);
    // The laptop is registered again (its binding survived too); its consent came back from the store.
    const lap2 = await host(h2, lapKey);
    const a = await lookupGroup(lap2.client, g.id);
    expect(a.group.seq).toBe(1);
    expect(a.present).toEqual([true]);
  });
});
