import { describe, expect, it } from 'vitest';
import { pino } from 'pino';
import { Writable } from 'node:stream';
import { serviceNotifier, watchdogInterval } from '../../shared/service.ts';
import { loadNative } from '../../shared/native.ts';
import { parseListen } from '../../shared/config.ts';
import { createLogger, setLogLevel, silentLogger } from '../../shared/log.ts';
import { planReload, planIsEmpty } from '../../agent/reload.ts';
import { parseAgentConfig, type AgentConfig } from '../../agent/config.ts';
import { applyUplinkEvent, UplinkTable } from '../../agent/uplinks/table.ts';
import { rmMetrics } from '../../mapping-server/metrics.ts';
import type { UdpBatchSocket } from '../../shared/udp/socket.ts';

describe('service notifications (sd_notify)', () => {
  it('watchdog interval: half of WATCHDOG_USEC, only for this pid', () => {
    expect(watchdogInterval('10000000', undefined, 42)).toBe(5000);
    expect(watchdogInterval('10000000', '42', 42)).toBe(5000);
    expect(watchdogInterval('10000000', '43', 42)).toBeNull();
    expect(watchdogInterval(undefined, undefined, 42)).toBeNull();
    expect(watchdogInterval('0', undefined, 42)).toBeNull();
    expect(watchdogInterval('-5', undefined, 42)).toBeNull();
    expect(watchdogInterval('1000', undefined, 42)).toBe(1);
  });

  it('sends READY/RELOADING/STOPPING/STATUS to NOTIFY_SOCKET and removes the variables from the environment', () => {
    const sent: [string, string][] = [];
    const env: NodeJS.ProcessEnv = { NOTIFY_SOCKET: '/run/x.sock', WATCHDOG_USEC: '2000000', WATCHDOG_PID: '7', KEEP: '1' };
    const n = serviceNotifier({ log: silentLogger, env, pid: 7, send: (p, m) => void sent.push([p, m]) });
    expect(env).toEqual({ KEEP: '1' });
    expect(n.watchdogIntervalMs).toBe(1000);
    n.ready('forwarding:\nline two');
    n.reloading();
    n.stopping();
    expect(sent[0]).toEqual(['/run/x.sock', 'READY=1\nSTATUS=forwarding: line two\nMAINPID=7']);
    expect(sent[1][1]).toMatch(/^RELOADING=1\nMONOTONIC_USEC=\d+$/);
    expect(sent[2][1]).toBe('STOPPING=1');
  });

  it('does nothing without NOTIFY_SOCKET', () => {
    const sent: string[] = [];
    const n = serviceNotifier({ log: silentLogger, env: {}, send: (_p, m) => void sent.push(m) });
    n.ready('x');
    const stop = n.startWatchdog();
    stop();
    expect(sent).toEqual([]);
    expect(n.socket).toBeNull();
  });

  it('a socket that is gone is reported once, and never throws', () => {
    const lines: string[] = [];
    const log = pino({ level: 'warn' }, new Writable({ write: (c: Buffer, _e, cb) => (lines.push(c.toString()), cb()) }));
    // The real addon, to a path where nobody listens.
    const n = serviceNotifier({ log, env: { NOTIFY_SOCKET: '/nonexistent/realmnet-test.sock' } });
    n.ready('a');
    n.status('b');
    expect(lines.length).toBe(1);
    expect(lines[0]).toContain('ENOENT');
  });

  it('the native sender refuses a path longer than a unix socket address', () => {
    const b = loadNative('realmnet_notify') as { sendTo(p: string, m: string): number };
    expect(() => b.sendTo('/' + 'x'.repeat(200), 'READY=1')).toThrow(/notify socket path/);
  });
});

describe('metrics.listen', () => {
  it('parses address:port for IPv4 and [IPv6]:port, nothing else', () => {
    expect(parseListen('127.0.0.1:9721')).toEqual({ host: '127.0.0.1', port: 9721 });
    expect(parseListen('[::1]:9721')).toEqual({ host: '::1', port: 9721 });
    for (const bad of ['127.0.0.1', ':9721', '::1:9721', '127.0.0.1:0', '127.0.0.1:70000', 'localhost:9721', '10.0.0.300:1']) expect(parseListen(bad), bad).toBeNull();
  });

  it('a bad metrics.listen is one config line', () => {
    expect(() => parseAgentConfig({ hostId: 'fd00:1::a', realm: { prefixes: ['fd00::/8'] }, uplinks: [{ name: 'a', locator: '192.0.2.1' }], dataplane: { encryption: 'off' }, metrics: { listen: 'localhost:1' } })).toThrow(
      /metrics\.listen: "localhost:1" is not an address and port to listen on/,
    );
  });
});

describe('RM metric names', () => {
  it('groups counters under labels, sizes as gauges, every counter ending in _total', async () => {
    const counters = { 'rx.datagrams': 10, 'rx.drop.badMac': 2, 'rx.handled.lookup': 5, 'lookup.positive': 4, 'lookup.denied': 1, 'sessions.created': 3, 'sessions.live': 2, 'store.maxCommitMs': 12, 'store.commits': 9, 'hierarchy.queriesSent': 6, 'hierarchy.cached': 8 };
    const m = rmMetrics(() => counters, { version: '0.1.0', realm: 'fd00:1::/32' });
    m.beforeScrape();
    const text = await m.registry.metrics();
    expect(text).toContain('realmnet_rm_received_datagrams_total 10');
    expect(text).toContain('realmnet_rm_dropped_datagrams_total{reason="bad_mac"} 2');
    expect(text).toContain('realmnet_rm_handled_messages_total{type="lookup"} 5');
    expect(text).toContain('realmnet_rm_lookups_total{result="denied"} 1');
    expect(text).toContain('realmnet_rm_session_events_total{event="created"} 3');
    expect(text).toContain('realmnet_rm_sessions 2');
    expect(text).not.toContain('event="live"');
    expect(text).toContain('realmnet_rm_store_max_commit_seconds 0.012');
    expect(text).not.toContain('max_commit_ms');
    expect(text).toContain('realmnet_rm_hierarchy_events_total{event="queries_sent"} 6');
    expect(text).toContain('realmnet_rm_hierarchy_cached_answers 8');
    for (const t of text.matchAll(/^# TYPE (\S+) (\S+)$/gm)) {
      expect(t[1]).toMatch(/^realmnet_rm_[a-z0-9_]+$/);
      if (t[2] === 'counter') expect(t[1]).toMatch(/_total$/);
    }
  });
});

describe('log level at runtime', () => {
  it('setLogLevel reaches children made before the change', () => {
    const root = createLogger({ level: 'info', format: 'json', destination: new Writable({ write: (_c, _e, cb) => cb() }) });
    const child = root.child({ module: 'a' });
    const grandchild = child.child({ module: 'b' });
    setLogLevel(root, 'debug');
    expect([root.level, child.level, grandchild.level]).toEqual(['debug', 'debug', 'debug']);
  });
});

function agentConfig(uplinks: { name: string; locator: string; priority?: number; weight?: number; interface?: string }[], extra: Record<string, unknown> = {}): AgentConfig {
  return parseAgentConfig({ hostId: 'fd00:1::a', realm: { prefixes: ['fd00::/8'] }, uplinks, dataplane: { encryption: 'off' }, ...extra });
}

describe('reload plan (agent)', () => {
  const a = { name: 'a', locator: '192.0.2.1', priority: 1 };
  const b = { name: 'b', locator: '192.0.2.65', priority: 2 };
  const c = { name: 'c', locator: '192.0.2.129', priority: 3 };

  it('the same config changes nothing', () => {
    expect(planIsEmpty(planReload(agentConfig([a, b]), agentConfig([a, b])))).toBe(true);
  });

  it('uplinks added, removed, re-prioritised; a changed locator is a remove and an add', () => {
    const p = planReload(agentConfig([a, b, c]), agentConfig([{ ...a, priority: 5 }, { ...b, locator: '192.0.2.66' }, { name: 'd', locator: '192.0.2.200' }]));
    expect(p.removeUplinks).toEqual(['b', 'c']);
    expect(p.addUplinks.map((u) => `${u.name}=${u.locator}`)).toEqual(['b=192.0.2.66', 'd=192.0.2.200']);
    expect(p.reprioritise).toEqual([{ name: 'a', priority: 5, weight: 1 }]);
    expect(p.restartNeeded).toEqual([]);
  });

  it('names what needs a restart and keeps its running value', () => {
    const running = agentConfig([a]);
    const p = planReload(running, agentConfig([a], { tun: { mtu: 1380 }, listenPort: 4000, log: { level: 'debug', format: 'json' } }));
    expect(p.restartNeeded).toEqual(['listenPort', 'log.format', 'tun']);
    expect(p.effective.tun.mtu).toBe(running.tun.mtu);
    expect(p.effective.listenPort).toBe(running.listenPort);
    expect(p.logLevel).toBe('debug');
    expect(p.effective.log).toEqual({ level: 'debug', format: running.log.format });
  });

  it('static peers changed', () => {
    const peer = { hostId: 'fd00:1::c', locators: [{ address: '203.0.113.2' }] };
    expect(planReload(agentConfig([a]), agentConfig([a], { peers: [peer] })).peersChanged).toBe(true);
  });
});

describe('uplink table: reload events', () => {
  // The table never touches the socket: a placeholder, as in uplink-table.test.ts.
  const sock = () => ({}) as UdpBatchSocket;
  const up = (name: string, locator: string) => ({ name, interface: undefined, locator, family: 4 as const, priority: 1, weight: 1, up: true, socket: sock() });

  it('retire takes an uplink out for good; link events no longer touch it; restore brings the slot back', () => {
    const t = new UplinkTable([up('a', '192.0.2.1'), up('b', '192.0.2.65')]);
    expect(t.apply({ kind: 'retire', name: 'a' })).toBe(true);
    expect(t.current[0]).toMatchObject({ name: 'a', up: false, retired: true });
    expect(t.byName('a')).toBeUndefined();
    expect(t.apply({ kind: 'link', name: 'a', usable: true })).toBe(false);
    expect(t.apply({ kind: 'restore', name: 'a', priority: 4, weight: 2 })).toBe(true);
    expect(t.current[0]).toMatchObject({ index: 0, up: true, retired: false, priority: 4, weight: 2 });
  });

  it('add takes the next index; a live name is not added twice, a retired one may be', () => {
    const s0 = new UplinkTable([up('a', '192.0.2.1')]).current;
    const s1 = applyUplinkEvent(s0, { kind: 'add', uplink: up('b', '192.0.2.65') });
    expect(s1.map((u) => `${u.index}:${u.name}`)).toEqual(['0:a', '1:b']);
    expect(applyUplinkEvent(s1, { kind: 'add', uplink: up('b', '192.0.2.66') })).toBe(s1);
    const s2 = applyUplinkEvent(applyUplinkEvent(s1, { kind: 'retire', name: 'b' }), { kind: 'add', uplink: up('b', '192.0.2.66') });
    expect(s2.map((u) => `${u.index}:${u.name}:${u.locator}:${u.retired}`)).toEqual(['0:a:192.0.2.1:false', '1:b:192.0.2.65:true', '2:b:192.0.2.66:false']);
  });
});
