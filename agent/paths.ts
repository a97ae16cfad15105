import type { Family } from '../shared/locator.ts';
import type { BoundLocator, MapCache, MapEntry, Path } from './mapcache/cache.ts';

/** What path choice needs to know of a local uplink. */
export interface UplinkView {
  readonly name: string;
  readonly family: Family;
  readonly priority: number;
  readonly weight: number;
  readonly up: boolean;
}

/**
 * Picks the path (local uplink × remote locator) to use for a host: lowest remote priority first
 * (the remote host's realm decides which of its attachments is preferred), then lowest local
 * priority, then config order. Only usable pairs count: both up and of the same address family.
 * Pure, so tests and the failover logic can call it freely.
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
 * Swaps in, for every map-cache entry that `skip` leaves to someone else (path probing decides for
 * the peers it tracks), a copy with the path choosePath picks from the uplinks' state now.
 */
export function repathEntries(cache: MapCache, uplinks: readonly UplinkView[], skip: (e: MapEntry) => boolean = () => false): void {
  for (const e of cache.entries()) {
    if (skip(e)) continue;
    const path = choosePath(uplinks, e.locators);
    if (path?.uplink !== e.path?.uplink || path?.locator !== e.path?.locator) cache.set(Object.freeze({ ...e, path, group: [] }));
  }
}
