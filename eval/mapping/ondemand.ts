/**
 * The strategies in which a site RM fetches a binding on demand and then keeps it for a TTL or
 * follows it (all-pull, all-cache, push-followers, hybrid, learned). Sites are independent (each
 * has its own cache and its own referrals), so mapsim.ts replays one site's lookups at a time, in
 * time order, against the shared read-only change trace, and hands each lookup to every
 * strategy's run. One run's state is one site's cache (reused from site to site), its referrals,
 * its tally and its load meter. Per lookup of target t at time x by site b:
 *
 *  1. b's hosts ask b (LOOKUP): 2 messages. A host homed at b: answered, a hit, done.
 *  2. b's cache holds t:
 *     - a TTL entry, not expired: hit; stale if t changed since the fetch.
 *     - a followed entry whose follow is open: hit; stale if t's last change is still being pushed
 *       (within one RM hop of it). Renew the follow (re-ask, 2 messages) once a share of the lease
 *       has passed: the home RM only hears of lookups through these renewals.
 *     - an expired or lapsed entry: a miss; a lapsed follow is closed first (step 5).
 *     Not held at all: a cold miss.
 *  3. Resolve (iterative, as mapping-server/recursor.ts): from the longest cached
 *     referral for t's home site, else from the top; each referral step and the home RM's answer
 *     are 2 messages; referrals are cached for referralTtlS.
 *  4. The class the strategy acts on (true or learned at the home RM now) picks the mode. A TTL
 *     entry's whole life [x, x + ttl) is known now, so its held time and stale time are counted at
 *     once. A followed entry also costs a follow exchange (2) and stays open.
 *  5. When a follow closes (lapsed, or the run ends), every change of t while it was open was
 *     pushed (RM-PUSH + ACK, 2 messages) and left the entry stale for one RM hop.
 */
import { EXCHANGES, FOLLOW, QUERY, REFERRAL, REVALIDATE, PUSH, SITE_LOOKUP, type MappingParams } from './hierarchy-params.ts';
import type { LoadMeter } from './rmload.ts';
import { FILL, KEY, SiteCache, STATE, UNTIL, following as isFollowing, nextOf as nextOfState, state as stateOf } from './sitecache.ts';
import { Learner, type Strategy } from './strategies.ts';
import { Tally, type Scenario } from './tally.ts';

export type ModelParams = Pick<MappingParams, 'rmHopS' | 'referralTtlS' | 'followLeaseS' | 'followRenewAfter' | 'learnFallback'>;

const LOOKUP_MSGS = EXCHANGES.siteLookup.messages;
const REFERRAL_MSGS = EXCHANGES.referral.messages;
const QUERY_MSGS = EXCHANGES.query.messages;
const FOLLOW_MSGS = EXCHANGES.follow.messages;
const RENEW_MSGS = EXCHANGES.revalidate.messages;
const PUSH_MSGS = EXCHANGES.push.messages;
// Local copies: the hot loop reads these per lookup, and an imported binding may be read through
// a getter once transpiled.
const M_SITE_LOOKUP = SITE_LOOKUP;
const M_REFERRAL = REFERRAL;
const M_QUERY = QUERY;
const M_FOLLOW = FOLLOW;
const M_REVALIDATE = REVALIDATE;
const M_PUSH = PUSH;
const F_KEY = KEY;
const F_FILL = FILL;
const F_UNTIL = UNTIL;
const F_STATE = STATE;
const following = isFollowing;
const nextOf = nextOfState;
const state = stateOf;

/** One strategy's state while mapsim.ts replays the lookups; all-push's is in treepush.ts. */
export interface StrategyRun {
  readonly tally: Tally;
  readonly meter: LoadMeter;
  beginSite(site: number): void;
  /**
   * One lookup at time x of host h (class k, homed at hb) by the current site; next is the index
   * of h's first change after x (only meaningful when hb is not the current site); counted: x is
   * inside the measured window.
   */
  lookup(x: number, h: number, k: number, hb: number, next: number, counted: boolean): void;
  endSite(): void;
}

export class SiteCacheRun implements StrategyRun {
  readonly tally = new Tally();
  private readonly cache = new SiteCache(4_096);
  private readonly refMiddle: Float64Array;
  private readonly refBottom: Float64Array;
  private readonly learner: Learner | null;
  /** Mode by class index: a TTL in seconds, or -1 for "follow". */
  private readonly ttlOf: Float64Array;
  private readonly renewWhenLeft: number;
  private b = 0;

  constructor(
    private readonly sc: Scenario,
    st: Extract<Strategy, { kind: 'on-demand' }>,
    private readonly p: ModelParams,
    readonly meter: LoadMeter,
  ) {
    this.learner = st.classifier === 'true' ? null : new Learner(sc.trace, st.classifier === 'learned-warm', p.learnFallback);
    this.ttlOf = Float64Array.from(st.modes, (m) => (m.follow ? -1 : m.ttlS));
    this.renewWhenLeft = p.followLeaseS * (1 - p.followRenewAfter);
    this.refMiddle = new Float64Array(sc.pop.middles);
    this.refBottom = new Float64Array(sc.pop.bottoms);
  }

  beginSite(site: number): void {
    this.b = site;
    this.cache.reset();
    this.refMiddle.fill(-Infinity);
    this.refBottom.fill(-Infinity);
  }

  endSite(): void {
    this.cache.forEach((slot) => {
      if (following(this.cache.rec[slot + F_STATE])) this.closeFollow(slot);
    });
  }

  lookup(x: number, h: number, k: number, hb: number, next: number, counted: boolean): void {
    const { tally: t, cache, meter, b } = this;
    meter.add(b, x, LOOKUP_MSGS);
    if (counted) {
      t.lookups++;
      t.classLookups[k]++;
      t.messages[M_SITE_LOOKUP] += LOOKUP_MSGS;
    }
    if (hb === b) {
      if (counted) {
        t.localLookups++;
        t.hits++;
        t.classHits[k]++;
      }
      return;
    }
    let slot = cache.find(h);
    if (slot >= 0) {
      const rec = cache.rec;
      const until = rec[slot + F_UNTIL];
      const st = rec[slot + F_STATE];
      if (following(st)) {
        if (x < until) {
          if (counted) {
            t.hits++;
            t.classHits[k]++;
            if (next > nextOf(st) && x < this.sc.trace.times[next - 1] + this.p.rmHopS) {
              t.staleAnswers++;
              t.classStaleAnswers[k]++;
            }
          }
          if (until - x <= this.renewWhenLeft) {
            rec[slot + F_UNTIL] = x + this.p.followLeaseS;
            if (counted) t.messages[M_REVALIDATE] += RENEW_MSGS;
            meter.add(b, x, RENEW_MSGS);
            meter.add(hb, x, RENEW_MSGS);
          }
          return;
        }
        this.closeFollow(slot);
        if (counted) t.lapsedMisses++;
      } else {
        if (x < until) {
          if (counted) {
            t.hits++;
            t.classHits[k]++;
            if (next > nextOf(st)) {
              t.staleAnswers++;
              t.classStaleAnswers[k]++;
            }
          }
          return;
        }
        if (counted) t.expiredMisses++;
      }
    } else {
      slot = cache.insert(h);
      if (counted) t.coldMisses++;
    }

    this.resolve(hb, x, counted);
    const acted = this.learner === null ? k : this.learner.classOf(h, next, x);
    if (counted) t.fills[k * 3 + acted]++;
    const rec = cache.rec;
    rec[slot + F_FILL] = x;
    const ttl = this.ttlOf[acted];
    if (ttl < 0) {
      rec[slot + F_STATE] = state(next, true);
      rec[slot + F_UNTIL] = x + this.p.followLeaseS;
      if (counted) t.messages[M_FOLLOW] += FOLLOW_MSGS;
      meter.add(b, x, FOLLOW_MSGS);
      meter.add(hb, x, FOLLOW_MSGS);
    } else {
      rec[slot + F_STATE] = state(next, false);
      rec[slot + F_UNTIL] = x + ttl;
      this.countTtlEntry(h, k, x, x + ttl, next);
    }
  }

  /** Step 3: the site asks its way to the home RM of the target, charging both ends of each exchange. */
  private resolve(hb: number, x: number, counted: boolean): void {
    const { tally: t, meter, b, refMiddle, refBottom } = this;
    const m = this.sc.pop.middleOf[hb];
    if (refBottom[hb] <= x) {
      if (refMiddle[m] <= x) {
        if (counted) t.messages[M_REFERRAL] += REFERRAL_MSGS;
        meter.add(b, x, REFERRAL_MSGS);
        meter.add(meter.top, x, REFERRAL_MSGS);
        refMiddle[m] = x + this.p.referralTtlS;
      }
      if (counted) t.messages[M_REFERRAL] += REFERRAL_MSGS;
      meter.add(b, x, REFERRAL_MSGS);
      meter.add(meter.middle(m), x, REFERRAL_MSGS);
      refBottom[hb] = x + this.p.referralTtlS;
    }
    if (counted) t.messages[M_QUERY] += QUERY_MSGS;
    meter.add(b, x, QUERY_MSGS);
    meter.add(hb, x, QUERY_MSGS);
  }

  /** Step 4: held time and stale time of a TTL entry of host h fetched at f (first change after it: next). */
  private countTtlEntry(h: number, k: number, f: number, until: number, next: number): void {
    const { start, end, trace } = this.sc;
    const lo = f > start ? f : start;
    const hi = until < end ? until : end;
    if (hi <= lo) return;
    const t = this.tally;
    t.entryTime += hi - lo;
    t.classEntryTime[k] += hi - lo;
    if (next < trace.first[h + 1]) {
      const c = trace.times[next];
      if (c < hi) {
        const stale = hi - (c > lo ? c : lo);
        t.staleTime += stale;
        t.classStaleTime[k] += stale;
      }
    }
  }

  /** Step 5: the site's follow of a host, open over [fill, until), closes. */
  private closeFollow(slot: number): void {
    const { tally: t, cache, meter, b } = this;
    const { start, end, trace, pop } = this.sc;
    const { first, times } = trace;
    const hop = this.p.rmHopS;
    const rec = cache.rec;
    const h = rec[slot + F_KEY];
    const f = rec[slot + F_FILL];
    const until = rec[slot + F_UNTIL];
    const st = rec[slot + F_STATE];
    const stop = until < end ? until : end;
    const k = pop.cls[h];
    const lo = f > start ? f : start;
    if (stop > lo) {
      t.entryTime += stop - lo;
      t.classEntryTime[k] += stop - lo;
    }
    const hb = pop.home[h];
    const last = first[h + 1];
    for (let i = nextOf(st); i < last && times[i] < until; i++) {
      const c = times[i];
      if (c >= start) t.messages[M_PUSH] += PUSH_MSGS;
      // The home RM sends and takes the ack; the site receives one hop later and acks.
      meter.add(hb, c, PUSH_MSGS);
      meter.add(b, c + hop, PUSH_MSGS);
      const following = i + 1 < last ? times[i + 1] : Infinity;
      let windowEnd = c + hop;
      if (following < windowEnd) windowEnd = following;
      if (stop < windowEnd) windowEnd = stop;
      const from = c > start ? c : start;
      if (windowEnd > from) {
        t.staleTime += windowEnd - from;
        t.classStaleTime[k] += windowEnd - from;
      }
    }
    rec[slot + F_STATE] = state(nextOf(st), false);
  }
}
