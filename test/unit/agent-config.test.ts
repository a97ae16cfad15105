import { describe, expect, it } from 'vitest';
import { loadAgentConfig, parseAgentConfig } from '../../agent/config.ts';
import { parseConfigText } from '../../shared/config.ts';
import { AgentConfigSchema } from '../../agent/config.ts';
import { ConfigError } from '../../shared/errors.ts';

const PEER_KEY = Buffer.alloc(32, 7).toString('base64');
const good = {
  hostId: 'fd00:1::a',
  identity: { key: '/etc/realmnet/host.key' },
  realm: { prefixes: ['fd00::/8'] },
  uplinks: [{ name: 'ispa', interface: 'eth-a', locator: '192.0.2.1', gateway: '192.0.2.2' }],
  peers: [{ hostId: 'fd00:1::c', publicKey: PEER_KEY, locators: [{ address: '203.0.113.2' }] }],
};

function errorOf(raw: unknown): string {
  try {
    parseAgentConfig(raw);
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    return (e as ConfigError).message;
  }
  throw new Error('expected a config error');
}

describe('agent config', () => {
  it('fills defaults and freezes', () => {
    const c = parseAgentConfig(good);
    expect(c.tun).toEqual({ name: 'rn0', mtu: 1400, offload: false, coalesce: true, batchSize: 64 });
    expect(c.listenPort).toBe(4341);
    expect(c.peers[0].locators[0]).toEqual({ address: '203.0.113.2', port: 4341, priority: 1, weight: 1 });
    expect(Object.isFrozen(c.uplinks[0])).toBe(true);
  });

  it('names the key, the value and what is wrong, one line per problem', () => {
    const msg = errorOf({ ...good, uplinks: [good.uplinks[0], { name: 'ispb', locator: '10.0.0.300' }] });
    expect(msg).toBe('config error: uplinks[1].locator: "10.0.0.300" is not an IPv4 or IPv6 address (e.g. 192.0.2.1 or 2001:db8::1)');
    const two = errorOf({ ...good, hostId: '192.0.2.1', listenPort: 70000 });
    expect(two.split('\n')).toHaveLength(2);
    expect(two).toContain('config error: hostId: "192.0.2.1" is not an IPv6 address');
    expect(two).toContain('config error: listenPort: 70000');
  });

  it('reports missing keys, unknown keys and duplicates', () => {
    expect(errorOf({ realm: good.realm, uplinks: good.uplinks })).toMatch(/^config error: hostId: is missing/);
    expect(errorOf({ ...good, uplink: [] })).toContain('unknown key "uplink"');
    expect(errorOf({ ...good, uplinks: [good.uplinks[0], good.uplinks[0]] })).toContain('uplinks[1].name: "ispa" is used by two uplinks');
    expect(errorOf({ ...good, uplinks: [{ name: 'x', locator: '192.0.2.1', gateway: '192.0.2.2' }] })).toContain('uplinks[0].interface: is missing');
  });

  it('accepts the documented example config', () => {
    const c = loadAgentConfig(new URL('../../examples/agent.yaml', import.meta.url).pathname);
    expect(c.uplinks.map((u) => u.name)).toEqual(['ispa', 'ispb']);
  });

  it('control.group: unset means root only; a group name or a gid; anything else names the key', () => {
    expect(parseAgentConfig(good).control).toEqual({ socket: '@realmnet/agent' });
    expect(parseAgentConfig({ ...good, control: { group: 'realmnet' } }).control.group).toBe('realmnet');
    expect(parseAgentConfig({ ...good, control: { group: 1001 } }).control.group).toBe(1001);
    expect(errorOf({ ...good, control: { group: 'no spaces' } })).toMatch(/^config error: control\.group: /);
    expect(errorOf({ ...good, control: { group: -1 } })).toMatch(/^config error: control\.group: /);
  });

  it('explains broken YAML', () => {
    expect(() => parseConfigText(AgentConfigSchema, 'hostId: [unclosed', 'a.yaml')).toThrow(/a.yaml is not valid YAML/);
  });
});

describe('agent config: combinations', () => {
  it('refuses rm.pendingPerId above tun.batchSize (the kept packets go back as one batch)', () => {
    const msg = errorOf({ ...good, identity: { key: 'k', prefix: 'fd00:1::/32' }, rm: { servers: [{ address: '203.0.113.66' }], pendingPerId: 100 }, tun: { batchSize: 64 } });
    expect(msg).toContain('rm.pendingPerId');
    expect(msg).toContain('tun.batchSize');
  });
  it('dataplane: encryption is on by default and needs this host\'s key and each static peer\'s, else one line each names the key and the fix', () => {
    expect(parseAgentConfig(good).dataplane).toEqual({ encryption: 'on', cipher: 'aes-256-gcm', rekeyAfterS: 120, rekeyAfterPackets: 2 ** 23, rejectAfterS: 180, maxSessions: 4096, handshakesPerS: 200 });
    const { identity: _k, ...noKey } = good;
    const noPeerKey = { ...good, peers: [{ hostId: 'fd00:1::c', locators: [{ address: '203.0.113.2' }] }] };
    expect(errorOf(noKey)).toMatch(/^config error: identity: is missing: encryption .* or set dataplane.encryption: off/);
    expect(errorOf(noPeerKey)).toMatch(/^config error: peers\[0\]\.publicKey: is missing: .*fd00:1::c/);
    // Off (measurement only): neither key is needed.
    expect(parseAgentConfig({ ...noKey, peers: noPeerKey.peers, dataplane: { encryption: 'off' } }).dataplane.encryption).toBe('off');
    expect(errorOf({ ...good, tun: { mtu: 1420 } })).toBe('config error: tun.mtu: (1420) is too large for underlayMtu 1500 with encryption: at most 1416 (IPv6 40 + UDP 8 + sealed header 20 + tag 16)');
    expect(errorOf({ ...good, dataplane: { maxSessions: 1000 } })).toBe('config error: dataplane.maxSessions: 1000 must be a power of two (e.g. 4096)');
    expect(errorOf({ ...good, dataplane: { rekeyAfterS: 60, rejectAfterS: 60 } })).toMatch(/dataplane.rejectAfterS: \(60\) must be above rekeyAfterS \(60\)/);
    expect(errorOf({ ...good, dataplane: { cipher: 'rot13' } })).toMatch(/^config error: dataplane.cipher:/);
    expect(errorOf({ ...good, peers: [{ ...good.peers[0], publicKey: 'short' }] })).toBe('config error: peers[0].publicKey: "short" is not a base64 Ed25519 public key (32 bytes; `realmnet keygen` prints it as "publicKey")');
  });
});
