/**
 * The demo: the standard testbed, two agents, traffic over host IDs, narrated.
 * Run through scripts/demo.sh (which installs what is needed first).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { up, TESTBED, type NsProcess, type Testbed } from './testbed/topology.ts';
import { REALM, writeRealmConfigs } from './testbed/configs.ts';

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
    const cfg = await writeRealmConfigs(dir, { logFormat: 'pretty', logLevel: 'info' });
    const HOST_IDS = cfg.ids;
    show(`realm "${REALM.name}", ID prefix ${REALM.prefix}, listening on ${cfg.rmAddress}:4342 (UDP).
It stores signed bindings (host ID -> locators) in an embedded SQLite database before it
acknowledges them, answers lookups by its realm's policy and pushes changes to subscribers.`);
    const rmProc = tb.spawn('rm', process.execPath, [CLI, 'rm', '--config', cfg.rm], { cwd: REPO });

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
        .filter((l) => /agent up|binding registered|Realm Manager started/.test(l))
        .join('\n'),
    );

    say(`ping from mh to ch's host ID (${HOST_IDS.ch})`);
    show((await tb.exec('mh', 'ping', ['-6', '-n', '-c3', '-i0.3', HOST_IDS.ch])).stdout);
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

    say("What mh's agent knows: `realmnet status` (ch's binding came from the RM, signed by ch)");
    show((await tb.exec('mh', process.execPath, [CLI, 'status'], { cwd: REPO })).stdout);

    say('Stopping the agents and the RM: the TUN devices, routes and policy rules go away');
    await Promise.all([mh.stop(5000), ch.stop(5000), rmProc.stop(5000)]);
    const link = await tb.exec('mh', 'ip', ['link', 'show', 'rn0'], { allowFail: true });
    show(link.code === 0 ? 'rn0 is still there (unexpected)' : 'rn0 is gone from mh');
  } finally {
    await tb.down();
    await rm(dir, { recursive: true, force: true });
    say('Testbed removed. Done.');
  }
}

main().catch((e: unknown) => {
  process.stderr.write(`demo failed: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(1);
});
