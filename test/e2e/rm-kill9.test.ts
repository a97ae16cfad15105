import { spawn, type ChildProcess } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { stringify } from 'yaml';
import { afterAll, describe, expect, it } from 'vitest';
import { generateKeyPair, type KeyPair } from '../../shared/crypto/ed25519.ts';
import { saveKeyPair } from '../../shared/keyfile.ts';
import { parsePrefix } from '../../shared/ids.ts';
import { createRmClient, type RmClient } from '../../agent/rm/client.ts';
import type { BindingAnswer } from '../../agent/rm/answers.ts';
import { bindingFor } from '../integration/rm-harness.ts';

/**
 * The Realm Manager as a real process (`node bin/realmnet.js rm --config FILE`): kill -9 it in the
 * middle of a burst of registrations, restart it on the same store, and check that every
 * registration it acknowledged is there (the same or a newer sequence number: a registration can be
 * committed and the process killed before its acknowledgement leaves).
 */
const REPO = resolve(import.meta.dirname, '../..');
const HOSTS = 150;
const SEQS_PER_HOST = 40;
const dir = mkdtempSync(join(tmpdir(), 'realmnet-rm-e2e-'));
let child: ChildProcess | null = null;

afterAll(() => {
  if (child && child.exitCode === null) child.kill('SIGKILL');
  rmSync(dir, { recursive: true, force: true });
});

async function freePort(): Promise<number> {
  const s = createSocket('udp4');
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', () => r()));
  const p = s.address().port;
  await new Promise<void>((r) => s.close(() => r()));
  return p;
}

function startRm(configFile: string): ChildProcess {
  const p = spawn(process.execPath, [join(REPO, 'bin', 'realmnet.js'), 'rm', '--config', configFile], { cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  p.stderr?.on('data', (d: Buffer) => (err = (err + d.toString()).slice(-4000)));
  p.on('exit', (code, sig) => {
    if (code !== null && code !== 0) console.error(`rm exited ${code} ${sig ?? ''}: ${err}`);
  });
  return p;
}

function client(port: number, rmKey: Uint8Array, key: KeyPair): RmClient {
  return createRmClient({
    rm: [{ address: '127.0.0.1', port, publicKey: rmKey }],
    key,
    prefix: parsePrefix('fd00:1::/32'),
    retransmit: { initialMs: 100, maxMs: 400, attempts: 40 },
  });
}

describe('Realm Manager process', () => {
  it('keeps every acknowledged registration across kill -9', async () => {
    const port = await freePort();
    const rmKey = generateKeyPair();
    saveKeyPair(join(dir, 'rm.key'), rmKey);
    const keys = Array.from({ length: HOSTS }, () => generateKeyPair());
    const checkerKey = generateKeyPair();
    const cfg = join(dir, 'rm.yaml');
    writeFileSync(
      cfg,
      stringify({
        realm: 'acme',
        prefix: 'fd00:1::/32',
        listen: ['127.0.0.1'],
        port,
        key: 'rm.key',
        store: { path: 'rm.db', synchronous: 'full', batchWindowMs: 2 },
        rateLimit: { perSessionPerS: 1_000_000, sessionBurst: 1_000_000, perPrefixPerS: 1_000_000, prefixBurst: 1_000_000 },
        // A burst of registrations per session is what this test is about.
        registration: { perSessionPerS: 1_000_000, burst: 1_000_000 },
        sessions: { hellosPerS: 10_000 },
        // Every host of the test is a member (admitted at start, as a testbed does).
        admission: { keys: [...keys, checkerKey].map((k) => Buffer.from(k.publicKey).toString('base64')) },
        log: { level: 'warn', format: 'json' },
      }),
    );
    child = startRm(cfg);

    // Signed ahead, so the burst is limited by the RM, not by signing.
    const bindings = keys.map((k) => Array.from({ length: SEQS_PER_HOST }, (_, i) => bindingFor(k, i + 1)));
    const clients = keys.map((k) => client(port, rmKey.publicKey, k));
    await Promise.all(clients.map((c) => c.start()));

    const acked = new Array<number>(HOSTS).fill(0);
    let killed = false;
    const bursts = clients.map(async (c, h) => {
      for (const b of bindings[h]) {
        if (killed) return;
        try {
          const r = await c.register(b, { keep: false });
          // An acknowledgement that arrives after the kill was still sent by the RM before it died.
          if (r.ok) acked[h] = Math.max(acked[h], r.seq);
        } catch {
          return; // the RM is gone
        }
      }
    });
    // Kill once a good part of the burst is acknowledged, while the rest is in flight.
    const target = (HOSTS * SEQS_PER_HOST) / 4;
    const t0 = Date.now();
    while (acked.reduce((a, b) => a + b, 0) < target && Date.now() - t0 < 30_000) await new Promise((r) => setTimeout(r, 5));
    child.kill('SIGKILL');
    killed = true;
    await new Promise((r) => child!.once('exit', r));
    for (const c of clients) await c.stop();
    await Promise.all(bursts);

    const ackedTotal = acked.reduce((a, b) => a + b, 0);
    expect(ackedTotal).toBeGreaterThanOrEqual(target);
    expect(ackedTotal).toBeLessThan(HOSTS * SEQS_PER_HOST); // the kill did land mid-burst

    child = startRm(cfg);
    const checker = client(port, rmKey.publicKey, checkerKey);
    await checker.start();
    const lost: string[] = [];
    for (let h = 0; h < HOSTS; h++) {
      if (acked[h] === 0) continue;
      const r = await checker.lookup(clients[h].hostId);
      const seq = r.kind === 'binding' ? (r as BindingAnswer).binding.seq : 0;
      if (seq < acked[h]) lost.push(`${clients[h].hostId.toString()}: acknowledged seq ${acked[h]}, found ${seq}`);
    }
    await checker.stop();
    child.kill('SIGTERM');
    await new Promise((r) => child!.once('exit', r));
    expect(lost).toEqual([]);
  }, 120_000);
});
