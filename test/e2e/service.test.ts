import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse, stringify } from 'yaml';
import { z } from 'zod';
import { TESTBED, up, type NsProcess, type Testbed } from '../../scripts/testbed/topology.ts';
import { requireRoot, uniquePrefix } from '../helpers/netns.ts';
import { REPO, controlStatus, hangReport, processAlive, startRealm, successorPid, type Realm } from '../helpers/agents.ts';
import { listenNotify, type NotifyListener } from '../helpers/notify.ts';
import { waitFor } from '../helpers/failover.ts';
import { pingGap as gapOf } from '../helpers/gap.ts';

/**
 * What the systemd units rely on, tested without systemd (PID 1 here is not systemd): the agent and
 * the RM run as real processes in the testbed's namespaces with NOTIFY_SOCKET and WATCHDOG_USEC from
 * the test, as systemd would set them, and the test does what systemd does: waits for READY=1, counts
 * WATCHDOG=1, restarts a process killed with SIGKILL (Restart=on-failure), sends SIGHUP (ExecReload)
 * and SIGTERM (stop). The units themselves are checked with systemd-analyze (install.test.ts).
 *
 * Also here, because they need the same running realm: the Prometheus endpoints scraped during a
 * failover, and a reload during traffic.
 */
const CLI = join(REPO, 'bin', 'realmnet.js');
const AGENT_METRICS = '127.0.0.1:19721';
const RM_METRICS_PORT = 19722;
const WATCHDOG_USEC = 400_000;

let tb: Testbed;
let realm: Realm | null = null;
let notify: NotifyListener | null = null;
let dir = '';

const Status = z.object({
  hostId: z.string(),
  uplinks: z.array(z.object({ name: z.string(), up: z.boolean(), priority: z.number() })),
  rm: z.object({ registered: z.boolean(), seq: z.number() }).nullable(),
  mapCache: z.array(z.object({ hostId: z.string(), locators: z.array(z.string()) })),
});

async function status(node: 'mh' | 'ch'): Promise<z.infer<typeof Status>> {
  return Status.parse(await controlStatus(tb, node));
}

/** mh's agent as systemd would start it: NOTIFY_SOCKET and WATCHDOG_USEC in its environment. */
function startServiceAgent(): NsProcess {
  const r = realm as Realm;
  const env = { ...process.env, NOTIFY_SOCKET: (notify as NotifyListener).path, WATCHDOG_USEC: String(WATCHDOG_USEC) };
  r.mh = tb.spawn('mh', process.execPath, [CLI, 'agent', '--config', r.files.mh], { cwd: REPO, env });
  return r.mh;
}

async function editConfig(file: string, edit: (c: Record<string, unknown>) => void): Promise<void> {
  const c = parse(await readFile(file, 'utf8')) as Record<string, unknown>;
  edit(c);
  await writeFile(file, stringify(c));
}

type UplinkEntry = { name: string; priority: number };

/** One metric's value from a scrape (the first sample whose name and labels match). */
function sample(text: string, name: string, labels = ''): number | null {
  for (const line of text.split('\n')) {
    if (line.startsWith('#')) continue;
    const sp = line.lastIndexOf(' ');
    const key = line.slice(0, sp);
    if (key === name + labels || (labels === '' && key === name)) return Number(line.slice(sp + 1));
  }
  return null;
}

async function scrape(node: 'mh' | 'rm', listen: string): Promise<string> {
  const r = await tb.exec(node, 'curl', ['-sS', '--max-time', '3', `http://${listen}/metrics`], { timeoutMs: 5_000 });
  return r.stdout;
}

beforeAll(async () => {
  requireRoot(['ip', 'ping', 'curl', 'python3']);
  tb = await up({ prefix: uniquePrefix('svc') });
  dir = await mkdtemp(join(tmpdir(), 'realmnet-svc-'));
  notify = await listenNotify(dir);
  realm = await startRealm(tb, { rmExtra: { metrics: { listen: `${TESTBED.v4.rm.core}:${RM_METRICS_PORT}` } } });
  // mh runs under the "service manager" from here on, with its metrics endpoint on.
  await realm.mh.stop(5000);
  await editConfig(realm.files.mh, (c) => {
    c.metrics = { listen: AGENT_METRICS };
  });
}, 90_000);

afterAll(async () => {
  if (upgradedPid !== 0 && processAlive(upgradedPid)) process.kill(upgradedPid, 'SIGKILL');
  await realm?.stop();
  await notify?.close();
  await tb?.down();
  if (dir !== '') await rm(dir, { recursive: true, force: true });
});

/** An upgraded agent (not our child): stopped by pid in afterAll if a test fails before it is. */
let upgradedPid = 0;

describe('under a service manager (what the systemd units rely on)', () => {
  let pid = 0;
  let seqBefore = 0;

  it('sends READY=1 once the agent forwards, then WATCHDOG=1 every WATCHDOG_USEC/2 from its event loop', async () => {
    const t0 = Date.now();
    const p = startServiceAgent();
    const ready = await (notify as NotifyListener).waitFor('READY', '1', t0, 20_000);
    pid = p.pid;
    expect(ready.fields.MAINPID).toBe(String(p.pid));
    expect(ready.fields.STATUS).toMatch(/^forwarding: host ID fd00:1:/);
    // Forwarding when it said so: the first ping goes through (the lookup happens on it).
    const r = await tb.exec('mh', 'ping', ['-6', '-n', '-c', '1', '-W', '2', (realm as Realm).files.ids.ch], { allowFail: true });
    expect(r.code, r.stdout).toBe(0);
    const from = Date.now();
    await new Promise((res) => setTimeout(res, 2_000));
    // 200 ms apart: 10 in 2 s (a loaded box may delay one or two).
    expect((notify as NotifyListener).count('WATCHDOG', '1', from, Date.now())).toBeGreaterThanOrEqual(8);
    const st = await status('mh');
    expect(st.rm?.registered).toBe(true);
    seqBefore = st.rm?.seq ?? 0;
    expect(seqBefore).toBeGreaterThan(0);
  });

  it('sends no WATCHDOG=1 while its event loop does not run (SIGSTOP), so systemd would restart it', async () => {
    process.kill(pid, 'SIGSTOP');
    const from = Date.now();
    await new Promise((res) => setTimeout(res, 1_200));
    const to = Date.now();
    process.kill(pid, 'SIGCONT');
    expect((notify as NotifyListener).count('WATCHDOG', '1', from + 50, to)).toBe(0);
    await (notify as NotifyListener).waitFor('WATCHDOG', '1', to, 2_000);
  });

  it('upgrades in place on SIGUSR2: the successor loads while the agent forwards, then takes over under the same service', async () => {
    const r = realm as Realm;
    const old = r.mh;
    const t0 = Date.now();
    const g = await gapOf(tb, r.files.ids.ch, 5, async () => {
      process.kill(old.pid, 'SIGUSR2');
      await (notify as NotifyListener).waitFor('READY', '1', t0, 15_000);
    });
    // The service manager was told the new main PID before the old process stopped, and the READY=1 came from it.
    const main = await (notify as NotifyListener).waitFor('MAINPID', String(successorPid(old)), t0, 1_000);
    const ready = await (notify as NotifyListener).waitFor('READY', '1', t0, 1_000);
    expect(ready.fields.MAINPID).toBe(String(successorPid(old)));
    expect(ready.at).toBeGreaterThanOrEqual(main.at);
    expect((await old.exited).code).toBe(0);
    upgradedPid = successorPid(old);
    expect(processAlive(upgradedPid)).toBe(true);
    const st = await status('mh');
    expect(st.hostId).toBe(r.files.ids.mh);
    // Traffic stood still for the stop and start of the data plane, not for a restart (the bench has the figure).
    expect(g.gapMs, JSON.stringify(g)).toBeLessThan(1_500);
    expect(old.stderrTail() + old.stdoutTail()).toContain('upgrade: stopped; the new version takes over');
  });

  it('killed with SIGKILL and started again (Restart=on-failure), keeps its state: same ID, higher binding sequence, no duplicate rules', async () => {
    const r = realm as Realm;
    const rulesBefore = (await tb.exec('mh', 'ip', ['rule', 'show'])).stdout.split('\n').filter((l) => l.includes('lookup')).length;
    // The upgraded agent is no child of ours: killed by its pid.
    process.kill(upgradedPid, 'SIGKILL');
    await waitFor(async () => (processAlive(upgradedPid) ? null : true), 5_000, 'the killed agent gone');
    upgradedPid = 0;
    const t0 = Date.now();
    startServiceAgent();
    await (notify as NotifyListener).waitFor('READY', '1', t0, 20_000);
    const st = await waitFor(async () => {
      const s = await status('mh').catch(() => null);
      return s?.rm?.registered === true ? s : null;
    }, 15_000, 'mh registered again after the restart');
    expect(st.hostId).toBe(r.files.ids.mh);
    // The sequence number came from the state file: above the one before the kill, so the RM takes it.
    expect(st.rm?.seq ?? 0).toBeGreaterThan(seqBefore);
    const rulesAfter = (await tb.exec('mh', 'ip', ['rule', 'show'])).stdout.split('\n').filter((l) => l.includes('lookup')).length;
    expect(rulesAfter).toBe(rulesBefore);
    const p = await tb.exec('mh', 'ping', ['-6', '-n', '-c', '1', '-W', '2', r.files.ids.ch], { allowFail: true });
    expect(p.code).toBe(0);
  });
});

describe('metrics (Prometheus endpoints, metrics.listen)', () => {
  it('count a failover and its duration on the agent, lookups and registrations on the RM', async () => {
    const r = realm as Realm;
    const before = await scrape('mh', AGENT_METRICS);
    const failoversBefore = sample(before, 'realmnet_agent_failovers_total') ?? NaN;
    const histBefore = sample(before, 'realmnet_agent_failover_duration_seconds_count') ?? NaN;
    expect(failoversBefore).toBeGreaterThanOrEqual(0);
    expect(sample(before, 'realmnet_agent_uplink_up', '{uplink="ispa"}')).toBe(1);
    expect(sample(before, 'realmnet_agent_inside_packets_total')).toBeGreaterThan(0);
    // Carrier loss on mh's primary uplink while a ping stream runs.
    const g = await gapOf(tb, r.files.ids.ch, 3, async () => {
      await tb.linkDown('mh', tb.addr.dev.mh.ispa);
      await new Promise((res) => setTimeout(res, 1_000));
    });
    try {
      expect(g.received).toBeGreaterThan(g.sent * 0.8);
      const after = await scrape('mh', AGENT_METRICS);
      expect(sample(after, 'realmnet_agent_uplink_up', '{uplink="ispa"}')).toBe(0);
      expect(sample(after, 'realmnet_agent_failovers_total')).toBeGreaterThan(failoversBefore);
      expect(sample(after, 'realmnet_agent_failover_duration_seconds_count')).toBeGreaterThan(histBefore);
      expect(sample(after, 'realmnet_agent_failover_duration_seconds_sum')).toBeGreaterThanOrEqual(0);
      expect(sample(after, 'realmnet_agent_path_state_changes_total')).toBeGreaterThan(0);
      // Every realmnet counter is named as Prometheus wants: *_total, with a TYPE line.
      for (const m of after.matchAll(/^# TYPE (realmnet_\w+) counter$/gm)) expect(m[1]).toMatch(/_total$/);
      const rmText = await scrape('rm', `${TESTBED.v4.rm.core}:${RM_METRICS_PORT}`);
      expect(sample(rmText, 'realmnet_rm_registrations_total', '{result="ok"}')).toBeGreaterThan(0);
      expect(sample(rmText, 'realmnet_rm_lookups_total', '{result="positive"}')).toBeGreaterThan(0);
      expect(sample(rmText, 'realmnet_rm_sessions')).toBeGreaterThanOrEqual(2);
      expect(sample(rmText, 'realmnet_rm_bindings')).toBe(2);
    } finally {
      await tb.linkUp('mh', tb.addr.dev.mh.ispa);
    }
  });
});

describe('reload (SIGHUP, as systemctl reload sends it)', () => {
  it('applies uplink removal, preferences and the log level during traffic, names what needs a restart', async () => {
    const r = realm as Realm;
    // Back on ispa after the metrics test's fault (hold-down), before the measured reload.
    await waitFor(async () => ((await status('mh')).uplinks.find((u) => u.name === 'ispa')?.up === true ? true : null), 10_000, 'ispa up again');
    await new Promise((res) => setTimeout(res, 3_000));
    await editConfig(r.files.mh, (c) => {
      const ups = c.uplinks as UplinkEntry[];
      c.uplinks = ups.filter((u) => u.name !== 'ispc').map((u) => ({ ...u, priority: u.name === 'ispb' ? 1 : u.name === 'ispa' ? 2 : u.priority }));
      (c.log as Record<string, unknown>).level = 'debug';
      (c.tun as Record<string, unknown>).mtu = 1380;
    });
    let t0 = 0;
    const g = await gapOf(tb, r.files.ids.ch, 3, async () => {
      t0 = Date.now();
      process.kill(r.mh.pid, 'SIGHUP');
      await (notify as NotifyListener).waitFor('RELOADING', '1', t0, 5_000);
      await (notify as NotifyListener).waitFor('READY', '1', t0, 5_000);
    });
    // Established traffic was not dropped: a reload is not a restart.
    expect(g.received, JSON.stringify(g)).toBeGreaterThanOrEqual(g.sent - 2);
    expect(g.gapMs, JSON.stringify(g)).toBeLessThan(200);
    const st = await status('mh');
    expect(st.uplinks.map((u) => `${u.name}/${u.priority}`).sort()).toEqual(['ispa/2', 'ispb/1']);
    const log = r.mh.stderrTail() + r.mh.stdoutTail();
    expect(log).toContain('"msg":"config reloaded"');
    expect(log).toMatch(/config reloaded, but tun changed and needs a restart/);
    // debug is on now: the reload's own debug lines or later ones show it.
    expect(log).toContain('"level":20');
    // ch learns mh's new binding (ispc gone) from the RM's push.
    await waitFor(async () => {
      const e = (await status('ch')).mapCache.find((x) => x.hostId === r.files.ids.mh);
      return e !== undefined && e.locators.length === 2 ? e : null;
    }, 10_000, "ch sees mh's binding without ispc");
  });

  it('adds an uplink: the new one carries traffic when the others fail', async () => {
    const r = realm as Realm;
    await editConfig(r.files.mh, (c) => {
      const ups = c.uplinks as UplinkEntry[];
      c.uplinks = [...ups, { name: 'ispc', interface: tb.addr.dev.mh.ispc, locator: TESTBED.v4.mh.ispc, gateway: TESTBED.v4.ispc.mh, priority: 3, weight: 1 }];
    });
    const t0 = Date.now();
    process.kill(r.mh.pid, 'SIGHUP');
    await (notify as NotifyListener).waitFor('READY', '1', t0, 5_000);
    await waitFor(async () => {
      const e = (await status('ch')).mapCache.find((x) => x.hostId === r.files.ids.mh);
      return e !== undefined && e.locators.length === 3 ? e : null;
    }, 10_000, "ch sees mh's binding with ispc again");
    await tb.linkDown('mh', tb.addr.dev.mh.ispa);
    await tb.linkDown('mh', tb.addr.dev.mh.ispb);
    try {
      const ok = await waitFor(async () => ((await tb.exec('mh', 'ping', ['-6', '-n', '-c', '1', '-W', '1', r.files.ids.ch], { allowFail: true })).code === 0 ? true : null), 10_000, 'a ping over ispc alone');
      expect(ok).toBe(true);
    } finally {
      await tb.linkUp('mh', tb.addr.dev.mh.ispa);
      await tb.linkUp('mh', tb.addr.dev.mh.ispb);
    }
  });

  it('keeps running on a config that does not load, with one error line', async () => {
    const r = realm as Realm;
    await writeFile(r.files.mh + '.good', await readFile(r.files.mh));
    await editConfig(r.files.mh, (c) => {
      (c.uplinks as { locator: string }[])[0].locator = '192.0.2.300';
    });
    const t0 = Date.now();
    process.kill(r.mh.pid, 'SIGHUP');
    await (notify as NotifyListener).waitFor('READY', '1', t0, 5_000);
    expect(r.mh.running()).toBe(true);
    const tail = r.mh.stderrTail() + r.mh.stdoutTail();
    const line = tail.split('\n').find((l) => l.includes('reload failed: the running config stays in effect'));
    expect(line, tail.slice(-2000)).toBeDefined();
    expect(line).toContain('uplinks[0].locator: \\"192.0.2.300\\" is not an IPv4 or IPv6 address');
    await writeFile(r.files.mh, await readFile(r.files.mh + '.good'));
  });
});

describe('stop (SIGTERM, as systemctl stop sends it)', () => {
  it('sends STOPPING=1, exits 0 and leaves no TUN, rule or route behind', async () => {
    const r = realm as Realm;
    const t0 = Date.now();
    r.mh.child.kill('SIGTERM');
    const exit = await Promise.race([r.mh.exited, new Promise<null>((res) => setTimeout(() => res(null), 10_000))]);
    if (exit === null) expect.fail(`the agent did not exit within 10 s of SIGTERM:\n${r.mh.stderrTail().slice(-3000)}\n${await hangReport(r.mh.pid)}`);
    await (notify as NotifyListener).waitFor('STOPPING', '1', t0, 2_000);
    expect(exit?.code).toBe(0);
    const link = await tb.exec('mh', 'ip', ['link', 'show', 'rn0'], { allowFail: true });
    expect(link.code).not.toBe(0);
    const rules = (await tb.exec('mh', 'ip', ['rule', 'show'])).stdout;
    for (const loc of Object.values(TESTBED.v4.mh)) expect(rules).not.toContain(`from ${loc} `);
    expect((await tb.exec('mh', 'ip', ['-6', 'route', 'show'])).stdout).not.toContain('fd00::/8');
    for (let t = 4341; t < 4345; t++) expect((await tb.exec('mh', 'ip', ['route', 'show', 'table', String(t)], { allowFail: true })).stdout.trim()).toBe('');
  });
});
