import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DATA_NAME, HTTP_PORT, SLICE2, startSlice2, upSlice2, writeSlice2, type Slice2Host, type Slice2Scene } from '../../scripts/testbed/slice2.ts';
import type { Testbed, NsProcess } from '../../scripts/testbed/topology.ts';
import { requireRoot, uniquePrefix } from '../helpers/netns.ts';
import { REPO } from '../helpers/agents.ts';

/**
 * Slice 2 end to end (docs/slice2.md), the paper's Fig. 3 in namespaces: alice's user ID reaches her
 * laptop, then her phone when the laptop goes offline; a data ID's file downloads with curl while the
 * serving replica dies, and completes from the other; flows stay pinned across a host-level failover;
 * consent, removal, forged bindings and the flow table's bound, each on real agents.
 */
const CLI = join(REPO, 'bin', 'realmnet.js');
const WHOAMI = join(REPO, 'scripts', 'tools', 'whoami.ts');
const FILESERVE = join(REPO, 'scripts', 'tools', 'fileserve.ts');
const PORT = 7000;
let tb: Testbed<typeof SLICE2>;
let scene: Slice2Scene | null = null;
let work = '';
const servers: NsProcess[] = [];

function sc(): Slice2Scene {
  if (scene === null) throw new Error('the scene did not start');
  return scene;
}

async function ask(id: string, timeoutMs = 3000): Promise<{ name?: string; error?: string; connectMs: number }> {
  const r = await tb.exec('cor', process.execPath, ['--import', 'tsx', WHOAMI, 'ask', '--connect', id, '--port', String(PORT), '--timeout-ms', String(timeoutMs)], { cwd: REPO, allowFail: true, timeoutMs: timeoutMs + 10_000 });
  return JSON.parse(r.stdout.trim().split('\n')[0]) as { name?: string; error?: string; connectMs: number };
}

/** Asks until `name` answers; returns the ms from `since` to the first answer from it. */
async function untilAnswer(id: string, name: string, since: number, limitMs = 15_000): Promise<number> {
  for (;;) {
    const r = await ask(id, 1000);
    if (r.name === name) return Date.now() - since;
    if (Date.now() - since > limitMs) throw new Error(`${name} did not answer on ${id} within ${limitMs} ms (last: ${JSON.stringify(r)})`);
  }
}

async function linksOf(n: 'lap' | 'r1' | 'r2' | 'pho', up: boolean): Promise<void> {
  const devs = n === 'lap' ? ['to-lap', 'to-lap2'] : [`to-${n}`];
  for (const d of devs) await (up ? tb.linkUp('core', d) : tb.linkDown('core', d));
}

beforeAll(async () => {
  requireRoot(['ip', 'curl', 'sha256sum']);
  tb = await upSlice2(uniquePrefix('s2'));
  work = await mkdtemp(join(tmpdir(), 'realmnet-s2-'));
  const files = await writeSlice2({ agentExtra: { cor: { slice2: { maxFlows: 64, flowIdleS: 600 } } } });
  scene = await startSlice2(tb, files, CLI, REPO);
  for (const [n, id] of [['lap', files.userId], ['pho', files.userId], ['lap', files.bobId]] as const) {
    servers.push(tb.spawn(n, process.execPath, ['--import', 'tsx', WHOAMI, 'serve', '--listen', id, '--port', String(PORT), '--name', n], { cwd: REPO }));
  }
  // The file both replicas serve: 12 MB of random bytes, and replica links at 40 Mbit/s, so a
  // download takes ~2.5 s and a replica can die in the middle of it.
  await writeFile(join(work, 'file.bin'), randomBytes(12 * 1024 * 1024));
  for (const n of ['r1', 'r2'] as const) {
    servers.push(tb.spawn(n, process.execPath, ['--import', 'tsx', FILESERVE, '--listen', files.dataId, '--port', String(HTTP_PORT), '--dir', work], { cwd: REPO }));
    await tb.rateLimit(n, 'eth0', 40);
  }
  await new Promise((r) => setTimeout(r, 1500));
}, 90_000);

afterAll(async () => {
  for (const s of servers) await s.stop();
  await scene?.stop();
  await tb?.down();
  if (work !== '') await rm(work, { recursive: true, force: true });
});

describe('slice 2: user multihoming', () => {
  it('a connection to alice’s user ID reaches her laptop (priority 1), over one round trip to the RM', async () => {
    const s = sc();
    const r = await ask(s.files.userId);
    expect(r.name).toBe('lap');
    const st = await s.status('cor');
    const id = st.slice2?.ids.find((x) => x.id === s.files.userId);
    expect(id?.hosts.map((h) => h.present)).toEqual([true, true]);
  });

  it('never chooses a host that did not consent (bob lists his phone first; the phone never agreed)', async () => {
    const s = sc();
    for (let i = 0; i < 5; i++) expect((await ask(s.files.bobId)).name).toBe('lap');
  });

  it('keeps a flow pinned across the laptop’s own uplink failover (same host, new locator, no reset)', async () => {
    const s = sc();
    const held = tb.spawn('cor', process.execPath, ['--import', 'tsx', WHOAMI, 'ask', '--connect', s.files.userId, '--port', String(PORT), '--hold', '--timeout-ms', '5000'], { cwd: REPO });
    try {
      for (let i = 0; i < 50 && !held.stdoutTail().includes('name'); i++) await new Promise((r) => setTimeout(r, 100));
      expect(held.stdoutTail()).toContain('"name":"lap"');
      const resetsBefore = (await s.status('cor')).slice2?.counters.resets ?? 0;
      await tb.linkDown('core', 'to-lap');
      await new Promise((r) => setTimeout(r, 2500));
      // Still open (no reset reached the app) and still pinned to the laptop.
      expect(held.running()).toBe(true);
      const st = await s.status('cor');
      expect(st.slice2?.counters.resets).toBe(resetsBefore);
      expect((await ask(s.files.userId)).name).toBe('lap');
    } finally {
      await tb.linkUp('core', 'to-lap');
      await held.stop();
    }
  });

  it('resets a flow pinned to the laptop when it goes offline, and the next connection reaches the phone', async () => {
    const s = sc();
    const held = tb.spawn('cor', process.execPath, ['--import', 'tsx', WHOAMI, 'ask', '--connect', s.files.userId, '--port', String(PORT), '--hold', '--timeout-ms', '5000'], { cwd: REPO });
    try {
      for (let i = 0; i < 50 && !held.stdoutTail().includes('name'); i++) await new Promise((r) => setTimeout(r, 100));
      expect(held.stdoutTail()).toContain('"name":"lap"');
      const t0 = Date.now();
      held.child.kill('SIGUSR1');
      await linksOf('lap', false);
      const handover = await untilAnswer(s.files.userId, 'pho', t0);
      await Promise.race([held.exited, new Promise((r) => setTimeout(r, 5000))]);
      const lines = held.stdoutTail().trim().split('\n');
      const end = JSON.parse(lines[lines.length - 1]) as { ended?: string; afterMs?: number };
      expect(end.ended).toBe('reset');
      expect(end.afterMs).toBeLessThan(1000);
      expect(handover).toBeLessThan(3000);
      process.stdout.write(`slice2 e2e: pinned flow reset after ${end.afterMs} ms, user handover ${handover} ms\n`);
    } finally {
      await linksOf('lap', true);
      await held.stop();
    }
    // Back online: new connections go to the laptop again (priority 1).
    await untilAnswer(s.files.userId, 'lap', Date.now(), 20_000);
  });

  it('stops choosing a host the owner removed (realmnet user remove-host, published through the agent)', async () => {
    const s = sc();
    const st = await s.status('lap');
    const r = await tb.exec('lap', process.execPath, [CLI, 'user', 'remove-host', '--key', s.files.userKey, '--binding', s.files.userBinding, '--host', st.hostId, '--socket', '@realmnet/lap'], { cwd: REPO, allowFail: true, timeoutMs: 30_000 });
    expect(r.code, r.stderr).toBe(0);
    const t0 = Date.now();
    const ms = await untilAnswer(s.files.userId, 'pho', t0, 5000);
    expect(ms).toBeLessThan(2000);
    // And back: add the laptop again.
    const back = await tb.exec('lap', process.execPath, [CLI, 'user', 'add-host', '--key', s.files.userKey, '--binding', s.files.userBinding, '--host', st.hostId, '--priority', '1', '--socket', '@realmnet/lap'], { cwd: REPO, allowFail: true, timeoutMs: 30_000 });
    expect(back.code, back.stderr).toBe(0);
    await untilAnswer(s.files.userId, 'lap', Date.now(), 10_000);
  });

  it('refuses a stranger’s forged binding for alice’s user ID', async () => {
    const s = sc();
    const text = await readFile(s.files.userBinding, 'utf8');
    const line = text.split('\n').find((l) => l.trim() !== '' && !l.startsWith('#')) ?? '';
    const bytes = Buffer.from(line.trim(), 'base64');
    bytes[bytes.length - 1] ^= 0xff; // the signature's last byte
    const forged = join(work, 'forged.user');
    await writeFile(forged, text.replace(line, bytes.toString('base64')));
    const r = await tb.exec('lap', process.execPath, [CLI, 'user', 'push', '--binding', forged, '--socket', '@realmnet/lap'], { cwd: REPO, allowFail: true, timeoutMs: 30_000 });
    expect(r.code).not.toBe(0);
    expect((await ask(s.files.userId)).name).toBe('lap');
  });
});

describe('slice 2: data multihoming', () => {
  it('curl resumes a download by data ID from the other replica when the serving one dies, intact', async () => {
    const s = sc();
    const out = join(work, 'download.bin');
    const url = `http://[${s.files.dataId}]:${HTTP_PORT}/${DATA_NAME.split('/').pop() ?? ''}`;
    const curl = tb.spawn('cor', 'curl', ['-sS', '-g', '--retry', '10', '--retry-all-errors', '--retry-delay', '1', '--connect-timeout', '2', '-C', '-', '-o', out, url]);
    try {
      // Find the replica serving it, then kill that replica's agent mid-download (it vanishes from
      // the network: its TUN and sessions go with it).
      let serving: Slice2Host | null = null;
      for (let i = 0; i < 40 && serving === null; i++) {
        await new Promise((r) => setTimeout(r, 100));
        const st = await s.status('cor');
        const f = st.slice2?.flows.find((x) => x.remote === s.files.dataId && x.proto === 6 && x.state === 'live');
        if (f?.hostId === s.files.ids.r1) serving = 'r1';
        if (f?.hostId === s.files.ids.r2) serving = 'r2';
      }
      expect(serving).not.toBeNull();
      const resetsBefore = (await s.status('cor')).slice2?.counters.resets ?? 0;
      await new Promise((r) => setTimeout(r, 700));
      s.agents[serving as Slice2Host].child.kill('SIGKILL');
      const done = await Promise.race([curl.exited, new Promise<null>((r) => setTimeout(() => r(null), 60_000))]);
      expect(done?.code, curl.stderrTail()).toBe(0);
      const want = createHash('sha256').update(await readFile(join(work, 'file.bin'))).digest('hex');
      const got = createHash('sha256').update(await readFile(out)).digest('hex');
      expect(got).toBe(want);
      const st = await s.status('cor');
      // The flow pinned to the dead replica was reset (curl did not wait for a TCP timeout).
      expect(st.slice2?.counters.resets ?? 0).toBeGreaterThan(resetsBefore);
      await s.restartAgent(serving as Slice2Host);
    } finally {
      await curl.stop();
    }
  }, 120_000);

  it('bounds the flow table: 200 idle UDP flows in a table of 64 evict the oldest', async () => {
    const s = sc();
    // A fresh socket per flow: 200 source ports, 200 five-tuples, one datagram each.
    const script = `const dg=require('node:dgram');let n=0;const go=()=>{if(n>=200)return;const d=dg.createSocket('udp6');d.send('x',9000,process.argv[1],()=>{d.close();n++;go();});};go();`;
    await tb.exec('cor', process.execPath, ['-e', script, s.files.dataId], { timeoutMs: 30_000 });
    const st = (await s.status('cor')) as unknown as { slice2: { pins: { flows: number; inserted: number; evictedIdle: number; evictedActive: number }; counters: Record<string, number> } };
    process.stdout.write(`slice2 e2e: flow table ${JSON.stringify(st.slice2.pins)} router ${JSON.stringify(st.slice2.counters)}\n`);
    expect(st.slice2.pins.inserted).toBeGreaterThanOrEqual(200);
    expect(st.slice2.pins.flows).toBeLessThanOrEqual(64);
    expect(st.slice2.pins.evictedIdle + st.slice2.pins.evictedActive).toBeGreaterThan(0);
  }, 120_000);
});
