import { decodeBinding, verifyBinding, type Binding } from '../../shared/binding.ts';
import { sameBytes16 } from '../../shared/bytes.ts';
import type { Logger } from '../../shared/log.ts';
import type { MacKey } from '../../shared/crypto/blake2s.ts';
import type { MapEntry } from '../mapcache/cache.ts';
import type { UplinkSnapshot } from '../uplinks/table.ts';
import type { PeerChannel } from './channel.ts';
import type { PeerCounter } from './probing.ts';
import { PeerType, type PeerMessage } from './wire.ts';

/**
 * Direct binding updates between agents, without the RM:
 * 1. When this host's binding changes (an uplink lost or back), send() queues the new signed binding
 *    for every peer with traffic; retransmit() sends it over every working uplink to every locator of
 *    the peer that answered a probe within answeredWithinMs (one of them gets through) and again on
 *    updateRetryMs until the peer acknowledges. An update is several times a probe's size and goes
 *    out unasked, so a locator the peer's binding lists but that never proved it is the peer's (by
 *    answering a MACed probe) gets none: otherwise a binding naming someone else's address would
 *    aim every correspondent's updates there (docs/security.md decision 4). Withheld: counted.
 * 2. A received update is verified (signature, ID = the sender, sequence number above the one held),
 *    acknowledged whatever its order (the sender may have missed our ack), and handed to the resolver
 *    like an RM push.
 */
export interface UpdatePeer {
  readonly mapKey: string;
  readonly id: Uint8Array;
  readonly entry: MapEntry;
  /** The peer's paths, and those whose locator its binding no longer offers: when each last answered. */
  readonly paths: readonly AnsweringPath[];
  readonly withdrawn: readonly AnsweringPath[];
}

/** What an update needs of a path: its remote locator and when it last answered a probe. */
export interface AnsweringPath {
  readonly locator: { readonly address: string; readonly port: number };
  readonly state: { readonly lastReplyAt: number };
}

export interface DirectUpdatesDeps {
  readonly channel: PeerChannel;
  readonly uplinks: () => UplinkSnapshot;
  readonly myId: Uint8Array;
  readonly instanceId: number;
  readonly retryMs: readonly number[];
  /** Updates go only to locators that answered a probe within this long (over any uplink). */
  readonly answeredWithinMs: number;
  readonly counters: Record<PeerCounter, number>;
  readonly log: Logger;
  /** A verified binding newer than the one held: install it. */
  readonly applyBinding: (b: Binding) => void;
}

interface PendingUpdate {
  readonly token: number;
  readonly binding: Uint8Array;
  tries: number;
  nextAt: number;
}

export class DirectUpdates {
  private readonly pending = new Map<string, PendingUpdate>();

  constructor(private readonly deps: DirectUpdatesDeps) {}

  /** Queues b for every peer and sends what is due now. */
  send(b: Binding, peers: Iterable<UpdatePeer>, now: number, find: (mapKey: string) => UpdatePeer | undefined): void {
    for (const p of peers) this.pending.set(p.mapKey, { token: randomToken(), binding: b.bytes, tries: 0, nextAt: now });
    this.retransmit(now, find);
  }

  retransmit(now: number, find: (mapKey: string) => UpdatePeer | undefined): void {
    const c = this.deps.counters;
    for (const [mapKey, u] of this.pending) {
      if (now < u.nextAt) continue;
      const p = find(mapKey);
      const key = p === undefined ? null : this.deps.channel.keyFor(p.entry);
      if (p === undefined || key === null || u.tries > this.deps.retryMs.length) {
        this.pending.delete(mapKey);
        if (p !== undefined) c.updatesGivenUp++;
        continue;
      }
      // Over every working uplink to every locator of the peer that answered lately: one gets through.
      const ups = this.deps.uplinks();
      for (const loc of p.entry.locators) {
        if (!answeredSince(p, loc, now - this.deps.answeredWithinMs)) {
          c.updatesWithheld++;
          continue;
        }
        for (let i = 0; i < ups.length; i++) {
          if (!ups[i].up || ups[i].family !== loc.family) continue;
          c.updatesSent++;
          this.deps.channel.send(i, loc.bytes, loc.port, { type: PeerType.Update, instanceId: this.deps.instanceId, from: this.deps.myId, to: p.id, token: u.token, binding: u.binding }, key);
        }
      }
      u.nextAt = now + (this.deps.retryMs[u.tries] ?? 0);
      u.tries++;
    }
  }

  /** An update from the peer of `entry`; true when it was applied. */
  onUpdate(entry: MapEntry, uplink: number, src: Uint8Array, port: number, msg: PeerMessage, key: MacKey): boolean {
    const c = this.deps.counters;
    c.updatesReceived++;
    const d = decodeBinding(msg.binding as Uint8Array);
    if (!d.ok || !sameBytes16(entry.id, 0, d.binding.hostId.toBytes(), 0) || !verifyBinding(d.binding).ok) return void c.peerBadBinding++, false;
    const b = d.binding;
    this.deps.channel.send(uplink, src, port, { type: PeerType.UpdateAck, instanceId: this.deps.instanceId, from: this.deps.myId, to: entry.id, token: msg.token }, key);
    if (b.seq <= entry.seq) return void c.peerStaleBinding++, false;
    c.updatesApplied++;
    this.deps.log.info({ peer: entry.hostId, seq: b.seq, locators: b.locators.map((l) => `${l.uplink}=${l.address}/${l.state}`).join(',') }, 'binding update received from the peer');
    this.deps.applyBinding(b);
    return true;
  }

  /** The peer acknowledged; an ack for anything else is counted as unexpected. */
  onAck(mapKey: string, token: number): void {
    const u = this.pending.get(mapKey);
    if (u === undefined || u.token !== token) return void this.deps.counters.peerUnexpectedReply++;
    this.pending.delete(mapKey);
    this.deps.counters.updatesAcked++;
  }

  forget(mapKey: string): void {
    this.pending.delete(mapKey);
  }
}

/** Some path to this locator (over any uplink) answered a probe at or after `since`. */
export function answeredSince(p: UpdatePeer, loc: { readonly address: string; readonly port: number }, since: number): boolean {
  for (const list of [p.paths, p.withdrawn]) {
    for (const x of list) if (x.locator.port === loc.port && x.locator.address === loc.address && x.state.lastReplyAt >= since) return true;
  }
  return false;
}

export function randomToken(): number {
  return Math.floor(Math.random() * 2 ** 53);
}
