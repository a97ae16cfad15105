/**
 * The uplink monitor in real network namespaces: carrier loss (the far end of a veth set down),
 * address removal and route removal are each reported within 100 ms; the `ip monitor` child is
 * restarted when it dies and killed on stop; the resyncs that follow link events leave the event loop
 * of the process that runs the monitor (the agent's, which forwards packets) nearly undisturbed.
 *
 * Layout (namespaces `rn<pid>mon-mh` and `rn<pid>mon-isp`, removed in afterAll):
 *   mh eth-a  192.0.2.1/26     ── isp to-mh    192.0.2.2      uplink a: policy table 100, default via .2
 *   mh eth-b  2001:db8:b::1/64 ── isp to-mhb   2001:db8:b::2  uplink b: main-table default via ::2
 *   mh eth-c  192.0.2.129/26   ── isp to-mhc   192.0.2.130    uplink c: main-table route via .130
 * eth-a and eth-b get ifindexes that differ from their peers'; eth-c the same ifindex as its peer.
 * That matters: the kernel's link watcher reports a carrier change at once ("urgent") only for a
 * device whose ifindex differs from its iflink (for a veth, the peer's ifindex); otherwise the event
 * is batched, at most one batch per second system-wide, and a carrier loss can be reported up to ~1 s
 * late. Real NICs (iflink == ifindex) are in the second case; the shared testbed is not (its veth
 * ends all have indexes of their own).
 *
 * The monitor runs where the agent runs it: inside mh, as `ip netns exec mh node` with a small
 * harness that prints every change as a JSON line with its time.
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { UplinkFacts, WatchedUplink } from '../../agent/uplinks/monitor/types.ts';
import { execHost, listNamespaces } from '../../scripts/testbed/topology.ts';
import { systemMonitorIo } from '../../agent/uplinks/monitor/io.ts';
import { deleteNamespace, execIn, requireRoot, uniquePrefix } from '../helpers/netns.ts';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const prefix = uniquePrefix('mon');
const MH = `${prefix}mh`;
const ISP = `${prefix}isp`;

const UPLINKS: WatchedUplink[] = [
  { name: 'a', interface: 'eth-a', locator: '192.0.2.1', gateway: '192.0.2.2', table: 100 },
  { name: 'b', interface: 'eth-b', locator: '2001:db8:b::1', gateway: '2001:db8:b::2' },
  { name: 'c', interface: 'eth-c', locator: '192.0.2.129', gateway: '192.0.2.130' },
];

const HARNESS = `
const { UplinkMonitor } = await import(process.env.RN_MONITOR_MODULE);
const { createLogger } = await import(process.env.RN_LOG_MODULE);
const { monitorEventLoopDelay } = await import('node:perf_hooks');
const uplinks = JSON.parse(process.env.RN_UPLINKS);
const m = new UplinkMonitor(uplinks, { log: createLogger({ level: 'info', format: 'json' }) });
const now = () => performance.timeOrigin + performance.now();
const out = (o) => process.stdout.write(JSON.stringify(o) + '\\n');
m.onChange((uplink, facts) => out({ type: 'change', uplink, facts, t: now() }));
await m.start();
out({ type: 'ready', facts: Object.fromEntries(uplinks.map((u) => [u.name, m.facts(u.name)])), childPid: m.childPid });
let lag = null;
// Next to the histogram, each stall over 10 ms on its own: how long one resync holds the loop.
let pauses = [];
let lastTick = 0;
let ticker = null;
let buf = '';
process.stdin.setEncoding('utf8');
process.stdin.on('data', async (d) => {
  buf += d;
  let i;
  while ((i = buf.indexOf('\\n')) >= 0) {
    const cmd = buf.slice(0, i);
    buf = buf.slice(i + 1);
    if (cmd === 'pid') out({ type: 'pid', childPid: m.childPid, stats: m.stats() });
    if (cmd === 'lag start') {
      lag = monitorEventLoopDelay({ resolution: 1 });
      lag.enable();
      pauses = [];
      lastTick = performance.now();
      ticker = setInterval(() => {
        const t = performance.now();
        if (t - lastTick > 10) pauses.push(t - lastTick);
        lastTick = t;
      }, 1);
      out({ type: 'lag-started', stats: m.stats() });
    }
    if (cmd === 'lag stop') {
      lag.disable();
      clearInterval(ticker);
      const ms = (ns) => ns / 1e6;
      out({ type: 'lag', maxMs: ms(lag.max), p999Ms: ms(lag.percentile(99.9)), meanMs: ms(lag.mean), pausesMs: pauses, stats: m.stats() });
      lag = null;
    }
    if (cmd === 'stop') {
      const childPid = m.childPid;
      await m.stop();
      out({ type: 'stopped', childPid });
      process.exit(0);
    }
  }
});
`;

type Msg =
  | { type: 'ready'; facts: Record<string, UplinkFacts>; childPid: number }
  | { type: 'change'; uplink: string; facts: UplinkFacts; t: number }
  | { type: 'pid'; childPid: number | undefined; stats: { restarts: number } }
  | { type: 'lag-started'; stats: { resyncs: number } }
  | { type: 'lag'; maxMs: number; p999Ms: number; meanMs: number; pausesMs: number[]; stats: { resyncs: number } }
  | { type: 'stopped'; childPid: number };

const now = () => performance.timeOrigin + performance.now();
const msgs: Msg[] = [];
const waiters: (() => void)[] = [];
let harness: ChildProcessWithoutNullStreams | undefined;
let stderr = '';
let harnessExited: Promise<void> = Promise.resolve();

/** The first message at or after index `from` that matches, within `ms`. */
async function waitFor<T extends Msg>(from: number, pred: (m: Msg) => m is T, ms: number, what: string): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    for (let i = from; i < msgs.length; i++) {
      const m = msgs[i];
      if (pred(m)) return m;
    }
    const left = deadline - Date.now();
    if (left <= 0) throw new Error(`no ${what} within ${ms} ms; harness stderr: ${stderr.slice(-2000)}`);
    await new Promise<void>((r) => {
      const t = setTimeout(r, left);
      waiters.push(() => {
        clearTimeout(t);
        r();
      });
    });
  }
}

/** Writes a command to the harness and waits for its answer. */
async function ask<T extends Msg['type']>(cmd: string, type: T): Promise<Extract<Msg, { type: T }>> {
  const from = msgs.length;
  harness?.stdin.write(cmd + '\n');
  return waitFor(from, (m): m is Extract<Msg, { type: T }> => m.type === type, 2_000, type);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const change =
  (uplink: string, p: (f: UplinkFacts) => boolean) =>
  (m: Msg): m is Extract<Msg, { type: 'change' }> =>
    m.type === 'change' && m.uplink === uplink && p(m.facts);

/**
 * `ip -force -batch -` kept running in a namespace: a command written to it reaches the kernel at once,
 * without the 5–50 ms it takes to start a fresh `ip` on a busy box, so the latency measured is the
 * monitor's own.
 */
class IpBatch {
  private readonly p: ChildProcessWithoutNullStreams;
  readonly exited: Promise<void>;
  constructor(ns: string) {
    this.p = spawn('ip', ['-n', ns, '-force', '-batch', '-']);
    this.p.stdout.resume();
    this.p.stderr.setEncoding('utf8');
    this.p.stderr.on('data', (d: string) => {
      stderr = (stderr + `[ip -batch ${ns}] ${d}`).slice(-16_000);
    });
    this.exited = new Promise((r) => this.p.on('exit', () => r()));
  }
  run(cmd: string): void {
    this.p.stdin.write(cmd + '\n');
  }
  async close(): Promise<void> {
    this.p.stdin.end();
    await this.exited;
  }
}
let mhBatch: IpBatch | undefined;
let ispBatch: IpBatch | undefined;

/** Issues the fault and returns the ms from the moment it was written to `ip` to the monitor's callback. */
async function latencyOf(fault: () => unknown, uplink: string, p: (f: UplinkFacts) => boolean, within = 2_000): Promise<number> {
  const from = msgs.length;
  const t0 = now();
  await fault();
  const m = await waitFor(from, change(uplink, p), within, `change of ${uplink}`);
  return m.t - t0;
}

const mh = (...args: string[]) => execIn(MH, 'ip', args);
const isp = (...args: string[]) => execIn(ISP, 'ip', args);
const inMh = (cmd: string) => () => mhBatch?.run(cmd);
const inIsp = (cmd: string) => () => ispBatch?.run(cmd);

async function addUplinkRoutes(): Promise<void> {
  await mh('route', 'replace', 'default', 'via', '192.0.2.2', 'dev', 'eth-a', 'table', '100');
}

const figures: string[] = [];

/** Carrier flaps of the lag measurement; each down and each up is a link event, so a resync. */
const FLAPS = 5;
/**
 * Bound of the event-loop delay through FLAPS flaps. Measured on 2 vCPU shared with other test runs
 * (load 4–6), runs interleaved: four `ip` per resync stalled the loop up to 103–405 ms (median stall
 * 32–134 ms); one `ip -batch` 22–115 ms (median stall 16–21 ms). The bound is twice the worst of the
 * latter: a neighbour's load can stretch any stall, so it catches a return to several spawns or to
 * synchronous work, not a few ms more.
 */
const MAX_LAG_MS = 250;

describe('uplink monitor in a network namespace', () => {
  beforeAll(async () => {
    requireRoot(['ip']);
    await execHost('ip', ['netns', 'add', MH]);
    await execHost('ip', ['netns', 'add', ISP]);
    await mh('link', 'add', 'eth-a', 'index', '7', 'type', 'veth', 'peer', 'name', 'to-mh', 'index', '9', 'netns', ISP);
    await mh('link', 'add', 'eth-b', 'index', '8', 'type', 'veth', 'peer', 'name', 'to-mhb', 'index', '10', 'netns', ISP);
    await mh('link', 'add', 'eth-c', 'index', '11', 'type', 'veth', 'peer', 'name', 'to-mhc', 'index', '11', 'netns', ISP);
    for (const d of ['lo', 'eth-a', 'eth-b', 'eth-c']) await mh('link', 'set', d, 'up');
    for (const d of ['to-mh', 'to-mhb', 'to-mhc']) await isp('link', 'set', d, 'up');
    await mh('addr', 'add', '192.0.2.1/26', 'dev', 'eth-a');
    await mh('-6', 'addr', 'add', '2001:db8:b::1/64', 'dev', 'eth-b', 'nodad');
    await mh('addr', 'add', '192.0.2.129/26', 'dev', 'eth-c');
    await isp('addr', 'add', '192.0.2.2/26', 'dev', 'to-mh');
    await isp('-6', 'addr', 'add', '2001:db8:b::2/64', 'dev', 'to-mhb', 'nodad');
    await isp('addr', 'add', '192.0.2.130/26', 'dev', 'to-mhc');
    await addUplinkRoutes();
    await mh('-6', 'route', 'add', 'default', 'via', '2001:db8:b::2', 'dev', 'eth-b');
    await mh('route', 'add', '203.0.113.0/24', 'via', '192.0.2.130', 'dev', 'eth-c');
    mhBatch = new IpBatch(MH);
    ispBatch = new IpBatch(ISP);

    harness = spawn('ip', ['netns', 'exec', MH, process.execPath, '--import', 'tsx', '--input-type=module', '-e', HARNESS], {
      cwd: ROOT,
      env: {
        ...process.env,
        RN_MONITOR_MODULE: join(ROOT, 'agent/uplinks/monitor/monitor.ts'),
        RN_LOG_MODULE: join(ROOT, 'shared/log.ts'),
        RN_UPLINKS: JSON.stringify(UPLINKS),
      },
    });
    harnessExited = new Promise((r) => harness?.on('exit', () => r()));
    let out = '';
    harness.stdout.setEncoding('utf8');
    harness.stdout.on('data', (d: string) => {
      out += d;
      let i: number;
      while ((i = out.indexOf('\n')) >= 0) {
        msgs.push(JSON.parse(out.slice(0, i)) as Msg);
        out = out.slice(i + 1);
      }
      for (const w of waiters.splice(0)) w();
    });
    harness.stderr.setEncoding('utf8');
    harness.stderr.on('data', (d: string) => {
      stderr = (stderr + d).slice(-16_000);
    });
    await waitFor(0, (m): m is Extract<Msg, { type: 'ready' }> => m.type === 'ready', 20_000, 'ready');
  });

  afterAll(async () => {
    await mhBatch?.close();
    await ispBatch?.close();
    if (harness !== undefined && harness.exitCode === null) {
      harness.kill('SIGKILL');
      await harnessExited;
    }
    // Also kills what a killed harness may leave behind (an orphaned `ip monitor` keeps MH alive).
    await deleteNamespace(MH);
    await deleteNamespace(ISP);
    if (figures.length > 0) console.log(`uplink monitor (latency: fault written to a running \`ip -batch\` → onChange):\n  ${figures.join('\n  ')}`);
    expect((await listNamespaces()).filter((n) => n.startsWith(prefix))).toEqual([]);
  });

  it('starts with every uplink usable, from the snapshot', () => {
    const ready = msgs.find((m): m is Extract<Msg, { type: 'ready' }> => m.type === 'ready');
    const usable: UplinkFacts = { carrier: true, adminUp: true, hasAddress: true, hasRoute: true, usable: true };
    expect(ready?.facts).toEqual({ a: usable, b: usable, c: usable });
    expect(ready?.childPid).toBeGreaterThan(0);
  });

  it('reports carrier loss within 100 ms (far end down), and its return', async () => {
    const lat: number[] = [];
    for (let i = 0; i < 5; i++) {
      lat.push(await latencyOf(inIsp('link set to-mh down'), 'a', (f) => !f.carrier && !f.usable));
      await latencyOf(inIsp('link set to-mh up'), 'a', (f) => f.usable);
    }
    lat.sort((x, y) => x - y);
    figures.push(`carrier loss: min ${lat[0].toFixed(1)}, median ${lat[2].toFixed(1)}, max ${lat[4].toFixed(1)} ms over 5`);
    expect(lat[4]).toBeLessThan(100);
  });

  it('reports address removal within 100 ms; the uplink is back once its address and (flushed) route are', async () => {
    const lat = await latencyOf(inMh('addr del 192.0.2.1/26 dev eth-a'), 'a', (f) => !f.hasAddress && !f.usable);
    figures.push(`address removal: ${lat.toFixed(1)} ms`);
    expect(lat).toBeLessThan(100);
    const from = msgs.length;
    await mh('addr', 'add', '192.0.2.1/26', 'dev', 'eth-a');
    await waitFor(from, change('a', (f) => f.hasAddress && !f.hasRoute), 2_000, 'address back, route still gone');
    await addUplinkRoutes();
    await waitFor(from, change('a', (f) => f.usable), 2_000, 'a usable again');
  });

  it('reports removal of the policy-table default route within 100 ms, and its return', async () => {
    const lat = await latencyOf(inMh('route del default table 100'), 'a', (f) => !f.hasRoute && !f.usable);
    figures.push(`policy route removal: ${lat.toFixed(1)} ms`);
    expect(lat).toBeLessThan(100);
    await latencyOf(addUplinkRoutes, 'a', (f) => f.usable);
  });

  it('reports removal of an IPv6 main-table route via the gateway within 100 ms, and its return', async () => {
    const lat = await latencyOf(inMh('route del default via 2001:db8:b::2'), 'b', (f) => !f.hasRoute && !f.usable);
    figures.push(`IPv6 main route removal: ${lat.toFixed(1)} ms`);
    expect(lat).toBeLessThan(100);
    await latencyOf(() => mh('-6', 'route', 'add', 'default', 'via', '2001:db8:b::2', 'dev', 'eth-b'), 'b', (f) => f.usable);
  });

  it('reports carrier loss on a veth whose peer has the same ifindex too, within the link watcher`s 1 s batching', async () => {
    const lat = await latencyOf(inIsp('link set to-mhc down'), 'c', (f) => !f.carrier, 3_000);
    figures.push(`carrier loss, same ifindex as the peer (non-urgent link watch): ${lat.toFixed(1)} ms`);
    expect(lat).toBeLessThan(1_500);
    await latencyOf(() => isp('link', 'set', 'to-mhc', 'up'), 'c', (f) => f.usable, 3_000);
  });

  it('admin down takes an uplink out; after up its IPv4 policy route must be put back', async () => {
    await latencyOf(() => mh('link', 'set', 'eth-a', 'down'), 'a', (f) => !f.adminUp && !f.usable);
    const from = msgs.length;
    await mh('link', 'set', 'eth-a', 'up');
    await waitFor(from, change('a', (f) => f.adminUp && f.carrier && !f.hasRoute), 3_000, 'a up without its route');
    await addUplinkRoutes();
    await waitFor(from, change('a', (f) => f.usable), 2_000, 'a usable again');
  });

  it('keeps the event loop of the process that runs it responsive while an uplink flaps', async () => {
    const flap = async () => {
      for (let i = 0; i < FLAPS; i++) {
        await latencyOf(inIsp('link set to-mh down'), 'a', (f) => !f.carrier);
        await sleep(400); // resyncDelayMs, then the snapshot
        await latencyOf(inIsp('link set to-mh up'), 'a', (f) => f.usable);
        await sleep(400);
      }
    };
    const measure = async (during: () => Promise<unknown>) => {
      const started = await ask('lag start', 'lag-started');
      await during();
      const lag = await ask('lag stop', 'lag');
      return { ...lag, resyncs: lag.stats.resyncs - started.stats.resyncs };
    };
    await sleep(500); // the previous test's resync, if any, is over
    const idle = await measure(() => sleep(FLAPS * 800));
    const flaps = await measure(flap);
    const show = (l: { maxMs: number; p999Ms: number; meanMs: number; pausesMs: number[] }) => {
      const p = [...l.pausesMs].sort((x, y) => x - y);
      const median = p.length === 0 ? 0 : p[p.length >> 1];
      return `max ${l.maxMs.toFixed(1)}, p99.9 ${l.p999Ms.toFixed(1)}, mean ${l.meanMs.toFixed(2)} ms; ${p.length} stalls > 10 ms, median ${median.toFixed(1)} ms`;
    };
    figures.push(`event-loop delay, idle (${idle.resyncs} resyncs): ${show(idle)}`, `event-loop delay, ${FLAPS} carrier flaps (${flaps.resyncs} resyncs): ${show(flaps)}`);
    expect(flaps.resyncs).toBeGreaterThanOrEqual(FLAPS);
    expect(flaps.maxMs).toBeLessThan(MAX_LAG_MS);
  });

  it('restarts `ip monitor` when it dies and keeps reporting', async () => {
    const before = await ask('pid', 'pid');
    expect(before.childPid).toBeGreaterThan(0);
    process.kill(before.childPid as number, 'SIGKILL');
    let after = await ask('pid', 'pid');
    for (let i = 0; i < 50 && (after.childPid === undefined || after.childPid === before.childPid); i++) {
      await sleep(50);
      after = await ask('pid', 'pid');
    }
    expect(after.childPid).not.toBe(before.childPid);
    expect(after.stats.restarts).toBe(1);
    expect(stderr).toMatch(/ip monitor exited; restarting it/);
    await sleep(300); // subscribed and resynced
    const lat = await latencyOf(inIsp('link set to-mh down'), 'a', (f) => !f.carrier);
    expect(lat).toBeLessThan(100);
    await latencyOf(() => isp('link', 'set', 'to-mh', 'up'), 'a', (f) => f.usable);
  });

  it('kills its `ip monitor` child on stop', async () => {
    const from = msgs.length;
    harness?.stdin.write('stop\n');
    const stopped = await waitFor(from, (m): m is Extract<Msg, { type: 'stopped' }> => m.type === 'stopped', 5_000, 'stopped');
    await harnessExited;
    expect(() => process.kill(stopped.childPid, 0)).toThrow(/ESRCH/);
  });
});

describe("the snapshot's ip -batch", () => {
  it('names the command that failed and its reason', async () => {
    requireRoot(['ip']);
    const io = systemMonitorIo(64 * 1024);
    expect(await io.ipBatch(['-j', '-N'], ['link show dev lo', 'route show table all root ::1/128'])).toMatch(/^\[.*"ifname":"lo".*\]\n\[.*\]\n$/);
    await expect(io.ipBatch(['-j', '-N'], ['link show dev lo', 'link show dev rn-no-such-dev', 'addr show'])).rejects.toThrow(
      /^ip -j -N -batch -: \(link show dev rn-no-such-dev\) Device "rn-no-such-dev" does not exist\.$/,
    );
    // Some errors end ip at once, without naming the line: the reason alone.
    await expect(io.ipBatch(['-j', '-N'], ['route show table all root 0.0.0.0/0 nonsense'])).rejects.toThrow(/^ip -j -N -batch -: Error: .*"nonsense"/);
  });
});
