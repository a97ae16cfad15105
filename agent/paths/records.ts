import type { Logger } from '../../shared/log.ts';
import { locatorText } from '../../shared/address.ts';
import type { BoundLocator } from '../mapcache/cache.ts';
import type { UplinkSnapshot } from '../uplinks/table.ts';
import type { PathState } from './state.ts';

/**
 * The record of path changes that `realmnet status` shows: from, to, why, and how long since the
 * trouble began. A change is recorded when path choice makes it; when the cause was the peer's
 * binding (a locator withdrawn), the reason is noted first and written at that next choice.
 */
export interface FailoverRecord {
  readonly at: string;
  readonly peer: string;
  readonly from: string | null;
  readonly to: string | null;
  readonly reason: string;
  /** From the first sign of trouble (first unanswered probe, link event) to the switch; null for planned moves. */
  readonly tookMs: number | null;
  /** Datagrams sent again over the new path (those that may have been lost on the old one). */
  readonly resentPackets: number;
}

const MAX_RECORDS = 20;

/** What a record needs of a path. */
export interface RecordedPath {
  readonly uplink: number;
  readonly locator: BoundLocator;
  readonly state: PathState;
}

export class FailoverLog {
  private readonly records: FailoverRecord[] = [];
  /** Why a peer lost its path when the cause was its binding (the record is written at the next choice). */
  private readonly pendingReason = new Map<string, { reason: string; since: number }>();
  private readonly listeners: ((r: FailoverRecord) => void)[] = [];

  constructor(
    private readonly uplinks: () => UplinkSnapshot,
    private readonly wallClock: () => number,
    private readonly log: Logger,
  ) {}

  onRecord(cb: (r: FailoverRecord) => void): void {
    this.listeners.push(cb);
  }

  list(): readonly FailoverRecord[] {
    return this.records.slice();
  }

  /** The peer's binding took its path away; the next choice is recorded with this reason. */
  note(mapKey: string, reason: string, since: number): void {
    this.pendingReason.set(mapKey, { reason, since });
  }

  forget(mapKey: string): void {
    this.pendingReason.delete(mapKey);
  }

  record(p: { readonly mapKey: string; readonly hostId: string }, from: RecordedPath | null, to: RecordedPath | null, now: number, resentPackets = 0): void {
    const pr = this.pendingReason.get(p.mapKey);
    this.pendingReason.delete(p.mapKey);
    let reason: string;
    let tookMs: number | null = null;
    if (from !== null) {
      const s = from.state;
      if (!s.localUp) {
        reason = `uplink ${this.uplinks()[from.uplink].name} down`;
        tookMs = Math.max(0, now - s.since);
      } else if (s.state === 'suspect' || s.state === 'down') {
        // The last reply is the last moment the path was known good: the failure began after it.
        const since = Number.isFinite(s.lastReplyAt) ? s.lastReplyAt : s.since;
        reason = `no probe reply for ${Math.round(now - since)} ms (path ${s.state})`;
        tookMs = Math.max(0, now - since);
      } else if (s.state === 'unknown') {
        // Leaving a path that never answered yet: part of choosing, not a failover.
        return;
      } else {
        reason = to !== null && to.state.state === 'up' ? 'a preferred path is up again' : 'path ranking changed';
      }
    } else if (pr !== undefined) {
      reason = pr.reason;
      tookMs = Math.max(0, now - pr.since);
    } else {
      // First choice for this peer: not a failover.
      return;
    }
    const rec: FailoverRecord = {
      at: new Date(this.wallClock()).toISOString(),
      peer: p.hostId,
      from: from === null ? null : this.pathText(from),
      to: to === null ? null : this.pathText(to),
      reason,
      tookMs: tookMs === null ? null : Math.round(tookMs),
      resentPackets,
    };
    this.records.push(rec);
    if (this.records.length > MAX_RECORDS) this.records.shift();
    for (const l of this.listeners) l(rec);
    this.log.warn({ peer: rec.peer, from: rec.from, to: rec.to, reason, tookMs: rec.tookMs, resentPackets }, to === null ? 'no usable path left to peer' : 'path changed');
  }

  pathText(t: RecordedPath): string {
    return `${this.uplinks()[t.uplink]?.name ?? t.uplink} → ${locatorText(t.locator.address, t.locator.port)}`;
  }

}
