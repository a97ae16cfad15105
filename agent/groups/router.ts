import type { Clock } from '../../shared/clock.ts';
import type { Logger } from '../../shared/log.ts';
import { sameBytes16 } from '../../shared/bytes.ts';
import { HostId, parseHostId } from '../../shared/ids.ts';
import type { GroupBinding } from '../../shared/group.ts';
import type { MapCache, MapEntry } from '../mapcache/cache.ts';
import type { Grouping } from '../dataplane/grouping.ts';
import { flowHash } from '../dataplane/flows.ts';
import { PIN_DEAD, PinTable, type PinInfo } from '../dataplane/pins.ts';
import type { TunDevice } from '../tun/tun.ts';
import type { GroupAnswer } from '../rm/answers.ts';
import type { HostHealth } from '../paths/probing.ts';
import { chooseHost, choiceReason, type HostChoice } from './choose.ts';

/**
 * Slice 2 on the agent (docs/slice2.md): the user/data tier's map-cache, flow pinning, and the local
 * half of the RCA. It implements the data plane's Grouping.
 *
 * 1. A GROUP-REPLY (resolver) or GROUP-PUSH (RCA) installs the owner's binding, which hosts the RM
 *    says are present, and (through the resolver) their host bindings in the map-cache.
 * 2. outbound(): a packet to a user/data ID finds its flow's pin (pins.ts, keyed by the 5-tuple);
 *    a new flow picks a host (choose.ts: users by priority then weight, data by RTT then weight)
 *    and is pinned to it. The packet keeps its destination: only the host that carries it changes.
 * 3. inbound(): a packet from a user/data ID is accepted only from a host present in its binding
 *    (sealed: the session's peer; plain: a host whose locator sent it), on that flow's pin.
 * 4. tick(): a host is dead when the RM marks it absent (the RCA's push), its binding is gone, or
 *    probing finds every path to it down. Its TCP flows are reset to the local application (a RST
 *    written into the TUN: the app reconnects at once, and the new flow picks another host); its
 *    other flows are re-pinned by their next packet. A dead TCP flow's next packet is answered with
 *    an exact RST (the kernel's challenge ACK, RFC 5961, tells the exact sequence number).
 * 5. keepActive(): hosts of IDs in use are probed as if they had traffic (RTTs for the data choice,
 *    and a dead host is noticed before a new flow picks it).
 * Per packet (2, 3) nothing is allocated: groups are found by a hash of the ID's bytes, hosts by
 * small-integer handles.
 */
export interface GroupRouterOptions {
  readonly maxFlows: number;
  readonly flowIdleMs: number;
  /** A user/data ID used within this long keeps its hosts probed. */
  readonly activeMs: number;
  readonly tickMs: number;
  /** Most user/data IDs held. */
  readonly maxGroups: number;
}

/** A user/data ID in use is looked up again this long before its answer expires. */
const REFRESH_BEFORE_MS = 10_000;
/** …and again this often while no answer came (the RM unreachable). */
const REFRESH_RETRY_MS = 3_000;
/** Lookups a second started by sealed packets from unknown source IDs (inbound()). */
const LEARN_PER_S = 20;

export const DEFAULT_GROUP_ROUTER: GroupRouterOptions = Object.freeze({ maxFlows: 65_536, flowIdleMs: 120_000, activeMs: 30_000, tickMs: 50, maxGroups: 4_096 });

export interface GroupRouterDeps {
  readonly cache: MapCache;
  readonly tun: () => TunDevice | null;
  readonly clock: Clock;
  readonly log: Logger;
  /** What probing knows of a host (idKey); undefined when not tracked (yet). */
  readonly health: (hostKey: string) => HostHealth | undefined;
  /** A present host of a group is not in the map-cache: look it up (the resolver, no packet held). */
  readonly fetchHost: (id: HostId) => void;
}

interface HostRef {
  readonly hostId: HostId;
  readonly id: Uint8Array;
  readonly key: string;
  readonly priority: number;
  readonly weight: number;
  readonly handle: number;
  present: boolean;
  /** Status: why the last flow went here. */
  flows: number;
}

interface GroupState {
  readonly id: Uint8Array;
  readonly key: string;
  binding: GroupBinding;
  hosts: HostRef[];
  expiresAt: number;
  lastUsedAt: number;
  /** When a lookup to renew the answer was last started (clock ms). */
  refreshedAt: number;
  readonly choices: HostChoice[];
}

export interface GroupRouterStatus {
  readonly ids: readonly {
    readonly id: string;
    readonly kind: string;
    readonly name: string;
    readonly seq: number;
    readonly hosts: readonly { readonly hostId: string; readonly priority: number; readonly weight: number; readonly present: boolean; readonly alive: boolean; readonly rttMs: number | null }[];
  }[];
  readonly flows: readonly (PinInfo & { readonly hostId: string | null; readonly why: string | null })[];
  readonly served: readonly string[];
  readonly pins: Readonly<Record<string, number>>;
  readonly counters: Readonly<Record<string, number>>;
}

export const GROUP_ROUTER_COUNTERS = ['newFlows', 'noHost', 'resets', 'exactResets', 'repinned', 'inboundRefused', 'hostsDied', 'installed', 'pushes', 'expired'] as const;
export type GroupRouterCounter = (typeof GROUP_ROUTER_COUNTERS)[number];

export class GroupRouter implements Grouping {
  private readonly buckets = new Map<number, GroupState[]>();
  private readonly byKey = new Map<string, GroupState>();
  private readonly handles: { id: Uint8Array; key: string }[] = [];
  private readonly handleOf = new Map<string, number>();
  private readonly served: Uint8Array[] = [];
  private readonly pins: PinTable;
  private readonly rst = Buffer.alloc(128);
  private readonly rstOff = new Uint32Array(1);
  private readonly rstLen = new Uint32Array(1);
  private ipOff = 0;
  /** Coarse clock for the data path (set every tick): no clock read per packet. */
  private now: number;
  private readonly active = new Set<string>();
  private timer: NodeJS.Timeout | null = null;
  private lastSweep = 0;
  readonly counters: Record<GroupRouterCounter, number> = Object.fromEntries(GROUP_ROUTER_COUNTERS.map((k) => [k, 0])) as Record<GroupRouterCounter, number>;

  constructor(
    private readonly opts: GroupRouterOptions,
    private readonly deps: GroupRouterDeps,
  ) {
    this.pins = new PinTable({ capacity: opts.maxFlows, idleMs: opts.flowIdleMs });
    this.now = deps.clock.now();
  }

  start(offload: boolean, vnetHdrLen: number): void {
    this.ipOff = offload ? vnetHdrLen : 0;
    this.timer = setInterval(() => this.tick(this.deps.clock.now()), this.opts.tickMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
  }

  // ---- the data plane's calls (Grouping) ----

  outbound(buf: Buffer, ip: number, len: number): MapEntry | null | undefined {
    const g = this.find(buf, ip + 24);
    if (g === undefined) return undefined;
    g.lastUsedAt = this.now;
    const pins = this.pins;
    let slot = pins.find(buf, ip, len, true);
    if (slot >= 0 && pins.state(slot) === PIN_DEAD) {
      // Its host died: the app is still sending on it (often the kernel's challenge ACK after our
      // first RST). Answer that segment with a RST it must accept.
      if (this.writeRst(pins.writeResetFor(buf, ip, len, this.rst, this.ipOff))) this.counters.exactResets++;
      return null;
    }
    if (slot >= 0) {
      const e = this.entryOf(pins.host(slot));
      if (e !== undefined && e.path !== null) {
        pins.touch(slot, this.now);
        pins.trackOut(slot, buf, ip, len);
        return e;
      }
      // Gone between two ticks: re-pin below (tick resets TCP flows; this is the rare race).
      pins.release(slot);
      this.counters.repinned++;
      slot = -1;
    }
    const i = this.choose(g, flowHash(buf, ip, len));
    if (i < 0) {
      this.counters.noHost++;
      return null;
    }
    const host = g.hosts[i];
    const e = this.deps.cache.lookup(host.id, 0);
    if (e === undefined || e.path === null) {
      this.counters.noHost++;
      return null;
    }
    slot = pins.insert(buf, ip, len, true, host.handle, this.now);
    pins.trackOut(slot, buf, ip, len);
    host.flows++;
    this.counters.newFlows++;
    return e;
  }

  inbound(buf: Buffer, ip: number, len: number, peer: Uint8Array | null, peerOff: number, srcAddrs: Uint8Array, srcOff: number, port: number): MapEntry | undefined {
    const g = this.find(buf, ip + 8);
    if (g === undefined) {
      // Sealed, from an authenticated peer, with a source ID we do not know: perhaps a user ID its
      // host connects from (alice's laptop calling us as alice). Look it up (a few a second at most);
      // this packet is dropped, the sender's retransmission finds the ID resolved.
      if (peer !== null) this.learn(buf, ip + 8);
      return undefined;
    }
    let host: HostRef | undefined;
    let entry: MapEntry | undefined;
    for (let i = 0; i < g.hosts.length; i++) {
      const h = g.hosts[i];
      if (!h.present) continue;
      if (peer !== null) {
        if (!sameBytes16(h.id, 0, peer, peerOff)) continue;
        host = h;
        entry = this.deps.cache.lookup(h.id, 0);
        break;
      }
      const e = this.deps.cache.lookup(h.id, 0);
      if (e !== undefined && boundTo(e, srcAddrs, srcOff, port)) {
        host = h;
        entry = e;
        break;
      }
    }
    if (host === undefined || entry === undefined) {
      this.counters.inboundRefused++;
      return undefined;
    }
    // The whole packet's length from its header (an offload chunk is only part of it).
    const whole = Math.min(len, ((buf[ip + 4] << 8) | buf[ip + 5]) + 40);
    let slot = this.pins.find(buf, ip, whole, false);
    if (slot < 0) {
      // A flow the host started (e.g. from a user's laptop, with her user ID as source): replies
      // must go back to that same host.
      slot = this.pins.insert(buf, ip, whole, false, host.handle, this.now);
      host.flows++;
    } else if (this.pins.host(slot) !== host.handle || this.pins.state(slot) === PIN_DEAD) {
      this.counters.inboundRefused++;
      return undefined;
    }
    this.pins.touch(slot, this.now);
    this.pins.trackIn(slot, buf, ip, whole);
    g.lastUsedAt = this.now;
    return entry;
  }

  serves(buf: Uint8Array, off: number): boolean {
    const s = this.served;
    for (let i = 0; i < s.length; i++) if (sameBytes16(s[i], 0, buf, off)) return true;
    return false;
  }

  // ---- the control plane's calls ----

  /** This host serves id (its TUN device has it): packets to it are accepted. */
  serve(id: HostId): void {
    if (!this.serves(id.toBytes(), 0)) this.served.push(id.toBytes());
  }

  /** A verified GROUP-REPLY or GROUP-PUSH (the resolver has put its inline host bindings in the map-cache). */
  install(a: GroupAnswer, now: number): void {
    const key = a.hostId.key;
    let g = this.byKey.get(key);
    if (g !== undefined && g.binding.seq > a.group.seq) return;
    if (g === undefined) {
      if (this.byKey.size >= this.opts.maxGroups) this.evictOldest();
      g = { id: a.hostId.toBytes(), key, binding: a.group, hosts: [], expiresAt: 0, lastUsedAt: now, refreshedAt: -Infinity, choices: [] };
      this.byKey.set(key, g);
      const h = hashAt(g.id, 0);
      const b = this.buckets.get(h);
      this.buckets.set(h, b === undefined ? [g] : [...b, g]);
    }
    const old = new Map(g.hosts.map((h) => [h.key, h]));
    g.binding = a.group;
    g.expiresAt = now + a.ttl * 1000;
    g.hosts = a.group.hosts.map((h, i) => ({
      hostId: h.hostId,
      id: h.hostId.toBytes(),
      key: h.hostId.key,
      priority: h.priority,
      weight: h.weight,
      handle: this.handle(h.hostId),
      present: a.present[i] === true,
      flows: old.get(h.hostId.key)?.flows ?? 0,
    }));
    for (const h of g.hosts) if (h.present && this.deps.cache.lookup(h.id, 0) === undefined) this.deps.fetchHost(h.hostId);
    const present = g.hosts.filter((h) => h.present).map((h) => h.hostId.toString());
    this.deps.log.info({ id: a.hostId.toString(), kind: a.group.kind, seq: a.group.seq, present }, 'user/data ID resolved');
    this.counters.installed++;
    // Hosts no longer present (or no longer listed) lose their flows at once.
    for (const h of old.values()) {
      const now2 = g.hosts.find((x) => x.key === h.key);
      if (now2 === undefined || !now2.present) this.hostDied(h.handle, h.hostId.toString(), 'the RM marks it absent');
    }
  }

  /** Whether probing should treat this host (idKey) as active: a user/data ID it serves is in use. */
  keepActive(hostKey: string): boolean {
    return this.active.has(hostKey);
  }

  /** Whether id is a user/data ID held here (the resolver then needs no lookup). */
  holds(key: string): boolean {
    return this.byKey.has(key);
  }

  tick(now: number): void {
    this.now = now;
    this.active.clear();
    for (const g of this.byKey.values()) {
      if (g.expiresAt <= now && now - g.lastUsedAt > this.opts.activeMs) {
        // Expired and idle: forget it (the next packet looks it up again).
        this.drop(g);
        this.counters.expired++;
        continue;
      }
      const inUse = now - g.lastUsedAt <= this.opts.activeMs;
      // In use and about to expire: ask again (pushes keep it current meanwhile; this renews the TTL).
      if (inUse && g.expiresAt - now < REFRESH_BEFORE_MS && now - g.refreshedAt >= REFRESH_RETRY_MS) {
        g.refreshedAt = now;
        this.deps.fetchHost(HostId.fromBytes(g.id));
      }
      for (const h of g.hosts) {
        if (inUse && h.present) this.active.add(h.key);
        if (h.flows === 0) continue;
        if (this.isDead(h)) this.hostDied(h.handle, h.hostId.toString(), this.whyDead(h));
      }
    }
    if (now - this.lastSweep >= 1000) {
      this.lastSweep = now;
      this.pins.sweep(now);
    }
  }

  /** For status: the user/data IDs resolved, and the flows with the host each is pinned to. */
  status(): GroupRouterStatus {
    const ids = [...this.byKey.values()].map((g) => {
      const choices = this.choicesOf(g);
      return {
        id: HostId.fromBytes(g.id).toString(),
        kind: g.binding.kind,
        name: g.binding.name,
        seq: g.binding.seq,
        hosts: g.hosts.map((h, i) => ({ hostId: h.hostId.toString(), priority: h.priority, weight: h.weight, present: h.present, alive: choices[i].alive, rttMs: choices[i].rttMs === null ? null : Math.round(choices[i].rttMs * 100) / 100 })),
      };
    });
    const flows = this.pins.list(this.now).map((f) => {
      const h = this.handles[f.host];
      const g = this.byKey.get(parseHostId(f.remote).key);
      let why: string | null = null;
      if (g !== undefined) {
        const i = g.hosts.findIndex((x) => x.handle === f.host);
        if (i >= 0) why = choiceReason(g.binding.kind, this.choicesOf(g), i);
      }
      return { ...f, hostId: h === undefined ? null : HostId.fromBytes(h.id).toString(), why };
    });
    return { ids, flows, served: this.served.map((b) => HostId.fromBytes(b).toString()), pins: { ...this.pins.stats }, counters: { ...this.counters } };
  }

  // ---- inside the class ----

  private find(buf: Uint8Array, off: number): GroupState | undefined {
    const b = this.buckets.get(hashAt(buf, off));
    if (b === undefined) return undefined;
    for (let i = 0; i < b.length; i++) if (sameBytes16(b[i].id, 0, buf, off)) return b[i];
    return undefined;
  }

  private learnWindow = -Infinity;
  private learnCount = 0;

  private learn(buf: Uint8Array, off: number): void {
    if (this.now - this.learnWindow >= 1000) {
      this.learnWindow = this.now;
      this.learnCount = 0;
    }
    if (++this.learnCount > LEARN_PER_S) return;
    this.deps.fetchHost(HostId.fromBytes(buf, off));
  }

  private handle(id: HostId): number {
    let h = this.handleOf.get(id.key);
    if (h === undefined) {
      h = this.handles.length;
      this.handles.push({ id: id.toBytes(), key: id.key });
      this.handleOf.set(id.key, h);
    }
    return h;
  }

  private entryOf(handle: number): MapEntry | undefined {
    const h = this.handles[handle];
    return h === undefined ? undefined : this.deps.cache.lookup(h.id, 0);
  }

  private choicesOf(g: GroupState): HostChoice[] {
    const out = g.choices;
    out.length = 0;
    for (const h of g.hosts) {
      const e = this.deps.cache.lookup(h.id, 0);
      const health = this.deps.health(h.key);
      out.push({ present: h.present, alive: e !== undefined && e.path !== null && health?.alive !== false, rttMs: health?.rttMs ?? null, priority: h.priority, weight: h.weight, key: h.handle });
    }
    return out;
  }

  private choose(g: GroupState, hash: number): number {
    return chooseHost(g.binding.kind, this.choicesOf(g), hash);
  }

  private isDead(h: HostRef): boolean {
    if (!h.present) return true;
    const e = this.deps.cache.lookup(h.id, 0);
    if (e === undefined || e.path === null) return true;
    return this.deps.health(h.key)?.alive === false;
  }

  private whyDead(h: HostRef): string {
    if (!h.present) return 'the RM marks it absent';
    const e = this.deps.cache.lookup(h.id, 0);
    if (e === undefined) return 'its binding is gone';
    if (e.path === null) return 'no path to any of its locators';
    return 'every path to it is down';
  }

  /** The host with this handle died: its TCP flows are reset, the others re-pinned by their next packet. */
  private hostDied(handle: number, hostId: string, why: string): void {
    let tcp = 0;
    let other = 0;
    this.pins.forEachOfHost(handle, (slot) => {
      if (this.pins.proto(slot) === 6) {
        if (this.writeRst(this.pins.writeReset(slot, this.rst, this.ipOff))) tcp++;
        this.pins.markDead(slot, this.now);
      } else {
        this.pins.release(slot);
        other++;
      }
    });
    for (const g of this.byKey.values()) for (const h of g.hosts) if (h.handle === handle) h.flows = 0;
    if (tcp + other === 0) return;
    this.counters.hostsDied++;
    this.counters.resets += tcp;
    this.counters.repinned += other;
    this.deps.log.warn({ hostId, why, tcpReset: tcp, repinned: other }, 'host of a user/data ID died: its flows were reset or re-pinned');
  }

  /** Writes a RST built at rst[ipOff..] into the TUN (offload: behind an all-zero virtio header). */
  private writeRst(n: number): boolean {
    const tun = this.deps.tun();
    if (n === 0 || tun === null) return false;
    this.rst.fill(0, 0, this.ipOff);
    this.rstOff[0] = 0;
    this.rstLen[0] = this.ipOff + n;
    return tun.write(this.rst, this.rstOff, this.rstLen, 1) === 1;
  }

  private drop(g: GroupState): void {
    this.byKey.delete(g.key);
    const h = hashAt(g.id, 0);
    const b = this.buckets.get(h)?.filter((x) => x !== g) ?? [];
    if (b.length === 0) this.buckets.delete(h);
    else this.buckets.set(h, b);
  }

  private evictOldest(): void {
    let oldest: GroupState | undefined;
    for (const g of this.byKey.values()) if (oldest === undefined || g.lastUsedAt < oldest.lastUsedAt) oldest = g;
    if (oldest !== undefined) this.drop(oldest);
  }
}

function hashAt(b: Uint8Array, off: number): number {
  const lo = (b[off + 12] << 24) | (b[off + 13] << 16) | (b[off + 14] << 8) | b[off + 15];
  const hi = (b[off + 8] << 24) | (b[off + 9] << 16) | (b[off + 10] << 8) | b[off + 11];
  return (lo ^ Math.imul(hi, 0x9e3779b1)) & 0x3fffffff;
}

/** Whether the datagram's source locator is one of the entry's (plain mode: the locator proves nothing more). */
function boundTo(e: MapEntry, addrs: Uint8Array, off: number, port: number): boolean {
  for (let i = 0; i < e.locators.length; i++) {
    const l = e.locators[i];
    if (l.port === port && sameBytes16(l.bytes, 0, addrs, off)) return true;
  }
  return false;
}
