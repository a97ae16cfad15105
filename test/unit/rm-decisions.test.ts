import { describe, expect, it } from 'vitest';
import { decidePush, pushBackoffMs } from '../../mapping-server/push.ts';
import { RateLimiter, takeToken } from '../../mapping-server/ratelimit.ts';
import { isExpired } from '../../mapping-server/sweep.ts';
import { DEFAULT_RETRANSMIT, decideRequest, retransmitDelay } from '../../agent/rm/requests.ts';

describe('RM decisions (pure, with a given now)', () => {
  it('push: wait, send, give up', () => {
    expect(decidePush({ attempts: 1, nextAt: 1000 }, 999, 5)).toBe('wait');
    expect(decidePush({ attempts: 1, nextAt: 1000 }, 1000, 5)).toBe('send');
    expect(decidePush({ attempts: 5, nextAt: 1000 }, 1000, 5)).toBe('giveUp');
    expect([1, 2, 3, 4, 5, 6].map((n) => pushBackoffMs(n, 100))).toEqual([100, 200, 400, 800, 1600, 1600]);
  });

  it('registration expiry', () => {
    expect(isExpired({ expiresAt: 180_000 }, 179_999)).toBe(false);
    expect(isExpired({ expiresAt: 180_000 }, 180_000)).toBe(true);
  });

  it('token bucket refills with time and caps at the burst', () => {
    const b = { tokens: 2, at: 0 };
    expect(takeToken(b, 0, 10, 2)).toBe(true);
    expect(takeToken(b, 0, 10, 2)).toBe(true);
    expect(takeToken(b, 0, 10, 2)).toBe(false);
    expect(takeToken(b, 100, 10, 2)).toBe(true);
    expect(takeToken(b, 100_000, 10, 2)).toBe(true);
    expect(b.tokens).toBe(1);
  });

  it('rate limiter table is bounded: new sources share the overflow bucket', () => {
    const r = new RateLimiter(1, 1, 2, 0);
    expect(r.allow('a', 0)).toBe(true);
    expect(r.allow('a', 0)).toBe(false);
    expect(r.allow('b', 0)).toBe(true);
    expect(r.allow('c', 0)).toBe(true); // overflow bucket, full
    expect(r.allow('d', 0)).toBe(false); // overflow bucket, now empty
    expect(r.size).toBe(2);
    expect(r.overflowHits).toBe(2);
    r.prune(10_000);
    expect(r.size).toBe(0);
  });
});

describe('RM client decisions', () => {
  it('backs off exponentially with jitter, capped, then fails', () => {
    const p = DEFAULT_RETRANSMIT;
    expect(retransmitDelay(1, p, 0.5)).toBe(250);
    expect(retransmitDelay(2, p, 0.5)).toBe(500);
    expect(retransmitDelay(3, p, 0)).toBe(750);
    expect(retransmitDelay(3, p, 1)).toBe(1250);
    expect(retransmitDelay(20, p, 0.5)).toBe(4000);
    expect(decideRequest({ attempts: 1, nextAt: 500 }, 499, p)).toBe('wait');
    expect(decideRequest({ attempts: 1, nextAt: 500 }, 500, p)).toBe('resend');
    expect(decideRequest({ attempts: p.attempts, nextAt: 500 }, 500, p)).toBe('fail');
  });
});
