import { describe, expect, it } from 'vitest';
import { tunUpCommands } from '../../agent/netconfig.ts';
import { policyRoutes } from '../../agent/uplinks/routing.ts';

describe('netconfig commands', () => {
  it('routes only the realm prefixes into the TUN, never a default route', () => {
    const cmds = tunUpCommands({ name: 'rn0', mtu: 1400, offload: false, hostId: 'fd00:1::a', prefixes: ['fd00::/8'] });
    expect(cmds).toContainEqual(['-6', 'addr', 'add', 'fd00:1::a/128', 'dev', 'rn0', 'nodad']);
    expect(cmds).toContainEqual(['-6', 'route', 'replace', 'fd00::/8', 'dev', 'rn0']);
    expect(cmds.flat()).not.toContain('default');
    expect(cmds.some((c) => c.includes('gso_max_size'))).toBe(false);
    expect(tunUpCommands({ name: 'rn0', mtu: 1400, offload: true, hostId: 'fd00:1::a', prefixes: [] }).some((c) => c.includes('gso_max_size'))).toBe(true);
  });

  it('adds one table and one source rule per uplink with a gateway, per family', () => {
    const r = policyRoutes(
      [
        { name: 'ispa', interface: 'eth-a', locator: '192.0.2.1', gateway: '192.0.2.2' },
        { name: 'plain', locator: '192.0.2.9' },
        { name: 'v6', interface: 'eth-b', locator: '2001:db8:b::1', gateway: '2001:db8:b::2' },
      ],
      100,
      500,
    );
    expect(r.map((x) => x.uplink)).toEqual(['ispa', 'v6']);
    expect(r[0].add).toEqual([
      ['-4', 'route', 'replace', 'default', 'via', '192.0.2.2', 'dev', 'eth-a', 'table', '100'],
      ['-4', 'rule', 'add', 'from', '192.0.2.1', 'table', '100', 'priority', '500'],
    ]);
    expect(r[1].add[1]).toEqual(['-6', 'rule', 'add', 'from', '2001:db8:b::1', 'table', '102', 'priority', '502']);
    expect(r[1].remove[0]).toEqual(['-6', 'rule', 'del', 'from', '2001:db8:b::1', 'table', '102', 'priority', '502']);
  });
});
