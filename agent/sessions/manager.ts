import type { Logger } from '../../shared/log.ts';
import type { Clock } from '../../shared/clock.ts';
import { HostId, idKey } from '../../shared/ids.ts';
import { newIndex, type Cipher, type SessionTable } from '../../shared/crypto/aead.ts';
import type { MapCache, Traffic } from '../mapcache/cache.ts';
import type { UplinkSnapshot } from '../uplinks/table.ts';
import { DROP, HELD, type Sealing } from '../dataplane/sealing.ts';
import { Handshaker, type LocalIdentity, type PeerIdentity, type PendingInitiation } from './noise.ts';
import { MSG_COOKIE_REPLY, MSG_INITIATION, MSG_REFUSED, MSG_RESPONSE, REFUSED_INDEX_OFF, receiverIndexOf } from './handshake-wire.ts';

/*
 * The session manager: one encrypted session (at a time) per peer, negotiated with the Noise IK
 * handshake of noise.ts, its keys in the native session table the data plane seals and opens with
 * (docs/dataplane-crypto.md).
 *
 * 1. The first packet to a peer without a session (inside.ts asks sessionFor) is held — a copy, at
 *    most `heldPerPeer` — and an initiation goes out on the peer's current path; it is retried at a
 *    doubling interval (so a lost one costs 250 ms, not WireGuard's 5 s) until `giveUpMs`.
 * 2. The response installs the keys as the peer's current session; the held packets are sent again
 *    through the data plane (reinjectInside), or, with none, an empty keepalive that confirms the
 *    keys to the responder.
 * 3. A responder installs its keys as `next`: it receives on them at once but sends on them only
 *    after the first packet under them arrived (onConfirmed): before that it cannot know the
 *    initiator has them. Until then it keeps sending on its current session, so a rekey has no gap.
 * 4. tick() (every TICK_MS) retries, rekeys a session that is `rekeyAfterMs` old or has sent
 *    `rekeyAfterPackets` — only for peers that still send — and wipes keys `rejectAfterMs` old. A
 *    replaced session stays as `previous` (receive only) until the next replacement, so packets in
 *    flight under it still arrive.
 * 5. Initiations beyond `handshakesPerS` in a second are answered with a cookie instead (mac2), so a
 *    flood costs one MAC each; beyond four times that, they are dropped unread.
 */

export interface SessionOptions {
  readonly instanceId: number;
  readonly cipher: Cipher;
  readonly rekeyAfterMs: number;
  readonly rekeyAfterPackets: number;
  readonly rejectAfterMs: number;
  readonly maxSessions: number;
  readonly handshakesPerS: number;
  /** TUN slot layout: held packets go back through the data plane in the same layout. */
  readonly tunStride: number;
  readonly tunHeadroom: number;
  readonly batchSize: number;
}

export interface SessionDeps {
  readonly me: LocalIdentity;
  readonly table: SessionTable;
  readonly cache: MapCache;
  readonly uplinks: () => UplinkSnapshot;
  readonly clock: Clock;
  /** Unix ms: initiation timestamps must grow across restarts (the responder refuses older ones). */
  readonly wallClock: () => number;
  readonly log: Logger;
  /** Whether a peer that authenticated may have a session: a configured static peer, or a member. */
  readonly admit: (peer: PeerIdentity) => boolean;
  /** Sends a batch of held packets through the data plane again (the TUN's batch handler). */
  readonly reinjectInside: (buf: Buffer, lengths: Uint32Array, count: number) => void;
  /** Sends an empty sealed frame to the host (the data plane seals and sends it on its path). */
  readonly keepalive: (id: Uint8Array) => void;
}

/** Why these numbers: docs/dataplane-crypto.md. */
const TICK_MS = 50;
const FIRST_RETRY_MS = 250;
const MAX_RETRY_MS = 2_000;
const GIVE_UP_MS = 10_000;
/**
 * A responder rekeys this much later than the initiator, so both rarely race: 10 s, or a third of the
 * time between rekey and reject when that is shorter (the rekey must still come before the keys die).
 */
const RESPONDER_REKEY_LAG_MS = 10_000;
const HELD_PER_PEER = 32;
/** Sending with nothing received for this long starts a new handshake (WireGuard waits 15 s). */
const SILENT_REHANDSHAKE_MS = 3_000;
/** How long packets wait for a responder's new keys to be confirmed before this side initiates. */
const UNCONFIRMED_WAIT_MS = 1_000;
/** A mixed-settings or give-up message per peer at most this often. */
const LOG_EVERY_MS = 60_000;

interface Keypair {
  readonly slot: number;
  readonly localIndex: number;
  remoteIndex: number;
  readonly createdAt: number;
  readonly initiator: boolean;
  readonly peer: PeerState;
}

interface Pending {
  readonly handshake: PendingInitiation;
  readonly slot: number;
  readonly localIndex: number;
  readonly startedAt: number;
  nextAt: number;
  interval: number;
  tries: number;
}

interface PeerState {
  readonly id: Uint8Array;
  readonly key: string;
  readonly hostId: string;
  edPublic: Uint8Array;
  current: Keypair | null;
  previous: Keypair | null;
  next: Keypair | null;
  pending: Pending | null;
  traffic: Traffic | null;
  /** Held packets (tun layout) while the handshake runs. */
  held: Buffer | null;
  heldLengths: Uint32Array | null;
  heldCount: number;
  /** traffic.tx at the last tick: a peer that sent since is active (worth a rekey). */
  txSeen: number;
  /** traffic.rx at the last tick, and since when it has not moved while we sent. */
  rxSeen: number;
  silentSince: number;
  lastLogAt: number;
}

export interface SessionCounters {
  initiationsSent: number;
  initiationsRetried: number;
  handshakesCompleted: number;
  responsesSent: number;
  cookiesSent: number;
  cookiesReceived: number;
  rekeys: number;
  keysWiped: number;
  givenUp: number;
  heldDropped: number;
  refusalsReceived: number;
  /** Handshake messages dropped, by reason (the decoder's, or ours: flood, noSlot, unknownIndex). */
  dropped: Record<string, number>;
}

export interface SessionStatus {
  readonly cipher: string;
  readonly sessions: number;
  readonly peers: readonly { hostId: string; ageMs: number | null; sent: number; initiator: boolean | null; pending: boolean }[];
  readonly counters: SessionCounters;
}

export class SessionManager implements Sealing {
  readonly table: SessionTable;
  readonly slotPeer: Uint8Array;
  readonly slotUnconfirmed: Uint8Array;
  readonly counters: SessionCounters = {
    initiationsSent: 0,
    initiationsRetried: 0,
    handshakesCompleted: 0,
    responsesSent: 0,
    cookiesSent: 0,
    cookiesReceived: 0,
    rekeys: 0,
    keysWiped: 0,
    givenUp: 0,
    heldDropped: 0,
    refusalsReceived: 0,
    dropped: {},
  };
  private readonly peers = new Map<string, PeerState>();
  /** Slot → the keypair (or pending initiation's peer) that owns it. */
  private readonly owners: (Keypair | PeerState | null)[];
  private readonly free: number[] = [];
  private readonly handshaker: Handshaker;
  private readonly out = Buffer.alloc(2048);
  private readonly one = { off: new Uint32Array(1), len: new Uint32Array(1), addr: new Uint8Array(16), port: new Uint16Array(1) };
  private readonly responderLagMs: number;
  private windowStart = 0;
  private windowCount = 0;
  private timer: NodeJS.Timeout | null = null;

  constructor(
    private readonly opts: SessionOptions,
    private readonly deps: SessionDeps,
  ) {
    this.table = deps.table;
    this.responderLagMs = Math.min(RESPONDER_REKEY_LAG_MS, (opts.rejectAfterMs - opts.rekeyAfterMs) / 3);
    this.slotPeer = new Uint8Array(opts.maxSessions * 16);
    this.slotUnconfirmed = new Uint8Array(opts.maxSessions);
    this.owners = new Array<Keypair | PeerState | null>(opts.maxSessions).fill(null);
    // Slot 0 is never handed out: an all-zero index in a header then never names a session.
    for (let s = opts.maxSessions - 1; s >= 1; s--) this.free.push(s);
    this.handshaker = new Handshaker(deps.me, { now: () => deps.wallClock(), admit: (p) => deps.admit(p) });
  }

  start(): void {
    this.timer = setInterval(() => this.tick(this.deps.clock.now()), TICK_MS);
    this.timer.unref();
  }

  /** Wipes every key: nothing of a session outlives the agent. */
  stop(): void {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
    for (let s = 1; s < this.owners.length; s++) if (this.owners[s] !== null) this.release(s);
    this.table.wipeAll();
    this.peers.clear();
  }

  // ---- the data plane's calls (Sealing) ----

  sessionFor(traffic: Traffic, id: Uint8Array, idOff: number, buf: Buffer, off: number, len: number): number {
    const p = this.peerFor(id, idOff);
    if (p === null) return DROP;
    p.traffic = traffic;
    if (p.current !== null) {
      traffic.txSlot = p.current.slot;
      traffic.txIndex = p.current.remoteIndex;
      return p.current.slot;
    }
    this.hold(p, buf, off, len);
    // A responder's keys waiting for their first packet will carry these soon (promote flushes
    // them); only if that takes too long (the initiator went away) does this side start its own.
    const now = this.deps.clock.now();
    if (p.pending === null && (p.next === null || now - p.next.createdAt >= UNCONFIRMED_WAIT_MS)) this.initiate(p, now);
    return HELD;
  }

  onConfirmed(slot: number): void {
    this.slotUnconfirmed[slot] = 0;
    const kp = this.owners[slot];
    if (kp === null || !isKeypair(kp)) return;
    const p = kp.peer;
    if (p.next !== kp) return;
    this.promote(p, kp);
    p.next = null;
  }

  /** A renewed membership certificate: initiations carry it from now on. */
  setCertificate(cert: Uint8Array | null): void {
    this.handshaker.setCertificate(cert);
  }

  onHandshake(uplink: number, buf: Buffer, off: number, len: number, srcAddrs: Uint8Array, srcOff: number, port: number): void {
    if (len < 12) return this.drop('truncated');
    const type = buf[off + 1];
    const now = this.deps.clock.now();
    if (type === MSG_INITIATION) return this.onInitiation(uplink, buf, off, len, srcAddrs, srcOff, port, now);
    const index = type === MSG_REFUSED ? buf.readUInt32BE(off + REFUSED_INDEX_OFF) : receiverIndexOf(buf, off, len);
    if (index < 0) return this.drop('badType');
    const slot = index & (this.opts.maxSessions - 1);
    const owner = this.owners[slot];
    const p = owner !== null && !isKeypair(owner) ? owner : null;
    if (p === null || p.pending === null || p.pending.localIndex !== index) return this.drop('unknownIndex');
    if (type === MSG_RESPONSE) return this.onResponse(p, buf, off, len, now);
    if (type === MSG_COOKIE_REPLY) {
      if (this.handshaker.onCookieReply(p.pending.handshake, buf, off, len)) {
        this.counters.cookiesReceived++;
        p.pending.nextAt = now; // resend at once, now with mac2
      } else this.drop('badCookie');
      return;
    }
    if (type === MSG_REFUSED) {
      this.counters.refusalsReceived++;
      if (now - p.lastLogAt >= LOG_EVERY_MS) {
        p.lastLogAt = now;
        this.deps.log.error({ hostId: p.hostId }, 'the peer refuses encrypted sessions (dataplane.encryption: off there): set dataplane.encryption the same on both hosts');
      }
      return;
    }
    this.drop('badType');
  }

  // ---- handshakes ----

  private onInitiation(uplink: number, buf: Buffer, off: number, len: number, srcAddrs: Uint8Array, srcOff: number, port: number, now: number): void {
    if (now - this.windowStart >= 1000) {
      this.windowStart = now;
      this.windowCount = 0;
    }
    this.windowCount++;
    if (this.windowCount > 4 * this.opts.handshakesPerS) return this.drop('flood');
    const slot = this.free.pop();
    if (slot === undefined) return this.drop('noSlot');
    const localIndex = newIndex(slot, this.opts.maxSessions);
    const r = this.handshaker.onInitiation(buf, off, len, { addr: srcAddrs.subarray(srcOff, srcOff + 16), port }, localIndex, this.windowCount > this.opts.handshakesPerS, this.out);
    if (r.kind !== 'response') {
      this.free.push(slot);
      if (r.kind === 'cookie') {
        this.counters.cookiesSent++;
        this.sendTo(uplink, srcAddrs, srcOff, port, r.len);
      } else this.drop(r.reason);
      return;
    }
    const p = this.peerById(r.peer.id, r.peer.edPublic);
    const kp: Keypair = { slot, localIndex, remoteIndex: r.remoteIndex, createdAt: now, initiator: false, peer: p };
    this.install(kp, r.keys.send, r.keys.recv);
    this.slotUnconfirmed[slot] = 1;
    // An unconfirmed `next` that never got a packet is replaced: the initiator gave up on it.
    if (p.next !== null) this.release(p.next.slot);
    p.next = kp;
    this.counters.responsesSent++;
    this.sendTo(uplink, srcAddrs, srcOff, port, r.len);
  }

  private onResponse(p: PeerState, buf: Buffer, off: number, len: number, now: number): void {
    const pend = p.pending as Pending;
    const r = this.handshaker.onResponse(pend.handshake, buf, off, len);
    if (r.kind !== 'keys') return this.drop(r.reason);
    p.pending = null;
    const kp: Keypair = { slot: pend.slot, localIndex: pend.localIndex, remoteIndex: r.remoteIndex, createdAt: now, initiator: true, peer: p };
    this.install(kp, r.keys.send, r.keys.recv);
    this.counters.handshakesCompleted++;
    this.promote(p, kp);
    if (p.heldCount === 0) this.deps.keepalive(p.id); // nothing to send: an empty packet confirms the keys
  }

  /** kp becomes the session p sends on; the one it replaces stays for receiving. */
  private promote(p: PeerState, kp: Keypair): void {
    if (p.previous !== null && p.previous !== kp) this.release(p.previous.slot);
    p.previous = p.current;
    p.current = kp;
    if (p.traffic === null) p.traffic = this.deps.cache.lookup(p.id, 0)?.traffic ?? null;
    if (p.traffic !== null) {
      p.traffic.txSlot = kp.slot;
      p.traffic.txIndex = kp.remoteIndex;
      p.txSeen = p.traffic.tx;
    }
    this.flushHeld(p);
  }

  private initiate(p: PeerState, now: number): void {
    const slot = this.free.pop();
    if (slot === undefined) return void this.drop('noSlot');
    const localIndex = newIndex(slot, this.opts.maxSessions);
    let r: { len: number; pending: PendingInitiation };
    try {
      r = this.handshaker.initiate({ id: p.id, edPublic: p.edPublic }, localIndex, this.out);
    } catch (e) {
      // Only a key that is no curve point gets here (a static peer's config, or a forged binding).
      this.free.push(slot);
      this.drop('badPeerKey');
      if (now - p.lastLogAt >= LOG_EVERY_MS) {
        p.lastLogAt = now;
        this.deps.log.error({ hostId: p.hostId, err: (e as Error).message }, 'cannot start a session: the peer\'s public key is unusable');
      }
      return;
    }
    this.owners[slot] = p;
    p.pending = { handshake: r.pending, slot, localIndex, startedAt: now, nextAt: now + FIRST_RETRY_MS, interval: FIRST_RETRY_MS, tries: 1 };
    this.counters.initiationsSent++;
    this.sendToPeer(p, r.len);
  }

  private retry(p: PeerState, now: number): void {
    const pend = p.pending as Pending;
    if (now - pend.startedAt >= GIVE_UP_MS) {
      this.counters.givenUp++;
      this.handshaker.abandon(pend.handshake);
      this.owners[pend.slot] = null;
      this.free.push(pend.slot);
      p.pending = null;
      this.counters.heldDropped += p.heldCount;
      p.heldCount = 0;
      if (now - p.lastLogAt >= LOG_EVERY_MS) {
        p.lastLogAt = now;
        this.deps.log.warn({ hostId: p.hostId, tries: pend.tries }, 'no answer to the session handshake: is the agent there running, with the same realm (instance ID) and encryption on?');
      }
      return;
    }
    // A fresh initiation each time (new ephemeral and timestamp): a resent one would be a replay.
    this.handshaker.abandon(pend.handshake);
    const r = this.handshaker.initiate({ id: p.id, edPublic: p.edPublic }, pend.localIndex, this.out);
    p.pending = { ...pend, handshake: r.pending, nextAt: now + pend.interval * 2, interval: Math.min(MAX_RETRY_MS, pend.interval * 2), tries: pend.tries + 1 };
    this.counters.initiationsRetried++;
    this.sendToPeer(p, r.len);
  }

  tick(now: number): void {
    for (const p of this.peers.values()) {
      if (p.pending !== null && now >= p.pending.nextAt) this.retry(p, now);
      for (const kp of [p.previous, p.next, p.current]) {
        if (kp !== null && now - kp.createdAt >= this.opts.rejectAfterMs) this.expire(p, kp);
      }
      // A peer with nothing left (its keys expired, no handshake, nothing held) is forgotten: the
      // map holds only peers with sessions, so it is bounded like the slots are.
      if (p.current === null && p.previous === null && p.next === null && p.pending === null && p.heldCount === 0) {
        this.peers.delete(p.key);
        continue;
      }
      const cur = p.current;
      const tx = p.traffic?.tx ?? 0;
      const rx = p.traffic?.rx ?? 0;
      const active = tx !== p.txSeen;
      p.txSeen = tx;
      // We send and hear nothing back: the peer may have lost the session (it restarted). A new
      // handshake costs a round trip and fixes it; waiting for the rekey would cost two minutes.
      if (rx !== p.rxSeen) p.silentSince = Infinity;
      else if (active && p.silentSince === Infinity) p.silentSince = now;
      p.rxSeen = rx;
      if (cur === null || p.pending !== null || !active) continue;
      const age = now - cur.createdAt;
      const silent = now - p.silentSince >= SILENT_REHANDSHAKE_MS && age >= SILENT_REHANDSHAKE_MS;
      const due = silent || age >= this.opts.rekeyAfterMs + (cur.initiator ? 0 : this.responderLagMs) || this.table.sendCounter(cur.slot) >= this.opts.rekeyAfterPackets;
      if (due) {
        p.silentSince = Infinity;
        this.counters.rekeys++;
        this.initiate(p, now);
      }
    }
  }

  private expire(p: PeerState, kp: Keypair): void {
    if (p.current === kp) {
      p.current = null;
      if (p.traffic !== null && p.traffic.txSlot === kp.slot) p.traffic.txSlot = -1;
    }
    if (p.previous === kp) p.previous = null;
    if (p.next === kp) p.next = null;
    this.release(kp.slot);
  }

  /** Forgets a peer (revoked): its keys are wiped, its packets are no longer sealed or opened. */
  dropPeer(id: Uint8Array): void {
    const p = this.peers.get(idKey(id));
    if (p === undefined) return;
    for (const kp of [p.current, p.previous, p.next]) if (kp !== null) this.release(kp.slot);
    if (p.pending !== null) {
      this.owners[p.pending.slot] = null;
      this.free.push(p.pending.slot);
    }
    if (p.traffic !== null) p.traffic.txSlot = -1;
    this.peers.delete(p.key);
  }

  status(): SessionStatus {
    const now = this.deps.clock.now();
    let sessions = 0;
    const peers = [...this.peers.values()].map((p) => {
      const c = p.current;
      if (c !== null) sessions++;
      return { hostId: p.hostId, ageMs: c === null ? null : now - c.createdAt, sent: c === null ? 0 : this.table.sendCounter(c.slot), initiator: c?.initiator ?? null, pending: p.pending !== null };
    });
    return { cipher: this.opts.cipher === 0 ? 'aes-256-gcm' : 'chacha20-poly1305', sessions, peers, counters: this.counters };
  }

  // ---- helpers ----

  private install(kp: Keypair, send: Uint8Array, recv: Uint8Array): void {
    // The hard stop: 2^24 packets (AES-GCM's limit for packets of this size), twice the latest rekey.
    this.table.install(kp.slot, kp.localIndex, this.opts.cipher, send, recv, { sendLimit: Math.max(2 ** 24, this.opts.rekeyAfterPackets * 2) });
    this.owners[kp.slot] = kp;
    this.slotPeer.set(kp.peer.id, kp.slot * 16);
    this.slotUnconfirmed[kp.slot] = 0;
  }

  private release(slot: number): void {
    const owner = this.owners[slot];
    if (owner === null) return;
    this.table.wipe(slot);
    this.counters.keysWiped++;
    this.owners[slot] = null;
    this.slotPeer.fill(0, slot * 16, slot * 16 + 16);
    this.slotUnconfirmed[slot] = 0;
    this.free.push(slot);
    if (isKeypair(owner)) {
      const p = owner.peer;
      if (p.traffic !== null && p.traffic.txSlot === slot) p.traffic.txSlot = -1;
    }
  }

  private peerFor(buf: Uint8Array, idOff: number): PeerState | null {
    const key = idKey(buf, idOff);
    const known = this.peers.get(key);
    if (known !== undefined) return known;
    const entry = this.deps.cache.lookup(buf, idOff);
    if (entry === undefined || entry.publicKey === null) return null;
    return this.peerById(entry.id, entry.publicKey);
  }

  private peerById(id: Uint8Array, edPublic: Uint8Array): PeerState {
    const key = idKey(id);
    let p = this.peers.get(key);
    if (p === undefined) {
      p = { id: Uint8Array.from(id), key, hostId: HostId.fromBytes(id).toString(), edPublic: Uint8Array.from(edPublic), current: null, previous: null, next: null, pending: null, traffic: null, held: null, heldLengths: null, heldCount: 0, txSeen: 0, rxSeen: 0, silentSince: Infinity, lastLogAt: -Infinity };
      this.peers.set(key, p);
    }
    return p;
  }

  private hold(p: PeerState, buf: Buffer, off: number, len: number): void {
    const n = Math.min(HELD_PER_PEER, this.opts.batchSize);
    if (p.heldCount >= n) {
      this.counters.heldDropped++;
      return;
    }
    p.held ??= Buffer.allocUnsafe(n * this.opts.tunStride);
    p.heldLengths ??= new Uint32Array(n);
    buf.copy(p.held, p.heldCount * this.opts.tunStride + this.opts.tunHeadroom, off, off + len);
    p.heldLengths[p.heldCount++] = len;
  }

  private flushHeld(p: PeerState): void {
    if (p.heldCount === 0 || p.held === null || p.heldLengths === null) return;
    const [held, lengths, count] = [p.held, p.heldLengths, p.heldCount];
    p.held = null;
    p.heldLengths = null;
    p.heldCount = 0;
    this.deps.reinjectInside(held, lengths, count);
  }

  /** Sends this.out[0, len) to the peer on its current path. */
  private sendToPeer(p: PeerState, len: number): void {
    const e = this.deps.cache.lookup(p.id, 0);
    if (e !== undefined && e.path !== null) this.sendTo(e.path.uplink, e.path.locator.bytes, 0, e.path.locator.port, len);
  }

  /** Sends this.out[0, len) on an uplink to the locator at addrs[addrOff, +16), port. */
  private sendTo(uplink: number, addrs: Uint8Array, addrOff: number, port: number, len: number): void {
    const u = this.deps.uplinks()[uplink];
    if (u === undefined) return;
    for (let b = 0; b < 16; b++) this.one.addr[b] = addrs[addrOff + b];
    this.one.port[0] = port;
    this.one.off[0] = 0;
    this.one.len[0] = len;
    u.socket.send(this.out, this.one.off, this.one.len, this.one.addr, this.one.port, 1);
  }

  private drop(reason: string): void {
    this.counters.dropped[reason] = (this.counters.dropped[reason] ?? 0) + 1;
  }
}

function isKeypair(o: Keypair | PeerState): o is Keypair {
  return 'slot' in o && 'peer' in o;
}
