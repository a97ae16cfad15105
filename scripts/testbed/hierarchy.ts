/**
 * The realm hierarchy scene (paper Fig. 6, docs/hierarchy.md) in network namespaces: a top RM, two
 * middle RMs and two bottom RMs with nested realm prefixes; host `a1` in realm A, multihomed `b1`
 * and `b2` in realm B; one router `core` joining them. Used by the hierarchy end-to-end tests and
 * `npm run bench -- hierarchy`.
 *
 *   realm   RM node  prefix            delegated by
 *   top     top      fd00::/16         (the top)
 *   mid1    mid1     fd00:1::/32       top
 *   mid2    mid2     fd00:2::/32       top
 *   a       rma      fd00:1:a::/48     mid1        hosts: a1
 *   b       rmb      fd00:2:b::/48     mid2        hosts: b1 (two uplinks), b2
 *
 * Networks, one /26 (IPv4, RFC 5737) and one /64 (IPv6, RFC 3849) per link:
 *   core–top  203.0.113.0/26     core–mid1 203.0.113.64/26    core–mid2 203.0.113.128/26
 *   core–rma  203.0.113.192/26   core–rmb  192.0.2.64/26      core–a1   192.0.2.0/26
 *   core–b1   198.51.100.0/26    core–b1 (2nd) 198.51.100.64/26   core–b2 198.51.100.128/26
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { upTopology, type NsProcess, type Testbed, type Topology } from './topology.ts';
import { deriveHostId, parsePrefix } from '../../shared/ids.ts';
import { generateKeyPair, type KeyPair } from '../../shared/crypto/ed25519.ts';
import { saveKeyPair } from '../../shared/keyfile.ts';
import { STATUS_SCRIPT } from './slice2.ts';

export type HierNode = 'top' | 'mid1' | 'mid2' | 'rma' | 'rmb' | 'a1' | 'b1' | 'b2' | 'core';
export type HierRm = 'top' | 'mid1' | 'mid2' | 'rma' | 'rmb';
export type HierHost = 'a1' | 'b1' | 'b2';
export const HIER_RMS: readonly HierRm[] = ['top', 'mid1', 'mid2', 'rma', 'rmb'];
export const HIER_HOSTS: readonly HierHost[] = ['a1', 'b1', 'b2'];

export const HIER = {
  nodes: ['top', 'mid1', 'mid2', 'rma', 'rmb', 'a1', 'b1', 'b2', 'core'],
  routers: ['core'],
  dev: {
    core: { top: 'to-top', mid1: 'to-mid1', mid2: 'to-mid2', rma: 'to-rma', rmb: 'to-rmb', a1: 'to-a1', b1: 'to-b1', b12: 'to-b1b', b2: 'to-b2' },
    top: { core: 'eth0' },
    mid1: { core: 'eth0' },
    mid2: { core: 'eth0' },
    rma: { core: 'eth0' },
    rmb: { core: 'eth0' },
    a1: { core: 'eth0' },
    b1: { core: 'eth0', core2: 'eth1' },
    b2: { core: 'eth0' },
  },
  v4: {
    core: { top: '203.0.113.1', mid1: '203.0.113.65', mid2: '203.0.113.129', rma: '203.0.113.193', rmb: '192.0.2.65', a1: '192.0.2.1', b1: '198.51.100.1', b12: '198.51.100.65', b2: '198.51.100.129' },
    top: { core: '203.0.113.2' },
    mid1: { core: '203.0.113.66' },
    mid2: { core: '203.0.113.130' },
    rma: { core: '203.0.113.194' },
    rmb: { core: '192.0.2.66' },
    a1: { core: '192.0.2.2' },
    b1: { core: '198.51.100.2', core2: '198.51.100.66' },
    b2: { core: '198.51.100.130' },
  },
  v6: {
    core: { top: '2001:db8:40::1', mid1: '2001:db8:41::1', mid2: '2001:db8:42::1', rma: '2001:db8:43::1', rmb: '2001:db8:44::1', a1: '2001:db8:45::1', b1: '2001:db8:46::1', b12: '2001:db8:47::1', b2: '2001:db8:48::1' },
    top: { core: '2001:db8:40::2' },
    mid1: { core: '2001:db8:41::2' },
    mid2: { core: '2001:db8:42::2' },
    rma: { core: '2001:db8:43::2' },
    rmb: { core: '2001:db8:44::2' },
    a1: { core: '2001:db8:45::2' },
    b1: { core: '2001:db8:46::2', core2: '2001:db8:47::2' },
    b2: { core: '2001:db8:48::2' },
  },
  prefixLen: { v4: 26, v6: 64 },
  links: [
    { a: 'core', b: 'top', v4: '203.0.113.0/26', v6: '2001:db8:40::/64' },
    { a: 'core', b: 'mid1', v4: '203.0.113.64/26', v6: '2001:db8:41::/64' },
    { a: 'core', b: 'mid2', v4: '203.0.113.128/26', v6: '2001:db8:42::/64' },
    { a: 'core', b: 'rma', v4: '203.0.113.192/26', v6: '2001:db8:43::/64' },
    { a: 'core', b: 'rmb', v4: '192.0.2.64/26', v6: '2001:db8:44::/64' },
    { a: 'core', b: 'a1', v4: '192.0.2.0/26', v6: '2001:db8:45::/64' },
    { a: 'core', b: 'b1', v4: '198.51.100.0/26', v6: '2001:db8:46::/64' },
    { a: 'core', b: 'b1', n: 2, v4: '198.51.100.64/26', v6: '2001:db8:47::/64' },
    { a: 'core', b: 'b2', v4: '198.51.100.128/26', v6: '2001:db8:48::/64' },
  ],
  routes: [
    { node: 'top', to: 'default', via: ['core', 'top'] },
    { node: 'mid1', to: 'default', via: ['core', 'mid1'] },
    { node: 'mid2', to: 'default', via: ['core', 'mid2'] },
    { node: 'rma', to: 'default', via: ['core', 'rma'] },
    { node: 'rmb', to: 'default', via: ['core', 'rmb'] },
    { node: 'a1', to: 'default', via: ['core', 'a1'] },
    { node: 'b1', to: 'default', via: ['core', 'b1'] },
    { node: 'b2', to: 'default', via: ['core', 'b2'] },
  ],
} as const satisfies Topology<HierNode>;

export const HIER_PREFIX: Readonly<Record<HierRm, string>> = { top: 'fd00::/16', mid1: 'fd00:1::/32', mid2: 'fd00:2::/32', rma: 'fd00:1:a::/48', rmb: 'fd00:2:b::/48' };
const REALM_NAME: Readonly<Record<HierRm, string>> = { top: 'top', mid1: 'mid1', mid2: 'mid2', rma: 'a', rmb: 'b' };
const HOME: Readonly<Record<HierHost, 'rma' | 'rmb'>> = { a1: 'rma', b1: 'rmb', b2: 'rmb' };
const CONTROL_PORT = 4342;

export function upHierarchy(prefix: string): Promise<Testbed<typeof HIER>> {
  return upTopology(HIER, { prefix });
}

export interface HierFiles {
  readonly dir: string;
  readonly rms: Readonly<Record<HierRm, string>>;
  readonly agents: Readonly<Record<HierHost, string>>;
  readonly ids: Readonly<Record<HierHost, string>>;
  /** Key files of the hosts and of the RMs. */
  readonly keys: Readonly<Record<HierHost | HierRm, string>>;
  readonly rmPublicKeys: Readonly<Record<HierRm, string>>;
}

export interface HierOptions {
  /** Referral TTL at the top and middle RMs (seconds): short, so a test can outlive it. */
  readonly referralTtlS?: number;
  /** Realm B's class for its hosts (default: learned). */
  readonly bClass?: 'static' | 'nomadic' | 'mobile';
  readonly logLevel?: string;
  /** Extra hosts admitted in realm B (key files written, no agent): the bench registers them itself. */
  readonly extraB?: number;
  /** Extra hosts admitted in realm A (key files written, no agent). */
  readonly extraA?: number;
  /** More agent config per host. */
  readonly agentExtra?: Partial<Record<HierHost, Record<string, unknown>>>;
}

const b64 = (k: KeyPair): string => Buffer.from(k.publicKey).toString('base64');

/** Keys and configs for the five RMs and the three agents. */
export async function writeHierarchy(o: HierOptions = {}): Promise<HierFiles & { readonly extra: { readonly a: readonly string[]; readonly b: readonly string[] } }> {
  const dir = await mkdtemp(join(tmpdir(), 'realmnet-hier-'));
  const keys = {} as Record<HierHost | HierRm, KeyPair>;
  const keyFiles = {} as Record<HierHost | HierRm, string>;
  for (const n of [...HIER_RMS, ...HIER_HOSTS]) {
    keys[n] = generateKeyPair();
    keyFiles[n] = join(dir, `${n}.key`);
    saveKeyPair(keyFiles[n], keys[n], { overwrite: true });
  }
  const extra = { a: [] as string[], b: [] as string[] };
  for (const [side, count] of [['a', o.extraA ?? 0], ['b', o.extraB ?? 0]] as const) {
    for (let i = 0; i < count; i++) {
      const f = join(dir, `extra-${side}-${i}.key`);
      saveKeyPair(f, generateKeyPair(), { overwrite: true });
      extra[side].push(f);
    }
  }
  const at = (n: HierRm) => ({ rms: [{ address: HIER.v4[n].core, port: CONTROL_PORT }], publicKey: b64(keys[n]) });
  const h = { referralTtlS: o.referralTtlS ?? 3600, queryTimeoutMs: 200, queryAttempts: 2, negativeTtlS: 5 };
  const hierarchy: Record<HierRm, Record<string, unknown>> = {
    top: { ...h, delegations: [{ prefix: HIER_PREFIX.mid1, name: 'mid1', ...at('mid1') }, { prefix: HIER_PREFIX.mid2, name: 'mid2', ...at('mid2') }] },
    mid1: { ...h, root: at('top'), delegations: [{ prefix: HIER_PREFIX.rma, name: 'a', ...at('rma') }] },
    mid2: { ...h, root: at('top'), delegations: [{ prefix: HIER_PREFIX.rmb, name: 'b', ...at('rmb') }] },
    rma: { ...h, root: at('top') },
    rmb: { ...h, root: at('top') },
  };
  const members: Record<HierRm, string[]> = {
    top: [],
    mid1: [],
    mid2: [],
    rma: [keyFiles.a1, ...extra.a],
    rmb: [keyFiles.b1, keyFiles.b2, ...extra.b],
  };
  const rms = {} as Record<HierRm, string>;
  for (const n of HIER_RMS) {
    const cfg = {
      realm: REALM_NAME[n],
      prefix: HIER_PREFIX[n],
      listen: [HIER.v4[n].core],
      key: keyFiles[n],
      store: { path: join(dir, `${n}.db`) },
      admission: { keys: members[n] },
      hierarchy: hierarchy[n],
      // Realm A lets realm B see its hosts; realm B lets realm A (a rule naming A's prefix) and, by
      // default, no other realm: location privacy per asking realm.
      policy:
        n === 'rma'
          ? { lookup: { otherRealms: 'allow' } }
          : n === 'rmb'
            ? { lookup: { otherRealms: 'deny', rules: [{ askers: [HIER_PREFIX.rma], targets: [HIER_PREFIX.rmb] }] }, ...(o.bClass === undefined ? {} : { classes: [{ targets: [HIER_PREFIX.rmb], class: o.bClass }] }) }
            : {},
      log: { level: o.logLevel ?? 'info', format: 'json' },
    };
    rms[n] = join(dir, `${n}.yaml`);
    await writeFile(rms[n], stringify(cfg));
  }
  const agents = {} as Record<HierHost, string>;
  const ids = {} as Record<HierHost, string>;
  for (const n of HIER_HOSTS) {
    const home = HOME[n];
    ids[n] = deriveHostId(parsePrefix(HIER_PREFIX[home]), keys[n].publicKey).toString();
    const links = n === 'b1' ? (['core', 'core2'] as const) : (['core'] as const);
    const uplinks = links.map((end, i) => ({
      name: end === 'core' ? 'isp1' : 'isp2',
      interface: (HIER.dev[n] as Record<string, string>)[end],
      locator: (HIER.v4[n] as Record<string, string>)[end],
      gateway: (HIER.v4.core as Record<string, string>)[end === 'core' ? n : `${n}2`],
      priority: i + 1,
      weight: 1,
    }));
    const cfg = {
      realm: { prefixes: ['fd00::/8'], instanceId: 1 },
      tun: { name: 'rn0', mtu: 1400 },
      uplinks,
      identity: { key: keyFiles[n], prefix: HIER_PREFIX[home] },
      rm: { servers: [{ address: HIER.v4[home].core, publicKey: b64(keys[home]) }] },
      log: { level: o.logLevel ?? 'info', format: 'json' },
      control: { socket: `@realmnet/${n}` },
      ...o.agentExtra?.[n],
    };
    agents[n] = join(dir, `${n}.yaml`);
    await writeFile(agents[n], stringify(cfg));
  }
  return {
    dir,
    rms,
    agents,
    ids,
    keys: keyFiles,
    rmPublicKeys: Object.fromEntries(HIER_RMS.map((n) => [n, b64(keys[n])])) as Record<HierRm, string>,
    extra,
  };
}

export interface HierScene {
  readonly tb: Testbed<typeof HIER>;
  readonly files: HierFiles;
  readonly rms: Record<HierRm, NsProcess>;
  readonly agents: Partial<Record<HierHost, NsProcess>>;
  stop(): Promise<void>;
}

/**
 * Starts the five RMs (top first) and the agents named, and waits until both bottom RMs found their
 * delegation chain (their log says so) and every agent is registered.
 */
export async function startHierarchy(tb: Testbed<typeof HIER>, files: HierFiles, cli: string, cwd: string, hosts: readonly HierHost[] = HIER_HOSTS): Promise<HierScene> {
  const scene: HierScene = {
    tb,
    files,
    rms: {} as Record<HierRm, NsProcess>,
    agents: {},
    async stop() {
      await Promise.all([...Object.values(scene.agents).map((p) => p.stop(5000)), ...Object.values(scene.rms).map((p) => p.stop(5000))]);
      await rm(files.dir, { recursive: true, force: true });
    },
  };
  for (const n of HIER_RMS) scene.rms[n] = tb.spawn(n, process.execPath, [cli, 'rm', '--config', files.rms[n]], { cwd });
  const fail = async (why: string): Promise<never> => {
    const tails = [...Object.values(scene.rms), ...Object.values(scene.agents)].map((p) => `${p.node}: ${p.stderrTail().slice(-1500)}${p.stdoutTail().slice(-1500)}`).join('\n');
    await scene.stop();
    throw new Error(`${why}:\n${tails}`);
  };
  const deadline = Date.now() + 30_000;
  while (!(['rma', 'rmb'] as const).every((n) => rmLog(scene.rms[n]).includes('delegation chain from the top RM found'))) {
    const dead = Object.values(scene.rms).find((p) => !p.running());
    if (dead !== undefined) await fail(`RM ${dead.node} exited`);
    if (Date.now() > deadline) await fail('the bottom RMs did not find their delegation chains within 30 s');
    await new Promise((r) => setTimeout(r, 100));
  }
  for (const n of hosts) scene.agents[n] = tb.spawn(n, process.execPath, [cli, 'agent', '--config', files.agents[n]], { cwd });
  for (;;) {
    const dead = [...Object.values(scene.rms), ...Object.values(scene.agents)].find((p) => !p.running());
    if (dead !== undefined) await fail(`${dead.node} exited`);
    const st = await Promise.all(hosts.map((n) => agentStatus(tb, n).catch(() => null)));
    if (st.every((s) => s !== null && s.rm?.registered === true)) return scene;
    if (Date.now() > deadline) await fail('the agents did not register within 30 s');
    await new Promise((r) => setTimeout(r, 250));
  }
}

/** The parts of an agent's status the scene reads. */
export interface HierStatus {
  readonly hostId: string;
  readonly rm: { readonly registered: boolean; readonly resolver: Readonly<Record<string, number>> } | null;
}

export async function agentStatus(tb: Testbed<typeof HIER>, n: HierHost): Promise<HierStatus> {
  const r = await tb.exec(n, process.execPath, ['-e', STATUS_SCRIPT, `@realmnet/${n}`], { timeoutMs: 5_000 });
  return JSON.parse(r.stdout) as HierStatus;
}

/** An RM's recent log lines (it logs to stderr or stdout by config; both are read). */
export function rmLog(p: NsProcess): string {
  return p.stderrTail() + p.stdoutTail();
}
