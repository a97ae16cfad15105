/**
 * realmnet agent configurations for mh and ch on the standard testbed, built from its address
 * constant so that the demo, e2e tests and benches never re-type an address. Shape: examples/agent.yaml.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { readFile } from 'node:fs/promises';
import { parse, stringify } from 'yaml';
import { TESTBED } from './topology.ts';
import { deriveHostId, parsePrefix } from '../../shared/ids.ts';
import { generateKeyPair } from '../../shared/crypto/ed25519.ts';
import { saveKeyPair } from '../../shared/keyfile.ts';

/** Host IDs on the testbed (realm prefix fd00::/8, a ULA range: DESIGN.md §4). */
export const HOST_IDS = { mh: 'fd00:1::a', ch: 'fd00:1::c' } as const;
export const REALM_PREFIXES = ['fd00::/8'] as const;
export const DATA_PORT = 4341;

export interface AgentConfigOptions {
  /** tun.offload: TSO super-packets carried as one UDP datagram (default false). */
  offload?: boolean;
  /** tun.mtu (default 1400). */
  mtu?: number;
  /** Locators and gateways from the IPv6 underlay instead of IPv4. */
  ipv6Underlay?: boolean;
  /** realm.instanceId (default 1). */
  instanceId?: number;
  listenPort?: number;
  tunName?: string;
  logLevel?: 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal' | 'silent';
  logFormat?: 'json' | 'pretty';
  /**
   * The agents' `failover` section (path probing and the path state machine, issue #5), written to
   * both agents when given; absent, the agent's own defaults apply. Probing authenticates with the
   * hosts' keys, so it only does anything in realm mode (writeRealmConfigs).
   */
  failover?: Partial<FailoverSettings>;
  /** dataplane.encryption (default on, as the agent's). Static configs get keys for it (writeAgentConfigs). */
  encryption?: 'on' | 'off';
  /** More of the agents' `dataplane` section (e.g. rekeyAfterS for the rekey tests). */
  dataplane?: Record<string, unknown>;
}

/** The agent's `failover` section (agent/config.ts validates it). */
export interface FailoverSettings {
  /** Probe interval of each path of a peer that has traffic. */
  probeIntervalMs: number;
  /** Probe interval of an idle peer's paths. */
  idleProbeIntervalMs: number;
  /** No reply for this long: the path is suspect. */
  suspectAfterMs: number;
  /** No reply for this long: the path is down and traffic moves. */
  downAfterMs: number;
  /** A path that came back waits this long before it carries traffic again. */
  holdDownMs: number;
  /** Consecutive replies a down path needs before its hold-down starts. */
  upAfterReplies: number;
  /** Duplicate onto a second path while the active one is suspect (not implemented by the agent yet: docs/failover.md). */
  makeBeforeBreak?: boolean;
}

/** The defaults the agent documents; tests and benches that need them read them from here. */
export const FAILOVER_DEFAULTS: Readonly<FailoverSettings> = Object.freeze({
  probeIntervalMs: 100,
  idleProbeIntervalMs: 5000,
  suspectAfterMs: 150,
  downAfterMs: 300,
  holdDownMs: 2000,
  upAfterReplies: 3,
});

export interface UplinkConfig {
  name: string;
  interface: string;
  locator: string;
  gateway: string;
  priority: number;
  weight: number;
}

export interface LocatorConfig {
  address: string;
  port: number;
  priority: number;
  weight: number;
}

/** The YAML file's shape (the agent validates it with its own schema, agent/config.ts). */
export interface AgentConfigFile {
  hostId: string;
  realm: { prefixes: string[]; instanceId: number };
  tun: { name: string; mtu: number; offload: boolean };
  listenPort: number;
  uplinks: UplinkConfig[];
  peers: { hostId: string; locators: LocatorConfig[]; publicKey?: string }[];
  log: { level: string; format: 'json' | 'pretty' };
  failover?: Partial<FailoverSettings>;
  dataplane: Record<string, unknown>;
  identity?: { key: string; prefix?: string };
}

export function agentConfigs(opts: AgentConfigOptions = {}): { mh: AgentConfigFile; ch: AgentConfigFile } {
  const fam = opts.ipv6Underlay ? 'v6' : 'v4';
  const A = TESTBED;
  const port = opts.listenPort ?? DATA_PORT;
  const common = {
    realm: { prefixes: [...REALM_PREFIXES], instanceId: opts.instanceId ?? 1 },
    tun: { name: opts.tunName ?? 'rn0', mtu: opts.mtu ?? 1400, offload: opts.offload ?? false },
    listenPort: port,
    log: { level: opts.logLevel ?? 'info', format: opts.logFormat ?? 'json' },
    ...(opts.failover === undefined ? {} : { failover: { ...opts.failover } }),
    dataplane: { encryption: opts.encryption ?? 'on', ...opts.dataplane },
  };
  // Priorities follow the topology's order: mh's uplink a is the primary (its main-table default),
  // then b, then c; ch's first link (eth0, its main-table default) before its second (eth1). Each
  // host's static peer entry lists the other's locators with the same priorities.
  const mhUplinks: UplinkConfig[] = (['ispa', 'ispb', 'ispc'] as const).map((isp, i) => ({
    name: isp,
    interface: A.dev.mh[isp],
    locator: A[fam].mh[isp],
    gateway: A[fam][isp].mh,
    priority: i + 1,
    weight: 1,
  }));
  const chUplinks: UplinkConfig[] = [
    { name: 'core', interface: A.dev.ch.core, locator: A[fam].ch.core, gateway: A[fam].core.ch, priority: 1, weight: 1 },
    { name: 'core2', interface: A.dev.ch.core2, locator: A[fam].ch.core2, gateway: A[fam].core.ch2, priority: 2, weight: 1 },
  ];
  const locatorsOf = (ups: readonly UplinkConfig[]): LocatorConfig[] => ups.map((u) => ({ address: u.locator, port, priority: u.priority, weight: u.weight }));
  const mh: AgentConfigFile = {
    hostId: HOST_IDS.mh,
    ...common,
    uplinks: mhUplinks,
    peers: [{ hostId: HOST_IDS.ch, locators: locatorsOf(chUplinks) }],
  };
  const ch: AgentConfigFile = {
    hostId: HOST_IDS.ch,
    ...common,
    uplinks: chUplinks,
    peers: [{ hostId: HOST_IDS.mh, locators: locatorsOf(mhUplinks) }],
  };
  return { mh, ch };
}

/**
 * Writes `mh.yaml` and `ch.yaml` into `dir` (created if needed) and returns their paths. With
 * encryption on (the default) each host also gets a key file there, and each static peer entry the
 * other's public key (a static peer is trusted with its configured key, as in a WireGuard peer list).
 */
export async function writeAgentConfigs(dir: string, opts: AgentConfigOptions = {}): Promise<{ mh: string; ch: string }> {
  await mkdir(dir, { recursive: true });
  const { mh, ch } = agentConfigs(opts);
  if ((opts.encryption ?? 'on') === 'on') {
    const keys = { mh: generateKeyPair(), ch: generateKeyPair() };
    for (const [n, k] of Object.entries(keys)) saveKeyPair(join(dir, `${n}.key`), k, { overwrite: true });
    mh.identity = { key: join(dir, 'mh.key') };
    ch.identity = { key: join(dir, 'ch.key') };
    mh.peers[0].publicKey = Buffer.from(keys.ch.publicKey).toString('base64');
    ch.peers[0].publicKey = Buffer.from(keys.mh.publicKey).toString('base64');
  }
  const paths = { mh: join(dir, 'mh.yaml'), ch: join(dir, 'ch.yaml') };
  await writeFile(paths.mh, stringify(mh));
  await writeFile(paths.ch, stringify(ch));
  return paths;
}

// ---- with a Realm Manager -------------------------------------------------------------------------

/** The testbed realm: host IDs are derived from each host's key under this prefix. */
export const REALM = { name: 'testbed', prefix: 'fd00:1::/32' } as const;

export interface RealmFiles {
  /** Agent configs (identity + RM, no static peers) and the RM config. */
  readonly mh: string;
  readonly ch: string;
  readonly rm: string;
  /** The host IDs the keys give in the realm. */
  readonly ids: { readonly mh: string; readonly ch: string };
  readonly rmPublicKey: string;
  readonly rmAddress: string;
}

export interface RealmOptions extends AgentConfigOptions {
  /** Extra RM config (e.g. policy), merged over the defaults; a function gets the hosts' IDs. */
  rmExtra?: Record<string, unknown> | ((ids: { mh: string; ch: string }) => Record<string, unknown>);
  /**
   * Hosts that join with a token instead of being admitted at the RM's start: left out of
   * admission.keys, and their config pins no RM key (the token will). addJoinToken() puts the token
   * (from `realmnet rm invite`) into their config.
   */
  joiners?: readonly ('mh' | 'ch')[];
  /** RM registration timing (seconds); short values make expiry testable. */
  refreshS?: number;
  expiryS?: number;
}

/**
 * Keys for mh, ch and the RM, the RM's config (listening on rm's underlay address, store in `dir`),
 * and agent configs that find each other only through the RM.
 */
export async function writeRealmConfigs(dir: string, opts: RealmOptions = {}): Promise<RealmFiles> {
  await mkdir(dir, { recursive: true });
  const fam = opts.ipv6Underlay ? 'v6' : 'v4';
  const prefix = parsePrefix(REALM.prefix);
  const keys = { mh: generateKeyPair(), ch: generateKeyPair(), rm: generateKeyPair() };
  for (const [n, k] of Object.entries(keys)) saveKeyPair(join(dir, `${n}.key`), k, { overwrite: true });
  const rmAddress = TESTBED[fam].rm.core;
  const rmPublicKey = Buffer.from(keys.rm.publicKey).toString('base64');
  const ids = { mh: deriveHostId(prefix, keys.mh.publicKey).toString(), ch: deriveHostId(prefix, keys.ch.publicKey).toString() };
  const { mh, ch } = agentConfigs(opts);
  const joiners = opts.joiners ?? [];
  const realmMode = (c: AgentConfigFile, node: 'mh' | 'ch') => {
    const { hostId: _static, peers: _peers, ...rest } = c;
    return {
      ...rest,
      identity: { key: join(dir, `${node}.key`), prefix: REALM.prefix },
      rm: { servers: [joiners.includes(node) ? { address: rmAddress } : { address: rmAddress, publicKey: rmPublicKey }] },
    };
  };
  const rm = {
    realm: REALM.name,
    prefix: REALM.prefix,
    listen: [rmAddress],
    key: join(dir, 'rm.key'),
    store: { path: join(dir, 'rm.db') },
    registration: { refreshS: opts.refreshS ?? 60, expiryS: opts.expiryS ?? 180 },
    // mh and ch are members from the start (their key files; only "publicKey" is read).
    admission: { keys: (['mh', 'ch'] as const).filter((n) => !joiners.includes(n)).map((n) => join(dir, `${n}.key`)) },
    log: { level: opts.logLevel ?? 'info', format: opts.logFormat ?? 'json' },
    ...(typeof opts.rmExtra === 'function' ? opts.rmExtra(ids) : opts.rmExtra),
  };
  const paths = { mh: join(dir, 'mh.yaml'), ch: join(dir, 'ch.yaml'), rm: join(dir, 'rm.yaml') };
  await writeFile(paths.mh, stringify(realmMode(mh, 'mh')));
  await writeFile(paths.ch, stringify(realmMode(ch, 'ch')));
  await writeFile(paths.rm, stringify(rm));
  return {
    ...paths,
    ids,
    rmPublicKey,
    rmAddress,
  };
}

/** Puts a join token (`realmnet rm invite`) into an agent config written by writeRealmConfigs. */
export async function addJoinToken(file: string, token: string): Promise<void> {
  const doc = parse(await readFile(file, 'utf8')) as { rm: Record<string, unknown> };
  doc.rm.join = token.trim();
  await writeFile(file, stringify(doc));
}
