/**
 * When each host's binding changes: the trace every strategy is run against. Times are seconds
 * from the start of the simulation (warm-up included). A change is committed at the home RM the
 * moment it happens; the host's own detection and REGISTER delay are not modelled.
 *
 * - static: never changes within a run (locators stable for months).
 * - nomadic: renumbered every P hours (P drawn per host from the period mix) at a random phase,
 *   as ISPs that reassign periodically do (Padmanabhan et al. 2016).
 * - mobile/multihomed: alternates between its primary uplink (exponential stay) and a backup
 *   (exponential stay): every failover is followed by a return. The process is started in its
 *   stationary state, so there is no start-up transient.
 */
import { DAY_S, MOBILE, NOMADIC, type MappingParams } from './hierarchy-params.ts';
import type { Population } from './population.ts';
import type { Stream } from './streams.ts';

/** Changes before time 0 kept per host for the learner that has watched for a week: the RM keeps four too. */
export const PRIOR = 4;

export interface ChangeTrace {
  /** first[h] .. first[h + 1] - 1 index host h's changes in times; first has hosts + 1 entries. */
  readonly first: Int32Array;
  readonly times: Float64Array;
  /** Up to PRIOR changes before time 0 per host (at h * PRIOR, ascending), for a learner with history. */
  readonly prior: Float64Array;
  readonly priorCount: Uint8Array;
}

/** Index of the first change of host h after time x, i.e. first[h] + the number of its changes at or before x. */
export function changeIndexAfter(trace: ChangeTrace, h: number, x: number): number {
  let lo = trace.first[h];
  let hi = trace.first[h + 1];
  const times = trace.times;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (times[mid] <= x) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

export function generateChanges(pop: Population, p: MappingParams, end: number, rng: Stream): ChangeTrace {
  const first = new Int32Array(pop.hosts + 1);
  const prior = new Float64Array(pop.hosts * PRIOR);
  const priorCount = new Uint8Array(pop.hosts);
  const perHostDay = p.classMix[MOBILE] * (DAY_S / (p.mobilePrimaryMeanS + p.mobileBackupMeanS)) * 2 + p.classMix[NOMADIC] * 2;
  let times = new Float64Array(Math.max(1_024, Math.ceil(pop.hosts * perHostDay * (end / DAY_S) * 1.1)));
  let n = 0;
  const push = (t: number): void => {
    if (n === times.length) {
      const grown = new Float64Array(times.length * 2);
      grown.set(times);
      times = grown;
    }
    times[n++] = t;
  };
  const periodTotal = p.nomadicPeriods.reduce((a, q) => a + q.share, 0);
  const stayPrimary = p.mobilePrimaryMeanS / (p.mobilePrimaryMeanS + p.mobileBackupMeanS);

  for (let h = 0; h < pop.hosts; h++) {
    first[h] = n;
    const c = pop.cls[h];
    if (c === NOMADIC) {
      const period = pickPeriod(p, periodTotal, rng.next()) * 3_600;
      const phase = rng.next() * period;
      for (let t = phase; t < end; t += period) push(t);
      for (let j = PRIOR; j >= 1; j--) prior[h * PRIOR + PRIOR - j] = phase - j * period;
      priorCount[h] = PRIOR;
    } else if (c === MOBILE) {
      const onPrimary = rng.next() < stayPrimary;
      let primary = onPrimary;
      for (let t = rng.exp(primary ? p.mobilePrimaryMeanS : p.mobileBackupMeanS); t < end; ) {
        push(t);
        primary = !primary;
        t += rng.exp(primary ? p.mobilePrimaryMeanS : p.mobileBackupMeanS);
      }
      // Backwards from 0: the stationary alternating process is reversible, so the time since
      // the last change is exponential with the current state's mean, and so on back.
      primary = onPrimary;
      let s = 0;
      for (let j = PRIOR - 1; j >= 0; j--) {
        s -= rng.exp(primary ? p.mobilePrimaryMeanS : p.mobileBackupMeanS);
        prior[h * PRIOR + j] = s;
        primary = !primary;
      }
      priorCount[h] = PRIOR;
    }
  }
  first[pop.hosts] = n;
  return { first, times: times.subarray(0, n), prior, priorCount };
}

function pickPeriod(p: MappingParams, total: number, u: number): number {
  let acc = 0;
  for (const q of p.nomadicPeriods) {
    acc += q.share / total;
    if (u < acc) return q.hours;
  }
  return p.nomadicPeriods[p.nomadicPeriods.length - 1].hours;
}

/** A trace from explicit change lists (tests, hand-built scenarios). */
export function traceOf(changes: readonly (readonly number[])[]): ChangeTrace {
  const first = new Int32Array(changes.length + 1);
  const all: number[] = [];
  changes.forEach((list, h) => {
    first[h] = all.length;
    all.push(...[...list].sort((a, b) => a - b));
  });
  first[changes.length] = all.length;
  return { first, times: Float64Array.from(all), prior: new Float64Array(changes.length * PRIOR), priorCount: new Uint8Array(changes.length) };
}
