/**
 * An attacker and a victim attached to the standard testbed (issue #12, docs/security.md): optional,
 * added to a running testbed with attachAttacker(tb), so that every other test and bench builds the
 * topology exactly as before.
 *
 *                  mh … ispa/ispb/ispc
 *                          |
 *         atk ---------- core ---------- vic
 *   192.0.2.194/26   to-atk | to-vic   198.51.100.194/26
 *   2001:db8:f0::2/64       |          2001:db8:f1::2/64
 *                     ch        rm
 *
 * - atk: the attacker. A host of its own (its own key, not admitted; or an admitted member without
 *   lookup rights) that speaks the real protocol from its own address, and forges source addresses
 *   with build/Release/realmnet_spoof. Nothing filters forged sources on the way: rp_filter is off in
 *   every testbed namespace (and IPv6 has none), as on a network without BCP 38.
 * - vic: the victim, an address nobody in the realm has validated. It runs nothing; nftables named
 *   counters in its namespace count every byte that reaches it (prerouting, before anything can drop
 *   it), split by what sent it: the RM (UDP source port 4342), agents (UDP destination port 4341),
 *   among those the agents' peer messages (paths/wire.ts: first payload byte E|I = 0x28) and of
 *   those the path probes (type 1).
 * - core counts what atk sends: everything, and what carries the victim's address as its source.
 *   Both sides count whole IP packets, so a ratio of the two is bytes out ÷ bytes in, like for like.
 * - Random spoofed sources come from the benchmarking ranges (RFC 2544 198.18.0.0/15, RFC 5180
 *   2001:2::/48); core has blackhole routes for them, so whatever the RM answers to them dies there.
 *
 * The links use the documentation ranges topology.ts left free (192.0.2.192/26, 198.51.100.192/26)
 * and two /64s no link uses (2001:db8:f0::/64, 2001:db8:f1::/64).
 */
import { execHost, execNs, spawnNs, trackNamespaces, deleteNamespace, TestbedError, VETH_INDEX_BASE, type ExecOptions, type ExecResult, type NsProcess, type SpawnOptions, type Testbed } from './topology.ts';

export type AttackerNode = 'atk' | 'vic';

export const ATTACKER = {
  dev: { atk: 'eth0', vic: 'eth0', coreAtk: 'to-atk', coreVic: 'to-vic' },
  v4: { atk: '192.0.2.194', coreAtk: '192.0.2.193', vic: '198.51.100.194', coreVic: '198.51.100.193' },
  v6: { atk: '2001:db8:f0::2', coreAtk: '2001:db8:f0::1', vic: '2001:db8:f1::2', coreVic: '2001:db8:f1::1' },
  nets: {
    atk: { v4: '192.0.2.192/26', v6: '2001:db8:f0::/64' },
    vic: { v4: '198.51.100.192/26', v6: '2001:db8:f1::/64' },
  },
  /** Where random forged sources are drawn from (benchmarking ranges, blackholed at core). */
  floodSources: { v4: '198.18.0.0/15', v6: '2001:2::/48' },
  prefixLen: { v4: 26, v6: 64 },
} as const;

/**
 * ifindexes of the two new veth pairs: well above the standard topology's (VETH_INDEX_BASE + 2 per
 * link), each end distinct from its peer, for the same link-watcher reason topology.ts gives.
 */
const INDEX = { coreAtk: VETH_INDEX_BASE + 40, atk: VETH_INDEX_BASE + 41, coreVic: VETH_INDEX_BASE + 42, vic: VETH_INDEX_BASE + 43 } as const;

export interface ByteCount {
  readonly packets: number;
  readonly bytes: number;
}

export interface AttackCounters {
  /** What reached the victim's addresses. */
  readonly victim: {
    readonly all: ByteCount;
    /** From the RM (UDP source port 4342). */
    readonly rm: ByteCount;
    /** To the data port (4341): agents' data and peer messages. */
    readonly agent: ByteCount;
    /** Agents' peer messages (paths/wire.ts: probes, replies, updates). */
    readonly peer: ByteCount;
    /** Of those, probes. */
    readonly probe: ByteCount;
  };
  /** What atk sent into core: all of it, with the victim's address as source, with its own addresses. */
  readonly atk: { readonly all: ByteCount; readonly spoofedVictim: ByteCount; readonly own: ByteCount };
}

export interface AttackerBed {
  readonly addr: typeof ATTACKER;
  ns(node: AttackerNode): string;
  exec(node: AttackerNode, cmd: string, args: readonly string[], opts?: ExecOptions): Promise<ExecResult>;
  /** A tracked process in atk or vic; down() stops it. */
  spawn(node: AttackerNode, cmd: string, args: readonly string[], opts?: SpawnOptions): NsProcess;
  counters(): Promise<AttackCounters>;
  /** Removes atk and vic (and core's ends of their links, with the counters). Never throws. */
  down(): Promise<void>;
}

const VICTIM_TABLE = 'realmnet_victim';
const CORE_TABLE = 'realmnet_attacker';

function victimRuleset(): string {
  const { v4, v6 } = ATTACKER;
  const dst = [`ip daddr ${v4.vic}`, `ip6 daddr ${v6.vic}`];
  // @th,64,8 is the first byte of the UDP payload, @th,136,8 the ninth (paths/wire.ts: type).
  const rules = dst.flatMap((d) => [
    `${d} meta l4proto udp counter name v_all`,
    `${d} udp sport 4342 counter name v_rm`,
    `${d} udp dport 4341 counter name v_agent`,
    `${d} udp dport 4341 @th,64,8 0x28 counter name v_peer`,
    `${d} udp dport 4341 @th,64,8 0x28 @th,136,8 1 counter name v_probe`,
  ]);
  return (
    `table inet ${VICTIM_TABLE} {\n` +
    ['v_all', 'v_rm', 'v_agent', 'v_peer', 'v_probe'].map((c) => `  counter ${c} { }\n`).join('') +
    `  chain pre {\n    type filter hook prerouting priority -300; policy accept;\n` +
    rules.map((r) => `    ${r}\n`).join('') +
    `  }\n}\n`
  );
}

function coreRuleset(): string {
  const { v4, v6, dev } = ATTACKER;
  const iif = `iifname "${dev.coreAtk}"`;
  return (
    `table inet ${CORE_TABLE} {\n` +
    ['a_all', 'a_spoofed_victim', 'a_own'].map((c) => `  counter ${c} { }\n`).join('') +
    `  chain pre {\n    type filter hook prerouting priority -300; policy accept;\n` +
    `    ${iif} counter name a_all\n` +
    `    ${iif} ip saddr ${v4.vic} counter name a_spoofed_victim\n` +
    `    ${iif} ip6 saddr ${v6.vic} counter name a_spoofed_victim\n` +
    `    ${iif} ip saddr ${v4.atk} counter name a_own\n` +
    `    ${iif} ip6 saddr ${v6.atk} counter name a_own\n` +
    `  }\n}\n`
  );
}

/** Named counters of one nftables table, from `nft -j list counters table …`. */
export async function readNamedCounters(ns: string, table: string): Promise<Map<string, ByteCount>> {
  const { stdout } = await execNs(ns, 'nft', ['-j', 'list', 'counters', 'table', 'inet', table]);
  const out = new Map<string, ByteCount>();
  const doc: unknown = JSON.parse(stdout);
  const items = typeof doc === 'object' && doc !== null && 'nftables' in doc && Array.isArray(doc.nftables) ? (doc.nftables as unknown[]) : [];
  for (const item of items) {
    if (typeof item !== 'object' || item === null || !('counter' in item)) continue;
    const c: unknown = item.counter;
    if (typeof c !== 'object' || c === null || !('name' in c) || !('packets' in c) || !('bytes' in c)) continue;
    if (typeof c.name === 'string' && typeof c.packets === 'number' && typeof c.bytes === 'number') out.set(c.name, { packets: c.packets, bytes: c.bytes });
  }
  return out;
}

/** Adds atk and vic to a running standard testbed (see the header). */
export async function attachAttacker(tb: Testbed): Promise<AttackerBed> {
  const nsOf = (n: AttackerNode): string => `${tb.prefix}${n}`;
  const core = tb.ns('core');
  const names = [nsOf('atk'), nsOf('vic')];
  for (const n of names) await deleteNamespace(n);
  const procs = new Set<NsProcess>();
  const untrack = trackNamespaces(names, procs);
  let isDown = false;
  const bed: AttackerBed = {
    addr: ATTACKER,
    ns: nsOf,
    exec: (node, cmd, args, o) => execNs(nsOf(node), cmd, args, o),
    spawn(node, cmd, args, o) {
      if (isDown) throw new TestbedError(`attacker of testbed ${tb.prefix} is down: cannot start ${cmd} in ${node}`);
      const p = spawnNs(nsOf(node), node, cmd, args, o);
      procs.add(p);
      void p.exited.then(() => procs.delete(p));
      return p;
    },
    async counters() {
      const [v, c] = await Promise.all([readNamedCounters(nsOf('vic'), VICTIM_TABLE), readNamedCounters(core, CORE_TABLE)]);
      const get = (m: Map<string, ByteCount>, k: string): ByteCount => m.get(k) ?? { packets: 0, bytes: 0 };
      return {
        victim: { all: get(v, 'v_all'), rm: get(v, 'v_rm'), agent: get(v, 'v_agent'), peer: get(v, 'v_peer'), probe: get(v, 'v_probe') },
        atk: { all: get(c, 'a_all'), spoofedVictim: get(c, 'a_spoofed_victim'), own: get(c, 'a_own') },
      };
    },
    async down() {
      if (isDown) return;
      isDown = true;
      await Promise.all([...procs].map((p) => p.stop(1_000).catch(() => {})));
      for (const n of names) await deleteNamespace(n);
      // core's ends of the links went with atk and vic; its counter table and routes are harmless
      // leftovers only while core itself lives (tb.down() removes it).
      await execNs(core, 'nft', ['delete', 'table', 'inet', CORE_TABLE], { allowFail: true });
      untrack();
    },
  };
  try {
    await build(core, nsOf);
  } catch (e) {
    await bed.down();
    throw e;
  }
  return bed;
}

async function build(core: string, nsOf: (n: AttackerNode) => string): Promise<void> {
  const A = ATTACKER;
  for (const n of ['atk', 'vic'] as const) {
    await execHost('ip', ['netns', 'add', nsOf(n)]);
    // The testbed's sysctls (topology.ts build()): no DAD, no RA, no reverse-path filter.
    await execNs(nsOf(n), 'sysctl', [
      '-qw',
      'net.ipv6.conf.default.accept_dad=0',
      'net.ipv6.conf.all.accept_dad=0',
      'net.ipv6.conf.default.accept_ra=0',
      'net.ipv6.conf.all.accept_ra=0',
      'net.ipv4.conf.default.rp_filter=0',
      'net.ipv4.conf.all.rp_filter=0',
    ]);
  }
  // core and rm were built with rp_filter off already; say it again for the new interfaces, since the
  // forged sources only work if nobody on the way checks them.
  await execNs(core, 'sysctl', ['-qw', 'net.ipv4.conf.all.rp_filter=0', 'net.ipv4.conf.default.rp_filter=0']);
  await execNs(core, 'ip', ['link', 'add', A.dev.coreAtk, 'index', String(INDEX.coreAtk), 'type', 'veth', 'peer', 'name', A.dev.atk, 'index', String(INDEX.atk), 'netns', nsOf('atk')]);
  await execNs(core, 'ip', ['link', 'add', A.dev.coreVic, 'index', String(INDEX.coreVic), 'type', 'veth', 'peer', 'name', A.dev.vic, 'index', String(INDEX.vic), 'netns', nsOf('vic')]);
  const p4 = A.prefixLen.v4;
  const p6 = A.prefixLen.v6;
  const coreLines = [
    `address add ${A.v4.coreAtk}/${p4} dev ${A.dev.coreAtk}`,
    `address add ${A.v6.coreAtk}/${p6} dev ${A.dev.coreAtk} nodad`,
    `link set ${A.dev.coreAtk} up`,
    `address add ${A.v4.coreVic}/${p4} dev ${A.dev.coreVic}`,
    `address add ${A.v6.coreVic}/${p6} dev ${A.dev.coreVic} nodad`,
    `link set ${A.dev.coreVic} up`,
    `route add blackhole ${A.floodSources.v4}`,
    `route add blackhole ${A.floodSources.v6}`,
  ];
  await execNs(core, 'ip', ['-batch', '-'], { input: coreLines.join('\n') + '\n' });
  await execNs(core, 'sysctl', ['-qw', `net.ipv4.conf.${A.dev.coreAtk}.rp_filter=0`, `net.ipv4.conf.${A.dev.coreVic}.rp_filter=0`]);
  // The RM and the agents send runs of equal-size datagrams as one UDP GSO message, which crosses
  // the veths unsegmented: the victim's counter would see one packet with one set of headers for
  // many datagrams (bytes short by 28 per datagram, packets far fewer). One segment per packet on
  // core's link to the victim makes core split them, so the victim counts what a real wire carries.
  await execNs(core, 'ip', ['link', 'set', 'dev', A.dev.coreVic, 'gso_max_segs', '1']);
  for (const n of ['atk', 'vic'] as const) {
    const gw4 = n === 'atk' ? A.v4.coreAtk : A.v4.coreVic;
    const gw6 = n === 'atk' ? A.v6.coreAtk : A.v6.coreVic;
    const lines = [
      'link set lo up',
      `address add ${A.v4[n]}/${p4} dev ${A.dev[n]}`,
      `address add ${A.v6[n]}/${p6} dev ${A.dev[n]} nodad`,
      `link set ${A.dev[n]} up`,
      `route add default via ${gw4} dev ${A.dev[n]}`,
      `route add default via ${gw6} dev ${A.dev[n]}`,
    ];
    await execNs(nsOf(n), 'ip', ['-batch', '-'], { input: lines.join('\n') + '\n' });
  }
  await execNs(nsOf('vic'), 'nft', ['-f', '-'], { input: victimRuleset() });
  await execNs(core, 'nft', ['-f', '-'], { input: coreRuleset() });

  // As topology.ts does: wait until the new links carry both families (a fresh veth holds IPv6
  // until the link watcher has seen its carrier), end to end from atk and vic to core.
  const deadline = Date.now() + 5_000;
  await Promise.all(
    (['atk', 'vic'] as const).flatMap((n) =>
      (['v4', 'v6'] as const).map(async (fam) => {
        const dst = fam === 'v4' ? (n === 'atk' ? A.v4.coreAtk : A.v4.coreVic) : n === 'atk' ? A.v6.coreAtk : A.v6.coreVic;
        for (;;) {
          const r = await execNs(nsOf(n), 'ping', [fam === 'v4' ? '-4' : '-6', '-c1', '-W0.2', '-n', dst], { allowFail: true });
          if (r.code === 0) return;
          if (Date.now() > deadline) throw new TestbedError(`${n}–core does not carry ${fam === 'v4' ? 'IPv4' : 'IPv6'} (${nsOf(n)} cannot ping ${dst})`);
        }
      }),
    ),
  );
}
