/**
 * npm run bench -- throughput [--runs N] [--seconds S] [--only ROWS] [--encrypted] [--ipv6]
 *                             [--nebula-mtu M] [--wireguard-mtu M]
 *
 * iperf3 TCP (cubic) from mh to ch on the testbed, one stream and four, `runs` times each (medians):
 *   underlay                    the plain underlay (mh eth-a → ch), the ceiling
 *   realmnet_mtu                realmnet, per-packet TUN I/O (tun.offload: false), unencrypted
 *   realmnet_offload            realmnet with TSO super-packets (tun.offload: true), unencrypted
 *   realmnet_encrypted          realmnet per-packet, dataplane.encryption: on (the default)
 *   realmnet_encrypted_offload  realmnet with TSO super-packets, encryption on
 *   nebula                      Nebula 1.6 (AES-256-GCM), tun.mtu matched to realmnet's unless --nebula-mtu
 *   wireguard_go                wireguard-go (ChaCha20-Poly1305), MTU matched unless --wireguard-mtu
 * with the CPU use of each overlay process on both ends, as a percentage and as cores per Gbit/s.
 * Prints a table and writes bench-results/throughput.json.
 *
 * Failures: a reference (nebula, wireguard_go) whose tool is missing or that does not come up stops
 * the whole bench with one line (a reference is never reported as a figure it did not earn). A
 * realmnet row whose agent does not come up within 10 s is reported as "not available: <reason>"
 * (null in the JSON) and the other rows still run.
 */
import { constants } from 'node:fs';
import { access, mkdtemp, rm } from 'node:fs/promises';
import { cpus, loadavg, release, tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { z } from 'zod';
import { HOST_IDS, writeAgentConfigs } from '../testbed/configs.ts';
import { execHost, up, type NsProcess, type Testbed, type TESTBED } from '../testbed/topology.ts';
import { sampleCpu } from './cpu.ts';
import { runIperf, type IperfResult } from './iperf.ts';
import { startNebula } from './nebula.ts';
import { BenchStopped, fmt, median, printTable, UsageProblem, writeResults, type Cell } from './table.ts';
import { startWireguard } from './wireguard.ts';

type Std = Testbed<typeof TESTBED>;

/** Table order. */
export const ROWS = ['underlay', 'realmnet_mtu', 'realmnet_offload', 'realmnet_encrypted', 'realmnet_encrypted_offload', 'nebula', 'wireguard_go'] as const;
export type RowName = (typeof ROWS)[number];

type RealmnetRow = Extract<RowName, `realmnet_${string}`>;
/** The other overlays measured as references: if one cannot run, the bench stops (see the header). */
const REFERENCES: readonly RowName[] = ['nebula', 'wireguard_go'];
const ENCRYPTED_ROWS: readonly RowName[] = ['realmnet_encrypted', 'realmnet_encrypted_offload'];

const LABELS: Record<RowName, string> = {
  underlay: 'underlay (veth)',
  realmnet_mtu: 'realmnet MTU, unencrypted',
  realmnet_offload: 'realmnet offload, unencrypted',
  realmnet_encrypted: 'realmnet encrypted (MTU)',
  realmnet_encrypted_offload: 'realmnet encrypted (offload)',
  nebula: 'Nebula',
  wireguard_go: 'wireguard-go',
};

const ALIASES: Record<string, RowName> = {
  underlay: 'underlay',
  realmnet_mtu: 'realmnet_mtu',
  'realmnet-mtu': 'realmnet_mtu',
  mtu: 'realmnet_mtu',
  realmnet_offload: 'realmnet_offload',
  'realmnet-offload': 'realmnet_offload',
  offload: 'realmnet_offload',
  realmnet_encrypted: 'realmnet_encrypted',
  'realmnet-encrypted': 'realmnet_encrypted',
  encrypted: 'realmnet_encrypted',
  realmnet_encrypted_offload: 'realmnet_encrypted_offload',
  'realmnet-encrypted-offload': 'realmnet_encrypted_offload',
  'encrypted-offload': 'realmnet_encrypted_offload',
  nebula: 'nebula',
  wireguard_go: 'wireguard_go',
  'wireguard-go': 'wireguard_go',
  wireguard: 'wireguard_go',
  wg: 'wireguard_go',
};

/** What each row needs on PATH, and the Debian package that has it (scripts/install-deps.sh). */
const TOOLS: Partial<Record<RowName, readonly { bin: string; pkg: string }[]>> = {
  nebula: [
    { bin: 'nebula', pkg: 'nebula' },
    { bin: 'nebula-cert', pkg: 'nebula' },
  ],
  wireguard_go: [
    { bin: 'wireguard-go', pkg: 'wireguard-go' },
    { bin: 'wg', pkg: 'wireguard-tools' },
  ],
};

/** How the agents of one realmnet row are configured. */
interface RealmnetMode {
  offload: boolean;
  encryption: 'on' | 'off';
}

const REALMNET_MODES: Record<RealmnetRow, RealmnetMode> = {
  realmnet_mtu: { offload: false, encryption: 'off' },
  realmnet_offload: { offload: true, encryption: 'off' },
  realmnet_encrypted: { offload: false, encryption: 'on' },
  realmnet_encrypted_offload: { offload: true, encryption: 'on' },
};

const MULTI_STREAMS = 4;
const AGENT_READY_MS = 10_000;
/** realmnet's tun.mtu in every realmnet row (the agent's default); the references match it. */
const REALMNET_MTU = 1400;
const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));

interface Options {
  runs: number;
  seconds: number;
  only: RowName[];
  ipv6: boolean;
  nebulaMtu: number;
  wireguardMtu: number;
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

/** CPU cost per unit of goodput: cores (CPU-seconds per second) per Gbit/s, mh sends and ch receives. */
interface CpuPerGbps {
  sender: number | null;
  receiver: number | null;
  total: number | null;
}

interface RunSample extends IperfResult {
  /** Percent of one core per end, over the iperf3 run. */
  cpu: { mh: number | null; ch: number | null };
  cpuPerGbps: CpuPerGbps | null;
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
  /** Medians of the runs' own figures; null for the underlay (no process of its own). */
  cpuPerGbps: { single: CpuPerGbps; multi: CpuPerGbps } | null;
}

/**
 * Whether the agent's config schema knows `dataplane.encryption` (the encrypted data plane). Asked
 * of agent/config.ts itself, so the bench follows the agent it is run with.
 */
function parseOptions(argv: string[]): Options {
  let v;
  try {
    v = parseArgs({
      args: argv,
      options: {
        runs: { type: 'string', default: '3' },
        seconds: { type: 'string', default: '10' },
        only: { type: 'string' },
        encrypted: { type: 'boolean', default: false },
        ipv6: { type: 'boolean', default: false },
        'nebula-mtu': { type: 'string', default: String(REALMNET_MTU) },
        'wireguard-mtu': { type: 'string', default: String(REALMNET_MTU) },
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
  if (v.only === undefined) {
    for (const r of ROWS) only.push(r);
  } else {
    for (const w of v.only.split(',').map((s) => s.trim()).filter((s) => s.length > 0)) {
      const r = ALIASES[w];
      if (r === undefined) throw new UsageProblem(`--only ${w}: expected some of ${ROWS.join(', ')}`);
      if (!only.includes(r)) only.push(r);
    }
  }
  if (v.encrypted) for (const r of ENCRYPTED_ROWS) if (!only.includes(r)) only.push(r);
  return {
    runs: int(v.runs, 'runs', 1, 20),
    seconds: int(v.seconds, 'seconds', 1, 120),
    only: ROWS.filter((r) => only.includes(r)),
    ipv6: v.ipv6,
    nebulaMtu: int(v['nebula-mtu'], 'nebula-mtu', 576, 9000),
    wireguardMtu: int(v['wireguard-mtu'], 'wireguard-mtu', 1280, 9000),
  };
}

async function onPath(bin: string): Promise<boolean> {
  for (const d of (process.env.PATH ?? '').split(delimiter).filter((x) => x.length > 0)) {
    try {
      await access(join(d, bin), constants.X_OK);
      return true;
    } catch {
      // not in this directory
    }
  }
  return false;
}

/** Stops the bench before it builds anything when a tool a chosen row needs is missing. */
async function requireTools(rows: readonly RowName[]): Promise<void> {
  const missing: string[] = [];
  for (const bin of ['iperf3', 'ping', 'ip']) if (!(await onPath(bin))) missing.push(`${bin} (every row)`);
  for (const r of rows) for (const t of TOOLS[r] ?? []) if (!(await onPath(t.bin))) missing.push(`${t.bin} (${r}; Debian package ${t.pkg})`);
  if (missing.length > 0)
    throw new BenchStopped(`missing on PATH: ${missing.join(', ')}. Run \`bash scripts/install-deps.sh\` as root, or leave the row out with --only`);
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

/**
 * The agent configs of one realmnet row (`mh.yaml` and `ch.yaml` in `dir`): the testbed's static
 * configs with the row's mode. Encryption is named in every row (`off` for the unencrypted ones: the
 * agent's default is on); with `on`, each host gets a key and its peer entry the other's public key.
 */
async function writeRealmnetConfigs(dir: string, o: Options, mode: RealmnetMode): Promise<{ mh: string; ch: string }> {
  return writeAgentConfigs(dir, { offload: mode.offload, mtu: REALMNET_MTU, ipv6Underlay: o.ipv6, instanceId: 1, logLevel: 'warn', logFormat: 'json', encryption: mode.encryption });
}

/** Starts the realmnet agent on mh and ch; throws with a one-line reason when it is not up in 10 s. */
async function startRealmnet(tb: Std, o: Options, mode: RealmnetMode): Promise<Path> {
  const dir = await mkdtemp(join(tmpdir(), 'realmnet-bench-'));
  const procs: NsProcess[] = [];
  const stop = async (): Promise<void> => {
    await Promise.all(procs.map((p) => p.stop(3_000)));
    await rm(dir, { recursive: true, force: true });
  };
  try {
    const files = await writeRealmnetConfigs(dir, o, mode);
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
    const io = mode.offload ? 'TSO super-packets' : 'per-packet';
    // The cipher is the agent's default (dataplane.cipher: aes-256-gcm); the bench does not set it.
    const crypto = mode.encryption === 'on' ? 'encrypted (agent default cipher)' : 'unencrypted';
    return { address: HOST_IDS.ch, dev: 'rn0', pids: { mh: mh.pid, ch: ch.pid }, note: `${io}, ${crypto}`, stop };
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
    case 'realmnet_offload':
    case 'realmnet_encrypted':
    case 'realmnet_encrypted_offload':
      return startRealmnet(tb, o, REALMNET_MODES[row]);
    case 'nebula': {
      const n = await startNebula(tb, { mtu: o.nebulaMtu, ipv6Underlay: o.ipv6 });
      return { address: n.chAddr, dev: 'neb0', pids: n.pids, note: 'AES-256-GCM, IPv4 inside', stop: n.stop };
    }
    case 'wireguard_go': {
      const w = await startWireguard(tb, { mtu: o.wireguardMtu, ipv6Underlay: o.ipv6 });
      return { address: w.chAddr, dev: w.dev.mh, pids: w.pids, note: 'ChaCha20-Poly1305, per-packet', stop: w.stop };
    }
  }
}

/** Cores (CPU-seconds per second) per Gbit/s of goodput; null when either figure is missing. */
function perGbps(cpuPercent: number | null, gbps: number): number | null {
  return cpuPercent === null || !(gbps > 0) ? null : cpuPercent / 100 / gbps;
}

function cpuPerGbpsOf(cpu: { mh: number | null; ch: number | null }, gbps: number): CpuPerGbps {
  const sender = perGbps(cpu.mh, gbps);
  const receiver = perGbps(cpu.ch, gbps);
  return { sender, receiver, total: sender === null || receiver === null ? null : sender + receiver };
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
    cpuPerGbps: null,
  };
  let path: Path;
  try {
    path = await startPath(tb, o, row);
  } catch (e) {
    const why = e instanceof Error ? e.message : String(e);
    if (REFERENCES.includes(row)) throw new BenchStopped(`${row} (a reference) did not come up, so the bench stops: ${why}`);
    result.reason = why;
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
        const raw = sampler?.stop() ?? {};
        const cpu = { mh: raw.mh ?? null, ch: raw.ch ?? null };
        into.push({ ...r, cpu, cpuPerGbps: path.pids ? cpuPerGbpsOf(cpu, r.gbps) : null });
        console.error(`${row}: ${streams} stream(s) run ${i + 1}/${o.runs}: ${fmt(r.gbps)} Gbit/s, ${r.retransmits ?? '?'} retransmits`);
      }
    }
    const med = (xs: RunSample[], f: (s: RunSample) => number | null | undefined): number | null => median(xs.map(f).filter((x): x is number => x !== null && x !== undefined));
    result.singleGbps = med(result.single, (s) => s.gbps);
    result.multiGbps = med(result.multi, (s) => s.gbps);
    result.retransmits = med(result.single, (s) => s.retransmits);
    result.mss = result.single[0]?.mss ?? null;
    result.cpu = {
      single: { mh: med(result.single, (s) => s.cpu.mh), ch: med(result.single, (s) => s.cpu.ch) },
      multi: { mh: med(result.multi, (s) => s.cpu.mh), ch: med(result.multi, (s) => s.cpu.ch) },
    };
    if (path.pids !== null) {
      // The median of each run's own ratio, not a ratio of medians: CPU and goodput move together.
      const medCost = (xs: RunSample[]): CpuPerGbps => ({
        sender: med(xs, (s) => s.cpuPerGbps?.sender),
        receiver: med(xs, (s) => s.cpuPerGbps?.receiver),
        total: med(xs, (s) => s.cpuPerGbps?.total),
      });
      result.cpuPerGbps = { single: medCost(result.single), multi: medCost(result.multi) };
    }
  } catch (e) {
    const why = `failed while measuring: ${e instanceof Error ? e.message : String(e)}`;
    if (REFERENCES.includes(row)) throw new BenchStopped(`${row} (a reference) ${why}`);
    result.available = false;
    result.reason = why;
    console.error(`${row}: ${result.reason}`);
  } finally {
    await path.stop();
  }
  return result;
}

function ratio(a: number | null | undefined, b: number | null | undefined): string {
  return a === null || a === undefined || b === null || b === undefined || b === 0 ? '—' : `${(a / b).toFixed(2)}x`;
}

const UNDERLAY_CPU_NOTE =
  'the underlay has no process of its own: its cost is the kernel\'s (TCP, forwarding and softirq work in several namespaces), which /proc/PID/stat does not attribute to either end';

function report(o: Options, rows: RowResult[]): void {
  const by = (n: RowName): RowResult | undefined => rows.find((r) => r.name === n);
  const under = by('underlay');
  const neb = by('nebula');
  const wg = by('wireguard_go');
  const pair = (a: number | null, b: number | null, digits: number): string => `${fmt(a, digits)}/${fmt(b, digits)}`;
  const table: Cell[][] = rows.map((r) => {
    if (!r.available) return [LABELS[r.name], null, null, null, null, null, null, null, null, null, null, `not available: ${r.reason ?? 'unknown'}`];
    const c = r.cpuPerGbps?.single;
    return [
      LABELS[r.name],
      r.mtu,
      r.mss,
      fmt(r.singleGbps),
      fmt(r.multiGbps),
      r.name === 'underlay' ? '1.00x' : ratio(r.singleGbps, under?.singleGbps),
      r.name.startsWith('realmnet') ? ratio(r.singleGbps, neb?.singleGbps) : '—',
      r.name.startsWith('realmnet') ? ratio(r.singleGbps, wg?.singleGbps) : '—',
      r.retransmits,
      r.cpuPerGbps === null ? '—' : pair(r.cpu.single.mh, r.cpu.single.ch, 0),
      c === undefined ? '—' : `${pair(c.sender, c.receiver, 2)}/${fmt(c.total)}`,
      r.note,
    ];
  });
  console.log(
    `\nthroughput mh → ch, iperf3 TCP cubic, ${o.seconds} s per run, median of ${o.runs} run(s), ${o.ipv6 ? 'IPv6' : 'IPv4'} underlay\n`,
  );
  printTable(
    ['path', 'MTU', 'MSS', '1 stream Gbit/s', `${MULTI_STREAMS} streams Gbit/s`, 'vs underlay', 'vs Nebula', 'vs wg-go', 'retr', 'CPU% snd/rcv', 'cores/(Gbit/s) snd/rcv/total', 'note'],
    table,
    ['l', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'l'],
  );
  console.log(
    [
      '',
      'CPU: the overlay\'s own process on each end (realmnet agent, nebula, wireguard-go; all threads) during the 1-stream runs;',
      'mh sends, ch receives. CPU% is 100 = one core. cores/(Gbit/s) is CPU-seconds per second per Gbit/s of goodput (median of',
      'the runs\' own ratios): lower is cheaper. Underlay "—": it has no process of its own; its cost is the kernel\'s (TCP,',
      'forwarding and softirq work in several namespaces), which /proc/PID/stat does not attribute to either end.',
    ].join('\n'),
  );
}

function toJson(o: Options, rows: RowResult[], load: { start: number; end: number }, wireguardVersion: string | null): Record<string, unknown> {
  const g = (n: RowName, k: 'singleGbps' | 'multiGbps'): number | null => rows.find((r) => r.name === n && r.available)?.[k] ?? null;
  const per = <V>(f: (r: RowResult) => V): Record<string, V> => Object.fromEntries(rows.map((r) => [r.name, f(r)]));
  const total = (n: RowName): number | null => rows.find((r) => r.name === n && r.available)?.cpuPerGbps?.single.total ?? null;
  return {
    // The keys of the first version, unchanged.
    underlay_gbps: g('underlay', 'singleGbps'),
    realmnet_mtu_gbps: g('realmnet_mtu', 'singleGbps'),
    realmnet_offload_gbps: g('realmnet_offload', 'singleGbps'),
    nebula_gbps: g('nebula', 'singleGbps'),
    [`underlay_gbps_${MULTI_STREAMS}streams`]: g('underlay', 'multiGbps'),
    [`realmnet_mtu_gbps_${MULTI_STREAMS}streams`]: g('realmnet_mtu', 'multiGbps'),
    [`realmnet_offload_gbps_${MULTI_STREAMS}streams`]: g('realmnet_offload', 'multiGbps'),
    [`nebula_gbps_${MULTI_STREAMS}streams`]: g('nebula', 'multiGbps'),
    // Added with the encrypted rows and the wireguard-go reference (null when a row did not run).
    realmnet_encrypted_gbps: g('realmnet_encrypted', 'singleGbps'),
    realmnet_encrypted_offload_gbps: g('realmnet_encrypted_offload', 'singleGbps'),
    wireguard_go_gbps: g('wireguard_go', 'singleGbps'),
    [`realmnet_encrypted_gbps_${MULTI_STREAMS}streams`]: g('realmnet_encrypted', 'multiGbps'),
    [`realmnet_encrypted_offload_gbps_${MULTI_STREAMS}streams`]: g('realmnet_encrypted_offload', 'multiGbps'),
    [`wireguard_go_gbps_${MULTI_STREAMS}streams`]: g('wireguard_go', 'multiGbps'),
    // Cores per Gbit/s, sender + receiver, single stream (details in cpu_per_gbps). The underlay's is
    // always null: see settings.cpu_per_gbps_underlay.
    underlay_cpu_per_gbps: null,
    realmnet_mtu_cpu_per_gbps: total('realmnet_mtu'),
    realmnet_offload_cpu_per_gbps: total('realmnet_offload'),
    realmnet_encrypted_cpu_per_gbps: total('realmnet_encrypted'),
    realmnet_encrypted_offload_cpu_per_gbps: total('realmnet_encrypted_offload'),
    nebula_cpu_per_gbps: total('nebula'),
    wireguard_go_cpu_per_gbps: total('wireguard_go'),
    mtu: per((r) => r.mtu),
    mss: per((r) => r.mss),
    cpu_percent: per((r) => (r.available && r.name !== 'underlay' ? r.cpu : null)),
    cpu_per_gbps: per((r) => (r.available ? r.cpuPerGbps : null)),
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
      wireguard_mtu: o.wireguardMtu,
      wireguard_version: wireguardVersion,
      wireguard_cipher: 'ChaCha20-Poly1305 (the protocol has no other)',
      realmnet_mtu: REALMNET_MTU,
      realmnet_encryption: 'dataplane.encryption: off in the realmnet_mtu/offload rows, on (aes-256-gcm, the default) in the encrypted rows',
      cpu_per_gbps_unit:
        'cores per Gbit/s: CPU-seconds (user + system, all threads, from /proc/PID/stat) of the overlay process on one end per second of the iperf3 run, divided by the run\'s goodput in Gbit/s; sender = mh, receiver = ch, total = both; median of the runs\' own ratios',
      cpu_per_gbps_underlay: UNDERLAY_CPU_NOTE,
    },
    // Everything runs on this one box: a load average near or above the core count means other work
    // competed with both ends and the overlay processes, and the figures are low.
    machine: { cpus: cpus().length, kernel: release(), node: process.version, loadavg1_start: load.start, loadavg1_end: load.end },
    date: new Date().toISOString(),
  };
}

/** `wireguard-go --version`'s first line (e.g. "wireguard-go v0.0.20220316"), for the JSON. */
async function wireguardVersion(): Promise<string | null> {
  const r = await execHost('wireguard-go', ['--version'], { allowFail: true, timeoutMs: 5_000 });
  return r.stdout.trim().split('\n')[0] || null;
}

export async function run(argv: string[]): Promise<number> {
  const o = parseOptions(argv);
  await requireTools(o.only);
  const loadStart = loadavg()[0] ?? 0;
  const wgVersion = o.only.includes('wireguard_go') ? await wireguardVersion() : null;
  const tb = await up({ prefix: `rnb${process.pid % 100000}-` });
  const rows: RowResult[] = [];
  try {
    // References first: if one cannot run, the bench stops before spending minutes on the rest.
    const order = [...o.only.filter((r) => r === 'underlay' || REFERENCES.includes(r)), ...o.only.filter((r) => r !== 'underlay' && !REFERENCES.includes(r))];
    for (const row of order) rows.push(await measureRow(tb, o, row));
  } finally {
    await tb.down();
  }
  rows.sort((a, b) => ROWS.indexOf(a.name) - ROWS.indexOf(b.name));
  report(o, rows);
  const load = { start: loadStart, end: loadavg()[0] ?? 0 };
  const busy = Math.max(load.start, load.end) > cpus().length / 2;
  console.log(`load average (1 min) ${load.start.toFixed(1)} at start, ${load.end.toFixed(1)} at end on ${cpus().length} CPUs${busy ? ': the box was busy, figures are low' : ''}.`);
  const file = await writeResults('throughput', toJson(o, rows, load, wgVersion));
  console.log(`results: ${file}`);
  return 0;
}
