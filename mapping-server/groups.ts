import type { Clock } from '../shared/clock.ts';
import type { Logger } from '../shared/log.ts';
import { applyPrefs, compareSeq, decodeBinding } from '../shared/binding.ts';
import { decodeGroup, verifyGroup, type GroupBinding } from '../shared/group.ts';
import { HostId, idKey, parsePrefix, type Prefix } from '../shared/ids.ts';
import { MAX_DATAGRAM, HEADER_LEN, GroupStatus, type GroupReply, type HostAnswer, type Publish, type Serve } from '../shared/wire/messages.ts';
import type { RmConfig } from './config.ts';
import type { PushQueue, Subscriptions } from './push.ts';
import type { Session } from './sessions.ts';
import type { BindingStore } from './store/bindings.ts';
import type { Outbox } from './tx.ts';

/**
 * Slice 2 at the Realm Manager: the user and data tiers (the RHB-2 blocks of docs/slice2.md) and the
 * RCA, the coordination agent that carries host-tier changes up to them.
 *
 * 1. PUBLISH: a user or data binding signed by its owner (shared/group.ts), under this realm's user
 *    or data prefix, replaces the held one if its sequence number is higher. Durable (the store's
 *    group commit) before it is acknowledged; a restart loses no acknowledged binding.
 * 2. SERVE: the session's host consents to serve the ID. Only a host the owner's binding lists can
 *    consent (the owner's delegation), and only the host itself can (its own authenticated session):
 *    nobody can point traffic at a host that did not agree. Consent is durable and lapses after the
 *    registration expiry unless refreshed (the agent refreshes it with its registration).
 * 3. LOOKUP of a user/data ID: GROUP-REPLY with the binding, one presence flag per listed host and the
 *    host bindings of as many present hosts as fit in one datagram, best first (one round trip).
 *    A host is present when it consented, is registered, and has a locator up after realm policy.
 *    Privacy: the asker must be allowed to see the user/data ID; inline host answers only for hosts
 *    it may see too (a group grants no view of its hosts beyond what the policy allows).
 * 4. RCA: a host's registration, expiry or revocation, a consent or a binding change recomputes the
 *    presence of every user/data ID listing that host; a change is pushed (GROUP-PUSH, retransmitted
 *    like host pushes) to that ID's followers, who stop choosing an absent host at once.
 * Bounded: at most slice2.maxGroups IDs, MAX_GROUP_HOSTS hosts (and consents) each.
 */
export interface GroupParts {
  readonly config: RmConfig;
  readonly clock: Clock;
  readonly log: Logger;
  readonly store: BindingStore;
  readonly subs: Subscriptions;
  readonly pushes: PushQueue;
  readonly tx: Outbox;
  /** The host binding, prefs and certificate to serve for a host (its map key), or null when none. */
  readonly hostAnswer: (hostKey: string) => HostAnswer | null;
}

interface GroupRec {
  binding: GroupBinding;
  /** One flag per host of binding.hosts. */
  present: Uint8Array;
  /** Consenting host key → clock ms when the consent lapses. */
  readonly consents: Map<string, number>;
}

export const GROUP_COUNTERS = [
  'published',
  'publishRefresh',
  'publishStale',
  'publishForged',
  'publishNotInRealm',
  'publishMalformed',
  'publishFull',
  'served',
  'serveNotListed',
  'serveUnknown',
  'serveFailed',
  'consentsExpired',
  'lookupPositive',
  'lookupDenied',
  'presenceChanges',
  'pushes',
] as const;
export type GroupCounter = (typeof GROUP_COUNTERS)[number];

/** Room in a GROUP-REPLY for host answers: the datagram less header, MAC, msgpack framing and the binding. */
function answerBudget(bindingLen: number): number {
  return MAX_DATAGRAM - HEADER_LEN - 16 - 48 - bindingLen;
}

export class GroupTier {
  private readonly groups = new Map<string, GroupRec>();
  /** Host key → the user/data IDs (keys) whose binding lists it. */
  private readonly byHost = new Map<string, Set<string>>();
  private readonly userPrefix: Prefix | null;
  private readonly dataPrefix: Prefix | null;
  private readonly stPut;
  private readonly stConsent;
  private readonly stUnconsent;
  readonly counters: Record<GroupCounter, number> = Object.fromEntries(GROUP_COUNTERS.map((k) => [k, 0])) as Record<GroupCounter, number>;

  constructor(private readonly p: GroupParts) {
    const c = p.config.slice2;
    this.userPrefix = c.userPrefix === undefined ? null : parsePrefix(c.userPrefix);
    this.dataPrefix = c.dataPrefix === undefined ? null : parsePrefix(c.dataPrefix);
    const db = p.store.database;
    this.stPut = db.prepare('INSERT INTO groups (id, seq, bytes) VALUES (?, ?, ?) ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, bytes = excluded.bytes');
    this.stConsent = db.prepare('INSERT INTO serves (group_id, host_id, expires_at) VALUES (?, ?, ?) ON CONFLICT (group_id, host_id) DO UPDATE SET expires_at = excluded.expires_at');
    this.stUnconsent = db.prepare('DELETE FROM serves WHERE group_id = ? AND host_id = ?');
  }

  get size(): number {
    return this.groups.size;
  }

  /** Reads the held bindings and live consents (at start, before the first datagram). */
  load(): void {
    const db = this.p.store.database;
    const now = this.p.clock.now();
    for (const r of db.prepare<{ bytes: Buffer }>('SELECT bytes FROM groups').iterate()) {
      const d = decodeGroup(r.bytes);
      // Checked when stored; a prefix removed from the config since then drops its IDs.
      if (!d.ok || !this.accepts(d.group)) continue;
      this.setBinding(d.group);
    }
    for (const r of db.prepare<{ group_id: Buffer; host_id: Buffer; expires_at: number }>('SELECT group_id, host_id, expires_at FROM serves').iterate()) {
      const g = this.groups.get(r.group_id.toString('latin1'));
      const hostKey = r.host_id.toString('latin1');
      if (g === undefined || r.expires_at <= now) continue;
      g.consents.set(hostKey, r.expires_at);
    }
    for (const k of this.groups.keys()) this.recompute(k, false);
    if (this.groups.size > 0) this.p.log.info({ ids: this.groups.size }, 'user and data bindings loaded');
  }

  /** Whether key is a user or data ID held here (a LOOKUP of it gets a GROUP-REPLY). */
  has(key: string): boolean {
    return this.groups.has(key);
  }

  publish(s: Session, m: Publish): void {
    const c = this.counters;
    const answer = (id: Uint8Array, status: number, seq: number): void => this.p.tx.reply(s, { type: 'publishReply', reqId: m.reqId, id, status, seq });
    const d = decodeGroup(m.binding);
    if (!d.ok) {
      c.publishMalformed++;
      return answer(new Uint8Array(16), GroupStatus.malformed, 0);
    }
    this.store(d.group, (status) => answer(d.group.id.toBytes(), status, this.groups.get(d.group.id.key)?.binding.seq ?? 0));
  }

  serve(s: Session, m: Serve, now: number): void {
    const c = this.counters;
    const key = idKey(m.id);
    const expiryS = this.p.config.registration.expiryS;
    const answer = (status: number, expiresIn: number): void => this.p.tx.reply(s, { type: 'serveReply', reqId: m.reqId, id: m.id, status, expiresIn });
    const consent = (): void => {
      const g = this.groups.get(key);
      if (g === undefined) {
        c.serveUnknown++;
        return answer(GroupStatus.unknown, 0);
      }
      const hostKey = s.hostId.key;
      if (!g.binding.hosts.some((h) => h.hostId.key === hostKey)) {
        c.serveNotListed++;
        return answer(GroupStatus.notListed, 0);
      }
      const expiresAt = now + expiryS * 1000;
      const fresh = !g.consents.has(hostKey);
      g.consents.set(hostKey, expiresAt);
      this.p.store.journal(
        () => this.stConsent.run(Buffer.from(key, 'latin1'), Buffer.from(hostKey, 'latin1'), Math.round(expiresAt)),
        (err) => {
          if (err !== null) {
            if (fresh) g.consents.delete(hostKey);
            c.serveFailed++;
            return answer(GroupStatus.unavailable, 0);
          }
          c.served++;
          answer(GroupStatus.ok, expiryS);
          if (fresh) {
            this.p.log.info({ id: g.binding.id.toString(), hostId: s.hostId.toString(), kind: g.binding.kind }, 'host consents to serve');
            this.recompute(key, true);
          }
        },
      );
    };
    if (m.binding === null) return consent();
    const d = decodeGroup(m.binding);
    if (!d.ok || d.group.id.key !== key) {
      c.publishMalformed++;
      return answer(GroupStatus.malformed, 0);
    }
    // The host's copy of the owner's binding: stored if newer, then the consent under what is held.
    this.store(d.group, (status) => (status === GroupStatus.ok || status === GroupStatus.stale ? consent() : answer(status, 0)));
  }

  /** LOOKUP of a user/data ID held here (has(key) was true). */
  lookup(s: Session, reqId: number, id: Uint8Array, key: string): void {
    const g = this.groups.get(key);
    const negTtl = this.p.config.lookup.negativeTtlS;
    if (g === undefined || !s.view.mayLearn(id, key)) {
      if (g !== undefined) this.counters.lookupDenied++;
      const r: GroupReply = { type: 'groupReply', reqId, id, ttl: negTtl, binding: null, present: new Uint8Array(0), hosts: [] };
      return this.p.tx.reply(s, r);
    }
    this.counters.lookupPositive++;
    const hosts: HostAnswer[] = [];
    let room = answerBudget(g.binding.bytes.length);
    // Best first: lowest priority number, then highest weight (the order a correspondent tries them).
    const order = g.binding.hosts.map((h, i) => ({ h, i })).sort((a, b) => a.h.priority - b.h.priority || b.h.weight - a.h.weight);
    for (const { h, i } of order) {
      if (g.present[i] !== 1) continue;
      const raw = h.hostId.toBytes();
      if (!s.view.mayLearn(raw, h.hostId.key)) continue;
      const a = this.p.hostAnswer(h.hostId.key);
      if (a === null) continue;
      const size = a.binding.length + a.cert.length + 8 + a.prefs.length * 6;
      if (size > room) break;
      room -= size;
      hosts.push(a);
    }
    const ttl = Math.min(g.binding.ttl, this.p.config.lookup.maxTtlS);
    this.p.tx.reply(s, { type: 'groupReply', reqId, id, ttl, binding: g.binding.bytes, present: g.present, hosts });
  }

  /** The RCA's input from the host tier: hostKey's binding was stored, expired or revoked. */
  hostChanged(hostKey: string): void {
    const keys = this.byHost.get(hostKey);
    if (keys === undefined) return;
    for (const k of keys) this.recompute(k, true);
  }

  /** Lapsed consents (from the sweep, once a second). Bounded: at most maxGroups × MAX_GROUP_HOSTS entries. */
  tick(now: number): void {
    for (const [k, g] of this.groups) {
      let changed = false;
      for (const [hostKey, until] of g.consents) {
        if (until > now) continue;
        g.consents.delete(hostKey);
        this.counters.consentsExpired++;
        changed = true;
        this.p.store.journal(() => this.stUnconsent.run(Buffer.from(k, 'latin1'), Buffer.from(hostKey, 'latin1')), () => undefined);
      }
      if (changed) this.recompute(k, true);
    }
  }

  /** Status: every held ID with its hosts and their presence. */
  describe(): { id: string; kind: string; name: string; seq: number; hosts: { hostId: string; priority: number; weight: number; consented: boolean; present: boolean }[] }[] {
    return [...this.groups.values()].map((g) => ({
      id: g.binding.id.toString(),
      kind: g.binding.kind,
      name: g.binding.name,
      seq: g.binding.seq,
      hosts: g.binding.hosts.map((h, i) => ({ hostId: h.hostId.toString(), priority: h.priority, weight: h.weight, consented: g.consents.has(h.hostId.key), present: g.present[i] === 1 })),
    }));
  }

  // ---- inside the class ----

  private accepts(g: GroupBinding): boolean {
    const p = g.kind === 'user' ? this.userPrefix : this.dataPrefix;
    return p !== null && p.length === g.prefixLen && p.contains(g.id);
  }

  /** Steps shared by PUBLISH and SERVE: checks, stores durably, then done(status). */
  private store(g: GroupBinding, done: (status: number) => void): void {
    const c = this.counters;
    const key = g.id.key;
    if (!this.accepts(g)) {
      c.publishNotInRealm++;
      return done(GroupStatus.notInRealm);
    }
    const held = this.groups.get(key);
    const order = compareSeq(held === undefined ? undefined : held.binding, g);
    if (order === 'same') {
      c.publishRefresh++;
      return done(GroupStatus.ok);
    }
    if (order === 'stale' || order === 'conflict') {
      c.publishStale++;
      return done(GroupStatus.stale);
    }
    if (held === undefined && this.groups.size >= this.p.config.slice2.maxGroups) {
      c.publishFull++;
      return done(GroupStatus.unavailable);
    }
    const v = verifyGroup(g);
    if (!v.ok) {
      c.publishForged++;
      this.p.log.debug({ id: g.id.toString(), reason: v.reason }, 'forged user/data binding refused');
      return done(GroupStatus.forged);
    }
    const undo = held?.binding ?? null;
    this.setBinding(g);
    this.p.store.journal(
      () => this.stPut.run(Buffer.from(key, 'latin1'), g.seq, Buffer.from(g.bytes)),
      (err) => {
        if (err !== null) {
          if (undo === null) this.dropBinding(key);
          else this.setBinding(undo);
          return done(GroupStatus.unavailable);
        }
        c.published++;
        this.p.log.info({ id: g.id.toString(), kind: g.kind, seq: g.seq, hosts: g.hosts.length }, 'user/data binding stored');
        // A host the owner no longer lists is no longer offered (recompute); its consent stays until it
        // lapses, so listing it again brings it back at once if it still serves the ID.
        this.recompute(key, true, true);
        done(GroupStatus.ok);
      },
    );
  }

  private setBinding(g: GroupBinding): void {
    const key = g.id.key;
    const old = this.groups.get(key);
    if (old !== undefined) for (const h of old.binding.hosts) this.byHost.get(h.hostId.key)?.delete(key);
    for (const h of g.hosts) {
      let set = this.byHost.get(h.hostId.key);
      if (set === undefined) this.byHost.set(h.hostId.key, (set = new Set()));
      set.add(key);
    }
    if (old === undefined) this.groups.set(key, { binding: g, present: new Uint8Array(g.hosts.length), consents: new Map() });
    else {
      old.binding = g;
      old.present = new Uint8Array(g.hosts.length);
    }
    for (const [h, set] of this.byHost) if (set.size === 0) this.byHost.delete(h);
  }

  private dropBinding(key: string): void {
    const old = this.groups.get(key);
    if (old === undefined) return;
    for (const h of old.binding.hosts) this.byHost.get(h.hostId.key)?.delete(key);
    this.groups.delete(key);
  }

  /** A host is present: consented, registered, and a locator up after realm policy. */
  private isPresent(g: GroupRec, hostKey: string): boolean {
    if (!g.consents.has(hostKey)) return false;
    const rec = this.p.store.get(hostKey);
    if (rec === undefined) return false;
    const d = decodeBinding(rec.bytes);
    return d.ok && applyPrefs(d.binding.locators, rec.prefs).some((l) => l.state === 'up');
  }

  /** Presence of key's hosts anew; on a change (or force), a GROUP-PUSH to each follower allowed to see it. */
  private recompute(key: string, notify: boolean, force = false): void {
    const g = this.groups.get(key);
    if (g === undefined) return;
    const next = Uint8Array.from(g.binding.hosts, (h) => (this.isPresent(g, h.hostId.key) ? 1 : 0));
    if (!force && Buffer.from(next).equals(Buffer.from(g.present))) return;
    g.present = next;
    if (!force) this.counters.presenceChanges++;
    if (!notify) return;
    this.p.log.info({ id: g.binding.id.toString(), present: g.binding.hosts.filter((_, i) => next[i] === 1).map((h) => h.hostId.toString()) }, 'user/data ID hosts changed');
    const followers = this.p.subs.followers(key);
    if (followers === undefined) return;
    const now = this.p.clock.now();
    const idBytes = g.binding.id.toBytes();
    const ttl = Math.min(g.binding.ttl, this.p.config.lookup.maxTtlS);
    for (const f of followers) {
      if (!f.view.mayLearn(idBytes, key)) continue;
      if (this.p.pushes.pushGroup(f, key, g.binding.bytes, next, ttl, now)) this.counters.pushes++;
    }
  }
}

/** For logs: a host ID from its map key. */
export function hostIdOfKey(key: string): HostId {
  return HostId.fromBytes(Buffer.from(key, 'latin1'));
}
