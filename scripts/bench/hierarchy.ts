/**
 * npm run bench -- hierarchy [--lookups N] [--changes N]
 *
 * The realm hierarchy in namespaces (scripts/testbed/hierarchy.ts: top, two middles, realms A and B),
 * measured with the agent's own RM client (scripts/tools/rmprobe.ts) in realm A asking about hosts of
 * realm B:
 *   1. cross_realm_first_lookup_ms_p50  a lookup of a B host that realm A's RM holds nothing for, not
 *      even a referral (the referral TTL is 1 s and lookups are 1.2 s apart): A's RM asks the top,
 *      mid2 and B's RM. Target: ≤ 3 RTTs + 5 ms.
 *   2. cross_realm_cached_lookup_ms_p50  the same IDs again: answered from A's RM's shared cache. ≤ 1 ms.
 *   3. cross_realm_push_ms_p99  a B host (class mobile) changes its binding (--changes times, 150 ms
 *      apart, under the RM's 10 registrations/s a session); the time from its REGISTER leaving to the RM-PUSH arriving, relayed by A's RM, at the
 *      A client that follows it (B's commit, B → A, A → client). ≤ 100 ms.
 * References measured in the same run: the underlay RTT (ping between the namespaces) and a lookup of
 * a host of the asker's own realm (one flat RM, no hierarchy). Writes bench-results/hierarchy.json.
 */
import { parseArgs } from 'node:util';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { HIER, HIER_PREFIX, startHierarchy, upHierarchy, writeHierarchy, type HierScene } from '../testbed/hierarchy.ts';
import type { NsProcess } from '../testbed/topology.ts';
import { execHost } from '../testbed/topology.ts';
import { deriveHostId, parsePrefix } from '../../shared/ids.ts';
import { loadKeyPair } from '../../shared/keyfile.ts';
import { BenchStopped, fmt, median, printTable, UsageProblem, writeResults } from './table.ts';

const REPO = fileURLToPath(new URL('../../', import.meta.url));
const CLI = join(REPO, 'bin/realmnet.js');
const PROBE = join(REPO, 'scripts/tools/rmprobe.ts');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function options(argv: string[]): { lookups: number; changes: number } {
  const { values } = parseArgs({ args: argv, options: { lookups: { type: 'string', default: '20' }, changes: { type: 'string', default: '200' } }, strict: true });
  const lookups = Number(values.lookups);
  const changes = Number(values.changes);
  if (!Number.isInteger(lookups) || lookups < 3 || lookups > 200) throw new UsageProblem(`--lookups ${values.lookups}: give a whole number from 3 to 200`);
  if (!Number.isInteger(changes) || changes < 10 || changes > 5000) throw new UsageProblem(`--changes ${values.changes}: give a whole number from 10 to 5000`);
  return { lookups, changes };
}

function quantile(xs: readonly number[], q: number): number | null {
  const s = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (s.length === 0) return null;
  return s[Math.min(s.length - 1, Math.ceil(q * s.length) - 1)];
}

function lines(p: NsProcess): Record<string, unknown>[] {
  return p
    .stdoutTail()
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

async function waitFor(p: NsProcess, pred: (o: Record<string, unknown>) => boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!lines(p).some(pred)) {
    if (!p.running()) throw new Error(`${what}: the probe exited: ${p.stderrTail()}`);
    if (Date.now() > end) throw new Error(`${what}: not within ${ms} ms: ${p.stderrTail()}`);
    await sleep(50);
  }
}

export async function run(argv: string[]): Promise<number> {
  const { lookups, changes } = options(argv);
  for (const t of ['ip', 'ping']) {
    const r = await execHost('sh', ['-c', `command -v ${t}`], { allowFail: true });
    if (r.code !== 0) throw new BenchStopped(`${t} is not installed; no figures without it`);
  }
  if (process.getuid?.() !== 0) throw new BenchStopped('needs root (network namespaces)');
  const tb = await upHierarchy(`hb${process.pid % 100000}-`);
  let scene: HierScene | null = null;
  const procs: NsProcess[] = [];
  try {
    const files = await writeHierarchy({ referralTtlS: 1, bClass: 'mobile', extraB: lookups + 1, extraA: 2, logLevel: 'info' });
    scene = await startHierarchy(tb, files, CLI, REPO, []);
    // The underlay RTT from realm A's RM to each RM it asks (the cross-realm lookup's round trips).
    const rtts: number[] = [];
    for (const to of [HIER.v4.top.core, HIER.v4.mid2.core, HIER.v4.rmb.core]) {
      const r = await tb.exec('rma', 'ping', ['-n', '-c', '5', '-i', '0.2', to], { allowFail: true });
      rtts.push(median([...r.stdout.matchAll(/time=([\d.]+) ms/g)].map((m) => Number(m[1]))) ?? NaN);
    }
    const rtt = median(rtts) ?? NaN;
    const bPrefix = parsePrefix(HIER_PREFIX.rmb);
    const bIds = files.extra.b.map((f) => deriveHostId(bPrefix, loadKeyPair(f).publicKey).toString());
    const mover = bIds[0];
    const targets = bIds.slice(1);
    const common = (n: 'rma' | 'rmb') => ['--rm', HIER.v4[n].core, '--rm-key', files.rmPublicKeys[n], '--prefix', HIER_PREFIX[n]];
    const hosts = tb.spawn('b2', process.execPath, ['--import', 'tsx', PROBE, 'hosts', ...common('rmb'), '--keys', files.extra.b.join(','), '--changes', String(changes), '--every-ms', '150'], { cwd: REPO });
    procs.push(hosts);
    await waitFor(hosts, (o) => o.ready === true, 30_000, 'realm B hosts registered');
    const asker = tb.spawn('a1', process.execPath, ['--import', 'tsx', PROBE, 'asker', ...common('rma'), '--keys', files.extra.a.join(','), '--targets', targets.join(','), '--follow', mover, '--gap-ms', '1200'], { cwd: REPO });
    procs.push(asker);
    await waitFor(asker, (o) => o.subscribed === true, 30_000 + lookups * 2_000, 'lookups done and the mover followed');
    await sleep(500);
    hosts.child.kill('SIGUSR1');
    await waitFor(hosts, (o) => o.done === true, 30_000 + changes * 200, 'all changes registered');
    await sleep(1000);
    const a = lines(asker);
    const first = a.filter((o) => typeof o.first === 'number').map((o) => o.first as number);
    const firstOk = a.filter((o) => typeof o.first === 'number').every((o) => o.kind === 'binding');
    const cached = a.filter((o) => typeof o.cached === 'number').map((o) => o.cached as number);
    const local = a.filter((o) => typeof o.local === 'number').map((o) => o.local as number);
    const sent = new Map(lines(hosts).filter((o) => typeof o.seq === 'number').map((o) => [o.seq as number, o.t as number]));
    const pushed = new Map<number, number>();
    for (const o of a) if (o.push === true && !pushed.has(o.seq as number)) pushed.set(o.seq as number, o.t as number);
    const push: number[] = [];
    let missed = 0;
    for (const [seq, t] of sent) {
      const r = pushed.get(seq);
      if (r === undefined) missed++;
      else push.push(r - t);
    }
    const results = {
      lookups,
      changes,
      underlay_rtt_ms: rtt,
      cross_realm_first_lookup_ms_p50: median(first),
      cross_realm_first_lookup_all_positive: firstOk,
      cross_realm_cached_lookup_ms_p50: median(cached),
      same_realm_lookup_ms_p50: median(local),
      cross_realm_push_ms_p50: quantile(push, 0.5),
      cross_realm_push_ms_p99: quantile(push, 0.99),
      pushes_missed: missed,
      first_lookup_target_ms: 3 * rtt + 5,
      samples: { first_lookup_ms: first, cached_lookup_ms: cached, same_realm_lookup_ms: local, push_ms: push },
    };
    const met = (x: number | null, t: number) => String(x !== null && x <= t);
    printTable(
      ['measure', 'value', 'target', 'met'],
      [
        ['underlay RTT, RM to RM (reference)', `${fmt(rtt, 3)} ms`, '', ''],
        ['same-realm lookup p50 (reference: one flat RM)', `${fmt(results.same_realm_lookup_ms_p50, 2)} ms`, '', ''],
        ['cross_realm_first_lookup_ms_p50', `${fmt(results.cross_realm_first_lookup_ms_p50, 2)} ms`, `≤ ${fmt(results.first_lookup_target_ms, 2)} (3 RTT + 5)`, met(results.cross_realm_first_lookup_ms_p50, results.first_lookup_target_ms)],
        ['cross_realm_cached_lookup_ms_p50', `${fmt(results.cross_realm_cached_lookup_ms_p50, 2)} ms`, '≤ 1', met(results.cross_realm_cached_lookup_ms_p50, 1)],
        ['cross_realm_push_ms_p99', `${fmt(results.cross_realm_push_ms_p99, 2)} ms (p50 ${fmt(results.cross_realm_push_ms_p50, 2)}; ${missed} of ${sent.size} missed)`, '≤ 100', met(results.cross_realm_push_ms_p99, 100)],
      ],
    );
    console.log(`results: ${await writeResults('hierarchy', results)}`);
    return 0;
  } finally {
    for (const p of procs) await p.stop();
    await scene?.stop();
    await tb.down();
  }
}
