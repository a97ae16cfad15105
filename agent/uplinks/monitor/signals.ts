/**
 * The monitor's decisions about the two signals that come before netlink: how often to read the
 * carrier bits, and what a send error does to an uplink. Pure: state and `now` in, decision out;
 * monitor.ts (the shell) keeps the state and the timers.
 */
import { constants } from 'node:os';

export interface SignalOptions {
  /** Carrier read interval while the uplinks carry traffic; 0: no carrier polling (netlink only). */
  readonly carrierPollMs: number;
  /** Carrier read interval while they do not. */
  readonly carrierIdlePollMs: number;
  /** The fast interval holds this long after traffic was last seen, so a pause between bursts keeps it. */
  readonly carrierActiveHoldMs: number;
  /** First hold of an uplink after ENETDOWN; doubles for each hold that follows within sendErrorHoldMaxMs. */
  readonly sendErrorHoldMs: number;
  readonly sendErrorHoldMaxMs: number;
}

/** When to read the carrier bits next: traffic seen lately (at lastActiveAt) means every carrierPollMs. */
export function carrierPollDelay(lastActiveAt: number, now: number, o: SignalOptions): number {
  return now - lastActiveAt < o.carrierActiveHoldMs ? o.carrierPollMs : o.carrierIdlePollMs;
}

export const ENETDOWN = constants.errno.ENETDOWN;
export const ENETUNREACH = constants.errno.ENETUNREACH;
export const EHOSTUNREACH = constants.errno.EHOSTUNREACH;

/** An uplink held unusable after ENETDOWN. */
export interface SendErrorHold {
  readonly until: number;
  /** Holds in a row, each begun within sendErrorHoldMaxMs of the previous one's end. */
  readonly strikes: number;
}

/**
 * The rule for a send error on an uplink (the data plane reports ENETDOWN, ENETUNREACH and
 * EHOSTUNREACH, at most once per uplink and batch):
 *
 * - Every one makes the monitor look again at once (carrier read, resync); the facts decide.
 * - ENETUNREACH / EHOSTUNREACH only do that: they come from routing and neighbour resolution, which
 *   the monitor's route facts already follow, and a neighbour that fails once says little.
 * - ENETDOWN ("the device is down", from the transmit path itself) also holds the uplink unusable at
 *   once, for sendErrorHoldMs; it is usable again only when the hold has run out AND the facts (fresh
 *   carrier read, netlink state) say usable. Errors during a hold do not extend it (batches already
 *   queued fail too). A hold that begins within sendErrorHoldMaxMs of the previous one's end doubles,
 *   up to sendErrorHoldMaxMs: an uplink that fails sends while the kernel calls it fine flaps at most
 *   once per hold, ever more slowly, instead of with every batch.
 */
export function holdAfterSendError(prev: SendErrorHold | undefined, errno: number, now: number, o: SignalOptions): SendErrorHold | undefined {
  if (errno !== ENETDOWN) return prev;
  if (prev !== undefined && now < prev.until) return prev;
  const strikes = prev !== undefined && now - prev.until < o.sendErrorHoldMaxMs ? prev.strikes + 1 : 0;
  return { until: now + Math.min(o.sendErrorHoldMaxMs, o.sendErrorHoldMs * 2 ** Math.min(strikes, 20)), strikes };
}

export function held(h: SendErrorHold | undefined, now: number): boolean {
  return h !== undefined && now < h.until;
}
