import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks';

/**
 * How late the event loop runs: the data path (TUN and UDP batches) shares the loop with every
 * control-plane handler, so any handler that holds the loop for a few ms holds packets for as long.
 * Node samples the delay with a 1 ms timer (perf_hooks.monitorEventLoopDelay); we keep the whole run
 * and a window of the last WINDOW_MS (two histograms, the older swapped out), so `realmnet status`
 * shows both a failover's spike and whether it is over.
 */
export interface LagStats {
  readonly p99Ms: number;
  readonly maxMs: number;
  /** Over roughly the last 10 s. */
  readonly recentP99Ms: number;
  readonly recentMaxMs: number;
}

const WINDOW_MS = 10_000;
const RESOLUTION_MS = 1;

export class EventLoopLag {
  private total: IntervalHistogram | null = null;
  private recent: IntervalHistogram | null = null;
  private previous: IntervalHistogram | null = null;
  private timer: NodeJS.Timeout | null = null;

  start(): void {
    if (this.total !== null) return;
    this.total = monitorEventLoopDelay({ resolution: RESOLUTION_MS });
    this.recent = monitorEventLoopDelay({ resolution: RESOLUTION_MS });
    this.total.enable();
    this.recent.enable();
    this.timer = setInterval(() => this.rotate(), WINDOW_MS / 2);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
    for (const h of [this.total, this.recent, this.previous]) h?.disable();
    this.total = this.recent = this.previous = null;
  }

  stats(): LagStats {
    const t = this.total;
    const r = this.recent;
    const p = this.previous;
    return {
      p99Ms: t === null ? 0 : delayMs(t.percentile(99), t),
      maxMs: t === null ? 0 : delayMs(t.max, t),
      recentP99Ms: r === null ? 0 : Math.max(delayMs(r.percentile(99), r), p === null ? 0 : delayMs(p.percentile(99), p)),
      recentMaxMs: r === null ? 0 : Math.max(delayMs(r.max, r), p === null ? 0 : delayMs(p.max, p)),
    };
  }

  /** Every half window: the current histogram becomes the previous one, a fresh one starts. */
  private rotate(): void {
    this.previous?.disable();
    this.previous = this.recent;
    this.recent = monitorEventLoopDelay({ resolution: RESOLUTION_MS });
    this.recent.enable();
  }
}

/** The histogram records how much later than due its 1 ms timer fired (ns); 0 before a sample. */
function delayMs(ns: number, h: IntervalHistogram): number {
  if (h.count === 0 || !Number.isFinite(ns)) return 0;
  return Math.round((ns / 1e6) * 100) / 100;
}
