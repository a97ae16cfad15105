import { createAgent, type Agent, type MonitorLike } from '../../agent/agent.ts';
import { parseAgentConfig } from '../../agent/config.ts';
import { createRmClient } from '../../agent/rm/client.ts';
import { MemoryTun } from '../../agent/tun/memory.ts';
import type { MemoryNet } from '../../shared/udp/memory.ts';
import { systemClock } from '../../shared/clock.ts';
import { deriveHostId, parsePrefix } from '../../shared/ids.ts';
import { generateKeyPair, type KeyPair } from '../../shared/crypto/ed25519.ts';
import { silentLogger } from '../../shared/log.ts';
import { RealmTrust } from '../../agent/rm/trust.ts';
import { TAG_LEN } from '../../shared/wire/header.ts';
import type { JoinToken } from '../../shared/membership.ts';

/**
 * An agent in realm mode on fakes (MemoryTun, MemoryNet) with a real RM client on UDP over
 * 127.0.0.1, for integration tests: a fresh key, its host ID in `realmPrefix`, instance ID 3.
 */
export interface FakeAgent {
  readonly agent: Agent;
  readonly tun: MemoryTun;
  readonly id: string;
  readonly key: KeyPair;
}

export interface FakeAgentOptions {
  /** Extra agent config keys (e.g. `failover`). */
  readonly config?: Record<string, unknown>;
  /** Gives every uplink an interface name (eth0, eth1...) and watches them with this monitor. */
  readonly monitor?: MonitorLike;
  /** The realm trust its RM clients share (default: pins rm.publicKey). */
  readonly trust?: RealmTrust;
  /** A join token (instead of rm.admit). */
  readonly join?: JoinToken;
}

export interface UplinkSpec {
  readonly name: string;
  readonly locator: string;
  readonly priority?: number;
  readonly weight?: number;
}

/** The RM the agent uses; admit (an in-process RM's): the agent's key is admitted before it starts. */
export interface FakeAgentRm {
  readonly port: number;
  readonly publicKey: Uint8Array;
  readonly admit?: (publicKey: Uint8Array, prefix: string) => Promise<unknown>;
}

export function fakeAgent(net: MemoryNet, rm: FakeAgentRm, realmPrefix: string, uplinks: readonly UplinkSpec[], o: FakeAgentOptions = {}): FakeAgent {
  const key = generateKeyPair();
  const prefix = parsePrefix(realmPrefix);
  const hostId = deriveHostId(prefix, key.publicKey);
  // Room for the AEAD tag behind each packet, as the agent asks of a real device (encryption is on).
  const tun = new MemoryTun({ name: 'rn0', tailroom: TAG_LEN });
  const monitor = o.monitor;
  const config = parseAgentConfig({
    identity: { key: 'unused-in-test.key', prefix: realmPrefix },
    realm: { prefixes: ['fd00::/8'], instanceId: 3 },
    uplinks: monitor === undefined ? uplinks : uplinks.map((u, i) => ({ ...u, interface: `eth${i}` })),
    rm: { servers: [{ address: '127.0.0.1', port: rm.port }] },
    ...o.config,
  });
  const trust = o.trust ?? new RealmTrust({ realmKeys: [rm.publicKey], join: o.join ?? null });
  const inner = createAgent(config, {
    openTun: () => tun,
    openUdp: (opts) => net.open(opts),
    net: { ip: async () => undefined },
    log: silentLogger,
    clock: systemClock,
    identity: { key, prefix, hostId },
    trust,
    // One realm trust for the clients of all uplinks, as agent/main.ts wires it.
    makeRmClient: () => createRmClient({ rm: [{ address: '127.0.0.1', port: rm.port, publicKey: rm.publicKey }], key, prefix, trust, retransmit: { initialMs: 50, maxMs: 400, attempts: 5 } }),
    makeMonitor: monitor === undefined ? undefined : () => monitor,
  });
  const admit = rm.admit;
  const agent: Agent =
    admit === undefined
      ? inner
      : {
          start: async () => {
            await admit(key.publicKey, realmPrefix);
            await inner.start();
          },
          stop: () => inner.stop(),
          status: () => inner.status(),
          reregister: () => inner.reregister(),
          publish: (b) => inner.publish(b),
          reload: (c) => inner.reload(c),
        };
  return { agent, tun, id: hostId.toString(), key };
}

/** Polls `cond` every 10 ms; throws naming `what` after `ms`. */
export async function until(cond: () => boolean, ms = 5000, what = 'condition'): Promise<void> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > ms) throw new Error(`${what} not met within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 10));
  }
}
