import { pickByWeight } from '../dataplane/flows.ts';

/**
 * Which host a new flow to a user or data ID goes to (docs/slice2.md). Pure: the caller gathers what
 * the RM said (present), what probing says (alive, rttMs) and the owner's priority and weight.
 *
 * Users — SIP's sequential forking at the network layer: the present, reachable hosts of the lowest
 * priority number; among those, the flow's hash picks by weight (weighted rendezvous: a host that
 * leaves only moves its own flows). A host never gets two tries (the binding lists each host once:
 * no duplicate deliveries to one device, SIP's classic complaint).
 *
 * Data — NDN's ASF strategy: the live replica with the lowest measured RTT; replicas within
 * RTT_TIE_MS or RTT_TIE_RATIO of the best are ties, broken by weight. A replica not yet measured
 * counts as the slowest (it is still a candidate: a fresh answer must work before the first probe).
 */
export interface HostChoice {
  readonly present: boolean;
  readonly alive: boolean;
  /** Smoothed RTT of its best live path; null before a measurement. */
  readonly rttMs: number | null;
  readonly priority: number;
  readonly weight: number;
  /** Stable across calls (the flow hash key). */
  readonly key: number;
}

/** Replicas this close in RTT are equally good (probe jitter on one LAN is about this). */
export const RTT_TIE_MS = 2;
export const RTT_TIE_RATIO = 0.1;
/** LISP's "do not use". */
const NEVER = 255;

/** Why a host was chosen (status shows it per flow). */
export type ChoiceReason = 'priority' | 'rtt' | 'weight' | 'only';

const scratch: { weight: number; key: number }[] = [];
const scratchIdx: number[] = [];

/** Index into hosts of the host for a new flow with this hash, or -1 when none can take it. */
export function chooseHost(kind: 'user' | 'data', hosts: readonly HostChoice[], flowHash: number): number {
  let best = Infinity;
  for (const h of hosts) {
    if (!usable(h)) continue;
    const v = kind === 'user' ? h.priority : (h.rttMs ?? Infinity);
    if (v < best) best = v;
  }
  if (best === Infinity && kind === 'user') return -1;
  scratch.length = 0;
  scratchIdx.length = 0;
  const tie = kind === 'data' && Number.isFinite(best) ? Math.max(RTT_TIE_MS, best * RTT_TIE_RATIO) : 0;
  for (let i = 0; i < hosts.length; i++) {
    const h = hosts[i];
    if (!usable(h)) continue;
    const v = kind === 'user' ? h.priority : (h.rttMs ?? Infinity);
    const inBest = Number.isFinite(best) ? v <= best + tie : true;
    if (!inBest) continue;
    scratch.push({ weight: Math.max(h.weight, 1), key: h.key });
    scratchIdx.push(i);
  }
  if (scratch.length === 0) return -1;
  if (scratch.length === 1) return scratchIdx[0];
  const k = pickByWeight(flowHash, scratch);
  return k < 0 ? -1 : scratchIdx[k];
}

function usable(h: HostChoice): boolean {
  return h.present && h.alive && h.priority < NEVER;
}

/** The reason a choice was made, for status. */
export function choiceReason(kind: 'user' | 'data', hosts: readonly HostChoice[], chosen: number): ChoiceReason {
  let candidates = 0;
  for (const h of hosts) if (usable(h)) candidates++;
  if (candidates <= 1) return 'only';
  const c = hosts[chosen];
  if (kind === 'user') {
    const same = hosts.filter((h) => usable(h) && h.priority === c.priority).length;
    return same > 1 ? 'weight' : 'priority';
  }
  const measured = hosts.filter((h) => usable(h) && h.rttMs !== null && c.rttMs !== null && Math.abs(h.rttMs - c.rttMs) <= Math.max(RTT_TIE_MS, c.rttMs * RTT_TIE_RATIO)).length;
  return measured > 1 ? 'weight' : 'rtt';
}
