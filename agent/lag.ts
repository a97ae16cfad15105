import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks';

/**
 * How late the event loop runs: the data path (TUN and UDP batches) shares the loop with every
 * control-plane handler, so any handler that holds the loop for a few ms holds packets for as long.
 * Node samples the delay with a 1 ms timer (perf_hooks.monitorEventLoopDelay). We keep the whole run
 * and one entry per second for the last SECONDS_KEPT seconds (wall-clock stamped), so that a
 * benchmark can take the worst second after its fault and leave out what happened before it (the
 * agent's own start, other processes starting on the box).
 */
export interface LagSecond {
  /** Wall-clock ms at the end of the second. */
  readonly at: number;
  readonly maxMs: number;
  readonly p99Ms: number;
}

export interface LagStats {
  readonly p99Ms: number;
  readonly maxMs: number;
  /** Over the last RECENT_SECONDS seconds. */
  readonly recentP99Ms: number;
  readonly recentMaxMs: number;
  /** Oldest first, at most SECONDS_KEPT. */
  readonly seconds: readonly LagSecond[];
}

const RESOLUTION_MS = 1;
const SECONDS_KEPT = 60;
const RECENT_SECONDS = 10;

export class EventLoopLag {
  private total: IntervalHistogram | null = null;
  private current: IntervalHistogram | null = null;
  private readonly kept: LagSecond[] = [];
  private timer: NodeJS.Timeout | null = null;

  constructor(private readonly wallClock: () => number = Date.now) {}

  start(): void {
    if (this.total !== null) return;
    this.total = monitorEventLoopDelay({ resolution: RESOLUTION_MS });
    this.current = monitorEventLoopDelay({ resolution: RESOLUTION_MS });
    this.total.enable();
    this.current.enable();
    this.timer = setInterval(() => this.rotate(), 1_000);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
    this.total?.disable();
    this.current?.disable();
    this.total = this.current = null;
  }

  stats(): LagStats {
    const t = this.total;
    const recent = this.kept.slice(-RECENT_SECONDS);
    const c = this.current;
    const now = c === null ? [] : [{ maxMs: delayMs(c.max, c), p99Ms: delayMs(c.percentile(99), c) }];
    const window = [...recent, ...now];
    return {
      p99Ms: t === null ? 0 : delayMs(t.percentile(99), t),
      maxMs: t === null ? 0 : delayMs(t.max, t),
      recentP99Ms: Math.max(0, ...window.map((s) => s.p99Ms)),
      recentMaxMs: Math.max(0, ...window.map((s) => s.maxMs)),
      seconds: this.kept.slice(),
    };
  }

  /** Every second: the second's figures are kept, a fresh histogram starts. */
  private rotate(): void {
    const c = this.current;
    if (c === null) return;
    this.kept.push({ at: this.wallClock(), maxMs: delayMs(c.max, c), p99Ms: delayMs(c.percentile(99), c) });
    if (this.kept.length > SECONDS_KEPT) this.kept.shift();
    c.reset();
  }
}

/** The histogram records how much later than due its 1 ms timer fired (ns); 0 before a sample. */
function delayMs(ns: number, h: IntervalHistogram): number {
  if (h.count === 0 || !Number.isFinite(ns)) return 0;
  return Math.round((ns / 1e6) * 100) / 100;
}
