import { type PathState, type PathStateName } from './state.ts';
import type { Uplink } from '../uplinks/table.ts';
import type { BoundLocator, MapCache, MapEntry, Path } from '../mapcache/cache.ts';

/**
 * Ranking paths: which of a peer's paths carries its traffic, and which are equally preferred (the
 * flow group the data plane spreads flows over by weight, dataplane/flows.ts).
 *
 * rankPaths orders the probed paths of a peer (probing.ts uses it); choosePath is the static choice
 * for a binding nobody probes (static peers, a peer without traffic yet): remote priority, then local
 * priority, then config order.
 */
export const STATE_RANK: Readonly<Record<PathStateName, number>> = Object.freeze({ up: 0, probation: 1, unknown: 2, suspect: 3, down: 4 });

export interface PathCandidate<P> {
  readonly path: P;
  readonly state: PathState;
  /** The remote locator's priority (lower is preferred; the remote realm's policy). */
  readonly remotePriority: number;
  /** The local uplink's priority (lower is preferred). */
  readonly localPriority: number;
  /** Share of flows among equally-preferred paths. */
  readonly weight: number;
}

/**
 * Paths of one peer that can send (local uplink usable), best first: by state (up > probation >
 * unknown > suspect > down), then remote priority, then local priority, then smoothed RTT (unknown
 * last), then input order; among down paths, those answering again (held down by the flap penalty)
 * come first, whatever their priority. Down paths stay in the list as a last resort for when nothing else is left. `current`
 * (the path in use) stays first while it is in the best class and its RTT is within `rttMarginMs` or
 * 20 % of the best's, so two paths of nearly equal RTT never make traffic hop back and forth.
 */
export function rankPaths<P>(cands: readonly PathCandidate<P>[], current?: P, rttMarginMs = 5): PathCandidate<P>[] {
  const ranked = cands
    .filter((c) => c.state.localUp)
    .map((c, i) => ({ c, i }))
    .sort((a, b) => compareState(a.c, b.c) || compareRevival(a.c, b.c) || compareClass(a.c, b.c) || compareRtt(a.c, b.c) || a.i - b.i)
    .map((x) => x.c);
  if (current === undefined || ranked.length < 2) return ranked;
  const at = ranked.findIndex((c) => c.path === current);
  if (at <= 0) return ranked;
  const best = ranked[0];
  const cur = ranked[at];
  if (compareClass(cur, best) !== 0) return ranked;
  const bestRtt = best.state.rttMs;
  const curRtt = cur.state.rttMs;
  const close = bestRtt === null || curRtt === null || curRtt - bestRtt <= Math.max(rttMarginMs, 0.2 * bestRtt);
  if (!close) return ranked;
  return [cur, ...ranked.slice(0, at), ...ranked.slice(at + 1)];
}

/** The leading paths of a ranked list that are equally preferred (same state class and priorities): spread flows over these. */
export function preferredGroup<P>(ranked: readonly PathCandidate<P>[]): PathCandidate<P>[] {
  if (ranked.length === 0) return [];
  let n = 1;
  while (n < ranked.length && compareClass(ranked[n], ranked[0]) === 0) n++;
  return ranked.slice(0, n);
}

function compareClass<P>(a: PathCandidate<P>, b: PathCandidate<P>): number {
  return STATE_RANK[a.state.state] - STATE_RANK[b.state.state] || a.remotePriority - b.remotePriority || a.localPriority - b.localPriority;
}

function compareState<P>(a: PathCandidate<P>, b: PathCandidate<P>): number {
  return STATE_RANK[a.state.state] - STATE_RANK[b.state.state];
}

function compareRevival<P>(a: PathCandidate<P>, b: PathCandidate<P>): number {
  if (a.state.state !== 'down') return 0;
  return b.state.consecutiveReplies - a.state.consecutiveReplies;
}

function compareRtt<P>(a: PathCandidate<P>, b: PathCandidate<P>): number {
  const x = a.state.rttMs;
  const y = b.state.rttMs;
  if (x === null) return y === null ? 0 : 1;
  if (y === null) return -1;
  return x - y;
}

/** What path choice reads of a local uplink (the uplink table's snapshots fit). */
export type UplinkView = Pick<Uplink, 'family' | 'priority' | 'weight' | 'up'>;

/**
 * Picks the path (local uplink × remote locator) to use for a host: lowest remote priority first
 * (the remote host's realm decides which of its attachments is preferred), then lowest local
 * priority, then config order. Only usable pairs count: both up and of the same address family.
 */
export function choosePath(uplinks: readonly UplinkView[], locators: readonly BoundLocator[]): Path | null {
  let best: Path | null = null;
  let bestRemote = Infinity;
  let bestLocal = Infinity;
  for (const loc of locators) {
    if (!loc.up) continue;
    for (let u = 0; u < uplinks.length; u++) {
      const up = uplinks[u];
      if (!up.up || up.family !== loc.family) continue;
      if (loc.priority < bestRemote || (loc.priority === bestRemote && up.priority < bestLocal)) {
        best = { uplink: u, locator: loc };
        bestRemote = loc.priority;
        bestLocal = up.priority;
      }
    }
  }
  return best;
}

/**
 * Swaps in, for every map-cache entry that `skip` leaves to someone else (probing decides for the
 * peers it tracks), a copy with the path choosePath picks from the uplinks' state now.
 */
export function repathEntries(cache: MapCache, uplinks: readonly UplinkView[], skip: (e: MapEntry) => boolean = () => false): void {
  for (const e of cache.entries()) {
    if (skip(e)) continue;
    const path = choosePath(uplinks, e.locators);
    if (path?.uplink !== e.path?.uplink || path?.locator !== e.path?.locator) cache.set(Object.freeze({ ...e, path, group: [] }));
  }
}
