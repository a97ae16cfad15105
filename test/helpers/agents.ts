import { execFile } from 'node:child_process';
import { mkdtemp, readdir, readFile, readlink, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { z } from 'zod';
import type { AgentStatus } from '../../agent/agent.ts';
import { HOST_IDS, writeAgentConfigs, writeRealmConfigs, type AgentConfigOptions, type RealmFiles, type RealmOptions } from '../../scripts/testbed/configs.ts';
import type { Testbed } from '../../scripts/testbed/topology.ts';
import type { NsProcess } from './netns.ts';

export const REPO = join(new URL('.', import.meta.url).pathname, '..', '..');
const CLI = join(REPO, 'bin', 'realmnet.js');

export interface AgentPair {
  mh: NsProcess;
  ch: NsProcess;
  dir: string;
  stop(): Promise<void>;
}

/** Starts real agents in mh and ch with the testbed's configs, and waits until mh pings ch's ID. */
export async function startAgents(tb: Testbed, opts: AgentConfigOptions = {}): Promise<AgentPair> {
  const dir = await mkdtemp(join(tmpdir(), 'realmnet-e2e-'));
  const cfg = await writeAgentConfigs(dir, { logLevel: 'info', ...opts });
  const mh = tb.spawn('mh', process.execPath, [CLI, 'agent', '--config', cfg.mh], { cwd: REPO });
  const ch = tb.spawn('ch', process.execPath, [CLI, 'agent', '--config', cfg.ch], { cwd: REPO });
  const pair: AgentPair = {
    mh,
    ch,
    dir,
    async stop() {
      await Promise.all([mh.stop(5000), ch.stop(5000)]);
      await rm(dir, { recursive: true, force: true });
    },
  };
  const deadline = Date.now() + 20_000;
  for (;;) {
    for (const p of [mh, ch]) {
      if (!p.running()) {
        await pair.stop();
        throw new Error(`agent in ${p.node} exited during start-up:\n${p.stderrTail()}${p.stdoutTail()}`);
      }
    }
    const r = await tb.exec('mh', 'ping', ['-6', '-n', '-c1', '-W1', HOST_IDS.ch], { allowFail: true });
    if (r.code === 0) return pair;
    if (Date.now() > deadline) {
      await pair.stop();
      throw new Error(`agents did not connect within 20 s:\nmh: ${mh.stderrTail()}${mh.stdoutTail()}\nch: ${ch.stderrTail()}${ch.stdoutTail()}`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
}

export async function agentStatus(tb: Testbed, node: 'mh' | 'ch'): Promise<AgentStatus> {
  const r = await tb.exec(node, process.execPath, [CLI, 'status', '--json'], { cwd: REPO });
  return JSON.parse(r.stdout) as AgentStatus;
}

/**
 * The same document as `realmnet status --json`, read from the agent's control socket by a bare
 * `node -e` in the node's namespace (the default socket is abstract, so per namespace): ~50 ms where
 * the CLI, through tsx, takes ~1.3 s on this box; for polling. `unknown`: the caller narrows it.
 */
export async function controlStatus(tb: Testbed, node: 'mh' | 'ch', socket = '@realmnet/agent'): Promise<unknown> {
  if (!socket.startsWith('@')) return agentStatus(tb, node);
  const r = await tb.exec(node, process.execPath, ['-e', STATUS_SCRIPT, socket], { timeoutMs: 5_000 });
  return JSON.parse(r.stdout) as unknown;
}

const STATUS_SCRIPT = `
const c = require('node:net').createConnection('\\0' + process.argv[1].slice(1));
let b = '';
c.setEncoding('utf8');
c.on('connect', () => c.write('status\\n'));
c.on('data', (d) => (b += d));
c.on('end', () => process.stdout.write(b));
c.on('error', (e) => { process.stderr.write(String(e)); process.exit(1); });
setTimeout(() => { process.stderr.write('no answer within 3 s'); process.exit(1); }, 3000).unref();
`;

const Registered = z.object({ rm: z.object({ registered: z.boolean() }).nullable() });

export interface BulkResult {
  bytes: number;
  sha256: string;
  ms: number;
  reset: boolean;
}

/** A checked bulk TCP transfer from mh to ch over host IDs. */
export async function bulkTransfer(tb: Testbed, bytes: number, port = 5001, to: string = HOST_IDS.ch): Promise<{ sent: BulkResult; received: BulkResult }> {
  const tool = join(REPO, 'scripts', 'tools', 'bulk.ts');
  const sink = tb.spawn('ch', process.execPath, ['--import', 'tsx', tool, 'sink', '--listen', to, '--port', String(port)], { cwd: REPO });
  try {
    // Wait until the sink listens.
    for (let i = 0; i < 100 && !sink.stderrTail().includes('listening'); i++) await new Promise((r) => setTimeout(r, 50));
    const src = await tb.exec('mh', process.execPath, ['--import', 'tsx', tool, 'source', '--connect', to, '--port', String(port), '--bytes', String(bytes)], {
      cwd: REPO,
      timeoutMs: 120_000,
    });
    await Promise.race([sink.exited, new Promise((r) => setTimeout(r, 10_000))]);
    const sent = JSON.parse(src.stdout.trim()) as BulkResult;
    const received = JSON.parse(sink.stdoutTail().trim()) as BulkResult;
    return { sent, received };
  } finally {
    await sink.stop();
  }
}

export interface Realm {
  rm: NsProcess;
  mh: NsProcess;
  ch: NsProcess;
  files: RealmFiles;
  /** Restarts the RM process (kill -9 when `hard`), same config and store. */
  restartRm(hard?: boolean): Promise<void>;
  /** Restarts one agent (an empty map-cache), same config. */
  restartAgent(node: 'mh' | 'ch'): Promise<void>;
  stop(): Promise<void>;
}

/** A Realm Manager in rm, agents in mh and ch that know each other only through it. */
export async function startRealm(tb: Testbed, opts: RealmOptions = {}, waitForPing = true): Promise<Realm> {
  const dir = await mkdtemp(join(tmpdir(), 'realmnet-realm-'));
  const files = await writeRealmConfigs(dir, { logLevel: 'info', ...opts });
  const spawnRm = () => tb.spawn('rm', process.execPath, [CLI, 'rm', '--config', files.rm], { cwd: REPO });
  const realm: Realm = {
    rm: spawnRm(),
    mh: tb.spawn('mh', process.execPath, [CLI, 'agent', '--config', files.mh], { cwd: REPO }),
    ch: tb.spawn('ch', process.execPath, [CLI, 'agent', '--config', files.ch], { cwd: REPO }),
    files,
    async restartRm(hard = false) {
      if (hard) realm.rm.child.kill('SIGKILL');
      await realm.rm.stop(5000);
      realm.rm = spawnRm();
    },
    async restartAgent(node) {
      await realm[node].stop(5000);
      realm[node] = tb.spawn(node, process.execPath, [CLI, 'agent', '--config', files[node]], { cwd: REPO });
    },
    async stop() {
      await Promise.all([realm.mh.stop(5000), realm.ch.stop(5000), realm.rm.stop(5000)]);
      await rm(dir, { recursive: true, force: true });
    },
  };
  if (!waitForPing) return realm;
  const deadline = Date.now() + 25_000;
  await waitRegistered(tb, deadline);
  for (;;) {
    for (const p of [realm.rm, realm.mh, realm.ch]) {
      if (!p.running()) {
        await realm.stop();
        throw new Error(`${p.node} exited during start-up:\n${p.stderrTail()}${p.stdoutTail()}`);
      }
    }
    const r = await tb.exec('mh', 'ping', ['-6', '-n', '-c1', '-W1', files.ids.ch], { allowFail: true });
    if (r.code === 0) return realm;
    if (Date.now() > deadline) {
      const tails = [realm.rm, realm.mh, realm.ch].map((p) => `${p.node}: ${p.stderrTail()}${p.stdoutTail()}`).join('\n');
      await realm.stop();
      throw new Error(`hosts did not reach each other through the RM within 25 s:\n${tails}`);
    }
    await new Promise((r) => setTimeout(r, 250));
  }
}

/** Waits until both agents say they are registered with the RM. */
export async function waitRegistered(tb: Testbed, deadline = Date.now() + 20_000): Promise<void> {
  for (;;) {
    const registered = async (node: 'mh' | 'ch'): Promise<boolean> => {
      const r = Registered.safeParse(await controlStatus(tb, node).catch(() => null));
      return r.success && r.data.rm?.registered === true;
    };
    const [mh, ch] = await Promise.all([registered('mh'), registered('ch')]);
    if (mh && ch) return;
    if (Date.now() > deadline) throw new Error('the agents did not register with the RM in time');
    await new Promise((r) => setTimeout(r, 200));
  }
}

/**
 * After an upgrade in place (SIGUSR2), the pid of the agent that took over, from the old one's
 * "upgrade: stopped" log line (its successor writes to the same output); 0 before there is one.
 */
export function successorPid(p: NsProcess): number {
  const m = [...(p.stderrTail() + p.stdoutTail()).matchAll(/"successor":(\d+)/g)];
  return Number(m[m.length - 1]?.[1] ?? 0);
}

/** Whether a process (one that is not our child, e.g. an upgraded agent) still runs. */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/**
 * What a process that should have exited is doing, for a failure message: each thread's state and
 * kernel wait channel, its children, its open fds and, when gdb is there, every thread's user-space
 * stack. (This is how the `ip` runner's double close was found: shared/native/spawn.cc.)
 */
export async function hangReport(pid: number): Promise<string> {
  const text = (f: string) => readFile(f, 'utf8').then((s) => s.replace(/\0/g, ' ').trim(), () => '?');
  const state = async (f: string) => (await text(f)).split(') ')[1]?.split(' ')[0] ?? '?';
  const lines: string[] = [];
  const tids = await readdir(`/proc/${pid}/task`).catch(() => [] as string[]);
  for (const t of tids) lines.push(`thread ${t} state=${await state(`/proc/${pid}/task/${t}/stat`)} wchan=${await text(`/proc/${pid}/task/${t}/wchan`)}`);
  for (const t of tids) {
    for (const k of (await text(`/proc/${pid}/task/${t}/children`)).split(/\s+/).filter((x) => /^\d+$/.test(x))) {
      lines.push(`child ${k} state=${await state(`/proc/${k}/stat`)}: ${await text(`/proc/${k}/cmdline`)}`);
    }
  }
  const fds = await readdir(`/proc/${pid}/fd`).catch(() => [] as string[]);
  lines.push(`fds: ${(await Promise.all(fds.map(async (fd) => `${fd}=${await readlink(`/proc/${pid}/fd/${fd}`).catch(() => '?')}`))).join(' ')}`);
  const gdb = await new Promise<string>((res) => {
    execFile('gdb', ['-p', String(pid), '-batch', '-nx', '-ex', 'thread apply all bt 12'], { timeout: 20_000, maxBuffer: 4 << 20 }, (err, out) => res(err !== null && out === '' ? `gdb: ${err.message}` : out));
  });
  return `${lines.join('\n')}\n${gdb.split('\n').filter((l) => /^(Thread|#|gdb:)/.test(l)).join('\n')}`;
}
