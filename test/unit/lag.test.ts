import { describe, expect, it } from 'vitest';
import { EventLoopLag } from '../../agent/lag.ts';

describe('event-loop lag (agent/lag.ts)', () => {
  it('sees a blocked loop, keeps it per wall-clock second, and reports the whole run and the recent window', async () => {
    const lag = new EventLoopLag();
    lag.start();
    try {
      await new Promise((r) => setTimeout(r, 50));
      const until = performance.now() + 40;
      while (performance.now() < until) {
        // hold the loop for 40 ms, as a synchronous control-plane handler would
      }
      await new Promise((r) => setTimeout(r, 1_150));
      const s = lag.stats();
      expect(s.maxMs).toBeGreaterThanOrEqual(30);
      expect(s.recentMaxMs).toBeGreaterThanOrEqual(30);
      expect(s.seconds.length).toBeGreaterThanOrEqual(1);
      expect(Math.max(...s.seconds.map((x) => x.maxMs))).toBeGreaterThanOrEqual(30);
      expect(s.seconds[0].at).toBeLessThanOrEqual(Date.now());
    } finally {
      lag.stop();
    }
    expect(lag.stats()).toMatchObject({ maxMs: 0, p99Ms: 0 });
  });
});
