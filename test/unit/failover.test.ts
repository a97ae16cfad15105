import { describe, expect, it } from 'vitest';
import {
  DEFAULT_PATH_TIMING as T,
  LOSS_WINDOW,
  apply,
  decide,
  flapPenalty,
  silence,
  initialPathState,
  lossRatio,
  onLocalLink,
  onProbeSent,
  onReply,
  rtoMs,
  type PathAction,
  type PathState,
  type PathStateName,
  type PathTiming,
} from '../../agent/paths/state.ts';
import { preferredGroup, rankPaths, type PathCandidate } from '../../agent/paths/rank.ts';
import { flowHash, pickByWeight } from '../../agent/dataplane/flows.ts';

const t0 = 1_000_000;
/** These tests probe sparsely (a handful of probes, one lost, is a high ratio): loss-based demotion off, tested on its own below. */
const NL: PathTiming = { ...T, lossyRatio: 2 };

/** A path that is up, with a probe answered at t0 (RTT 1 ms) and the next probe outstanding since t0 + 99. */
function upPath(): PathState {
  let s = initialPathState(t0 - 200);
  s = onProbeSent(s, t0 - 1);
  s = onReply(s, t0, 1);
  s = apply(s, decide(s, t0, T, true), t0);
  expect(s.state).toBe('up');
  return onProbeSent(s, t0 + 99);
}

/**
 * The thin shell, simulated: every `tick` ms, act on decide() until it says 'none'; a probe sent at t
 * is answered at t + rtt when `reachable(t)` says so. Returns the states entered, in order.
 */
function simulate(
  s0: PathState,
  from: number,
  to: number,
  opts: { reachable: (t: number) => boolean; active?: (t: number) => boolean; rtt?: number; tick?: number; timing?: PathTiming },
): { s: PathState; entered: { at: number; state: PathStateName }[]; probes: number; sentAt: number[] } {
  const tick = opts.tick ?? 10;
  const rtt = opts.rtt ?? 2;
  const timing = opts.timing ?? T;
  const pending: number[] = []; // reply arrival times
  const entered: { at: number; state: PathStateName }[] = [];
  let s = s0;
  let probes = 0;
  const sentAt: number[] = [];
  for (let now = from; now <= to; now += tick) {
    while (pending.length > 0 && pending[0] <= now) s = onReply(s, pending.shift() as number, rtt);
    for (let round = 0; round < 4; round++) {
      const a: PathAction = decide(s, now, timing, opts.active?.(now) ?? true);
      if (a.kind === 'none') break;
      if (a.kind === 'probe') {
        probes++;
        sentAt.push(now);
        if (opts.reachable(now)) pending.push(now + rtt);
      }
      const before = s.state;
      s = apply(s, a, now);
      if (s.state !== before) entered.push({ at: now, state: s.state });
    }
  }
  return { s, entered, probes, sentAt };
}

/** Gaps between consecutive probe times. */
const gaps = (times: readonly number[]) => times.slice(1).map((t, i) => t - times[i]);

describe('decide: timing of state changes', () => {
  it('probes an active path every probe interval, an idle one every idle interval', () => {
    const s = initialPathState(t0);
    expect(decide(s, t0, T, true)).toEqual({ kind: 'probe' });
    const sent = onProbeSent(s, t0);
    expect(decide(sent, t0 + 99, T, true)).toEqual({ kind: 'none' });
    expect(decide(sent, t0 + 100, T, true)).toEqual({ kind: 'probe' });
    const answered = onReply(sent, t0 + 1, 1);
    const up = apply(answered, decide(answered, t0 + 1, T, false), t0 + 1);
    expect(up.state).toBe('up');
    expect(decide(up, t0 + 4_999, T, false)).toEqual({ kind: 'none' });
    expect(decide(up, t0 + 5_000, T, false)).toEqual({ kind: 'probe' });
    expect(decide(up, t0 + 60_000, { ...T, idleProbeIntervalMs: Infinity }, false)).toEqual({ kind: 'none' });
  });

  it('unknown goes up on the first reply', () => {
    const s = onReply(onProbeSent(initialPathState(t0), t0), t0 + 3, 3);
    expect(decide(s, t0 + 3, T, true)).toEqual({ kind: 'markUp' });
  });

  it('an active path with no reply: suspect after 150 ms, down after 300 ms (counted from the last reply)', () => {
    const s = upPath(); // last reply at t0, probe outstanding since t0 + 99
    expect(decide(s, t0 + 149, T, true)).toEqual({ kind: 'none' });
    expect(decide(s, t0 + 150, T, true)).toEqual({ kind: 'markSuspect' });
    const suspect = apply(s, { kind: 'markSuspect' }, t0 + 150);
    expect(decide(suspect, t0 + 200, T, true)).toEqual({ kind: 'probe' });
    expect(decide(suspect, t0 + 299, T, true)).toEqual({ kind: 'probe' });
    expect(decide(suspect, t0 + 300, T, true)).toEqual({ kind: 'markDown' });
    expect(decide(s, t0 + 3_000, T, true)).toEqual({ kind: 'markDown' });
  });

  it('a suspect path that answers is up again', () => {
    const suspect = apply(upPath(), { kind: 'markSuspect' }, t0 + 150);
    const answered = onReply(suspect, t0 + 160, 60);
    expect(decide(answered, t0 + 160, T, true)).toEqual({ kind: 'markUp' });
  });

  it('a path that was idle is not condemned for the time nobody asked it', () => {
    // Last reply 4 s ago (idle probing, RTT 40 ms); traffic starts and the first active probe goes out now.
    let s = onReply(onProbeSent(initialPathState(t0 - 5_000), t0 - 4_040), t0 - 4_000, 40);
    s = apply(s, { kind: 'markUp' }, t0 - 4_000);
    s = onProbeSent(s, t0);
    expect(decide(s, t0 + 1, T, true)).toEqual({ kind: 'none' });
    expect(decide(s, t0 + 189, T, true).kind).not.toBe('markSuspect');
    // Silence counts from when the first answer was due (t0 + 40): probing is not steady yet, so no
    // probe interval is taken off (that made a peer that just became active look suspect at once).
    expect(decide(s, t0 + 190, T, true)).toEqual({ kind: 'markSuspect' });
    expect(decide(s, t0 + 339, T, true).kind).not.toBe('markDown');
    expect(decide(s, t0 + 340, T, true)).toEqual({ kind: 'markDown' });
  });

  it('with steady probing and any RTT, silence counts from the last reply', () => {
    // RTT 250 ms: probes every 100 ms, each answered 250 ms later.
    let s = initialPathState(t0);
    for (let i = 0; i < 30; i++) {
      const at = t0 + i * 100;
      s = onProbeSent(s, at);
      if (i >= 3) s = onReply(s, at, 250); // the reply to the probe sent at at - 250 (±50)
    }
    expect(s.lost).toBe(0);
    const last = s.lastReplyAt;
    expect(silence(s, last + 149, T, true)).toBeLessThan(150);
    expect(silence(s, last + 150, T, true)).toBe(150);
  });

  it('an idle path: one unanswered probe makes it suspect, a second one down', () => {
    let s = upPath();
    s = onReply(s, t0 + 101, 1);
    s = onProbeSent(s, t0 + 5_101); // idle probe, never answered
    // Silence counts from when the answer was due: sent + SRTT (1 ms).
    expect(decide(s, t0 + 5_251, T, false)).toEqual({ kind: 'none' });
    expect(decide(s, t0 + 5_252, T, false)).toEqual({ kind: 'markSuspect' });
    s = apply(s, { kind: 'markSuspect' }, t0 + 5_252);
    expect(decide(s, t0 + 10_101, T, false)).toEqual({ kind: 'probe' });
    s = onProbeSent(s, t0 + 10_101);
    expect(decide(s, t0 + 10_401, T, false)).toEqual({ kind: 'none' });
    expect(decide(s, t0 + 10_402, T, false)).toEqual({ kind: 'markDown' });
  });

  it('a down path needs upAfterReplies replies in a row for probation, then holdDownMs for up', () => {
    let s = apply(upPath(), { kind: 'markDown' }, t0 + 300);
    for (let i = 1; i <= 2; i++) {
      s = onReply(onProbeSent(s, t0 + 300 + i * 100), t0 + 301 + i * 100, 1);
      expect(decide(s, t0 + 301 + i * 100, NL, true).kind).not.toBe('markProbation');
    }
    // A lost probe breaks the run.
    s = onProbeSent(s, t0 + 600);
    s = onReply(onProbeSent(s, t0 + 700), t0 + 701, 1);
    expect(s.consecutiveReplies).toBe(1);
    expect(decide(s, t0 + 701, NL, true).kind).not.toBe('markProbation');
    s = onReply(onProbeSent(s, t0 + 800), t0 + 801, 1);
    s = onReply(onProbeSent(s, t0 + 900), t0 + 901, 1);
    expect(s.consecutiveReplies).toBe(3);
    expect(decide(s, t0 + 901, NL, true)).toEqual({ kind: 'markProbation' });
    s = apply(s, { kind: 'markProbation' }, t0 + 901);
    s = onReply(onProbeSent(s, t0 + 2_850), t0 + 2_851, 1);
    expect(decide(s, t0 + 2_851, NL, true)).toEqual({ kind: 'none' });
    expect(decide(s, t0 + 2_901, NL, true)).toEqual({ kind: 'markUp' });
  });

  it('a hiccup during probation keeps the hold-down running instead of promoting the path', () => {
    let s = apply(apply(upPath(), { kind: 'markDown' }, t0 + 300), { kind: 'markProbation' }, t0 + 1_000);
    s = onReply(onProbeSent(s, t0 + 1_000), t0 + 1_001, 1);
    s = onProbeSent(s, t0 + 1_100); // lost
    expect(decide(s, t0 + 1_151, NL, true)).toEqual({ kind: 'markSuspect' });
    s = apply(s, { kind: 'markSuspect' }, t0 + 1_151);
    s = onReply(onProbeSent(s, t0 + 1_200), t0 + 1_201, 1);
    expect(decide(s, t0 + 1_201, NL, true)).toEqual({ kind: 'markProbation' });
    s = apply(s, { kind: 'markProbation' }, t0 + 1_201);
    expect(s.recoveredAt).toBe(t0 + 1_000);
    expect(decide(s, t0 + 3_000, NL, true)).toEqual({ kind: 'markUp' });
  });

  it('a lossy path that still answers is suspect, and is not up again until its probes are clean for the hold-down', () => {
    // Steady probing every 100 ms, every other probe lost (a 30 % loss each way loses ~half the round trips).
    let s = upPath();
    let at = t0 + 1_000;
    let sawSuspect = false;
    for (let i = 0; i < 30; i++, at += 100) {
      s = onProbeSent(s, at);
      if (i % 2 === 0) s = onReply(s, at + 1, 1);
      for (let k = 0; k < 3; k++) {
        const a = decide(s, at + 2, T, true);
        if (a.kind === 'none' || a.kind === 'probe') break;
        if (a.kind === 'markSuspect') sawSuspect = true;
        s = apply(s, a, at + 2);
      }
      if (i > 8) expect(s.state).not.toBe('up');
    }
    expect(sawSuspect).toBe(true);
    // Loss ends: up only once the probe window is clean again (under lossyRatio: ~1.2 s of clean
    // answers after 50 % loss) and the hold-down since the path last came back has passed.
    let upAt = -1;
    for (let i = 0; i < 60 && upAt < 0; i++, at += 100) {
      s = onReply(onProbeSent(s, at), at + 1, 1);
      const a = decide(s, at + 2, T, true);
      if (a.kind !== 'none' && a.kind !== 'probe') s = apply(s, a, at + 2);
      if (s.state === 'up') upAt = at;
    }
    expect(upAt).toBeGreaterThan(0);
    expect(upAt - (t0 + 1_000 + 30 * 100)).toBeGreaterThanOrEqual(1_000);
    expect(upAt - s.recoveredAt).toBeGreaterThanOrEqual(T.holdDownMs);
  });

  it('one late reply is a fluke (back to up), a second suspect within the hold-down means probation', () => {
    let s = upPath();
    // Silence: suspect; then the reply comes (it was late, e.g. queued behind data).
    s = apply(s, { kind: 'markSuspect' }, t0 + 160);
    s = onReply(s, t0 + 170, 70);
    expect(decide(s, t0 + 170, T, true)).toEqual({ kind: 'markUp' });
    s = apply(s, { kind: 'markUp' }, t0 + 170);
    // Suspect again 1 s later: no fluke this time.
    s = apply(s, { kind: 'markSuspect' }, t0 + 1_170);
    s = onReply(s, t0 + 1_180, 5);
    expect(decide(s, t0 + 1_180, T, true)).toEqual({ kind: 'markProbation', fresh: true });
    s = apply(s, { kind: 'markProbation', fresh: true }, t0 + 1_180);
    expect(s.recoveredAt).toBe(t0 + 1_180);
    // A third, long after: a fluke again.
    s = apply(apply(s, { kind: 'markUp' }, t0 + 3_200), { kind: 'markSuspect' }, t0 + 9_000);
    s = onReply(s, t0 + 9_010, 5);
    expect(decide(s, t0 + 9_010, T, true)).toEqual({ kind: 'markUp' });
  });

  it('local carrier loss puts the path down at once; back means probation', () => {
    const s = upPath();
    const out = onLocalLink(s, false, t0 + 120);
    expect(out.state).toBe('down');
    expect(out.since).toBe(t0 + 120);
    expect(decide(out, t0 + 200, T, true)).toEqual({ kind: 'none' }); // nothing can be sent on it
    expect(onLocalLink(out, false, t0 + 130)).toBe(out);
    const back = onLocalLink(out, true, t0 + 1_000);
    expect(back.state).toBe('probation');
    expect(decide(back, t0 + 1_000, T, true)).toEqual({ kind: 'probe' });
    // The time the uplink was out does not count as silence.
    expect(decide(onProbeSent(back, t0 + 1_000), t0 + 1_040, T, true)).toEqual({ kind: 'none' });
  });

  it('takes the whole failure to down within 300 ms of the last reply when simulated with probes', () => {
    const dead = t0 + 5_000;
    const { entered } = simulate(initialPathState(t0), t0, t0 + 6_000, { reachable: (t) => t < dead, tick: 5 });
    const down = entered.find((e) => e.state === 'down');
    expect(down).toBeDefined();
    expect((down?.at ?? 0) - dead).toBeLessThanOrEqual(T.downAfterMs);
    const suspect = entered.find((e) => e.state === 'suspect');
    expect((suspect?.at ?? 0) - dead).toBeLessThanOrEqual(T.suspectAfterMs);
  });
});

describe('decide: backing off (no amplification, docs/security.md decision 4)', () => {
  it('a path that never answered is probed at an interval doubling per unanswered probe, capped at 60 s', () => {
    expect(T.neverAnsweredMaxIntervalMs).toBe(60_000);
    const { sentAt, s } = simulate(initialPathState(t0), t0, t0 + 150_000, { reachable: () => false, tick: 50 });
    expect(sentAt.map((t) => t - t0)).toEqual([0, 100, 300, 700, 1_500, 3_100, 6_300, 12_700, 25_500, 51_100, 102_300]);
    expect(s.state).toBe('down');
    // Pure: the same state, asked at a later now, decides the same way.
    expect(decide(s, t0 + 162_299, T, true)).toEqual({ kind: 'none' });
    expect(decide(s, t0 + 162_300, T, true)).toEqual({ kind: 'probe' });
  });

  it('an idle never-answered path starts at the idle interval and backs off from there (never faster)', () => {
    const { sentAt } = simulate(initialPathState(t0), t0, t0 + 200_000, { reachable: () => false, active: () => false, tick: 50 });
    expect(gaps(sentAt)).toEqual([5_000, 10_000, 20_000, 40_000, 60_000, 60_000]);
  });

  it('a never-answered path goes to the full rate after its first reply, and comes up', () => {
    const comesAt = t0 + 3_000; // the locator starts answering (say, the peer finished starting)
    const { sentAt, entered } = simulate(initialPathState(t0), t0, t0 + 7_000, { reachable: (t) => t >= comesAt, rtt: 2 });
    const after = sentAt.filter((t) => t >= t0 + 3_100);
    expect(after[0]).toBe(t0 + 3_100); // the backed-off probe that gets the first answer
    expect(gaps(after).every((g) => g === T.probeIntervalMs)).toBe(true);
    // 3 replies in a row (to the probes of 3.1, 3.2, 3.3 s), probation at the next tick, then the 2 s hold-down.
    expect(entered.at(-1)).toEqual({ at: t0 + 3_310 + T.holdDownMs, state: 'up' });
  });

  it('a path that answered before keeps the full rate for 10 s down, then doubles to at most 1 s', () => {
    const dead = t0 + 1_000;
    const back = t0 + 30_000;
    const { sentAt, entered } = simulate(initialPathState(t0), t0, t0 + 35_000, { reachable: (t) => t < dead || t >= back });
    const downAt = entered.find((e) => e.state === 'down')?.at ?? NaN;
    expect(downAt - dead).toBeLessThanOrEqual(T.downAfterMs);
    const fast = sentAt.filter((t) => t >= dead && t < downAt + T.downBackoffAfterMs);
    expect(gaps(fast).every((g) => g === T.probeIntervalMs)).toBe(true);
    const slow = sentAt.filter((t) => t >= downAt + T.downBackoffAfterMs - T.probeIntervalMs && t < back + 1_000);
    expect(gaps(slow).slice(0, 5)).toEqual([100, 200, 400, 800, 1_000]);
    expect(Math.max(...gaps(slow))).toBe(T.downMaxIntervalMs);
    // About 60 probes in the 30 s outage instead of 300; back: found within 1 s, then the full rate.
    expect(sentAt.filter((t) => t >= dead && t < back).length).toBeLessThan(130);
    const probation = entered.find((e) => e.at >= back && e.state === 'probation');
    expect((probation?.at ?? Infinity) - back).toBeLessThanOrEqual(T.downMaxIntervalMs + 3 * T.probeIntervalMs);
  });
});

describe('hysteresis: a flapping path', () => {
  it('flapping every second for 20 s causes only a handful of transitions, and never goes up while flapping', () => {
    // Up at t0, then from t0 + 2 s reachable 500 ms / unreachable 500 ms for 20 s.
    const flapFrom = t0 + 2_000;
    const flapTo = flapFrom + 20_000;
    const reachable = (t: number) => t < flapFrom || t >= flapTo || Math.floor((t - flapFrom) / 500) % 2 === 0;
    const { entered, s } = simulate(initialPathState(t0), t0, flapTo, { reachable });
    const during = entered.filter((e) => e.at >= flapFrom);
    const ups = during.filter((e) => e.state === 'up').length;
    const downs = during.filter((e) => e.state === 'down').length;
    // Measured: down at 0.7, 1.7, 2.7 s, then suppressed (penalty ≥ 2) until ~10.5 s, down again at
    // 10.7 s, suppressed until ~19.4 s: 20 flaps, 5 transitions to down, none to up.
    expect(ups).toBe(0);
    expect(downs).toBeGreaterThanOrEqual(1);
    expect(downs).toBeLessThanOrEqual(5);
    // Once stable again it comes back, after the penalty has decayed and the hold-down passed.
    const after = simulate(s, flapTo, flapTo + 60_000, { reachable: () => true });
    const upAgain = after.entered.find((e) => e.state === 'up');
    expect(upAgain).toBeDefined();
    expect(after.entered.filter((e) => e.state === 'down')).toEqual([]);
  });

  it('a preferred path flapping next to a stable one changes the chosen path at most twice', () => {
    const flapFrom = t0 + 2_000;
    const reachable = (t: number) => t < flapFrom || Math.floor((t - flapFrom) / 1_000) % 2 === 0;
    let a = initialPathState(t0);
    let b = initialPathState(t0);
    const replies: { at: number; path: 'a' | 'b' }[] = [];
    let chosen: string | undefined;
    let switches = 0;
    for (let now = t0; now <= flapFrom + 20_000; now += 10) {
      while (replies.length > 0 && replies[0].at <= now) {
        const r = replies.shift() as { at: number; path: 'a' | 'b' };
        if (r.path === 'a') a = onReply(a, r.at, 2);
        else b = onReply(b, r.at, 2);
      }
      for (const p of ['a', 'b'] as const) {
        for (let round = 0; round < 4; round++) {
          const s = p === 'a' ? a : b;
          const act = decide(s, now, T, true);
          if (act.kind === 'none') break;
          if (act.kind === 'probe' && (p === 'b' || reachable(now))) replies.push({ at: now + 2, path: p });
          if (p === 'a') a = apply(a, act, now);
          else b = apply(b, act, now);
        }
      }
      replies.sort((x, y) => x.at - y.at);
      const ranked = rankPaths([cand('a', a, 0), cand('b', b, 1)], chosen);
      const best = ranked[0]?.path;
      if (best !== chosen) {
        if (chosen !== undefined) switches++;
        chosen = best;
      }
    }
    expect(switches).toBeLessThanOrEqual(2);
    expect(chosen).toBe('b');
  });

  it('the flap penalty decays with its half-life', () => {
    let s = initialPathState(t0);
    s = apply(s, { kind: 'markDown' }, t0);
    expect(flapPenalty(s, t0, T)).toBeCloseTo(1);
    expect(flapPenalty(s, t0 + T.flapHalfLifeMs, T)).toBeCloseTo(0.5);
    for (let i = 0; i < 20; i++) s = apply(s, { kind: 'markDown' }, t0 + i);
    expect(s.downs.length).toBe(8);
  });
});

describe('RTT and loss', () => {
  it('smooths RTT per RFC 6298', () => {
    let s = onReply(onProbeSent(initialPathState(t0), t0), t0 + 100, 100);
    expect(s.rttMs).toBe(100);
    expect(s.rttVarMs).toBe(50);
    expect(rtoMs(s)).toBe(300);
    s = onReply(onProbeSent(s, t0 + 200), t0 + 260, 60);
    // RTTVAR = 3/4·50 + 1/4·|100 − 60| = 47.5; SRTT = 7/8·100 + 1/8·60 = 95.
    expect(s.rttVarMs).toBeCloseTo(47.5);
    expect(s.rttMs).toBeCloseTo(95);
    for (let i = 0; i < 100; i++) s = onReply(onProbeSent(s, t0 + 300 + i * 100), t0 + 310 + i * 100, 10);
    expect(s.rttMs).toBeCloseTo(10, 1);
    expect(rtoMs(s)).toBeLessThan(12);
    expect(rtoMs(initialPathState(t0))).toBe(1_000);
  });

  it('estimates loss over the last 20 probes, the one in flight excluded', () => {
    let s = initialPathState(t0);
    let t = t0;
    // 40 probes, every 4th lost.
    for (let i = 0; i < 40; i++) {
      s = onProbeSent(s, (t += 100));
      if (i % 4 !== 3) s = onReply(s, t + 1, 1);
    }
    expect(s.sent).toBe(40);
    expect(s.probeTimes.length).toBe(LOSS_WINDOW);
    // Last probe (i = 39) is unanswered but still in flight; 19 resolved, i = 23, 27, 31, 35 lost.
    expect(s.lost).toBe(4);
    expect(lossRatio(s, t)).toBeCloseTo(4 / 19);
    expect(lossRatio(s, t + 5_000)).toBeCloseTo(5 / 20);
    // 20 good probes later the window is clean.
    for (let i = 0; i < 20; i++) s = onReply(onProbeSent(s, (t += 100)), t + 1, 1);
    expect(s.lost).toBe(0);
    expect(s.consecutiveReplies).toBe(LOSS_WINDOW);
  });

  it('a late reply (RTT above the probe interval) is not counted as loss', () => {
    let s = initialPathState(t0);
    s = onProbeSent(s, t0);
    s = onProbeSent(s, t0 + 100);
    s = onReply(s, t0 + 150, 150); // answers the first probe, after the second went out
    s = onProbeSent(s, t0 + 200);
    s = onReply(s, t0 + 250, 150);
    s = onProbeSent(s, t0 + 300);
    s = onReply(s, t0 + 350, 150);
    expect(s.lost).toBe(0);
  });

  it('never mutates a state', () => {
    const s = upPath();
    const copy = JSON.stringify(s);
    onReply(s, t0 + 200, 5);
    onProbeSent(s, t0 + 200);
    apply(s, { kind: 'markDown' }, t0 + 300);
    onLocalLink(s, false, t0 + 300);
    expect(JSON.stringify(s)).toBe(copy);
    expect(Object.isFrozen(s)).toBe(true);
  });
});

function cand<P>(path: P, state: PathState, localPriority: number, opts: Partial<PathCandidate<P>> = {}): PathCandidate<P> {
  return { path, state, localPriority, remotePriority: 0, weight: 1, ...opts };
}

function withState(name: PathStateName, rtt: number | null = null): PathState {
  let s = initialPathState(t0);
  if (rtt !== null) s = onReply(onProbeSent(s, t0), t0 + rtt, rtt);
  return name === 'unknown' ? s : apply(s, { kind: name === 'up' ? 'markUp' : name === 'down' ? 'markDown' : name === 'suspect' ? 'markSuspect' : 'markProbation' }, t0);
}

describe('rankPaths', () => {
  it('orders by state, then remote priority, then local priority, then RTT; down paths last', () => {
    const ranked = rankPaths([
      cand('down', withState('down', 1), 0),
      cand('suspect', withState('suspect', 1), 0),
      cand('unknown', withState('unknown'), 0),
      cand('probation', withState('probation', 1), 0),
      cand('up-slow', withState('up', 50), 0),
      cand('up-fast', withState('up', 5), 0),
      cand('up-lowprio', withState('up', 1), 1),
      cand('up-remote2', withState('up', 1), 0, { remotePriority: 2 }),
    ]);
    expect(ranked.map((c) => c.path)).toEqual(['up-fast', 'up-slow', 'up-lowprio', 'up-remote2', 'probation', 'unknown', 'suspect', 'down']);
  });

  it('among down paths, one that answers again (held down by its flap penalty) comes first', () => {
    const dead = cand('dead', withState('down', 1), 0);
    let answering = withState('down', 5);
    for (let i = 1; i <= 3; i++) answering = onReply(onProbeSent(answering, t0 + i * 100), t0 + i * 100 + 5, 5);
    expect(rankPaths([dead, cand('answering', answering, 1)]).map((c) => c.path)).toEqual(['answering', 'dead']);
  });

  it('drops paths whose local uplink is out', () => {
    const out = onLocalLink(withState('up', 1), false, t0);
    expect(rankPaths([cand('a', out, 0)])).toEqual([]);
  });

  it('keeps the current path while its RTT is close to the best, so near-equal paths never hop', () => {
    const a = cand('a', withState('up', 10), 0);
    const b = cand('b', withState('up', 11), 0);
    expect(rankPaths([a, b])[0].path).toBe('a');
    expect(rankPaths([a, b], 'b')[0].path).toBe('b');
    const far = cand('b', withState('up', 40), 0);
    expect(rankPaths([a, far], 'b')[0].path).toBe('a');
    // Never across a class: a current path on probation yields to an up one.
    expect(rankPaths([a, cand('b', withState('probation', 10), 0)], 'b')[0].path).toBe('a');
  });

  it('preferredGroup is the equally-preferred head', () => {
    const ranked = rankPaths([
      cand('a', withState('up', 10), 0, { weight: 1 }),
      cand('b', withState('up', 30), 0, { weight: 3 }),
      cand('c', withState('up', 1), 1),
      cand('d', withState('probation', 1), 0),
    ]);
    expect(preferredGroup(ranked).map((c) => c.path)).toEqual(['a', 'b']);
    expect(preferredGroup([])).toEqual([]);
  });
});

/** An IPv6/UDP (or TCP) packet with the given addresses' last byte, ports and flow label. */
function packet(opts: { src?: number; dst?: number; nh?: number; sport?: number; dport?: number; flowLabel?: number; ext?: number } = {}): Uint8Array {
  const ext = opts.ext ?? -1;
  const b = new Uint8Array(40 + (ext >= 0 ? 8 : 0) + 8);
  const fl = opts.flowLabel ?? 0;
  b[0] = 0x60;
  b[1] = (fl >> 16) & 0x0f;
  b[2] = (fl >> 8) & 0xff;
  b[3] = fl & 0xff;
  const nh = opts.nh ?? 17;
  b[6] = ext >= 0 ? ext : nh;
  b[8] = 0xfd;
  b[23] = opts.src ?? 1;
  b[24] = 0xfd;
  b[39] = opts.dst ?? 2;
  let p = 40;
  if (ext >= 0) {
    b[p] = nh;
    b[p + 1] = 0;
    p += 8;
  }
  const sport = opts.sport ?? 1234;
  const dport = opts.dport ?? 443;
  b[p] = sport >> 8;
  b[p + 1] = sport & 0xff;
  b[p + 2] = dport >> 8;
  b[p + 3] = dport & 0xff;
  return b;
}

describe('flowHash', () => {
  it('hashes the 5-tuple: same flow, same hash; any field changed, another hash', () => {
    const base = flowHash(packet(), 0);
    expect(flowHash(packet(), 0)).toBe(base);
    expect(flowHash(packet({ src: 9 }), 0)).not.toBe(base);
    expect(flowHash(packet({ dst: 9 }), 0)).not.toBe(base);
    expect(flowHash(packet({ sport: 1235 }), 0)).not.toBe(base);
    expect(flowHash(packet({ dport: 80 }), 0)).not.toBe(base);
    expect(flowHash(packet({ nh: 6 }), 0)).not.toBe(base);
    expect(base).toBeGreaterThanOrEqual(0);
  });

  it('ignores the flow label and payload when ports are there; uses the flow label otherwise', () => {
    const a = packet({ flowLabel: 1 });
    const b = packet({ flowLabel: 2 });
    b[47] = 99; // payload
    expect(flowHash(a, 0)).toBe(flowHash(b, 0));
    expect(flowHash(packet({ nh: 58, flowLabel: 1 }), 0)).not.toBe(flowHash(packet({ nh: 58, flowLabel: 2 }), 0));
  });

  it('skips extension headers to find the ports, and reads at an offset', () => {
    const plain = packet({ sport: 5000 });
    const withDestOpts = packet({ sport: 5000, ext: 60 });
    expect(flowHash(withDestOpts, 0)).not.toBe(0);
    expect(flowHash(withDestOpts, 0)).not.toBe(flowHash(packet({ sport: 5001, ext: 60 }), 0));
    const shifted = new Uint8Array(plain.length + 10);
    shifted.set(plain, 10);
    expect(flowHash(shifted, 10)).toBe(flowHash(plain, 0));
  });

  it('hashes all fragments of a packet alike (no ports)', () => {
    const first = packet({ ext: 44, sport: 1 });
    const later = packet({ ext: 44, sport: 2 });
    expect(flowHash(first, 0)).toBe(flowHash(later, 0));
  });

  it('returns 0 for a short or non-IPv6 packet and never reads past len', () => {
    expect(flowHash(new Uint8Array(20), 0)).toBe(0);
    const v4 = packet();
    v4[0] = 0x45;
    expect(flowHash(v4, 0)).toBe(0);
    const p = packet({ sport: 7 });
    expect(flowHash(p, 0, 40)).toBe(flowHash(packet({ sport: 8 }), 0, 40));
  });
});

describe('pickByWeight', () => {
  it('spreads 10k flows 1:3 within a few percent', () => {
    const cands = [{ weight: 1 }, { weight: 3 }];
    const counts = [0, 0];
    for (let i = 0; i < 10_000; i++) counts[pickByWeight(flowHash(packet({ src: i & 0xff, sport: i >> 8, dport: 1000 + (i % 7) }), 0), cands)]++;
    expect(counts[0] / 10_000).toBeGreaterThan(0.22);
    expect(counts[0] / 10_000).toBeLessThan(0.28);
  });

  it('spreads synthetic hashes over three weights in proportion', () => {
    const cands = [{ weight: 2 }, { weight: 1 }, { weight: 1 }];
    const counts = [0, 0, 0];
    for (let i = 0; i < 10_000; i++) counts[pickByWeight(Math.imul(i, 0x9e3779b1), cands)]++;
    expect(Math.abs(counts[0] / 10_000 - 0.5)).toBeLessThan(0.03);
    expect(Math.abs(counts[1] / 10_000 - 0.25)).toBeLessThan(0.03);
  });

  it('always maps one flow to the same index', () => {
    const cands = [{ weight: 1 }, { weight: 3 }, { weight: 2 }];
    const h = flowHash(packet({ sport: 40000 }), 0);
    const first = pickByWeight(h, cands);
    for (let i = 0; i < 100; i++) expect(pickByWeight(h, cands)).toBe(first);
  });

  it('moves only the flows of a candidate that leaves (with stable keys)', () => {
    const all = [
      { weight: 1, key: 0 },
      { weight: 1, key: 1 },
      { weight: 2, key: 2 },
    ];
    const without1 = [all[0], all[2]];
    let moved = 0;
    for (let i = 0; i < 5_000; i++) {
      const h = Math.imul(i + 1, 0x2545f491);
      const before = all[pickByWeight(h, all)].key;
      const after = without1[pickByWeight(h, without1)].key;
      if (before !== 1 && after !== before) moved++;
    }
    expect(moved).toBe(0);
  });

  it('ignores zero and negative weights; -1 when nothing can carry the flow', () => {
    expect(pickByWeight(123, [{ weight: 0 }, { weight: 5 }])).toBe(1);
    expect(pickByWeight(123, [{ weight: 0 }, { weight: -1 }])).toBe(-1);
    expect(pickByWeight(123, [])).toBe(-1);
  });
});
