import type { Clock } from '../shared/clock.ts';
import type { KeyPair } from '../shared/crypto/ed25519.ts';
import { canonicalAddress, familyOf } from '../shared/address.ts';
import type { RmAddress } from '../shared/delegation.ts';
import { ConfigError } from '../shared/errors.ts';
import { idKey, parsePrefix } from '../shared/ids.ts';
import type { Logger } from '../shared/log.ts';
import type { ControlMessage, LookupReply } from '../shared/wire/messages.ts';
import { publicKeyFromConfig } from './admission.ts';
import type { RmConfig } from './config.ts';
import type { Policy } from './policy.ts';
import type { PushQueue, Subscriptions } from './push.ts';
import type { Realm } from './realm.ts';
import type { ControlSocket, Session } from './sessions.ts';
import type { BindingStore, StoredBinding } from './store/bindings.ts';
import type { Outbox } from './tx.ts';
import { Authority, keyFingerprint } from './authority.ts';
import { ClassBook } from './classes.ts';
import { Recursor, type ForeignEntry, type Target } from './recursor.ts';

/**
 * The realm hierarchy at one RM (docs/hierarchy.md): the Authority answers other RMs about the
 * prefixes this RM delegates and the hosts it serves; the Recursor resolves other realms' IDs for
 * this RM's own hosts through the tree and caches them for all of them; the ClassBook decides each
 * host's customer class. Built only when the config has a `hierarchy` with a root or delegations:
 * a lone RM works exactly as before.
 */
export const HIERARCHY_COUNTERS = [
  'queriesIn',
  'queriesSkewed',
  'referralsOut',
  'bindingsOut',
  'negativesOut',
  'denied',
  'notHere',
  'askerRefused',
  'follows',
  'followFull',
  'pushesOut',
  'pushesRetransmitted',
  'pushesReplaced',
  'pushesAcked',
  'pushesGaveUp',
  'pushAcksUnexpected',
  'queriesOut',
  'retransmits',
  'unreachable',
  'answersIn',
  'answersLate',
  'answersForged',
  'answersInvalid',
  'referralsIn',
  'referralsBad',
  'referralHits',
  'bindingsIn',
  'negativesIn',
  'cacheHits',
  'cacheMisses',
  'negativeHits',
  'evicted',
  'busy',
  'noRoute',
  'noSocket',
  'revalidations',
  'pushesIn',
  'pushesUnknown',
  'pushesForged',
  'pushesStale',
  'pushesInvalid',
  'pushesToHosts',
  'lookupsForHosts',
] as const;
export type HierarchyCounters = Record<(typeof HIERARCHY_COUNTERS)[number], number>;

export interface FederationDeps {
  readonly config: RmConfig;
  readonly clock: Clock;
  readonly wallClock: () => number;
  readonly log: Logger;
  readonly key: KeyPair;
  readonly realm: Realm;
  readonly policy: Policy;
  readonly store: BindingStore;
  readonly subs: Subscriptions;
  readonly pushes: PushQueue;
  readonly tx: Outbox;
  readonly sockets: () => readonly ControlSocket[];
  /** The certificate to serve with a stored binding now (handlers.ts). */
  readonly certOf: (rec: StoredBinding, k: string) => Uint8Array | null;
}

/** What the Authority and the Recursor use. */
export interface FederationParts extends FederationDeps {
  readonly classes: ClassBook;
  readonly socketFor: (address: string) => ControlSocket | null;
  readonly onForeignChange: (e: ForeignEntry) => void;
}

export class Federation {
  readonly c: HierarchyCounters;
  readonly classes: ClassBook;
  private readonly authority: Authority;
  private readonly recursor: Recursor;
  private timer: NodeJS.Timeout | null = null;

  constructor(private readonly d: FederationDeps) {
    const h = d.config.hierarchy;
    this.c = Object.fromEntries(HIERARCHY_COUNTERS.map((k) => [k, 0])) as HierarchyCounters;
    this.classes = new ClassBook(d.policy, h.learnClasses, h.defaultClass, d.clock.now());
    const parts: FederationParts = { ...d, classes: this.classes, socketFor: (a) => this.socketFor(a), onForeignChange: (e) => this.foreignChanged(e) };
    const children = h.delegations.map((g, i) => ({
      prefix: parsePrefix(g.prefix),
      name: g.name ?? g.prefix,
      key: rmPublicKey(g.publicKey, `hierarchy.delegations.${i}.publicKey`),
      rms: g.rms.map(rmAddress),
    }));
    const rootKey = h.root === undefined ? null : rmPublicKey(h.root.publicKey, 'hierarchy.root.publicKey');
    if (rootKey !== null && Buffer.from(rootKey).equals(Buffer.from(d.key.publicKey))) {
      throw new ConfigError('config error: hierarchy.root names this RM itself', 'leave hierarchy.root out on the top RM; every other RM names the top RM there');
    }
    this.authority = new Authority(parts, this.c, children, rootKey);
    const root: Target | null = h.root === undefined || rootKey === null ? null : { key: rootKey, rms: h.root.rms.map(rmAddress), scope: null, chain: [], notAfter: Number.MAX_SAFE_INTEGER };
    const self = this.authority.selfDelegation;
    this.recursor = new Recursor(
      parts,
      this.c,
      root,
      (id) => {
        const ch = this.authority.childFor(id);
        const chain = this.recursor?.ownChain ?? [];
        return ch === undefined ? null : { key: ch.key, rms: ch.rms, scope: ch.prefix, chain: [...chain, ch.delegation.bytes], notAfter: ch.delegation.notAfter };
      },
      self === null ? null : [self.bytes],
    );
  }

  /** True when the config puts this RM in a hierarchy. */
  static configured(c: RmConfig): boolean {
    return c.hierarchy.root !== undefined || c.hierarchy.delegations.length > 0;
  }

  start(): void {
    const { log, config } = this.d;
    const h = config.hierarchy;
    log.info(
      { role: h.root === undefined ? 'top' : this.authority.childCount() > 0 ? 'middle' : 'bottom', delegations: h.delegations.map((g) => `${g.prefix} → ${g.name ?? keyFingerprint(rmPublicKey(g.publicKey, 'key'))}`), otherRealms: config.policy.lookup.otherRealms },
      'realm hierarchy on',
    );
    if (config.policy.lookup.otherRealms === 'deny' && config.policy.lookup.rules.length === 0) {
      log.info('hosts of other realms may not look up this realm\'s hosts (policy.lookup.otherRealms: deny, no rules name other realms)');
    }
    this.tick();
    this.timer = setInterval(() => this.tick(), 1_000);
  }

  stop(): void {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
    this.authority.stop();
    this.recursor.stop();
  }

  private tick(): void {
    this.authority.tick();
    this.recursor.tick((k) => (this.d.subs.followers(k)?.size ?? 0) > 0);
  }

  /** True when id is resolved through the hierarchy: outside this realm, or in a prefix it delegated. */
  resolves(id: Uint8Array): boolean {
    return !this.d.realm.prefix.contains(id) || this.authority.childFor(id) !== undefined;
  }

  /** An agent's LOOKUP of another realm's host: from the shared cache, or once the hierarchy answered. */
  lookup(s: Session, reqId: number, id: Uint8Array): void {
    this.c.lookupsForHosts++;
    const idCopy = Uint8Array.from(id);
    this.recursor.resolve(idCopy, s.sid, (r) => {
      let ans: LookupReply;
      if (r.kind === 'binding') {
        const e = r.entry;
        const ttl = Math.max(1, Math.ceil((e.expiresAt - this.d.clock.now()) / 1000));
        ans = { type: 'lookupReply', reqId, hostId: idCopy, ttl, binding: e.bytes, prefs: e.prefs, cert: e.cert, endorsement: e.endorsement };
      } else ans = { type: 'lookupReply', reqId, hostId: idCopy, ttl: r.ttlS, binding: null, prefs: [], cert: null };
      this.d.tx.reply(s, ans);
    });
  }

  /** The RM ↔ RM messages (dispatch checked size and rate). */
  onMessage(m: ControlMessage, socket: ControlSocket, address: string, port: number): void {
    switch (m.type) {
      case 'rmQuery':
        return this.authority.onQuery(m, socket, address, port);
      case 'rmAnswer':
        return this.recursor.onAnswer(m, address);
      case 'rmPush':
        return this.recursor.onPush(m, address, port);
      case 'rmPushAck':
        return this.authority.onPushAck(m.pushId, address, port);
      default:
        return;
    }
  }

  /** After a committed change of this realm's host (a new sequence number): learn, and push to following RMs. */
  changed(k: string, idBytes: Uint8Array): void {
    this.classes.changed(k, this.d.clock.now());
    const rec = this.d.store.get(k);
    if (rec === undefined) return;
    const cert = this.d.certOf(rec, k);
    if (cert !== null) this.authority.changed(k, idBytes, rec.bytes, rec.ttl, rec.prefs, cert);
  }

  /** A foreign binding changed (pushed, or re-asked and found newer): on to this RM's hosts that follow it. */
  private foreignChanged(e: ForeignEntry): void {
    const followers = this.d.subs.followers(e.key);
    if (followers === undefined) return;
    const now = this.d.clock.now();
    for (const f of followers) if (this.d.pushes.push(f, e.key, e.bytes, e.ttlS, e.prefs, now, e.cert, e.endorsement)) this.c.pushesToHosts++;
  }

  private socketFor(address: string): ControlSocket | null {
    const fam = familyOf(address);
    const socks = this.d.sockets();
    const want = (s: ControlSocket) => (s.local.address.includes(':') ? 6 : 4) === fam;
    return socks.find(want) ?? socks[0] ?? null;
  }

  counters(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const k of HIERARCHY_COUNTERS) out[`hierarchy.${k}`] = this.c[k];
    out['hierarchy.cached'] = this.recursor.cacheSize();
    out['hierarchy.referrals'] = this.recursor.referralCount();
    out['hierarchy.followers'] = this.authority.followerCount();
    out['hierarchy.chainKnown'] = this.recursor.ownChain === null ? 0 : 1;
    return out;
  }

  /** For tests and status: the class this RM gives one of its hosts now. */
  classOf(id: Uint8Array): string {
    return this.classes.classOf(id, idKey(id), this.d.clock.now());
  }
}

function rmAddress(a: { address: string; port: number }): RmAddress {
  return Object.freeze({ address: canonicalAddress(a.address), port: a.port });
}

/** Another RM's public key from the config: base64, or the path of a copy of its key file. */
function rmPublicKey(entry: string, what: string): Uint8Array {
  return publicKeyFromConfig(entry, what, 'give the other RM\'s public key (the "publicKey" of its key file) or the path of a copy of its key file');
}
