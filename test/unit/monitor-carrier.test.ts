/**
 * The signals that come before netlink: the carrier bit read from sysfs (folded over netlink's
 * possibly linkwatch-delayed word), and send errors from the data plane. The monitor's shell runs on
 * a fake `ip` and a fake carrier reader, with fake timers and a manual clock moved together.
 */
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { Carrier, type CarrierReader, type MonitorChild, type MonitorHandlers, type MonitorIo } from '../../agent/uplinks/monitor/io.ts';
import { UplinkMonitor, MONITOR_DEFAULTS } from '../../agent/uplinks/monitor/monitor.ts';
import { parseMonitorLine } from '../../agent/uplinks/monitor/parse.ts';
import { factsOf, reduce, EMPTY_UPLINK_STATE } from '../../agent/uplinks/monitor/reduce.ts';
import { carrierPollDelay, EHOSTUNREACH, ENETDOWN, ENETUNREACH, held, holdAfterSendError } from '../../agent/uplinks/monitor/signals.ts';
import type { LinkEvent, UplinkFacts, WatchedUplink } from '../../agent/uplinks/monitor/types.ts';
import { createInside } from '../../agent/dataplane/inside.ts';
import { DropCounters } from '../../agent/dataplane/drops.ts';
import { MapCache, boundLocator, newTraffic, type MapEntry } from '../../agent/mapcache/cache.ts';
import { hostIdBytes } from '../../shared/ids.ts';
import type { UdpBatchSocket, UdpStats } from '../../shared/udp/socket.ts';
import { ManualClock } from '../../shared/clock.ts';
import { silentLogger, type Logger } from '../../shared/log.ts';
import { constants } from 'node:os';

const FIXTURES = join(dirname(fileURLToPath(import.meta.url)), '..', 'fixtures', 'ip-monitor');
const fixture = (name: string) => readFileSync(join(FIXTURES, name), 'utf8');
const [NETLINK_DOWN, NETLINK_UP] = fixture('carrier-loss.txt')
  .split('\n')
  .filter((l) => l.trim() !== '');

const A: WatchedUplink = { name: 'a', interface: 'eth-a', locator: '192.0.2.1', gateway: '192.0.2.2', table: 100 };
const B: WatchedUplink = { name: 'b', interface: 'eth-b', locator: '2001:db8:b::1', gateway: '2001:db8:b::2' };
const USABLE: UplinkFacts = { carrier: true, adminUp: true, hasAddress: true, hasRoute: true, usable: true };
const NO_CARRIER: UplinkFacts = { ...USABLE, carrier: false, usable: false };
const OPTS = { carrierPollMs: 5, carrierIdlePollMs: 100, carrierActiveHoldMs: 1_000, sendErrorHoldMs: 1_000, sendErrorHoldMaxMs: 30_000 };

describe('reduce: the carrier bit over netlink', () => {
  const link = (carrier: boolean, adminUp = true): LinkEvent => ({ kind: 'link', deleted: false, ifindex: 2, name: 'eth-a', adminUp, carrier });
  const up = reduce(A, EMPTY_UPLINK_STATE, link(true));

  it('changes the carrier at once, and netlink saying the same later is no change', () => {
    const lost = reduce(A, up, { kind: 'carrier', name: 'eth-a', carrier: false });
    expect(lost).not.toBe(up);
    expect(factsOf(A, lost).carrier).toBe(false);
    expect(reduce(A, lost, link(false))).toBe(lost);
    expect(reduce(A, lost, { kind: 'carrier', name: 'eth-a', carrier: false })).toBe(lost);
  });

  it('speaks only of carrier: nothing for another interface, a link netlink does not know, or one admin-down', () => {
    expect(reduce(A, up, { kind: 'carrier', name: 'eth-b', carrier: false })).toBe(up);
    expect(reduce(A, EMPTY_UPLINK_STATE, { kind: 'carrier', name: 'eth-a', carrier: true })).toBe(EMPTY_UPLINK_STATE);
    const down = reduce(A, up, link(false, false));
    expect(reduce(A, down, { kind: 'carrier', name: 'eth-a', carrier: true })).toBe(down);
  });
});

describe('signals.ts decisions', () => {
  it('reads the carrier every 5 ms while traffic was seen in the last second, else every 100 ms', () => {
    expect(carrierPollDelay(1_000, 1_000, OPTS)).toBe(5);
    expect(carrierPollDelay(1_000, 1_999, OPTS)).toBe(5);
    expect(carrierPollDelay(1_000, 2_000, OPTS)).toBe(100);
    expect(carrierPollDelay(-Infinity, 0, OPTS)).toBe(100);
  });

  it('holds an uplink after ENETDOWN only, does not extend a hold, and doubles holds that follow each other', () => {
    expect(holdAfterSendError(undefined, ENETUNREACH, 0, OPTS)).toBeUndefined();
    expect(holdAfterSendError(undefined, EHOSTUNREACH, 0, OPTS)).toBeUndefined();
    const h1 = holdAfterSendError(undefined, ENETDOWN, 0, OPTS);
    expect(h1).toEqual({ until: 1_000, strikes: 0 });
    expect(held(h1, 999)).toBe(true);
    expect(held(h1, 1_000)).toBe(false);
    expect(holdAfterSendError(h1, ENETDOWN, 500, OPTS)).toBe(h1);
    const h2 = holdAfterSendError(h1, ENETDOWN, 1_200, OPTS);
    expect(h2).toEqual({ until: 3_200, strikes: 1 });
    // Holds in a row grow to sendErrorHoldMaxMs, no further.
    let h = h2;
    let t = 0;
    for (let i = 0; i < 10 && h !== undefined; i++) {
      t = h.until + 1;
      h = holdAfterSendError(h, ENETDOWN, t, OPTS);
    }
    expect(h?.strikes).toBe(11);
    expect((h?.until ?? 0) - t).toBe(30_000);
    // Quiet for longer than the longest hold: back to the first.
    expect(holdAfterSendError(h2, ENETDOWN, 3_200 + 30_000, OPTS)).toEqual({ until: 34_200, strikes: 0 });
  });

  it('takes its errno numbers from the system', () => {
    expect([ENETDOWN, ENETUNREACH, EHOSTUNREACH]).toEqual([constants.errno.ENETDOWN, constants.errno.ENETUNREACH, constants.errno.EHOSTUNREACH]);
  });
});

// The shell.

class FakeReader implements CarrierReader {
  reads = 0;
  closed = false;
  constructor(
    readonly ifindex: number,
    public value: Carrier,
  ) {}
  private inFlight = false;
  /** Answers a microtask later (the real one answers from libuv's thread pool). */
  read(done: (c: Carrier) => void): boolean {
    if (this.inFlight) return false;
    this.inFlight = true;
    this.reads++;
    queueMicrotask(() => {
      this.inFlight = false;
      done(this.value);
    });
    return true;
  }
  close(): void {
    this.closed = true;
  }
}

class FakeIo implements MonitorIo {
  child: { handlers: MonitorHandlers } | null = null;
  snapshots = 0;
  /** What sysfs shows: interface → reader (null: no such device). */
  sysfs = new Map<string, FakeReader | null>([
    ['eth-a', new FakeReader(2, Carrier.On)],
    ['eth-b', new FakeReader(3, Carrier.On)],
  ]);
  opens: string[] = [];
  spawnMonitor(handlers: MonitorHandlers): MonitorChild {
    this.child = { handlers };
    let done: () => void = () => {};
    const exited = new Promise<void>((r) => (done = r));
    return { pid: 1000, exited, kill: () => done() };
  }
  async subscribed(): Promise<boolean> {
    return true;
  }
  async ipBatch(): Promise<string> {
    this.snapshots++;
    return ['snapshot-link.json', 'snapshot-addr.json', 'snapshot-route4.json', 'snapshot-route6.json'].map((f) => `${fixture(f).trim()}\n`).join('');
  }
  openCarrier(dev: string): CarrierReader | null {
    this.opens.push(dev);
    return this.sysfs.get(dev) ?? null;
  }
  emit(line: string): void {
    this.child?.handlers.line(line);
  }
  reader(dev: string): FakeReader {
    const r = this.sysfs.get(dev);
    if (r === undefined || r === null) throw new Error(`no fake reader for ${dev}`);
    return r;
  }
}

function recordingLog(): { log: Logger; warnings: string[] } {
  const warnings: string[] = [];
  const log = { ...silentLogger, warn: (_o: unknown, msg?: string) => void warnings.push(msg ?? '') } as unknown as Logger;
  return { log, warnings };
}

describe('UplinkMonitor: carrier polling (fake sysfs, manual clock)', () => {
  let clock: ManualClock;
  let monitors: UplinkMonitor[] = [];
  beforeEach(() => {
    vi.useFakeTimers();
    clock = new ManualClock(10_000);
  });
  afterEach(async () => {
    for (const m of monitors) await m.stop();
    monitors = [];
    vi.useRealTimers();
  });

  /** Moves the clock and the timers together, 1 ms at a time. */
  async function tick(ms: number): Promise<void> {
    for (let i = 0; i < ms; i++) {
      clock.advance(1);
      await vi.advanceTimersByTimeAsync(1);
    }
  }

  async function started(opts: { activity?: () => boolean; log?: Logger; io?: FakeIo; uplinks?: WatchedUplink[] } = {}) {
    const io = opts.io ?? new FakeIo();
    const m = new UplinkMonitor(opts.uplinks ?? [A, B], { log: opts.log ?? silentLogger, io, clock, activity: opts.activity });
    monitors.push(m);
    const seen: [string, UplinkFacts, number][] = [];
    m.onChange((u, f) => seen.push([u, f, clock.now()]));
    await m.start();
    return { io, m, seen };
  }

  it('reads every 5 ms while the uplinks carry traffic, every 100 ms once they were quiet for a second', async () => {
    let traffic = true;
    const { io, m } = await started({ activity: () => traffic });
    const a = io.reader('eth-a');
    expect(m.carrierPollingOn).toBe(true);
    const r0 = a.reads;
    await tick(100);
    expect(a.reads - r0).toBeGreaterThanOrEqual(19);
    expect(a.reads - r0).toBeLessThanOrEqual(21);
    traffic = false;
    await tick(1_000); // the fast cadence holds for carrierActiveHoldMs after the last traffic
    const r1 = a.reads;
    await tick(1_000);
    expect(a.reads - r1).toBeGreaterThanOrEqual(9);
    expect(a.reads - r1).toBeLessThanOrEqual(11);
    // Traffic again: fast within one idle interval.
    traffic = true;
    await tick(100);
    const r2 = a.reads;
    await tick(100);
    expect(a.reads - r2).toBeGreaterThanOrEqual(19);
    expect(m.stats().carrierReads).toBeGreaterThan(0);
  });

  it('reports a carrier loss from the bit within one read, before netlink; netlink agreeing later is no second change', async () => {
    const { io, m, seen } = await started();
    const t0 = clock.now();
    io.reader('eth-a').value = Carrier.Off;
    await tick(5);
    expect(seen).toEqual([['a', NO_CARRIER, expect.any(Number)]]);
    expect(seen[0][2] - t0).toBeLessThanOrEqual(5);
    expect(m.facts('a')).toEqual(NO_CARRIER);
    expect(m.stats().carrierOverrides).toBe(1);
    io.emit(NETLINK_DOWN); // linkwatch, a second late
    await tick(20);
    expect(seen).toHaveLength(1);
    // Back: the bit first again, then netlink.
    io.reader('eth-a').value = Carrier.On;
    await tick(5);
    expect(seen[1]).toEqual(['a', USABLE, expect.any(Number)]);
    io.emit(NETLINK_UP);
    await tick(20);
    expect(seen).toHaveLength(2);
    expect(m.facts('b')).toEqual(USABLE);
  });

  it('keeps the bit over a netlink event that disagrees with it (a late report of an older state)', async () => {
    const { io, m, seen } = await started();
    io.reader('eth-a').value = Carrier.Off;
    io.emit(NETLINK_UP); // netlink says carrier; the bit, read right after the event, says no
    await Promise.resolve();
    expect(seen).toEqual([['a', NO_CARRIER, expect.any(Number)]]);
    expect(m.facts('a')).toEqual(NO_CARRIER);
  });

  it('without carrier polling, a carrier loss waits for netlink (the mechanism above is what makes it fast)', async () => {
    const io = new FakeIo();
    const m = new UplinkMonitor([A], { log: silentLogger, io, clock }, { carrierPollMs: 0 });
    monitors.push(m);
    const seen: string[] = [];
    m.onChange((u) => seen.push(u));
    await m.start();
    io.reader('eth-a').value = Carrier.Off;
    await tick(200);
    expect(seen).toEqual([]);
    expect(io.reader('eth-a').reads).toBe(0);
    io.emit(NETLINK_DOWN);
    expect(seen).toEqual(['a']);
  });

  it('a device gone from sysfs has no carrier; one back under the same name is opened again', async () => {
    const { io, m } = await started();
    io.reader('eth-a').value = Carrier.Gone;
    io.sysfs.set('eth-a', null);
    await tick(5);
    expect(m.facts('a').carrier).toBe(false);
    io.sysfs.set('eth-a', new FakeReader(2, Carrier.On));
    await tick(5);
    expect(m.facts('a')).toEqual(USABLE);
  });

  it('falls back to netlink only, with one warning, when sysfs is another namespace`s (ifindex differs)', async () => {
    const io = new FakeIo();
    io.sysfs.set('eth-b', new FakeReader(7, Carrier.On));
    const { log, warnings } = recordingLog();
    const { m } = await started({ io, log });
    expect(m.carrierPollingOn).toBe(false);
    expect(warnings).toEqual([expect.stringMatching(/sysfs does not show this network namespace's interfaces/)]);
    expect(io.reader('eth-a').closed).toBe(true);
    const reads = io.reader('eth-a').reads;
    await tick(200);
    expect(io.reader('eth-a').reads).toBe(reads);
    const io2 = new FakeIo();
    io2.sysfs.set('eth-a', null);
    const second = await started({ io: io2, log });
    expect(second.m.carrierPollingOn).toBe(false);
    expect(warnings).toHaveLength(2);
  });

  it('ENETDOWN: unusable in the same call, a resync at once, usable again only after the hold and with the facts', async () => {
    const { log, warnings } = recordingLog();
    const { io, m, seen } = await started({ log });
    const snaps = io.snapshots;
    await Promise.resolve(); // the start's reads are done
    const reads = io.reader('eth-a').reads;
    m.sendError('a', ENETDOWN);
    expect(seen).toEqual([['a', { ...USABLE, usable: false }, clock.now()]]);
    expect(io.reader('eth-a').reads).toBe(reads + 1); // looked again at once
    expect(io.snapshots).toBe(snaps + 1);
    expect(warnings).toHaveLength(1);
    // More errors from batches already queued: no new hold, no new announcement.
    m.sendError('a', ENETDOWN);
    await tick(999);
    expect(seen).toHaveLength(1);
    expect(m.facts('a').usable).toBe(false);
    await tick(1);
    expect(seen[1]).toEqual(['a', USABLE, clock.now()]);
    expect(m.stats()).toMatchObject({ sendErrors: 2, sendErrorHolds: 1 });
    // A second ENETDOWN soon after: a hold twice as long.
    m.sendError('a', ENETDOWN);
    await tick(1_999);
    expect(m.facts('a').usable).toBe(false);
    await tick(1);
    expect(m.facts('a').usable).toBe(true);
    expect(m.stats().sendErrorHolds).toBe(2);
  });

  it('ENETDOWN on an uplink the facts call unusable when the hold ends keeps it out', async () => {
    const { io, m } = await started();
    m.sendError('a', ENETDOWN);
    io.reader('eth-a').value = Carrier.Off;
    await tick(1_000);
    expect(m.facts('a')).toEqual(NO_CARRIER);
  });

  it('ENETUNREACH / EHOSTUNREACH look again (carrier read, resync) but hold nothing', async () => {
    const { io, m, seen } = await started();
    const snaps = io.snapshots;
    m.sendError('b', ENETUNREACH);
    expect(seen).toEqual([]);
    expect(io.snapshots).toBe(snaps + 1);
    io.reader('eth-b').value = Carrier.Off;
    m.sendError('b', EHOSTUNREACH); // the read it asks for finds the loss, before any poll
    await Promise.resolve();
    expect(seen).toEqual([['b', NO_CARRIER, clock.now()]]);
    // Resyncs after send errors are spaced by resyncDelayMs, however many errors come.
    for (let i = 0; i < 50; i++) m.sendError('b', ENETUNREACH);
    await tick(MONITOR_DEFAULTS.resyncDelayMs + 5);
    expect(io.snapshots).toBeLessThanOrEqual(snaps + 2);
    expect(m.stats().sendErrorHolds).toBe(0);
  });
});

describe('inside: send errors reach the control plane', () => {
  const ID = 'fd00:1::2';
  function socket(fail: { errno: number } | null, sentLog: number[]): UdpBatchSocket {
    const stats: { -readonly [K in keyof UdpStats]: UdpStats[K] } = { rxPackets: 0, rxBatches: 0, txPackets: 0, sendErrors: 0, lastSendErrno: 0, rxTruncated: 0, rxErrors: 0, gso: false, gsoMessages: 0, gro: false, groMessages: 0, callbackErrors: 0 };
    const s = {
      family: 4 as const,
      localAddress: '192.0.2.1',
      localPort: 4341,
      stride: 2048,
      start: () => undefined,
      send(_buf: Buffer, _o: Uint32Array, _l: Uint32Array, _a: Uint8Array, _p: Uint16Array, count: number) {
        sentLog.push(count);
        if (fail === null) return count;
        stats.lastSendErrno = fail.errno;
        return count - 1;
      },
      get stats() {
        return { ...stats };
      },
      close: () => undefined,
    };
    return s as unknown as UdpBatchSocket;
  }

  function run(errno: number | null): { calls: [number, number][]; sends: number[] } {
    const cache = new MapCache(16);
    const loc = boundLocator('198.51.100.1', 4341, 1, 1, true);
    const entry: MapEntry = { hostId: ID, id: hostIdBytes(ID), locators: [loc], path: { uplink: 1, locator: loc }, source: 'static', createdAt: 0, expiresAt: Infinity, seq: 0, group: [], publicKey: null, traffic: newTraffic() };
    cache.set(entry);
    const sends: number[] = [];
    const calls: [number, number][] = [];
    const ins = createInside(
      { instanceId: 1, offload: false, maxDatagram: 65_507, batchSize: 8, stride: 2048, headroom: 64, chunkPayload: 1400 },
      { cache, sockets: [socket(null, []), socket(errno === null ? null : { errno }, sends)], drops: new DropCounters(), onSendError: (u, e) => void calls.push([u, e]) },
    );
    const buf = Buffer.alloc(8 * 2048);
    const lengths = new Uint32Array(8);
    for (let i = 0; i < 4; i++) {
      const off = i * 2048 + 64;
      buf[off] = 0x60; // IPv6
      Buffer.from(hostIdBytes(ID)).copy(buf, off + 24);
      lengths[i] = 100;
    }
    ins.onBatch(buf, lengths, 4);
    ins.onBatch(buf, lengths, 4);
    return { calls, sends };
  }

  it('calls onSendError once per uplink and batch for ENETDOWN, ENETUNREACH, EHOSTUNREACH', () => {
    for (const errno of [ENETDOWN, ENETUNREACH, EHOSTUNREACH]) {
      const { calls, sends } = run(errno);
      expect(sends).toEqual([4, 4]);
      expect(calls).toEqual([
        [1, errno],
        [1, errno],
      ]);
    }
  });

  it('not for other errors, nor when every datagram went', () => {
    expect(run(constants.errno.EMSGSIZE).calls).toEqual([]);
    expect(run(null).calls).toEqual([]);
  });
});
