/**
 * The slice-2 scene (paper Fig. 3, docs/slice2.md), in network namespaces: a correspondent `cor`;
 * alice's multihomed laptop `lap` (two links) and her phone `pho`; two replica hosts `r1`, `r2` of a
 * data ID; a Realm Manager `rm`; one router `core` joining them. Used by the slice-2 end-to-end
 * tests, the demo and `npm run bench -- slice2`.
 *
 * Networks, one /26 (IPv4, RFC 5737) and one /64 (IPv6, RFC 3849) per link:
 *   core–cor 192.0.2.0/26     2001:db8:20::/64     core–pho 198.51.100.0/26    2001:db8:23::/64
 *   core–lap 192.0.2.64/26    2001:db8:21::/64     core–r1  198.51.100.64/26   2001:db8:24::/64
 *   core–lap 192.0.2.128/26   2001:db8:22::/64     core–r2  198.51.100.128/26  2001:db8:25::/64
 *   core–rm  203.0.113.0/26   2001:db8:26::/64
 * IDs: hosts under fd00:1::/32, alice's user ID under fd00:2:1::/48, the data ID under fd00:2:2::/48.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { upTopology, type Testbed, type Topology, type NsProcess } from './topology.ts';
import { deriveHostId, parsePrefix, type HostId } from '../../shared/ids.ts';
import { generateKeyPair, type KeyPair } from '../../shared/crypto/ed25519.ts';
import { saveKeyPair } from '../../shared/keyfile.ts';
import { signGroup, type GroupBinding } from '../../shared/group.ts';
import { writeGroupFile } from '../../shared/groupfile.ts';
import { nextSeq } from '../../shared/binding.ts';

export type Slice2Node = 'cor' | 'lap' | 'pho' | 'r1' | 'r2' | 'core' | 'rm';
export type Slice2Host = 'cor' | 'lap' | 'pho' | 'r1' | 'r2';
export const SLICE2_HOSTS: readonly Slice2Host[] = ['cor', 'lap', 'pho', 'r1', 'r2'];

export const SLICE2 = {
  nodes: ['cor', 'lap', 'pho', 'r1', 'r2', 'core', 'rm'],
  routers: ['core'],
  dev: {
    core: { cor: 'to-cor', lap: 'to-lap', lap2: 'to-lap2', pho: 'to-pho', r1: 'to-r1', r2: 'to-r2', rm: 'to-rm' },
    cor: { core: 'eth0' },
    lap: { core: 'eth0', core2: 'eth1' },
    pho: { core: 'eth0' },
    r1: { core: 'eth0' },
    r2: { core: 'eth0' },
    rm: { core: 'eth0' },
  },
  v4: {
    core: { cor: '192.0.2.1', lap: '192.0.2.65', lap2: '192.0.2.129', pho: '198.51.100.1', r1: '198.51.100.65', r2: '198.51.100.129', rm: '203.0.113.1' },
    cor: { core: '192.0.2.2' },
    lap: { core: '192.0.2.66', core2: '192.0.2.130' },
    pho: { core: '198.51.100.2' },
    r1: { core: '198.51.100.66' },
    r2: { core: '198.51.100.130' },
    rm: { core: '203.0.113.2' },
  },
  v6: {
    core: { cor: '2001:db8:20::1', lap: '2001:db8:21::1', lap2: '2001:db8:22::1', pho: '2001:db8:23::1', r1: '2001:db8:24::1', r2: '2001:db8:25::1', rm: '2001:db8:26::1' },
    cor: { core: '2001:db8:20::2' },
    lap: { core: '2001:db8:21::2', core2: '2001:db8:22::2' },
    pho: { core: '2001:db8:23::2' },
    r1: { core: '2001:db8:24::2' },
    r2: { core: '2001:db8:25::2' },
    rm: { core: '2001:db8:26::2' },
  },
  prefixLen: { v4: 26, v6: 64 },
  links: [
    { a: 'core', b: 'cor', v4: '192.0.2.0/26', v6: '2001:db8:20::/64' },
    { a: 'core', b: 'lap', v4: '192.0.2.64/26', v6: '2001:db8:21::/64' },
    { a: 'core', b: 'lap', n: 2, v4: '192.0.2.128/26', v6: '2001:db8:22::/64' },
    { a: 'core', b: 'pho', v4: '198.51.100.0/26', v6: '2001:db8:23::/64' },
    { a: 'core', b: 'r1', v4: '198.51.100.64/26', v6: '2001:db8:24::/64' },
    { a: 'core', b: 'r2', v4: '198.51.100.128/26', v6: '2001:db8:25::/64' },
    { a: 'core', b: 'rm', v4: '203.0.113.0/26', v6: '2001:db8:26::/64' },
  ],
  routes: [
    { node: 'cor', to: 'default', via: ['core', 'cor'] },
    { node: 'lap', to: 'default', via: ['core', 'lap'] },
    { node: 'pho', to: 'default', via: ['core', 'pho'] },
    { node: 'r1', to: 'default', via: ['core', 'r1'] },
    { node: 'r2', to: 'default', via: ['core', 'r2'] },
    { node: 'rm', to: 'default', via: ['core', 'rm'] },
  ],
} as const satisfies Topology<Slice2Node>;

export const SLICE2_REALM = { name: 'fig3', prefix: 'fd00:1::/32', userPrefix: 'fd00:2:1::/48', dataPrefix: 'fd00:2:2::/48' } as const;
export const DATA_NAME = 'site/file.bin';
export const HTTP_PORT = 8080;

export function upSlice2(prefix: string): Promise<Testbed<typeof SLICE2>> {
  return upTopology(SLICE2, { prefix });
}

export interface Slice2Files {
  readonly dir: string;
  readonly rm: string;
  readonly agents: Readonly<Record<Slice2Host, string>>;
  readonly ids: Readonly<Record<Slice2Host, string>>;
  readonly userId: string;
  /** bob: phone (never consented) p1, laptop p2. */
  readonly bobId: string;
  readonly dataId: string;
  /** opts.extraDataIds more data IDs on r1 and r2. */
  readonly extraDataIds: readonly string[];
  /** Binding files and the owners' keys (the CLI edits them: realmnet user|data ...). */
  readonly userBinding: string;
  readonly userKey: string;
  readonly dataBinding: string;
  readonly publisherKey: string;
}

export interface Slice2Options {
  /** The agents' failover section (defaults: the agent's). */
  readonly failover?: Record<string, unknown>;
  readonly logLevel?: string;
  /** Hosts that serve nothing (their consent withheld), e.g. to test that they are never chosen. */
  readonly noConsent?: readonly Slice2Host[];
  /** More data IDs (names probe-0, probe-1, …), each served by r1 and r2: never-resolved IDs for first-packet measures. */
  readonly extraDataIds?: number;
  /** Replica weights in the data binding (default 1 and 1): the bench makes r1 the one new flows pick. */
  readonly dataWeights?: readonly [number, number];
  /** More agent config per host (e.g. { cor: { slice2: { maxFlows: 64 } } }). */
  readonly agentExtra?: Partial<Record<Slice2Host, Record<string, unknown>>>;
  /** RM registration timing (seconds). */
  readonly refreshS?: number;
  readonly expiryS?: number;
}

/** Keys, RM and agent configs, alice's user binding (laptop p1, phone p2) and the data binding (r1, r2). */
export async function writeSlice2(opts: Slice2Options = {}): Promise<Slice2Files> {
  const dir = await mkdtemp(join(tmpdir(), 'realmnet-slice2-'));
  const hostPrefix = parsePrefix(SLICE2_REALM.prefix);
  const keys = {} as Record<Slice2Host | 'rm' | 'alice' | 'bob' | 'publisher', KeyPair>;
  for (const n of [...SLICE2_HOSTS, 'rm', 'alice', 'bob', 'publisher'] as const) {
    keys[n] = generateKeyPair();
    saveKeyPair(join(dir, `${n}.key`), keys[n], { overwrite: true });
  }
  const ids = Object.fromEntries(SLICE2_HOSTS.map((n) => [n, deriveHostId(hostPrefix, keys[n].publicKey)])) as Record<Slice2Host, HostId>;
  const seq = nextSeq(0);
  const user: GroupBinding = signGroup(keys.alice, {
    kind: 'user',
    prefix: parsePrefix(SLICE2_REALM.userPrefix),
    hosts: [
      { hostId: ids.lap, priority: 1, weight: 1 },
      { hostId: ids.pho, priority: 2, weight: 1 },
    ],
    seq,
    ttl: 300,
  });
  // bob lists his phone first, but the phone never consented (its config does not serve bob): it must
  // never be chosen; bob is reached on the laptop.
  const bob: GroupBinding = signGroup(keys.bob, {
    kind: 'user',
    prefix: parsePrefix(SLICE2_REALM.userPrefix),
    hosts: [
      { hostId: ids.pho, priority: 1, weight: 1 },
      { hostId: ids.lap, priority: 2, weight: 1 },
    ],
    seq,
    ttl: 300,
  });
  const data: GroupBinding = signGroup(keys.publisher, {
    kind: 'data',
    prefix: parsePrefix(SLICE2_REALM.dataPrefix),
    name: DATA_NAME,
    hosts: [
      { hostId: ids.r1, priority: 1, weight: opts.dataWeights?.[0] ?? 1 },
      { hostId: ids.r2, priority: 1, weight: opts.dataWeights?.[1] ?? 1 },
    ],
    seq,
    ttl: 300,
  });
  const userBinding = join(dir, 'alice.user');
  const dataBinding = join(dir, 'file.data');
  writeGroupFile(userBinding, user);
  writeGroupFile(dataBinding, data);
  const bobBinding = join(dir, 'bob.user');
  writeGroupFile(bobBinding, bob);
  const extra: string[] = [];
  const extraIds: string[] = [];
  for (let i = 0; i < (opts.extraDataIds ?? 0); i++) {
    const g = signGroup(keys.publisher, {
      kind: 'data',
      prefix: parsePrefix(SLICE2_REALM.dataPrefix),
      name: `probe-${i}`,
      hosts: [
        { hostId: ids.r1, priority: 1, weight: 1 },
        { hostId: ids.r2, priority: 1, weight: 1 },
      ],
      seq,
      ttl: 300,
    });
    const f = join(dir, `probe-${i}.data`);
    writeGroupFile(f, g);
    extra.push(f);
    extraIds.push(g.id.toString());
  }
  const rmAddress = SLICE2.v4.rm.core;
  const rmConfig = {
    realm: SLICE2_REALM.name,
    prefix: SLICE2_REALM.prefix,
    slice2: { userPrefix: SLICE2_REALM.userPrefix, dataPrefix: SLICE2_REALM.dataPrefix },
    listen: [rmAddress],
    key: join(dir, 'rm.key'),
    store: { path: join(dir, 'rm.db') },
    registration: { refreshS: opts.refreshS ?? 60, expiryS: opts.expiryS ?? 180 },
    admission: { keys: SLICE2_HOSTS.map((n) => join(dir, `${n}.key`)) },
    log: { level: opts.logLevel ?? 'info', format: 'json' },
  };
  const rmFile = join(dir, 'rm.yaml');
  await writeFile(rmFile, stringify(rmConfig));
  const serves: Record<Slice2Host, string[]> = { cor: [], lap: [userBinding, bobBinding], pho: [userBinding], r1: [dataBinding, ...extra], r2: [dataBinding, ...extra] };
  const agents = {} as Record<Slice2Host, string>;
  for (const n of SLICE2_HOSTS) {
    const links = n === 'lap' ? (['core', 'core2'] as const) : (['core'] as const);
    const uplinks = links.map((end, i) => ({
      name: end === 'core' ? 'isp1' : 'isp2',
      interface: (SLICE2.dev[n] as Record<string, string>)[end],
      locator: (SLICE2.v4[n] as Record<string, string>)[end],
      gateway: (SLICE2.v4.core as Record<string, string>)[end === 'core' ? n : `${n}2`],
      priority: i + 1,
      weight: 1,
    }));
    const cfg = {
      realm: { prefixes: ['fd00::/8'], instanceId: 1 },
      tun: { name: 'rn0', mtu: 1400 },
      uplinks,
      identity: { key: join(dir, `${n}.key`), prefix: SLICE2_REALM.prefix },
      rm: { servers: [{ address: rmAddress, publicKey: Buffer.from(keys.rm.publicKey).toString('base64') }] },
      serve: (opts.noConsent ?? []).includes(n) ? [] : serves[n].map((binding) => ({ binding })),
      log: { level: opts.logLevel ?? 'info', format: 'json' },
      ...(opts.failover === undefined ? {} : { failover: opts.failover }),
      control: { socket: `@realmnet/${n}` },
      ...opts.agentExtra?.[n],
    };
    agents[n] = join(dir, `${n}.yaml`);
    await writeFile(agents[n], stringify(cfg));
  }
  return {
    dir,
    rm: rmFile,
    agents,
    ids: Object.fromEntries(SLICE2_HOSTS.map((n) => [n, ids[n].toString()])) as Record<Slice2Host, string>,
    userId: user.id.toString(),
    bobId: bob.id.toString(),
    extraDataIds: extraIds,
    dataId: data.id.toString(),
    userBinding,
    userKey: join(dir, 'alice.key'),
    dataBinding,
    publisherKey: join(dir, 'publisher.key'),
  };
}

export interface Slice2Scene {
  readonly tb: Testbed<typeof SLICE2>;
  readonly files: Slice2Files;
  rm: NsProcess;
  readonly agents: Record<Slice2Host, NsProcess>;
  /** Restarts one agent with its config. */
  restartAgent(n: Slice2Host): Promise<void>;
  /** `realmnet status --json` of a host, read from its control socket (fast, no tsx). */
  status(n: Slice2Host): Promise<Slice2Status>;
  stop(): Promise<void>;
}

/** The parts of an agent's status the scene reads. */
export interface Slice2Status {
  readonly hostId: string;
  readonly rm: { readonly registered: boolean } | null;
  readonly slice2: {
    readonly ids: readonly { readonly id: string; readonly hosts: readonly { readonly hostId: string; readonly present: boolean; readonly alive: boolean; readonly rttMs: number | null }[] }[];
    readonly flows: readonly { readonly remote: string; readonly hostId: string | null; readonly proto: number; readonly state: string; readonly why: string | null }[];
    readonly serving: readonly { readonly id: string; readonly rm: string }[];
    readonly counters: Readonly<Record<string, number>>;
  } | null;
}

/** Starts the RM and the five agents and waits until every agent is registered and serving. */
export async function startSlice2(tb: Testbed<typeof SLICE2>, files: Slice2Files, cli: string, cwd: string): Promise<Slice2Scene> {
  const spawnAgent = (n: Slice2Host): NsProcess => tb.spawn(n, process.execPath, [cli, 'agent', '--config', files.agents[n]], { cwd });
  const scene: Slice2Scene = {
    tb,
    files,
    rm: tb.spawn('rm', process.execPath, [cli, 'rm', '--config', files.rm], { cwd }),
    agents: {} as Record<Slice2Host, NsProcess>,
    async restartAgent(n) {
      await scene.agents[n].stop(5000);
      scene.agents[n] = spawnAgent(n);
    },
    async status(n) {
      const r = await tb.exec(n, process.execPath, ['-e', STATUS_SCRIPT, `@realmnet/${n}`], { timeoutMs: 5_000 });
      return JSON.parse(r.stdout) as Slice2Status;
    },
    async stop() {
      await Promise.all([...Object.values(scene.agents).map((p) => p.stop(5000)), scene.rm.stop(5000)]);
      await rm(files.dir, { recursive: true, force: true });
    },
  };
  // The RM first, so the agents' first HELLO finds it.
  await new Promise((r) => setTimeout(r, 300));
  for (const n of SLICE2_HOSTS) scene.agents[n] = spawnAgent(n);
  const deadline = Date.now() + 30_000;
  for (;;) {
    const dead = [scene.rm, ...Object.values(scene.agents)].find((p) => !p.running());
    if (dead !== undefined) {
      const tail = `${dead.node}: ${dead.stderrTail()}${dead.stdoutTail()}`;
      await scene.stop();
      throw new Error(`the slice-2 scene did not start:\n${tail}`);
    }
    const st = await Promise.all(SLICE2_HOSTS.map((n) => scene.status(n).catch(() => null)));
    const ready = st.every((s, i) => s !== null && s.rm?.registered === true && (s.slice2?.serving ?? []).every((x) => x.rm === 'ok' || (SLICE2_HOSTS[i] === 'cor')));
    if (ready) return scene;
    if (Date.now() > deadline) {
      const tails = [scene.rm, ...Object.values(scene.agents)].map((p) => `${p.node}: ${p.stderrTail().slice(-2000)}${p.stdoutTail().slice(-2000)}`).join('\n');
      await scene.stop();
      throw new Error(`the slice-2 scene was not ready within 30 s:\n${tails}`);
    }
    await new Promise((r) => setTimeout(r, 250));
  }
}

/** Prints an agent's `status` (JSON) from its abstract control socket; argv[1] is @realmnet/NAME. */
export const STATUS_SCRIPT = `
const c = require('node:net').createConnection('\\0' + process.argv[1].slice(1));
let b = '';
c.setEncoding('utf8');
c.on('connect', () => c.write('status\\n'));
c.on('data', (d) => (b += d));
c.on('end', () => process.stdout.write(b));
c.on('error', (e) => { process.stderr.write(String(e)); process.exit(1); });
setTimeout(() => { process.stderr.write('no answer within 3 s'); process.exit(1); }, 3000).unref();
`;
