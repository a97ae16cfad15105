import { spawn, type ChildProcess } from 'node:child_process';
import { silentLogger, type Logger } from '../shared/log.ts';
import { systemClock } from '../shared/clock.ts';
import { MemoryNet } from '../shared/udp/memory.ts';
import { createAgent, type AgentIdentity } from './agent.ts';
import type { AgentConfig } from './config.ts';
import { memoryHostState } from './hoststate.ts';
import { MemoryTun } from './tun/memory.ts';
import { TAG_LEN } from '../shared/wire/header.ts';

/**
 * Upgrade in place (SIGUSR2), as nginx replaces its binary: the running agent starts the version now
 * installed (the same command line: /usr/local/bin/realmnet follows /opt/realmnet/current), lets it
 * load its code and config while traffic still flows, and only then stops itself; the successor
 * takes the TUN, the uplinks and the sockets once they are free. Traffic stands still for the stop
 * and start of the data plane (a few hundred ms), not for Node loading the program (about a second),
 * which is what a plain restart costs.
 *
 * The two talk over Node's IPC channel: the successor says `loaded`, the predecessor answers
 * `released` once its clean stop is done. If the successor fails before `loaded` (a config it cannot
 * read, a broken install), the running agent stays and says why.
 */
const TAKEOVER_ENV = 'REALMNET_TAKEOVER';
const LOADED = 'realmnet:loaded';
const RELEASED = 'realmnet:released';

export interface Successor {
  readonly pid: number;
  /** Tells the successor that the TUN, the sockets and the rules are free; then lets it go. */
  release(): Promise<void>;
  /** Stops a successor that will not be released (the predecessor could not stop cleanly). */
  kill(): void;
}

function messageIs(m: unknown, what: string): boolean {
  return typeof m === 'object' && m !== null && 'type' in m && m.type === what;
}

/**
 * Starts the successor and resolves once it has loaded (rejects if it exits or stays silent for
 * `timeoutMs`). `env` adds what the successor needs that this process consumed (NOTIFY_SOCKET, …).
 */
export function startSuccessor(o: { log: Logger; env: Readonly<Record<string, string>>; timeoutMs: number }): Promise<Successor> {
  const [script, ...args] = process.argv.slice(1);
  const child: ChildProcess = spawn(process.execPath, [...process.execArgv, script, ...args], {
    env: { ...process.env, ...o.env, [TAKEOVER_ENV]: '1' },
    // Its logs go where ours go (the journal under systemd).
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => fail(`it did not load within ${o.timeoutMs / 1000} s`), o.timeoutMs);
    const onExit = (code: number | null, signal: NodeJS.Signals | null) => fail(`it exited (${signal ?? `code ${code}`}) before taking over: its own log lines say why`);
    function fail(why: string): void {
      clearTimeout(timer);
      child.off('exit', onExit);
      child.kill('SIGKILL');
      reject(new Error(why));
    }
    child.once('exit', onExit);
    child.once('error', (e) => fail(e.message));
    child.on('message', (m: unknown) => {
      if (!messageIs(m, LOADED)) return;
      clearTimeout(timer);
      child.off('exit', onExit);
      resolve({
        pid: child.pid ?? 0,
        release: () =>
          new Promise<void>((done) => {
            child.send({ type: RELEASED }, () => {
              // Neither keeps the other: the successor outlives us.
              child.disconnect();
              child.unref();
              done();
            });
          }),
        kill: () => void child.kill('SIGTERM'),
      });
    });
  });
}

/** True in a process started by startSuccessor. */
export function isSuccessor(): boolean {
  return process.env[TAKEOVER_ENV] === '1' && typeof process.send === 'function';
}

/** In the successor, once loaded: tells the predecessor and waits until it has let go of everything. */
export function awaitRelease(log: Logger): Promise<void> {
  delete process.env[TAKEOVER_ENV];
  if (process.send === undefined) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const onDisconnect = () => reject(new Error('the running agent went away before releasing the TUN and the uplinks'));
    process.once('disconnect', onDisconnect);
    process.on('message', (m: unknown) => {
      if (!messageIs(m, RELEASED)) return;
      process.off('disconnect', onDisconnect);
      log.info('upgrade: the previous agent has stopped; taking over');
      resolve();
    });
    process.send?.({ type: LOADED });
  });
}

/**
 * In the successor, before it says `loaded`: one start and stop of an agent with this config on the
 * in-memory TUN and UDP doubles, no `ip` commands, no RM. Node compiles a function the first time it
 * runs; run here, while the predecessor still forwards, the start-up code is compiled before the
 * real start, which then takes less of the gap. Nothing of the system is touched.
 */
export async function rehearse(config: AgentConfig, identity: AgentIdentity | undefined): Promise<void> {
  const net = new MemoryNet();
  const sealed = config.dataplane.encryption === 'on';
  const tun = new MemoryTun({ name: config.tun.name, mtu: config.tun.mtu, offload: config.tun.offload, coalesce: config.tun.coalesce, batchSize: config.tun.batchSize, tailroom: sealed ? TAG_LEN : 0 });
  const dry = createAgent(
    { ...config, serve: [], uplinks: config.uplinks.map(({ interface: _i, gateway: _g, ...u }) => u) },
    { openTun: () => tun, openUdp: (o) => net.open(o), net: { ip: async () => undefined }, log: silentLogger, clock: systemClock, identity, hostState: memoryHostState() },
  );
  try {
    await dry.start();
    dry.status();
  } finally {
    await dry.stop();
  }
}
