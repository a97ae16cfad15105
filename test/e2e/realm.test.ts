import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TESTBED, up, type Testbed } from '../../scripts/testbed/topology.ts';
import { REALM } from '../../scripts/testbed/configs.ts';
import { requireRoot, uniquePrefix, pings } from '../helpers/netns.ts';
import { agentStatus, startRealm, waitRegistered, type Realm } from '../helpers/agents.ts';

/**
 * Host IDs found through a real Realm Manager process: the agents have keys, no static bindings,
 * and learn each other's locators only from signed bindings the RM serves.
 */
let tb: Testbed;
let realm: Realm | null = null;

beforeAll(async () => {
  requireRoot(['ip', 'ping', 'iperf3']);
  tb = await up({ prefix: uniquePrefix('rlm') });
});

afterAll(async () => {
  await realm?.stop();
  await tb?.down();
});

describe('two hosts through the Realm Manager', () => {
  beforeAll(async () => {
    realm = await startRealm(tb);
  }, 60_000);

  it('reach each other by host ID (derived from their keys) both ways', async () => {
    const r = realm as Realm;
    expect(r.files.ids.mh.startsWith('fd00:1:')).toBe(true);
    expect(await pings(tb.ns('mh'), r.files.ids.ch, { count: 3 })).toBe(true);
    expect(await pings(tb.ns('ch'), r.files.ids.mh, { count: 3 })).toBe(true);
    const st = await agentStatus(tb, 'mh');
    expect(st.hostId).toBe(r.files.ids.mh);
    expect(st.rm?.registered).toBe(true);
    const entry = st.mapCache.find((e) => e.hostId === r.files.ids.ch);
    expect(entry?.source).toBe('rm');
    expect(entry?.seq).toBeGreaterThan(0);
    // ch learned all three of mh's locators from mh's signed binding, in priority order.
    const chView = (await agentStatus(tb, 'ch')).mapCache.find((e) => e.hostId === r.files.ids.mh);
    expect(chView?.locators).toEqual([`${TESTBED.v4.mh.ispa}:4341 p1`, `${TESTBED.v4.mh.ispb}:4341 p2`, `${TESTBED.v4.mh.ispc}:4341 p3`]);
  });

  it('carries an iperf3 run over host IDs while the RM is killed and restarted', async () => {
    const r = realm as Realm;
    const server = tb.spawn('ch', 'iperf3', ['-s', '-1', '-B', r.files.ids.ch]);
    try {
      await new Promise((res) => setTimeout(res, 500));
      const client = tb.exec('mh', 'iperf3', ['-c', r.files.ids.ch, '-t', '6', '-J', '-C', 'cubic'], { timeoutMs: 30_000 });
      await new Promise((res) => setTimeout(res, 2000));
      await r.restartRm(true);
      const out = await client;
      const j = JSON.parse(out.stdout) as { end: { sum_received: { bytes: number; seconds: number } }; intervals: { sum: { bytes: number } }[] };
      expect(j.end.sum_received.seconds).toBeGreaterThan(5.5);
      // Every second of the run moved data: the restart did not stall forwarding.
      expect(j.intervals.every((i) => i.sum.bytes > 0)).toBe(true);
    } finally {
      await server.stop();
    }
    // The new RM process knows mh from its durable store (mh will not re-register for a minute):
    // a restarted ch, with an empty map-cache, finds mh through it.
    await r.restartAgent('ch');
    await waitRegistered(tb);
    let ok = false;
    for (const t0 = Date.now(); !ok && Date.now() - t0 < 15_000; ) ok = await pings(tb.ns('ch'), r.files.ids.mh, { count: 1 });
    expect(ok).toBe(true);
    expect((await agentStatus(tb, 'ch')).mapCache.find((e) => e.hostId === r.files.ids.mh)?.source).toBe('rm');
  }, 60_000);
});

describe('location privacy', () => {
  beforeAll(async () => {
    await realm?.stop();
    // Only mh may look up hosts of the realm; ch may look up nobody.
    realm = await startRealm(tb, { rmExtra: (ids) => ({ policy: { lookup: { sameRealm: 'deny', rules: [{ askers: [ids.mh], targets: [REALM.prefix] }] } } }) }, false);
  }, 60_000);

  it("an unauthorised host's lookup learns no locator: the same answer as for an unknown ID", async () => {
    const r = realm as Realm;
    await waitRegistered(tb);
    expect(await pings(tb.ns('ch'), r.files.ids.mh, { count: 2 })).toBe(false);
    const unknown = 'fd00:1:0:0:1234:5678:9abc:def0';
    expect(await pings(tb.ns('ch'), unknown, { count: 1 })).toBe(false);
    const st = await agentStatus(tb, 'ch');
    expect(st.mapCache.find((e) => e.hostId === r.files.ids.mh)).toBeUndefined();
    // Both lookups came back negative, indistinguishable.
    expect(st.rm?.resolver.negative).toBe(2);
    expect(st.rm?.resolver.positive).toBe(0);
    // mh is allowed: it learns ch's locators (its packets then die at ch, which may not look mh up).
    await pings(tb.ns('mh'), r.files.ids.ch, { count: 1 });
    const mhView = await agentStatus(tb, 'mh');
    expect(mhView.mapCache.find((e) => e.hostId === r.files.ids.ch)?.locators).toEqual([`${TESTBED.v4.ch.core}:4341 p1`, `${TESTBED.v4.ch.core2}:4341 p2`]);
  }, 60_000);
});

describe('carrier loss on the active uplink (monitor → new binding → push)', () => {
  beforeAll(async () => {
    await realm?.stop();
    realm = await startRealm(tb);
  }, 60_000);

  afterAll(async () => {
    await tb.linkUp('ispa', 'to-mh');
  });

  it('moves traffic to the other uplink and tells the correspondent through the RM', async () => {
    const r = realm as Realm;
    expect(await pings(tb.ns('ch'), r.files.ids.mh, { count: 1 })).toBe(true);
    await tb.linkDown('ispa', 'to-mh'); // mh's eth-a loses carrier, as with a pulled cable
    const t0 = Date.now();
    let mhView = await agentStatus(tb, 'mh');
    let chView = await agentStatus(tb, 'ch');
    const chLocators = () => chView.mapCache.find((e) => e.hostId === r.files.ids.mh)?.locators ?? [];
    while (mhView.uplinks[0].up || !chLocators().includes('192.0.2.1:4341 p1 down')) {
      if (Date.now() - t0 > 10_000) throw new Error(`no failover within 10 s: mh ${JSON.stringify(mhView.uplinks)}, ch ${JSON.stringify(chLocators())}`);
      await new Promise((res) => setTimeout(res, 100));
      [mhView, chView] = await Promise.all([agentStatus(tb, 'mh'), agentStatus(tb, 'ch')]);
    }
    expect(mhView.mapCache.find((e) => e.hostId === r.files.ids.ch)?.path).toBe('ispb → 203.0.113.2');
    expect(chView.mapCache.find((e) => e.hostId === r.files.ids.mh)?.path).toBe('core → 192.0.2.65');
    expect(await pings(tb.ns('ch'), r.files.ids.mh, { count: 2 })).toBe(true);
    expect(await pings(tb.ns('mh'), r.files.ids.ch, { count: 2 })).toBe(true);

    // The link comes back: the uplink is usable again and mh says so in a new binding.
    await tb.linkUp('ispa', 'to-mh');
    const t1 = Date.now();
    while (!(await agentStatus(tb, 'mh')).uplinks[0].up) {
      if (Date.now() - t1 > 10_000) throw new Error('uplink ispa not re-admitted within 10 s');
      await new Promise((res) => setTimeout(res, 100));
    }
    expect(await pings(tb.ns('ch'), r.files.ids.mh, { count: 2 })).toBe(true);
  }, 60_000);
});
