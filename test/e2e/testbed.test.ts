/**
 * The testbed itself: every node reaches every other over IPv4 and IPv6 through each of the three ISPs
 * and both of ch's links, the fault helpers do what they say, and nothing is left behind.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runIperf } from '../../scripts/bench/iperf.ts';
import { TESTBED, listNamespaces, up, type Testbed } from '../../scripts/testbed/topology.ts';
import { pings, requireRoot, uniquePrefix } from '../helpers/netns.ts';

const A = TESTBED;
const prefix = uniquePrefix('tb');
let tb: Testbed;

/** Pings until a reply comes or `ms` pass (links that just came back take up to ~1 s for IPv6). */
async function pingsWithin(ns: string, dst: string, ms: number, source?: string): Promise<boolean> {
  const deadline = Date.now() + ms;
  do {
    if (await pings(ns, dst, { waitSec: 0.3, source })) return true;
  } while (Date.now() < deadline);
  return false;
}

/** An uplink of mh as a source route, as the agent would install it; removed again by the caller. */
async function routeSourceVia(isp: 'ispb' | 'ispc', add: boolean): Promise<void> {
  const op = add ? 'add' : 'del';
  await tb.exec('mh', 'ip', ['-4', 'rule', op, 'from', A.v4.mh[isp], 'table', '101', 'priority', '101']);
  await tb.exec('mh', 'ip', ['-6', 'rule', op, 'from', A.v6.mh[isp], 'table', '101', 'priority', '101']);
  if (add) {
    await tb.exec('mh', 'ip', ['-4', 'route', 'add', 'default', 'via', A.v4[isp].mh, 'dev', A.dev.mh[isp], 'table', '101']);
    await tb.exec('mh', 'ip', ['-6', 'route', 'add', 'default', 'via', A.v6[isp].mh, 'dev', A.dev.mh[isp], 'table', '101']);
  } else {
    await tb.exec('mh', 'ip', ['-4', 'route', 'flush', 'table', '101']);
    await tb.exec('mh', 'ip', ['-6', 'route', 'flush', 'table', '101']);
  }
}

/** ch's second link as a source route in ch (its main default stays on eth0); removed by the caller. */
async function chSourceViaSecond(add: boolean): Promise<void> {
  const op = add ? 'add' : 'del';
  await tb.exec('ch', 'ip', ['-4', 'rule', op, 'from', A.v4.ch.core2, 'table', '101', 'priority', '101']);
  await tb.exec('ch', 'ip', ['-6', 'rule', op, 'from', A.v6.ch.core2, 'table', '101', 'priority', '101']);
  if (add) {
    await tb.exec('ch', 'ip', ['-4', 'route', 'add', 'default', 'via', A.v4.core.ch2, 'dev', A.dev.ch.core2, 'table', '101']);
    await tb.exec('ch', 'ip', ['-6', 'route', 'add', 'default', 'via', A.v6.core.ch2, 'dev', A.dev.ch.core2, 'table', '101']);
  } else {
    await tb.exec('ch', 'ip', ['-4', 'route', 'flush', 'table', '101']);
    await tb.exec('ch', 'ip', ['-6', 'route', 'flush', 'table', '101']);
  }
}

describe('netns testbed', () => {
  beforeAll(async () => {
    requireRoot();
    tb = await up({ prefix });
  });

  afterAll(async () => {
    await tb?.down();
    const left = (await listNamespaces()).filter((n) => n.startsWith(prefix));
    expect(left).toEqual([]);
  });

  it('creates one namespace per node, named with the prefix', async () => {
    const present = await listNamespaces();
    for (const n of A.nodes) expect(present).toContain(`${prefix}${n}`);
    expect(tb.ns('mh')).toBe(`${prefix}mh`);
  });

  it('puts nothing in the root namespace', async () => {
    const { stdout } = await tb.exec('mh', 'ip', ['-o', 'link', 'show']);
    expect(stdout).toMatch(/eth-a/);
    // Our interface names would collide with a concurrent run if they were in the root namespace.
    const { execHost } = await import('../../scripts/testbed/topology.ts');
    const root = await execHost('ip', ['-o', 'link', 'show']);
    expect(root.stdout).not.toMatch(/\beth-a@|\beth-c@|\bto-ispa@|\bto-ispc@|\bto-core@|\bto-ch2@/);
  });

  it('mh and ch have no source-policy rules; mh defaults via ispa, ch via its first link', async () => {
    const rules = await tb.exec('mh', 'ip', ['-4', 'rule', 'show']);
    expect(rules.stdout.trim().split('\n')).toHaveLength(3); // local, main, default
    const route = await tb.exec('mh', 'ip', ['-4', 'route', 'show', 'default']);
    expect(route.stdout).toContain(`via ${A.v4.ispa.mh} dev ${A.dev.mh.ispa}`);
    const route6 = await tb.exec('mh', 'ip', ['-6', 'route', 'show', 'default']);
    expect(route6.stdout).toContain(`via ${A.v6.ispa.mh} dev ${A.dev.mh.ispa}`);
    const chRules = await tb.exec('ch', 'ip', ['-4', 'rule', 'show']);
    expect(chRules.stdout.trim().split('\n')).toHaveLength(3);
    const chRoute = await tb.exec('ch', 'ip', ['-4', 'route', 'show', 'default']);
    expect(chRoute.stdout.trim()).toBe(`default via ${A.v4.core.ch} dev ${A.dev.ch.core}`);
  });

  it('gives every veth end an ifindex of its own, across all nine links', async () => {
    const seen = new Map<number, string>();
    for (const node of tb.nodes) {
      const { stdout } = await tb.exec(node, 'ip', ['-j', 'link', 'show', 'type', 'veth']);
      for (const l of JSON.parse(stdout) as { ifname: string; ifindex: number }[]) {
        expect(seen.get(l.ifindex), `${node} ${l.ifname} ifindex ${l.ifindex}`).toBeUndefined();
        seen.set(l.ifindex, `${node} ${l.ifname}`);
      }
    }
    expect(seen.size).toBe(2 * A.links.length);
  });

  for (const fam of ['v4', 'v6'] as const) {
    it(`mh reaches ch (both links), rm and every router over ${fam === 'v4' ? 'IPv4' : 'IPv6'} via ispa`, async () => {
      for (const [node, peer] of [['ch', 'core'], ['ch', 'core2'], ['rm', 'core'], ['ispa', 'mh'], ['ispb', 'core'], ['ispc', 'core'], ['core', 'ch'], ['core', 'ch2']] as const) {
        const dst = (A[fam][node] as Readonly<Record<string, string>>)[peer] ?? '';
        expect(await pings(tb.ns('mh'), dst), `mh -> ${node} ${dst}`).toBe(true);
      }
      expect(await pings(tb.ns('ch'), A[fam].rm.core), 'ch -> rm').toBe(true);
      expect(await pings(tb.ns('rm'), A[fam].mh.ispb), 'rm -> mh uplink b').toBe(true);
      expect(await pings(tb.ns('rm'), A[fam].mh.ispc), 'rm -> mh uplink c').toBe(true);
    });

    for (const isp of ['ispb', 'ispc'] as const) {
      it(`mh reaches ch over ${fam === 'v4' ? 'IPv4' : 'IPv6'} via ${isp} with a source route, and the blackhole at ispa proves the path`, async () => {
        await routeSourceVia(isp, true);
        try {
          await tb.blackhole('ispa');
          expect(await pings(tb.ns('mh'), A[fam].ch.core, { source: A[fam].mh[isp] }), `via ${isp} while ispa is blackholed`).toBe(true);
          expect(await pings(tb.ns('mh'), A[fam].ch.core2, { source: A[fam].mh[isp] }), `to ch's second link via ${isp}`).toBe(true);
          expect(await pings(tb.ns('mh'), A[fam].ch.core, { source: A[fam].mh.ispa }), 'via ispa while blackholed').toBe(false);
          await tb.clearBlackhole('ispa');
          expect(await pings(tb.ns('mh'), A[fam].ch.core, { source: A[fam].mh.ispa }), 'via ispa after clearing').toBe(true);
        } finally {
          await tb.clearBlackhole('ispa');
          await routeSourceVia(isp, false);
        }
      });
    }

    it(`ch's second link works on its own over ${fam === 'v4' ? 'IPv4' : 'IPv6'}: with its first link's far end down, ch reaches mh from eth1 with a source route`, async () => {
      await chSourceViaSecond(true);
      await tb.linkDown('core', A.dev.core.ch);
      try {
        const { stdout } = await tb.exec('ch', 'ip', ['-o', 'link', 'show', A.dev.ch.core]);
        expect(stdout).toMatch(/NO-CARRIER/);
        expect(await pings(tb.ns('ch'), A[fam].mh.ispa, { source: A[fam].ch.core }), 'from the first link while it is down').toBe(false);
        expect(await pings(tb.ns('ch'), A[fam].mh.ispa, { source: A[fam].ch.core2 }), 'from the second link').toBe(true);
      } finally {
        await tb.linkUp('core', A.dev.core.ch);
        await chSourceViaSecond(false);
      }
      expect(await pingsWithin(tb.ns('mh'), A[fam].ch.core, 5_000)).toBe(true);
    });
  }

  it('a one-direction blackhole drops only that direction', async () => {
    // On ispa, packets leaving through to-mh go world → mh: the echo request gets through, the reply does not.
    await tb.blackhole('ispa', { oif: A.dev.ispa.mh });
    const counter = async (): Promise<number> => {
      const { stdout } = await tb.exec('ispa', 'nft', ['list', 'table', 'inet', 'realmnet_blackhole']);
      return Number(/packets (\d+)/.exec(stdout)?.[1] ?? -1);
    };
    try {
      expect(await pings(tb.ns('mh'), A.v4.ch.core)).toBe(false);
      expect(await counter()).toBeGreaterThanOrEqual(1);
      // ch itself still hears from mh (the request arrived), so ch → core works.
      expect(await pings(tb.ns('ch'), A.v4.core.ch)).toBe(true);
    } finally {
      await tb.clearBlackhole('ispa');
    }
    expect(await pings(tb.ns('mh'), A.v4.ch.core)).toBe(true);
  });

  it('a blackhole can match one source: IPv4 from ch dropped, IPv6 untouched', async () => {
    await tb.blackhole('core', { src: A.v4.ch.core });
    try {
      expect(await pings(tb.ns('mh'), A.v4.ch.core)).toBe(false);
      expect(await pings(tb.ns('mh'), A.v6.ch.core)).toBe(true);
      expect(await pings(tb.ns('mh'), A.v4.rm.core)).toBe(true);
    } finally {
      await tb.clearBlackhole('core');
    }
    expect(await pings(tb.ns('mh'), A.v4.ch.core)).toBe(true);
  });

  it('linkDown at the far end is a carrier loss for mh; linkUp restores it', async () => {
    await tb.linkDown('ispa', A.dev.ispa.mh);
    try {
      const { stdout } = await tb.exec('mh', 'ip', ['-o', 'link', 'show', A.dev.mh.ispa]);
      expect(stdout).toMatch(/NO-CARRIER/);
      expect(await pings(tb.ns('mh'), A.v4.ch.core)).toBe(false);
      // mh's routes stay (marked linkdown), as with a pulled cable.
      const route = await tb.exec('mh', 'ip', ['-4', 'route', 'show', 'default']);
      expect(route.stdout).toContain('linkdown');
    } finally {
      await tb.linkUp('ispa', A.dev.ispa.mh);
    }
    expect(await pingsWithin(tb.ns('mh'), A.v4.ch.core, 5_000)).toBe(true);
    expect(await pingsWithin(tb.ns('mh'), A.v6.ch.core, 5_000)).toBe(true);
  });

  it('linkDown on mh itself flushes its routes; linkUp puts them back', async () => {
    await tb.linkDown('mh', A.dev.mh.ispa);
    try {
      const { stdout } = await tb.exec('ispa', 'ip', ['-o', 'link', 'show', A.dev.ispa.mh]);
      expect(stdout).toMatch(/NO-CARRIER/);
      expect(await pings(tb.ns('mh'), A.v4.ch.core)).toBe(false);
    } finally {
      await tb.linkUp('mh', A.dev.mh.ispa);
    }
    expect(await pingsWithin(tb.ns('mh'), A.v4.ch.core, 5_000)).toBe(true);
    expect(await pingsWithin(tb.ns('mh'), A.v6.ch.core, 5_000)).toBe(true);
  });

  it('randomLoss 100 % drops everything on that interface, clearing restores', async () => {
    await tb.randomLoss('core', A.dev.core.ch, 100, { direction: 'egress' });
    try {
      expect(await pings(tb.ns('mh'), A.v4.ch.core)).toBe(false);
      expect(await pings(tb.ns('mh'), A.v4.rm.core)).toBe(true);
    } finally {
      await tb.clearLoss('core', A.dev.core.ch);
    }
    expect(await pings(tb.ns('mh'), A.v4.ch.core)).toBe(true);
  });

  it('randomLoss 30 % loses some pings but not all', async () => {
    await tb.randomLoss('core', A.dev.core.ch, 30);
    try {
      const r = await tb.exec('mh', 'ping', ['-4', '-n', '-q', '-c', '40', '-i', '0.01', '-W', '1', A.v4.ch.core], { allowFail: true });
      const loss = Number(/(\d+(?:\.\d+)?)% packet loss/.exec(r.stdout)?.[1] ?? -1);
      // Each echo crosses the interface twice (request out, reply in): expected loss ≈ 51 %.
      expect(loss).toBeGreaterThan(10);
      expect(loss).toBeLessThan(95);
    } finally {
      await tb.clearLoss('core', A.dev.core.ch);
    }
  });

  it('rateLimit caps throughput (iperf3, cubic) and clearing lifts the cap', async () => {
    await tb.rateLimit('core', A.dev.core.ch, 50);
    try {
      const r = await runIperf(tb, { server: 'ch', client: 'mh', address: A.v4.ch.core, seconds: 2 });
      // Only the cap is asserted: on a loaded 2-core box the floor is anyone's guess.
      expect(r.gbps).toBeGreaterThan(0);
      expect(r.gbps).toBeLessThan(0.06);
      expect(r.congestion).toBe('cubic');
      expect(r.mss).toBe(1448);
    } finally {
      await tb.clearRateLimit('core', A.dev.core.ch);
    }
    const free = await runIperf(tb, { server: 'ch', client: 'mh', address: A.v6.ch.core, seconds: 1 });
    expect(free.gbps).toBeGreaterThan(0.1); // well above the 50 Mbit/s cap
  });

  it('down() stops tracked processes', async () => {
    const p = tb.spawn('rm', 'sleep', ['60']);
    expect(p.running()).toBe(true);
    await tb.down();
    await p.exited;
    expect(p.running()).toBe(false);
    // down() is idempotent
    await tb.down();
  });
});
