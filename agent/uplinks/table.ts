import type { Family } from '../../shared/address.ts';
import type { UdpBatchSocket } from '../../shared/udp/socket.ts';

/**
 * The one owner of uplink state. Everything else reads snapshots and never changes an uplink.
 *
 * 1. The uplink monitor reports facts (carrier, address, route) and the realm's policy reports
 *    priorities and weights; each becomes an UplinkEvent.
 * 2. applyUplinkEvent() (pure) folds an event into the current snapshot and returns a new frozen
 *    snapshot, or the same one when nothing changed.
 * 3. The table swaps the snapshot in one assignment, then tells its listeners (path choice, the RM
 *    link) with the snapshot before and after. Listeners run in the order they subscribed, at once;
 *    each decides what the change means to it.
 * The data plane never reads this table: it reads the map-cache entries whose paths the control plane
 * chose from these snapshots (control replaces, data reads).
 */
export interface Uplink {
  /** Position in the config: the data plane's sockets and the paths' `uplink` use this index. */
  readonly index: number;
  readonly name: string;
  readonly interface: string | undefined;
  readonly locator: string;
  readonly family: Family;
  /** From the config, replaced by the realm's policy when the RM serves one. */
  readonly priority: number;
  readonly weight: number;
  /** Usable now: carrier, address and route (the monitor's verdict); true without a monitor. */
  readonly up: boolean;
  /**
   * Removed from the config by a reload: never up again, left out of the binding. Its index stays
   * taken (the data plane's sockets and the paths are indexed by position), and a later reload that
   * adds it back with the same locator brings the same slot back.
   */
  readonly retired: boolean;
  readonly socket: UdpBatchSocket;
}

export type UplinkSnapshot = readonly Uplink[];

export type UplinkEvent =
  /** The monitor's verdict on an uplink. */
  | { readonly kind: 'link'; readonly name: string; readonly usable: boolean }
  /** The realm's preferences for an uplink (organisational control). */
  | { readonly kind: 'policy'; readonly name: string; readonly priority: number; readonly weight: number }
  /** A reload took the uplink out of the config. */
  | { readonly kind: 'retire'; readonly name: string }
  /** A reload put a retired uplink (same name and locator) back, with the config's preferences. */
  | { readonly kind: 'restore'; readonly name: string; readonly priority: number; readonly weight: number }
  /** A reload added an uplink (its socket is open): it takes the next index. */
  | { readonly kind: 'add'; readonly uplink: Omit<Uplink, 'index' | 'retired'> };

export type UplinkListener = (now: UplinkSnapshot, before: UplinkSnapshot) => void;

/** Pure: the snapshot after `ev`; the same object when the event changes nothing (or names no uplink). */
export function applyUplinkEvent(s: UplinkSnapshot, ev: UplinkEvent): UplinkSnapshot {
  if (ev.kind === 'add') {
    if (s.some((u) => u.name === ev.uplink.name && !u.retired)) return s;
    return Object.freeze([...s, Object.freeze({ ...ev.uplink, index: s.length, retired: false })]);
  }
  // A retired slot answers only to restore; everything else names the live uplink of that name.
  const i = s.findIndex((u) => u.name === ev.name && u.retired === (ev.kind === 'restore'));
  if (i < 0) return s;
  const u = s[i];
  let next: Uplink;
  if (ev.kind === 'retire') {
    next = Object.freeze({ ...u, up: false, retired: true });
  } else if (ev.kind === 'restore') {
    // Up until the monitor says otherwise, as at start.
    next = Object.freeze({ ...u, up: true, retired: false, priority: ev.priority, weight: ev.weight });
  } else if (ev.kind === 'link') {
    if (u.up === ev.usable) return s;
    next = Object.freeze({ ...u, up: ev.usable });
  } else {
    if (u.priority === ev.priority && u.weight === ev.weight) return s;
    next = Object.freeze({ ...u, priority: ev.priority, weight: ev.weight });
  }
  const out = s.slice();
  out[i] = next;
  return Object.freeze(out);
}

export class UplinkTable {
  private snapshot: UplinkSnapshot;
  private readonly listeners: UplinkListener[] = [];

  constructor(uplinks: readonly Omit<Uplink, 'index' | 'retired'>[]) {
    this.snapshot = Object.freeze(uplinks.map((u, index) => Object.freeze({ ...u, index, retired: false })));
  }

  /** The uplinks now. Hold on to it as long as you like: it never changes. */
  get current(): UplinkSnapshot {
    return this.snapshot;
  }

  /** The live (not retired) uplink of that name. */
  byName(name: string): Uplink | undefined {
    return this.snapshot.find((u) => u.name === name && !u.retired);
  }

  /** Applies an event; true when the snapshot changed (the listeners have then run). */
  apply(ev: UplinkEvent): boolean {
    const before = this.snapshot;
    const now = applyUplinkEvent(before, ev);
    if (now === before) return false;
    this.snapshot = now;
    for (const l of this.listeners) l(now, before);
    return true;
  }

  /** Returns a function that removes the listener. */
  onChange(cb: UplinkListener): () => void {
    this.listeners.push(cb);
    return () => {
      const i = this.listeners.indexOf(cb);
      if (i >= 0) this.listeners.splice(i, 1);
    };
  }
}
