/**
 * The network-namespace testbed (DESIGN.md §4): every node is a network namespace, every link a veth
 * pair created directly inside the two namespaces, so nothing is ever made in the root namespace and
 * interface names cannot collide between concurrent runs (each run picks its own namespace prefix).
 *
 *                 mh (multihomed host)
 *        eth-a /     | eth-c   \ eth-b
 *          ispa     ispc       ispb        (ISP routers)
 *              \     |        /
 *                   core                   (core router)
 *          to-ch  / | to-ch2  \ to-rm
 *          eth0  /  | eth1     \ eth0
 *               ch--+           rm         (correspondent, two links to core; Realm Manager host)
 *
 * mh has three uplinks (a, b, c); ch has two parallel links to core. A row of `dev`/`v4`/`v6` is keyed
 * by the neighbour at the other end, and by neighbour + link number for a second link to the same
 * neighbour: `TESTBED.v4.ch.core` is ch's address on its first link, `TESTBED.v4.ch.core2` on its second,
 * `TESTBED.dev.core.ch2` core's interface on that second link.
 *
 * Addresses are documentation ranges (RFC 5737, RFC 3849) and live only in TESTBED below: tests,
 * benches and the demo read them from there. Nothing here sends traffic outside the namespaces it made.
 *
 * Faults (DESIGN.md §4): carrier loss = linkDown; silent blackhole = an nftables drop rule in a router;
 * loss = nftables `numgen random`; rate = tc tbf. `tc netem` is not available on these kernels.
 */
import { execFile, execFileSync, spawn as spawnChild, type ChildProcess } from 'node:child_process';
import { isIP } from 'node:net';

// 1. The topologies as data.

/**
 * The key of a node's end of a link in its rows: the neighbour's name, or the neighbour's name and the
 * link's number (`core2`) for a second link between the same two nodes.
 */
export type EndKey<N extends string> = N | `${N}${number}`;

/** A topology: nodes, interface names and addresses keyed by node then by the end key of the link (EndKey). */
export interface Topology<N extends string> {
  readonly nodes: readonly N[];
  /** Nodes that forward (ip_forward and IPv6 forwarding on). */
  readonly routers: readonly N[];
  /** dev[node][end]: the interface of `node` on its link to the neighbour `end` names. */
  readonly dev: { readonly [K in N]: { readonly [M in EndKey<N>]?: string } };
  /** v4[node][end]: the address of `node` on that link (likewise v6). */
  readonly v4: { readonly [K in N]: { readonly [M in EndKey<N>]?: string } };
  readonly v6: { readonly [K in N]: { readonly [M in EndKey<N>]?: string } };
  readonly prefixLen: { readonly v4: number; readonly v6: number };
  /**
   * Every link once, with its networks. `n` (2, 3...) numbers a further link between the same two
   * nodes: its ends are keyed `${b}${n}` in a's rows and `${a}${n}` in b's.
   */
  readonly links: readonly { readonly a: N; readonly b: N; readonly n?: number; readonly v4: string; readonly v6: string }[];
  /**
   * Static routes, each installed for both families: `to` is 'default' or the network of the link
   * [x, end]; `via` [x, end] is the address of x on its link `end` (an EndKey of x's rows).
   */
  readonly routes: readonly { readonly node: N; readonly to: 'default' | readonly [N, EndKey<N>]; readonly via: readonly [N, EndKey<N>] }[];
}

export type NodeName = 'mh' | 'ispa' | 'ispb' | 'ispc' | 'core' | 'ch' | 'rm';

/**
 * The standard topology. Read addresses from here, never re-type them:
 * `TESTBED.v4.mh.ispa` is mh's uplink-a locator, `TESTBED.v4.ispa.mh` its gateway, `TESTBED.v4.ch.core` ch
 * (its first link), `TESTBED.v4.ch.core2` ch's second locator.
 * mh's main-table default route goes via ispa (uplink a is the primary), ch's via eth0 (its first link),
 * and neither has source-policy rules: the realmnet agent installs those for its uplinks itself.
 *
 * Networks, one /26 (IPv4, RFC 5737) and one /64 (IPv6, RFC 3849) per link:
 *   mh–ispa 192.0.2.0/26      2001:db8:a::/64     ispa–core 198.51.100.0/26    2001:db8:1a::/64
 *   mh–ispb 192.0.2.64/26     2001:db8:b::/64     ispb–core 198.51.100.64/26   2001:db8:1b::/64
 *   mh–ispc 192.0.2.128/26    2001:db8:e::/64     ispc–core 198.51.100.128/26  2001:db8:1c::/64
 *   core–ch 203.0.113.0/26    2001:db8:c::/64     core–ch (2nd) 203.0.113.128/26  2001:db8:c2::/64
 *   core–rm 203.0.113.64/26   2001:db8:d::/64
 * (mh–ispc is 2001:db8:e:: because 2001:db8:c:: was already core–ch.) Free for later: 192.0.2.192/26,
 * 198.51.100.192/26, 203.0.113.192/26.
 */
export const TESTBED = {
  nodes: ['mh', 'ispa', 'ispb', 'ispc', 'core', 'ch', 'rm'],
  routers: ['ispa', 'ispb', 'ispc', 'core'],
  dev: {
    mh: { ispa: 'eth-a', ispb: 'eth-b', ispc: 'eth-c' },
    ispa: { mh: 'to-mh', core: 'to-core' },
    ispb: { mh: 'to-mh', core: 'to-core' },
    ispc: { mh: 'to-mh', core: 'to-core' },
    core: { ispa: 'to-ispa', ispb: 'to-ispb', ispc: 'to-ispc', ch: 'to-ch', ch2: 'to-ch2', rm: 'to-rm' },
    ch: { core: 'eth0', core2: 'eth1' },
    rm: { core: 'eth0' },
  },
  v4: {
    mh: { ispa: '192.0.2.1', ispb: '192.0.2.65', ispc: '192.0.2.129' },
    ispa: { mh: '192.0.2.2', core: '198.51.100.1' },
    ispb: { mh: '192.0.2.66', core: '198.51.100.65' },
    ispc: { mh: '192.0.2.130', core: '198.51.100.129' },
    core: { ispa: '198.51.100.2', ispb: '198.51.100.66', ispc: '198.51.100.130', ch: '203.0.113.1', ch2: '203.0.113.129', rm: '203.0.113.65' },
    ch: { core: '203.0.113.2', core2: '203.0.113.130' },
    rm: { core: '203.0.113.66' },
  },
  v6: {
    mh: { ispa: '2001:db8:a::1', ispb: '2001:db8:b::1', ispc: '2001:db8:e::1' },
    ispa: { mh: '2001:db8:a::2', core: '2001:db8:1a::1' },
    ispb: { mh: '2001:db8:b::2', core: '2001:db8:1b::1' },
    ispc: { mh: '2001:db8:e::2', core: '2001:db8:1c::1' },
    core: { ispa: '2001:db8:1a::2', ispb: '2001:db8:1b::2', ispc: '2001:db8:1c::2', ch: '2001:db8:c::1', ch2: '2001:db8:c2::1', rm: '2001:db8:d::1' },
    ch: { core: '2001:db8:c::2', core2: '2001:db8:c2::2' },
    rm: { core: '2001:db8:d::2' },
  },
  prefixLen: { v4: 26, v6: 64 },
  // Appended, never reordered: a link's position gives its veth ends their ifindexes (vethIndexes).
  links: [
    { a: 'mh', b: 'ispa', v4: '192.0.2.0/26', v6: '2001:db8:a::/64' },
    { a: 'mh', b: 'ispb', v4: '192.0.2.64/26', v6: '2001:db8:b::/64' },
    { a: 'ispa', b: 'core', v4: '198.51.100.0/26', v6: '2001:db8:1a::/64' },
    { a: 'ispb', b: 'core', v4: '198.51.100.64/26', v6: '2001:db8:1b::/64' },
    { a: 'core', b: 'ch', v4: '203.0.113.0/26', v6: '2001:db8:c::/64' },
    { a: 'core', b: 'rm', v4: '203.0.113.64/26', v6: '2001:db8:d::/64' },
    { a: 'mh', b: 'ispc', v4: '192.0.2.128/26', v6: '2001:db8:e::/64' },
    { a: 'ispc', b: 'core', v4: '198.51.100.128/26', v6: '2001:db8:1c::/64' },
    { a: 'core', b: 'ch', n: 2, v4: '203.0.113.128/26', v6: '2001:db8:c2::/64' },
  ],
  routes: [
    { node: 'mh', to: 'default', via: ['ispa', 'mh'] },
    { node: 'ispa', to: 'default', via: ['core', 'ispa'] },
    { node: 'ispb', to: 'default', via: ['core', 'ispb'] },
    { node: 'ispc', to: 'default', via: ['core', 'ispc'] },
    { node: 'core', to: ['mh', 'ispa'], via: ['ispa', 'core'] },
    { node: 'core', to: ['mh', 'ispb'], via: ['ispb', 'core'] },
    { node: 'core', to: ['mh', 'ispc'], via: ['ispc', 'core'] },
    // ch's second link is directly connected to core (no route needed there); ch's default stays on eth0.
    { node: 'ch', to: 'default', via: ['core', 'ch'] },
    { node: 'rm', to: 'default', via: ['core', 'rm'] },
  ],
} as const satisfies Topology<NodeName>;

/** `TESTBED[fam][node][end]` for computed keys; throws when the two are not linked. */
export function address(fam: 'v4' | 'v6', node: NodeName, neighbour: EndKey<NodeName>): string {
  const row: Readonly<Record<string, string | undefined>> = TESTBED[fam][node];
  const a = row[neighbour];
  if (a === undefined) throw new TestbedError(`${node} has no link to ${neighbour}`);
  return a;
}

export type PairNode = 'a' | 'b';

/** Two hosts on one link, for tests that need no routers. */
export const PAIR = {
  nodes: ['a', 'b'],
  routers: [],
  dev: { a: { b: 'eth0' }, b: { a: 'eth0' } },
  v4: { a: { b: '192.0.2.1' }, b: { a: '192.0.2.2' } },
  v6: { a: { b: '2001:db8:a::1' }, b: { a: '2001:db8:a::2' } },
  prefixLen: { v4: 26, v6: 64 },
  links: [{ a: 'a', b: 'b', v4: '192.0.2.0/26', v6: '2001:db8:a::/64' }],
  routes: [],
} as const satisfies Topology<PairNode>;

export type AnyTopology = Topology<string>;
export type NodeOf<T extends AnyTopology> = T['nodes'][number];

export const DEFAULT_PREFIX = 'rn-';

// 2. Running commands inside namespaces.

export class TestbedError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'TestbedError';
  }
}

export interface ExecOptions {
  /** Written to the command's standard input. */
  input?: string;
  /** Killed after this long (default 30 s). */
  timeoutMs?: number;
  /** Resolve with the exit code instead of throwing when the command fails. */
  allowFail?: boolean;
  cwd?: string;
  env?: NodeJS.ProcessEnv;
}

export interface ExecResult {
  stdout: string;
  stderr: string;
  /** 0 on success; the exit code, or -1 when killed or not started. */
  code: number;
}

/** Runs a command in the root namespace (used for `ip netns ...` itself). */
export function execHost(cmd: string, args: readonly string[], opts: ExecOptions = {}): Promise<ExecResult> {
  return new Promise((resolve, reject) => {
    const child = execFile(
      cmd,
      args,
      { timeout: opts.timeoutMs ?? 30_000, maxBuffer: 64 * 1024 * 1024, encoding: 'utf8', cwd: opts.cwd, env: opts.env, killSignal: 'SIGKILL' },
      (err, stdout, stderr) => {
        if (!err) return resolve({ stdout, stderr, code: 0 });
        const code = typeof err.code === 'number' ? err.code : -1;
        if (opts.allowFail) return resolve({ stdout, stderr, code });
        const why = err.killed ? `killed after ${opts.timeoutMs ?? 30_000} ms` : typeof err.code === 'string' ? err.code : `exit code ${code}`;
        reject(new TestbedError(`\`${[cmd, ...args].join(' ')}\` failed (${why}): ${(stderr || stdout).trim().slice(0, 2000)}`, { cause: err }));
      },
    );
    child.stdin?.on('error', () => {}); // the command may exit before reading its input
    if (opts.input !== undefined) child.stdin?.end(opts.input);
    else child.stdin?.end();
  });
}

/** Runs `cmd args` inside namespace `ns`. */
export function execNs(ns: string, cmd: string, args: readonly string[], opts: ExecOptions = {}): Promise<ExecResult> {
  // `ip -n` is the same as `ip netns exec NS ip`, without the extra exec.
  if (cmd === 'ip') return execHost('ip', ['-n', ns, ...args], opts);
  return execHost('ip', ['netns', 'exec', ns, cmd, ...args], opts);
}

export interface SpawnOptions {
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  /** 'pipe' (default) keeps the last 64 KiB of each stream for error messages. */
  stdio?: 'pipe' | 'ignore' | 'inherit';
}

/** A long-running process in a namespace. Its output is always drained, so it can never block on a full pipe. */
export interface NsProcess {
  readonly child: ChildProcess;
  readonly pid: number;
  readonly node: string;
  /** Resolves when the process has exited (never rejects). */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Whether the process is still running. */
  running(): boolean;
  stdoutTail(): string;
  stderrTail(): string;
  /** SIGTERM, then SIGKILL after `graceMs` (default 2 s); resolves when the process is gone. */
  stop(graceMs?: number): Promise<void>;
}

const TAIL_BYTES = 64 * 1024;

export function spawnNs(ns: string, node: string, cmd: string, args: readonly string[], opts: SpawnOptions = {}): NsProcess {
  // `ip netns exec` execs the command in place, so the pid is the command's own (CPU samples, kill).
  const child = spawnChild('ip', ['netns', 'exec', ns, cmd, ...args], {
    cwd: opts.cwd,
    env: opts.env,
    stdio: ['ignore', opts.stdio ?? 'pipe', opts.stdio ?? 'pipe'],
  });
  let out = '';
  let err = '';
  child.stdout?.setEncoding('utf8').on('data', (s: string) => {
    out = (out + s).slice(-TAIL_BYTES);
  });
  child.stderr?.setEncoding('utf8').on('data', (s: string) => {
    err = (err + s).slice(-TAIL_BYTES);
  });
  let done = false;
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('error', (e) => {
      err += `\n${String(e)}`;
      done = true;
      resolve({ code: -1, signal: null });
    });
    child.once('exit', (code, signal) => {
      done = true;
      resolve({ code, signal });
    });
  });
  const proc: NsProcess = {
    child,
    pid: child.pid ?? -1,
    node,
    exited,
    running: () => !done,
    stdoutTail: () => out,
    stderrTail: () => err,
    async stop(graceMs = 2_000) {
      if (done) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
      await exited;
      clearTimeout(timer);
    },
  };
  return proc;
}

// 3. Faults.

export interface BlackholeOptions {
  /** Only packets that arrive on this interface (on ispa, 'to-mh' is the mh→world direction). */
  iif?: string;
  /** Only packets that leave through this interface (on ispa, 'to-mh' is the world→mh direction). */
  oif?: string;
  /** Only packets from this address or prefix (IPv4 or IPv6). */
  src?: string;
  /** Only packets to this address or prefix (same family as src). */
  dst?: string;
}

export type LossDirection = 'both' | 'ingress' | 'egress';

const BLACKHOLE_TABLE = 'realmnet_blackhole';

function checkDev(dev: string): string {
  if (!/^[A-Za-z0-9_.-]{1,15}$/.test(dev)) throw new TestbedError(`"${dev}" is not an interface name`);
  return dev;
}

/** Returns 4 or 6 for an address or prefix, or throws. */
function familyOf(a: string): 4 | 6 {
  const [host, len, extra] = a.split('/');
  const fam = isIP(host ?? '');
  const max = fam === 4 ? 32 : 128;
  if (fam === 0 || extra !== undefined || (len !== undefined && !(/^\d+$/.test(len) && Number(len) <= max)))
    throw new TestbedError(`"${a}" is not an IPv4 or IPv6 address or prefix`);
  return fam === 4 ? 4 : 6;
}

export function blackholeRule(opts: BlackholeOptions): string {
  const parts: string[] = [];
  if (opts.iif !== undefined) parts.push(`iifname "${checkDev(opts.iif)}"`);
  if (opts.oif !== undefined) parts.push(`oifname "${checkDev(opts.oif)}"`);
  const fams = new Set<4 | 6>();
  if (opts.src !== undefined) {
    const f = familyOf(opts.src);
    fams.add(f);
    parts.push(`${f === 4 ? 'ip' : 'ip6'} saddr ${opts.src}`);
  }
  if (opts.dst !== undefined) {
    const f = familyOf(opts.dst);
    fams.add(f);
    parts.push(`${f === 4 ? 'ip' : 'ip6'} daddr ${opts.dst}`);
  }
  if (fams.size > 1) throw new TestbedError(`blackhole: src ${opts.src} and dst ${opts.dst} are of different families`);
  parts.push('counter drop');
  return parts.join(' ');
}

function lossTable(dev: string): string {
  return `realmnet_loss_${checkDev(dev).replace(/[^A-Za-z0-9_]/g, '_')}`;
}

export function lossRuleset(dev: string, percent: number, direction: LossDirection): string {
  if (!Number.isInteger(percent) || percent < 0 || percent > 100) throw new TestbedError(`loss percent ${percent} is not an integer in 0..100`);
  const hooks = direction === 'both' ? ['ingress', 'egress'] : [direction];
  // nft accepts `< N` only for N < 100 with `mod 100`.
  const rule = percent === 0 ? 'counter' : percent === 100 ? 'counter drop' : `numgen random mod 100 < ${percent} counter drop`;
  const chains = hooks.map((h) => `  chain ${h} {\n    type filter hook ${h} device "${checkDev(dev)}" priority 0;\n    ${rule}\n  }\n`);
  return `table netdev ${lossTable(dev)} {\n${chains.join('')}}\n`;
}

/** tbf needs a bucket of at least rate/HZ; 10 ms worth of the rate (at least 32 KiB) keeps it honest. */
export function tbfArgs(dev: string, mbit: number): string[] {
  if (!(mbit > 0)) throw new TestbedError(`rate ${mbit} Mbit/s must be positive`);
  const burst = Math.max(32 * 1024, Math.ceil((mbit * 1e6) / 8 / 100));
  return ['qdisc', 'replace', 'dev', checkDev(dev), 'root', 'tbf', 'rate', `${mbit}mbit`, 'burst', String(burst), 'latency', '50ms'];
}

// 4. The testbed.

export interface UpOptions {
  /** Namespace names are `${prefix}${node}`; default 'rn-'. Tests use a unique one, e.g. `rn${process.pid % 100000}-`. */
  prefix?: string;
  /** Remove the namespaces when this process exits or gets SIGINT/SIGTERM/SIGHUP (default true; the CLI turns it off). */
  cleanupOnExit?: boolean;
}

export interface Testbed<T extends AnyTopology = typeof TESTBED> {
  readonly prefix: string;
  /** The topology: addresses (`addr.v4.mh.ispa`), interface names (`addr.dev.mh.ispa`), links. */
  readonly addr: T;
  readonly nodes: readonly NodeOf<T>[];
  /** The namespace name of a node. */
  ns(node: NodeOf<T>): string;
  exec(node: NodeOf<T>, cmd: string, args: readonly string[], opts?: ExecOptions): Promise<ExecResult>;
  /** Starts a tracked process in a node; down() stops it. */
  spawn(node: NodeOf<T>, cmd: string, args: readonly string[], opts?: SpawnOptions): NsProcess;
  /**
   * `ip link set DEV down`. To show mh a carrier loss, take the far end down (`linkDown('ispa', 'to-mh')`):
   * mh's eth-a stays administratively up with NO-CARRIER and keeps its routes (marked linkdown), as
   * with a pulled cable. Taking mh's own end down also flushes mh's routes through it.
   */
  linkDown(node: NodeOf<T>, dev: string): Promise<void>;
  /** `ip link set DEV up`, then puts back the topology's static routes of that node through DEV. */
  linkUp(node: NodeOf<T>, dev: string): Promise<void>;
  /** Silent blackhole: drops forwarded packets in that node (a router); each call adds one rule. */
  blackhole(node: NodeOf<T>, opts?: BlackholeOptions): Promise<void>;
  /** Removes every blackhole rule of that node. */
  clearBlackhole(node: NodeOf<T>): Promise<void>;
  /**
   * Drops `percent` % of the packets crossing `dev` (netdev ingress and/or egress hook). On veth the
   * unit is a GSO super-packet unless offloads are off, so TCP sees heavier loss than the figure says.
   */
  randomLoss(node: NodeOf<T>, dev: string, percent: number, opts?: { direction?: LossDirection }): Promise<void>;
  clearLoss(node: NodeOf<T>, dev: string): Promise<void>;
  /** Egress rate limit on `dev` with tc tbf (applies to the direction leaving that interface). */
  rateLimit(node: NodeOf<T>, dev: string, mbit: number): Promise<void>;
  clearRateLimit(node: NodeOf<T>, dev: string): Promise<void>;
  /** Stops tracked processes, kills anything left in the namespaces, deletes them. Never throws; idempotent. */
  down(): Promise<void>;
}

/** Brings up the standard topology. Idempotent: namespaces left with the same prefix are removed first. */
export function up(opts: UpOptions = {}): Promise<Testbed<typeof TESTBED>> {
  return upTopology(TESTBED, opts);
}

/** Two hosts, `a` and `b`, on one link (192.0.2.1/26 — 192.0.2.2/26, 2001:db8:a::1/64 — ::2). */
export function upPair(opts: UpOptions = {}): Promise<Testbed<typeof PAIR>> {
  return upTopology(PAIR, opts);
}

export async function upTopology<T extends AnyTopology>(topo: T, opts: UpOptions = {}): Promise<Testbed<T>> {
  const prefix = opts.prefix ?? DEFAULT_PREFIX;
  checkPrefix(prefix);
  const nodes: readonly NodeOf<T>[] = topo.nodes;
  const nsOf = (n: string): string => `${prefix}${n}`;
  await removeNamespaces(nodes.map(nsOf));
  const procs = new Set<NsProcess>();
  let isDown = false;

  const tb: Testbed<T> = {
    prefix,
    addr: topo,
    nodes,
    ns: nsOf,
    exec: (node, cmd, args, o) => execNs(nsOf(node), cmd, args, o),
    spawn(node, cmd, args, o) {
      if (isDown) throw new TestbedError(`testbed ${prefix} is down: cannot start ${cmd} in ${node}`);
      const p = spawnNs(nsOf(node), node, cmd, args, o);
      procs.add(p);
      void p.exited.then(() => procs.delete(p));
      return p;
    },
    async linkDown(node, dev) {
      await execNs(nsOf(node), 'ip', ['link', 'set', checkDev(dev), 'down']);
    },
    async linkUp(node, dev) {
      await execNs(nsOf(node), 'ip', ['link', 'set', checkDev(dev), 'up']);
      // Setting a device down flushed the static routes through it: put the topology's back.
      const lines = routeLines(topo, node, 'replace', dev);
      if (lines.length > 0) await execNs(nsOf(node), 'ip', ['-batch', '-'], { input: lines.join('\n') + '\n' });
    },
    async blackhole(node, o = {}) {
      const rule = blackholeRule(o);
      const script =
        `add table inet ${BLACKHOLE_TABLE}\n` +
        `add chain inet ${BLACKHOLE_TABLE} forward { type filter hook forward priority -10; policy accept; }\n` +
        `add rule inet ${BLACKHOLE_TABLE} forward ${rule}\n`;
      await execNs(nsOf(node), 'nft', ['-f', '-'], { input: script });
    },
    async clearBlackhole(node) {
      await deleteNftTable(nsOf(node), 'inet', BLACKHOLE_TABLE);
    },
    async randomLoss(node, dev, percent, o = {}) {
      const ns = nsOf(node);
      const script = lossRuleset(dev, percent, o.direction ?? 'both');
      await deleteNftTable(ns, 'netdev', lossTable(dev));
      await execNs(ns, 'nft', ['-f', '-'], { input: script });
    },
    async clearLoss(node, dev) {
      await deleteNftTable(nsOf(node), 'netdev', lossTable(dev));
    },
    async rateLimit(node, dev, mbit) {
      await execNs(nsOf(node), 'tc', tbfArgs(dev, mbit));
    },
    async clearRateLimit(node, dev) {
      // Fails harmlessly when no root qdisc was set.
      await execNs(nsOf(node), 'tc', ['qdisc', 'del', 'dev', checkDev(dev), 'root'], { allowFail: true });
    },
    async down() {
      if (isDown) return;
      isDown = true;
      live.delete(entry);
      await Promise.all([...procs].map((p) => p.stop(1_000).catch(() => {})));
      await removeNamespaces(nodes.map(nsOf)).catch(() => {});
    },
  };

  const entry: LiveTestbed = { namespaces: nodes.map(nsOf), procs };
  if (opts.cleanupOnExit ?? true) {
    live.add(entry);
    installExitHandlers();
  }
  try {
    await build(topo, nsOf);
  } catch (e) {
    await tb.down();
    throw e;
  }
  return tb;
}

function lookup(table: AnyTopology['dev'], x: string, y: string, what: string): string {
  const v = table[x]?.[y];
  if (v === undefined) throw new TestbedError(`topology has no ${what} for ${x} towards ${y}`);
  return v;
}

type AnyLink = AnyTopology['links'][number];

/** The row keys of a link's two ends: `a` is how a's rows name this link (b, or b + n), `b` likewise. */
export function endKeys(l: AnyLink): { a: string; b: string } {
  const n = l.n === undefined ? '' : String(l.n);
  return { a: `${l.b}${n}`, b: `${l.a}${n}` };
}

/** The link that x's rows call `end`, and the key the node at its other end uses for it. */
function linkAt(topo: AnyTopology, x: string, end: string): { link: AnyLink; other: string; otherKey: string } {
  for (const l of topo.links) {
    const k = endKeys(l);
    if (l.a === x && k.a === end) return { link: l, other: l.b, otherKey: k.b };
    if (l.b === x && k.b === end) return { link: l, other: l.a, otherKey: k.a };
  }
  throw new TestbedError(`topology has no link ${x}–${end}`);
}

/** `ip -batch` lines for the static routes of `node` (only those through `dev`, if given). */
function routeLines(topo: AnyTopology, node: string, verb: 'add' | 'replace', dev?: string): string[] {
  const lines: string[] = [];
  for (const r of topo.routes) {
    if (r.node !== node) continue;
    const [gwNode, gwEnd] = r.via;
    const hop = linkAt(topo, gwNode, gwEnd);
    if (hop.other !== node) throw new TestbedError(`route of ${node}: ${gwNode} is not its neighbour on link ${gwNode}–${gwEnd}`);
    const via = lookup(topo.dev, node, hop.otherKey, 'interface');
    if (dev !== undefined && via !== dev) continue;
    const gw4 = lookup(topo.v4, gwNode, gwEnd, 'IPv4 address');
    const gw6 = lookup(topo.v6, gwNode, gwEnd, 'IPv6 address');
    const to = r.to === 'default' ? { v4: '0.0.0.0/0', v6: '::/0' } : linkAt(topo, r.to[0], r.to[1]).link;
    lines.push(`route ${verb} ${to.v4} via ${gw4} dev ${via}`);
    lines.push(`route ${verb} ${to.v6} via ${gw6} dev ${via}`);
  }
  return lines;
}

async function build<T extends AnyTopology>(topo: T, nsOf: (n: string) => string): Promise<void> {
  const routers = new Set<string>(topo.routers);

  // Namespaces, then sysctls that must hold before interfaces exist (new devices copy `default`):
  // no DAD, so IPv6 addresses (and later a TUN's host ID) are usable at once; IPv6 addresses survive
  // `ip link set down` as IPv4 ones do; no reverse-path
  // filtering, because mh's uplinks are asymmetric by design (replies may return on the other ISP).
  for (const n of topo.nodes) await execHost('ip', ['netns', 'add', nsOf(n)]);
  await Promise.all(
    topo.nodes.map((n) =>
      execNs(nsOf(n), 'sysctl', [
        '-qw',
        'net.ipv6.conf.default.accept_dad=0',
        'net.ipv6.conf.default.keep_addr_on_down=1',
        'net.ipv6.conf.all.keep_addr_on_down=1',
        'net.ipv6.conf.all.accept_dad=0',
        'net.ipv6.conf.default.accept_ra=0',
        'net.ipv6.conf.all.accept_ra=0',
        'net.ipv4.conf.default.rp_filter=0',
        'net.ipv4.conf.all.rp_filter=0',
      ]),
    ),
  );

  // Links: each veth is created inside A with its peer moved straight into B, both ends with an
  // ifindex of their own (vethIndexes). Left to the kernel, each namespace numbers its devices from 2,
  // so mh's eth-a and ispa's to-mh both got index 2. The kernel's link watcher treats a carrier change
  // as urgent only when a device's ifindex differs from its iflink (for veth, the peer's ifindex,
  // net/core/link_watch.c linkwatch_urgent_event); otherwise it batches the event into its once-a-second
  // run. Measured with `ip -ts -o monitor link` in mh (ispa's to-mh set down/up 10 times): with equal
  // indexes mh saw eth-a's carrier change 4–1018 ms late and missed half of the down events (a down
  // and the up that followed within the batch cancel out); eth-b, whose indexes happened to differ, 3–6 ms.
  const indexes = vethIndexes(topo);
  for (const [i, l] of topo.links.entries()) {
    const k = endKeys(l);
    const aDev = checkDev(lookup(topo.dev, l.a, k.a, 'interface'));
    const bDev = checkDev(lookup(topo.dev, l.b, k.b, 'interface'));
    const ix = indexes[i];
    if (ix === undefined) throw new TestbedError(`no ifindex for link ${l.a}–${l.b}`);
    await execNs(nsOf(l.a), 'ip', ['link', 'add', aDev, 'index', String(ix.a), 'type', 'veth', 'peer', 'name', bDev, 'index', String(ix.b), 'netns', nsOf(l.b)]);
  }

  // Addresses and routes, one `ip -batch` per node.
  await Promise.all(
    topo.nodes.map(async (n) => {
      const lines = ['link set lo up'];
      for (const l of topo.links) {
        const other = l.a === n ? endKeys(l).a : l.b === n ? endKeys(l).b : undefined;
        if (other === undefined) continue;
        const dev = lookup(topo.dev, n, other, 'interface');
        lines.push(`address add ${lookup(topo.v4, n, other, 'IPv4 address')}/${topo.prefixLen.v4} dev ${dev}`);
        lines.push(`address add ${lookup(topo.v6, n, other, 'IPv6 address')}/${topo.prefixLen.v6} dev ${dev} nodad`);
        lines.push(`link set ${dev} up`);
      }
      lines.push(...routeLines(topo, n, 'add'));
      await execNs(nsOf(n), 'ip', ['-batch', '-'], { input: lines.join('\n') + '\n' });
      if (routers.has(n)) await execNs(nsOf(n), 'sysctl', ['-qw', 'net.ipv4.ip_forward=1', 'net.ipv6.conf.all.forwarding=1']);
    }),
  );

  // A fresh veth carries IPv6 only once the kernel's link watcher has seen its carrier (up to ~1 s
  // later: the first IPv6 packets are held until then). Ping across every link in both families so
  // that the testbed is usable the moment up() returns.
  const deadline = Date.now() + 5_000;
  await Promise.all(
    topo.links.flatMap((l) =>
      (['v4', 'v6'] as const).map(async (fam) => {
        const dst = lookup(topo[fam], l.b, endKeys(l).b, 'address');
        for (;;) {
          const r = await execNs(nsOf(l.a), 'ping', [fam === 'v4' ? '-4' : '-6', '-c1', '-W0.2', '-n', dst], { allowFail: true });
          if (r.code === 0) return;
          if (Date.now() > deadline) throw new TestbedError(`link ${l.a}–${l.b} does not carry ${fam === 'v4' ? 'IPv4' : 'IPv6'} (${nsOf(l.a)} cannot ping ${dst})`);
        }
      }),
    ),
  );
}

/** First ifindex the testbed gives a veth end: clear of lo (1) and of what the agents create (TUN) later. */
export const VETH_INDEX_BASE = 100;

/**
 * One distinct ifindex per veth end over the whole topology (link i: BASE + 2i at a, BASE + 2i + 1 at b),
 * so that no end shares its index with its peer (see build()). Distinct in the whole testbed, not
 * only per pair, so that `ip link` output names every interface unambiguously.
 */
export function vethIndexes(topo: AnyTopology): { a: number; b: number }[] {
  return topo.links.map((_, i) => ({ a: VETH_INDEX_BASE + 2 * i, b: VETH_INDEX_BASE + 2 * i + 1 }));
}

async function deleteNftTable(ns: string, family: 'inet' | 'netdev', table: string): Promise<void> {
  const { stdout } = await execNs(ns, 'nft', ['list', 'tables', family]);
  if (stdout.split('\n').some((l) => l.trim() === `table ${family} ${table}`)) await execNs(ns, 'nft', ['delete', 'table', family, table]);
}

// 5. Cleanup.

function checkPrefix(prefix: string): void {
  // Namespace names become file names under /run/netns: keep them plain.
  if (!/^[A-Za-z0-9_.-]{1,40}$/.test(prefix)) throw new TestbedError(`namespace prefix "${prefix}" must be 1–40 of [A-Za-z0-9_.-]`);
}

/** Namespace names currently present (`ip netns list`). */
export async function listNamespaces(): Promise<string[]> {
  const { stdout } = await execHost('ip', ['netns', 'list']);
  return parseNetnsList(stdout);
}

function parseNetnsList(stdout: string): string[] {
  return stdout
    .split('\n')
    .map((l) => l.trim().split(/\s+/)[0] ?? '')
    .filter((n) => n.length > 0);
}

/** Kills whatever still runs in the namespaces (all started by this testbed) and deletes them. */
async function removeNamespaces(names: readonly string[]): Promise<void> {
  const present = new Set(await listNamespaces());
  for (const ns of names) if (present.has(ns)) await deleteNamespace(ns);
}

/**
 * Kills whatever still runs in namespace `ns` (e.g. the orphaned children of a process that had to be
 * SIGKILLed: they would keep the namespace alive) and deletes it. Never throws.
 */
export async function deleteNamespace(ns: string): Promise<void> {
  const { stdout } = await execHost('ip', ['netns', 'pids', ns], { allowFail: true });
  for (const pid of stdout.split(/\s+/).filter((s) => /^\d+$/.test(s))) {
    try {
      process.kill(Number(pid), 'SIGKILL');
    } catch {
      // already gone
    }
  }
  await execHost('ip', ['netns', 'del', ns], { allowFail: true });
}

/**
 * Nodes attached to a standard testbed later (scripts/testbed/attacker.ts: the attacker and its
 * victim), so that downAll() and status() also know their namespaces.
 */
export const OPTIONAL_NODES = ['atk', 'vic'] as const;

/** All names the known topologies would create with this prefix. */
function namesFor(prefix: string): string[] {
  const nodes = new Set<string>([...TESTBED.nodes, ...PAIR.nodes, ...OPTIONAL_NODES]);
  return [...nodes].map((n) => `${prefix}${n}`);
}

/** Removes every testbed namespace with this prefix (standard and pair topologies). Never throws. */
export async function downAll(prefix: string = DEFAULT_PREFIX): Promise<void> {
  checkPrefix(prefix);
  await removeNamespaces(namesFor(prefix)).catch(() => {});
}

/** The testbed namespaces with this prefix that exist now. */
export async function status(prefix: string = DEFAULT_PREFIX): Promise<string[]> {
  checkPrefix(prefix);
  const wanted = new Set(namesFor(prefix));
  return (await listNamespaces()).filter((n) => wanted.has(n));
}

interface LiveTestbed {
  namespaces: string[];
  procs: Set<NsProcess>;
}

const live = new Set<LiveTestbed>();
let handlersInstalled = false;

/** Synchronous: runs from process 'exit', where nothing asynchronous happens any more. */
function cleanupSync(): void {
  for (const t of live) {
    for (const p of t.procs) {
      try {
        p.child.kill('SIGKILL');
      } catch {
        // gone
      }
    }
    for (const ns of t.namespaces) {
      try {
        const pids = execFileSync('ip', ['netns', 'pids', ns], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
        for (const pid of pids.split(/\s+/).filter((s) => /^\d+$/.test(s))) {
          try {
            process.kill(Number(pid), 'SIGKILL');
          } catch {
            // gone
          }
        }
      } catch {
        // namespace already gone
      }
      try {
        execFileSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
      } catch {
        // already gone
      }
    }
  }
  live.clear();
}

/**
 * Has namespaces made outside upTopology() (attached nodes) removed with the rest when this process
 * exits or gets a signal; returns a function that stops tracking them (after a clean removal).
 */
export function trackNamespaces(namespaces: readonly string[], procs: Set<NsProcess> = new Set()): () => void {
  const entry: LiveTestbed = { namespaces: [...namespaces], procs };
  live.add(entry);
  installExitHandlers();
  return () => void live.delete(entry);
}

function installExitHandlers(): void {
  if (handlersInstalled) return;
  handlersInstalled = true;
  process.on('exit', cleanupSync);
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    const onSignal = (): void => {
      cleanupSync();
      // Let the signal do what it would have done without us (or what other listeners decide).
      process.removeListener(sig, onSignal);
      if (process.listenerCount(sig) === 0) process.kill(process.pid, sig);
    };
    process.on(sig, onSignal);
  }
}
