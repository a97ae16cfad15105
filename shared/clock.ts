/**
 * Time comes from here so that decisions (caches, monitors, failover) can be tested by passing a
 * later `now` instead of sleeping.
 */
export interface Clock {
  /** Milliseconds, monotonic: never jumps with wall-clock changes. */
  now(): number;
}

export const systemClock: Clock = {
  now: () => performance.timeOrigin + performance.now(),
};

/** A clock tests move by hand. */
export class ManualClock implements Clock {
  constructor(private t = 0) {}
  now(): number {
    return this.t;
  }
  advance(ms: number): void {
    this.t += ms;
  }
  set(ms: number): void {
    this.t = ms;
  }
}
