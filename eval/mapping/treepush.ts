/**
 * all-push (NERD-style, RFC 6837): every site RM holds every binding, and every change goes from
 * the home RM up to its middle, up to the top, and down to every other middle and every site.
 * Every RM but the home one receives each change once, so a change costs 2 x (bottoms + middles)
 * messages (RM-PUSH + RM-PUSH-ACK per recipient). Every lookup is a hit; a site is stale from the
 * change until the push reaches it: two hops under the home's own middle, four elsewhere.
 */
import { EXCHANGES, PUSH, SITE_LOOKUP } from './hierarchy-params.ts';
import type { StrategyRun } from './ondemand.ts';
import type { LoadMeter } from './rmload.ts';
import { Tally, type Scenario } from './tally.ts';

const PUSH_MSGS = EXCHANGES.push.messages;
const LOOKUP_MSGS = EXCHANGES.siteLookup.messages;

export class TreePushRun implements StrategyRun {
  readonly tally = new Tally();
  private readonly near: number;
  private readonly far: number;
  private b = 0;

  constructor(
    private readonly sc: Scenario,
    rmHopS: number,
    readonly meter: LoadMeter,
  ) {
    this.near = 2 * rmHopS;
    this.far = 4 * rmHopS;
    this.pushChanges();
  }

  /** Every change, down the whole tree: messages, load per RM, and each site's stale window. */
  private pushChanges(): void {
    const { pop, trace, start, end } = this.sc;
    const { home, cls, middleOf, childCount, bottoms, middles } = pop;
    const { first, times } = trace;
    const { tally: t, meter, near, far } = this;
    const window = end - start;
    for (let h = 0; h < pop.hosts; h++) {
      const k = cls[h];
      // Every other site holds h's binding for the whole window.
      t.entryTime += (bottoms - 1) * window;
      t.classEntryTime[k] += (bottoms - 1) * window;
      const mh = middleOf[home[h]];
      const nearSites = childCount[mh] - 1;
      const farSites = bottoms - childCount[mh];
      const last = first[h + 1];
      for (let i = first[h]; i < last; i++) {
        const c = times[i];
        const following = i + 1 < last ? times[i + 1] : Infinity;
        const stop = following < end ? following : end;
        const from = c > start ? c : start;
        const stale = nearSites * Math.max(0, Math.min(c + near, stop) - from) + farSites * Math.max(0, Math.min(c + far, stop) - from);
        t.staleTime += stale;
        t.classStaleTime[k] += stale;
        if (c < start) continue;
        t.messages[PUSH] += PUSH_MSGS * (bottoms + middles);
        // Up: home -> its middle -> top; down: that middle to its other sites, the top to the
        // other middles, each of them to all its sites. Every site handles one push and its ack.
        meter.addAllBottoms(c, PUSH_MSGS);
        meter.add(meter.middle(mh), c, PUSH_MSGS * (2 + nearSites));
        meter.add(meter.top, c, PUSH_MSGS * middles);
        for (let m = 0; m < middles; m++) if (m !== mh) meter.add(meter.middle(m), c, PUSH_MSGS * (1 + childCount[m]));
      }
    }
  }

  beginSite(site: number): void {
    this.b = site;
  }

  endSite(): void {}

  lookup(x: number, h: number, k: number, hb: number, next: number, counted: boolean): void {
    if (!counted) return;
    const { tally: t, b } = this;
    t.lookups++;
    t.hits++;
    t.classLookups[k]++;
    t.classHits[k]++;
    t.messages[SITE_LOOKUP] += LOOKUP_MSGS;
    this.meter.add(b, x, LOOKUP_MSGS);
    if (hb === b) {
      t.localLookups++;
      return;
    }
    const { first, times } = this.sc.trace;
    if (next === first[h]) return;
    const middleOf = this.sc.pop.middleOf;
    const delay = middleOf[hb] === middleOf[b] ? this.near : this.far;
    if (x < times[next - 1] + delay) {
      t.staleAnswers++;
      t.classStaleAnswers[k]++;
    }
  }
}
