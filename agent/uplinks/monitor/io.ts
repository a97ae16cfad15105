/**
 * The uplink monitor's operating-system side: `ip` from PATH, run in this process's network
 * namespace, /proc, and the carrier bits in /sys/class/net. Tests replace it with a fake MonitorIo.
 */
import { spawn } from 'node:child_process';
import { close, openSync, readFileSync, read } from 'node:fs';
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
  /**
   * Opens the carrier bit of interface `dev` (/sys/class/net/DEV/carrier); null when there is no such
   * device. Absent: the monitor learns carrier from netlink only.
   */
  openCarrier?(dev: string): CarrierReader | null;
}

/** What one read of a carrier bit says. */
export const Carrier = {
  Off: 0,
  On: 1,
  /** The device is gone (deleted, or moved to another namespace): reopen by name. */
  Gone: 2,
} as const;
export type Carrier = (typeof Carrier)[keyof typeof Carrier];

/** One interface's carrier bit (the monitor reads it every few ms). */
export interface CarrierReader {
  /** The interface index sysfs gives: compared with netlink's to tell whether sysfs shows our namespace. */
  readonly ifindex: number;
  /**
   * Reads the bit off the event loop and calls `done` with it (err: the read failed otherwise).
   * Returns false, and will not call `done`, while an earlier read is still in flight.
   */
  read(done: (c: Carrier, err?: Error) => void): boolean;
  close(): void;
}

/** The real thing. A partial line longer than maxLineBytes is dropped. */
export function systemMonitorIo(maxLineBytes: number): MonitorIo {
  return {
    spawnMonitor: (handlers) => spawnMonitor(handlers, maxLineBytes),
    subscribed,
    ipBatch,
    openCarrier,
  };
}

/**
 * The bit itself, not linkwatch's report of it: netif_carrier_off() sets it before it queues the
 * netlink event that linkwatch may hold for up to a second. One fd per interface, re-read with
 * pread at offset 0 (sysfs regenerates the text on every read from offset 0; checked on 6.18).
 * The sysfs mounted here must be the agent's namespace's: `ip netns exec` mounts one (the monitor
 * compares ifindexes to make sure).
 *
 * Why off the event loop (libuv's thread pool): carrier_show() takes the RTNL lock (and syncs the
 * device's pending linkwatch event, so netlink hears of it at once too). A read costs ~8 µs, but
 * while another process holds RTNL (a namespace torn down, a route table loaded) it waits: 48 ms
 * measured, which a synchronous read would have taken from the data path sharing the loop.
 */
function openCarrier(dev: string): CarrierReader | null {
  if (dev.includes('/') || dev === '.' || dev === '..') return null;
  const dir = `/sys/class/net/${dev}`;
  let fd: number;
  let ifindex: number;
  try {
    fd = openSync(`${dir}/carrier`, 'r');
    ifindex = Number(readFileSync(`${dir}/ifindex`, 'latin1').trim());
  } catch (e) {
    if (errnoCode(e) === 'ENOENT' || errnoCode(e) === 'ENODEV') return null;
    throw e;
  }
  const buf = Buffer.alloc(4);
  let open = true;
  let inFlight = false;
  let pending: ((c: Carrier, err?: Error) => void) | null = null;
  // One callback for every read (made once): only the request itself is allocated per read.
  const onRead = (e: NodeJS.ErrnoException | null, n: number): void => {
    inFlight = false;
    const done = pending;
    pending = null;
    if (!open) {
      close(fd, () => {});
      return;
    }
    if (done === null) return;
    if (e === null) done(n > 0 && buf[0] === 0x31 ? Carrier.On : Carrier.Off);
    // carrier_show(): -EINVAL while the device is not running (admin down): no carrier.
    else if (e.code === 'EINVAL') done(Carrier.Off);
    // kernfs: -ENODEV once the attribute's device is unregistered.
    else if (e.code === 'ENODEV' || e.code === 'ENOENT') done(Carrier.Gone);
    else done(Carrier.Off, e);
  };
  return {
    ifindex,
    read(done) {
      if (!open || inFlight) return false;
      inFlight = true;
      pending = done;
      read(fd, buf, 0, 4, 0, onRead);
      return true;
    },
    close() {
      if (!open) return;
      open = false;
      // A read in flight still uses the fd: it is closed when that read is done.
      if (!inFlight) close(fd, () => {});
    },
  };
}

function errnoCode(e: unknown): string | undefined {
  return typeof e === 'object' && e !== null && 'code' in e && typeof e.code === 'string' ? e.code : undefined;
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
