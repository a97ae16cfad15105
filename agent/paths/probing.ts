import type { Clock } from '../../shared/clock.ts';
import type { Logger } from '../../shared/log.ts';
import type { Binding } from '../../shared/binding.ts';
import type { MacKey } from '../../shared/crypto/blake2s.ts';
import { locatorText } from '../../shared/address.ts';
import { idKey } from '../../shared/ids.ts';
import type { BoundLocator, GroupPath, MapCache, MapEntry, Path, Traffic } from '../mapcache/cache.ts';
import type { UplinkSnapshot } from '../uplinks/table.ts';
import { sameBytes16 } from '../../shared/bytes.ts';
import { apply, decide, flapPenalty, initialPathState, lossRatio, onLocalLink, onReply, type PathState, type PathTiming } from './state.ts';
import { preferredGroup, rankPaths, repathEntries, type PathCandidate } from './rank.ts';
import { PeerChannel } from './channel.ts';
import { FailoverLog, type FailoverRecord } from './records.ts';
import { DirectUpdates, randomToken } from './updates.ts';
import { PeerType, openPeer, readPeer, verifyPeer } from './wire.ts';
import { DEFAULT_PROBE_BUDGET, ProbeBudget, type ProbeBudgetOptions } from './probebudget.ts';


/*
 * Path probing and failover between agents: the shell around the pure state machine (state.ts) and
 * the ranking (rank.ts).
 *
 * 1. A peer is tracked once the data plane has carried traffic to or from it and its binding has a
 *    public key (only then can probes be authenticated). Every path to it (local uplink × remote
 *    locator that is up in its binding, same family) gets a PathState.
 * 2. Every tick (10 ms) each path is folded with the uplink monitor's verdict and passed through
 *    decide(); a 'probe' action sends a MACed probe on that path's uplink to that locator, if the
 *    locator's address has probe budget left (probebudget.ts: one budget per IP address for all peers,
 *    as decide() backs off only per path); the peer answers on the same path. A reply, matched by its
 *    token, gives the RTT and keeps the path up.
 * 3. The paths are ranked (rankPaths: state, then the remote realm's priorities, local priorities,
 *    RTT); the best becomes the map-cache entry's path, the equally preferred ones its flow group.
 *    A change of path is recorded as a failover (from, to, why, how long since the trouble began).
 * 3'. Moving off a path that failed: the datagrams sent on it since it may have lost them are sent
 *    again over the new path (onPathFailed → dataplane/flight.ts), every other path of the peer is
 *    probed at once (both ends may have moved: the first pair that answers wins), and while the old
 *    path is only suspect it keeps a copy of every packet (make-before-break: the entry's shadow).
 * 4. When this host's own binding changes (an uplink lost or back), sendUpdate() sends the new signed
 *    binding straight to every tracked peer (updates.ts), to its locators that answered a probe
 *    within the last 30 s, so correspondents move at once even if the RM is away. A received update is verified and applied like an RM push.
 * Keys, replay windows and sending are the channel's (channel.ts); the record of changes is
 * records.ts's.
 * Peers idle for forgetAfterMs are untracked; their entries keep the path they had.
 */

export interface PeerPathsOptions {
  readonly timing: PathTiming;
  readonly instanceId: number;
  /** How often decisions run; bounds detection latency. */
  readonly tickMs: number;
  /** Traffic within this window makes a peer active (probed at probeIntervalMs). */
  readonly activeWindowMs: number;
  /** A peer with no traffic for this long is no longer tracked. */
  readonly forgetAfterMs: number;
  /** Gaps between retransmissions of a direct update; it is given up after the last. */
  readonly updateRetryMs: readonly number[];
  /** While the path traffic left is suspect (not down), it gets a copy of every packet too. */
  readonly makeBeforeBreak: boolean;
  /** Datagrams sent up to this long before a path was last known good are re-sent too (queues, clocks). */
  readonly replayMarginMs: number;
  /**
   * Direct updates go only to locators that answered a probe within this long (updates.ts; 30 s in
   * docs/security.md): an idle peer's locators answer every 5 s, and when an update is due (our
   * binding changed, usually because one of our uplinks failed) the peer's locators that answered
   * until that moment still get it, while an address that never answered never does.
   */
  readonly updateAnsweredWithinMs: number;
  /** Probes per remote IP address (all ports), shared by all peers (probebudget.ts says why these numbers). */
  readonly probeBudget: ProbeBudgetOptions;
}

export const DEFAULT_PEER_PATHS: Omit<PeerPathsOptions, 'timing' | 'instanceId'> = Object.freeze({
  tickMs: 10,
  activeWindowMs: 1_000,
  forgetAfterMs: 60_000,
  updateRetryMs: Object.freeze([50, 100, 200, 400, 800, 1_600, 3_200]),
  makeBeforeBreak: true,
  replayMarginMs: 10,
  updateAnsweredWithinMs: 30_000,
  probeBudget: DEFAULT_PROBE_BUDGET,
});

export interface PeerPathsDeps {
  readonly cache: MapCache;
  /** The uplinks now (the uplink table's snapshot). */
  readonly uplinks: () => UplinkSnapshot;
  /** First message counter (above any this host used before: the agent persists a high-water mark). */
  readonly counterBase: number;
  readonly myId: Uint8Array;
  /** The host's Ed25519 private seed (for the pair keys). */
  readonly mySeed: Uint8Array;
  readonly clock: Clock;
  /** Wall-clock ms for failover records (status shows when). */
  readonly wallClock: () => number;
  readonly log: Logger;
  /** A verified binding newer than the one held, received straight from its host: install it. */
  readonly applyBinding: (b: Binding) => void;
  /**
   * Traffic to a peer moved off a path that failed: re-send over `to` what was sent on `from` since
   * `since` (clock ms); returns how many datagrams. None: nothing is re-sent.
   */
  readonly onPathFailed?: (traffic: Traffic, from: Path, to: Path, since: number) => number;
  /**
   * Slice 2: hosts of a user or data ID in use are probed as if they had traffic (mapKey: idKey of
   * the host ID), so a replica's RTT is known and a dead host is seen before a new flow picks it.
   */
  readonly keepActive?: (mapKey: string) => boolean;
  /** A peer message from a host ID (at buf[off]) the map-cache does not hold: look it up (no packet waits). */
  readonly onUnknownPeer?: (buf: Uint8Array, off: number) => void;
  /** A peer's probe or reply announced another version of its binding than the one cached: look it up again. */
  readonly onStaleBinding?: (id: Uint8Array) => void;
}

/** What probing knows of one host (PeerPaths.health). */
export interface HostHealth {
  /** False when every path to it is down (or none is left); true while one may still work. */
  readonly alive: boolean;
  /** The smoothed RTT of its best live path; null before a reply. */
  readonly rttMs: number | null;
}

const STALE_EVERY_MS = 2_000;

export const PEER_COUNTERS = [
  'probesSent',
  'probesAnswered',
  /** A probe or reply announced a binding version other than the cached one (a re-lookup asked, at most every 2 s a peer). */
  'staleSignals',
  'repliesReceived',
  'updatesSent',
  'updatesReceived',
  'updatesApplied',
  'updatesAcked',
  'updatesGivenUp',
  /** A direct update not sent to a locator of the peer: it has not answered a probe lately (updates.ts). */
  'updatesWithheld',
  'peerMalformed',
  'peerVersion',
  'peerWrongInstance',
  'peerNotForUs',
  'peerUnknown',
  'peerNoKey',
  'peerBadMac',
  'peerReplay',
  'peerUnexpectedReply',
  'peerBadBinding',
  'peerStaleBinding',
  'sendErrors',
  'internalErrors',
  'failoverResends',
  'failoverResentPackets',
  'failoverProbeBursts',
  /** A probe not sent: its remote address had used up its probe budget (probebudget.ts). */
  'probesBudgetSkipped',
  /** More remote addresses probed within 2 s than the budget table holds: one got a fresh budget early. */
  'probeBudgetEvictedEarly',
  /** A path's state (unknown, up, suspect, down) changed: the metrics' realmnet_agent_path_state_changes_total. */
  'pathStateChanges',
] as const;
export type PeerCounter = (typeof PEER_COUNTERS)[number];

export interface PathStatus {
  readonly peer: string;
  readonly uplink: string;
  readonly locator: string;
  readonly state: PathState['state'];
  readonly rttMs: number | null;
  readonly lossPct: number;
  readonly inUse: boolean;
}

/** Outstanding probe tokens kept per path (older ones count as lost anyway). */
const MAX_OUTSTANDING = 32;
/** Withdrawn paths remembered per peer. */
const MAX_WITHDRAWN = 16;

interface TrackedPath {
  readonly uplink: number;
  readonly locator: BoundLocator;
  state: PathState;
  readonly outstanding: Map<number, number>;
  /** Index within the peer's paths when created: a stable key for flow hashing. */
  readonly key: number;
}

interface Peer {
  readonly mapKey: string;
  readonly hostId: string;
  readonly id: Uint8Array;
  entry: MapEntry;
  paths: TrackedPath[];
  current: TrackedPath | null;
  txSeen: number;
  rxSeen: number;
  lastActiveAt: number;
  nextKey: number;
  /** Paths whose locator the peer's binding no longer offers (kept for their history). */
  withdrawn: TrackedPath[];
  /** Traffic within the active window (decided every tick). */
  active: boolean;
  /** The path traffic left while it was suspect: make-before-break keeps copying to it until it is up or down. */
  left: TrackedPath | null;
  /** The path in use was withdrawn by the peer's binding (its uplink failed): re-send on the next choice. */
  lost: { readonly path: TrackedPath; readonly at: number } | null;
}

export class PeerPaths {
  /** Low 24 bits of this host's own binding sequence number, announced in probes and replies. */
  private mapVersion = 0;
  private readonly staleAt = new Map<string, number>();
  readonly counters: Record<PeerCounter, number> = Object.fromEntries(PEER_COUNTERS.map((k) => [k, 0])) as Record<PeerCounter, number>;
  private readonly peers = new Map<string, Peer>();
  private readonly channel: PeerChannel;
  private readonly updates: DirectUpdates;
  private readonly log: FailoverLog;
  private readonly budget: ProbeBudget;
  private timer: NodeJS.Timeout | null = null;
  private lastScan = -Infinity;
  private readonly findPeer = (mapKey: string): Peer | undefined => this.peers.get(mapKey);

  constructor(
    private readonly opts: PeerPathsOptions,
    private readonly deps: PeerPathsDeps,
  ) {
    this.channel = new PeerChannel({ uplinks: deps.uplinks, myId: deps.myId, mySeed: deps.mySeed, counterBase: deps.counterBase, counters: this.counters });
    this.updates = new DirectUpdates({
      channel: this.channel,
      uplinks: deps.uplinks,
      myId: deps.myId,
      instanceId: opts.instanceId,
      retryMs: opts.updateRetryMs,
      answeredWithinMs: opts.updateAnsweredWithinMs,
      counters: this.counters,
      log: deps.log,
      applyBinding: deps.applyBinding,
    });
    this.log = new FailoverLog(deps.uplinks, deps.wallClock, deps.log);
    this.budget = new ProbeBudget(opts.probeBudget);
  }

  /** The last message counter used (the agent persists a high-water mark above it). */
  get lastCounter(): number {
    return this.channel.lastCounter;
  }

  /**
   * Our own binding changed: send it straight to every tracked correspondent (they are the ones
   * with traffic); the RM gets it through the RM link and pushes it to everyone else.
   */
  sendUpdate(b: Binding): void {
    this.mapVersion = b.seq % 0x1000000;
    this.updates.send(b, this.peers.values(), this.deps.clock.now(), this.findPeer);
  }

  start(): void {
    this.timer = setInterval(() => this.tick(), this.opts.tickMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
  }

  /** One round of decisions (the timer calls it; tests and the uplink monitor call it directly). */
  tick(): void {
    const now = this.deps.clock.now();
    if (now - this.lastScan >= 100) {
      this.lastScan = now;
      this.discover(now);
    }
    for (const p of this.peers.values()) this.runPeer(p, now);
    this.updates.retransmit(now, this.findPeer);
  }

  /**
   * The uplinks changed (monitor): tracked peers are decided at once; the others get the static
   * choice (no probe knowledge about them).
   */
  uplinksChanged(): void {
    repathEntries(this.deps.cache, this.deps.uplinks(), (e) => this.peers.has(idKey(e.id)));
    this.tick();
  }

  /** A reload added or retired uplinks: every peer's paths are built again over the uplinks now. */
  uplinkSetChanged(): void {
    const now = this.deps.clock.now();
    for (const p of this.peers.values()) this.rebuildPaths(p, now);
    this.uplinksChanged();
  }

  /**
   * A peer message from the data port (outside.ts hands over anything with the peer flags). Called
   * from the data path: whatever the bytes, it counts and returns, it never throws.
   */
  onMessage(uplink: number, buf: Uint8Array, off: number, len: number, srcAddrs: Uint8Array, srcOff: number, port: number): void {
    try {
      this.handle(uplink, buf, off, len, srcAddrs, srcOff, port);
    } catch (e) {
      // A bug, not an attack we know of: count it, say it once in a while, keep forwarding.
      this.counters.internalErrors++;
      if ((this.counters.internalErrors & (this.counters.internalErrors - 1)) === 0) this.deps.log.error({ err: e instanceof Error ? e.stack : String(e) }, 'peer message handling failed');
    }
  }

  private handle(uplink: number, buf: Uint8Array, off: number, len: number, srcAddrs: Uint8Array, srcOff: number, port: number): void {
    const env = openPeer(buf, off, len, this.opts.instanceId);
    if (typeof env === 'string') return void this.counters[env]++;
    if (!sameBytes16(this.deps.myId, 0, buf, env.toOff)) return void this.counters.peerNotForUs++;
    const entry = this.deps.cache.lookup(buf, env.fromOff);
    if (entry === undefined) {
      this.counters.peerUnknown++;
      // A host that probes us before it sent any traffic (slice 2: a correspondent probing the hosts
      // of a user or data ID): learn its binding from the RM, so its next probes are answered.
      this.deps.onUnknownPeer?.(buf, env.fromOff);
      return;
    }
    const key = this.channel.keyFor(entry);
    if (key === null) return void this.counters.peerNoKey++;
    if (!verifyPeer(key, buf, off, len)) return void this.counters.peerBadMac++;
    const msg = readPeer(buf, off, len, env);
    const mapKey = idKey(entry.id);
    const now = this.deps.clock.now();
    if ((msg.type === PeerType.Probe || msg.type === PeerType.Reply) && msg.mapVersion !== undefined && msg.mapVersion !== 0 && msg.mapVersion !== entry.seq % 0x1000000) this.staleSignal(mapKey, entry.id, now);
    switch (msg.type) {
      case PeerType.Probe:
        if (!this.channel.fresh(mapKey, msg.counter)) return;
        this.counters.probesAnswered++;
        this.channel.send(uplink, srcAddrs.subarray(srcOff, srcOff + 16), port, { type: PeerType.Reply, instanceId: this.opts.instanceId, from: this.deps.myId, to: entry.id, token: msg.token, mapVersion: this.mapVersion }, key);
        return;
      case PeerType.Reply:
        return this.onReplyMsg(mapKey, uplink, msg.token, now);
      case PeerType.Update: {
        if (!this.channel.fresh(mapKey, msg.counter)) return;
        if (!this.updates.onUpdate(entry, uplink, srcAddrs.subarray(srcOff, srcOff + 16), port, msg, key)) return;
        const p = this.peers.get(mapKey);
        if (p !== undefined) this.runPeer(p, this.deps.clock.now());
        return;
      }
      case PeerType.UpdateAck:
        return this.updates.onAck(mapKey, msg.token);
    }
  }

  /** The stale-binding signal: one re-lookup per peer every STALE_EVERY_MS at most (the RM may not have the new one yet). */
  private staleSignal(mapKey: string, id: Uint8Array, now: number): void {
    const last = this.staleAt.get(mapKey);
    if (last !== undefined && now - last < STALE_EVERY_MS) return;
    if (this.staleAt.size >= 4096) this.staleAt.clear();
    this.staleAt.set(mapKey, now);
    this.counters.staleSignals++;
    this.deps.onStaleBinding?.(id);
  }

  private forget(mapKey: string): void {
    this.peers.delete(mapKey);
    this.updates.forget(mapKey);
    this.log.forget(mapKey);
    this.channel.forget(mapKey);
  }

  paths(): PathStatus[] {
    const now = this.deps.clock.now();
    const out: PathStatus[] = [];
    for (const p of this.peers.values()) {
      for (const t of p.paths) {
        out.push({
          peer: p.hostId,
          uplink: this.deps.uplinks()[t.uplink]?.name ?? String(t.uplink),
          locator: locatorText(t.locator.address, t.locator.port),
          state: t.state.state,
          rttMs: t.state.rttMs === null ? null : Math.round(t.state.rttMs * 100) / 100,
          lossPct: Math.round(lossRatio(t.state, now) * 1000) / 10,
          inUse: p.current === t || p.entry.group.some((g) => g.uplink === t.uplink && g.locator === t.locator),
        });
      }
    }
    return out;
  }

  /** What probing knows of a host (mapKey: idKey of its ID); undefined when it is not tracked. */
  health(mapKey: string): HostHealth | undefined {
    const p = this.peers.get(mapKey);
    if (p === undefined) return undefined;
    let alive = false;
    let rtt: number | null = null;
    for (const path of p.paths) {
      const st = path.state;
      if (st.state === 'down' || !st.localUp) continue;
      alive = true;
      if (st.rttMs !== null && (rtt === null || st.rttMs < rtt)) rtt = st.rttMs;
    }
    return { alive, rttMs: rtt };
  }

  failovers(): readonly FailoverRecord[] {
    return this.log.list();
  }

  /** Every failover as it is recorded (the metrics' counter and duration histogram). */
  onFailover(cb: (r: FailoverRecord) => void): void {
    this.log.onRecord(cb);
  }

  // ---- inside the class ----

  /** Starts tracking peers that have traffic and a key. */
  private discover(now: number): void {
    for (const e of this.deps.cache.entries()) {
      if (e.publicKey === null) continue;
      const mapKey = idKey(e.id);
      if (this.peers.has(mapKey)) continue;
      if (e.traffic.tx === 0 && e.traffic.rx === 0 && this.deps.keepActive?.(mapKey) !== true) continue;
      const p: Peer = { mapKey, hostId: e.hostId, id: e.id, entry: e, paths: [], current: null, txSeen: e.traffic.tx, rxSeen: e.traffic.rx, lastActiveAt: now, nextKey: 0, withdrawn: [], active: true, left: null, lost: null };
      this.rebuildPaths(p, now);
      this.peers.set(mapKey, p);
    }
  }

  private runPeer(p: Peer, now: number): void {
    const entry = this.deps.cache.lookup(p.id, 0);
    if (entry === undefined) {
      this.forget(p.mapKey);
      return;
    }
    if (entry !== p.entry) {
      const old = p.entry;
      p.entry = entry;
      if (entry.locators !== old.locators) this.rebuildPaths(p, now);
    }
    const t = entry.traffic;
    if (t.tx !== p.txSeen || t.rx !== p.rxSeen) {
      p.txSeen = t.tx;
      p.rxSeen = t.rx;
      p.lastActiveAt = now;
    }
    if (this.deps.keepActive?.(p.mapKey) === true) p.lastActiveAt = now;
    if (now - p.lastActiveAt > this.opts.forgetAfterMs) {
      this.forget(p.mapKey);
      return;
    }
    const active = now - p.lastActiveAt <= this.opts.activeWindowMs;
    p.active = active;
    const key = this.channel.keyFor(entry);
    for (const path of p.paths) {
      let s = onLocalLink(path.state, this.deps.uplinks()[path.uplink].up, now);
      for (let round = 0; round < 4; round++) {
        const a = decide(s, now, this.opts.timing, active);
        if (a.kind === 'none') break;
        if (a.kind === 'probe' && key !== null) this.probe(p, path, key, now);
        s = apply(s, a, now);
      }
      this.setState(path, s);
    }
    this.choose(p, now);
  }

  /**
   * New locators: keep the state of every path that still exists, start new ones fresh. A path whose
   * locator the peer withdrew (or marked down) is remembered; if the locator comes back it starts
   * from down, so it must answer upAfterReplies probes and sit out the hold-down before traffic
   * returns to it, and its flap penalty survives: a peer whose uplink flaps cannot drag us along.
   */
  private rebuildPaths(p: Peer, now: number): void {
    const ups = this.deps.uplinks();
    const next: TrackedPath[] = [];
    for (const loc of p.entry.locators) {
      if (!loc.up) continue;
      for (let u = 0; u < ups.length; u++) {
        if (ups[u].family !== loc.family || ups[u].retired) continue;
        const old = p.paths.find((x) => samePath(x, u, loc));
        if (old !== undefined) {
          next.push({ ...old, locator: loc });
          continue;
        }
        const gone = p.withdrawn.find((x) => samePath(x, u, loc));
        if (gone !== undefined) {
          p.withdrawn = p.withdrawn.filter((x) => x !== gone);
          const state = gone.state.state === 'down' ? gone.state : apply(gone.state, { kind: 'markDown' }, now);
          next.push({ ...gone, locator: loc, state });
          continue;
        }
        next.push({ uplink: u, locator: loc, state: initialPathState(now, ups[u].up), outstanding: new Map(), key: p.nextKey++ });
      }
    }
    for (const x of p.paths) if (!next.some((y) => samePath(y, x.uplink, x.locator))) p.withdrawn.push(x);
    if (p.withdrawn.length > MAX_WITHDRAWN) p.withdrawn = p.withdrawn.slice(-MAX_WITHDRAWN);
    const cur = p.current;
    p.current = cur === null ? null : (next.find((x) => samePath(x, cur.uplink, cur.locator)) ?? null);
    if (cur !== null && p.current === null) {
      this.log.note(p.mapKey, 'binding update: locator withdrawn or down', now);
      p.lost = { path: cur, at: now };
    }
    p.paths = next;
  }

  private choose(p: Peer, now: number): void {
    const ups = this.deps.uplinks();
    const cands: PathCandidate<TrackedPath>[] = p.paths.map((x) => ({
      path: x,
      state: this.rankAs(x.state, now),
      remotePriority: x.locator.priority,
      localPriority: ups[x.uplink].priority,
      weight: x.locator.weight * ups[x.uplink].weight,
    }));
    const ranked = rankPaths(cands, p.current ?? undefined);
    const best = ranked[0]?.path ?? null;
    const group = best === null ? [] : preferredGroup(ranked);
    const groupPaths: GroupPath[] = group.length > 1 ? group.map((c) => ({ uplink: c.path.uplink, locator: c.path.locator, weight: c.weight, key: c.path.key })) : [];
    const prev = p.current;
    if (prev !== null && prev !== best && failed(prev.state)) p.left = prev;
    const shadow = this.shadowOf(p, best);
    const e = p.entry;
    const pathUnchanged = best === null ? e.path === null : e.path !== null && e.path.uplink === best.uplink && e.path.locator === best.locator;
    const sameShadow = shadow === null ? (e.shadow ?? null) === null : e.shadow != null && e.shadow.uplink === shadow.uplink && e.shadow.locator === shadow.locator;
    if (pathUnchanged && sameShadow && sameGroup(e.group, groupPaths) && best === prev && p.lost === null) return;
    p.current = best;
    const path: Path | null = best === null ? null : { uplink: best.uplink, locator: best.locator };
    const next: MapEntry = Object.freeze({ ...e, path, group: groupPaths, shadow });
    if (this.deps.cache.set(next)) p.entry = next;
    if (prev === best && p.lost === null) return;
    const resent = best === null ? 0 : this.recoverFlight(p, prev, best, e.group, now);
    p.lost = null;
    this.log.record(p, prev, best, now, resent);
  }

  /**
   * Traffic moved to `best`. From every path it left that failed (the one in use, the flow group's,
   * or a locator the peer withdrew), re-send what may have been lost, and probe every other path of
   * the peer now rather than at its next interval: when both ends lost their uplinks, the pair that
   * works is found in one round trip.
   */
  private recoverFlight(p: Peer, prev: TrackedPath | null, best: TrackedPath, oldGroup: readonly GroupPath[], now: number): number {
    const left: { path: TrackedPath; since: number }[] = [];
    if (prev !== null && failed(prev.state)) left.push({ path: prev, since: this.lostSince(prev.state) });
    for (const g of oldGroup) {
      const x = p.paths.find((y) => samePath(y, g.uplink, g.locator));
      if (x !== undefined && x !== prev && x !== best && failed(x.state)) left.push({ path: x, since: this.lostSince(x.state) });
    }
    if (p.lost !== null) {
      // The peer told us (its binding) that this locator failed: when, we only know to a round trip.
      const rtt = p.lost.path.state.rttMs ?? 50;
      left.push({ path: p.lost.path, since: p.lost.at - 2 * rtt - this.opts.replayMarginMs });
    }
    if (left.length === 0) return 0;
    let resent = 0;
    const onFailed = this.deps.onPathFailed;
    if (onFailed !== undefined) {
      const to: Path = { uplink: best.uplink, locator: best.locator };
      for (const l of left) resent += onFailed(p.entry.traffic, { uplink: l.path.uplink, locator: l.path.locator }, to, l.since);
      if (resent > 0) {
        this.counters.failoverResends++;
        this.counters.failoverResentPackets += resent;
      }
    }
    const key = this.channel.keyFor(p.entry);
    if (key !== null) {
      this.counters.failoverProbeBursts++;
      for (const x of p.paths) {
        if (!x.state.localUp || now - x.state.lastSentAt < PROBE_BURST_GAP_MS || left.some((l) => l.path === x)) continue;
        this.probe(p, x, key, now);
        this.setState(x, apply(x.state, { kind: 'probe' }, now));
      }
    }
    return resent;
  }

  /**
   * The moment after which datagrams sent on a failed path may have been lost: the path's last
   * proof of life (a probe reply; for a carrier loss, the loss itself), less one round trip (what
   * was queued then had not arrived yet) and a margin.
   */
  private lostSince(s: PathState): number {
    const rtt = (s.rttMs ?? 50) + 2 * (s.rttVarMs ?? 0);
    const lastGood = s.localUp ? s.lastReplyAt : Math.max(s.lastReplyAt, s.since);
    return lastGood - rtt - this.opts.replayMarginMs;
  }

  /**
   * Make-before-break: the path traffic left while it was only suspect keeps a copy of every packet
   * until it answers again (then ranking decides) or is declared down, and only while the peer has
   * traffic (idle paths never get copies).
   */
  private shadowOf(p: Peer, best: TrackedPath | null): Path | null {
    const l = p.left;
    if (l === null) return null;
    const keep = this.opts.makeBeforeBreak && p.active && best !== null && l !== best && l.state.localUp && l.state.state === 'suspect' && p.paths.includes(l);
    if (!keep) {
      p.left = null;
      return null;
    }
    return { uplink: l.uplink, locator: l.locator };
  }

  /**
   * The state a path is ranked by. A path not yet asked long enough to have answered ranks as up:
   * otherwise whichever path answers first would win and traffic would hop there and back while a
   * peer's probing starts. A path on probation whose flap penalty holds it there ranks as down (a
   * last resort): a flapping uplink must not win traffic back whenever the other path has a late
   * probe reply, which under load happens (seen in the flapping test: a switch per flap).
   */
  private rankAs(s: PathState, now: number): PathState {
    const t = this.opts.timing;
    if (s.state === 'unknown' && now - s.since < t.probeIntervalMs) return Object.freeze({ ...s, state: 'up' as const });
    if (s.state === 'probation' && flapPenalty(s, now, t) >= t.flapSuppressAt) return Object.freeze({ ...s, state: 'down' as const });
    return s;
  }

  /**
   * Sends one probe on the path, if its remote address has budget left. Either way the caller folds
   * it into the path's state as sent: a probe the budget withheld is as unanswered as a lost one, and
   * counting it keeps the path's backoff and its next probe time moving (retrying every tick would
   * only spend the budget's refill on this path first).
   */
  private probe(p: Peer, path: TrackedPath, key: MacKey, now: number): void {
    const allowed = this.budget.take(path.locator.bytes, path.locator.port, now);
    this.counters.probeBudgetEvictedEarly = this.budget.evictedEarly;
    if (!allowed) return void this.counters.probesBudgetSkipped++;
    const token = randomToken();
    if (path.outstanding.size >= MAX_OUTSTANDING) {
      const oldest = path.outstanding.keys().next().value;
      if (oldest !== undefined) path.outstanding.delete(oldest);
    }
    path.outstanding.set(token, now);
    this.counters.probesSent++;
    this.channel.send(path.uplink, path.locator.bytes, path.locator.port, { type: PeerType.Probe, instanceId: this.opts.instanceId, from: this.deps.myId, to: p.id, token, mapVersion: this.mapVersion }, key);
  }

  private setState(path: { state: PathState }, s: PathState): void {
    if (s.state !== path.state.state) this.counters.pathStateChanges++;
    path.state = s;
  }

  private onReplyMsg(mapKey: string, uplink: number, token: number, now: number): void {
    const p = this.peers.get(mapKey);
    const path = p?.paths.find((x) => x.outstanding.has(token));
    if (p === undefined || path === undefined || path.uplink !== uplink) return void this.counters.peerUnexpectedReply++;
    const sentAt = path.outstanding.get(token) as number;
    path.outstanding.delete(token);
    this.counters.repliesReceived++;
    this.setState(path, onReply(path.state, now, now - sentAt));
    // Recovery and first answers are acted on now, not at the next tick.
    this.runPeer(p, now);
  }
}

/** The path from local uplink `u` to that locator (by address and port: a new binding has new locator objects). */
function samePath(x: Path, u: number, loc: BoundLocator): boolean {
  return x.uplink === u && x.locator.port === loc.port && x.locator.address === loc.address;
}

/** A path traffic should leave: its uplink is out, or it stopped answering. */
function failed(s: PathState): boolean {
  return !s.localUp || s.state === 'down' || s.state === 'suspect';
}

/** On a failover every other path is probed now, unless it was probed this recently. */
const PROBE_BURST_GAP_MS = 10;

function sameGroup(a: readonly GroupPath[], b: readonly GroupPath[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i].uplink !== b[i].uplink || a[i].locator !== b[i].locator || a[i].weight !== b[i].weight) return false;
  return true;
}
