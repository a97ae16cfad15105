/**
 * Small helpers for end-to-end tests in network namespaces. Tests never skip: when the machine
 * cannot run them (not root, a tool missing), requireRoot() throws and the test fails with a
 * message that says how to fix it.
 */
import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';
import { execNs, spawnNs, type ExecOptions, type ExecResult, type NsProcess, type SpawnOptions } from '../../scripts/testbed/topology.ts';
export { deleteNamespace } from '../../scripts/testbed/topology.ts';

export type { ExecOptions, ExecResult, NsProcess, SpawnOptions };

/** The tools the testbed itself needs; pass more (e.g. 'nebula') for tests that use them. */
export const TESTBED_TOOLS = ['ip', 'nft', 'tc', 'ss', 'sysctl', 'ping', 'iperf3'] as const;

function onPath(tool: string): boolean {
  for (const dir of (process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin').split(delimiter)) {
    try {
      accessSync(join(dir, tool), constants.X_OK);
      return true;
    } catch {
      // next directory
    }
  }
  return false;
}

/** Throws unless this process is root and every tool is on PATH. */
export function requireRoot(tools: readonly string[] = TESTBED_TOOLS): void {
  const uid = process.getuid?.() ?? -1;
  if (uid !== 0) throw new Error(`e2e tests need root to create network namespaces (uid is ${uid}): run them as root`);
  const missing = tools.filter((t) => !onPath(t));
  if (missing.length > 0) throw new Error(`e2e tests need ${missing.join(', ')} on PATH: run \`bash scripts/install-deps.sh\` as root`);
}

/** A namespace prefix unique to this process (and tag), so concurrent runs never collide. */
export function uniquePrefix(tag = ''): string {
  return `rn${process.pid % 100000}${tag}-`;
}

/** Runs a command in namespace `ns`; throws on a non-zero exit unless `allowFail`. */
export function execIn(ns: string, cmd: string, args: readonly string[], opts?: ExecOptions): Promise<ExecResult> {
  return execNs(ns, cmd, args, opts);
}

/** Starts a long-running command in namespace `ns`; the caller stops it (`await p.stop()`). */
export function spawnIn(ns: string, cmd: string, args: readonly string[], opts?: SpawnOptions): NsProcess {
  return spawnNs(ns, ns, cmd, args, opts);
}

/** Pings once (or `count` times) and says whether a reply came. */
export async function pings(ns: string, dst: string, opts: { count?: number; waitSec?: number; source?: string } = {}): Promise<boolean> {
  const args = [dst.includes(':') ? '-6' : '-4', '-n', '-c', String(opts.count ?? 1), '-W', String(opts.waitSec ?? 1)];
  if (opts.source !== undefined) args.push('-I', opts.source);
  args.push(dst);
  const r = await execNs(ns, 'ping', args, { allowFail: true });
  return r.code === 0;
}
