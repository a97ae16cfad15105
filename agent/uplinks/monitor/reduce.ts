/**
 * The pure half of the uplink monitor: one state per uplink, holding only what concerns it (so it
 * stays small whatever the host's tables), folded from MonitorEvents (parse.ts) and read as
 * UplinkFacts. No clock, no I/O: the shell (monitor.ts) feeds it the snapshot, then every event.
 *
 * The kernel removes some routes without a netlink message (IPv4 routes through a device that goes
 * admin-down or loses its last IPv4 address): reduce() models those two cases, and the shell's
 * resync corrects any case not modelled.
 *
 * The carrier bit read from sysfs (a CarrierEvent) folds in like a link event that changes only the
 * carrier: the shell reads it every few ms and right after every netlink link event and snapshot, so
 * the bit wins whenever it can be read, and netlink reporting the same carrier later is no change.
 */
import { canonicalAddress } from '../../../shared/address.ts';
import { TABLE_MAIN, type MonitorEvent, type RouteEvent, type UplinkFacts, type WatchedUplink } from './types.ts';

export interface UplinkState {
  /** null: the interface does not exist (or was deleted). */
  readonly link: { readonly adminUp: boolean; readonly carrier: boolean } | null;
  /** `address/prefixLen` of every usable address of the locator's family on the interface. */
  readonly addresses: readonly string[];
  /** Keys (routeKey) of the routes that carry the uplink's traffic. */
  readonly routes: readonly string[];
}

export const EMPTY_UPLINK_STATE: UplinkState = Object.freeze({ link: null, addresses: Object.freeze([]), routes: Object.freeze([]) });

/** Bounds of UplinkState's lists (an interface with more addresses than this is not an uplink we model). */
export const MAX_ADDRESSES = 64;
export const MAX_ROUTES = 64;

interface Canon {
  readonly family: 4 | 6;
  readonly locator: string;
  readonly gateway: string | undefined;
}
const canonCache = new WeakMap<WatchedUplink, Canon>();

function canon(u: WatchedUplink): Canon {
  let c = canonCache.get(u);
  if (c === undefined) {
    const family = u.locator.includes(':') ? 6 : 4;
    c = { family, locator: canonicalAddress(u.locator), gateway: u.gateway === undefined ? undefined : canonicalAddress(u.gateway) };
    canonCache.set(u, c);
  }
  return c;
}

/**
 * Folds one event into one uplink's state. Pure; returns `s` itself when nothing changed. Models two
 * silent kernel behaviours: IPv4 routes through a device are flushed without a message when it goes
 * admin-down or loses its last IPv4 address (IPv6 announces its deletions).
 */
export function reduce(u: WatchedUplink, s: UplinkState, ev: MonitorEvent): UplinkState {
  const c = canon(u);
  switch (ev.kind) {
    case 'link': {
      if (ev.name !== u.interface) return s;
      if (ev.deleted) return EMPTY_UPLINK_STATE;
      const routes = ev.adminUp ? s.routes : EMPTY_UPLINK_STATE.routes;
      if (s.link !== null && s.link.adminUp === ev.adminUp && s.link.carrier === ev.carrier && routes === s.routes) return s;
      return Object.freeze({ ...s, link: Object.freeze({ adminUp: ev.adminUp, carrier: ev.carrier }), routes });
    }
    case 'carrier': {
      // Only over a link netlink knows of and calls admin-up: creation, deletion and admin state come
      // from netlink at once (rtmsg_ifinfo, not linkwatch); only the carrier can be late there.
      if (ev.name !== u.interface || s.link === null || !s.link.adminUp || s.link.carrier === ev.carrier) return s;
      return Object.freeze({ ...s, link: Object.freeze({ adminUp: true, carrier: ev.carrier }) });
    }
    case 'address': {
      if (ev.dev !== u.interface || ev.family !== c.family) return s;
      const key = `${ev.address}/${ev.prefixLen}`;
      const has = s.addresses.includes(key);
      if (ev.deleted || !ev.usable) {
        if (!has) return s;
        const addresses = Object.freeze(s.addresses.filter((a) => a !== key));
        const routes = c.family === 4 && addresses.length === 0 ? EMPTY_UPLINK_STATE.routes : s.routes;
        return Object.freeze({ ...s, addresses, routes });
      }
      if (has || s.addresses.length >= MAX_ADDRESSES) return s;
      return Object.freeze({ ...s, addresses: Object.freeze([...s.addresses, key]) });
    }
    case 'route': {
      if (ev.family !== c.family) return s;
      const key = routeKey(ev);
      const has = s.routes.includes(key);
      // An add whose key we hold but that no longer serves the uplink is a `route replace` that moved it.
      if (ev.deleted || !routeServes(u, c, ev)) {
        return has ? Object.freeze({ ...s, routes: Object.freeze(s.routes.filter((r) => r !== key)) }) : s;
      }
      if (has || s.routes.length >= MAX_ROUTES) return s;
      return Object.freeze({ ...s, routes: Object.freeze([...s.routes, key]) });
    }
  }
}

/**
 * A route's identity in the kernel: IPv4 (table, dst, metric) — `route replace` swaps whatever route
 * has it; IPv6 the same plus the device, since dev-only routes to one prefix (fe80::/64) coexist on
 * every interface.
 */
function routeKey(r: RouteEvent): string {
  const base = `${r.family}|${r.table}|${r.dst}|${r.metric}`;
  return r.family === 4 ? base : `${base}|${[...new Set(r.devs)].sort().join(',')}`;
}

function routeServes(u: WatchedUplink, c: Canon, r: RouteEvent): boolean {
  if (r.type !== 'unicast' || !r.devs.includes(u.interface)) return false;
  if (u.table !== undefined) return r.table === u.table && r.dst === 'default';
  if (r.table !== TABLE_MAIN || r.dst.startsWith('fe80:')) return false;
  return c.gateway === undefined || r.gateways.includes(c.gateway);
}

export function factsOf(u: WatchedUplink, s: UplinkState): UplinkFacts {
  const c = canon(u);
  const adminUp = s.link?.adminUp ?? false;
  const carrier = adminUp && (s.link?.carrier ?? false);
  const hasAddress = s.addresses.some((a) => a.slice(0, a.lastIndexOf('/')) === c.locator);
  const hasRoute = s.routes.length > 0;
  return Object.freeze({ carrier, adminUp, hasAddress, hasRoute, usable: carrier && adminUp && hasAddress && hasRoute });
}

export function sameFacts(a: UplinkFacts, b: UplinkFacts): boolean {
  return a.carrier === b.carrier && a.adminUp === b.adminUp && a.hasAddress === b.hasAddress && a.hasRoute === b.hasRoute && a.usable === b.usable;
}

/** Folds a list of events (a snapshot, then the events that came during it) into a fresh state. */
export function fold(u: WatchedUplink, events: readonly MonitorEvent[], from: UplinkState = EMPTY_UPLINK_STATE): UplinkState {
  let s = from;
  for (const ev of events) s = reduce(u, s, ev);
  return s;
}
