/**
 * The demo: the standard testbed, two agents, traffic over host IDs, live failover, narrated.
 * Run through scripts/demo.sh (which installs what is needed first).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { up, TESTBED, type NsProcess, type Testbed } from './testbed/topology.ts';
import { REALM, addJoinToken, writeRealmConfigs } from './testbed/configs.ts';
import { plotFailover } from './bench/plot.ts';
import { RESULTS_DIR } from './bench/table.ts';
import { slice2Demo } from './demo-slice2.ts';
import { failoversSince, failoverView, pathsVia, runFlow, waitFor, type FailoverRecord, type FailoverView } from '../test/helpers/failover.ts';

const REPO = fileURLToPath(new URL('..', import.meta.url));
const CLI = join(REPO, 'bin', 'realmnet.js');
const bold = (s: string) => (process.stdout.isTTY ? `\x1b[1m${s}\x1b[0m` : s);

function say(s: string): void {
  process.stdout.write(`\n${bold('==> ' + s)}\n`);
}
function show(out: string): void {
  process.stdout.write(
    out
      .trimEnd()
      .split('\n')
      .map((l) => `    ${l}`)
      .join('\n') + '\n',
  );
}

async function waitForOverlay(tb: Testbed, to: string, procs: readonly NsProcess[]): Promise<void> {
  for (const t0 = Date.now(); Date.now() - t0 < 30_000; ) {
    const r = await tb.exec('mh', 'ping', ['-6', '-n', '-c1', '-W1', to], { allowFail: true });
    if (r.code === 0) return;
    await new Promise((r) => setTimeout(r, 200));
  }
  const logs = procs.map((p) => `--- ${p.node}:\n${p.stderrTail()}${p.stdoutTail()}`).join('\n');
  throw new Error(`the agents did not reach each other within 30 s. Their logs:\n${logs}`);
}

// Failover: a checked transfer while mh's active uplink fails, what the agents did, the goodput gap.

const FLOW_S = 6;
const FAULT_AT_MS = 2_500;

function failoverLines(node: string, list: readonly FailoverRecord[]): string[] {
  if (list.length === 0) return [`${node}: no failover recorded`];
  return list.map((f) => `${node}: at ${f.at.slice(11, 23)} moved ${f.from ?? '(nothing)'}  ==>  ${f.to ?? '(nothing)'}\n      because: ${f.reason}${f.tookMs === null ? '' : `; took ${f.tookMs} ms (from the path's last answer, or from the link event)`}`);
}

function pathLines(node: string, v: FailoverView): string[] {
  return v.paths.map((p) => `${node}: path ${p.uplink} -> ${p.locator}  ${p.state}${p.inUse ? ', in use' : ''}${p.rttMs === null ? '' : `, rtt ${p.rttMs.toFixed(1)} ms`}, loss ${p.lossPct.toFixed(0)}%`);
}

/** One transfer with one fault on uplink a, narrated; writes the goodput plot. */
async function failoverRun(tb: Testbed, ids: { mh: string; ch: string }, name: string, label: string, fault: () => Promise<void>): Promise<void> {
  const since = Date.now();
  const r = await runFlow(tb, { to: ids.ch, seconds: FLOW_S, windowFromMs: FAULT_AT_MS, faults: [{ atMs: FAULT_AT_MS, label, run: fault }] });
  const [mh, ch] = await Promise.all([failoverView(tb, 'mh'), failoverView(tb, 'ch')]);
  show(
    [
      `transfer: ${(r.source.bytes / 1e6).toFixed(0)} MB sent, ${(r.sink.bytes / 1e6).toFixed(0)} MB received, ` +
        `${r.intact ? 'every byte intact (sha256 equal, each byte checked)' : 'DATA NOT INTACT'}, ${r.reset ? 'CONNECTION RESET' : 'no reset'}`,
      `longest goodput gap after the fault: ${r.gapMs} ms (bytes counted every 10 ms at the receiving application);` +
        ` request/response stream (one message per 10 ms): longest wait ${r.rrGapMs === null ? '—' : `${Math.round(r.rrGapMs)} ms`}`,
      'what the agents did:',
      ...failoverLines('  mh', failoversSince(mh, since)),
      ...failoverLines('  ch', failoversSince(ch, since)),
      'their paths now:',
      ...pathLines('  mh', mh),
      ...pathLines('  ch', ch),
    ].join('\n'),
  );
  try {
    const files = await plotFailover({
      scenario: `demo-${name}`,
      description: `the demo: ${label} at ${FAULT_AT_MS / 1000} s`,
      series: [{ system: 'realmnet', rep: 1, gapMs: r.gapMs, buckets: r.sink.buckets, bucketMs: r.sink.bucket_ms }],
      events: [{ label, ms: FAULT_AT_MS }],
      seconds: FLOW_S,
      rateMbit: null,
      outDir: RESULTS_DIR,
      runNote: 'one run',
    });
    show(`goodput plot: ${files.png}`);
  } catch (e) {
    show(`(no plot: ${e instanceof Error ? e.message : String(e)})`);
  }
}

/** Clears the fault and waits (with light traffic, so the paths are probed) until both agents use uplink a again. */
async function backOnIspa(tb: Testbed, ids: { mh: string; ch: string }, clear: () => Promise<void>): Promise<void> {
  await clear();
  const t0 = Date.now();
  const ping = tb.spawn('mh', 'ping', ['-6', '-n', '-q', '-i', '0.05', '-w', '20', ids.ch]);
  try {
    const back = await waitFor(
      async () => {
        const [mh, ch] = await Promise.all([failoverView(tb, 'mh'), failoverView(tb, 'ch')]);
        const mhOk = pathsVia(mh, { uplink: 'ispa' }).some((p) => p.inUse && p.state === 'up');
        const chOk = pathsVia(ch, { locator: TESTBED.v4.mh.ispa }).some((p) => p.inUse && p.state === 'up');
        return mhOk && chOk ? Date.now() - t0 : null;
      },
      20_000,
      'the agents did not return to uplink ispa within 20 s',
    );
    show(`uplink ispa is usable again: after ${back} ms (3 probe answers, then a 2 s hold-down) both agents send on it again`);
  } finally {
    await ping.stop(500);
  }
}

async function failoverDemo(tb: Testbed, ids: { mh: string; ch: string }): Promise<void> {
  say(`Failover 1/2: a ${FLOW_S}-second TCP transfer from mh to ch over host IDs; ${FAULT_AT_MS / 1000} s in, mh's active uplink (ispa) loses carrier`);
  show(`ISP A's end of the link goes down (ip link set to-mh down in ispa): mh's eth-a reports NO-CARRIER.
The applications only know host IDs; the agents move the traffic to uplink ispb, and mh tells ch
directly (and through the RM) with a new signed binding.`);
  await failoverRun(tb, ids, 'carrier-loss', 'ispa link down', () => tb.linkDown('ispa', TESTBED.dev.ispa.mh));
  await backOnIspa(tb, ids, () => tb.linkUp('ispa', TESTBED.dev.ispa.mh));

  say(`Failover 2/2: the same transfer; ${FAULT_AT_MS / 1000} s in, ISP A silently drops everything (link stays up)`);
  show(`An nftables drop rule in ispa: no link event anywhere. Both agents probe every path to a peer with
traffic every 100 ms (authenticated with the hosts' keys); a path silent for 150 ms is left for a working one.`);
  await failoverRun(tb, ids, 'silent-blackhole', 'ispa drops all', () => tb.blackhole('ispa'));
  await backOnIspa(tb, ids, () => tb.clearBlackhole('ispa'));
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) {
    process.stderr.write('demo: run as root (it creates network namespaces and TUN devices)\n');
    process.exit(1);
  }
  const V4 = TESTBED.v4;
  say('Building the testbed: six network namespaces on this machine, nothing leaves them');
  const tb = await up({ prefix: 'rndemo-' });
  const dir = await mkdtemp(join(tmpdir(), 'realmnet-demo-'));
  try {
    show(`mh    the multihomed host: uplink ispa ${V4.mh.ispa} and uplink ispb ${V4.mh.ispb}
ispa  ISP router A              ispb  ISP router B
core  the core router
ch    the correspondent host: ${V4.ch.core}
rm    the Realm Manager of the realm: ${V4.rm.core}`);

    say('Starting the Realm Manager (the mapping server) in rm');
    // ch is admitted by its key in the RM's config; mh joins with a one-time token, below.
    const cfg = await writeRealmConfigs(dir, { logFormat: 'pretty', logLevel: 'info', joiners: ['mh'] });
    const HOST_IDS = cfg.ids;
    show(`realm "${REALM.name}", ID prefix ${REALM.prefix}, listening on ${cfg.rmAddress}:4342 (UDP).
It stores signed bindings (host ID -> locators) in an embedded SQLite database before it
acknowledges them, answers lookups by its realm's policy and pushes changes to subscribers.`);
    const rmProc = tb.spawn('rm', process.execPath, [CLI, 'rm', '--config', cfg.rm], { cwd: REPO });

    say('Inviting mh into the realm: realmnet rm invite');
    const inv = await tb.exec('rm', process.execPath, [CLI, 'rm', 'invite', '--config', cfg.rm, '--ttl', '1h'], { cwd: REPO });
    const token = inv.stdout.trim();
    await addJoinToken(cfg.mh, token);
    show(`Only members of the realm are served. ch was admitted by its public key (admission.keys in the
RM's config); mh gets a one-time join token, which the operator puts into mh's agent config:
  rm:
    join: ${token.slice(0, 40)}…
The token pins the RM's key, names the realm prefix, and works once: the RM records it when mh
joins, and hands mh a membership certificate signed by the realm key.`);

    say('Starting a realmnet agent on mh and on ch');
    show(`Each host has an Ed25519 key; its host ID is the realm prefix + a hash of its public key:
  mh  ${HOST_IDS.mh}
  ch  ${HOST_IDS.ch}
Neither knows the other's locators. Each agent creates a TUN device (rn0), puts its host ID on it,
routes fd00::/8 into it, and registers its signed binding with the RM through every uplink:
mh: ${V4.mh.ispa} (ispa, priority 1) and ${V4.mh.ispb} (ispb, priority 2); ch: ${V4.ch.core}.`);
    const mh = tb.spawn('mh', process.execPath, [CLI, 'agent', '--config', cfg.mh], { cwd: REPO });
    const ch = tb.spawn('ch', process.execPath, [CLI, 'agent', '--config', cfg.ch], { cwd: REPO });
    await waitForOverlay(tb, HOST_IDS.ch, [rmProc, mh, ch]);
    show(
      [...mh.stderrTail().split('\n'), ...rmProc.stderrTail().split('\n')]
        .filter((l) => /agent up|binding registered|Realm Manager started|joined the realm|membership certificate/.test(l))
        .join('\n'),
    );

    say(`ping from mh to ch's host ID (${HOST_IDS.ch})`);
    show((await tb.exec('mh', 'ping', ['-6', '-n', '-c3', '-i0.3', HOST_IDS.ch])).stdout);
    show(`The first packet started a session: a Noise IK handshake between the two agents (their keys
plus fresh ephemeral ones, so a stolen host key decrypts nothing recorded), in which each proved
its membership of the realm with its certificate. Every packet since is sealed (AES-256-GCM, a
64-bit counter, a replay window): on the wire, tshark sees the LISP header and opaque bytes.`);

    say(`ping from ch back to mh's host ID (${HOST_IDS.mh})`);
    show((await tb.exec('ch', 'ping', ['-6', '-n', '-c3', '-i0.3', HOST_IDS.mh])).stdout);

    say('A 5-second iperf3 TCP transfer from mh to ch, over host IDs');
    const server = tb.spawn('ch', 'iperf3', ['-s', '-1', '-B', HOST_IDS.ch]);
    await new Promise((r) => setTimeout(r, 500));
    const ip = await tb.exec('mh', 'iperf3', ['-c', HOST_IDS.ch, '-t', '5', '-C', 'cubic'], { timeoutMs: 30_000 });
    show(ip.stdout.split('\n').filter((l) => /sender|receiver/.test(l)).join('\n'));
    await server.stop();

    say('Non-overlay traffic is untouched: mh still reaches ch\'s underlay address through its normal route');
    show((await tb.exec('mh', 'ip', ['route', 'get', V4.ch.core])).stdout);

    await failoverDemo(tb, HOST_IDS);

    say("What mh's agent knows: `realmnet status` (ch's binding came from the RM, signed by ch; the encryption line shows the session with ch)");
    show((await tb.exec('mh', process.execPath, [CLI, 'status'], { cwd: REPO })).stdout);

    say('Stopping the agents and the RM: the TUN devices, routes and policy rules go away');
    await Promise.all([mh.stop(5000), ch.stop(5000), rmProc.stop(5000)]);
    const link = await tb.exec('mh', 'ip', ['link', 'show', 'rn0'], { allowFail: true });
    show(link.code === 0 ? 'rn0 is still there (unexpected)' : 'rn0 is gone from mh');
  } finally {
    await tb.down();
    await rm(dir, { recursive: true, force: true });
    say('Testbed removed.');
  }
  await slice2Demo(REPO, CLI, say, show);
  say('Fig. 3 scene removed. Done.');
}

main().catch((e: unknown) => {
  process.stderr.write(`demo failed: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(1);
});
