/**
 * The uplink monitor's operating-system side: `ip` from PATH, run in this process's network
 * namespace, and /proc. Tests replace it with a fake MonitorIo.
 */
import { execFile, spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { SystemError } from '../../../shared/errors.ts';

export interface MonitorChild {
  readonly pid: number | undefined;
  kill(signal: NodeJS.Signals): void;
  /** Resolves once the process has exited (never rejects). */
  readonly exited: Promise<void>;
}

export interface MonitorHandlers {
  line(l: string): void;
  exit(why: string): void;
}

/** The operating-system side, replaceable in tests. */
export interface MonitorIo {
  /** Starts `ip -o -N monitor link address route`; every complete line goes to `line`, the end to `exit` (once). */
  spawnMonitor(handlers: MonitorHandlers): MonitorChild;
  /** True once process `pid`'s rtnetlink socket has joined its multicast groups; false after timeoutMs. */
  subscribed(pid: number, timeoutMs: number): Promise<boolean>;
  /** Runs `ip ARGS…` and resolves with its standard output; rejects with SystemError NETCONFIG_FAILED. */
  ip(args: readonly string[]): Promise<string>;
}

/** The real thing. A partial line longer than maxLineBytes is dropped. */
export function systemMonitorIo(maxLineBytes: number): MonitorIo {
  return {
    spawnMonitor: (handlers) => spawnMonitor(handlers, maxLineBytes),
    subscribed,
    ip,
  };
}

function spawnMonitor(handlers: MonitorHandlers, maxLineBytes: number): MonitorChild {
  const p = spawn('ip', ['-o', '-N', 'monitor', 'link', 'address', 'route'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let partial = '';
  let lastErr = '';
  let ended = false;
  let resolveExited: () => void = () => {};
  const exited = new Promise<void>((r) => (resolveExited = r));
  const end = (why: string) => {
    if (ended) return;
    ended = true;
    resolveExited();
    handlers.exit(lastErr ? `${why}: ${lastErr}` : why);
  };
  p.stdout.setEncoding('utf8');
  p.stdout.on('data', (chunk: string) => {
    partial += chunk;
    let nl: number;
    while ((nl = partial.indexOf('\n')) >= 0) {
      const line = partial.slice(0, nl);
      partial = partial.slice(nl + 1);
      handlers.line(line);
    }
    if (partial.length > maxLineBytes) partial = '';
  });
  p.stderr.setEncoding('utf8');
  p.stderr.on('data', (chunk: string) => {
    const l = chunk.trim().split('\n').pop();
    if (l) lastErr = l.slice(0, 200);
  });
  p.on('error', (e) => end(`ip monitor: ${e.message}`));
  p.on('exit', (code, signal) => end(signal !== null ? `ip monitor killed by ${signal}` : `ip monitor exited with code ${code}`));
  return {
    pid: p.pid,
    exited,
    kill(signal) {
      if (!ended) p.kill(signal);
    },
  };
}

/**
 * `ip monitor` reports nothing that happens before its netlink socket has joined the multicast
 * groups; the shell waits for that before it snapshots, so no change falls between the two.
 */
async function subscribed(pid: number, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      // sk Eth Pid Groups …: the child's rtnetlink (Eth 0) socket, bound to its pid, with groups joined.
      const text = await readFile(`/proc/${pid}/net/netlink`, 'utf8');
      for (const row of text.split('\n').slice(1)) {
        const f = row.trim().split(/\s+/);
        if (f[1] === '0' && f[2] === String(pid) && f[3] !== undefined && !/^0+$/.test(f[3])) return true;
      }
    } catch {
      // Not there yet (or already gone): try again until the deadline.
    }
    if (Date.now() >= deadline) return false;
    await new Promise((r) => setTimeout(r, 5));
  }
}

function ip(args: readonly string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile('ip', args as string[], { timeout: 10_000, maxBuffer: 64 * 1024 * 1024, encoding: 'utf8' }, (err, stdout, stderr) => {
      if (err) {
        const why = (stderr || err.message).trim().split('\n')[0];
        const hint = (err as NodeJS.ErrnoException).code === 'ENOENT' ? 'install iproute2 (apt-get install iproute2)' : 'check that iproute2 6.1 or later is installed';
        reject(new SystemError('NETCONFIG_FAILED', `ip ${args.join(' ')}: ${why}`, hint));
        return;
      }
      resolve(stdout);
    });
  });
}
