/**
 * Closed-form expectations the simulation is checked against (printed by main.ts, asserted by the
 * tests), and the steady-state hit ratio of a TTL cache under independent Zipf lookups, used to
 * say what lookup rate the hit target would need.
 */
import { MOBILE, NOMADIC, STATIC, type MappingParams } from './hierarchy-params.ts';
import type { Population } from './population.ts';

/**
 * Expected stale share of a TTL entry's life, for a target of class cls. The entry is fetched at
 * a lookup, which is independent of the target's changes, so it starts at a random point of the
 * change process; it is stale from the first change after the fetch to its expiry.
 * - nomadic, period P, phase uniform: first change after the fetch is uniform on [0, P), so the
 *   stale share is T / 2P for T <= P, 1 - P / 2T beyond.
 * - mobile, alternating exponential stays a (primary) and c (backup): the time to the next change
 *   is exponential with mean a (probability a / (a + c)) or c; E[fresh] = E[min(that, T)].
 */
export function ttlStaleShare(cls: number, ttlS: number, p: MappingParams): number {
  if (cls === STATIC) return 0;
  if (cls === NOMADIC) {
    const total = p.nomadicPeriods.reduce((a, q) => a + q.share, 0);
    return p.nomadicPeriods.reduce((acc, q) => {
      const period = q.hours * 3_600;
      const share = ttlS <= period ? ttlS / (2 * period) : 1 - period / (2 * ttlS);
      return acc + (q.share / total) * share;
    }, 0);
  }
  const a = p.mobilePrimaryMeanS;
  const c = p.mobileBackupMeanS;
  const fresh = (a / (a + c)) * a * (1 - Math.exp(-ttlS / a)) + (c / (a + c)) * c * (1 - Math.exp(-ttlS / c));
  return 1 - fresh / ttlS;
}

/** The TTL strategy's expected stale ratio, weighting each class by the binding-hours the run held of it. */
export function expectedTtlStaleRatio(heldHoursByClass: readonly number[], ttlS: number, p: MappingParams): number {
  let held = 0;
  let stale = 0;
  heldHoursByClass.forEach((hours, cls) => {
    held += hours;
    stale += hours * ttlStaleShare(cls, ttlS, p);
  });
  return held === 0 ? 0 : stale / held;
}

/** Changes per second of one host of class cls, on average. */
export function changeRate(cls: number, p: MappingParams): number {
  if (cls === STATIC) return 0;
  if (cls === MOBILE) return 2 / (p.mobilePrimaryMeanS + p.mobileBackupMeanS);
  const total = p.nomadicPeriods.reduce((a, q) => a + q.share, 0);
  return p.nomadicPeriods.reduce((acc, q) => acc + q.share / total / (q.hours * 3_600), 0);
}

/**
 * all-push's expected stale ratio: every site holds every binding all the time and is stale for
 * the push's travel time after each change (2 hops under the home's middle, 4 elsewhere), so the
 * ratio is the mean change rate times the mean travel time (changes closer than that overlap,
 * which this ignores: at tens of ms it does not matter).
 */
export function expectedAllPushStaleRatio(pop: Population, p: MappingParams): number {
  let rate = 0;
  for (let h = 0; h < pop.hosts; h++) rate += changeRate(pop.cls[h], p);
  rate /= pop.hosts;
  let delay = 0;
  for (let b = 0; b < pop.bottoms; b++) {
    const near = pop.childCount[pop.middleOf[b]] - 1;
    delay += (near * 2 * p.rmHopS + (pop.bottoms - 1 - near) * 4 * p.rmHopS) / Math.max(1, pop.bottoms - 1);
  }
  return rate * (delay / pop.bottoms);
}

/** P(a lookup asks for rank k), k = 0..n-1. */
export function zipfProbabilities(n: number, s: number): Float64Array {
  const q = new Float64Array(n);
  let norm = 0;
  for (let k = 0; k < n; k++) norm += q[k] = (k + 1) ** -s;
  for (let k = 0; k < n; k++) q[k] /= norm;
  return q;
}

/**
 * Steady-state hit ratio of a site cache under independent lookups: a target asked at rate r per
 * second, kept for T after each miss, hits with probability rT / (1 + rT) (each miss opens a window
 * of T in which rT lookups are expected). Summed over Zipf ranks (q from zipfProbabilities), each
 * class weighted by the mix (classes are independent of popularity). A followed class is
 * approximated by a TTL of one lease. Ignores lookups of the site's own hosts and cache start-up.
 */
export function steadyHitRatio(q: Float64Array, ratePerSite: number, ttlByClass: readonly number[], mix: readonly number[]): number {
  const mixTotal = mix.reduce((a, b) => a + b, 0);
  let hit = 0;
  for (let c = 0; c < ttlByClass.length; c++) {
    const scale = ratePerSite * ttlByClass[c];
    let h = 0;
    for (let k = 0; k < q.length; k++) {
      const rt = scale * q[k];
      h += q[k] * (rt / (1 + rt));
    }
    hit += (mix[c] / mixTotal) * h;
  }
  return hit;
}

/** The per-site lookup rate (per second) at which steadyHitRatio reaches target (bisection on a log scale), or null beyond 10^9. */
export function rateForHitRatio(target: number, q: Float64Array, ttlByClass: readonly number[], mix: readonly number[]): number | null {
  let lo = 1e-6;
  let hi = 1e9;
  if (steadyHitRatio(q, hi, ttlByClass, mix) < target) return null;
  for (let i = 0; i < 50; i++) {
    const mid = Math.sqrt(lo * hi);
    if (steadyHitRatio(q, mid, ttlByClass, mix) < target) lo = mid;
    else hi = mid;
  }
  return hi;
}
