import { randomInt } from 'node:crypto';
import { isSameAddress } from '../shared/address.ts';
import { decodeBinding, verifyBinding } from '../shared/binding.ts';
import { signBytes, verifyBytes } from '../shared/crypto/ed25519.ts';
import { MAX_CHAIN, signDelegation, verifyDelegation, type RmAddress } from '../shared/delegation.ts';
import { idKey, Prefix } from '../shared/ids.ts';
import { certMatches, verifyCertificate } from '../shared/membership.ts';
import { encode, rmQuerySigned } from '../shared/wire/codec.ts';
import { RmAnswerKind, type LocatorPref, type RmAnswer, type RmPush } from '../shared/wire/messages.ts';
import { className } from './classes.ts';
import { keyFingerprint } from './authority.ts';
import type { FederationParts, HierarchyCounters } from './federation.ts';

/**
 * The resolving side of the hierarchy (docs/hierarchy.md): this RM finds other realms' bindings for
 * its own hosts, as a LISP-DDT Map-Resolver does, and keeps them in one cache for all of them (the
 * site-wide shared cache).
 *
 * Resolution starts at the longest cached referral for the ID (else at the top RM), sends an
 * RM-QUERY, and follows referrals down, each strictly longer than the last and inside what the
 * referring RM speaks for, at most MAX_CHAIN steps: no loop can last. Every answer is checked
 * against the key the previous step vouched for; the binding against its host's key and its
 * certificate against the realm key the chain ends in. What it learns is cached for the TTL the
 * answering RM gave (the host's customer class decides it); RMs that push a class are followed,
 * and their RM-PUSHes replace the cached binding at once and go on to this RM's own followers.
 * Bindings this RM's hosts follow are re-asked before they expire (the pull of the middle tier).
 *
 * An RM that does not answer (every address, queryAttempts times) yields a negative answer cached
 * for hierarchy.negativeTtlS, a counter and one warning a minute: a broken child costs its askers a
 * short, clear "unknown", not a hang.
 */

/** Whom a query goes to: an RM, the prefix it speaks for (null: the top RM, everything) and the chain that vouches for it. */
export interface Target {
  readonly key: Uint8Array;
  readonly rms: readonly RmAddress[];
  readonly scope: Prefix | null;
  readonly chain: readonly Uint8Array[];
  /** Unix seconds when the vouching delegation lapses. */
  readonly notAfter: number;
}

/** A binding of another realm's host, verified, as this RM serves it to its own hosts. */
export interface ForeignEntry {
  readonly key: string;
  readonly id: Uint8Array;
  bytes: Uint8Array;
  seq: number;
  cert: Uint8Array;
  prefs: readonly LocatorPref[];
  cls: number;
  ttlS: number;
  /** Clock ms. */
  expiresAt: number;
  /** Unix seconds of the newest RM-PUSH applied (a replayed older push with the same sequence is refused). */
  pushTime: number;
  followed: boolean;
  readonly target: Target;
  readonly endorsement: Uint8Array;
  refreshing: boolean;
  /** Clock ms when the authoritative RM gave it. */
  readonly fetchedAt: number;
  /** Sessions of this RM's hosts it was served to (bounded): one asking again suspects it is stale. */
  readonly servedTo: Set<number>;
}

export type Resolution = { kind: 'binding'; entry: ForeignEntry } | { kind: 'negative'; ttlS: number };
type Waiter = (r: Resolution) => void;

interface Job {
  readonly id: Uint8Array;
  readonly k: string;
  readonly self: boolean;
  target: Target;
  steps: number;
  attempt: number;
  reqId: number;
  timer: NodeJS.Timeout | null;
  readonly waiters: Waiter[];
}

const MAX_JOBS = 10_000;
const MAX_WAITERS = 64;
const MAX_REFERRALS = 4_096;
const WARN_EVERY_MS = 60_000;
/** An entry is asked again for a host that asks again no sooner than this after it was fetched. */
const REVALIDATE_MS = 2_000;

export class Recursor {
  private readonly referrals = new Map<string, { target: Target; expiresAt: number }>();
  private readonly cache = new Map<string, ForeignEntry>();
  private readonly negative = new Map<string, number>();
  private readonly jobs = new Map<string, Job>();
  private readonly byReq = new Map<number, Job>();
  private readonly endorsements = new Map<string, { bytes: Uint8Array; notAfter: number }>();
  private readonly warned = new Map<string, number>();
  /** This RM's own chain from the top RM (how other RMs authenticate its queries); null until found. */
  ownChain: readonly Uint8Array[] | null = null;
  private ownChainNotAfter = 0;
  private stopped = false;

  constructor(
    private readonly p: FederationParts,
    private readonly c: HierarchyCounters,
    /** The top RM; null on the top RM itself (it resolves from its own delegations). */
    private readonly root: Target | null,
    /** The child whose delegated prefix holds an ID (this RM's own delegations), as a target. */
    private readonly childTarget: (id: Uint8Array) => Target | null,
    selfChain: readonly Uint8Array[] | null,
  ) {
    if (selfChain !== null) {
      this.ownChain = selfChain;
      this.ownChainNotAfter = Number.MAX_SAFE_INTEGER;
    }
  }

  private nowS(): number {
    return Math.floor(this.p.wallClock() / 1000);
  }

  cached(k: string, now: number): ForeignEntry | null {
    const e = this.cache.get(k);
    if (e === undefined) return null;
    if (e.expiresAt > now) return e;
    if (!e.refreshing) this.cache.delete(k);
    return null;
  }

  cacheSize(): number {
    return this.cache.size;
  }

  referralCount(): number {
    return this.referrals.size;
  }

  /**
   * The binding for id from the cache, or resolved through the hierarchy; cb once, maybe
   * synchronously. asker: the session asking. A host that asks again for a binding it was already
   * given has a reason (its TTL ends, or its peer announced a newer version: the stale-binding
   * signal): then the authoritative RM is asked again, at most every REVALIDATE_MS an entry.
   */
  resolve(id: Uint8Array, asker: number, cb: Waiter): void {
    const k = idKey(id);
    const now = this.p.clock.now();
    const e = this.cached(k, now);
    if (e !== null) {
      if (e.servedTo.has(asker) && now - e.fetchedAt >= REVALIDATE_MS && !this.jobs.has(k)) {
        this.c.revalidations++;
        e.refreshing = true;
        return this.start(id, k, false, (r) => {
          if (r.kind === 'binding') r.entry.servedTo.add(asker);
          cb(r.kind === 'negative' && this.cache.get(k) === e ? { kind: 'binding', entry: e } : r);
        }, e.target);
      }
      this.c.cacheHits++;
      if (e.servedTo.size < 64) e.servedTo.add(asker);
      return cb({ kind: 'binding', entry: e });
    }
    const negUntil = this.negative.get(k);
    if (negUntil !== undefined) {
      if (negUntil > now) {
        this.c.negativeHits++;
        return cb({ kind: 'negative', ttlS: Math.max(1, Math.ceil((negUntil - now) / 1000)) });
      }
      this.negative.delete(k);
    }
    this.c.cacheMisses++;
    this.start(id, k, false, (r) => {
      if (r.kind === 'binding') r.entry.servedTo.add(asker);
      cb(r);
    });
  }

  private start(id: Uint8Array, k: string, self: boolean, cb: Waiter | null, from: Target | null = null): void {
    const running = this.jobs.get(k);
    if (running !== undefined) {
      if (cb !== null && running.waiters.length < MAX_WAITERS) running.waiters.push(cb);
      else if (cb !== null) cb({ kind: 'negative', ttlS: 1 });
      return;
    }
    const target = self ? this.root : (from ?? this.firstTarget(id));
    if (target === null || this.jobs.size >= MAX_JOBS || this.stopped) {
      if (target !== null) this.c.busy++;
      else this.c.noRoute++;
      cb?.({ kind: 'negative', ttlS: this.p.config.hierarchy.negativeTtlS });
      return;
    }
    const job: Job = { id, k, self, target, steps: 0, attempt: 0, reqId: 0, timer: null, waiters: cb === null ? [] : [cb] };
    this.jobs.set(k, job);
    this.send(job);
  }

  /** The longest cached referral holding id, this RM's own child for it, or the top RM. */
  private firstTarget(id: Uint8Array): Target | null {
    const child = this.childTarget(id);
    if (child !== null) return child;
    const now = this.p.clock.now();
    let best: Target | null = null;
    for (const [pk, r] of this.referrals) {
      if (r.expiresAt <= now) {
        this.referrals.delete(pk);
        continue;
      }
      const s = r.target.scope;
      if (s !== null && s.contains(id) && (best === null || (best.scope !== null && s.length > best.scope.length))) best = r.target;
    }
    if (best !== null) this.c.referralHits++;
    return best ?? this.root;
  }

  private send(job: Job): void {
    if (job.timer !== null) clearTimeout(job.timer);
    this.byReq.delete(job.reqId);
    const h = this.p.config.hierarchy;
    const t = job.target;
    if (t.rms.length === 0 || job.attempt >= h.queryAttempts * Math.max(1, t.rms.length)) return this.unreachable(job);
    const to = t.rms[job.attempt % t.rms.length];
    job.attempt++;
    job.reqId = randomInt(1, 0xffffffff);
    this.byReq.set(job.reqId, job);
    const fields = { reqId: job.reqId, id: job.id, time: this.nowS(), follow: !job.self, chain: this.ownChain ?? [] };
    const signed = rmQuerySigned(fields);
    const datagram = encode({ type: 'rmQuery', ...fields, signed, signature: signBytes(this.p.key, signed) }, null);
    const socket = this.p.socketFor(to.address);
    if (socket === null) this.c.noSocket++;
    else this.p.tx.sendOn(socket, datagram, to.port, to.address);
    if (job.attempt > 1) this.c.retransmits++;
    else this.c.queriesOut++;
    job.timer = setTimeout(() => this.send(job), h.queryTimeoutMs);
  }

  private unreachable(job: Job): void {
    const t = job.target;
    this.c.unreachable++;
    const wk = keyFingerprint(t.key);
    const now = this.p.clock.now();
    if ((this.warned.get(wk) ?? -Infinity) + WARN_EVERY_MS <= now) {
      this.warned.set(wk, now);
      const rms = t.rms.map((r) => `${r.address}:${r.port}`).join(', ');
      this.p.log.warn(
        { rm: wk, rms, prefix: t.scope?.toString() ?? 'top', id: Prefix.of(job.id, 128).toString().replace(/\/128$/, '') },
        `the RM for ${t.scope?.toString() ?? 'the top of the hierarchy'} (${rms}) does not answer: lookups under it get a negative answer for ${this.p.config.hierarchy.negativeTtlS} s`,
      );
    }
    this.finish(job, { kind: 'negative', ttlS: this.p.config.hierarchy.negativeTtlS }, true);
  }

  private finish(job: Job, r: Resolution, remember: boolean): void {
    if (job.timer !== null) clearTimeout(job.timer);
    this.byReq.delete(job.reqId);
    this.jobs.delete(job.k);
    if (r.kind === 'negative' && remember && !job.self) {
      if (this.negative.size >= this.p.config.hierarchy.cacheMax) this.negative.clear();
      this.negative.set(job.k, this.p.clock.now() + r.ttlS * 1000);
    }
    const existing = this.cache.get(job.k);
    if (existing !== undefined) existing.refreshing = false;
    for (const w of job.waiters) w(r);
  }

  /** RM-ANSWER to one of our queries (dispatch rate-limited it). */
  onAnswer(m: RmAnswer, address: string): void {
    const { c } = this;
    const job = this.byReq.get(m.reqId);
    if (job === undefined || !Buffer.from(m.id).equals(Buffer.from(job.id))) {
      c.answersLate++;
      return;
    }
    const t = job.target;
    if (!verifyBytes(t.key, m.signed, m.signature) || !t.rms.some((r) => isSameAddress(address, r.address))) {
      c.answersForged++;
      return;
    }
    c.answersIn++;
    const nowS = this.nowS();
    if (m.kind === RmAnswerKind.referral && m.referral !== null) return this.onReferral(job, m.referral, m.ttl, nowS);
    if (m.kind === RmAnswerKind.binding && m.binding !== null && m.cert !== null) {
      if (job.self) return this.finish(job, { kind: 'negative', ttlS: 1 }, false);
      const e = this.entryOf(job.k, job.id, t, m.binding, m.cert, m.prefs, m.cls, m.ttl, m.followed, nowS);
      if (e === null) {
        c.answersInvalid++;
        return this.finish(job, { kind: 'negative', ttlS: this.p.config.hierarchy.negativeTtlS }, true);
      }
      c.bindingsIn++;
      this.store(e);
      return this.finish(job, { kind: 'binding', entry: e }, false);
    }
    c.negativesIn++;
    this.cache.delete(job.k);
    this.finish(job, { kind: 'negative', ttlS: Math.max(1, Math.min(m.ttl, this.p.config.lookup.negativeTtlS)) }, true);
  }

  private onReferral(job: Job, bytes: Uint8Array, ttlS: number, nowS: number): void {
    const { c } = this;
    const t = job.target;
    const v = verifyDelegation(bytes, t.key, nowS);
    // Each step strictly narrower, inside what the referring RM speaks for, holding the ID: a referral
    // loop or a sideways referral ends here.
    const ok = v.ok && v.delegation.prefix.contains(job.id) && (t.scope === null || (t.scope.covers(v.delegation.prefix) && v.delegation.prefix.length > t.scope.length)) && job.steps < MAX_CHAIN + 1;
    if (!ok) {
      c.referralsBad++;
      return this.finish(job, { kind: 'negative', ttlS: this.p.config.hierarchy.negativeTtlS }, true);
    }
    const d = v.delegation;
    const next: Target = { key: Uint8Array.from(d.subjectKey), rms: d.rms, scope: d.prefix, chain: [...t.chain, Uint8Array.from(d.bytes)], notAfter: Math.min(d.notAfter, t.notAfter) };
    c.referralsIn++;
    const expiresAt = Math.min(this.p.clock.now() + ttlS * 1000, next.notAfter * 1000);
    if (this.referrals.size >= MAX_REFERRALS) this.referrals.clear();
    this.referrals.set(d.prefix.toString(), { target: next, expiresAt });
    const mine = Buffer.from(d.subjectKey).equals(Buffer.from(this.p.key.publicKey));
    if (job.self) {
      if (mine && d.prefix.equals(this.p.realm.prefix)) {
        this.ownChain = next.chain;
        this.ownChainNotAfter = next.notAfter;
        this.p.log.info({ chain: next.chain.length, until: new Date(next.notAfter * 1000).toISOString() }, 'delegation chain from the top RM found: this RM can ask other realms');
        return this.finish(job, { kind: 'negative', ttlS: 1 }, false);
      }
      if (mine) return this.finish(job, { kind: 'negative', ttlS: 1 }, false);
    } else if (mine) {
      // Referred to ourselves: the ID is under our own prefix and we do not hold it.
      return this.finish(job, { kind: 'negative', ttlS: this.p.config.lookup.negativeTtlS }, true);
    }
    job.steps++;
    job.target = next;
    job.attempt = 0;
    this.send(job);
  }

  /** A verified cache entry from an answer or push, or null when anything in it does not check out. */
  private entryOf(k: string, id: Uint8Array, t: Target, bytes: Uint8Array, cert: Uint8Array, prefs: readonly LocatorPref[], cls: number, ttlS: number, followed: boolean, nowS: number): ForeignEntry | null {
    const d = decodeBinding(bytes);
    if (!d.ok || !Buffer.from(d.binding.hostId.toBytes()).equals(Buffer.from(id))) return null;
    if (t.scope !== null && !t.scope.contains(id)) return null;
    const v = verifyCertificate(cert, [t.key], nowS);
    if (!v.ok || !certMatches(v.cert, d.binding.hostId, d.binding.publicKey) || v.cert.prefixLen !== d.binding.prefixLen) return null;
    const held = this.cache.get(k);
    if (held !== undefined && d.binding.seq < held.seq) return null;
    if (!verifyBinding(d.binding).ok) return null;
    const endorsement = this.endorsementFor(t, nowS, id, d.binding.prefixLen);
    if (endorsement === null) return null;
    const ttl = Math.max(1, Math.min(ttlS, this.p.config.lookup.maxTtlS));
    return {
      key: k,
      id: Uint8Array.from(id),
      bytes: Uint8Array.from(bytes),
      seq: d.binding.seq,
      cert: Uint8Array.from(cert),
      prefs,
      cls,
      ttlS: ttl,
      expiresAt: this.p.clock.now() + ttl * 1000,
      pushTime: held?.pushTime ?? 0,
      followed,
      target: t,
      endorsement,
      refreshing: false,
      fetchedAt: this.p.clock.now(),
      servedTo: new Set(),
    };
  }

  /**
   * This RM's word to its own hosts that t's key speaks for t's prefix (a delegation signed by this
   * RM, no addresses), valid as long as the chain that vouched for it. Signed once per realm.
   */
  private endorsementFor(t: Target, nowS: number, id: Uint8Array, prefixLen: number): Uint8Array | null {
    const scope = t.scope ?? Prefix.of(id, prefixLen);
    const ek = `${Buffer.from(t.key).toString('hex')} ${scope.toString()}`;
    const held = this.endorsements.get(ek);
    if (held !== undefined && held.notAfter - nowS > 600) return held.bytes;
    const notAfter = Math.min(t.notAfter, nowS + this.p.config.hierarchy.delegationLifeS);
    if (notAfter <= nowS) return null;
    const d = signDelegation(this.p.key, { prefix: scope, subjectKey: t.key, notBefore: nowS - 60, notAfter });
    if (this.endorsements.size >= MAX_REFERRALS) this.endorsements.clear();
    this.endorsements.set(ek, { bytes: d.bytes, notAfter });
    return d.bytes;
  }

  private store(e: ForeignEntry): void {
    if (!this.cache.has(e.key) && this.cache.size >= this.p.config.hierarchy.cacheMax) {
      const oldest = this.cache.keys().next();
      if (!oldest.done) this.cache.delete(oldest.value);
      this.c.evicted++;
    }
    const old = this.cache.get(e.key);
    this.cache.set(e.key, e);
    this.negative.delete(e.key);
    if (old !== undefined && old.seq !== e.seq) this.p.onForeignChange(e);
  }

  /** RM-PUSH from an RM we follow: checked against the key we asked, acknowledged, applied, passed on. */
  onPush(m: RmPush, address: string, port: number): void {
    const { c } = this;
    const d = decodeBinding(m.binding);
    const e = d.ok ? this.cache.get(d.binding.hostId.key) : undefined;
    if (!d.ok || e === undefined) {
      c.pushesUnknown++;
      return;
    }
    if (!verifyBytes(e.target.key, m.signed, m.signature)) {
      c.pushesForged++;
      return;
    }
    const socket = this.p.socketFor(address);
    if (socket !== null) this.p.tx.sendOn(socket, encode({ type: 'rmPushAck', pushId: m.pushId }, null), port, address);
    if (d.binding.seq < e.seq || (d.binding.seq === e.seq && m.time <= e.pushTime)) {
      c.pushesStale++;
      return;
    }
    const nowS = this.nowS();
    const next = this.entryOf(e.key, e.id, e.target, m.binding, m.cert, m.prefs, m.cls, m.ttl, true, nowS);
    if (next === null) {
      c.pushesInvalid++;
      return;
    }
    next.pushTime = m.time;
    c.pushesIn++;
    this.store(next);
    if (e.seq === next.seq) this.p.onForeignChange(next);
  }

  /**
   * Once a second: re-ask bindings this RM's hosts follow in the last third of their TTL (the RM
   * answering renews our follow then too), and look for this RM's own chain until it is known.
   */
  tick(followed: (k: string) => boolean): void {
    const now = this.p.clock.now();
    for (const e of this.cache.values()) {
      if (e.refreshing || e.expiresAt - now > (e.ttlS * 1000) / 3 || !followed(e.key)) continue;
      if (e.expiresAt <= now) continue;
      e.refreshing = true;
      this.c.revalidations++;
      this.refresh(e);
    }
    if (this.root !== null && (this.ownChain === null || this.ownChainNotAfter - this.nowS() < 3_600) && !this.jobs.has('self')) this.start(this.p.realm.prefix.toBytes(), 'self', true, null);
  }

  private refresh(e: ForeignEntry): void {
    if (this.jobs.has(e.key)) return;
    const job: Job = { id: e.id, k: e.key, self: false, target: e.target, steps: 0, attempt: 0, reqId: 0, timer: null, waiters: [] };
    this.jobs.set(e.key, job);
    this.send(job);
  }

  stop(): void {
    this.stopped = true;
    for (const j of this.jobs.values()) if (j.timer !== null) clearTimeout(j.timer);
    this.jobs.clear();
    this.byReq.clear();
  }

  /** For status: each cached foreign binding's class. */
  classCensus(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const e of this.cache.values()) {
      const n = className(e.cls);
      out[n] = (out[n] ?? 0) + 1;
    }
    return out;
  }
}
