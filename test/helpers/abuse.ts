/**
 * The abuse lab (issue #12 item 5): the standard testbed plus the attacker and victim
 * (scripts/testbed/attacker.ts), a real Realm Manager and real agents on mh and ch, and one protocol
 * driver (scripts/tools/rmdriver.ts) in atk and one in mh. Shared by `npm run bench -- abuse` and
 * test/e2e/abuse.test.ts, which run the same attacks at different lengths.
 *
 * Admission is being built while this is written (docs/security.md). The lab writes the RM config
 * the contract describes (`admission: { keys, open: false }`, listing mh, ch, a legit client and one
 * attacker-controlled member) and, if the RM refuses that key (the feature is not merged), starts it
 * without, and says so in `admission`: every figure is then measured against what the code does.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { createInterface } from 'node:readline';
import Database from 'better-sqlite3';
import { parse, stringify } from 'yaml';
import { REALM, writeRealmConfigs, type RealmFiles } from '../../scripts/testbed/configs.ts';
import { attachAttacker, type AttackerBed, type AttackCounters } from '../../scripts/testbed/attacker.ts';
import type { NsProcess, Testbed } from '../../scripts/testbed/topology.ts';
import { deriveHostId, hostIdBytes, parsePrefix } from '../../shared/ids.ts';
import { generateKeyPair } from '../../shared/crypto/ed25519.ts';
import { loadKeyPair, saveKeyPair } from '../../shared/keyfile.ts';
import { REPO, waitRegistered } from './agents.ts';

const CLI = join(REPO, 'bin', 'realmnet.js');
export const SPOOF_BIN = join(REPO, 'build', 'Release', 'realmnet_spoof');
export const DRIVER = join(REPO, 'scripts', 'tools', 'rmdriver.ts');

export type Json = Record<string, unknown>;

function onPath(tool: string): boolean {
  return (process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin').split(delimiter).some((d) => {
    try {
      accessSync(join(d, tool), constants.X_OK);
      return true;
    } catch {
      return false;
    }
  });
}

/** What stops the attacks from running here, one line each (empty: nothing). */
export function abuseProblems(): string[] {
  const out: string[] = [];
  if ((process.getuid?.() ?? -1) !== 0) out.push('needs root (network namespaces, raw sockets)');
  for (const t of ['ip', 'nft', 'ping', 'sysctl']) if (!onPath(t)) out.push(`${t} is not on PATH: run \`bash scripts/install-deps.sh\` as root`);
  if (!existsSync(SPOOF_BIN)) out.push(`${SPOOF_BIN} is missing: build it with \`npm install\` (or \`npx node-gyp rebuild\`)`);
  return out;
}

/** One rmdriver process in a namespace: call() sends a command and resolves with its answer. */
export class Driver {
  private readonly waiting: ((j: Json) => void)[] = [];
  /** The tail of the driver's stderr. */
  err = '';
  private constructor(private readonly child: ChildProcess, readonly ns: string) {}

  static async start(ns: string): Promise<Driver> {
    const child = spawn('ip', ['netns', 'exec', ns, process.execPath, '--import', 'tsx', DRIVER], { cwd: REPO, stdio: ['pipe', 'pipe', 'pipe'] });
    let err = '';
    const d = new Driver(child, ns);
    child.stderr?.setEncoding('utf8').on('data', (s: string) => {
      err = (err + s).slice(-8192);
      d.err = err;
    });
    const lines = createInterface({ input: child.stdout as NodeJS.ReadableStream });
    const ready = new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`rmdriver in ${ns} did not start within 30 s: ${err}`)), 30_000);
      child.once('exit', (code) => reject(new Error(`rmdriver in ${ns} exited (${code}): ${err}`)));
      lines.once('line', () => {
        clearTimeout(t);
        lines.on('line', (l) => {
          const j: unknown = JSON.parse(l);
          d.waiting.shift()?.(typeof j === 'object' && j !== null ? (j as Json) : { ok: false, error: l });
        });
        resolve();
      });
    });
    await ready;
    child.on('exit', () => {
      for (const w of d.waiting.splice(0)) w({ ok: false, error: `rmdriver in ${ns} exited: ${err}` });
    });
    return d;
  }

  /**
   * Sends one command; throws if the driver answered with an error, or did not answer within
   * timeoutMs (then with the tail of its stderr: a hang must say where, not stall the benchmark).
   */
  async call(cmd: Json, timeoutMs = 180_000): Promise<Json> {
    const answer = new Promise<Json>((r) => this.waiting.push(r));
    this.child.stdin?.write(JSON.stringify(cmd) + '\n');
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`rmdriver ${String(cmd.cmd)} in ${this.ns}: no answer within ${timeoutMs / 1000} s; its stderr: ${this.err.slice(-2000)}`)), timeoutMs);
    });
    const a = await Promise.race([answer, late]).finally(() => clearTimeout(timer));
    if (a.ok !== true) throw new Error(`rmdriver ${String(cmd.cmd)} in ${this.ns}: ${String(a.error)}`);
    return a;
  }

  async close(): Promise<void> {
    if (this.child.exitCode !== null) return;
    const gone = new Promise((r) => this.child.once('exit', r));
    this.child.stdin?.end();
    const t = setTimeout(() => this.child.kill('SIGKILL'), 5_000);
    await gone;
    clearTimeout(t);
  }
}

export interface AbuseLab {
  readonly tb: Testbed;
  readonly atk: AttackerBed;
  readonly dir: string;
  readonly files: RealmFiles;
  /** Host IDs: the agents, the legit client (in mh), the attacker's admitted member. */
  readonly ids: { mh: string; ch: string; legit: string; member: string };
  readonly keys: { legit: string; member: string };
  /** 'configured', or why the RM runs without admission. */
  readonly admission: string;
  rm: NsProcess;
  mh: NsProcess;
  ch: NsProcess;
  readonly attacker: Driver;
  readonly legit: Driver;
  /** Rewrites the RM's policy and restarts it (same store). */
  setPolicy(policy: Json | null): Promise<void>;
  counters(): Promise<AttackCounters>;
  /** The RM process's resident set, MiB. */
  rmRssMiB(): number;
  /** Rows in every table of the RM's store. */
  storeRows(): number;
  /** The binding the RM stores for an ID (what an on-path observer saw it register), hex. */
  storedBinding(id: string): string | null;
  stop(): Promise<void>;
}

function rmYaml(files: RealmFiles, admission: Json | null, policy: Json | null): void {
  const doc: unknown = parse(readFileSync(files.rm, 'utf8'));
  const base = typeof doc === 'object' && doc !== null ? (doc as Json) : {};
  const { admission: _a, policy: _p, ...rest } = base;
  writeFileSync(files.rm, stringify({ ...rest, ...(admission ? { admission } : {}), ...(policy ? { policy } : {}) }));
}

/** Starts the RM; resolves when it listens, or with its stderr when it exited first. */
async function startRm(tb: Testbed, files: RealmFiles): Promise<{ proc: NsProcess; exited: string | null }> {
  const proc = tb.spawn('rm', process.execPath, [CLI, 'rm', '--config', files.rm], { cwd: REPO });
  const deadline = Date.now() + 20_000;
  while (Date.now() < deadline) {
    if (!proc.running()) return { proc, exited: `${proc.stderrTail()}${proc.stdoutTail()}`.trim() };
    const r = await tb.exec('rm', 'ss', ['-Huln', 'sport', '= :4342'], { allowFail: true });
    if (r.stdout.trim().length > 0) return { proc, exited: null };
    await new Promise((res) => setTimeout(res, 200));
  }
  await proc.stop();
  throw new Error(`the RM did not listen within 20 s: ${proc.stderrTail()}`);
}

/**
 * Builds everything (the testbed must be up). `policy` is the RM's first policy (null: defaults,
 * `sameRealm: allow`).
 */
export async function startAbuseLab(tb: Testbed, policy: Json | null = null): Promise<AbuseLab> {
  const dir = await mkdtemp(join(tmpdir(), 'realmnet-abuse-'));
  let atk: AttackerBed | null = null;
  const drivers: Driver[] = [];
  const procs: NsProcess[] = [];
  try {
    atk = await attachAttacker(tb);
    const files = await writeRealmConfigs(dir, { logLevel: 'warn' });
    const prefix = parsePrefix(REALM.prefix);
    const keys = { legit: join(dir, 'legit.key'), member: join(dir, 'member.key') };
    for (const k of Object.values(keys)) saveKeyPair(k, generateKeyPair(), { overwrite: true });
    const idOf = (file: string): string => deriveHostId(prefix, loadKeyPair(file).publicKey).toString();
    const ids = { mh: files.ids.mh, ch: files.ids.ch, legit: idOf(keys.legit), member: idOf(keys.member) };
    const b64 = (file: string): string => Buffer.from(loadKeyPair(file).publicKey).toString('base64');
    const admissionCfg: Json = { keys: [join(dir, 'mh.key'), join(dir, 'ch.key'), keys.legit, keys.member].map(b64), open: false };
    rmYaml(files, admissionCfg, policy);
    let admission = 'configured';
    let started = await startRm(tb, files);
    if (started.exited !== null) {
      const line = started.exited.split('\n').find((l) => /admission/i.test(l));
      if (line === undefined) throw new Error(`the RM exited at start-up:\n${started.exited}`);
      admission = `not supported by this RM (${line.trim().slice(0, 160)}): running without admission`;
      rmYaml(files, null, policy);
      started = await startRm(tb, files);
      if (started.exited !== null) throw new Error(`the RM exited at start-up:\n${started.exited}`);
    }
    const lab: AbuseLab = {
      tb,
      atk,
      dir,
      files,
      ids,
      keys,
      admission,
      rm: started.proc,
      mh: tb.spawn('mh', process.execPath, [CLI, 'agent', '--config', files.mh], { cwd: REPO }),
      ch: tb.spawn('ch', process.execPath, [CLI, 'agent', '--config', files.ch], { cwd: REPO }),
      attacker: await Driver.start(atk.ns('atk')),
      legit: await Driver.start(tb.ns('mh')),
      async setPolicy(p) {
        await lab.rm.stop(5_000);
        rmYaml(files, admission === 'configured' ? admissionCfg : null, p);
        const s = await startRm(tb, files);
        if (s.exited !== null) throw new Error(`the RM exited at start-up:\n${s.exited}`);
        lab.rm = s.proc;
      },
      counters: () => (atk as AttackerBed).counters(),
      rmRssMiB() {
        const s = readFileSync(`/proc/${lab.rm.pid}/status`, 'utf8');
        return Number(/VmRSS:\s+(\d+)/.exec(s)?.[1] ?? NaN) / 1024;
      },
      storeRows() {
        const db = new Database(join(dir, 'rm.db'), { readonly: true, fileMustExist: true });
        try {
          const tables = db.prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'").all() as { name: string }[];
          return tables.reduce((n, t) => n + (db.prepare(`SELECT COUNT(*) AS c FROM "${t.name.replace(/"/g, '""')}"`).get() as { c: number }).c, 0);
        } finally {
          db.close();
        }
      },
      storedBinding(id) {
        const db = new Database(join(dir, 'rm.db'), { readonly: true, fileMustExist: true });
        try {
          const row = db.prepare('SELECT bytes FROM bindings WHERE id = ?').get(Buffer.from(hostIdBytes(id))) as { bytes: Buffer } | undefined;
          return row === undefined ? null : row.bytes.toString('hex');
        } finally {
          db.close();
        }
      },
      async stop() {
        await Promise.all([lab.attacker.close(), lab.legit.close()]);
        await Promise.all([lab.mh.stop(5_000), lab.ch.stop(5_000), lab.rm.stop(5_000)]);
        await (atk as AttackerBed).down();
        await rm(dir, { recursive: true, force: true });
      },
    };
    drivers.push(lab.attacker, lab.legit);
    procs.push(lab.rm, lab.mh, lab.ch);
    await waitRegistered(tb, Date.now() + 30_000);
    return lab;
  } catch (e) {
    await Promise.all(drivers.map((d) => d.close()));
    await Promise.all(procs.map((p) => p.stop(2_000)));
    await atk?.down();
    await rm(dir, { recursive: true, force: true });
    throw e;
  }
}

/** The RM's address and the realm prefix, as every driver command wants them. */
export function rmArgs(lab: AbuseLab): Json {
  return { rmAddress: lab.files.rmAddress, rmPort: 4342, prefix: REALM.prefix };
}

/** Pings an address from a node until one answers or `ms` pass; the time it took, or null. */
export async function pingWithin(tb: Testbed, node: 'mh' | 'ch', dst: string, ms: number): Promise<number | null> {
  const t0 = Date.now();
  while (Date.now() - t0 < ms) {
    const r = await tb.exec(node, 'ping', ['-6', '-n', '-c1', '-W1', dst], { allowFail: true });
    if (r.code === 0) return Date.now() - t0;
  }
  return null;
}
