import { describe, expect, it } from 'vitest';
import { DEFAULT_PROBE_BUDGET, ProbeBudget, refill } from '../../agent/paths/probebudget.ts';
import { addressBytes } from '../../shared/address.ts';

/** The per-address probe budget on explicit times (no clock, nothing sleeps). */
const t0 = 1_000_000;
const A = addressBytes('192.0.2.77');
const B = addressBytes('2001:db8::77');

describe('ProbeBudget', () => {
  it('gives a burst, then perSecond, per address whatever the port', () => {
    const b = new ProbeBudget({ perSecond: 50, burst: 100, addresses: 16 });
    let ok = 0;
    for (let i = 0; i < 150; i++) if (b.take(A, 4341, t0)) ok++;
    expect(ok).toBe(100);
    // Another port of the same address shares its budget (a binding may list a victim under many
    // ports); another address has its own.
    expect(b.take(A, 4342, t0)).toBe(false);
    expect(b.take(B, 4341, t0)).toBe(true);
    // 1 s later: 50 more, not 100.
    ok = 0;
    for (let i = 0; i < 150; i++) if (b.take(A, 4341, t0 + 1_000)) ok++;
    expect(ok).toBe(50);
    // Steady: one every 20 ms.
    expect(b.take(A, 4341, t0 + 1_019)).toBe(false);
    expect(b.take(A, 4341, t0 + 1_020)).toBe(true);
  });

  it('one address spelled two ways is one budget', () => {
    const b = new ProbeBudget({ perSecond: 1, burst: 1, addresses: 16 });
    expect(b.take(addressBytes('2001:db8::1'), 4341, t0)).toBe(true);
    expect(b.take(addressBytes('2001:0db8:0:0::0001'), 4341, t0)).toBe(false);
  });

  it('refill is pure and never exceeds the burst; a clock going back refills nothing', () => {
    const o = DEFAULT_PROBE_BUDGET;
    const held = Object.freeze({ tokens: 0, at: t0 });
    expect(refill(held, t0 + 100, o)).toEqual({ tokens: o.perSecond / 10, at: t0 + 100 });
    expect(refill(held, t0 + 60_000, o).tokens).toBe(o.burst);
    expect(refill(held, t0 - 1_000, o)).toEqual({ tokens: 0, at: t0 });
    expect(held).toEqual({ tokens: 0, at: t0 });
  });

  it('holds at most `addresses` buckets, evicting the least recently used', () => {
    const b = new ProbeBudget({ perSecond: 1, burst: 1, addresses: 4 });
    const addr = (i: number) => addressBytes(`198.51.100.${i}`);
    for (let i = 1; i <= 4; i++) expect(b.take(addr(i), 1, t0)).toBe(true);
    expect(b.take(addr(1), 1, t0)).toBe(false); // 1 is now the most recently used
    expect(b.take(addr(5), 1, t0)).toBe(true); // evicts 2, not 1
    expect(b.size).toBe(4);
    expect(b.evictedEarly).toBe(1); // 2 had not refilled yet
    expect(b.take(addr(1), 1, t0)).toBe(false); // still held, still empty
    expect(b.take(addr(2), 1, t0)).toBe(true); // forgotten: a fresh bucket
    // Long after, every bucket is full again: evicting one (3) loses nothing and is not counted.
    expect(b.take(addr(6), 1, t0 + 10_000)).toBe(true);
    expect(b.evictedEarly).toBe(2);
  });
});
