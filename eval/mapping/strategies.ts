/**
 * The strategies compared, and how a home RM that does not know classes learns them. A strategy
 * decides, when a site RM fetches a binding, how the site keeps it: for a TTL (then asks again),
 * or followed (the home RM pushes every change until the follow lapses). all-push is apart: every
 * binding lives at every site RM and every change goes down the whole tree.
 */
import { DEFAULT_LEARN, learnClass } from '../../mapping-server/classes.ts';
import type { ClassName } from '../../mapping-server/policy.ts';
import { PRIOR, type ChangeTrace } from './churn.ts';
import { MOBILE, NOMADIC, STATIC, type ClassIndex, type MappingParams } from './hierarchy-params.ts';

export type Mode = { readonly follow: false; readonly ttlS: number } | { readonly follow: true };

/**
 * Where the class that picks the mode comes from: the truth (an operator who set every host's
 * class), or learned by the home RM from the changes it commits, starting at the simulation's
 * start with no history (learned) or having watched every host for a week (learned-warm).
 */
export type Classifier = 'true' | 'learned' | 'learned-warm';

export type Strategy =
  | { readonly kind: 'push-all'; readonly name: string; readonly description: string }
  | {
      readonly kind: 'on-demand';
      readonly name: string;
      readonly description: string;
      /** By class index: static, nomadic, mobile. */
      readonly modes: readonly [Mode, Mode, Mode];
      readonly classifier: Classifier;
    };

const ttl = (ttlS: number): Mode => ({ follow: false, ttlS });
const FOLLOW: Mode = { follow: true };

export function strategies(p: MappingParams): Strategy[] {
  const hybrid: readonly [Mode, Mode, Mode] = [ttl(p.staticTtlS), ttl(p.nomadicTtlS), FOLLOW];
  const h = (s: number): string => `${s / 3_600} h`;
  return [
    { kind: 'push-all', name: 'all-push', description: 'NERD-style: every change pushed from the home RM up the tree and down to every site RM, which holds every binding' },
    { kind: 'on-demand', name: 'push-followers', description: `every binding followed by the sites that fetched it; pushed on change; the follow lapses ${p.followLeaseS} s after its last renewal`, modes: [FOLLOW, FOLLOW, FOLLOW], classifier: 'true' },
    { kind: 'on-demand', name: 'all-pull', description: `every binding cached for ${p.pullTtlS} s, then fetched again (LISP map-cache)`, modes: [ttl(p.pullTtlS), ttl(p.pullTtlS), ttl(p.pullTtlS)], classifier: 'true' },
    { kind: 'on-demand', name: 'all-cache', description: `every binding cached for ${h(p.cacheTtlS)} (DNS with long TTLs)`, modes: [ttl(p.cacheTtlS), ttl(p.cacheTtlS), ttl(p.cacheTtlS)], classifier: 'true' },
    { kind: 'on-demand', name: 'hybrid', description: `class known: static cached ${h(p.staticTtlS)}, nomadic pulled with a ${p.nomadicTtlS} s TTL, mobile pushed to followers`, modes: hybrid, classifier: 'true' },
    { kind: 'on-demand', name: 'learned', description: `as hybrid, by the class the home RM learns from the changes it sees, from no history at the simulation's start (fallback ${p.learnFallback})`, modes: hybrid, classifier: 'learned' },
    { kind: 'on-demand', name: 'learned-warm', description: 'as learned, but the home RM has watched every host for a week before the simulation starts', modes: hybrid, classifier: 'learned-warm' },
  ];
}

const INDEX: Record<ClassName, ClassIndex> = { static: STATIC, nomadic: NOMADIC, mobile: MOBILE };

/**
 * The home RM's learned class of a host, by the product's own rule (mapping-server/
 * classes.ts, learnClass: two changes within an hour make a host mobile, a week without change
 * static, anything else that changed nomadic, no history the fallback). It sees the host's last
 * four changes, as the RM keeps them. One scratch array is reused: this runs on every fetch.
 */
export class Learner {
  private readonly scratch: number[] = [];
  private readonly sinceMs: number;

  constructor(
    private readonly trace: ChangeTrace,
    private readonly warm: boolean,
    private readonly fallback: ClassName,
  ) {
    // Warm: watching since a week before the start, so an unchanged host is already static.
    this.sinceMs = warm ? -DEFAULT_LEARN.staticAfterMs : 0;
  }

  /** next: index of the host's first change after now (changeIndexAfter). */
  classOf(host: number, next: number, now: number): ClassIndex {
    const h = this.scratch;
    h.length = 0;
    const own = Math.min(PRIOR, next - this.trace.first[host]);
    if (this.warm && own < PRIOR) {
      const count = this.trace.priorCount[host];
      for (let i = Math.max(0, count - (PRIOR - own)); i < count; i++) h.push(this.trace.prior[host * PRIOR + i] * 1_000);
    }
    for (let i = next - own; i < next; i++) h.push(this.trace.times[i] * 1_000);
    return INDEX[learnClass(h, this.sinceMs, now * 1_000, this.fallback)];
  }
}
