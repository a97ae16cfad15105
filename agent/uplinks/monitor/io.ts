/**
 * The uplink monitor's operating-system side: `ip` from PATH, run in this process's network
 * namespace, and /proc. Tests replace it with a fake MonitorIo.
 */
import { spawn } from 'node:child_process';
import { runIp } from '../../../shared/ip.ts';
import { readFile } from 'node:fs/promises';

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
  /**
   * Runs `ip OPTIONS… -batch -` with COMMANDS on its standard input, one a line, and resolves with
   * its standard output; rejects with SystemError NETCONFIG_FAILED (ip stops at the first failure).
   */
  ipBatch(options: readonly string[], commands: readonly string[]): Promise<string>;
}

/** The real thing. A partial line longer than maxLineBytes is dropped. */
export function systemMonitorIo(maxLineBytes: number): MonitorIo {
  return {
    spawnMonitor: (handlers) => spawnMonitor(handlers, maxLineBytes),
    subscribed,
    ipBatch,
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

/** Bound of a snapshot's output: four times the 64 MiB each of its commands had as a process of its own. */
const BATCH_MAX_BYTES = 256 * 1024 * 1024;

async function ipBatch(options: readonly string[], commands: readonly string[]): Promise<string> {
  if (commands.some((c) => c.includes('\n'))) throw new Error(`ip -batch: a command contains a newline: ${JSON.stringify(commands)}`);
  // Through shared/ip.ts: posix_spawn off the event loop, never a fork of the agent on it.
  return runIp([...options, '-batch', '-'], {
    input: commands.map((c) => `${c}\n`).join(''),
    maxBytes: BATCH_MAX_BYTES,
    hint: 'check that iproute2 6.1 or later is installed',
    explain: (stderr) => {
      const errLines = stderr.trim().split('\n');
      // `Command failed -:3` names the line that failed; its reason is the line before.
      const failed = /^Command failed -:(\d+)$/.exec(errLines.at(-1) ?? '');
      if (failed === null) return undefined;
      const command = commands[Number(failed[1]) - 1];
      return `${command === undefined ? '' : `(${command}) `}${errLines.length > 1 ? errLines.at(-2) : errLines[0]}`;
    },
  });
}
