import type { MacKey } from '../../shared/crypto/blake2s.ts';
import { ReplayWindow } from '../../shared/wire/replay.ts';
import { idKey } from '../../shared/ids.ts';
import type { MapEntry } from '../mapcache/cache.ts';
import type { UplinkSnapshot } from '../uplinks/table.ts';
import { pairKey } from './pairkey.ts';
import { PEER_MAX_LEN, encodePeer, type PeerMessage } from './wire.ts';
import type { PeerCounter } from './probing.ts';

/**
 * The channel between this agent and its peers on the data port: pair keys (derived once per peer
 * key, ~2 ms each), the per-peer replay windows over the senders' message counters, our own counter,
 * and sending one MACed message on one uplink's socket from a reused buffer.
 */
export interface PeerChannelDeps {
  readonly uplinks: () => UplinkSnapshot;
  readonly myId: Uint8Array;
  /** The host's Ed25519 private seed (for the pair keys). */
  readonly mySeed: Uint8Array;
  /** First message counter (above any this host used before: the agent persists a high-water mark). */
  readonly counterBase: number;
  readonly counters: Record<PeerCounter, number>;
}

/** A message to send; the channel adds the counter. */
export type Outgoing = Omit<PeerMessage, 'counter'>;

export class PeerChannel {
  private readonly keys = new Map<string, { publicKey: Uint8Array; key: MacKey | null }>();
  private readonly windows = new Map<string, ReplayWindow>();
  private counter: number;
  private readonly out = Buffer.alloc(PEER_MAX_LEN);
  private readonly one = { off: Uint32Array.of(0), len: new Uint32Array(1), addr: new Uint8Array(16), port: new Uint16Array(1) };

  constructor(private readonly deps: PeerChannelDeps) {
    this.counter = deps.counterBase;
  }

  /** The last message counter used. */
  get lastCounter(): number {
    return this.counter;
  }

  send(uplink: number, addr: Uint8Array, port: number, msg: Outgoing, key: MacKey): void {
    const u = this.deps.uplinks()[uplink];
    if (u === undefined) return;
    const o = this.one;
    o.len[0] = encodePeer(this.out, { ...msg, counter: ++this.counter }, key);
    o.addr.set(addr);
    o.port[0] = port;
    if (u.socket.send(this.out, o.off, o.len, o.addr, o.port, 1) < 1) this.deps.counters.sendErrors++;
  }

  /** The pair key with the entry's host; null without a (valid) public key. */
  keyFor(e: MapEntry): MacKey | null {
    if (e.publicKey === null) return null;
    const mapKey = idKey(e.id);
    const held = this.keys.get(mapKey);
    if (held !== undefined && Buffer.compare(held.publicKey, e.publicKey) === 0) return held.key;
    const key = pairKey(this.deps.mySeed, this.deps.myId, e.publicKey, e.id);
    this.keys.set(mapKey, { publicKey: e.publicKey, key });
    return key;
  }

  /** The sender's counter is new (inside its replay window); a replay is counted. */
  fresh(mapKey: string, counter: number): boolean {
    let w = this.windows.get(mapKey);
    if (w === undefined) {
      w = new ReplayWindow();
      this.windows.set(mapKey, w);
    }
    if (w.check(counter)) return true;
    this.deps.counters.peerReplay++;
    return false;
  }

  /**
   * A peer no longer tracked: its derived key goes (derived again on its next message). Its replay
   * window stays, or a message captured before would be accepted once more.
   */
  forget(mapKey: string): void {
    this.keys.delete(mapKey);
  }
}
