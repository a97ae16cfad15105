import { describe, expect, it } from 'vitest';
import { ManualClock } from '../../shared/clock.ts';
import { silentLogger } from '../../shared/log.ts';
import { generateKeyPair } from '../../shared/crypto/ed25519.ts';
import { deriveHostId, parsePrefix } from '../../shared/ids.ts';
import type { Binding } from '../../shared/binding.ts';
import { RmLink } from '../../agent/rm/link.ts';
import type { RegisterResult, RmClient } from '../../agent/rm/client.ts';
import { UplinkTable } from '../../agent/uplinks/table.ts';
import type { UdpBatchSocket } from '../../shared/udp/socket.ts';

/** The agent's link to its RMs: registration through every working uplink, done at the first acknowledgement. */
const prefix = parsePrefix('fd00:1::/32');

import { RealmTrust } from '../../agent/rm/trust.ts';

type Answer = (b: Binding) => Promise<RegisterResult>;

function fakeClient(answer: Answer, seen: Binding[]): RmClient {
  return {
    hostId: deriveHostId(prefix, generateKeyPair().publicKey),
    start: () => Promise.resolve(),
    stop: () => Promise.resolve(),
    register: (b) => {
      seen.push(b);
      return answer(b);
    },
    lookup: () => new Promise(() => {}),
    subscribe: () => Promise.resolve(0),
    unsubscribe: () => Promise.resolve(),
    onPush: () => () => undefined,
    onRevoke: () => () => undefined,
    renew: () => Promise.resolve(true),
    publish: () => Promise.resolve({ status: 'ok', seq: 0 }),
    serve: () => Promise.resolve({ status: 'ok', seq: 0 }),
    unserve: () => undefined,
    onGroupPush: () => () => undefined,
    trust: new RealmTrust({ realmKeys: [generateKeyPair().publicKey] }),
    hasRoom: () => true,
    counters: () => ({}),
  };
}

function setup(answers: Answer[], lastSeq = 0) {
  const key = generateKeyPair();
  const socket = {} as UdpBatchSocket;
  const table = new UplinkTable(
    answers.map((_, i) => ({ name: `isp${i}`, interface: undefined, locator: `192.0.2.${i + 1}`, family: 4 as const, priority: i + 1, weight: 1, up: true, socket })),
  );
  const seen: Binding[][] = answers.map(() => []);
  const persisted: number[] = [];
  const link = new RmLink(
    { listenPort: 4341, bindingTtlS: 60 },
    {
      key,
      prefix,
      hostId: deriveHostId(prefix, key.publicKey),
      makeClient: (i) => fakeClient(answers[i], seen[i]),
      uplinks: () => table.current,
      lastSeq,
      onSeq: (s) => void persisted.push(s),
      clock: new ManualClock(0),
      log: silentLogger,
    },
  );
  const registered: Binding[] = [];
  link.onRegistered((b) => void registered.push(b));
  return { link, table, seen, registered, persisted };
}

const ok: Answer = (b) => Promise.resolve({ ok: true, seq: b.seq, expiresIn: 180, refresh: 60 });
const never: Answer = () => new Promise(() => {});

describe('RmLink', () => {
  it('a registration is done when the first RM acknowledges it, whatever a silent uplink does', async () => {
    // Uplink 0's path is broken without the monitor knowing (its retransmissions would take ~12 s).
    const t = setup([never, ok]);
    t.link.start();
    await new Promise((r) => setTimeout(r, 20));
    expect(t.registered).toHaveLength(1);
    expect(t.link.status().registered).toBe(true);
    // A change: uplink 1 goes down; the new binding goes out through the uplink still up and is reported at once.
    t.table.apply({ kind: 'link', name: 'isp1', usable: false });
    t.table.apply({ kind: 'link', name: 'isp1', usable: true });
    const done = t.link.register();
    await new Promise((r) => setTimeout(r, 20));
    await done;
    expect(t.registered).toHaveLength(2);
    expect(t.registered[1].seq).toBeGreaterThan(t.registered[0].seq);
  });

  it('signs again above the number the RM reports when it refuses ours as stale (a clock once ahead)', async () => {
    const future = Date.now() + 86_400_000;
    let held = future;
    const rm: Answer = (b) => {
      if (b.seq <= held) return Promise.resolve({ ok: false, status: 'stale', seq: held });
      held = b.seq;
      return Promise.resolve({ ok: true, seq: b.seq, expiresIn: 180, refresh: 60 });
    };
    const t = setup([rm]);
    t.link.start();
    await new Promise((r) => setTimeout(r, 20));
    expect(t.registered).toHaveLength(1);
    expect(t.registered[0].seq).toBe(future + 1);
    // Every number that left was persisted first.
    expect(t.persisted.at(-1)).toBe(future + 1);
  });

  it('starts above the last sequence number kept across a restart', async () => {
    const last = Date.now() + 3_600_000;
    const t = setup([ok], last);
    t.link.start();
    await new Promise((r) => setTimeout(r, 20));
    expect(t.registered[0].seq).toBe(last + 1);
  });
});
