import { SystemError } from './errors.ts';
import { errnoName, loadNative } from './native.ts';

/**
 * The one way realmnet runs iproute2: `ip ARGS…` (optionally with commands on stdin for `-batch -`),
 * its output collected, a failure turned into one SystemError with ip's own first line and a hint,
 * and the process started without forking the caller on its event loop (runIp below).
 * The agent changes routes and addresses through it (agent/netconfig.ts, agent/uplinks/routing.ts)
 * and the uplink monitor reads snapshots through it.
 */
export interface NetConfig {
  /** Runs `ip ARGS…`; throws SystemError NETCONFIG_FAILED with ip's own message. */
  ip(args: readonly string[]): Promise<void>;
}

export interface IpOptions {
  /** Written to ip's stdin (with `-batch -`). */
  readonly input?: string;
  /** Most output bytes kept (a routing table can be large); more fails the command. */
  readonly maxBytes?: number;
  readonly timeoutMs?: number;
  /** What to suggest when ip itself fails (not found, not permitted are said anyway). */
  readonly hint?: string;
  /** What to say of a failure, from ip's stderr (default: its first line). */
  readonly explain?: (stderr: string) => string | undefined;
}

interface SpawnResult {
  readonly code: number;
  readonly signal: number;
  readonly errno: number;
  readonly stdout: Buffer;
  readonly stderr: Buffer;
}

interface SpawnBinding {
  run(file: string, args: readonly string[], input: string | null, timeoutMs: number, maxBytes: number): Promise<SpawnResult>;
}

let binding: SpawnBinding | null = null;

/** The native command runner (shared/native/spawn.cc): any command, as runIp runs `ip`. */
export function spawner(): SpawnBinding {
  if (binding !== null) return binding;
  const b = loadNative('realmnet_spawn');
  if (typeof b !== 'object' || b === null || typeof (b as { run?: unknown }).run !== 'function') {
    throw new SystemError('NATIVE_NOT_BUILT', 'the native addon realmnet_spawn does not export run()', 'run npm install (it rebuilds the addons)');
  }
  binding = b as SpawnBinding;
  return binding;
}

/**
 * Runs `ip ARGS…` and resolves with its standard output. The command is started with posix_spawn
 * from a threadpool thread (shared/native/spawn.cc), never with child_process: a fork on the event
 * loop's thread stalls the agent's packet forwarding for 5–50 ms depending on its memory (measured).
 */
export async function runIp(args: readonly string[], o: IpOptions = {}): Promise<string> {
  const maxBytes = o.maxBytes ?? 64 * 1024 * 1024;
  const r = await spawner().run('ip', args, o.input ?? null, o.timeoutMs ?? 10_000, maxBytes);
  if (r.errno === 0 && r.code === 0) return r.stdout.toString('utf8');
  const why =
    r.errno !== 0
      ? errnoName(r.errno)
      : r.stdout.length >= maxBytes
        ? `more than ${maxBytes} bytes of output`
        : (o.explain?.(r.stderr.toString('utf8')) ?? r.stderr.toString('utf8').trim().split('\n')[0]) || (r.signal !== 0 ? `killed by signal ${r.signal}` : `exit code ${r.code}`);
  const hint =
    errnoName(r.errno) === 'ENOENT'
      ? 'install iproute2 (apt-get install iproute2)'
      : /Operation not permitted/.test(why)
        ? 'run as root or with CAP_NET_ADMIN'
        : (o.hint ?? 'check the interface names, addresses and gateways in the config');
  throw new SystemError('NETCONFIG_FAILED', `ip ${args.join(' ')}: ${why}`, hint);
}
