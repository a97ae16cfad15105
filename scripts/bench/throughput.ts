/**
 * npm run bench -- throughput [--runs N] [--seconds S] [--only underlay,realmnet_mtu,realmnet_offload,nebula] [--ipv6] [--nebula-mtu M]
 *
 * iperf3 TCP (cubic) from mh to ch on the testbed, one stream and four, `runs` times each (medians):
 *   underlay          the plain underlay (mh eth-a → ch), the ceiling
 *   realmnet_mtu      realmnet, per-packet TUN I/O (tun.offload: false)
 *   realmnet_offload  realmnet with TSO super-packets (tun.offload: true)
 *   nebula            Nebula 1.6 (AES-256-GCM), tun.mtu matched to realmnet's unless --nebula-mtu
 * with the CPU use of each overlay process on both ends. Prints a table and writes
 * bench-results/throughput.json. A realmnet row whose agent does not come up within 10 s is reported
 * as "not available: <reason>" (null in the JSON) and the other rows still run.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { cpus, loadavg, release, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { z } from 'zod';
import { HOST_IDS, writeAgentConfigs } from '../testbed/configs.ts';
import { up, type NsProcess, type Testbed, type TESTBED } from '../testbed/topology.ts';
import { sampleCpu } from './cpu.ts';
import { runIperf, type IperfResult } from './iperf.ts';
import { startNebula } from './nebula.ts';
import { fmt, median, printTable, UsageProblem, writeResults, type Cell } from './table.ts';

type Std = Testbed<typeof TESTBED>;

export const ROWS = ['underlay', 'realmnet_mtu', 'realmnet_offload', 'nebula'] as const;
export type RowName = (typeof ROWS)[number];

const LABELS: Record<RowName, string> = {
  underlay: 'underlay (veth)',
  realmnet_mtu: 'realmnet MTU',
  realmnet_offload: 'realmnet offload',
  nebula: 'Nebula',
};

const ALIASES: Record<string, RowName> = {
  underlay: 'underlay',
  realmnet_mtu: 'realmnet_mtu',
  'realmnet-mtu': 'realmnet_mtu',
  mtu: 'realmnet_mtu',
  realmnet_offload: 'realmnet_offload',
  'realmnet-offload': 'realmnet_offload',
  offload: 'realmnet_offload',
  nebula: 'nebula',
};

const MULTI_STREAMS = 4;
const AGENT_READY_MS = 10_000;
const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));

interface Options {
  runs: number;
  seconds: number;
  only: RowName[];
  ipv6: boolean;
  nebulaMtu: number;
}

/** A running path to measure: where the iperf3 server listens on ch, and which processes carry it. */
interface Path {
  address: string;
  /** The device on mh whose MTU the row reports. */
  dev: string;
  pids: { mh: number; ch: number } | null;
  note: string;
  stop(): Promise<void>;
}

interface RunSample extends IperfResult {
  cpu: { mh: number | null; ch: number | null };
}

interface RowResult {
  name: RowName;
  available: boolean;
  reason: string | null;
  mtu: number | null;
  mss: number | null;
  note: string;
  single: RunSample[];
  multi: RunSample[];
  singleGbps: number | null;
  multiGbps: number | null;
  retransmits: number | null;
  cpu: { single: { mh: number | null; ch: number | null }; multi: { mh: number | null; ch: number | null } };
}


function parseOptions(argv: string[]): Options {
  let v;
  try {
    v = parseArgs({
      args: argv,
      options: {
        runs: { type: 'string', default: '3' },
        seconds: { type: 'string', default: '10' },
        only: { type: 'string' },
        ipv6: { type: 'boolean', default: false },
        'nebula-mtu': { type: 'string', default: '1400' },
      },
      strict: true,
      allowPositionals: false,
    }).values;
  } catch (e) {
    throw new UsageProblem(e instanceof Error ? e.message : String(e));
  }
  const int = (s: string, name: string, min: number, max: number): number => {
    const n = Number(s);
    if (!Number.isInteger(n) || n < min || n > max) throw new UsageProblem(`--${name} ${s}: expected an integer from ${min} to ${max}`);
    return n;
  };
  const only: RowName[] = [];
  for (const w of (v.only ?? ROWS.join(',')).split(',').map((s) => s.trim()).filter((s) => s.length > 0)) {
    const r = ALIASES[w];
    if (r === undefined) throw new UsageProblem(`--only ${w}: expected some of ${ROWS.join(', ')}`);
    if (!only.includes(r)) only.push(r);
  }
  return {
    runs: int(v.runs, 'runs', 1, 20),
    seconds: int(v.seconds, 'seconds', 1, 120),
    only: ROWS.filter((r) => only.includes(r)),
    ipv6: v.ipv6,
    nebulaMtu: int(v['nebula-mtu'], 'nebula-mtu', 576, 9000),
  };
}

const IpLink = z.array(z.object({ mtu: z.number() }));

async function deviceMtu(tb: Std, dev: string): Promise<number | null> {
  const r = await tb.exec('mh', 'ip', ['-j', 'link', 'show', 'dev', dev], { allowFail: true });
  const p = IpLink.safeParse(r.code === 0 ? JSON.parse(r.stdout) : null);
  return p.success ? (p.data[0]?.mtu ?? null) : null;
}

/** The most telling line of a failed process's output: its error line if it has one, else its last lines. */
function whyExited(s: string): string {
  const lines = s.split('\n').map((l) => l.trim()).filter((l) => l.length > 0);
  const err = lines.find((l) => /^(\w*Error\b|realmnet:|error)|"level":(50|60)/.test(l));
  return (err ?? lines.slice(-2).join(' | ')).slice(0, 300);
}

/** Starts the realmnet agent on mh and ch; throws with a one-line reason when it is not up in 10 s. */
async function startRealmnet(tb: Std, o: Options, offload: boolean): Promise<Path> {
  const dir = await mkdtemp(join(tmpdir(), 'realmnet-bench-'));
  const procs: NsProcess[] = [];
  const stop = async (): Promise<void> => {
    await Promise.all(procs.map((p) => p.stop(3_000)));
    await rm(dir, { recursive: true, force: true });
  };
  try {
    const files = await writeAgentConfigs(dir, { offload, mtu: 1400, ipv6Underlay: o.ipv6, instanceId: 1, logLevel: 'warn', logFormat: 'json' });
    const agentArgs = (file: string): string[] => [join(REPO_ROOT, 'bin/realmnet.js'), 'agent', '--config', file];
    const mh = tb.spawn('mh', process.execPath, agentArgs(files.mh), { cwd: REPO_ROOT });
    procs.push(mh);
    const ch = tb.spawn('ch', process.execPath, agentArgs(files.ch), { cwd: REPO_ROOT });
    procs.push(ch);
    const deadline = Date.now() + AGENT_READY_MS;
    for (;;) {
      for (const p of procs) {
        if (!p.running()) {
          const { code } = await p.exited;
          throw new Error(`agent in ${p.node} exited (code ${code}): ${whyExited(p.stderrTail() + '\n' + p.stdoutTail()) || 'no output'}`);
        }
      }
      const r = await tb.exec('mh', 'ping', ['-6', '-n', '-c1', '-W1', HOST_IDS.ch], { allowFail: true });
      if (r.code === 0) break;
      if (Date.now() > deadline) throw new Error(`no ping reply from ${HOST_IDS.ch} over the overlay within ${AGENT_READY_MS / 1000} s`);
    }
    return { address: HOST_IDS.ch, dev: 'rn0', pids: { mh: mh.pid, ch: ch.pid }, note: offload ? 'TSO super-packets' : 'per-packet', stop };
  } catch (e) {
    await stop();
    throw e;
  }
}

async function startPath(tb: Std, o: Options, row: RowName): Promise<Path> {
  const fam = o.ipv6 ? 'v6' : 'v4';
  switch (row) {
    case 'underlay':
      return { address: tb.addr[fam].ch.core, dev: tb.addr.dev.mh.ispa, pids: null, note: `${fam === 'v4' ? 'IPv4' : 'IPv6'}, no overlay`, stop: async () => {} };
    case 'realmnet_mtu':
      return startRealmnet(tb, o, false);
    case 'realmnet_offload':
      return startRealmnet(tb, o, true);
    case 'nebula': {
      const n = await startNebula(tb, { mtu: o.nebulaMtu, ipv6Underlay: o.ipv6 });
      return { address: n.chAddr, dev: 'neb0', pids: n.pids, note: 'AES-256-GCM', stop: n.stop };
    }
  }
}

async function measureRow(tb: Std, o: Options, row: RowName): Promise<RowResult> {
  const result: RowResult = {
    name: row,
    available: false,
    reason: null,
    mtu: null,
    mss: null,
    note: '',
    single: [],
    multi: [],
    singleGbps: null,
    multiGbps: null,
    retransmits: null,
    cpu: { single: { mh: null, ch: null }, multi: { mh: null, ch: null } },
  };
  let path: Path;
  try {
    path = await startPath(tb, o, row);
  } catch (e) {
    result.reason = e instanceof Error ? e.message : String(e);
    console.error(`${row}: not available: ${result.reason}`);
    return result;
  }
  try {
    result.available = true;
    result.note = path.note;
    result.mtu = await deviceMtu(tb, path.dev);
    for (const [streams, into] of [
      [1, result.single],
      [MULTI_STREAMS, result.multi],
    ] as const) {
      for (let i = 0; i < o.runs; i++) {
        const sampler = path.pids ? sampleCpu(path.pids) : null;
        const r = await runIperf(tb, { server: 'ch', client: 'mh', address: path.address, seconds: o.seconds, streams });
        const cpu = sampler?.stop() ?? {};
        into.push({ ...r, cpu: { mh: cpu.mh ?? null, ch: cpu.ch ?? null } });
        console.error(`${row}: ${streams} stream(s) run ${i + 1}/${o.runs}: ${fmt(r.gbps)} Gbit/s, ${r.retransmits ?? '?'} retransmits`);
      }
    }
    const med = (xs: RunSample[], f: (s: RunSample) => number | null): number | null => median(xs.map(f).filter((x): x is number => x !== null));
    result.singleGbps = med(result.single, (s) => s.gbps);
    result.multiGbps = med(result.multi, (s) => s.gbps);
    result.retransmits = med(result.single, (s) => s.retransmits);
    result.mss = result.single[0]?.mss ?? null;
    result.cpu = {
      single: { mh: med(result.single, (s) => s.cpu.mh), ch: med(result.single, (s) => s.cpu.ch) },
      multi: { mh: med(result.multi, (s) => s.cpu.mh), ch: med(result.multi, (s) => s.cpu.ch) },
    };
  } catch (e) {
    result.available = false;
    result.reason = `failed while measuring: ${e instanceof Error ? e.message : String(e)}`;
    console.error(`${row}: ${result.reason}`);
  } finally {
    await path.stop();
  }
  return result;
}

function ratio(a: number | null | undefined, b: number | null | undefined): string {
  return a === null || a === undefined || b === null || b === undefined || b === 0 ? '—' : `${(a / b).toFixed(2)}x`;
}

function report(o: Options, rows: RowResult[]): void {
  const by = (n: RowName): RowResult | undefined => rows.find((r) => r.name === n);
  const under = by('underlay');
  const neb = by('nebula');
  const cpuCell = (c: { mh: number | null; ch: number | null }, pids: boolean): string => (pids ? `${fmt(c.mh, 0)}/${fmt(c.ch, 0)}` : '—');
  const table: Cell[][] = rows.map((r) => {
    if (!r.available) return [LABELS[r.name], null, null, null, null, null, null, null, null, `not available: ${r.reason ?? 'unknown'}`];
    const hasCpu = r.name !== 'underlay';
    return [
      LABELS[r.name],
      r.mtu,
      r.mss,
      fmt(r.singleGbps),
      fmt(r.multiGbps),
      r.name === 'underlay' ? '1.00x' : ratio(r.singleGbps, under?.singleGbps),
      r.name.startsWith('realmnet') ? ratio(r.singleGbps, neb?.singleGbps) : '—',
      r.retransmits,
      cpuCell(r.cpu.single, hasCpu),
      r.note,
    ];
  });
  console.log(
    `\nthroughput mh → ch, iperf3 TCP cubic, ${o.seconds} s per run, median of ${o.runs} run(s), ${o.ipv6 ? 'IPv6' : 'IPv4'} underlay\n`,
  );
  printTable(
    ['path', 'MTU', 'MSS', '1 stream Gbit/s', `${MULTI_STREAMS} streams Gbit/s`, 'vs underlay', 'vs Nebula', 'retr', 'CPU% mh/ch', 'note'],
    table,
    ['l', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'l'],
  );
  console.log('\nCPU% is one process (agent or nebula) per end, 100 = one core, during the 1-stream runs.');
}

function toJson(o: Options, rows: RowResult[], load: { start: number; end: number }): Record<string, unknown> {
  const g = (n: RowName, k: 'singleGbps' | 'multiGbps'): number | null => rows.find((r) => r.name === n && r.available)?.[k] ?? null;
  const per = <V>(f: (r: RowResult) => V): Record<string, V> => Object.fromEntries(rows.map((r) => [r.name, f(r)]));
  return {
    underlay_gbps: g('underlay', 'singleGbps'),
    realmnet_mtu_gbps: g('realmnet_mtu', 'singleGbps'),
    realmnet_offload_gbps: g('realmnet_offload', 'singleGbps'),
    nebula_gbps: g('nebula', 'singleGbps'),
    [`underlay_gbps_${MULTI_STREAMS}streams`]: g('underlay', 'multiGbps'),
    [`realmnet_mtu_gbps_${MULTI_STREAMS}streams`]: g('realmnet_mtu', 'multiGbps'),
    [`realmnet_offload_gbps_${MULTI_STREAMS}streams`]: g('realmnet_offload', 'multiGbps'),
    [`nebula_gbps_${MULTI_STREAMS}streams`]: g('nebula', 'multiGbps'),
    mtu: per((r) => r.mtu),
    mss: per((r) => r.mss),
    cpu_percent: per((r) => (r.available && r.name !== 'underlay' ? r.cpu : null)),
    retransmits_median: per((r) => r.retransmits),
    not_available: Object.fromEntries(rows.filter((r) => !r.available).map((r) => [r.name, r.reason])),
    runs: per((r) => ({ single: r.single, multi: r.multi })),
    settings: {
      tool: 'iperf3',
      congestion: 'cubic',
      direction: 'mh -> ch',
      seconds: o.seconds,
      runs: o.runs,
      streams: [1, MULTI_STREAMS],
      underlay: o.ipv6 ? 'ipv6' : 'ipv4',
      nebula_mtu: o.nebulaMtu,
      nebula_cipher: 'aes (AES-256-GCM)',
      realmnet_mtu: 1400,
    },
    // Everything runs on this one box: a load average near or above the core count means other work
    // competed with both ends and the overlay processes, and the figures are low.
    machine: { cpus: cpus().length, kernel: release(), node: process.version, loadavg1_start: load.start, loadavg1_end: load.end },
    date: new Date().toISOString(),
  };
}

export async function run(argv: string[]): Promise<number> {
  const o = parseOptions(argv);
  const loadStart = loadavg()[0] ?? 0;
  const tb = await up({ prefix: `rnb${process.pid % 100000}-` });
  const rows: RowResult[] = [];
  try {
    for (const row of o.only) rows.push(await measureRow(tb, o, row));
  } finally {
    await tb.down();
  }
  report(o, rows);
  const load = { start: loadStart, end: loadavg()[0] ?? 0 };
  const busy = Math.max(load.start, load.end) > cpus().length / 2;
  console.log(`load average (1 min) ${load.start.toFixed(1)} at start, ${load.end.toFixed(1)} at end on ${cpus().length} CPUs${busy ? ': the box was busy, figures are low' : ''}.`);
  const file = await writeResults('throughput', toJson(o, rows, load));
  console.log(`results: ${file}`);
  return 0;
}
