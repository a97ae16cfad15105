/**
 * The path state machine: pure functions of (state, now). A path is a local uplink × a remote locator.
 *
 * 1. While traffic flows to a peer, the shell (probing.ts) probes each of that peer's paths every
 *    probeIntervalMs; idle paths every idleProbeIntervalMs (or never). onProbeSent / onReply fold what
 *    happened into an immutable PathState.
 * 2. decide(state, now, timing, active) returns one action; the shell performs it (send a probe) or
 *    folds it with apply(), then calls decide again until it returns 'none' (at most a few rounds).
 * 3. onLocalLink() takes the uplink table's verdict: carrier loss or the uplink's address/route gone
 *    puts every path of that uplink down at once, without waiting for probes.
 * Ranking the paths of a peer is rank.ts; spreading flows over equally preferred paths is the data
 * plane's (dataplane/flows.ts).
 *
 * States: unknown (never answered) → up on the first reply; up → suspect after ~1.5 probe intervals
 * of silence → down after downAfterMs; down → probation after upAfterReplies consecutive replies → up
 * after holdDownMs. A path that keeps failing collects a flap penalty (RFC 2439-style, decaying with a
 * half-life): above flapSuppressAt it stays down or on probation until the penalty decays, so a
 * flapping link cannot cause a switch storm.
 * A path that never answered, or has been down for long, is probed ever more rarely (probeInterval):
 * the locators come from the peer's binding, and we must not be its means to flood someone else.
 */

export interface PathTiming {
  /** Probe interval of a path whose peer has traffic. */
  readonly probeIntervalMs: number;
  /** Probe interval of an idle path; Infinity = never probe idle paths. */
  readonly idleProbeIntervalMs: number;
  /** No reply for this long (active) => suspect. */
  readonly suspectAfterMs: number;
  /** No reply for this long (active) => down. */
  readonly downAfterMs: number;
  /** A path that came back stays on probation this long before it is preferred again. */
  readonly holdDownMs: number;
  /** Consecutive replies a down path needs to go to probation. */
  readonly upAfterReplies: number;
  /** Half-life of the flap penalty (each transition to down adds 1). */
  readonly flapHalfLifeMs: number;
  /** With a penalty at or above this, a path may not leave down or probation. */
  readonly flapSuppressAt: number;
  /**
   * Share of recent probes lost (lossRatio, at least LOSSY_MIN_RESOLVED resolved) at which an up
   * path is suspect and a recovering one may not be up: a lossy path answers often enough never to
   * be silent for long, and would otherwise win traffic back after every answer.
   */
  readonly lossyRatio: number;
  /** A path that never answered is probed at an interval doubling per unanswered probe, up to this. */
  readonly neverAnsweredMaxIntervalMs: number;
  /** A path that answered before and has been down this long backs off too (doubling per probe)... */
  readonly downBackoffAfterMs: number;
  /** ...up to this interval. The first reply brings back the full rate. */
  readonly downMaxIntervalMs: number;
}

/**
 * Why these numbers (DESIGN.md §2): carrier loss is reported by the uplink monitor in a few ms and
 * needs no probing. A silent blackhole must cost at most ~500 ms of goodput, and TCP's own
 * retransmissions come at ~200 ms, 600 ms, 1.4 s: so a path is suspect after 150 ms without a reply
 * (1.5 probe intervals: one lost probe, before TCP's first retransmission, which then takes the
 * alternative if one ranks above it) and down after 300 ms (3 probe intervals, BFD's usual detect
 * multiplier), which leaves time to switch before TCP's second retransmission at ~600 ms. At 100 ms a
 * probe costs ~10 small datagrams/s per path of an active peer only. Idle paths are checked every 5 s so
 * that the first packet to a quiet peer does not pick a path that died meanwhile. A path that comes
 * back needs 3 replies in a row and then 2 s of good behaviour before it is preferred again
 * (Tailscale and MPTCP likewise avoid switching back on the first sign of life); three failures within a
 * few seconds (penalty ≥ 2, half-life 15 s) keep it down until it has been quiet for ~8 s, so a link
 * flapping every second causes about five transitions to down in 20 s and none to up.
 *
 * Backing off (docs/security.md decision 4, "no amplification"): the locators we probe come from the
 * peer's binding, which the peer chose, so one binding registered once that lists someone else's
 * address would make every correspondent with traffic to that peer send it ~10 probes/s per path for
 * as long as the traffic lasts. A path that has never answered proves nothing and earns no rate: its
 * interval doubles per unanswered probe (100, 200, 400 ... ms) up to 5 s, the idle interval, so a
 * victim gets 7 probes per path in the first ~6 s and then one per 5 s, and a genuine locator that is
 * merely slow to come up (a peer still starting, a firewall opened late) is found within 5 s; its first
 * reply brings the full rate back at once. A path that HAS
 * answered and went down keeps the full rate for 10 s: that is what finds a recovered path within a
 * probe interval (docs/failover.md), and most outages a failover rides out (carrier blips, a router
 * restarting, a Wi-Fi roam) are over well within 10 s. After that it doubles to at most 1 s: a path
 * down that long is a real outage whose recovery, found up to 1 s later, costs nothing while traffic
 * runs on another path, and an address that once answered (a peer that moved away, a reused address)
 * gets at most 1 probe/s per path. The per-address budget (probing.ts) bounds the sum over all peers.
 */
export const DEFAULT_PATH_TIMING: PathTiming = Object.freeze({
  probeIntervalMs: 100,
  idleProbeIntervalMs: 5_000,
  suspectAfterMs: 150,
  downAfterMs: 300,
  holdDownMs: 2_000,
  upAfterReplies: 3,
  flapHalfLifeMs: 15_000,
  flapSuppressAt: 2,
  lossyRatio: 0.2,
  neverAnsweredMaxIntervalMs: 60_000,
  downBackoffAfterMs: 10_000,
  downMaxIntervalMs: 1_000,
});

/** Probes that must have been resolved (answered or timed out) before a loss ratio is believed. */
export const LOSSY_MIN_RESOLVED = 5;

export type PathStateName = 'unknown' | 'up' | 'suspect' | 'down' | 'probation';

/** Probes whose outcome the loss estimate covers (bits of PathState.window). */
export const LOSS_WINDOW = 20;
/** Transitions to down remembered for the flap penalty (older ones weigh < 1/16 at 4 half-lives). */
export const MAX_DOWNS_KEPT = 8;

export interface PathState {
  readonly state: PathStateName;
  /** When the path entered `state`. */
  readonly since: number;
  /** The local uplink is usable (the monitor's `usable`). */
  readonly localUp: boolean;
  /** -Infinity before the first probe. */
  readonly lastSentAt: number;
  /** -Infinity before the first reply. */
  readonly lastReplyAt: number;
  /** Send time of the first probe after the last reply; null when nothing is outstanding. */
  readonly unansweredSince: number | null;
  /** Answered probes in a row, newest first (probes still in flight are skipped). */
  readonly consecutiveReplies: number;
  /** Smoothed RTT (RFC 6298 SRTT); null before the first sample. */
  readonly rttMs: number | null;
  /** RFC 6298 RTTVAR. */
  readonly rttVarMs: number | null;
  /** Probes sent, ever. */
  readonly sent: number;
  /** Unanswered probes among the last LOSS_WINDOW, not counting those still within their RTO (in flight). */
  readonly lost: number;
  /** Send times of the last LOSS_WINDOW probes, oldest first. */
  readonly probeTimes: readonly number[];
  /** Bit i set: probeTimes[i] was answered. */
  readonly answered: number;
  /** Last entry into probation (-Infinity: never); the hold-down counts from here. */
  readonly recoveredAt: number;
  /** The last two transitions to suspect (-Infinity: none): a second within a hold-down is no fluke. */
  readonly lastSuspectAt: number;
  readonly prevSuspectAt: number;
  /** Times of the last transitions to down, oldest first, at most MAX_DOWNS_KEPT. */
  readonly downs: readonly number[];
}

export type PathAction =
  | { readonly kind: 'none' }
  | { readonly kind: 'probe' }
  | { readonly kind: 'markSuspect' }
  | { readonly kind: 'markDown' }
  | { readonly kind: 'markUp' }
  /** fresh: the hold-down starts again now (the path was lossy), else it keeps running. */
  | { readonly kind: 'markProbation'; readonly fresh?: boolean };

const NONE: PathAction = Object.freeze({ kind: 'none' });
const PROBE: PathAction = Object.freeze({ kind: 'probe' });
const MARK_SUSPECT: PathAction = Object.freeze({ kind: 'markSuspect' });
const MARK_DOWN: PathAction = Object.freeze({ kind: 'markDown' });
const MARK_UP: PathAction = Object.freeze({ kind: 'markUp' });
const MARK_PROBATION: PathAction = Object.freeze({ kind: 'markProbation' });
const MARK_PROBATION_FRESH: PathAction = Object.freeze({ kind: 'markProbation', fresh: true });

export function initialPathState(now: number, localUp = true): PathState {
  return Object.freeze({
    state: localUp ? 'unknown' : 'down',
    since: now,
    localUp,
    lastSentAt: -Infinity,
    lastReplyAt: -Infinity,
    unansweredSince: null,
    consecutiveReplies: 0,
    rttMs: null,
    rttVarMs: null,
    sent: 0,
    lost: 0,
    probeTimes: [],
    answered: 0,
    recoveredAt: -Infinity,
    lastSuspectAt: -Infinity,
    prevSuspectAt: -Infinity,
    downs: [],
  });
}

// 1. Folding in what happened.

export function onProbeSent(s: PathState, now: number): PathState {
  const full = s.probeTimes.length >= LOSS_WINDOW;
  const probeTimes = Object.freeze([...(full ? s.probeTimes.slice(1) : s.probeTimes), now]);
  const answered = full ? s.answered >>> 1 : s.answered;
  const rto = rtoMs(s);
  return Object.freeze({
    ...s,
    lastSentAt: now,
    sent: s.sent + 1,
    unansweredSince: s.unansweredSince ?? now,
    probeTimes,
    answered,
    lost: lostIn(probeTimes, answered, now, rto),
    consecutiveReplies: repliesInARow(probeTimes, answered, now, rto),
  });
}

/**
 * A probe reply, with the RTT the shell measured from the timestamp the probe carried: it answers the
 * newest probe sent at or before now − rttMs (a duplicate reply changes nothing but lastReplyAt).
 */
export function onReply(s: PathState, now: number, rttMs: number): PathState {
  const rttSample = Math.max(0, rttMs);
  const sentAt = now - rttSample;
  let i = s.probeTimes.length - 1;
  while (i >= 0 && s.probeTimes[i] > sentAt + 0.5) i--;
  const fresh = i >= 0 && (s.answered & (1 << i)) === 0;
  const answered = fresh ? s.answered | (1 << i) : s.answered;
  // Still outstanding: the first unanswered probe sent after the one just answered.
  let unansweredSince: number | null = null;
  for (let j = i + 1; j < s.probeTimes.length; j++) {
    if ((answered & (1 << j)) === 0) {
      unansweredSince = s.probeTimes[j];
      break;
    }
  }
  const rtt = fresh || s.rttMs === null ? smoothRtt(s.rttMs, s.rttVarMs, rttSample) : { srtt: s.rttMs, rttvar: s.rttVarMs ?? 0 };
  const next = { ...s, rttMs: rtt.srtt, rttVarMs: rtt.rttvar };
  const rto = rtoMs(next);
  return Object.freeze({
    ...next,
    lastReplyAt: Math.max(s.lastReplyAt, now),
    unansweredSince,
    answered,
    lost: lostIn(s.probeTimes, answered, now, rto),
    consecutiveReplies: repliesInARow(s.probeTimes, answered, now, rto),
  });
}

/**
 * The uplink monitor's verdict on the local uplink. Out: down at once (no probe can leave). Back:
 * probation (the far side is not verified yet; decide() promotes it after the hold-down), with a clean
 * slate for silence so that the time the uplink was out does not count against it.
 */
export function onLocalLink(s: PathState, up: boolean, now: number): PathState {
  if (up === s.localUp) return s;
  if (!up) {
    const wasDown = s.state === 'down';
    return Object.freeze({
      ...s,
      localUp: false,
      state: 'down',
      since: wasDown ? s.since : now,
      unansweredSince: null,
      downs: wasDown ? s.downs : pushDown(s.downs, now),
    });
  }
  return Object.freeze({ ...s, localUp: true, state: 'probation', since: now, recoveredAt: now, unansweredSince: null });
}

/** Folds a decided action into the state ('probe' is onProbeSent). */
export function apply(s: PathState, action: PathAction, now: number): PathState {
  switch (action.kind) {
    case 'none':
      return s;
    case 'probe':
      return onProbeSent(s, now);
    case 'markSuspect':
      return Object.freeze({ ...s, state: 'suspect', since: now, lastSuspectAt: now, prevSuspectAt: s.lastSuspectAt });
    case 'markDown':
      return Object.freeze({ ...s, state: 'down', since: now, downs: pushDown(s.downs, now) });
    case 'markUp':
      return Object.freeze({ ...s, state: 'up', since: now });
    case 'markProbation':
      // From suspect the path never went down: its hold-down keeps running from when it came back
      // (unless it was lossy: then it starts again).
      return Object.freeze({ ...s, state: 'probation', since: now, recoveredAt: s.state === 'suspect' && action.fresh !== true ? s.recoveredAt : now });
  }
}

// 2. Deciding.

/**
 * The one next thing to do for a path at `now`. `active`: the peer has had traffic recently. State
 * changes come before probes; call again after performing an action until it returns 'none'.
 */
export function decide(s: PathState, now: number, t: PathTiming, active: boolean): PathAction {
  if (!s.localUp) return s.state === 'down' ? NONE : MARK_DOWN;

  const quiet = silence(s, now, t, active);
  const downAfter = active ? t.downAfterMs : t.downAfterMs + t.idleProbeIntervalMs;
  const suppressed = flapPenalty(s, now, t) >= t.flapSuppressAt;
  const isLossy = lossy(s, now, t);

  switch (s.state) {
    case 'unknown':
      if (s.lastReplyAt >= s.since) return MARK_UP;
      if (quiet >= downAfter) return MARK_DOWN;
      break;
    case 'up':
      if (quiet >= downAfter) return MARK_DOWN;
      if (quiet >= t.suspectAfterMs || isLossy) return MARK_SUSPECT;
      break;
    case 'probation':
      if (quiet >= downAfter) return MARK_DOWN;
      if (quiet >= t.suspectAfterMs) return MARK_SUSPECT;
      if (now - s.recoveredAt >= t.holdDownMs && !suppressed && !isLossy) return MARK_UP;
      break;
    case 'suspect':
      if (quiet >= downAfter) return MARK_DOWN;
      if (s.lastReplyAt >= s.since) {
        // A reply: back where it was. A path still inside its hold-down (or penalised) was on probation.
        // Lossy, or suspect twice within a hold-down: not a late reply under load but a bad path.
        if (isLossy || s.lastSuspectAt - s.prevSuspectAt < t.holdDownMs) return MARK_PROBATION_FRESH;
        return now - s.recoveredAt < t.holdDownMs || suppressed ? MARK_PROBATION : MARK_UP;
      }
      break;
    case 'down':
      if (s.consecutiveReplies >= t.upAfterReplies && s.lastReplyAt >= s.since && !suppressed) return MARK_PROBATION;
      break;
  }

  const interval = probeInterval(s, now, t, active);
  if (Number.isFinite(interval) && now - s.lastSentAt >= interval) return PROBE;
  return NONE;
}

/**
 * The interval before the next probe of this path (DEFAULT_PATH_TIMING says why): the active or idle
 * rate, backed off for a path that never answered (doubling per unanswered probe, up to
 * neverAnsweredMaxIntervalMs) and for one down longer than downBackoffAfterMs (doubling per probe sent
 * since then and since its last reply, up to downMaxIntervalMs). Backing off never probes faster than
 * the base rate (an idle peer's 5 s stays 5 s).
 */
export function probeInterval(s: PathState, now: number, t: PathTiming, active: boolean): number {
  const base = active ? t.probeIntervalMs : t.idleProbeIntervalMs;
  if (!Number.isFinite(base)) return base;
  if (s.lastReplyAt === -Infinity) {
    // Never answered: every probe it was sent went unanswered (or is still in flight).
    if (s.sent === 0) return base;
    return Math.max(base, Math.min(t.neverAnsweredMaxIntervalMs, base * 2 ** (s.sent - 1)));
  }
  if (s.state === 'down' && s.localUp && now - s.since >= t.downBackoffAfterMs) {
    // The window of probe times is long enough: the cap is reached within a handful of doublings.
    const from = Math.max(s.since + t.downBackoffAfterMs, s.lastReplyAt);
    let n = 0;
    for (let i = s.probeTimes.length - 1; i >= 0 && s.probeTimes[i] >= from; i--) n++;
    return Math.max(base, Math.min(t.downMaxIntervalMs, base * 2 ** n));
  }
  return base;
}

/**
 * How long the path has been silent while someone was asking: counted from the last reply, but never
 * from before the moment an answer could have come (the first unanswered probe's send time + SRTT),
 * less one probe interval while probing is steady (the last reply came within ~1.5 intervals of the
 * first unanswered probe) so that steady probing counts exactly from the last reply. So a path that
 * was idle, or whose peer has just become active, is not condemned for the time nobody asked it.
 */
export function silence(s: PathState, now: number, t: PathTiming, active: boolean): number {
  if (s.unansweredSince === null) return 0;
  const steady = active && s.unansweredSince - s.lastReplyAt <= 1.5 * t.probeIntervalMs;
  const expected = s.unansweredSince + (s.rttMs ?? 0) - (steady ? t.probeIntervalMs : 0);
  return Math.max(0, now - Math.max(s.lastReplyAt, expected));
}

/** Sum over recent transitions to down of 2^(-age/halfLife). */
export function flapPenalty(s: PathState, now: number, t: PathTiming): number {
  let p = 0;
  for (const at of s.downs) p += Math.pow(2, -Math.max(0, now - at) / t.flapHalfLifeMs);
  return p;
}

/** Fraction of the probes in the window that were lost (in-flight ones not counted). */
export function lossRatio(s: PathState, now: number): number {
  return resolvedLoss(s, now).ratio;
}

/** Enough of the recent probes were lost that the path should not carry traffic while another is clean. */
export function lossy(s: PathState, now: number, t: PathTiming): boolean {
  if (s.lost === 0) return false;
  const { resolved, ratio } = resolvedLoss(s, now);
  return resolved >= LOSSY_MIN_RESOLVED && ratio >= t.lossyRatio;
}

/** Probes of the window whose fate is known (answered, or older than the RTO) and the share of them lost. */
function resolvedLoss(s: PathState, now: number): { resolved: number; ratio: number } {
  const rto = rtoMs(s);
  let resolved = 0;
  for (let i = 0; i < s.probeTimes.length; i++) if ((s.answered & (1 << i)) !== 0 || now - s.probeTimes[i] > rto) resolved++;
  return { resolved, ratio: resolved > 0 ? lostIn(s.probeTimes, s.answered, now, rto) / resolved : 0 };
}

/** RFC 6298 retransmission timeout for a probe on this path (1 s before the first sample, clock granularity 1 ms). */
export function rtoMs(s: PathState): number {
  if (s.rttMs === null || s.rttVarMs === null) return 1_000;
  return s.rttMs + Math.max(1, 4 * s.rttVarMs);
}

// RFC 6298 §2: alpha = 1/8, beta = 1/4; the first sample sets SRTT = R, RTTVAR = R/2.
function smoothRtt(srtt: number | null, rttvar: number | null, r: number): { srtt: number; rttvar: number } {
  if (srtt === null || rttvar === null) return { srtt: r, rttvar: r / 2 };
  const nextVar = 0.75 * rttvar + 0.25 * Math.abs(srtt - r);
  return { srtt: 0.875 * srtt + 0.125 * r, rttvar: nextVar };
}

function lostIn(times: readonly number[], answered: number, now: number, rto: number): number {
  let lost = 0;
  for (let i = 0; i < times.length; i++) if ((answered & (1 << i)) === 0 && now - times[i] > rto) lost++;
  return lost;
}

function repliesInARow(times: readonly number[], answered: number, now: number, rto: number): number {
  let i = times.length - 1;
  while (i >= 0 && (answered & (1 << i)) === 0 && now - times[i] <= rto) i--; // in flight
  let n = 0;
  for (; i >= 0 && (answered & (1 << i)) !== 0; i--) n++;
  return n;
}

function pushDown(downs: readonly number[], now: number): readonly number[] {
  const next = downs.length >= MAX_DOWNS_KEPT ? downs.slice(downs.length - MAX_DOWNS_KEPT + 1) : downs.slice();
  next.push(now);
  return Object.freeze(next);
}
