// How both programs talk to the service manager (systemd's notification protocol, sd_notify(3)):
// READY=1 once the program does its job (the agent forwards, the RM answers), WATCHDOG=1 from the
// event loop every WATCHDOG_USEC/2 (a loop stuck for a whole WatchdogSec gets the process killed and,
// with Restart=on-failure, restarted), RELOADING=1 … READY=1 around a SIGHUP reload, STOPPING=1 at a
// clean stop, and STATUS= lines `systemctl status` shows.
//
// Without NOTIFY_SOCKET (a terminal, a test, another supervisor) every call does nothing. The
// variables are removed from the environment once read, as libsystemd's unset_environment does, so
// that the programs this one starts (`ip`) cannot speak for it.
import type { Logger } from './log.ts';
import { errnoName, isNativeErrnoError, loadNative } from './native.ts';

interface NotifyBinding {
  sendTo(path: string, message: string): number;
}

export interface ServiceNotifier {
  /** The program does its job now; `status` becomes the STATUS= line. */
  ready(status: string): void;
  /** A reload begins (SIGHUP); ready() ends it. */
  reloading(): void;
  stopping(): void;
  status(text: string): void;
  /** The service's main process is another one now (an upgrade in place hands over to its successor). */
  mainPid(pid: number): void;
  /** The variables a successor needs to speak to the service manager in our place. */
  handoverEnv(): Record<string, string>;
  /** Starts the WATCHDOG=1 pings when the service manager asked for them; the returned function stops them. */
  startWatchdog(): () => void;
  /** The ping interval in ms, or null when no watchdog was asked for. */
  readonly watchdogIntervalMs: number | null;
  /** The socket notifications go to, or null (then every call is a no-op). */
  readonly socket: string | null;
}

export interface NotifierOptions {
  readonly log: Logger;
  /** process.env by default; NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID are deleted from it. */
  readonly env?: NodeJS.ProcessEnv;
  readonly pid?: number;
  /** Replaced in tests. */
  readonly send?: (path: string, message: string) => void;
}

/** Reads the service manager's variables (and removes them from the environment). */
export function serviceNotifier(o: NotifierOptions): ServiceNotifier {
  const env = o.env ?? process.env;
  const pid = o.pid ?? process.pid;
  const socket = env.NOTIFY_SOCKET !== undefined && env.NOTIFY_SOCKET !== '' ? env.NOTIFY_SOCKET : null;
  const watchdogIntervalMs = watchdogInterval(env.WATCHDOG_USEC, env.WATCHDOG_PID, pid);
  const watchdogUsec = watchdogIntervalMs === null ? null : (env.WATCHDOG_USEC ?? null);
  delete env.NOTIFY_SOCKET;
  delete env.WATCHDOG_USEC;
  delete env.WATCHDOG_PID;
  const send = o.send ?? ((path: string, message: string) => void (loadNative('realmnet_notify') as NotifyBinding).sendTo(path, message));
  let warned = false;
  const notify = (message: string): void => {
    if (socket === null) return;
    try {
      send(socket, message);
    } catch (e) {
      // The manager went away or the socket is wrong: say so once, and keep forwarding packets.
      if (warned) return;
      warned = true;
      const why = isNativeErrnoError(e) ? `${e.syscall}: ${errnoName(e.errno)}` : e instanceof Error ? e.message : String(e);
      o.log.warn({ socket, err: why }, 'cannot notify the service manager (NOTIFY_SOCKET)');
    }
  };
  return {
    socket,
    watchdogIntervalMs,
    ready: (status) => notify(`READY=1\nSTATUS=${oneLine(status)}\nMAINPID=${pid}`),
    // MONOTONIC_USEC lets systemd >= 253 (Type=notify-reload) match the reload to its request.
    reloading: () => notify(`RELOADING=1\nMONOTONIC_USEC=${process.hrtime.bigint() / 1000n}`),
    stopping: () => notify('STOPPING=1'),
    mainPid: (p) => notify(`MAINPID=${p}`),
    handoverEnv: () => ({
      ...(socket === null ? {} : { NOTIFY_SOCKET: socket }),
      ...(watchdogUsec === null ? {} : { WATCHDOG_USEC: watchdogUsec }),
    }),
    status: (text) => notify(`STATUS=${oneLine(text)}`),
    startWatchdog: () => {
      if (socket === null || watchdogIntervalMs === null) return () => undefined;
      notify('WATCHDOG=1');
      // A timer on the event loop on purpose: a loop that no longer runs timers stops the pings.
      const t = setInterval(() => notify('WATCHDOG=1'), watchdogIntervalMs);
      t.unref();
      return () => clearInterval(t);
    },
  };
}

/**
 * Half of WATCHDOG_USEC (as sd_watchdog_enabled(3) advises), or null when there is no watchdog, it
 * is for another process (WATCHDOG_PID), or the value is not a positive integer.
 */
export function watchdogInterval(usec: string | undefined, forPid: string | undefined, pid: number): number | null {
  if (usec === undefined || !/^\d+$/.test(usec)) return null;
  if (forPid !== undefined && forPid !== '' && forPid !== String(pid)) return null;
  const us = Number(usec);
  if (us <= 0) return null;
  return Math.max(1, Math.floor(us / 2000));
}

function oneLine(s: string): string {
  return s.replace(/[\r\n]+/g, ' ');
}
