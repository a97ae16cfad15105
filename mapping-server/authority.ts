import { createHash } from 'node:crypto';
import { signBytes, verifyBytes } from '../shared/crypto/ed25519.ts';
import { signDelegation, verifyChain, type Delegation, type RmAddress } from '../shared/delegation.ts';
import { isSameAddress } from '../shared/address.ts';
import { idKey, Prefix } from '../shared/ids.ts';
import { encode, rmAnswerSigned, rmPushSigned } from '../shared/wire/codec.ts';
import { CustomerClass, RmAnswerKind, type LocatorPref, type RmAnswer, type RmQuery } from '../shared/wire/messages.ts';
import { decidePush, pushBackoffMs } from './push.ts';
import type { ControlSocket } from './sessions.ts';
import { classValue } from './classes.ts';
import type { FederationParts, HierarchyCounters } from './federation.ts';

/**
 * The answering side of the hierarchy (docs/hierarchy.md): what this RM says when another RM asks
 * who speaks for an ID (RM-QUERY), and the pushes it sends to the RMs that follow its hosts.
 *
 * - An ID under a prefix this RM delegated: a referral (the child's delegation, signed by this RM,
 *   LISP-DDT's Map-Referral) with referralTtlS.
 * - An ID of this RM's own realm: the binding with its host's certificate, the realm's uplink
 *   preferences, the host's customer class and the TTL the class gives, if the asking realm may see
 *   it (policy.lookup.otherRealms and rules naming realm prefixes); else the negative answer an
 *   unknown ID gets (location privacy). The asking RM is authenticated by its delegation chain
 *   from the top RM's key and its signature over the query, so a realm cannot pose as another.
 * - Anything else: negative (the asker was misdirected).
 * Every answer is signed with this RM's key and is smaller than the (padded) query.
 *
 * Following: a query with follow, for a host whose class is pushed, makes the asking RM a follower
 * for three TTLs (it re-asks while its own hosts use the binding). Pushes go to the addresses the
 * asking RM's own delegation names, never to a query's source address, so a captured query replayed
 * from elsewhere cannot redirect them.
 */

/** A query signed more than this long ago (or ahead) is not answered: it bounds replays. */
export const QUERY_SKEW_S = 300;
/** RMs following one host at most, and followed hosts in total. */
const MAX_FOLLOWERS_PER_ID = 4_096;
const MAX_FOLLOWED = 1_000_000;
/** Verified asker chains remembered (chain bytes → what they prove). */
const MAX_CHAINS = 4_096;

interface Child {
  readonly prefix: Prefix;
  readonly name: string;
  readonly key: Uint8Array;
  readonly rms: readonly RmAddress[];
  delegation: Delegation;
}

interface Follower {
  readonly key: Uint8Array;
  readonly realm: Prefix;
  readonly to: RmAddress;
  until: number;
  push: { pushId: number; datagram: Buffer; attempts: number; nextAt: number } | null;
}

export class Authority {
  private readonly children: Child[];
  /** The top RM's only: its own prefix delegated to itself, the first link of every chain. */
  readonly selfDelegation: Delegation | null;
  readonly rootKey: Uint8Array;
  /** Verified asker chains: the realm and key they prove, and where pushes to that RM go (its first delegated address; the top RM's own has none). */
  private readonly chains = new Map<string, { realm: Prefix; key: Uint8Array; notAfter: number; to: RmAddress | null }>();
  private readonly followers = new Map<string, Map<string, Follower>>();
  private readonly pushIds = new Map<number, { k: string; f: string }>();
  private nextPushId = 1;
  private pushTimer: NodeJS.Timeout | null = null;

  constructor(
    private readonly p: FederationParts,
    private readonly c: HierarchyCounters,
    children: readonly { prefix: Prefix; name: string; key: Uint8Array; rms: readonly RmAddress[] }[],
    rootKey: Uint8Array | null,
  ) {
    const nowS = this.nowS();
    this.children = children.map((ch) => ({ ...ch, delegation: this.delegate(ch.prefix, ch.key, ch.rms, nowS) })).sort((a, b) => b.prefix.length - a.prefix.length);
    this.rootKey = rootKey ?? p.key.publicKey;
    this.selfDelegation = rootKey === null ? this.delegate(p.realm.prefix, p.key.publicKey, [], nowS) : null;
  }

  private nowS(): number {
    return Math.floor(this.p.wallClock() / 1000);
  }

  private delegate(prefix: Prefix, key: Uint8Array, rms: readonly RmAddress[], nowS: number): Delegation {
    return signDelegation(this.p.key, { prefix, subjectKey: key, rms, notBefore: nowS - 60, notAfter: nowS + this.p.config.hierarchy.delegationLifeS });
  }

  /** The child realm whose delegated prefix holds id (the longest), if any. */
  childFor(id: Uint8Array): Child | undefined {
    for (const ch of this.children) if (ch.prefix.contains(id)) return ch;
    return undefined;
  }

  childCount(): number {
    return this.children.length;
  }

  /** Re-signs delegations in their last third, so a referral handed out is never about to lapse. */
  tick(): void {
    const nowS = this.nowS();
    const life = this.p.config.hierarchy.delegationLifeS;
    for (const ch of this.children) if (ch.delegation.notAfter - nowS < life / 3) ch.delegation = this.delegate(ch.prefix, ch.key, ch.rms, nowS);
    const now = this.p.clock.now();
    for (const [k, fs] of this.followers) {
      for (const [fk, f] of fs) if (f.until <= now && f.push === null) fs.delete(fk);
      if (fs.size === 0) this.followers.delete(k);
    }
  }

  /** RM-QUERY from address:port (rate-limited by dispatch). */
  onQuery(m: RmQuery, socket: ControlSocket, address: string, port: number): void {
    const { c, p } = this;
    c.queriesIn++;
    const nowS = this.nowS();
    if (Math.abs(nowS - m.time) > QUERY_SKEW_S) {
      c.queriesSkewed++;
      return;
    }
    const child = this.childFor(m.id);
    if (child !== undefined) {
      c.referralsOut++;
      return this.answer(socket, address, port, { reqId: m.reqId, id: m.id, kind: RmAnswerKind.referral, ttl: p.config.hierarchy.referralTtlS, cls: CustomerClass.none, followed: false, referral: child.delegation.bytes, binding: null, cert: null, prefs: [] });
    }
    const negative = (ttl: number) => this.answer(socket, address, port, { reqId: m.reqId, id: m.id, kind: RmAnswerKind.negative, ttl, cls: CustomerClass.none, followed: false, referral: null, binding: null, cert: null, prefs: [] });
    if (!p.realm.prefix.contains(m.id)) {
      c.notHere++;
      return negative(p.config.hierarchy.negativeTtlS);
    }
    const asker = this.asker(m, nowS);
    if (asker === null) {
      c.askerRefused++;
      return negative(p.config.hierarchy.negativeTtlS);
    }
    const k = idKey(m.id);
    const rec = p.store.get(k);
    const cert = rec === undefined ? null : p.certOf(rec, k);
    if (rec === undefined || cert === null || !p.policy.viewForRealm(asker.realm).mayLearn(m.id, k)) {
      if (rec !== undefined) c.denied++;
      else c.negativesOut++;
      return negative(p.config.lookup.negativeTtlS);
    }
    const now = p.clock.now();
    const cls = p.classes.classOf(m.id, k, now);
    const params = p.config.hierarchy.classes[cls];
    const ttl = Math.min(rec.ttl, params.ttlS, p.config.lookup.maxTtlS);
    let followed = false;
    if (m.follow && params.push && asker.to !== null) followed = this.follow(k, asker.key, asker.realm, asker.to, now + 3 * ttl * 1000);
    c.bindingsOut++;
    this.answer(socket, address, port, { reqId: m.reqId, id: m.id, kind: RmAnswerKind.binding, ttl, cls: classValue(cls), followed, referral: null, binding: rec.bytes, cert, prefs: rec.prefs });
  }

  /**
   * The asking realm: its chain verified from the top RM's key (remembered while valid), its
   * signature over the query by the chain's last key. null when either fails.
   */
  private asker(m: RmQuery, nowS: number): { realm: Prefix; key: Uint8Array; to: RmAddress | null } | null {
    const id = Buffer.concat(m.chain.map((l) => Buffer.from(l))).toString('latin1');
    let known = this.chains.get(id);
    if (known === undefined || known.notAfter <= nowS) {
      const v = verifyChain(m.chain, this.rootKey, nowS);
      if (!v.ok) return null;
      const d = v.delegation;
      known = { realm: d.prefix, key: d.subjectKey, notAfter: d.notAfter, to: d.rms.length > 0 ? d.rms[0] : null };
      if (this.chains.size >= MAX_CHAINS) this.chains.clear();
      this.chains.set(id, known);
    }
    if (!verifyBytes(known.key, m.signed, m.signature)) return null;
    return known;
  }

  private follow(k: string, key: Uint8Array, realm: Prefix, to: RmAddress, until: number): boolean {
    let fs = this.followers.get(k);
    if (fs === undefined) {
      if (this.followers.size >= MAX_FOLLOWED) {
        this.c.followFull++;
        return false;
      }
      fs = new Map();
      this.followers.set(k, fs);
    }
    const fk = Buffer.from(key).toString('hex');
    const f = fs.get(fk);
    if (f !== undefined) {
      f.until = Math.max(f.until, until);
      return true;
    }
    if (fs.size >= MAX_FOLLOWERS_PER_ID) {
      this.c.followFull++;
      return false;
    }
    fs.set(fk, { key: Uint8Array.from(key), realm, to, until, push: null });
    this.c.follows++;
    return true;
  }

  /** RMs following hosts of this realm now. */
  followerCount(): number {
    let n = 0;
    for (const fs of this.followers.values()) n += fs.size;
    return n;
  }

  /**
   * After a committed change of this realm's host k: an RM-PUSH to every RM following it that may
   * still see it, retransmitted with the session pushes' backoff until RM-PUSH-ACK.
   */
  changed(k: string, idBytes: Uint8Array, bytes: Uint8Array, ttlS: number, prefs: readonly LocatorPref[], cert: Uint8Array): void {
    const fs = this.followers.get(k);
    if (fs === undefined) return;
    const { p, c } = this;
    const now = p.clock.now();
    const cls = p.classes.classOf(idBytes, k, now);
    const ttl = Math.min(ttlS, p.config.hierarchy.classes[cls].ttlS, p.config.lookup.maxTtlS);
    for (const [fk, f] of fs) {
      if (f.until <= now) {
        if (f.push !== null) this.pushIds.delete(f.push.pushId);
        fs.delete(fk);
        continue;
      }
      if (!p.policy.viewForRealm(f.realm).mayLearn(idBytes, k)) continue;
      if (f.push !== null) {
        this.pushIds.delete(f.push.pushId);
        c.pushesReplaced++;
      }
      const pushId = this.nextPushId;
      this.nextPushId = this.nextPushId >= 0xffffffff ? 1 : this.nextPushId + 1;
      const fields = { pushId, time: this.nowS(), binding: bytes, cert, prefs, ttl, cls: classValue(cls) };
      const signed = rmPushSigned(fields);
      const datagram = encode({ type: 'rmPush', ...fields, signed, signature: signBytes(p.key, signed) }, null);
      f.push = { pushId, datagram, attempts: 1, nextAt: now + pushBackoffMs(1, p.config.push.retransmitMs) };
      this.pushIds.set(pushId, { k, f: fk });
      this.sendTo(f.to, datagram);
      c.pushesOut++;
    }
    this.armPushes();
  }

  /** RM-PUSH-ACK: only from the address the push went to. */
  onPushAck(pushId: number, address: string, port: number): void {
    const ref = this.pushIds.get(pushId);
    const f = ref === undefined ? undefined : this.followers.get(ref.k)?.get(ref.f);
    if (ref === undefined || f === undefined || f.push === null || f.push.pushId !== pushId || f.to.port !== port || !isSameAddress(address, f.to.address)) {
      this.c.pushAcksUnexpected++;
      return;
    }
    this.pushIds.delete(pushId);
    f.push = null;
    this.c.pushesAcked++;
  }

  private armPushes(): void {
    if (this.pushTimer !== null) return;
    const period = Math.max(5, Math.floor(this.p.config.push.retransmitMs / 2));
    this.pushTimer = setInterval(() => this.retransmit(), period);
  }

  private retransmit(): void {
    const { p, c } = this;
    const now = p.clock.now();
    const max = p.config.push.maxAttempts;
    for (const [pushId, ref] of this.pushIds) {
      const f = this.followers.get(ref.k)?.get(ref.f);
      const pend = f?.push ?? null;
      if (f === undefined || pend === null) {
        this.pushIds.delete(pushId);
        continue;
      }
      const d = decidePush(pend, now, max);
      if (d === 'wait') continue;
      if (d === 'giveUp') {
        c.pushesGaveUp++;
        f.push = null;
        this.pushIds.delete(pushId);
        continue;
      }
      pend.attempts++;
      pend.nextAt = now + pushBackoffMs(pend.attempts, p.config.push.retransmitMs);
      c.pushesRetransmitted++;
      this.sendTo(f.to, pend.datagram);
    }
    if (this.pushIds.size === 0) this.stop();
  }

  stop(): void {
    if (this.pushTimer !== null) clearInterval(this.pushTimer);
    this.pushTimer = null;
  }

  private answer(socket: ControlSocket, address: string, port: number, fields: Omit<RmAnswer, 'type' | 'signed' | 'signature'>): void {
    const signed = rmAnswerSigned(fields);
    const msg: RmAnswer = { type: 'rmAnswer', ...fields, signed, signature: signBytes(this.p.key, signed) };
    this.p.tx.sendOn(socket, encode(msg, null), port, address);
  }

  private sendTo(to: RmAddress, datagram: Uint8Array): void {
    const s = this.p.socketFor(to.address);
    if (s === null) {
      this.c.noSocket++;
      return;
    }
    this.p.tx.sendOn(s, datagram, to.port, to.address);
  }
}

/** Short, for logs and status. */
export function keyFingerprint(key: Uint8Array): string {
  return createHash('sha256').update(key).digest('hex').slice(0, 16);
}
