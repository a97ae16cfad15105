/**
 * npm run bench -- operations [--reps N]
 *
 * Issue #16: what a reload (SIGHUP, `systemctl reload`) and a restart (`systemctl restart`, which
 * is what an upgrade is) cost traffic that is flowing. The realm testbed (RM in rm, agents in mh and
 * ch, mh on three uplinks); a ping every 10 ms from mh to ch's host ID; the figure is the longest gap
 * between two replies (10 ms resolution) while the event happens, and the pings lost. Each N times:
 *
 *   baseline_gap_ms                nothing happens (the reference: the underlay and the box's jitter)
 *   reload_noop_gap_ms             SIGHUP, the config unchanged
 *   reload_reprioritise_gap_ms     SIGHUP, ispb made the preferred uplink: traffic moves off ispa
 *   reload_remove_active_gap_ms    SIGHUP, ispa (carrying the traffic) removed from the config
 *   reload_add_gap_ms              SIGHUP, ispa added back (the preferred one again)
 *   failover_gap_ms                reference for "failover-sized": ispa's link taken down (a link event)
 *   silent_failover_gap_ms         reference too: ispa silently blackholed (found by probing)
 *   restart_gap_ms                 the agent stopped (SIGTERM) and started again, same config:
 *                                  `systemctl restart`
 *   upgrade_gap_ms                 upgrade in place (SIGUSR2, agent/upgrade.ts): the new process
 *                                  loads while the old one forwards, then takes over
 *   restart_tcp_survives           an iperf3 TCP stream over host IDs across the restart completes
 *   upgrade_tcp_survives           the same across the upgrade in place
 *
 * Prints a table and writes bench-results/operations.json with each key's median and samples.
 */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { parse, stringify } from 'yaml';
import { processAlive, startRealm, successorPid, type Realm } from '../../test/helpers/agents.ts';
import { pingGap, type GapResult } from '../../test/helpers/gap.ts';
import { execHost, up, type Testbed } from '../testbed/topology.ts';
import { BenchStopped, fmt, median, printTable, UsageProblem, writeResults } from './table.ts';

type Uplink = { name: string; priority: number };

async function edit(file: string, f: (c: { uplinks: Uplink[] }) => void): Promise<void> {
  const c = parse(await readFile(file, 'utf8')) as { uplinks: Uplink[] };
  f(c);
  await writeFile(file, stringify(c));
}

async function settle(ms: number): Promise<void> {
  await new Promise((r) => setTimeout(r, ms));
}

export async function run(argv: string[]): Promise<number> {
  const { values } = parseArgs({ args: argv, options: { reps: { type: 'string', default: '3' } } });
  const reps = Number(values.reps);
  if (!Number.isInteger(reps) || reps < 1 || reps > 20) throw new UsageProblem(`--reps: "${values.reps}" is not a whole number from 1 to 20`);
  if (process.getuid?.() !== 0) throw new BenchStopped('needs root (network namespaces)');
  for (const tool of ['ping', 'iperf3']) {
    if ((await execHost('sh', ['-c', `command -v ${tool}`], { allowFail: true })).code !== 0) throw new BenchStopped(`${tool} is missing: run bash scripts/install-deps.sh`);
  }
  const tb: Testbed = await up({ prefix: `rnops${process.pid % 1000}-` });
  let realm: Realm | null = null;
  const dir = await mkdtemp(join(tmpdir(), 'realmnet-ops-'));
  const samples: Record<string, GapResult[]> = {};
  const tcp: boolean[] = [];
  const upgradeTcp: boolean[] = [];
  // After an upgrade in place the agent is no child of ours (its successor is): stopped by pid.
  let upgradedPid = 0;
  const stopUpgraded = async () => {
    if (upgradedPid === 0) return;
    try {
      process.kill(upgradedPid, 'SIGTERM');
    } catch {
      // already gone
    }
    for (let i = 0; i < 50 && processAlive(upgradedPid); i++) await settle(100);
    upgradedPid = 0;
  };
  const add = (k: string, g: GapResult) => (samples[k] ??= []).push(g);
  try {
    realm = await startRealm(tb, { logLevel: 'info' });
    const r = realm;
    const ch = r.files.ids.ch;
    const original = await readFile(r.files.mh, 'utf8');
    const hup = async () => {
      process.kill(upgradedPid || r.mh.pid, 'SIGHUP');
      await settle(300);
    };
    await settle(2_000);
    for (let i = 0; i < reps; i++) {
      add('baseline_gap_ms', await pingGap(tb, ch, 2, () => settle(500)));
      add('reload_noop_gap_ms', await pingGap(tb, ch, 2, hup));
      await edit(r.files.mh, (c) => {
        for (const u of c.uplinks) u.priority = u.name === 'ispb' ? 1 : u.name === 'ispa' ? 2 : u.priority;
      });
      add('reload_reprioritise_gap_ms', await pingGap(tb, ch, 2, hup));
      await writeFile(r.files.mh, original);
      await hup();
      await settle(2_500); // back on ispa (a preferred path returns after the hold-down)
      await edit(r.files.mh, (c) => {
        c.uplinks = c.uplinks.filter((u) => u.name !== 'ispa');
      });
      add('reload_remove_active_gap_ms', await pingGap(tb, ch, 2, hup));
      await writeFile(r.files.mh, original);
      add('reload_add_gap_ms', await pingGap(tb, ch, 3, hup));
      await settle(2_500);
      add(
        'failover_gap_ms',
        await pingGap(tb, ch, 3, async () => {
          await tb.linkDown('mh', tb.addr.dev.mh.ispa);
          await settle(1_000);
        }),
      );
      await tb.linkUp('mh', tb.addr.dev.mh.ispa);
      await settle(3_000);
      add(
        'silent_failover_gap_ms',
        await pingGap(tb, ch, 3, async () => {
          await tb.blackhole('ispa');
          await settle(1_000);
        }),
      );
      await tb.clearBlackhole('ispa');
      await settle(3_500);
      // A restart (`systemctl restart`), then an upgrade in place (SIGUSR2), each under a TCP stream.
      const withTcp = async (key: string, event: () => Promise<void>, survived: boolean[]) => {
        const server = tb.spawn('ch', 'iperf3', ['-s', '-1', '-B', ch]);
        await settle(500);
        const client = tb.exec('mh', 'iperf3', ['-c', ch, '-t', '8', '-b', '20M', '-J'], { allowFail: true, timeoutMs: 40_000 });
        add(key, await pingGap(tb, ch, 6, event));
        const out = await client;
        await server.stop();
        let ok = false;
        try {
          const j = JSON.parse(out.stdout) as { error?: string; end?: { sum_received?: { seconds: number } } };
          ok = j.error === undefined && (j.end?.sum_received?.seconds ?? 0) > 7;
        } catch {
          ok = false;
        }
        survived.push(ok);
        await settle(3_000);
      };
      await withTcp(
        'restart_gap_ms',
        async () => {
          await stopUpgraded();
          await r.restartAgent('mh');
          await settle(500);
        },
        tcp,
      );
      await withTcp(
        'upgrade_gap_ms',
        async () => {
          // The successor's line, not an earlier upgrade's.
          const before = successorPid(r.mh);
          process.kill(upgradedPid || r.mh.pid, 'SIGUSR2');
          const deadline = Date.now() + 15_000;
          let pid = 0;
          while (pid === 0 && Date.now() < deadline) {
            await settle(100);
            const now = successorPid(r.mh);
            if (now !== before) pid = now;
          }
          if (pid === 0) throw new BenchStopped(`the upgrade in place did not hand over within 15 s:\n${r.mh.stderrTail().slice(-2000)}`);
          upgradedPid = pid;
          await settle(500);
        },
        upgradeTcp,
      );
      await settle(3_000);
    }
  } finally {
    await stopUpgraded();
    await realm?.stop();
    await tb.down();
    await rm(dir, { recursive: true, force: true });
  }
  const keys = ['baseline_gap_ms', 'reload_noop_gap_ms', 'reload_reprioritise_gap_ms', 'reload_remove_active_gap_ms', 'reload_add_gap_ms', 'failover_gap_ms', 'silent_failover_gap_ms', 'restart_gap_ms', 'upgrade_gap_ms'];
  const rows = keys.map((k) => {
    const s = samples[k] ?? [];
    return [k, fmt(median(s.map((x) => x.gapMs)), 0), s.map((x) => x.gapMs).join(' '), s.map((x) => x.sent - x.received).join(' ')];
  });
  rows.push(['restart_tcp_survives', tcp.every(Boolean) ? 'true' : 'false', tcp.join(' '), '']);
  rows.push(['upgrade_tcp_survives', upgradeTcp.every(Boolean) ? 'true' : 'false', upgradeTcp.join(' '), '']);
  printTable(['measure', 'median', 'samples', 'pings lost'], rows);
  const json: Record<string, unknown> = { reps, at: new Date().toISOString() };
  for (const k of keys) {
    json[k] = median((samples[k] ?? []).map((x) => x.gapMs));
    json[`${k}_samples`] = samples[k] ?? [];
  }
  json.restart_tcp_survives = tcp.every(Boolean);
  json.restart_tcp_samples = tcp;
  json.upgrade_tcp_survives = upgradeTcp.every(Boolean);
  json.upgrade_tcp_samples = upgradeTcp;
  console.log(`\nwrote ${await writeResults('operations', json)}`);
  return 0;
}
