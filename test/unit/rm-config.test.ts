import { describe, expect, it } from 'vitest';
import { loadRmConfig, parseRmConfig, DEFAULTS } from '../../mapping-server/config.ts';
import { Realm } from '../../mapping-server/realm.ts';
import { createPolicy } from '../../mapping-server/policy.ts';
import { parseHostId } from '../../shared/ids.ts';
import { idKey } from '../../shared/ids.ts';

function problems(raw: unknown): string {
  try {
    parseRmConfig(raw);
  } catch (e) {
    return (e as Error).message;
  }
  return '';
}

describe('RM config', () => {
  it('fills defaults and freezes', () => {
    const c = parseRmConfig({ realm: 'acme', prefix: 'fd00:1::/32' });
    expect(c.port).toBe(4342);
    expect(c.listen).toEqual(DEFAULTS.listen);
    expect(c.registration).toEqual({ refreshS: 60, expiryS: 180, perSessionPerS: 10, burst: 20 });
    expect(c.store.synchronous).toBe('full');
    expect(Object.isFrozen(c.store)).toBe(true);
  });

  it('names each problem on one line', () => {
    const msg = problems({ realm: 'acme', prefix: 'fd00:1::5/32', listen: ['10.0.0.300'], bogus: 1 });
    expect(msg).toContain('config error: listen[0]: "10.0.0.300" is not an IPv4 or IPv6 address');
    expect(msg).toContain('unknown key "bogus"');
    expect(msg).toContain('config error: prefix: "fd00:1::5/32" has bits set after the prefix length');
    expect(problems({ realm: 'acme', prefix: 'fd00:1:2:3:4::/80' })).toContain('is longer than /64');
    expect(problems({ realm: 'acme', prefix: 'fd00:1::/32', subRealms: [{ name: 'x', prefix: 'fd00:2::/48' }] })).toContain(
      'subRealms[0].prefix: "fd00:2::/48" is not inside the realm prefix',
    );
    expect(problems({ realm: 'acme', prefix: 'fd00:1::/32', registration: { refreshS: 60, expiryS: 30 } })).toContain('must be longer than refreshS');
  });
});

describe('realm and policy', () => {
  const config = parseRmConfig({
    realm: 'acme',
    prefix: 'fd00:1::/32',
    subRealms: [{ name: 'lab', prefix: 'fd00:1:5::/48' }],
    policy: {
      lookup: { sameRealm: 'allow', rules: [{ askers: ['fd00:9::/32'], targets: ['fd00:1:5::/48', 'fd00:1::77'] }] },
      uplinks: { ispb: { use: 'backup' }, ispc: { use: 'never' }, ispd: { weight: 9 } },
    },
  });
  const realm = Realm.fromConfig(config);
  const policy = createPolicy(config.policy, realm);

  it('accepts IDs derived under the realm or a sub-realm prefix, nothing else', () => {
    expect(realm.accepts(parseHostId('fd00:1::1'), 32)).toBe(true);
    expect(realm.accepts(parseHostId('fd00:1:5::1'), 48)).toBe(true);
    expect(realm.accepts(parseHostId('fd00:1:6::1'), 48)).toBe(false);
    expect(realm.accepts(parseHostId('fd00:1::1'), 64)).toBe(false);
    expect(realm.accepts(parseHostId('fd00:2::1'), 32)).toBe(false);
    expect(realm.nameOf(parseHostId('fd00:1:5::9'))).toBe('lab');
  });

  it('lets realm members see everything, rule askers only their targets, others nothing', () => {
    const t = (s: string) => {
      const b = parseHostId(s).toBytes();
      return [b, idKey(b)] as const;
    };
    const member = policy.viewFor(parseHostId('fd00:1::2'));
    const partner = policy.viewFor(parseHostId('fd00:9::1'));
    const stranger = policy.viewFor(parseHostId('fd00:7::1'));
    expect(member.mayLearn(...t('fd00:1::99'))).toBe(true);
    expect(partner.mayLearn(...t('fd00:1:5::1'))).toBe(true);
    expect(partner.mayLearn(...t('fd00:1::77'))).toBe(true);
    expect(partner.mayLearn(...t('fd00:1::78'))).toBe(false);
    expect(stranger.mayLearn(...t('fd00:1::99'))).toBe(false);
  });

  it('turns uplink preferences into per-locator adjustments', () => {
    const l = (uplink: string, priority = 1) => ({ address: '192.0.2.1', port: 4341, uplink, priority, weight: 1, state: 'up' as const });
    expect(policy.prefsFor([l('ispa'), l('ispb'), l('ispc'), l('ispd')])).toEqual([
      { index: 1, priority: 200, weight: 1, up: true },
      { index: 2, priority: 1, weight: 1, up: false },
      { index: 3, priority: 1, weight: 9, up: true },
    ]);
    expect(policy.prefsFor([l('ispa')])).toEqual([]);
  });
});

describe('examples/rm.yaml', () => {
  it('is a valid RM config', () => {
    const c = loadRmConfig(new URL('../../examples/rm.yaml', import.meta.url).pathname);
    expect(c.prefix).toBe('fd00:1::/32');
    expect(c.policy.uplinks.ispb?.use).toBe('backup');
  });
});
