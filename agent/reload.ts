import { restartNeeded as keysNeedingRestart, sameConfig } from '../shared/config.ts';
import type { AgentConfig } from './config.ts';

/**
 * What a reload (SIGHUP, `systemctl reload`) changes, decided from the running config and the file as
 * it reads now. Pure: the agent applies the plan (agent.ts reload()).
 *
 * Live: uplinks added, removed or given other preferences, static peers, the log level. An uplink
 * whose locator, interface or gateway changed is removed and added again (a new socket). Everything
 * else (the TUN, the host ID and key, the realm, the RM servers, encryption, the data port, the
 * control socket, metrics, …) is named in `restartNeeded` and keeps its running value until a restart:
 * changing those under established sessions and flows would break them, which a reload must not.
 */
export interface ReloadPlan {
  readonly addUplinks: AgentConfig['uplinks'];
  /** Names of the running uplinks to remove. */
  readonly removeUplinks: readonly string[];
  readonly reprioritise: readonly { readonly name: string; readonly priority: number; readonly weight: number }[];
  readonly peersChanged: boolean;
  readonly logLevel: AgentConfig['log']['level'] | null;
  /** Top-level keys (or key.subkey) that changed but take a restart; empty when none. */
  readonly restartNeeded: readonly string[];
  /** The config in effect after the reload: the new live parts, the running values of the rest. */
  readonly effective: AgentConfig;
}

type Uplink = AgentConfig['uplinks'][number];

const LIVE_KEYS = new Set(['uplinks', 'peers', 'log']);

function sameSocket(a: Uplink, b: Uplink): boolean {
  return a.locator === b.locator && a.interface === b.interface && a.gateway === b.gateway;
}

export function planReload(running: AgentConfig, next: AgentConfig): ReloadPlan {
  const addUplinks: Uplink[] = [];
  const removeUplinks: string[] = [];
  const reprioritise: { name: string; priority: number; weight: number }[] = [];
  for (const u of running.uplinks) {
    const n = next.uplinks.find((x) => x.name === u.name);
    if (n === undefined || !sameSocket(u, n)) removeUplinks.push(u.name);
    else if (n.priority !== u.priority || n.weight !== u.weight) reprioritise.push({ name: n.name, priority: n.priority, weight: n.weight });
  }
  for (const n of next.uplinks) {
    const u = running.uplinks.find((x) => x.name === n.name);
    if (u === undefined || !sameSocket(u, n)) addUplinks.push(n);
  }
  const restartNeeded = keysNeedingRestart(running, next, LIVE_KEYS);
  const logLevel = running.log.level !== next.log.level ? next.log.level : null;
  const peersChanged = !sameConfig(running.peers, next.peers);
  const effective: AgentConfig = {
    ...running,
    uplinks: next.uplinks,
    peers: next.peers,
    log: { ...running.log, level: next.log.level },
  };
  return { addUplinks, removeUplinks, reprioritise, peersChanged, logLevel, restartNeeded, effective };
}

/** Whether the plan changes anything at all. */
export function planIsEmpty(p: ReloadPlan): boolean {
  return p.addUplinks.length === 0 && p.removeUplinks.length === 0 && p.reprioritise.length === 0 && !p.peersChanged && p.logLevel === null && p.restartNeeded.length === 0;
}
