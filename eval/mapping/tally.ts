/**
 * What one strategy's run adds up, and the scenario it runs on. Everything is counted only inside
 * the measured window [start, end); the warm-up before it fills caches and follows but counts nothing.
 *
 * The metrics (docs/mapping-hierarchy.md, "Metrics"):
 * - hit ratio: lookups answered by the asker's own site RM without asking upstream / all lookups.
 *   A lookup of a host homed at the asker's own site is a hit (that RM is authoritative).
 * - stale ratio (time-weighted): of all the time a site RM held another site's binding it would
 *   hand out without asking (an unexpired TTL entry, an open follow, or, in all-push, every binding
 *   all the time), the share during which that binding was older than the one at the home RM.
 * - stale answers: lookups answered with an out-of-date binding / all lookups (per-answer view).
 * - messages: every control message of the exchanges in hierarchy-params.ts EXCHANGES.
 */
import type { ChangeTrace } from './churn.ts';
import { CLASS_NAMES, EXCHANGES, MESSAGE_KINDS, REGISTER, type MessageKind } from './hierarchy-params.ts';
import type { Population } from './population.ts';
import type { LoadMeter, Peak } from './rmload.ts';
import type { LookupSource } from './workload.ts';

export interface Scenario {
  readonly pop: Population;
  readonly trace: ChangeTrace;
  readonly lookups: LookupSource;
  /** The measured window, in seconds since the simulation's start. */
  readonly start: number;
  readonly end: number;
}

export class Tally {
  lookups = 0;
  hits = 0;
  /** Lookups of a host homed at the asking site itself. */
  localLookups = 0;
  /** Misses for a target this site had never fetched (since the simulation's start). */
  coldMisses = 0;
  expiredMisses = 0;
  lapsedMisses = 0;
  staleAnswers = 0;
  entryTime = 0;
  staleTime = 0;
  readonly messages = new Float64Array(MESSAGE_KINDS.length);
  /** By the target's true class. */
  readonly classLookups = new Float64Array(3);
  readonly classHits = new Float64Array(3);
  readonly classStaleAnswers = new Float64Array(3);
  readonly classEntryTime = new Float64Array(3);
  readonly classStaleTime = new Float64Array(3);
  /** Fetches by true class (row) and the class the strategy acted on (column): 3 x 3. */
  readonly fills = new Float64Array(9);

  totalMessages(): number {
    let n = 0;
    for (const m of this.messages) n += m;
    return n;
  }
}

export interface ClassFigures {
  readonly lookups: number;
  /** Site-RM-hours of held bindings of this class: the stale ratio's denominator. */
  readonly heldHours: number;
  readonly hitRatio: number;
  readonly staleRatio: number;
  readonly staleAnswerRatio: number;
}

export interface StrategyResult {
  readonly name: string;
  readonly description: string;
  readonly hosts: number;
  readonly hours: number;
  readonly lookups: number;
  readonly hitRatio: number;
  readonly staleRatio: number;
  readonly staleAnswerRatio: number;
  readonly coldMissRatio: number;
  readonly expiredMissRatio: number;
  readonly lapsedMissRatio: number;
  readonly totalMessages: number;
  readonly messagesPerHostHour: number;
  readonly messagesByKind: Readonly<Record<MessageKind, number>>;
  readonly peak: Peak;
  readonly byClass: Readonly<Record<(typeof CLASS_NAMES)[number], ClassFigures>>;
  /** fills[trueClass][actedClass]: fetches; off the diagonal a learner acted on a wrong class. */
  readonly fills: readonly (readonly number[])[];
  readonly wallS: number;
}

const ratio = (a: number, b: number): number => (b === 0 ? 0 : a / b);

export function summarize(t: Tally, name: string, description: string, sc: Scenario, peak: Peak, wallS: number): StrategyResult {
  const hours = (sc.end - sc.start) / 3_600;
  const total = t.totalMessages();
  const byKind = {} as Record<MessageKind, number>;
  MESSAGE_KINDS.forEach((k, i) => (byKind[k] = t.messages[i]));
  const byClass = {} as Record<(typeof CLASS_NAMES)[number], ClassFigures>;
  CLASS_NAMES.forEach((c, i) => {
    byClass[c] = {
      lookups: t.classLookups[i],
      heldHours: t.classEntryTime[i] / 3_600,
      hitRatio: ratio(t.classHits[i], t.classLookups[i]),
      staleRatio: ratio(t.classStaleTime[i], t.classEntryTime[i]),
      staleAnswerRatio: ratio(t.classStaleAnswers[i], t.classLookups[i]),
    };
  });
  return {
    name,
    description,
    hosts: sc.pop.hosts,
    hours,
    lookups: t.lookups,
    hitRatio: ratio(t.hits, t.lookups),
    staleRatio: ratio(t.staleTime, t.entryTime),
    staleAnswerRatio: ratio(t.staleAnswers, t.lookups),
    coldMissRatio: ratio(t.coldMisses, t.lookups),
    expiredMissRatio: ratio(t.expiredMisses, t.lookups),
    lapsedMissRatio: ratio(t.lapsedMisses, t.lookups),
    totalMessages: total,
    messagesPerHostHour: ratio(total, sc.pop.hosts * hours),
    messagesByKind: byKind,
    peak,
    byClass,
    fills: [0, 1, 2].map((r) => [0, 1, 2].map((c) => t.fills[r * 3 + c])),
    wallS,
  };
}

/**
 * Every change is registered at its home RM (REGISTER + REGISTER-REPLY), whatever the strategy:
 * the host tells its own RM, which is authoritative for it from that moment.
 */
export function registerChanges(sc: Scenario, t: Tally, meter: LoadMeter): void {
  const { first, times } = sc.trace;
  const home = sc.pop.home;
  for (let h = 0; h < sc.pop.hosts; h++) {
    for (let i = first[h]; i < first[h + 1]; i++) {
      const c = times[i];
      if (c < sc.start) continue;
      t.messages[REGISTER] += EXCHANGES.register.messages;
      meter.add(home[h], c, EXCHANGES.register.messages);
    }
  }
}
