import { readFileSync } from 'node:fs';
import type { MacKey } from '../shared/crypto/blake2s.ts';
import type { KeyPair } from '../shared/crypto/ed25519.ts';
import { ConfigError } from '../shared/errors.ts';
import { HostId, MAX_ID_PREFIX_LEN, Prefix, deriveHostId, idKey } from '../shared/ids.ts';
import { inviteKey, inviteSecret, issueCertificate, joinProof, sameTag } from '../shared/membership.ts';
import { helloSignedBytes } from '../shared/wire/handshake.ts';
import type { Hello } from '../shared/wire/messages.ts';
import type { Realm } from './realm.ts';
import type { BindingStore } from './store/bindings.ts';
import { Member, prepareUseInvite, prepareWriteMember, readUsedInvites, type MemberTable } from './store/members.ts';

/**
 * Who may open a session, and the certificates members carry (docs/security.md, decisions 1 and 2).
 *
 * 1. gate(): the cheap check every HELLO passes before any public-key work. A member's HELLO must
 *    carry the key pinned for its ID; a stranger's may carry a join proof, checked by recomputing
 *    the invite's secret from the RM's key (two BLAKE2s, no state per invite but the used ones).
 * 2. join(): after the HELLO's signature verified, the new member and the spent invite are written
 *    in one group commit; the WELCOME goes out only after it (a crash cannot forget a used token
 *    whose WELCOME left).
 * 3. certFor(): the certificate a member's WELCOME, RENEW-REPLY, and every answer about its binding
 *    carry; a fresh one is signed once a third of the held one's life has passed (so the served one
 *    always has at least two thirds left), the serial a strictly increasing ms clock.
 */
export type Gate =
  | { readonly kind: 'member'; readonly member: Member }
  | { readonly kind: 'join'; readonly inviteId: Uint8Array; readonly expiresAt: number }
  /** admission.open: a stranger, admitted (in memory) once its HELLO verifies. */
  | { readonly kind: 'open' }
  /** A join for this ID is being committed: the retransmitted HELLO is dropped, the first one answers. */
  | { readonly kind: 'pending' }
  | { readonly kind: 'notMember' }
  | { readonly kind: 'badToken'; readonly why: 'prefix' | 'expired' | 'used' | 'proof' };

export interface AdmissionOptions {
  readonly realm: Realm;
  readonly rmKey: KeyPair;
  readonly members: MemberTable;
  readonly store: BindingStore;
  readonly certTtlS: number;
  readonly open: boolean;
  /** Wall-clock ms: certificates are checked on other hosts against their clocks. */
  readonly wallClock: () => number;
}

export class Admission {
  private readonly inviteKey: MacKey;
  /** Spent invites (hex), loaded at start and added to as joins commit. */
  private readonly usedInvites: Set<string>;
  /** IDs whose join is being committed. */
  private readonly pending = new Set<string>();
  private lastSerial = 0;
  private readonly writeMember;
  private readonly useInvite;

  constructor(private readonly o: AdmissionOptions) {
    // Derived once: every join check recomputes a secret under it.
    this.inviteKey = inviteKey(o.rmKey);
    this.usedInvites = new Set(readUsedInvites(o.store.database));
    this.writeMember = prepareWriteMember(o.store.database);
    this.useInvite = prepareUseInvite(o.store.database);
  }

  get members(): MemberTable {
    return this.o.members;
  }

  nowS(): number {
    return Math.floor(this.o.wallClock() / 1000);
  }

  /** Step 1: no public-key work, no state kept. */
  gate(h: Hello): Gate {
    const k = idKey(h.hostId);
    const m = this.o.members.get(k);
    if (m !== undefined) {
      if (!m.active || h.prefixLen !== m.prefixLen || !Buffer.from(m.publicKey).equals(Buffer.from(h.publicKey))) return { kind: 'notMember' };
      return { kind: 'member', member: m };
    }
    if (this.pending.has(k)) return { kind: 'pending' };
    if (h.join !== null) {
      const j = h.join;
      if (h.prefixLen > MAX_ID_PREFIX_LEN) return { kind: 'badToken', why: 'prefix' };
      const id = HostId.fromBytes(h.hostId);
      // The token names the prefix; the host's ID masked to its length must be it, and it must be ours.
      if (!this.o.realm.accepts(id, h.prefixLen)) return { kind: 'badToken', why: 'prefix' };
      if (j.expiresAt <= this.nowS()) return { kind: 'badToken', why: 'expired' };
      const inviteHex = Buffer.from(j.inviteId).toString('hex');
      if (this.usedInvites.has(inviteHex)) return { kind: 'badToken', why: 'used' };
      const prefix = Prefix.of(h.hostId, h.prefixLen);
      const secret = inviteSecret(this.inviteKey, this.o.rmKey.publicKey, prefix, j.inviteId, j.expiresAt);
      const expect = joinProof(secret, helloSignedBytes(h.hostId, h.prefixLen, h.publicKey, h.ephemeral, h.nonce));
      if (!sameTag(expect, j.proof)) return { kind: 'badToken', why: 'proof' };
      return { kind: 'join', inviteId: j.inviteId, expiresAt: j.expiresAt };
    }
    return this.o.open ? { kind: 'open' } : { kind: 'notMember' };
  }

  /**
   * Step 2, for a HELLO whose gate said 'join' and whose signature and ID verified: the member and
   * the spent invite, durably; done(member) after the commit, done(null) if it failed.
   */
  join(h: Hello, g: Extract<Gate, { kind: 'join' }>, done: (m: Member | null) => void): void {
    const id = HostId.fromBytes(h.hostId);
    const inviteHex = Buffer.from(g.inviteId).toString('hex');
    // Taken now, so a second HELLO with the same token (another host) is refused while this commits.
    this.usedInvites.add(inviteHex);
    this.pending.add(id.key);
    const m = new Member(id, Uint8Array.from(h.publicKey), h.prefixLen, this.nowS(), null, null, 'token');
    const row = m.row();
    this.o.store.journal(
      () => {
        this.writeMember(row);
        this.useInvite(g.inviteId, g.expiresAt);
      },
      (err) => {
        this.pending.delete(id.key);
        if (err !== null) {
          this.usedInvites.delete(inviteHex);
          return done(null);
        }
        this.o.members.set(m);
        done(m);
      },
    );
  }

  get open(): boolean {
    return this.o.open;
  }

  /**
   * admission.open: a verified stranger (its HELLO, or a binding the store holds) becomes a member
   * for this RM's lifetime, in memory only: a benchmark's thousands of random keys write no rows.
   */
  admitOpen(id: HostId, publicKey: Uint8Array, prefixLen: number): Member {
    const m = new Member(id, Uint8Array.from(publicKey), prefixLen, this.nowS(), null, null, 'open');
    this.o.members.set(m);
    return m;
  }

  /**
   * Admits a key under prefix (default: the realm's) durably: admission.keys at start, and the
   * in-process API tests use. A member with this key stays as it is; a revoked one stays revoked
   * unless readmit is set.
   */
  admitKey(publicKey: Uint8Array, prefix: Prefix, via: string, readmit: boolean, done: (m: Member | null, err: Error | null) => void): void {
    const id = deriveHostId(prefix, publicKey);
    const held = this.o.members.get(id.key);
    if (held !== undefined && (held.active || !readmit)) return done(held, null);
    const m = held ?? new Member(id, Uint8Array.from(publicKey), prefix.length, this.nowS(), null, null, via);
    const row = { ...m.row(), revokedAt: null, admittedAt: this.nowS(), via };
    this.o.store.journal(
      () => this.writeMember(row),
      (err) => {
        if (err !== null) return done(null, err);
        m.revokedAt = null;
        m.admittedAt = row.admittedAt;
        m.via = via;
        m.cert = null;
        this.o.members.set(m);
        done(m, null);
      },
    );
  }

  /** Revokes durably (the in-process API; the CLI writes the file). done(false) if not a member. */
  revoke(id: HostId, done: (m: Member | null, err: Error | null) => void): void {
    const m = this.o.members.get(id.key);
    if (m === undefined || !m.active) return done(null, null);
    const row = { ...m.row(), revokedAt: this.nowS() };
    this.o.store.journal(
      () => this.writeMember(row),
      (err) => {
        if (err !== null) return done(null, err);
        m.revokedAt = row.revokedAt;
        m.cert = null;
        done(m, null);
      },
    );
  }

  /**
   * The certificate to serve for m now: the held one while it has at least two thirds of its life
   * left, else a fresh one (an Ed25519 signature, once per member per third of certTtlS). Null for a
   * revoked member. nowS: wall-clock seconds (callers on the lookup path pass it in).
   */
  certFor(m: Member, nowS: number): Uint8Array | null {
    if (!m.active) return null;
    if (m.cert === null || nowS >= m.certRenewAt) {
      const ttl = this.o.certTtlS;
      this.lastSerial = Math.max(this.lastSerial + 1, this.o.wallClock());
      m.cert = issueCertificate(this.o.rmKey, {
        hostId: m.id,
        prefixLen: m.prefixLen,
        publicKey: m.publicKey,
        previousKey: m.previousKey,
        serial: Math.floor(this.lastSerial),
        notBefore: nowS,
        notAfter: nowS + ttl,
      });
      m.certRenewAt = nowS + Math.floor(ttl / 3);
    }
    return m.cert.bytes;
  }
}

/**
 * admission.keys: each a base64 public key or the path of a key file (only "publicKey" is read, so
 * a host's key file can be copied without trusting the RM with its private half — or a file holding
 * just the base64 line).
 */
export function publicKeyFromConfig(entry: string, what = 'admission.keys', hint = 'list base64 Ed25519 public keys or key file paths'): Uint8Array {
  const b64 = /^[A-Za-z0-9+/]{43}=$/;
  if (b64.test(entry.trim())) return new Uint8Array(Buffer.from(entry.trim(), 'base64'));
  let text: string;
  try {
    text = readFileSync(entry, 'utf8');
  } catch (e) {
    throw new ConfigError(`config error: ${what}: "${entry}" is neither a base64 public key nor a readable file (${(e as NodeJS.ErrnoException).code ?? String(e)})`, hint);
  }
  return publicKeyFromText(text, what === 'admission.keys' ? entry : `${what} (${entry})`);
}

/** A key file's publicKey, or a bare base64 public key; throws a one-line ConfigError naming `what`. */
export function publicKeyFromText(text: string, what: string): Uint8Array {
  const b64 = /^[A-Za-z0-9+/]{43}=$/;
  const t = text.trim();
  if (b64.test(t)) return new Uint8Array(Buffer.from(t, 'base64'));
  let doc: unknown;
  try {
    doc = JSON.parse(t);
  } catch {
    doc = null;
  }
  const pk = typeof doc === 'object' && doc !== null ? (doc as Record<string, unknown>).publicKey : undefined;
  if (typeof pk !== 'string' || !b64.test(pk)) {
    throw new ConfigError(`${what} holds no public key (expected a realmnet key file with "publicKey", or one base64 line)`, 'make keys with `realmnet keygen --out FILE`');
  }
  return new Uint8Array(Buffer.from(pk, 'base64'));
}
