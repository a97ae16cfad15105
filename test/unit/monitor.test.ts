/**
 * The uplink monitor's pure parts on lines captured from `ip -o -N monitor link address route`
 * (test/fixtures/ip-monitor/, made by capture.sh there), and its shell with a fake MonitorIo.
 */
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { MonitorChild, MonitorHandlers, MonitorIo } from '../../agent/uplinks/monitor/io.ts';
import { UplinkMonitor } from '../../agent/uplinks/monitor/monitor.ts';
import { SNAPSHOT_COMMANDS, SNAPSHOT_OPTIONS, parseBatchSnapshot, parseMonitorLine, parseSnapshot } from '../../agent/uplinks/monitor/parse.ts';
import { EMPTY_UPLINK_STATE, factsOf, fold, reduce, type UplinkState } from '../../agent/uplinks/monitor/reduce.ts';
import { canonicalAddress } from '../../shared/address.ts';
import type { MonitorEvent, UplinkFacts, WatchedUplink } from '../../agent/uplinks/monitor/types.ts';
import { ManualClock } from '../../shared/clock.ts';
import { silentLogger } from '../../shared/log.ts';

const FIXTURES = join(dirname(fileURLToPath(import.meta.url)), '..', 'fixtures', 'ip-monitor');
const fixture = (name: string) => readFileSync(join(FIXTURES, name), 'utf8');
const lines = (name: string) => fixture(name).split('\n').filter((l) => l.trim() !== '');
const events = (name: string) => lines(name).map((l) => parseMonitorLine(l));

// The captured host: eth-a is uplink a (IPv4, policy table 100), eth-b uplink b (IPv6, main table via gateway).
const A: WatchedUplink = { name: 'a', interface: 'eth-a', locator: '192.0.2.1', gateway: '192.0.2.2', table: 100 };
const B: WatchedUplink = { name: 'b', interface: 'eth-b', locator: '2001:db8:b::1', gateway: '2001:db8:b::2' };
const A_MAIN: WatchedUplink = { name: 'a-main', interface: 'eth-a', locator: '192.0.2.1', gateway: '192.0.2.2' };

const USABLE: UplinkFacts = { carrier: true, adminUp: true, hasAddress: true, hasRoute: true, usable: true };

function snapshot(): MonitorEvent[] {
  const s = parseSnapshot({
    link: fixture('snapshot-link.json'),
    addr: fixture('snapshot-addr.json'),
    route4: fixture('snapshot-route4.json'),
    route6: fixture('snapshot-route6.json'),
  });
  if (!s.ok) throw new Error(s.reason);
  return s.events;
}

/** Facts after each event of a fixture, starting from the snapshot. */
function factsAlong(u: WatchedUplink, name: string): UplinkFacts[] {
  let s = fold(u, snapshot());
  const out: UplinkFacts[] = [];
  for (const ev of events(name)) {
    if (ev === null) throw new Error(`unparsed line in ${name}`);
    s = reduce(u, s, ev);
    out.push(factsOf(u, s));
  }
  return out;
}

describe('parseMonitorLine on captured lines', () => {
  it('reads carrier loss and its return (the far end of a veth set down and up)', () => {
    expect(events('carrier-loss.txt')).toEqual([
      { kind: 'link', deleted: false, ifindex: 2, name: 'eth-a', adminUp: true, carrier: false },
      { kind: 'link', deleted: false, ifindex: 2, name: 'eth-a', adminUp: true, carrier: true },
    ]);
  });

  it('reads IPv4 address removal and return, with the routes the kernel announces', () => {
    const ev = events('address-v4.txt');
    expect(ev[0]).toEqual({ kind: 'address', deleted: true, dev: 'eth-a', family: 4, address: '192.0.2.1', prefixLen: 26, usable: true });
    expect(ev[1]).toEqual({ kind: 'route', deleted: true, family: 4, table: 254, type: 'unicast', dst: '192.0.2.0/26', metric: 0, gateways: [], devs: ['eth-a'] });
    expect(ev[2]).toMatchObject({ kind: 'route', table: 255, type: 'broadcast' });
    expect(ev[3]).toMatchObject({ kind: 'route', table: 255, type: 'local', dst: '192.0.2.1' });
    expect(ev[4]).toMatchObject({ kind: 'address', deleted: false, address: '192.0.2.1' });
    expect(ev[8]).toEqual({ kind: 'route', deleted: false, family: 4, table: 100, type: 'unicast', dst: 'default', metric: 0, gateways: ['192.0.2.2'], devs: ['eth-a'] });
  });

  it('reads an IPv6 address as unusable while tentative', () => {
    const ev = events('address-v6.txt');
    expect(ev[0]).toEqual({ kind: 'address', deleted: true, dev: 'eth-b', family: 6, address: '2001:db8:b::1', prefixLen: 64, usable: true });
    expect(ev[4]).toMatchObject({ kind: 'address', deleted: false, usable: false });
    expect(ev[5]).toMatchObject({ kind: 'address', deleted: false, usable: true });
    expect(ev[7]).toEqual({ kind: 'route', deleted: false, family: 6, table: 254, type: 'unicast', dst: 'default', metric: 1024, gateways: ['2001:db8:b::2'], devs: ['eth-b'] });
  });

  it('reads route deletion, addition, replacement, multipath and typed routes', () => {
    const ev = events('route.txt');
    expect(ev[0]).toEqual({ kind: 'route', deleted: true, family: 4, table: 100, type: 'unicast', dst: 'default', metric: 0, gateways: ['192.0.2.2'], devs: ['eth-a'] });
    expect(ev[2]).toMatchObject({ deleted: true, family: 6, table: 254, dst: 'default', metric: 1024 });
    expect(ev[4]).toMatchObject({ deleted: false, table: 100, gateways: ['192.0.2.3'] });
    expect(ev[6]).toEqual({
      kind: 'route',
      deleted: false,
      family: 6,
      table: 254,
      type: 'unicast',
      dst: '2001:db8:ff::/48',
      metric: 1024,
      gateways: ['2001:db8:b::2', '2001:db8:b::3'],
      devs: ['eth-b', 'eth-b'],
    });
    expect(ev[7]).toEqual({ kind: 'route', deleted: false, family: 4, table: 254, type: 'blackhole', dst: '198.51.100.0/24', metric: 0, gateways: [], devs: [] });
  });

  it('reads admin down and the interface deleted (its peer gone)', () => {
    expect(events('admin-down.txt')[0]).toEqual({ kind: 'link', deleted: false, ifindex: 2, name: 'eth-a', adminUp: false, carrier: false });
    // Admin up before the carrier is seen: NO-CARRIER with LOWER_UP is still no carrier.
    expect(events('admin-down.txt')[5]).toEqual({ kind: 'link', deleted: false, ifindex: 2, name: 'eth-a', adminUp: true, carrier: false });
    const del = events('link-delete.txt');
    expect(del.at(-1)).toEqual({ kind: 'link', deleted: true, ifindex: 2, name: 'eth-a', adminUp: false, carrier: false });
  });

  it('parses every captured line', () => {
    for (const f of ['carrier-loss.txt', 'address-v4.txt', 'address-v6.txt', 'route.txt', 'admin-down.txt', 'link-delete.txt']) {
      for (const l of lines(f)) expect(parseMonitorLine(l), `${f}: ${l}`).not.toBeNull();
    }
  });

  it('accepts -ts timestamps and labels; ignores what is not link, address or route', () => {
    const plain = lines('carrier-loss.txt')[0];
    expect(parseMonitorLine(`[2026-11-25T18:29:25.359320] ${plain}`)).toEqual(parseMonitorLine(plain));
    expect(parseMonitorLine(`[LINK]${plain}`)).toEqual(parseMonitorLine(plain));
    expect(parseMonitorLine('Timestamp: Wed Nov 25 18:29:25 2026 359320 usec')).toBeNull();
    expect(parseMonitorLine('(192.0.2.1, 239.1.1.1)   Iif: eth-a      Oifs: eth-b')).toBeNull();
    expect(parseMonitorLine('100 via inet 192.0.2.2 dev eth-a')).toBeNull();
    expect(parseMonitorLine('')).toBeNull();
    expect(parseMonitorLine('garbage')).toBeNull();
    expect(parseMonitorLine('2: eth-a    inet ')).toBeNull();
    expect(parseMonitorLine('2: eth-a    inet 192.0.2.1/xx scope 0')).toBeNull();
  });

  it('reads named tables, IPv6 next hops of IPv4 routes and point-to-point addresses (forms not captured)', () => {
    expect(parseMonitorLine('default via 192.0.2.2 dev eth-a table main')).toMatchObject({ table: 254, family: 4 });
    expect(parseMonitorLine('default via inet6 fe80::1 dev eth-a proto static')).toMatchObject({ family: 4, gateways: ['fe80::1'] });
    expect(parseMonitorLine('unreachable default dev lo table 100 metric 1024 pref medium')).toMatchObject({ family: 6, type: 'unreachable', table: 100 });
    expect(parseMonitorLine('5: ppp0    inet 10.0.0.1 peer 10.0.0.2/32 scope global ppp0')).toEqual({
      kind: 'address',
      deleted: false,
      dev: 'ppp0',
      family: 4,
      address: '10.0.0.1',
      prefixLen: 32,
      usable: true,
    });
    expect(parseMonitorLine('7: eth0.100@eth0: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 state UP')).toMatchObject({ name: 'eth0.100', carrier: true });
  });
});

describe('parseSnapshot', () => {
  it('turns the JSON snapshot into the events that would have built it', () => {
    const ev = snapshot();
    expect(ev).toContainEqual({ kind: 'link', deleted: false, ifindex: 2, name: 'eth-a', adminUp: true, carrier: true });
    expect(ev).toContainEqual({ kind: 'address', deleted: false, dev: 'eth-b', family: 6, address: '2001:db8:b::1', prefixLen: 64, usable: true });
    expect(ev).toContainEqual({ kind: 'route', deleted: false, family: 4, table: 100, type: 'unicast', dst: 'default', metric: 0, gateways: ['192.0.2.2'], devs: ['eth-a'] });
    expect(ev).toContainEqual({ kind: 'route', deleted: false, family: 6, table: 254, type: 'unicast', dst: 'default', metric: 1024, gateways: ['2001:db8:b::2'], devs: ['eth-b'] });
    expect(ev).toContainEqual(expect.objectContaining({ kind: 'route', table: 255, type: 'local', dst: '192.0.2.1' }));
  });

  it('gives the same route keys as the monitor lines, so a snapshot event and a Deleted line cancel out', () => {
    let s = fold(A, snapshot());
    expect(s.routes).toHaveLength(1);
    s = reduce(A, s, events('route.txt')[0] as MonitorEvent); // Deleted default … table 100
    expect(s.routes).toEqual([]);
    let b = fold(B, snapshot());
    expect(b.routes).toHaveLength(1);
    b = reduce(B, b, events('route.txt')[2] as MonitorEvent); // Deleted default via 2001:db8:b::2
    expect(b.routes).toEqual([]);
  });

  it('reads multipath routes (nexthops) and says what is wrong with a bad one', () => {
    const r6 = JSON.stringify([{ dst: '2001:db8:ff::/48', metric: 1024, nexthops: [{ gateway: '2001:db8:b::2', dev: 'eth-b' }, { gateway: '2001:db8:b::3', dev: 'eth-b' }] }]);
    const s = parseSnapshot({ link: '[]', addr: '[]', route4: '', route6: r6 });
    expect(s).toEqual({ ok: true, events: [{ kind: 'route', deleted: false, family: 6, table: 254, type: 'unicast', dst: '2001:db8:ff::/48', metric: 1024, gateways: ['2001:db8:b::2', '2001:db8:b::3'], devs: ['eth-b', 'eth-b'] }] });
    const bad = parseSnapshot({ link: 'Object "monitor" is unknown', addr: '[]', route4: '[]', route6: '[]' });
    expect(bad.ok).toBe(false);
    expect(parseSnapshot({ link: '[{"ifname":3}]', addr: '[]', route4: '[]', route6: '[]' }).ok).toBe(false);
  });
});

describe('parseBatchSnapshot', () => {
  const batch = fixture('snapshot-batch.txt');
  const batchLines = batch.split('\n').slice(0, -1);
  const reason = (out: string) => {
    const r = parseBatchSnapshot(out);
    return r.ok ? 'ok' : r.reason;
  };
  // The batch fixture comes from a later run of capture.sh than snapshot-*.json: the veths' random
  // MACs, so the link-local addresses and their local routes, differ; everything else is the same.
  const global = (evs: readonly MonitorEvent[]) =>
    evs.filter((e) => !(e.kind === 'address' && e.address.startsWith('fe80:')) && !(e.kind === 'route' && e.dst.startsWith('fe80:') && e.dst !== 'fe80::/64'));

  it('reads the captured one-process snapshot as the four separate commands', () => {
    expect(SNAPSHOT_COMMANDS).toHaveLength(4);
    expect(batchLines).toHaveLength(4);
    const b = parseBatchSnapshot(batch);
    if (!b.ok) throw new Error(b.reason);
    expect(global(b.events)).toEqual(global(snapshot()));
    // `root 0.0.0.0/0` and `root ::/0` split the routes by family, as `ip -4`/`-6` did.
    const routes = b.events.filter((e): e is Extract<MonitorEvent, { kind: 'route' }> => e.kind === 'route');
    expect(routes.filter((r) => r.family === 4).every((r) => !r.dst.includes(':'))).toBe(true);
    expect(routes.filter((r) => r.family === 6).every((r) => r.dst === 'default' || r.dst.includes(':'))).toBe(true);
    for (const u of [A, B, A_MAIN]) {
      expect(fold(u, global(b.events))).toEqual(fold(u, global(snapshot())));
      expect(factsOf(u, fold(u, b.events))).toEqual(USABLE);
    }
  });

  it('reads empty tables, printed as []', () => {
    const b = parseBatchSnapshot(`${batchLines[0]}\n${batchLines[1]}\n[]\n[]\n`);
    expect(b.ok && b.events.filter((e) => e.kind === 'route')).toEqual([]);
  });

  it('refuses output that is not one JSON array per command, one a line', () => {
    expect(reason(batch)).toBe('ok');
    expect(reason(batchLines.slice(0, 3).join('\n') + '\n')).toMatch(/3 lines for 4 commands/);
    expect(reason(batch + '[]\n')).toMatch(/5 lines for 4 commands/);
    expect(reason(batch.slice(0, -1))).toMatch(/does not end with a newline/);
    expect(reason(batch.slice(0, batch.length / 2))).toMatch(/does not end with a newline/);
    expect(reason('')).toMatch(/0 lines for 4 commands/);
    expect(reason([batchLines[0], batchLines[1], '', batchLines[3]].join('\n') + '\n')).toMatch(/empty line for `route show table all root 0.0.0.0\/0`/);
    // `ip -p -j` (pretty) spreads an array over lines.
    expect(reason(JSON.stringify(JSON.parse(batchLines[0]), null, 2) + '\n[]\n[]\n[]\n')).toMatch(/lines for 4 commands/);
    expect(reason([batchLines[0], 'Object "-4" is unknown, try "ip help".', '[]', '[]'].join('\n') + '\n')).toMatch(/ip -j addr show: not JSON/);
    expect(reason([batchLines[0], batchLines[1], batchLines[0], '[]'].join('\n') + '\n')).toMatch(/^ip -4 -j route show: .* at 0\.dst$/);
  });
});

describe('reduce and factsOf', () => {
  it('the snapshot makes both uplinks usable; an unknown interface is not', () => {
    expect(factsOf(A, fold(A, snapshot()))).toEqual(USABLE);
    expect(factsOf(B, fold(B, snapshot()))).toEqual(USABLE);
    expect(factsOf(A_MAIN, fold(A_MAIN, snapshot()))).toEqual(USABLE);
    const ghost: WatchedUplink = { name: 'g', interface: 'eth-z', locator: '192.0.2.9' };
    expect(factsOf(ghost, fold(ghost, snapshot()))).toEqual({ carrier: false, adminUp: false, hasAddress: false, hasRoute: false, usable: false });
  });

  it('carrier loss takes the uplink out and its return brings it back; the other uplink is untouched', () => {
    const [lost, back] = factsAlong(A, 'carrier-loss.txt');
    expect(lost).toEqual({ ...USABLE, carrier: false, usable: false });
    expect(back).toEqual(USABLE);
    expect(factsAlong(B, 'carrier-loss.txt').every((f) => f.usable)).toBe(true);
  });

  it('IPv4 address removal takes the uplink out; the kernel flushed its routes, so the address alone does not bring it back', () => {
    const f = factsAlong(A, 'address-v4.txt');
    expect(f[0]).toEqual({ ...USABLE, hasAddress: false, hasRoute: false, usable: false });
    expect(f[4]).toEqual({ ...USABLE, hasRoute: false, usable: false }); // address back, routes still gone
    expect(f[8]).toEqual(USABLE); // the policy route re-added
  });

  it('IPv6 address removal takes the uplink out until duplicate address detection is done', () => {
    const f = factsAlong(B, 'address-v6.txt');
    expect(f[0]).toEqual({ ...USABLE, hasAddress: false, usable: false });
    expect(f[4].hasAddress).toBe(false); // tentative
    expect(f[5]).toEqual(USABLE);
  });

  it('route removal takes the uplink out and its return brings it back; a replace keeps it', () => {
    const a = factsAlong(A, 'route.txt');
    expect(a[0]).toEqual({ ...USABLE, hasRoute: false, usable: false });
    expect(a[1]).toEqual(USABLE);
    expect(a[4]).toEqual(USABLE); // replace via 192.0.2.3: still a default route in table 100 on eth-a
    const b = factsAlong(B, 'route.txt');
    expect(b[2]).toEqual({ ...USABLE, hasRoute: false, usable: false });
    expect(b[3]).toEqual(USABLE);
  });

  it('in the main table, a route replaced to another gateway no longer serves the uplink', () => {
    let s = fold(A_MAIN, snapshot());
    s = reduce(A_MAIN, s, parseMonitorLine('default via 192.0.2.3 dev eth-a') as MonitorEvent);
    expect(factsOf(A_MAIN, s).hasRoute).toBe(false);
  });

  it('admin down takes the uplink out and flushes its IPv4 routes, as the kernel does without a message', () => {
    const f = factsAlong(A, 'admin-down.txt');
    expect(f[0]).toEqual({ carrier: false, adminUp: false, hasAddress: true, hasRoute: false, usable: false });
    expect(f.at(-1)).toEqual({ ...USABLE, hasRoute: false, usable: false });
    // The kernel agrees: the route dumps before and after.
    const before = parseSnapshot({ link: '[]', addr: '[]', route4: fixture('snapshot-before-admin-route4.json'), route6: '[]' });
    const after = parseSnapshot({ link: '[]', addr: '[]', route4: fixture('snapshot-after-admin-route4.json'), route6: '[]' });
    if (!before.ok || !after.ok) throw new Error('snapshot');
    expect(fold(A, before.events).routes).toHaveLength(1);
    expect(fold(A, after.events).routes).toEqual([]);
  });

  it('a deleted interface leaves nothing', () => {
    const s = fold(A, events('link-delete.txt') as MonitorEvent[], fold(A, snapshot()));
    expect(s).toBe(EMPTY_UPLINK_STATE);
  });

  it('ignores events of other interfaces and families, and returns the same state when nothing changed', () => {
    const s = fold(A, snapshot());
    for (const ev of [...(events('address-v6.txt') as MonitorEvent[]), parseMonitorLine('3: eth-b: <BROADCAST> mtu 1500 state DOWN') as MonitorEvent]) {
      expect(reduce(A, s, ev)).toBe(s);
    }
    const again = fold(A, snapshot(), s);
    expect(again).toBe(s);
  });

  it('matches a locator however it is written', () => {
    const b2: WatchedUplink = { ...B, locator: '2001:DB8:B:0:0::1', gateway: '2001:0db8:b::0002' };
    expect(factsOf(b2, fold(b2, snapshot()))).toEqual(USABLE);
    expect(canonicalAddress('2001:DB8:0:0:1::1')).toBe('2001:db8::1:0:0:1');
  });

  it('stays bounded however many addresses and routes an interface has', () => {
    const u: WatchedUplink = { name: 'x', interface: 'eth-a', locator: '192.0.2.1' };
    let s: UplinkState = EMPTY_UPLINK_STATE;
    for (let i = 0; i < 1_000; i++) {
      s = reduce(u, s, { kind: 'address', deleted: false, dev: 'eth-a', family: 4, address: `10.${i >> 8}.${i & 255}.1`, prefixLen: 24, usable: true });
      s = reduce(u, s, { kind: 'route', deleted: false, family: 4, table: 254, type: 'unicast', dst: `10.${i >> 8}.${i & 255}.0/24`, metric: 0, gateways: [], devs: ['eth-a'] });
    }
    expect(s.addresses.length).toBeLessThanOrEqual(64);
    expect(s.routes.length).toBeLessThanOrEqual(64);
  });
});

// The shell, with a fake `ip`.

class FakeChild implements MonitorChild {
  readonly exited: Promise<void>;
  killedWith: NodeJS.Signals | null = null;
  private resolve: () => void = () => {};
  constructor(
    readonly pid: number,
    private readonly handlers: MonitorHandlers,
  ) {
    this.exited = new Promise((r) => (this.resolve = r));
  }
  emit(line: string): void {
    this.handlers.line(line);
  }
  die(why = 'ip monitor exited with code 1'): void {
    this.resolve();
    this.handlers.exit(why);
  }
  kill(signal: NodeJS.Signals): void {
    this.killedWith = signal;
    this.resolve();
  }
}

class FakeIo implements MonitorIo {
  children: FakeChild[] = [];
  snapshots = 0;
  /** Called while a snapshot is "running", before it returns. */
  duringSnapshot: (() => void) | null = null;
  failSnapshot = false;
  text = { link: fixture('snapshot-link.json'), addr: fixture('snapshot-addr.json'), route4: fixture('snapshot-route4.json'), route6: fixture('snapshot-route6.json') };
  spawnMonitor(handlers: MonitorHandlers): MonitorChild {
    const c = new FakeChild(1000 + this.children.length, handlers);
    this.children.push(c);
    return c;
  }
  async subscribed(): Promise<boolean> {
    return true;
  }
  /** Every `ip -batch` run, in order. */
  batches: { options: readonly string[]; commands: readonly string[] }[] = [];
  async ipBatch(options: readonly string[], commands: readonly string[]): Promise<string> {
    if (this.failSnapshot) throw new Error('ip failed');
    this.batches.push({ options, commands });
    this.snapshots++;
    const hook = this.duringSnapshot;
    this.duringSnapshot = null;
    hook?.();
    const { link, addr, route4, route6 } = this.text;
    return [link, addr, route4, route6].map((s) => `${s.trim()}\n`).join('');
  }
  get last(): FakeChild {
    return this.children[this.children.length - 1];
  }
}

describe('UplinkMonitor (fake ip)', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it('is right after start, reports each change once and at once, and kills the child on stop', async () => {
    const io = new FakeIo();
    const m = new UplinkMonitor([A, B], { log: silentLogger, io });
    const seen: [string, UplinkFacts][] = [];
    m.onChange((u, f) => seen.push([u, f]));
    await m.start();
    expect(m.facts('a')).toEqual(USABLE);
    expect(m.facts('b')).toEqual(USABLE);
    expect(seen).toEqual([]);
    // The whole snapshot from one child process (every spawn stalls the agent's event loop).
    expect(io.batches).toEqual([{ options: SNAPSHOT_OPTIONS, commands: SNAPSHOT_COMMANDS }]);
    const [down, up] = lines('carrier-loss.txt');
    io.last.emit(down);
    expect(seen).toEqual([['a', { ...USABLE, carrier: false, usable: false }]]);
    io.last.emit(down);
    expect(seen).toHaveLength(1);
    io.last.emit(up);
    expect(seen[1]).toEqual(['a', USABLE]);
    const child = io.last;
    await m.stop();
    expect(child.killedWith).toBe('SIGTERM');
    expect(() => m.facts('nope')).toThrow(/no uplink named "nope"/);
  });

  it('replays the events that arrive during the snapshot on top of it', async () => {
    const io = new FakeIo();
    const m = new UplinkMonitor([A], { log: silentLogger, io });
    // The route is deleted after the monitor subscribed but while the dump still shows it.
    io.duringSnapshot = () => io.last.emit(lines('route.txt')[0]);
    await m.start();
    expect(m.facts('a')).toEqual({ ...USABLE, hasRoute: false, usable: false });
    await m.stop();
  });

  it('resyncs after a link event on a watched interface, correcting what the kernel did not announce', async () => {
    vi.useFakeTimers();
    const io = new FakeIo();
    const m = new UplinkMonitor([A_MAIN], { log: silentLogger, io }, { resyncDelayMs: 100 });
    await m.start();
    // The dump now lacks the main default route (removed without a message we saw).
    io.text = { ...io.text, route4: fixture('snapshot-after-admin-route4.json') };
    io.last.emit(lines('carrier-loss.txt')[1]); // a link event: carrier (still) on
    expect(m.facts('a-main').hasRoute).toBe(true);
    await vi.advanceTimersByTimeAsync(150);
    expect(io.snapshots).toBe(2);
    expect(m.facts('a-main').hasRoute).toBe(false);
    await m.stop();
  });

  it('restarts a dead child with a bounded, growing backoff, logging once per restart, and resyncs', async () => {
    vi.useFakeTimers();
    const io = new FakeIo();
    const clock = new ManualClock(0);
    const warnings: unknown[] = [];
    const log = { ...silentLogger, warn: (o: unknown) => warnings.push(o), debug: () => {}, error: () => {} } as unknown as typeof silentLogger;
    const m = new UplinkMonitor([A], { log, io, clock }, { restartMinMs: 100, restartMaxMs: 400 });
    await m.start();
    const delays: number[] = [];
    for (let i = 0; i < 5; i++) {
      const before = io.children.length;
      io.last.die();
      let waited = 0;
      while (io.children.length === before && waited < 10_000) {
        await vi.advanceTimersByTimeAsync(10);
        waited += 10;
      }
      delays.push(waited);
    }
    expect(delays).toEqual([100, 200, 400, 400, 400]);
    expect(warnings).toHaveLength(5);
    expect(m.stats().restarts).toBe(5);
    await vi.advanceTimersByTimeAsync(10);
    expect(io.snapshots).toBe(6); // one per restart, after the first
    // The new child's events count; the dead one's do not.
    io.children[0].emit(lines('carrier-loss.txt')[0]);
    expect(m.facts('a').carrier).toBe(true);
    io.last.emit(lines('carrier-loss.txt')[0]);
    expect(m.facts('a').carrier).toBe(false);
    // A child that ran long enough resets the backoff.
    clock.advance(60_000);
    const before = io.children.length;
    io.last.die();
    await vi.advanceTimersByTimeAsync(100);
    expect(io.children.length).toBe(before + 1);
    await m.stop();
    io.last.die();
    await vi.advanceTimersByTimeAsync(10_000);
    expect(io.children.length).toBe(before + 1); // stopped: no more restarts
  });

  it('fails start() when the snapshot cannot be read, and leaves no child behind', async () => {
    const io = new FakeIo();
    io.text = { ...io.text, link: 'not json' };
    const m = new UplinkMonitor([A], { log: silentLogger, io });
    await expect(m.start()).rejects.toThrow(/cannot read the snapshot/);
    expect(io.last.killedWith).toBe('SIGTERM');
    expect(m.childPid).toBeUndefined();
  });

  it('a listener that throws does not stop the others', async () => {
    const io = new FakeIo();
    const m = new UplinkMonitor([A], { log: silentLogger, io });
    const seen: string[] = [];
    m.onChange(() => {
      throw new Error('boom');
    });
    const off = m.onChange((u) => seen.push(u));
    await m.start();
    io.last.emit(lines('carrier-loss.txt')[0]);
    expect(seen).toEqual(['a']);
    off();
    io.last.emit(lines('carrier-loss.txt')[1]);
    expect(seen).toEqual(['a']);
    expect(m.stats().events).toBe(2);
    io.last.emit('garbage');
    expect(m.stats().ignoredLines).toBe(1);
    await m.stop();
  });
});
