/**
 * npm run bench -- slice2 [--reps N]
 *
 * Slice 2 (issue #14) on the Fig. 3 scene (scripts/testbed/slice2.ts): a correspondent, alice's
 * laptop (two links) and phone, two replicas of a data ID, an RM. Each measure is taken N times
 * (default 5) in one run:
 *   replica_failover_ms    the replica new flows go to (r1: weight 200 against r2's 1) is silently
 *                          blackholed at the router (nftables drop, no link event); one client process
 *                          keeps opening connections to the data ID back to back (each given up after
 *                          1 s): the time from the blackhole to the first new connection that succeeds.
 *   user_handover_ms       alice's laptop goes offline (both its links down); the same client loop:
 *                          the time until a new connection to her user ID is answered by the phone.
 *   pinned_flow_reset_ms   a connection to alice's user ID, open on the laptop, idle: the time from the
 *                          laptop going offline to the application's ECONNRESET (the agent's RST).
 *                          (user_handover_ms counts from when both links are down, this one from just
 *                          before: it includes the ~10-20 ms the two `ip link` commands take.)
 *   first_packet_ms        one UDP datagram to a data ID the correspondent never used (served by the
 *                          same replicas: a warm agent, sessions with the replicas already up),
 *                          stamped with the sender's clock; the replica's receiver (same host clock)
 *                          reports how long it took: the lookup (one RM round trip, the replicas' host
 *                          bindings inline) and delivery. Compared with the RM's RTT (ping, same run).
 *   curl_resume_intact     curl --retry --retry-all-errors -C - of a 12 MB file by data ID, the serving
 *                          replica's agent killed mid-download: true when the sha256 matches.
 * Prints a table and writes bench-results/slice2.json with replica_failover_ms_median,
 * user_handover_ms_median, pinned_flow_reset_ms_median, first_packet_ms_p50, curl_resume_intact,
 * rm_rtt_ms and every sample.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { DATA_NAME, HTTP_PORT, SLICE2, startSlice2, upSlice2, writeSlice2, type Slice2Host, type Slice2Scene } from '../testbed/slice2.ts';
import type { NsProcess, Testbed } from '../testbed/topology.ts';
import { BenchStopped, fmt, median, printTable, UsageProblem, writeResults } from './table.ts';
import { execHost } from '../testbed/topology.ts';

const REPO = fileURLToPath(new URL('../../', import.meta.url));
const CLI = join(REPO, 'bin/realmnet.js');
const WHOAMI = join(REPO, 'scripts/tools/whoami.ts');
const FILESERVE = join(REPO, 'scripts/tools/fileserve.ts');
const LOOP = join(REPO, 'scripts/tools/connectloop.ts');
const PORT = 7000;

/** On a replica: one datagram on the data ID, and how long it took from its sender's clock (the same host's clock). */
const SINK = `
const d = require('node:dgram').createSocket('udp6');
d.on('message', (m) => { process.stdout.write(String(performance.timeOrigin + performance.now() - Number(m.toString())) + '\\n'); });
d.bind(9999, process.argv[1]);
`;
/**
 * On the correspondent: one datagram to the data ID, stamped with the wall clock at sending, when
 * told (SIGUSR1). The process is started well before and warmed up (a first datagram to the
 * namespace's own loopback discard port): a fresh process's first send, and its start-up and exit
 * competing for the CPU, would be measured too (~4-20 ms on this box).
 */
const SEND = `
const d = require('node:dgram').createSocket('udp6');
d.send('warm-up', 9, '::1', () => process.stdout.write('ready\\n'));
process.on('SIGUSR1', () => d.send(String(performance.timeOrigin + performance.now()), 9999, process.argv[1], () => setTimeout(() => process.exit(0), 200)));
setTimeout(() => process.exit(1), 30000);
`;

async function waitReady(p: NsProcess): Promise<void> {
  for (let k = 0; k < 200 && !p.stderrTail().includes('ready'); k++) await sleep(50);
  if (!p.stderrTail().includes('ready')) throw new Error(`the connection loop never connected: ${p.stderrTail()}`);
}

/** The loop's measure (ms from the mark to the first good connection), or NaN after 20 s. */
async function loopResult(p: NsProcess): Promise<number> {
  await Promise.race([p.exited, sleep(20_000)]);
  await p.stop();
  const line = p.stdoutTail().trim().split('\n')[0] ?? '';
  try {
    return (JSON.parse(line) as { ms: number }).ms;
  } catch {
    return NaN;
  }
}
type Tb = Testbed<typeof SLICE2>;

function options(argv: string[]): { reps: number } {
  const { values } = parseArgs({ args: argv, options: { reps: { type: 'string', default: '5' } }, strict: true });
  const reps = Number(values.reps);
  if (!Number.isInteger(reps) || reps < 1 || reps > 50) throw new UsageProblem(`--reps ${values.reps}: give a whole number from 1 to 50`);
  return { reps };
}

async function requireTools(): Promise<void> {
  for (const t of ['ip', 'nft', 'tc', 'curl', 'ping']) {
    const r = await execHost('sh', ['-c', `command -v ${t}`], { allowFail: true });
    if (r.code !== 0) throw new BenchStopped(`${t} is not installed (apt-get install ${t === 'ip' ? 'iproute2' : t === 'nft' ? 'nftables' : t === 'ping' ? 'iputils-ping' : t}); no figures without it`);
  }
  if (process.getuid?.() !== 0) throw new BenchStopped('needs root (network namespaces)');
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** One connection attempt to ID:port from cor: the name of the host that answered, or null. */
async function ask(tb: Tb, id: string, port: number, timeoutMs: number): Promise<string | null> {
  const r = await tb.exec('cor', process.execPath, ['-e', ASK, id, String(port), String(timeoutMs)], { allowFail: true, timeoutMs: timeoutMs + 5000 });
  const out = r.stdout.trim();
  return out === '' || out === 'ERR' ? null : out;
}

/** A bare TCP connect (node -e, no tsx: ~40 ms a try): prints the first line the server sends, or ERR. */
const ASK = `
const s = require('node:net').createConnection({ host: process.argv[1], port: Number(process.argv[2]) });
const t = setTimeout(() => { process.stdout.write('ERR'); process.exit(0); }, Number(process.argv[3]));
let b = '';
s.setEncoding('utf8');
s.on('data', (d) => { b += d; const i = b.indexOf('\\n'); if (i >= 0) { clearTimeout(t); process.stdout.write(b.slice(0, i) || 'OK'); process.exit(0); } });
s.on('connect', () => { if (process.argv[2] === '${HTTP_PORT}') { clearTimeout(t); process.stdout.write('OK'); process.exit(0); } });
s.on('error', () => { clearTimeout(t); process.stdout.write('ERR'); process.exit(0); });
`;

async function untilName(tb: Tb, id: string, port: number, want: (n: string) => boolean, since: number, limitMs: number): Promise<number> {
  for (;;) {
    const n = await ask(tb, id, port, 1000);
    if (n !== null && want(n)) return Date.now() - since;
    if (Date.now() - since > limitMs) throw new Error(`no answer on ${id}:${port} within ${limitMs} ms`);
  }
}

async function laptop(tb: Tb, up: boolean): Promise<void> {
  for (const d of ['to-lap', 'to-lap2']) await (up ? tb.linkUp('core', d) : tb.linkDown('core', d));
}

export async function run(argv: string[]): Promise<number> {
  const { reps } = options(argv);
  await requireTools();
  const tb = await upSlice2(`rb${process.pid % 100000}-`);
  const work = await mkdtemp(join(tmpdir(), 'realmnet-bench-s2-'));
  const procs: NsProcess[] = [];
  let scene: Slice2Scene | null = null;
  try {
    const files = await writeSlice2({ logLevel: 'warn', dataWeights: [200, 1], extraDataIds: reps });
    scene = await startSlice2(tb, files, CLI, REPO);
    const s = scene;
    for (const [n, id] of [['lap', files.userId], ['pho', files.userId]] as const) {
      procs.push(tb.spawn(n, process.execPath, ['--import', 'tsx', WHOAMI, 'serve', '--listen', id, '--port', String(PORT), '--name', n], { cwd: REPO }));
    }
    await writeFile(join(work, 'file.bin'), randomBytes(12 * 1024 * 1024));
    const fileSha = createHash('sha256').update(await readFile(join(work, 'file.bin'))).digest('hex');
    const startFileServer = (n: 'r1' | 'r2') => procs.push(tb.spawn(n, process.execPath, ['--import', 'tsx', FILESERVE, '--listen', files.dataId, '--port', String(HTTP_PORT), '--dir', work], { cwd: REPO }));
    startFileServer('r1');
    startFileServer('r2');
    for (const n of ['r1', 'r2'] as const) await tb.rateLimit(n, 'eth0', 40);
    await sleep(1500);
    await untilName(tb, files.dataId, HTTP_PORT, () => true, Date.now(), 20_000);
    await untilName(tb, files.userId, PORT, (n) => n === 'lap', Date.now(), 20_000);

    const replica: number[] = [];
    const handover: number[] = [];
    const reset: number[] = [];
    const first: number[] = [];
    const curlOk: boolean[] = [];

    // RM round trip, for the first-packet target (2 RTT to the RM + 5 ms).
    const rmPing = await tb.exec('cor', 'ping', ['-n', '-c', '5', '-i', '0.2', SLICE2.v4.rm.core], { allowFail: true });
    const rmRtts = [...rmPing.stdout.matchAll(/time=([\d.]+) ms/g)].map((m) => Number(m[1]));
    const rmRtt = median(rmRtts) ?? NaN;

    for (let i = 0; i < reps; i++) {
      // Replica failover: a client opening connections back to back (most go to r1), then r1
      // silently blackholed at the router.
      const loop = tb.spawn('cor', process.execPath, ['--import', 'tsx', LOOP, '--connect', files.dataId, '--port', String(HTTP_PORT)], { cwd: REPO });
      await waitReady(loop);
      await sleep(500);
      // The mark goes after the fault is in place: only connections begun after it count.
      await tb.blackhole('core', { dst: SLICE2.v4.r1.core });
      await tb.blackhole('core', { src: SLICE2.v4.r1.core });
      loop.child.kill('SIGUSR1');
      replica.push(await loopResult(loop));
      await tb.clearBlackhole('core');
      // r1 back up and chosen again before the next repetition (its paths' hold-down).
      await sleep(4000);

      // Pinned flow reset and user handover, in one outage of the laptop.
      await untilName(tb, files.userId, PORT, (n) => n === 'lap', Date.now(), 20_000);
      const held = tb.spawn('cor', process.execPath, ['--import', 'tsx', WHOAMI, 'ask', '--connect', files.userId, '--port', String(PORT), '--hold', '--timeout-ms', '5000'], { cwd: REPO });
      const next = tb.spawn('cor', process.execPath, ['--import', 'tsx', LOOP, '--connect', files.userId, '--port', String(PORT), '--want', 'pho'], { cwd: REPO });
      for (let k = 0; k < 100 && !held.stdoutTail().includes('"name"'); k++) await sleep(50);
      await sleep(500);
      held.child.kill('SIGUSR1');
      await laptop(tb, false);
      next.child.kill('SIGUSR1');
      handover.push(await loopResult(next));
      await Promise.race([held.exited, sleep(5000)]);
      const lines = held.stdoutTail().trim().split('\n');
      const end = JSON.parse(lines[lines.length - 1] ?? '{}') as { ended?: string; afterMs?: number };
      await held.stop();
      reset.push(end.ended === 'reset' && end.afterMs !== undefined ? end.afterMs : NaN);
      await laptop(tb, true);

      // First packet to an unresolved ID: a data ID this correspondent never used (on the same
      // replicas, so the agent and its sessions are warm: the lookup is what is measured).
      const fresh = files.extraDataIds[i];
      const sinks = (['r1', 'r2'] as const).map((n) => tb.spawn(n, process.execPath, ['-e', SINK, fresh], { cwd: REPO }));
      const sender = tb.spawn('cor', process.execPath, ['-e', SEND, fresh], { cwd: REPO });
      // Let the receivers' and the sender's start-up finish: the measure is of the agents.
      await sleep(2000);
      sender.child.kill('SIGUSR1');
      await Promise.race([sender.exited, sleep(3000)]);
      await sender.stop();
      await sleep(500);
      const got = sinks.map((k) => Number(k.stdoutTail().trim().split('\n')[0])).filter((x) => Number.isFinite(x) && x > 0);
      for (const k of sinks) await k.stop();
      first.push(got.length === 0 ? NaN : Math.min(...got));
      await untilName(tb, files.userId, PORT, (n) => n === 'lap', Date.now(), 30_000);

      // curl by data ID, the serving replica's agent killed mid-download.
      curlOk.push(await curlRun(tb, s, files.dataId, work, fileSha, i));
      process.stderr.write(`slice2 bench: repetition ${i + 1}/${reps} done\n`);
    }

    const p50 = (xs: number[]) => median(xs.filter((x) => Number.isFinite(x)));
    const results = {
      reps,
      replica_failover_ms_median: p50(replica),
      user_handover_ms_median: p50(handover),
      pinned_flow_reset_ms_median: p50(reset),
      first_packet_ms_p50: p50(first),
      curl_resume_intact: curlOk.length > 0 && curlOk.every((x) => x),
      rm_rtt_ms: rmRtt,
      first_packet_target_ms: 2 * rmRtt + 5,
      samples: { replica_failover_ms: replica, user_handover_ms: handover, pinned_flow_reset_ms: reset, first_packet_ms: first, curl_resume_intact: curlOk },
    };
    printTable(
      ['measure', 'median', 'target', 'met', 'samples'],
      [
        ['replica_failover_ms', fmt(results.replica_failover_ms_median, 0), '≤ 500', String((results.replica_failover_ms_median ?? Infinity) <= 500), replica.map((x) => fmt(x, 0)).join(' ')],
        ['user_handover_ms', fmt(results.user_handover_ms_median, 0), '≤ 1000', String((results.user_handover_ms_median ?? Infinity) <= 1000), handover.map((x) => fmt(x, 0)).join(' ')],
        ['pinned_flow_reset_ms', fmt(results.pinned_flow_reset_ms_median, 0), '≤ 1000', String((results.pinned_flow_reset_ms_median ?? Infinity) <= 1000), reset.map((x) => fmt(x, 0)).join(' ')],
        ['first_packet_ms (p50)', fmt(results.first_packet_ms_p50, 2), `≤ ${fmt(results.first_packet_target_ms, 2)} (2 × RM RTT ${fmt(rmRtt, 3)} + 5)`, String((results.first_packet_ms_p50 ?? Infinity) <= results.first_packet_target_ms), first.map((x) => fmt(x, 2)).join(' ')],
        ['curl_resume_intact', String(results.curl_resume_intact), 'true every run', String(results.curl_resume_intact), curlOk.map(String).join(' ')],
      ],
    );
    console.log(`results: ${await writeResults('slice2', results)}`);
    return 0;
  } finally {
    for (const p of procs) await p.stop();
    await scene?.stop();
    await tb.down();
    await rm(work, { recursive: true, force: true });
  }
}

async function waitRegistered(s: Slice2Scene, n: Slice2Host): Promise<void> {
  const deadline = Date.now() + 20_000;
  for (;;) {
    const st = await s.status(n).catch(() => null);
    if (st?.rm?.registered === true) return;
    if (Date.now() > deadline) throw new Error(`${n} did not register again within 20 s`);
    await sleep(100);
  }
}

async function curlRun(tb: Tb, s: Slice2Scene, dataId: string, work: string, sha: string, i: number): Promise<boolean> {
  const out = join(work, `download-${i}.bin`);
  const url = `http://[${dataId}]:${HTTP_PORT}/${DATA_NAME.split('/').pop() ?? ''}`;
  const curl = tb.spawn('cor', 'curl', ['-sS', '-g', '--retry', '10', '--retry-all-errors', '--retry-delay', '1', '--connect-timeout', '2', '-C', '-', '-o', out, url]);
  let killed: Slice2Host | null = null;
  try {
    for (let k = 0; k < 40 && killed === null; k++) {
      await sleep(100);
      const st = await s.status('cor').catch(() => null);
      const f = st?.slice2?.flows.find((x) => x.remote === dataId && x.proto === 6 && x.state === 'live');
      if (f?.hostId === s.files.ids.r1) killed = 'r1';
      else if (f?.hostId === s.files.ids.r2) killed = 'r2';
    }
    if (killed === null) return false;
    await sleep(700);
    s.agents[killed].child.kill('SIGKILL');
    const done = await Promise.race([curl.exited, sleep(60_000).then(() => null)]);
    if (done?.code !== 0) return false;
    return createHash('sha256').update(await readFile(out)).digest('hex') === sha;
  } finally {
    await curl.stop();
    if (killed !== null) {
      await s.restartAgent(killed);
      await waitRegistered(s, killed);
      // The restarted replica has no session with the correspondent, whose old one goes silent: it
      // starts a new handshake after 3 s of silence (docs/dataplane-crypto.md). Let that happen now,
      // so the next repetition does not measure it.
      const deadline = Date.now() + 15_000;
      while (Date.now() < deadline) {
        const r = await tb.exec('cor', 'ping', ['-6', '-n', '-c', '1', '-W', '1', s.files.ids[killed]], { allowFail: true });
        if (r.code === 0) break;
      }
      await sleep(2500);
    }
    await rm(out, { force: true });
  }
}
