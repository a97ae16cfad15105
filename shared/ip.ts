import { spawn } from 'node:child_process';
import { SystemError } from './errors.ts';

/**
 * The one way realmnet runs iproute2: `ip ARGS…` (optionally with commands on stdin for `-batch -`),
 * its output collected, a failure turned into one SystemError with ip's own first line and a hint.
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
}

export function runIp(args: readonly string[], o: IpOptions = {}): Promise<string> {
  const maxBytes = o.maxBytes ?? 64 * 1024 * 1024;
  return new Promise((resolve, reject) => {
    const fail = (why: string, code?: string) => {
      const hint = code === 'ENOENT' ? 'install iproute2 (apt-get install iproute2)' : /Operation not permitted/.test(why) ? 'run as root or with CAP_NET_ADMIN' : (o.hint ?? 'check the interface names, addresses and gateways in the config');
      reject(new SystemError('NETCONFIG_FAILED', `ip ${args.join(' ')}: ${why}`, hint));
    };
    const child = spawn('ip', args as string[], { stdio: [o.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'], timeout: o.timeoutMs ?? 10_000 });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let size = 0;
    let settled = false;
    child.stdout?.on('data', (b: Buffer) => {
      size += b.length;
      if (size > maxBytes && !settled) {
        settled = true;
        child.kill('SIGKILL');
        fail(`more than ${maxBytes} bytes of output`);
      } else out.push(b);
    });
    child.stderr?.on('data', (b: Buffer) => void err.push(b));
    child.on('error', (e: NodeJS.ErrnoException) => {
      if (settled) return;
      settled = true;
      fail(e.message, e.code);
    });
    child.on('close', (code, signal) => {
      if (settled) return;
      settled = true;
      if (code === 0) return resolve(Buffer.concat(out).toString('utf8'));
      const why = Buffer.concat(err).toString('utf8').trim().split('\n')[0] || (signal !== null ? `killed by ${signal}` : `exit code ${code}`);
      fail(why);
    });
    if (o.input !== undefined && child.stdin !== null) {
      child.stdin.on('error', () => undefined); // ip may exit before reading all of it: its exit code says why
      child.stdin.end(o.input);
    }
  });
}
