/**
 * `ip` output as MonitorEvents, for the same reducer whatever the source:
 *
 * 1. The event stream: one line of `ip -o -N monitor link address route`. iproute2 6.1 has no JSON
 *    for monitor (`-j` is accepted and ignored), so we parse the one-line text form; `-o` joins
 *    continuation lines with a backslash, `-N` keeps route tables and types numeric whatever
 *    /etc/iproute2 maps them to.
 * 2. The snapshot: links, addresses and the IPv4 and IPv6 routes of every table, from one
 *    `ip -j -N -batch -` (SNAPSHOT_COMMANDS), as the events that would have built it (all "added").
 *
 * Both return a typed refusal rather than throw: the shell counts ignored lines and fails a snapshot.
 */
import { isIP } from 'node:net';
import { z } from 'zod';
import { TABLE_MAIN, type MonitorEvent, type RouteEvent } from './types.ts';

const NAMED_TABLES: Readonly<Record<string, number>> = { main: 254, local: 255, default: 253, unspec: 0 };
// rtnetlink.h RTN_*: `-N` prints route types as these numbers.
const ROUTE_TYPES = ['unspec', 'unicast', 'local', 'broadcast', 'anycast', 'multicast', 'blackhole', 'unreachable', 'prohibit', 'throw', 'nat', 'xresolve'];
const OPERSTATE_NO_CARRIER = new Set(['DOWN', 'LOWERLAYERDOWN', 'NOTPRESENT', 'DORMANT']);

/**
 * One line of `ip -o -N monitor link address route` (also accepts the `[timestamp]` of `-ts` and the
 * `[LINK]` labels of `monitor label`). Returns null for anything else (multicast and MPLS routes,
 * `Timestamp:` lines, garbage): the caller counts those.
 */
export function parseMonitorLine(raw: string): MonitorEvent | null {
  let line = raw.trim();
  while (line.startsWith('[')) {
    const close = line.indexOf(']');
    if (close < 0) return null;
    line = line.slice(close + 1).trimStart();
  }
  let deleted = false;
  if (line.startsWith('Deleted ')) {
    deleted = true;
    line = line.slice(8);
  }
  // `2: eth-a@if2: <NO-CARRIER,BROADCAST,MULTICAST,UP> mtu 1500 qdisc noqueue state DOWN …`
  const link = /^(\d+): ([^:\s]+): <([^>]*)>(.*)$/.exec(line);
  if (link !== null) {
    const flags = link[3].split(',');
    const state = /\bstate (\S+)/.exec(link[4])?.[1] ?? 'UNKNOWN';
    return { kind: 'link', deleted, ifindex: Number(link[1]), name: stripPeer(link[2]), adminUp: flags.includes('UP'), carrier: hasCarrier(flags, state) };
  }
  // `2: eth-a    inet 192.0.2.1/26 scope 0 eth-a\ valid_lft …`, `inet 10.0.0.1 peer 10.0.0.2/32 …`
  const addr = /^(\d+): (\S+)\s+(inet6?) (.*)$/.exec(line);
  if (addr !== null) {
    const family = addr[3] === 'inet6' ? 6 : 4;
    const words = tokens(addr[4]);
    if (words.length === 0) return null;
    const [address, len] = words[0].split('/');
    const plenWord = words[1] === 'peer' ? words[2]?.split('/')[1] : len;
    const prefixLen = plenWord === undefined ? (family === 4 ? 32 : 128) : Number(plenWord);
    if (!Number.isInteger(prefixLen)) return null;
    const usable = !words.includes('tentative') && !words.includes('dadfailed');
    return { kind: 'address', deleted, dev: addr[2], family, address, prefixLen, usable };
  }
  return parseRoute(tokens(line), deleted);
}

function parseRoute(words: string[], deleted: boolean): RouteEvent | null {
  let i = 0;
  let type = 'unicast';
  if (words.length > 1 && looksLikeDst(words[1]) && (ROUTE_TYPES.includes(words[0]) || /^\d+$/.test(words[0]))) {
    type = routeType(words[0]);
    i = 1;
  }
  const dst = words[i];
  if (dst === undefined || !looksLikeDst(dst)) return null;
  let table = TABLE_MAIN;
  let metric = 0;
  const gateways: string[] = [];
  const devs: string[] = [];
  for (i++; i < words.length - 1; i++) {
    const w = words[i];
    if (w === 'via') {
      // `via inet6 fe80::1` (an IPv4 route with an IPv6 next hop) names the family first.
      if (words[i + 1] === 'inet' || words[i + 1] === 'inet6') i++;
      gateways.push(words[++i]);
    } else if (w === 'dev') {
      devs.push(words[++i]);
    } else if (w === 'table') {
      table = tableNumber(words[++i]);
    } else if (w === 'metric') {
      metric = Number(words[++i]) || 0;
    }
  }
  // The kernel sends RTA_PREF with every IPv6 route and only with those: `default` alone says nothing.
  const family = dst.includes(':') || words.includes('pref') ? 6 : 4;
  return { kind: 'route', deleted, family, table, type, dst, metric, gateways: gateways.filter((g) => g !== undefined), devs };
}

function tokens(s: string): string[] {
  // `-o` joins continuation lines with a backslash; tabs separate multipath next hops.
  return s.split(/[\s\\]+/).filter((w) => w.length > 0);
}

function stripPeer(name: string): string {
  const at = name.lastIndexOf('@');
  return at > 0 ? name.slice(0, at) : name;
}

function hasCarrier(flags: readonly string[], operstate: string): boolean {
  // NO-CARRIER is ip's name for IFF_UP without IFF_RUNNING; LOWER_UP alone can lag the operstate.
  return flags.includes('LOWER_UP') && !flags.includes('NO-CARRIER') && !OPERSTATE_NO_CARRIER.has(operstate);
}

function looksLikeDst(w: string): boolean {
  if (w === 'default') return true;
  const slash = w.indexOf('/');
  return isIP(slash < 0 ? w : w.slice(0, slash)) !== 0 && (slash < 0 || /^\/\d+$/.test(w.slice(slash)));
}

function routeType(w: string): string {
  return /^\d+$/.test(w) ? (ROUTE_TYPES[Number(w)] ?? w) : w;
}

function tableNumber(w: string): number {
  if (/^\d+$/.test(w)) return Number(w);
  return NAMED_TABLES[w] ?? -1;
}

const LinkJson = z.array(z.object({ ifindex: z.number(), ifname: z.string(), flags: z.array(z.string()), operstate: z.string().optional() }));
const AddrJson = z.array(
  z.object({
    ifname: z.string(),
    addr_info: z
      .array(
        z.object({
          family: z.string(),
          local: z.string().optional(),
          prefixlen: z.number().optional(),
          tentative: z.boolean().optional(),
          dadfailed: z.boolean().optional(),
        }),
      )
      .optional(),
  }),
);
const Hop = z.object({ gateway: z.string().optional(), via: z.object({ host: z.string() }).optional(), dev: z.string().optional() });
const RouteJson = z.array(
  Hop.extend({
    type: z.string().optional(),
    dst: z.string(),
    table: z.string().optional(),
    metric: z.number().optional(),
    nexthops: z.array(Hop).optional(),
  }),
);

/**
 * The snapshot as one child process: `ip -j -N -batch -` with these commands on its standard input
 * (the shell says why one). Batch lines take no global options (iproute2 6.1: `Object "-4" is
 * unknown`), so `root 0.0.0.0/0` and `root ::/0` pick the family: every route of a family lies under
 * its /0, and ip drops the other family's routes (and the multicast tables') from its dump. The output
 * is that of `ip -4`/`-6 -j -N route show table all` (compared on iproute2 6.1).
 */
export const SNAPSHOT_OPTIONS: readonly string[] = Object.freeze(['-j', '-N']);
export const SNAPSHOT_COMMANDS: readonly string[] = Object.freeze(['link show', 'addr show', 'route show table all root 0.0.0.0/0', 'route show table all root ::/0']);

/**
 * The standard output of SNAPSHOT_COMMANDS. With `-j` ip prints each command's answer as one JSON
 * array on one line, `[]` when empty, in order (test/fixtures/ip-monitor/snapshot-batch.txt). Anything
 * else (a line more or less, an empty line, no final newline) is refused: a line would no longer say
 * which command it answers.
 */
export function parseBatchSnapshot(stdout: string): Snapshot {
  const lines = stdout.split('\n');
  const n = SNAPSHOT_COMMANDS.length;
  if (lines.pop() !== '') return { ok: false, reason: `ip -batch: output does not end with a newline (cut short?)` };
  if (lines.length !== n) return { ok: false, reason: `ip -batch: ${lines.length} lines for ${n} commands` };
  const empty = lines.findIndex((l) => l.trim() === '');
  if (empty >= 0) return { ok: false, reason: `ip -batch: an empty line for \`${SNAPSHOT_COMMANDS[empty]}\`` };
  const [link, addr, route4, route6] = lines;
  return parseSnapshot({ link, addr, route4, route6 });
}

export interface SnapshotText {
  /** `ip -j -N link show` */
  readonly link: string;
  /** `ip -j -N addr show` */
  readonly addr: string;
  /** `ip -4 -j -N route show table all` */
  readonly route4: string;
  /** `ip -6 -j -N route show table all` */
  readonly route6: string;
}

export type Snapshot = { readonly ok: true; readonly events: MonitorEvent[] } | { readonly ok: false; readonly reason: string };

/** The snapshot as the events that would have built it (all "added"), for the same reducer. */
export function parseSnapshot(text: SnapshotText): Snapshot {
  const parse = <T>(what: string, schema: z.ZodType<T>, s: string): T | string => {
    let raw: unknown;
    try {
      raw = JSON.parse(s.trim() === '' ? '[]' : s);
    } catch (e) {
      return `${what}: not JSON (${(e as Error).message})`;
    }
    const r = schema.safeParse(raw);
    return r.success ? r.data : `${what}: ${r.error.issues[0]?.message ?? 'unexpected shape'} at ${r.error.issues[0]?.path.join('.') ?? ''}`;
  };
  const links = parse('ip -j link show', LinkJson, text.link);
  if (typeof links === 'string') return { ok: false, reason: links };
  const addrs = parse('ip -j addr show', AddrJson, text.addr);
  if (typeof addrs === 'string') return { ok: false, reason: addrs };
  const events: MonitorEvent[] = [];
  for (const l of links) {
    events.push({ kind: 'link', deleted: false, ifindex: l.ifindex, name: l.ifname, adminUp: l.flags.includes('UP'), carrier: hasCarrier(l.flags, l.operstate ?? 'UNKNOWN') });
  }
  for (const a of addrs) {
    for (const i of a.addr_info ?? []) {
      if ((i.family !== 'inet' && i.family !== 'inet6') || i.local === undefined) continue;
      const family = i.family === 'inet6' ? 6 : 4;
      events.push({ kind: 'address', deleted: false, dev: a.ifname, family, address: i.local, prefixLen: i.prefixlen ?? (family === 4 ? 32 : 128), usable: !i.tentative && !i.dadfailed });
    }
  }
  for (const [family, s] of [[4, text.route4], [6, text.route6]] as const) {
    const routes = parse(`ip -${family} -j route show`, RouteJson, s);
    if (typeof routes === 'string') return { ok: false, reason: routes };
    for (const r of routes) {
      const hops = r.nexthops ?? [r];
      const gateways = hops.map((h) => h.gateway ?? h.via?.host).filter((g): g is string => g !== undefined);
      const devs = hops.map((h) => h.dev).filter((d): d is string => d !== undefined);
      events.push({ kind: 'route', deleted: false, family, table: r.table === undefined ? TABLE_MAIN : tableNumber(r.table), type: routeType(r.type ?? 'unicast'), dst: r.dst, metric: r.metric ?? 0, gateways, devs });
    }
  }
  return { ok: true, events };
}
