/**
 * npm run bench -- sessions [--reps N] [--seconds S]
 *
 * What encryption costs in time (issue #13's handshake targets), on the testbed, realmnet only:
 *   first packet   mh pings ch's host ID right after both agents registered with the RM (neither
 *                  knows the other): the first ping's round trip includes both lookups and, when
 *                  encrypted, the handshake. Measured with encryption on and off in the same run
 *                  (fresh agents each repetition); the difference is the handshake's cost, to be
 *                  compared with one round trip of the overlay (the established ping's RTT).
 *   rekey gap      a numbered UDP stream (2000 datagrams/s) from mh to ch for S seconds between
 *                  static peers whose sessions are replaced every 2 s, and the same stream with the
 *                  default 120 s: the largest gap between consecutive arrivals, lost and duplicated
 *                  datagrams. A rekey that stalls traffic shows as a larger largest gap.
 * Prints a table and writes bench-results/sessions.json (first_packet_encrypted_ms,
 * first_packet_plain_ms, handshake_extra_ms, rtt_ms, rekey_max_gap_ms, no_rekey_max_gap_ms, rekeys,
 * rekey_lost, rekey_duplicates).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { HOST_IDS, writeAgentConfigs, writeRealmConfigs } from '../testbed/configs.ts';
import { up, type NsProcess, type Testbed, type TESTBED } from '../testbed/topology.ts';
import { fmt, median, printTable, UsageProblem, writeResults } from './table.ts';

type Std = Testbed<typeof TESTBED>;
const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));
const CLI = join(REPO_ROOT, 'bin/realmnet.js');

interface Options {
  reps: number;
  seconds: number;
}

function options(argv: string[]): Options {
  const { values } = parseArgs({ args: argv, options: { reps: { type: 'string', default: '5' }, seconds: { type: 'string', default: '12' } }, strict: true });
  const reps = Number(values.reps);
  const seconds = Number(values.seconds);
  if (!Number.isInteger(reps) || reps < 1 || reps > 50) throw new UsageProblem(`--reps ${values.reps}: give a whole number from 1 to 50`);
  if (!Number.isFinite(seconds) || seconds < 4 || seconds > 600) throw new UsageProblem(`--seconds ${values.seconds}: give a number of seconds from 4 to 600`);
  return { reps, seconds };
}

/** The JSON `realmnet status --json` prints, as far as this bench reads it. */
interface StatusLike {
  rm?: { registered?: boolean } | null;
  encryption?: { counters: { rekeys: number; handshakesCompleted: number } } | null;
}

async function status(tb: Std, node: 'mh' | 'ch'): Promise<StatusLike | null> {
  const r = await tb.exec(node, process.execPath, [CLI, 'status', '--json'], { cwd: REPO_ROOT, allowFail: true, timeoutMs: 10_000 });
  if (r.code !== 0) return null;
  return JSON.parse(r.stdout) as StatusLike;
}

async function until(what: string, ms: number, cond: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`${what} within ${ms / 1000} s`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

async function pingMs(tb: Std, target: string, count: number): Promise<number[]> {
  const r = await tb.exec('mh', 'ping', ['-6', '-n', '-c', String(count), '-i', '0.2', '-W', '3', target], { allowFail: true, timeoutMs: 30_000 });
  return [...r.stdout.matchAll(/time=([\d.]+) ms/g)].map((m) => Number(m[1]));
}

/** One repetition: fresh RM and agents, both registered, then the first ping and five more. */
async function firstPacket(tb: Std, encryption: 'on' | 'off'): Promise<{ first: number; rtt: number }> {
  const dir = await mkdtemp(join(tmpdir(), 'realmnet-bench-sessions-'));
  const procs: NsProcess[] = [];
  try {
    const files = await writeRealmConfigs(dir, { logLevel: 'warn', logFormat: 'json', encryption });
    procs.push(tb.spawn('rm', process.execPath, [CLI, 'rm', '--config', files.rm], { cwd: REPO_ROOT }));
    await new Promise((r) => setTimeout(r, 500));
    procs.push(tb.spawn('mh', process.execPath, [CLI, 'agent', '--config', files.mh], { cwd: REPO_ROOT }));
    procs.push(tb.spawn('ch', process.execPath, [CLI, 'agent', '--config', files.ch], { cwd: REPO_ROOT }));
    await until('mh and ch registered with the RM', 30_000, async () => {
      for (const p of procs) if (!p.running()) throw new Error(`${p.node} exited: ${p.stderrTail().slice(-300)}`);
      const [a, b] = await Promise.all([status(tb, 'mh'), status(tb, 'ch')]);
      return a?.rm?.registered === true && b?.rm?.registered === true;
    });
    const [first] = await pingMs(tb, files.ids.ch, 1);
    if (first === undefined) throw new Error(`no reply to the first ping of ${files.ids.ch} (encryption ${encryption})`);
    const rest = await pingMs(tb, files.ids.ch, 5);
    return { first, rtt: median(rest) ?? NaN };
  } finally {
    await Promise.all(procs.map((p) => p.stop(3_000)));
    await rm(dir, { recursive: true, force: true });
  }
}

/** The receiver: counts numbered datagrams, the largest gap between arrivals, duplicates. */
const RECEIVER = `
const dgram = require('node:dgram');
const s = dgram.createSocket('udp6');
const seen = new Set(); let dup = 0, last = 0, maxGap = 0, n = 0;
s.on('message', (m) => {
  const t = performance.now(); const k = m.readUInt32BE(0);
  if (seen.has(k)) dup++; else seen.add(k);
  if (n > 0) maxGap = Math.max(maxGap, t - last); last = t; n++;
});
s.bind(9000, process.argv[1]);
process.on('SIGTERM', () => { process.stdout.write(JSON.stringify({ received: seen.size, dup, maxGap }) + '\\n', () => process.exit(0)); });
`;

/** The sender: RATE datagrams a second for SECONDS, paced in 1 ms steps. */
const SENDER = `
const dgram = require('node:dgram');
const [to, seconds] = [process.argv[1], Number(process.argv[2])];
const s = dgram.createSocket('udp6');
let k = 0; const t0 = performance.now(); const total = Math.round(seconds * 2000);
function step() {
  const due = Math.min(total, Math.floor((performance.now() - t0) * 2));
  // A buffer per datagram: send() reads it later, so reusing one would send later numbers twice.
  while (k < due) { const buf = Buffer.alloc(200); buf.writeUInt32BE(k++, 0); s.send(buf, 9000, to); }
  if (k < total) setTimeout(step, 1); else setTimeout(() => { process.stdout.write(JSON.stringify({ sent: k }) + '\\n'); process.exit(0); }, 200);
}
step();
`;

interface StreamResult {
  sent: number;
  received: number;
  dup: number;
  maxGap: number;
  rekeys: number;
}

async function stream(tb: Std, seconds: number, rekeyAfterS: number): Promise<StreamResult> {
  const dir = await mkdtemp(join(tmpdir(), 'realmnet-bench-rekey-'));
  const procs: NsProcess[] = [];
  try {
    const files = await writeAgentConfigs(dir, { logLevel: 'warn', logFormat: 'json', dataplane: { rekeyAfterS, rejectAfterS: Math.max(rekeyAfterS * 3, 8) } });
    procs.push(tb.spawn('mh', process.execPath, [CLI, 'agent', '--config', files.mh], { cwd: REPO_ROOT }));
    procs.push(tb.spawn('ch', process.execPath, [CLI, 'agent', '--config', files.ch], { cwd: REPO_ROOT }));
    await until(`a ping reply from ${HOST_IDS.ch}`, 20_000, async () => (await pingMs(tb, HOST_IDS.ch, 1)).length === 1);
    const before = await Promise.all([status(tb, 'mh'), status(tb, 'ch')]);
    const rx = tb.spawn('ch', process.execPath, ['-e', RECEIVER, HOST_IDS.ch]);
    procs.push(rx);
    await new Promise((r) => setTimeout(r, 300));
    const tx = await tb.exec('mh', process.execPath, ['-e', SENDER, HOST_IDS.ch, String(seconds)], { timeoutMs: (seconds + 30) * 1000 });
    const sent = (JSON.parse(tx.stdout) as { sent: number }).sent;
    await new Promise((r) => setTimeout(r, 300));
    await rx.stop(3_000); // SIGTERM: the receiver prints its figures and exits
    const got = JSON.parse(rx.stdoutTail().trim().split('\n').pop() ?? '{}') as { received: number; dup: number; maxGap: number };
    const after = await Promise.all([status(tb, 'mh'), status(tb, 'ch')]);
    const rekeys = [0, 1].reduce((n, i) => n + (after[i]?.encryption?.counters.rekeys ?? 0) - (before[i]?.encryption?.counters.rekeys ?? 0), 0);
    return { sent, received: got.received, dup: got.dup, maxGap: got.maxGap, rekeys };
  } finally {
    await Promise.all(procs.map((p) => p.stop(3_000)));
    await rm(dir, { recursive: true, force: true });
  }
}

export async function run(argv: string[]): Promise<number> {
  const o = options(argv);
  const tb = (await up({ prefix: 'bs' })) as Std;
  try {
    const enc: { first: number; rtt: number }[] = [];
    const plain: { first: number; rtt: number }[] = [];
    for (let i = 0; i < o.reps; i++) {
      enc.push(await firstPacket(tb, 'on'));
      plain.push(await firstPacket(tb, 'off'));
    }
    const rekeyRun = await stream(tb, o.seconds, 2);
    const baseRun = await stream(tb, o.seconds, 120);
    const firstEnc = median(enc.map((r) => r.first)) ?? NaN;
    const firstPlain = median(plain.map((r) => r.first)) ?? NaN;
    const rtt = median(enc.map((r) => r.rtt)) ?? NaN;
    console.log(`\nsessions: ${o.reps} repetitions (medians); streams of ${o.seconds} s at 2000 datagrams/s; ${cpus().length} CPUs, load ${loadavg()[0].toFixed(2)}`);
    printTable(
      ['measure', 'encrypted', 'plain', 'note'],
      [
        ['first ping to a new peer (ms)', fmt(firstEnc), fmt(firstPlain), 'both lookups included; encrypted adds the handshake'],
        ['established ping RTT (ms)', fmt(rtt), fmt(median(plain.map((r) => r.rtt))), 'one overlay round trip'],
        ['handshake cost (ms)', fmt(firstEnc - firstPlain), '—', `target: about one RTT (${fmt(rtt)} ms)`],
        ['stream with rekeys every 2 s: largest gap (ms)', fmt(rekeyRun.maxGap), '—', `${rekeyRun.rekeys} rekeys, ${rekeyRun.sent - rekeyRun.received} lost, ${rekeyRun.dup} duplicated; target ≤ 10 ms`],
        ['same stream, no rekey: largest gap (ms)', fmt(baseRun.maxGap), '—', `${baseRun.sent - baseRun.received} lost, ${baseRun.dup} duplicated (the box's own noise)`],
      ],
    );
    const file = await writeResults('sessions', {
      first_packet_encrypted_ms: firstEnc,
      first_packet_plain_ms: firstPlain,
      handshake_extra_ms: firstEnc - firstPlain,
      rtt_ms: rtt,
      rekey_max_gap_ms: rekeyRun.maxGap,
      no_rekey_max_gap_ms: baseRun.maxGap,
      rekeys: rekeyRun.rekeys,
      rekey_lost: rekeyRun.sent - rekeyRun.received,
      rekey_duplicates: rekeyRun.dup,
      runs: { encrypted: enc, plain, rekey: rekeyRun, baseline: baseRun },
      machine: { cpus: cpus().length, load: loadavg()[0] },
    });
    console.log(`\nwrote ${file}`);
    return 0;
  } finally {
    await tb.down();
  }
}
