/**
 * The native TUN device (agent/tun/native/tun.cc) against the same compliance suite as MemoryTun, plus
 * what only the kernel does (names, EBUSY, ICMPv6 answers, the device vanishing on close). Needs root:
 * it creates a network namespace of its own, runs the suite there in a child process
 * (test/helpers/tun-suite.ts runRealTunSuite) and always deletes the namespace.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadNative } from '../../shared/native.ts';
import { realTunScenarios, tunScenarios } from '../helpers/tun-suite.ts';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const ns = `rntun-${process.pid}`;

interface Result {
  name: string;
  ok: boolean;
  error?: string;
}
const results = new Map<string, Result>();
let child = { status: null as number | null, signal: null as string | null, out: '' };

beforeAll(() => {
  // Fail, not skip: a green run must mean the real device was tested.
  if (process.getuid?.() !== 0) throw new Error('native TUN e2e tests need root (network namespace + TUN devices): run them as root');
  if (!existsSync('/dev/net/tun')) throw new Error('/dev/net/tun is missing: load the tun module (modprobe tun)');
  loadNative('realmnet_tun');
  execFileSync('ip', ['netns', 'add', ns]);
  const code = "import { runRealTunSuite } from './test/helpers/tun-suite.ts'; await runRealTunSuite();";
  const r = spawnSync('ip', ['netns', 'exec', ns, process.execPath, '--import', 'tsx', '--input-type=module', '-e', code], {
    cwd: repoRoot,
    encoding: 'utf8',
    timeout: 90_000,
  });
  child = { status: r.status, signal: r.signal, out: `${r.stdout}${r.stderr}` };
  for (const line of r.stdout.split('\n')) {
    if (!line.startsWith('RESULT ')) continue;
    const result = JSON.parse(line.slice(7)) as Result;
    results.set(result.name, result);
  }
}, 120_000);

afterAll(() => {
  spawnSync('ip', ['netns', 'del', ns]);
});

describe('TunDevice compliance: native TUN in a network namespace', () => {
  for (const s of [...tunScenarios, ...realTunScenarios]) {
    it(s.name, () => {
      const r = results.get(s.name);
      if (r === undefined) throw new Error(`the child never reported this scenario; its output:\n${child.out}`);
      if (!r.ok) throw new Error(r.error);
    });
  }

  it('the child exits by itself once its devices are closed (no thread or TSFN keeps it alive)', () => {
    expect(child.signal, child.out).toBeNull();
    expect(child.status, child.out).toBe(0);
  });
});
