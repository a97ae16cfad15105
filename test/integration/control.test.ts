import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { newControlCounters, queryControl, startControlServer, type ControlCounters } from '../../agent/control.ts';
import { isRealmnetError } from '../../shared/errors.ts';
import { until } from '../helpers/fake-agent.ts';

/**
 * The agent's control socket against local users who are not root (agent/control.ts): the agent
 * checks who connects, the client checks who listens, both with SO_PEERCRED.
 *
 * Other users are played by `nobody` through runuser (root only). Their programs are inline `node -e`
 * scripts using node:net alone, run from `/`: the checkout may lie in a directory nobody cannot read.
 */
const root = process.getuid?.() === 0 && existsSync('/usr/sbin/runuser');
const NOBODY = root ? { uid: Number(execFileSync('id', ['-u', 'nobody'], { encoding: 'utf8' })), group: execFileSync('id', ['-gn', 'nobody'], { encoding: 'utf8' }).trim() } : { uid: -1, group: '' };

let n = 0;
const cleanup: Array<() => void | Promise<void>> = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

function name(): string {
  return `@realmnet-control-test-${process.pid}-${n++}`;
}

async function server(path: string, counters: ControlCounters, opts: { group?: string | number } = {}): Promise<Server> {
  const s = await startControlServer(path, () => ({ ok: true }), counters, opts);
  cleanup.push(() => new Promise<void>((r) => s.close(() => r())));
  return s;
}

/** Sends `status` as nobody and returns what came back. Asynchronous: the server runs in this process. */
async function statusAsNobody(path: string): Promise<{ body: string; error?: string }> {
  const script = `
    const c = require('node:net').createConnection('\\0' + process.argv[1].slice(1));
    let body = '';
    c.setEncoding('utf8');
    c.on('connect', () => c.write('status\\n'));
    c.on('data', (d) => (body += d));
    c.on('close', () => process.stdout.write(JSON.stringify({ body })));
    c.on('error', (e) => { process.stdout.write(JSON.stringify({ body, error: e.code })); process.exit(0); });`;
  const r = await new Promise<{ code: number | null; out: string; err: string }>((resolve) => {
    execFile('runuser', ['-u', 'nobody', '--', process.execPath, '-e', script, path], { cwd: '/', timeout: 10_000 }, (e, out, err) =>
      resolve({ code: e === null ? 0 : typeof e.code === 'number' ? e.code : -1, out, err }),
    );
  });
  expect(r.code, r.err).toBe(0);
  return JSON.parse(r.out) as { body: string; error?: string };
}

/** A process of nobody's listening on `path` and answering like an agent; stopped after the test. */
async function squatAsNobody(path: string): Promise<ChildProcess> {
  const script = `
    const s = require('node:net').createServer((c) => c.end(JSON.stringify({ hostId: 'fd00::bad' }) + '\\n'));
    s.listen('\\0' + process.argv[1].slice(1), () => console.log('listening'));
    setTimeout(() => process.exit(0), 20000);`;
  // Its own process group, so that the test ends runuser and node together, by that group's id.
  const child = spawn('runuser', ['-u', 'nobody', '--', process.execPath, '-e', script, path], { cwd: '/', detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  cleanup.push(() => {
    if (child.exitCode === null && child.pid !== undefined) process.kill(-child.pid, 'SIGTERM');
  });
  let out = '';
  child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (out += d.toString())); // runuser's "killed" at the end, or why it failed
  await until(() => out.includes('listening'), 5000, 'the squatter to listen');
  return child;
}

function connect(path: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const c = createConnection(`\0${path.slice(1)}`);
    c.once('connect', () => resolve(c));
    c.once('error', reject);
    cleanup.push(() => void c.destroy());
  });
}

function closed(c: Socket): Promise<number> {
  const t0 = Date.now();
  return new Promise((resolve) => (c.destroyed ? resolve(0) : c.once('close', () => resolve(Date.now() - t0))));
}

async function errorOf(p: Promise<unknown>): Promise<{ code: string; message: string }> {
  try {
    await p;
  } catch (e) {
    if (isRealmnetError(e)) return { code: e.code, message: e.oneLine() };
    throw e;
  }
  throw new Error('expected an error');
}

describe('control socket: who may ask', () => {
  it.runIf(root)('refuses a client that is not root (nobody) with CONTROL_PERMISSION_DENIED, unread, and counts it', async () => {
    const path = name();
    const counters = newControlCounters();
    let asked = 0;
    const s = await startControlServer(path, () => ++asked, counters);
    cleanup.push(() => new Promise<void>((r) => s.close(() => r())));
    const r = await statusAsNobody(path);
    expect(r.error).toBeUndefined();
    const doc = JSON.parse(r.body) as { error: string; code: string };
    expect(doc.code).toBe('CONTROL_PERMISSION_DENIED');
    expect(doc.error).toContain(`uid ${NOBODY.uid}`);
    await until(() => counters.refusedPeer === 1);
    expect(asked).toBe(0);
    expect(counters).toMatchObject({ connections: 1, ok: 0, refusedPeer: 1 });
    // Root still gets its answer.
    expect(await queryControl(path, 'status')).toBe(1);
  });

  it.runIf(root)('answers a member of control.group, by name or by gid', async () => {
    for (const group of [NOBODY.group, Number(execFileSync('id', ['-g', 'nobody'], { encoding: 'utf8' }))]) {
      const path = name();
      const counters = newControlCounters();
      await server(path, counters, { group });
      expect(JSON.parse((await statusAsNobody(path)).body)).toEqual({ ok: true });
      expect(counters).toMatchObject({ connections: 1, ok: 1, refusedPeer: 0 });
    }
  });

  it('a control.group unknown to the host is a config error at start-up', async () => {
    const e = await errorOf(startControlServer(name(), () => 0, newControlCounters(), { group: 'realmnet-no-such-group' }));
    expect(e.code).toBe('CONFIG_INVALID');
    expect(e.message).toMatch(/^config error: control\.group: "realmnet-no-such-group" is not a group on this host/);
  });

  it('queryControl turns the refusal into CONTROL_PERMISSION_DENIED', async () => {
    // What the agent answers a stranger, from a listener we trust (our own uid).
    const path = name();
    const fake = createServer((c) => {
      c.resume();
      c.end(JSON.stringify({ error: 'permission denied: the agent answers root only (you are uid 1000)', code: 'CONTROL_PERMISSION_DENIED' }) + '\n');
    });
    await new Promise<void>((r) => fake.listen(`\0${path.slice(1)}`, r));
    cleanup.push(() => new Promise<void>((r) => fake.close(() => r())));
    const e = await errorOf(queryControl(path, 'status'));
    expect(e.code).toBe('CONTROL_PERMISSION_DENIED');
    expect(e.message).toContain('refused: permission denied');
  });
});

describe('control socket: squatting', () => {
  it.runIf(root)('the client will not talk to a listener run by another user (nobody)', async () => {
    const path = name();
    await squatAsNobody(path);
    const e = await errorOf(queryControl(path, 'status'));
    expect(e.code).toBe('CONTROL_SOCKET_NOT_TRUSTED');
    expect(e.message).toContain(`uid ${NOBODY.uid}`);
  });

  it.runIf(root)('an agent whose name is squatted fails in one line that names the squatter', async () => {
    const path = name();
    const squatter = await squatAsNobody(path);
    const e = await errorOf(startControlServer(path, () => 0));
    expect(e.code).toBe('CONTROL_SOCKET_IN_USE');
    expect(e.message).toContain(`uid ${NOBODY.uid} (not root)`);
    expect(e.message).toMatch(/pid \d+/);
    expect(e.message.split('\n')).toHaveLength(1);
    expect(squatter.exitCode).toBeNull();
  });

  it('a second agent on the same name fails with CONTROL_SOCKET_IN_USE naming the first', async () => {
    const path = name();
    await server(path, newControlCounters());
    const e = await errorOf(startControlServer(path, () => 0));
    expect(e.code).toBe('CONTROL_SOCKET_IN_USE');
    expect(e.message).toContain(`another agent (pid ${process.pid})`);
  });
});

describe('control socket: limits', () => {
  it('holds at most 8 connections at once: the 9th is closed unread and counted, and a freed slot serves again', async () => {
    const path = name();
    const counters = newControlCounters();
    await server(path, counters);
    const held = await Promise.all(Array.from({ length: 8 }, () => connect(path)));
    await until(() => counters.connections === 8, 2000, 'the server to accept 8');
    const ninth = await connect(path);
    await closed(ninth);
    expect(counters).toMatchObject({ connections: 9, refusedBusy: 1 });
    const e = await errorOf(queryControl(path, 'status'));
    expect(e.message).toMatch(/closed the connection without an answer/);
    held[0].destroy();
    await until(() => counters.incomplete === 1, 2000, 'the slot to be freed');
    expect(await queryControl(path, 'status')).toEqual({ ok: true });
  });

  it('closes a connection that sends nothing, or trickles its request, after 2 s', async () => {
    const path = name();
    const counters = newControlCounters();
    await server(path, counters);
    const silent = await connect(path);
    const trickle = await connect(path);
    const drip = setInterval(() => trickle.write('s'), 200);
    cleanup.push(() => clearInterval(drip));
    const [a, b] = await Promise.all([closed(silent), closed(trickle)]);
    for (const ms of [a, b]) {
      expect(ms).toBeGreaterThan(1500);
      expect(ms).toBeLessThan(4000);
    }
    expect(counters).toMatchObject({ connections: 2, timedOut: 2 });
  });
});
