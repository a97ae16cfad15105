/**
 * The uplink monitor: follows each uplink's link state, addresses and routes through netlink events
 * and reports a change the moment the kernel announces it, and reads each uplink's carrier bit
 * itself, since netlink may hear of a carrier change up to 1 s late (6.). It reports facts; whether and
 * when an uplink that came back is used again is the failover state machine's decision. This file is
 * the shell: child process, snapshot, restarts, listeners. parse.ts reads `ip`, reduce.ts decides,
 * io.ts is the system.
 *
 * 1. start(): spawn `ip -o -N monitor link address route` in the agent's network namespace. Wait until
 *    its netlink socket has joined the multicast groups (io.ts subscribed()), then take a snapshot
 *    (links, addresses, IPv4 and IPv6 routes of every table, all from one `ip -j -N -batch -`), fold
 *    it into one state per uplink and replay the events that arrived meanwhile: nothing falls between
 *    snapshot and events.
 * 2. Every line: parseMonitorLine → reduce() for each uplink → factsOf(); a change calls the
 *    onChange listeners at once, from the same tick.
 * 3. The kernel removes some routes without a netlink message (see reduce.ts). reduce() models the
 *    known cases; in addition, a link event or a deleted address on a watched interface schedules one
 *    resync (a fresh snapshot with the events since replayed), so a case we did not model is
 *    corrected within ~resyncDelayMs.
 * 4. The child dies: restart after a bounded exponential backoff (100 ms … 5 s), one log line per
 *    restart, and resync (events were missed meanwhile).
 * 5. stop(): timers cleared, child killed (SIGTERM, then SIGKILL after 1 s), carrier fds closed.
 * 6. The carrier bit. The kernel's link watcher sends a non-urgent carrier change (any real NIC's) at
 *    most once a second host-wide, so netlink may report a carrier loss ~1 s late. After the first
 *    snapshot, if /sys/class/net shows this namespace (every watched interface there with netlink's
 *    ifindex; `ip netns exec` mounts such a sysfs; otherwise one warning and netlink only), the
 *    monitor reads /sys/class/net/DEV/carrier of every uplink (io.ts, off the event loop: the read
 *    takes RTNL) every carrierPollMs while activity() says the uplinks carry traffic, every
 *    carrierIdlePollMs otherwise (signals.ts carrierPollDelay), and right after every netlink link
 *    event and snapshot. A bit that differs from the state folds in as a CarrierEvent (reduce.ts): the
 *    listeners hear it at once, and netlink saying the same later is no change.
 * 7. sendError(): the data plane could not send on an uplink (ENETDOWN, ENETUNREACH, EHOSTUNREACH):
 *    read its carrier and resync now; ENETDOWN also holds it unusable (signals.ts has the rule).
 *
 * Why one child process per snapshot: the agent forwards packets on the same event loop, and every
 * spawn blocks that loop (libuv forks the whole process, then waits until the child has exec'd). The
 * four `ip` of the first version paused forwarding ~60 ms about resyncDelayMs after each link event;
 * on a loaded 2-vCPU box a plain node process blocked up to 97 ms for four spawns, 21 ms for one (and
 * 186 / 48 ms with 300 MB more heap). test/e2e/monitor.test.ts, 5 carrier flaps under load 4–6: loop
 * stalls up to 103–405 ms with four `ip`, 22–115 ms with one (medians 32–134 / 16–21 ms). What stays
 * on the main thread is parsing the output and folding it, both linear in the host's routes (100k
 * routes, 3 uplinks: ~0.5–1 s to parse, ~50 ms to fold; a few dozen routes: ~1 ms).
 *
 * Measured (test/e2e/monitor.test.ts, 2 vCPU): kernel change → onChange 0.3–6 ms (median ~0.5 ms).
 * Carrier changes reach netlink through the kernel's link watcher: at once for a device whose ifindex
 * differs from its iflink (a veth whose peer has another number), otherwise batched, at most one batch
 * per second for the whole host: real NICs are in that case (the testbed gives every veth end an
 * index of its own, so it is not). There the carrier bit (6.) reports the loss, measured 0.8–9.5 ms
 * after the fault was written to `ip` while an unread device's netlink report came 785–897 ms late;
 * a loss shorter than a read interval can still pass unseen, and probing (paths/) covers that.
 * IPv4 routes flushed by the kernel are not announced (see reduce()). docs/failover.md has the costs.
 */
import { systemClock, type Clock } from '../../../shared/clock.ts';
import { SystemError } from '../../../shared/errors.ts';
import type { Logger } from '../../../shared/log.ts';
import { Carrier, systemMonitorIo, type CarrierReader, type MonitorChild, type MonitorIo } from './io.ts';
import { SNAPSHOT_COMMANDS, SNAPSHOT_OPTIONS, parseBatchSnapshot, parseMonitorLine } from './parse.ts';
import { EMPTY_UPLINK_STATE, factsOf, fold, reduce, sameFacts, type UplinkState } from './reduce.ts';
import { carrierPollDelay, held, holdAfterSendError, type SendErrorHold, type SignalOptions } from './signals.ts';
import type { CarrierEvent, MonitorEvent, UplinkFacts, WatchedUplink } from './types.ts';

export interface UplinkMonitorOptions extends SignalOptions {
  /** First restart delay after the child died; doubles per failure up to restartMaxMs. */
  readonly restartMinMs: number;
  readonly restartMaxMs: number;
  /** A child that ran this long resets the backoff. */
  readonly stableAfterMs: number;
  /** Delay of the resync after a link event or a deleted address (several events share one). */
  readonly resyncDelayMs: number;
  /** How long start() waits for the child's netlink subscription before snapshotting anyway. */
  readonly readyTimeoutMs: number;
  /** Events kept for replay while a snapshot is in flight; beyond, another resync follows. */
  readonly maxBufferedEvents: number;
  /** A partial line longer than this is dropped (counted). */
  readonly maxLineBytes: number;
}

export const MONITOR_DEFAULTS: UplinkMonitorOptions = Object.freeze({
  restartMinMs: 100,
  restartMaxMs: 5_000,
  stableAfterMs: 30_000,
  resyncDelayMs: 100,
  readyTimeoutMs: 1_000,
  maxBufferedEvents: 10_000,
  maxLineBytes: 64 * 1024,
  carrierPollMs: 5,
  carrierIdlePollMs: 100,
  carrierActiveHoldMs: 1_000,
  sendErrorHoldMs: 1_000,
  sendErrorHoldMaxMs: 30_000,
});

export interface UplinkMonitorDeps {
  readonly log: Logger;
  readonly io?: MonitorIo;
  readonly clock?: Clock;
  /**
   * True when the uplinks carried traffic since the previous call (asked once per carrier read):
   * picks the fast carrier cadence. Absent: always the fast one.
   */
  readonly activity?: () => boolean;
}

export interface MonitorStats {
  readonly events: number;
  readonly ignoredLines: number;
  readonly restarts: number;
  readonly resyncs: number;
  readonly bufferOverflows: number;
  /** Reads of the carrier bits (0 while carrier polling is off). */
  readonly carrierReads: number;
  /** Times the carrier bit changed the facts before netlink did. */
  readonly carrierOverrides: number;
  /** Send errors the data plane reported (ENETDOWN, ENETUNREACH, EHOSTUNREACH), and the holds ENETDOWN began. */
  readonly sendErrors: number;
  readonly sendErrorHolds: number;
}

export type FactsListener = (uplink: string, facts: UplinkFacts) => void;

export class UplinkMonitor {
  private readonly opts: UplinkMonitorOptions;
  private readonly io: MonitorIo;
  private readonly clock: Clock;
  private readonly states = new Map<string, UplinkState>();
  private readonly current = new Map<string, UplinkFacts>();
  private readonly listeners: FactsListener[] = [];
  private child: MonitorChild | null = null;
  private childStartedAt = 0;
  private failures = 0;
  private running = false;
  private restartTimer: NodeJS.Timeout | null = null;
  private resyncTimer: NodeJS.Timeout | null = null;
  /** Non-null while a snapshot is in flight: the events to replay on top of it. */
  private replay: MonitorEvent[] | null = null;
  private replayOverflow = false;
  private snapshotting: Promise<void> | null = null;
  /** Set once the first snapshot is in; before, events only wait for replay. */
  private primed = false;
  private resyncAgain = false;
  private counters = { events: 0, ignoredLines: 0, restarts: 0, resyncs: 0, bufferOverflows: 0, carrierReads: 0, carrierOverrides: 0, sendErrors: 0, sendErrorHolds: 0 };
  /** Per uplink (by index): the open carrier bit, null while none is open. */
  private readonly readers: (CarrierReader | null)[];
  /** Per uplink: the two carrier events and the read callback, made once (a poll allocates only the read request). */
  private readonly carrierOn: CarrierEvent[];
  private readonly carrierOff: CarrierEvent[];
  private readonly onCarrier: ((c: Carrier, err?: Error) => void)[];
  /** Per uplink: a read was asked for while one was in flight; read again when it is done. */
  private readonly readAgain: boolean[];
  /** Per uplink: the last bit read, and the snapshot epoch it was read in (a snapshot begins a new one). */
  private readonly lastBit: boolean[];
  private readonly bitEpoch: number[];
  private epoch = 0;
  /** On once the first snapshot showed sysfs is this namespace's (enableCarrier). */
  private carrierPolling = false;
  private pollTimer: NodeJS.Timeout | null = null;
  private lastActiveAt = -Infinity;
  private readonly holds = new Map<string, SendErrorHold>();
  private readonly holdTimers = new Map<string, NodeJS.Timeout>();
  private lastErrorResyncAt = -Infinity;

  constructor(
    private readonly uplinks: readonly WatchedUplink[],
    private readonly deps: UplinkMonitorDeps,
    opts: Partial<UplinkMonitorOptions> = {},
  ) {
    this.opts = { ...MONITOR_DEFAULTS, ...opts };
    this.io = deps.io ?? systemMonitorIo(this.opts.maxLineBytes);
    this.clock = deps.clock ?? systemClock;
    for (const u of uplinks) {
      this.states.set(u.name, EMPTY_UPLINK_STATE);
      this.current.set(u.name, factsOf(u, EMPTY_UPLINK_STATE));
    }
    this.readers = uplinks.map(() => null);
    this.carrierOn = uplinks.map((u) => Object.freeze({ kind: 'carrier' as const, name: u.interface, carrier: true }));
    this.carrierOff = uplinks.map((u) => Object.freeze({ kind: 'carrier' as const, name: u.interface, carrier: false }));
    this.onCarrier = uplinks.map((_, i) => (c: Carrier, err?: Error) => this.carrierRead(i, c, err));
    this.readAgain = uplinks.map(() => false);
    this.lastBit = uplinks.map(() => false);
    this.bitEpoch = uplinks.map(() => -1);
  }

  /** Resolves once the first snapshot is in: facts() is right from then on. Listeners hear only later changes. */
  async start(): Promise<void> {
    if (this.running) return;
    this.running = true;
    try {
      const child = this.spawnChild();
      if (child.pid !== undefined && !(await this.io.subscribed(child.pid, this.opts.readyTimeoutMs))) {
        this.deps.log.debug({ module: 'monitor' }, 'ip monitor subscription not seen in /proc; snapshotting anyway');
      }
      await this.resync(false);
    } catch (e) {
      await this.stop();
      throw e;
    }
  }

  async stop(): Promise<void> {
    this.running = false;
    if (this.restartTimer !== null) clearTimeout(this.restartTimer);
    if (this.resyncTimer !== null) clearTimeout(this.resyncTimer);
    if (this.pollTimer !== null) clearTimeout(this.pollTimer);
    this.restartTimer = this.resyncTimer = this.pollTimer = null;
    for (const t of this.holdTimers.values()) clearTimeout(t);
    this.holdTimers.clear();
    this.closeReaders();
    this.carrierPolling = false;
    const c = this.child;
    this.child = null;
    if (c === null) return;
    c.kill('SIGTERM');
    let timer: NodeJS.Timeout | undefined;
    const killed = await Promise.race([c.exited.then(() => true), new Promise<boolean>((r) => (timer = setTimeout(() => r(false), 1_000)))]);
    clearTimeout(timer);
    if (!killed) {
      c.kill('SIGKILL');
      await c.exited;
    }
  }

  facts(name: string): UplinkFacts {
    const f = this.current.get(name);
    if (f === undefined) throw new Error(`uplink monitor: no uplink named "${name}"`);
    return f;
  }

  /** Called with the uplink's name and new facts on every change; returns an unsubscribe function. */
  onChange(cb: FactsListener): () => void {
    this.listeners.push(cb);
    return () => {
      const i = this.listeners.indexOf(cb);
      if (i >= 0) this.listeners.splice(i, 1);
    };
  }

  /** The running `ip monitor` process (tests use it to kill it). */
  get childPid(): number | undefined {
    return this.child?.pid;
  }

  stats(): MonitorStats {
    return { ...this.counters };
  }

  /** True while the carrier bits are read (off: netlink only, e.g. sysfs is another namespace's). */
  get carrierPollingOn(): boolean {
    return this.carrierPolling;
  }

  /**
   * The data plane could not send on this uplink (errno ENETDOWN, ENETUNREACH or EHOSTUNREACH):
   * look again now (carrier bit, then a resync), and after ENETDOWN hold the uplink unusable
   * (signals.ts holdAfterSendError has the rule). Listeners hear any change from this call.
   */
  sendError(name: string, errno: number): void {
    const i = this.uplinks.findIndex((u) => u.name === name);
    if (i < 0 || !this.running || !this.primed) return;
    const u = this.uplinks[i];
    this.counters.sendErrors++;
    const now = this.clock.now();
    const prev = this.holds.get(name);
    const hold = holdAfterSendError(prev, errno, now, this.opts);
    if (hold !== undefined && hold !== prev) {
      this.holds.set(name, hold);
      this.counters.sendErrorHolds++;
      this.deps.log.warn({ module: 'monitor', uplink: name, errno, holdMs: hold.until - now }, 'uplink send failed: network down; holding the uplink unusable');
      const old = this.holdTimers.get(name);
      if (old !== undefined) clearTimeout(old);
      this.holdTimers.set(
        name,
        setTimeout(() => {
          this.holdTimers.delete(name);
          // Ended by this timer, not by comparing clocks (a timer may fire a fraction of a ms early).
          this.holds.set(name, { ...hold, until: Math.min(hold.until, this.clock.now()) });
          this.publish(u, this.states.get(name) ?? EMPTY_UPLINK_STATE, true);
          this.readCarrier(i);
        }, hold.until - now),
      );
    }
    this.publish(u, this.states.get(name) ?? EMPTY_UPLINK_STATE, true);
    this.readCarrier(i);
    if (this.snapshotting === null && this.resyncTimer === null && now - this.lastErrorResyncAt >= this.opts.resyncDelayMs) {
      this.lastErrorResyncAt = now;
      this.resync(true).catch((e: unknown) => this.deps.log.warn({ module: 'monitor', err: e }, 'uplink monitor resync failed'));
    } else this.scheduleResync();
  }

  private spawnChild(): MonitorChild {
    const child: MonitorChild = this.io.spawnMonitor({
      line: (l) => {
        if (this.child === child) this.onLine(l);
      },
      exit: (why) => {
        if (this.child === child) this.onExit(why);
      },
    });
    this.child = child;
    this.childStartedAt = this.clock.now();
    return child;
  }

  private onLine(line: string): void {
    const ev = parseMonitorLine(line);
    if (ev === null) {
      if (line.trim() !== '') this.counters.ignoredLines++;
      return;
    }
    this.counters.events++;
    if (this.replay !== null) {
      if (this.replay.length < this.opts.maxBufferedEvents) this.replay.push(ev);
      else if (!this.replayOverflow) {
        this.replayOverflow = true;
        this.counters.bufferOverflows++;
      }
    }
    if (!this.primed) return;
    for (let i = 0; i < this.uplinks.length; i++) {
      const u = this.uplinks[i];
      const s = this.states.get(u.name) ?? EMPTY_UPLINK_STATE;
      const next = reduce(u, s, ev);
      if (next !== s) {
        this.states.set(u.name, next);
        this.publish(u, next, true);
      }
      // Netlink's word on a link may be late: the bit, read now, has the last one.
      if (ev.kind === 'link' && ev.name === u.interface) this.readCarrier(i);
    }
    if (this.watchedChangeNeedsResync(ev)) this.scheduleResync();
  }

  private watchedChangeNeedsResync(ev: MonitorEvent): boolean {
    if (ev.kind === 'link') return this.uplinks.some((u) => u.interface === ev.name);
    if (ev.kind === 'address') return ev.deleted && this.uplinks.some((u) => u.interface === ev.dev);
    return false;
  }

  private publish(u: WatchedUplink, s: UplinkState, notify: boolean): void {
    let f = factsOf(u, s);
    if (f.usable && held(this.holds.get(u.name), this.clock.now())) f = Object.freeze({ ...f, usable: false });
    const prev = this.current.get(u.name);
    if (prev !== undefined && sameFacts(prev, f)) return;
    this.current.set(u.name, f);
    if (!notify) return;
    for (const cb of this.listeners.slice()) {
      try {
        cb(u.name, f);
      } catch (e) {
        this.deps.log.error({ module: 'monitor', uplink: u.name, err: e }, 'uplink monitor listener threw');
      }
    }
  }

  private scheduleResync(): void {
    if (this.resyncTimer !== null || !this.running) return;
    this.resyncTimer = setTimeout(() => {
      this.resyncTimer = null;
      this.resync(true).catch((e: unknown) => this.deps.log.warn({ module: 'monitor', err: e }, 'uplink monitor resync failed'));
    }, this.opts.resyncDelayMs);
  }

  /** Snapshot + replay of the events that arrived during it. One at a time; a request meanwhile runs once after. */
  private async resync(notify: boolean): Promise<void> {
    if (this.snapshotting !== null) {
      this.resyncAgain = true;
      return this.snapshotting;
    }
    this.snapshotting = (async () => {
      do {
        this.resyncAgain = false;
        this.replay = [];
        this.replayOverflow = false;
        const epoch = ++this.epoch;
        try {
          const out = await this.io.ipBatch(SNAPSHOT_OPTIONS, SNAPSHOT_COMMANDS);
          if (!this.running) return;
          const snap = parseBatchSnapshot(out);
          if (!snap.ok) throw new SystemError('NETCONFIG_FAILED', `uplink monitor: cannot read the snapshot: ${snap.reason}`, 'check that iproute2 (6.1 or later) is installed');
          this.counters.resyncs++;
          const replay = this.replay;
          if (!this.primed) this.enableCarrier(snap.events);
          for (let i = 0; i < this.uplinks.length; i++) {
            const u = this.uplinks[i];
            let s = fold(u, replay, fold(u, snap.events));
            // A bit read since the snapshot began is as new as it: keep it (else a flap until the next read).
            if (this.carrierPolling && this.bitEpoch[i] === epoch) s = reduce(u, s, this.lastBit[i] ? this.carrierOn[i] : this.carrierOff[i]);
            this.states.set(u.name, s);
            this.publish(u, s, notify);
            this.readCarrier(i);
          }
          this.primed = true;
          if (this.replayOverflow) this.resyncAgain = true;
        } finally {
          this.replay = null;
        }
      } while (this.resyncAgain && this.running);
    })();
    try {
      await this.snapshotting;
    } finally {
      this.snapshotting = null;
    }
  }

  /**
   * Carrier polling starts only if sysfs shows this process's network namespace: every watched
   * interface that netlink shows must be in /sys/class/net with the same ifindex. A sysfs mounted for
   * another namespace (the agent entered one with setns() but no `ip netns exec`) fails that (unless
   * names and indexes happen to match there too), and the monitor keeps to netlink, with one warning.
   */
  private enableCarrier(snapshot: readonly MonitorEvent[]): void {
    const io = this.io;
    if (this.opts.carrierPollMs <= 0 || io.openCarrier === undefined) return;
    for (let i = 0; i < this.uplinks.length; i++) {
      const u = this.uplinks[i];
      const link = snapshot.find((e) => e.kind === 'link' && !e.deleted && e.name === u.interface);
      if (link === undefined || link.kind !== 'link') continue;
      let r: CarrierReader | null = null;
      let why: string;
      try {
        r = io.openCarrier(u.interface);
        why = r === null ? 'not in /sys/class/net' : `ifindex ${r.ifindex} in /sys/class/net, ${link.ifindex} in netlink`;
      } catch (e) {
        why = e instanceof Error ? e.message : String(e);
      }
      if (r === null || r.ifindex !== link.ifindex) {
        r?.close();
        this.closeReaders();
        this.deps.log.warn(
          { module: 'monitor', interface: u.interface, why },
          "sysfs does not show this network namespace's interfaces: carrier from netlink only, which can be up to 1 s late (start the agent with `ip netns exec`, which mounts the namespace's sysfs)",
        );
        return;
      }
      this.readers[i] = r;
    }
    this.carrierPolling = true;
    this.schedulePoll();
  }

  private closeReaders(): void {
    for (let i = 0; i < this.readers.length; i++) {
      this.readers[i]?.close();
      this.readers[i] = null;
    }
  }

  private schedulePoll(): void {
    if (!this.running || !this.carrierPolling) return;
    const now = this.clock.now();
    if (this.deps.activity === undefined || this.deps.activity()) this.lastActiveAt = now;
    this.pollTimer = setTimeout(this.pollTick, carrierPollDelay(this.lastActiveAt, now, this.opts));
  }

  private readonly pollTick = (): void => {
    this.pollTimer = null;
    if (!this.running) return;
    for (let i = 0; i < this.uplinks.length; i++) this.readCarrier(i);
    this.schedulePoll();
  };

  /**
   * Asks for a read of uplink i's carrier bit (off the event loop, io.ts); carrierRead() folds it in.
   * Only while netlink shows the interface admin-up: creation, deletion and admin state reach netlink
   * at once, only the carrier can be late there. One that sysfs no longer has is gone: no carrier.
   */
  private readCarrier(i: number): void {
    if (!this.carrierPolling) return;
    const s = this.states.get(this.uplinks[i].name);
    if (s === undefined || s.link === null || !s.link.adminUp) return;
    let r = this.readers[i];
    if (r === null) {
      try {
        r = this.io.openCarrier?.(this.uplinks[i].interface) ?? null;
      } catch (e) {
        this.stopCarrier(i, e);
        return;
      }
      if (r === null) {
        this.foldCarrier(i, false);
        return;
      }
      this.readers[i] = r;
    }
    // In flight already: that read may predate what made us ask, so read once more after it.
    if (!r.read(this.onCarrier[i])) this.readAgain[i] = true;
  }

  private carrierRead(i: number, c: Carrier, err: Error | undefined): void {
    this.counters.carrierReads++;
    if (!this.running || !this.carrierPolling) return;
    if (err !== undefined) {
      this.stopCarrier(i, err);
      return;
    }
    if (c === Carrier.Gone) {
      // The device went away under the open fd; a new one of the same name may be there already.
      this.readers[i]?.close();
      this.readers[i] = null;
      this.readAgain[i] = false;
      this.readCarrier(i);
      return;
    }
    this.foldCarrier(i, c === Carrier.On);
    if (this.readAgain[i]) {
      this.readAgain[i] = false;
      this.readCarrier(i);
    }
  }

  /** The bit over netlink's word: a change is published at once; netlink saying the same later is none. */
  private foldCarrier(i: number, carrier: boolean): void {
    this.lastBit[i] = carrier;
    this.bitEpoch[i] = this.epoch;
    const u = this.uplinks[i];
    const s = this.states.get(u.name) ?? EMPTY_UPLINK_STATE;
    const next = reduce(u, s, carrier ? this.carrierOn[i] : this.carrierOff[i]);
    if (next === s) return;
    this.counters.carrierOverrides++;
    this.states.set(u.name, next);
    this.publish(u, next, true);
  }

  private stopCarrier(i: number, e: unknown): void {
    this.carrierPolling = false;
    this.closeReaders();
    this.deps.log.warn({ module: 'monitor', interface: this.uplinks[i].interface, err: e }, 'cannot read the carrier bit: carrier from netlink only from now on');
  }

  private onExit(why: string): void {
    this.child = null;
    if (!this.running) return;
    if (this.clock.now() - this.childStartedAt >= this.opts.stableAfterMs) this.failures = 0;
    const delay = Math.min(this.opts.restartMaxMs, this.opts.restartMinMs * 2 ** Math.min(this.failures, 20));
    this.failures++;
    this.counters.restarts++;
    this.deps.log.warn({ module: 'monitor', why, restartInMs: delay, restarts: this.counters.restarts }, 'ip monitor exited; restarting it');
    this.restartTimer = setTimeout(() => {
      this.restartTimer = null;
      if (!this.running) return;
      const child = this.spawnChild();
      const ready = child.pid === undefined ? Promise.resolve(false) : this.io.subscribed(child.pid, this.opts.readyTimeoutMs);
      ready
        .then(() => (this.running && this.child === child ? this.resync(true) : undefined))
        .catch((e: unknown) => {
          this.deps.log.warn({ module: 'monitor', err: e }, 'uplink monitor resync after restart failed');
          this.scheduleResync();
        });
    }, delay);
  }
}
