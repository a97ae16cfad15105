/**
 * Kernel MPTCP on the standard testbed, as the failover bench's reference: mh opens the connection
 * from uplink a (its main-table default route), the in-kernel path manager adds subflows from uplinks
 * b and c, and ch announces its second address (ADD_ADDR), to which mh adds a subflow as well.
 * Applications are not MPTCP-aware: run them under `mptcpize run` (LD_PRELOAD), which turns their TCP
 * sockets into IPPROTO_MPTCP; MPTCP_WRAPPER below is the prefix. Either underlay family ('v4', 'v6'):
 * the endpoints, rules and routes are then of that family, and the tools connect to ch's address in it.
 *
 * Set-up (setupMptcp), undone in reverse by stop():
 *  1. `net.mptcp.enabled=1` in mh and ch (the namespace default is already 1 on this kernel; we set
 *     it anyway and put back what was there).
 *  2. `ip mptcp limits set subflows 8 add_addr_accepted 8` in mh and ch: room for fullmesh's 3 × 2
 *     subflows and for the announced address (the kernel's defaults, 2 and 0, would refuse it).
 *  3. mh: one endpoint per uplink (`ip mptcp endpoint add 192.0.2.1 dev eth-a subflow`, and the same
 *     for uplinks b and c with the flags of the chosen mode, see MptcpMode).
 *  4. mh: source-policy routing for uplinks b and c (the testbed has none): `ip rule add from <b>
 *     table 102` with a default route via ispb in table 102, and likewise c in table 103, so that each
 *     subflow leaves through its own uplink. The routes carry `congctl` when asked (the bench's
 *     per-route congestion control).
 *  5. ch: a `signal` endpoint for its second address (eth1), so that it announces it to mh in ADD_ADDR,
 *     and source-policy routing for that address (table 102, default via core on eth1): ch's main
 *     default stays on eth0, and the subflow to the second address must come back the way it went.
 * ch listens on the wildcard address: an MPTCP server bound to one address refuses the MP_JOIN of
 * extra subflows (DESIGN.md §2).
 *
 * expectedSubflows() says what a connection should have once the path manager is done; the bench
 * checks it against `ss` in mh before the fault (failover.ts verifyMptcp).
 */
import { z } from 'zod';
import type { Testbed, TESTBED } from '../testbed/topology.ts';

type Std = Testbed<typeof TESTBED>;

/** The command prefix that runs a non-MPTCP-aware program over MPTCP (Debian's mptcpd package). */
export const MPTCP_WRAPPER = ['mptcpize', 'run'] as const;

/**
 * How mh's endpoints for uplinks b and c are configured:
 *  - 'subflow' (the bench's default): both subflows carry data all the time (the default scheduler
 *    sends on the subflow with the lowest RTT that has room); when one dies the other is already open
 *    with a warm congestion window, and the scheduler reinjects what was in flight on the dead one.
 *  - 'backup': the b and c subflows are opened with the backup flag and carries data only once no non-backup
 *    subflow is usable, which for a silent failure the kernel decides after several RTOs
 *    (net.mptcp.stale_loss_cnt, default 4).
 *  - 'fullmesh': one subflow per (local endpoint, remote address) pair: 3 × 2 with ch's announced
 *    address; in the other modes only the initial subflow's source reaches ch's second address.
 * Measured on this box, on the earlier testbed (mh with uplinks a and b only, ch with one address) (failover bench, 5 repetitions each, 200 Mbit/s, cubic; bulk goodput gap
 * median/max in ms; rr = median request/response gap in ms):
 *                         subflow            backup             fullmesh
 *   carrier-loss          260/330  rr 500    300/320  rr 248    280/310  rr 498
 *   silent-blackhole      250/340  rr 438    270/690  rr 560    280/400  rr 268
 *   one-way-blackhole      90/200  rr 1800   200/200  rr 550    160/210  rr 1603
 *   return blackhole      210/280  rr 1007   240/390  rr 253    250/410  rr 1146
 *   random-loss-30        440/1580 rr 726    450/790  rr 1284   250/630  rr 1033
 *   uplink-restored        50/50   rr 233     30/80   rr 1637    50/90   rr 70
 * With three uplinks and ch's second address (one repetition, 2026-12-04, subflow mode): in
 * double-failure (uplink a, then ch's eth0, lose carrier) MPTCP never recovered (gap to the bound,
 * IPv4 and IPv6). That is the path manager, not chance: in 'subflow' and 'backup' modes the only
 * subflow to ch's second address starts from uplink a's address, so once a and ch's first address are
 * both gone no subflow is left, and the in-kernel path manager opens no new pair (b or c → ch's
 * second address) by itself. 'fullmesh' has those pairs from the start.
 * The differences above are mostly within the run-to-run spread (~±100 ms). 'subflow' has the lowest
 * medians in the two scenarios with targets (carrier loss, silent blackhole), so it is the reference;
 * 'backup' recovers small request/response streams faster after carrier loss and a return-path
 * blackhole (it has only one subflow to give up on) but has the worst silent-blackhole maximum. All
 * other MPTCP settings are the kernel's defaults (in-kernel path manager, default scheduler).
 */
export type MptcpMode = 'subflow' | 'backup' | 'fullmesh';
export const MPTCP_MODES: readonly MptcpMode[] = ['subflow', 'backup', 'fullmesh'];

/** Source-policy tables: mh's uplinks b and c, and ch's second address. */
export const MPTCP_TABLES = { ispb: '102', ispc: '103', ch2: '102' } as const;

export type UnderlayFamily = 'v4' | 'v6';

export interface MptcpOptions {
  mode?: MptcpMode;
  /** `congctl` on the routes this sets up (e.g. 'cubic'); none by default. */
  congestion?: string;
  /** The underlay family of the endpoints and routes (default 'v4'). */
  family?: UnderlayFamily;
}

export interface MptcpSetup {
  mode: MptcpMode;
  family: UnderlayFamily;
  /** The address the MPTCP client connects to: ch's first address in the family. */
  connect: string;
  /** The wildcard address of the family, for ch's listener. */
  listen: string;
  /** Commands that were run, for the results file. */
  commands: string[];
  /** Undoes everything (endpoints, limits, rules, tables, sysctl). Never throws. */
  stop(): Promise<void>;
}

/**
 * The subflows an MPTCP connection from mh's uplink a to ch's first address should have once the
 * in-kernel path manager is done, as [mh's address, ch's address] pairs: each of mh's subflow
 * endpoints joins towards ch's first address, and the announced second address gets one subflow from
 * the connection's own source (fullmesh: from every endpoint; linux net/mptcp/pm_kernel.c).
 */
export function expectedSubflows(tb: Std, mode: MptcpMode, family: UnderlayFamily = 'v4'): [string, string][] {
  const A = tb.addr[family];
  const local = [A.mh.ispa, A.mh.ispb, A.mh.ispc];
  const toFirst = local.map((l): [string, string] => [l, A.ch.core]);
  const toSecond = mode === 'fullmesh' ? local.map((l): [string, string] => [l, A.ch.core2]) : [[A.mh.ispa, A.ch.core2] as [string, string]];
  return [...toFirst, ...toSecond];
}

const Limits = z.object({ subflows: z.number().optional(), add_addr_accepted: z.number().optional() });

async function readLimits(tb: Std, node: 'mh' | 'ch'): Promise<{ subflows: number; addAddr: number } | null> {
  const r = await tb.exec(node, 'ip', ['-j', 'mptcp', 'limits', 'show'], { allowFail: true });
  if (r.code !== 0) return null;
  try {
    const p = Limits.safeParse(JSON.parse(r.stdout));
    return p.success ? { subflows: p.data.subflows ?? 0, addAddr: p.data.add_addr_accepted ?? 0 } : null;
  } catch {
    return null;
  }
}

export async function setupMptcp(tb: Std, o: MptcpOptions = {}): Promise<MptcpSetup> {
  const mode = o.mode ?? 'subflow';
  const family = o.family ?? 'v4';
  const fam = family === 'v4' ? '-4' : '-6';
  const A = tb.addr;
  const F = A[family];
  const commands: string[] = [];
  const undo: (() => Promise<unknown>)[] = [];
  const run = async (node: 'mh' | 'ch', cmd: string, args: string[]): Promise<void> => {
    commands.push(`${node}: ${cmd} ${args.join(' ')}`);
    await tb.exec(node, cmd, args);
  };
  const stop = async (): Promise<void> => {
    for (const u of undo.reverse()) await u().catch(() => {});
    undo.length = 0;
  };
  const cc = o.congestion === undefined ? [] : ['congctl', o.congestion];
  /** `from <source>` uses table `table`, whose default route leaves through `dev` via `gateway`. */
  const sourceRoute = async (node: 'mh' | 'ch', source: string, table: string, gateway: string, dev: string): Promise<void> => {
    undo.push(() => tb.exec(node, 'ip', [fam, 'rule', 'del', 'from', source, 'table', table]));
    await run(node, 'ip', [fam, 'rule', 'add', 'from', source, 'table', table]);
    undo.push(() => tb.exec(node, 'ip', [fam, 'route', 'flush', 'table', table]));
    await run(node, 'ip', [fam, 'route', 'add', 'default', 'via', gateway, 'dev', dev, 'table', table, ...cc]);
  };
  try {
    for (const node of ['mh', 'ch'] as const) {
      const was = (await tb.exec(node, 'sysctl', ['-n', 'net.mptcp.enabled'])).stdout.trim();
      await run(node, 'sysctl', ['-qw', 'net.mptcp.enabled=1']);
      undo.push(() => tb.exec(node, 'sysctl', ['-qw', `net.mptcp.enabled=${was}`]));
      const limits = await readLimits(tb, node);
      await run(node, 'ip', ['mptcp', 'limits', 'set', 'subflows', '8', 'add_addr_accepted', '8']);
      if (limits !== null)
        undo.push(() => tb.exec(node, 'ip', ['mptcp', 'limits', 'set', 'subflows', String(limits.subflows), 'add_addr_accepted', String(limits.addAddr)]));
    }
    const flagsOther = mode === 'backup' ? ['subflow', 'backup'] : mode === 'fullmesh' ? ['subflow', 'fullmesh'] : ['subflow'];
    const flagsA = mode === 'fullmesh' ? ['subflow', 'fullmesh'] : ['subflow'];
    undo.push(() => tb.exec('mh', 'ip', ['mptcp', 'endpoint', 'flush']));
    await run('mh', 'ip', ['mptcp', 'endpoint', 'add', F.mh.ispa, 'dev', A.dev.mh.ispa, ...flagsA]);
    for (const isp of ['ispb', 'ispc'] as const) {
      await run('mh', 'ip', ['mptcp', 'endpoint', 'add', F.mh[isp], 'dev', A.dev.mh[isp], ...flagsOther]);
      await sourceRoute('mh', F.mh[isp], MPTCP_TABLES[isp], F[isp].mh, A.dev.mh[isp]);
    }
    undo.push(() => tb.exec('ch', 'ip', ['mptcp', 'endpoint', 'flush']));
    await run('ch', 'ip', ['mptcp', 'endpoint', 'add', F.ch.core2, 'dev', A.dev.ch.core2, 'signal']);
    await sourceRoute('ch', F.ch.core2, MPTCP_TABLES.ch2, F.core.ch2, A.dev.ch.core2);
  } catch (e) {
    await stop();
    throw e;
  }
  return { mode, family, connect: F.ch.core, listen: family === 'v4' ? '0.0.0.0' : '::', commands, stop };
}

/** `/proc/net/netstat`-style text (header line, value line per group) to { group: { name: value } }. */
export function parseNetstat(text: string): Record<string, Record<string, number>> {
  const out: Record<string, Record<string, number>> = {};
  const lines = text.split('\n').filter((l) => l.includes(':'));
  for (let i = 0; i + 1 < lines.length; i += 2) {
    const [g1, ...names] = (lines[i] ?? '').trim().split(/\s+/);
    const [g2, ...values] = (lines[i + 1] ?? '').trim().split(/\s+/);
    if (g1 === undefined || g1 !== g2) continue;
    const group: Record<string, number> = {};
    names.forEach((n, k) => (group[n] = Number(values[k] ?? NaN)));
    out[g1.replace(/:$/, '')] = group;
  }
  return out;
}

/** The MPTcpExt counters of a node (absolute values; read straight from procfs, not nstat's history). */
export async function mptcpCounters(tb: Std, node: 'mh' | 'ch'): Promise<Record<string, number>> {
  const r = await tb.exec(node, 'cat', ['/proc/net/netstat']);
  return parseNetstat(r.stdout).MPTcpExt ?? {};
}

/** Counter deltas b - a for the names that changed. */
export function counterDelta(a: Record<string, number>, b: Record<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(b)) {
    const d = v - (a[k] ?? 0);
    if (d !== 0) out[k] = d;
  }
  return out;
}

/** The address of an `ss` column (`192.0.2.1:5001`, `[2001:db8:a::1]:5001`, `...%eth-a:5001`). */
export function ssAddress(col: string): string {
  const m = /^\[?(.*?)\]?(?:%[^:\]]+)?:(?:\d+|\*)$/.exec(col);
  return (m?.[1] ?? col).replace(/^::ffff:/, '');
}

export interface TcpSocketInfo {
  local: string;
  peer: string;
  congestion: string | null;
  /** An MPTCP subflow (ss shows `tcp-ulp-mptcp`). */
  mptcpSubflow: boolean;
}

/** Parses `ss -tniH` (one header-less entry per socket: a state line, then an indented info line). */
export function parseSsTcpInfo(text: string): TcpSocketInfo[] {
  const out: TcpSocketInfo[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const l = lines[i] ?? '';
    if (l.trim() === '' || /^\s/.test(l)) continue;
    // [State] Recv-Q Send-Q Local Peer [Process]: ss leaves the state out when one state is selected,
    // so take the first two columns that end in :port.
    const [local = '', peer = ''] = l
      .trim()
      .split(/\s+/)
      .filter((c) => /:(\d+|\*)$/.test(c));
    const info = /^\s/.test(lines[i + 1] ?? '') ? (lines[i + 1] ?? '') : '';
    const cc = /^\s*(?:ts\s+|sack\s+|ecn\s+|ecnseen\s+|fastopen\s+)*([a-z0-9_]+)\s+wscale:/.exec(info);
    out.push({ local, peer, congestion: cc?.[1] ?? null, mptcpSubflow: info.includes('tcp-ulp-mptcp') });
  }
  return out;
}
