import type Database from 'better-sqlite3';
import { HostId, idKey } from '../../shared/ids.ts';
import type { Certificate } from '../../shared/membership.ts';

/**
 * The realm's members (docs/security.md, decision 1): host ID → pinned public key, prefix length,
 * admitted at, revoked at. SQLite holds them (store/schema.ts); the RM keeps them all in memory
 * (MemberTable), where the HELLO check and every answer's certificate read them.
 *
 * Two writers: the running RM (a join, a config key, an open-mode host) writes through the binding
 * store's group commit, so a join is acknowledged only once durable; the operator's CLI (another
 * process) writes the file directly, and the RM notices through `PRAGMA data_version` (which changes
 * only when another connection commits: one cheap call a second) and re-reads the table.
 */

/** Unix seconds. */
export interface MemberRow {
  readonly id: Uint8Array;
  readonly publicKey: Uint8Array;
  readonly prefixLen: number;
  readonly admittedAt: number;
  readonly revokedAt: number | null;
  readonly previousKey: Uint8Array | null;
  /** How it became a member: token, admit (CLI), config (admission.keys), open (admission.open). */
  readonly via: string;
}

/**
 * One record per member ID, for the RM's lifetime: stored bindings keep a reference to it (so an
 * answer finds the host's certificate without a second map lookup), and a change (a new certificate,
 * a revocation, a re-admission) is written into this record rather than replacing it, so those
 * references never go stale.
 */
export class Member {
  readonly id: HostId;
  /** The certificate served now; null until the first is issued, and after revocation. */
  cert: Certificate | null = null;
  /** Unix seconds after which a fresh certificate is issued (a third of the current one's life). */
  certRenewAt = 0;

  constructor(
    id: HostId,
    public publicKey: Uint8Array,
    public prefixLen: number,
    public admittedAt: number,
    public revokedAt: number | null,
    public previousKey: Uint8Array | null,
    public via: string,
  ) {
    this.id = id;
  }

  get key(): string {
    return this.id.key;
  }

  /** A member now: admitted and not revoked. */
  get active(): boolean {
    return this.revokedAt === null;
  }

  static fromRow(r: MemberRow): Member {
    return new Member(HostId.fromBytes(r.id), Uint8Array.from(r.publicKey), r.prefixLen, r.admittedAt, r.revokedAt, r.previousKey === null ? null : Uint8Array.from(r.previousKey), r.via);
  }

  row(): MemberRow {
    return { id: this.id.toBytes(), publicKey: this.publicKey, prefixLen: this.prefixLen, admittedAt: this.admittedAt, revokedAt: this.revokedAt, previousKey: this.previousKey, via: this.via };
  }
}

// ---- rows (used by the RM's journal and by the CLI) ------------------------------------------------

interface RawMember {
  id: Buffer;
  public_key: Buffer;
  prefix_len: number;
  admitted_at: number;
  revoked_at: number | null;
  previous_key: Buffer | null;
  via: string;
}

export function readMembers(db: Database): MemberRow[] {
  return db
    .prepare<RawMember>('SELECT id, public_key, prefix_len, admitted_at, revoked_at, previous_key, via FROM members')
    .all()
    .map((r) => ({ id: r.id, publicKey: r.public_key, prefixLen: r.prefix_len, admittedAt: r.admitted_at, revokedAt: r.revoked_at, previousKey: r.previous_key, via: r.via }));
}

export function readMember(db: Database, id: Uint8Array): MemberRow | undefined {
  const r = db.prepare<RawMember>('SELECT id, public_key, prefix_len, admitted_at, revoked_at, previous_key, via FROM members WHERE id = ?').get(Buffer.from(id));
  return r === undefined ? undefined : { id: r.id, publicKey: r.public_key, prefixLen: r.prefix_len, admittedAt: r.admitted_at, revokedAt: r.revoked_at, previousKey: r.previous_key, via: r.via };
}

/**
 * Writes a member row (insert, or re-admission: revoked_at cleared). A re-admission with another key
 * keeps the old one as previous_key, which the next certificate names (docs/security.md, decision 3).
 */
export function prepareWriteMember(db: Database): (m: MemberRow) => void {
  const st = db.prepare(
    `INSERT INTO members (id, public_key, prefix_len, admitted_at, revoked_at, previous_key, via) VALUES (?, ?, ?, ?, ?, ?, ?)
     ON CONFLICT (id) DO UPDATE SET public_key = excluded.public_key, prefix_len = excluded.prefix_len, admitted_at = excluded.admitted_at,
       revoked_at = excluded.revoked_at, previous_key = excluded.previous_key, via = excluded.via`,
  );
  return (m) => void st.run(Buffer.from(m.id), Buffer.from(m.publicKey), m.prefixLen, m.admittedAt, m.revokedAt, m.previousKey === null ? null : Buffer.from(m.previousKey), m.via);
}

export function prepareUseInvite(db: Database): (inviteId: Uint8Array, expiresAt: number) => void {
  const st = db.prepare('INSERT INTO invites_used (invite_id, expires_at) VALUES (?, ?)');
  return (inviteId, expiresAt) => void st.run(Buffer.from(inviteId), expiresAt);
}

export function readUsedInvites(db: Database): string[] {
  return db
    .prepare<{ invite_id: Buffer }>('SELECT invite_id FROM invites_used')
    .all()
    .map((r) => r.invite_id.toString('hex'));
}

// ---- in memory --------------------------------------------------------------------------------------

export interface MemberChanges {
  readonly added: readonly Member[];
  readonly revoked: readonly Member[];
  /** Re-admitted (after a revocation) or admitted again with another key. */
  readonly readmitted: readonly Member[];
}

/** Every member, by idKey. The RM's only copy in memory; SQLite is the durable one. */
export class MemberTable {
  private readonly byKey = new Map<string, Member>();
  private dataVersion: number;

  constructor(private readonly db: Database) {
    this.dataVersion = this.currentDataVersion();
  }

  /** Loads every row. Returns how many. */
  load(): number {
    for (const r of readMembers(this.db)) {
      const m = Member.fromRow(r);
      this.byKey.set(m.key, m);
    }
    return this.byKey.size;
  }

  get size(): number {
    return this.byKey.size;
  }

  /** Active members (not revoked). */
  activeCount(): number {
    let n = 0;
    for (const m of this.byKey.values()) if (m.active) n++;
    return n;
  }

  get(key: string): Member | undefined {
    return this.byKey.get(key);
  }

  getId(id: Uint8Array): Member | undefined {
    return this.byKey.get(idKey(id));
  }

  /** After a durable write (or for a member kept only in memory, admission.open). */
  set(m: Member): void {
    this.byKey.set(m.key, m);
  }

  values(): IterableIterator<Member> {
    return this.byKey.values();
  }

  /**
   * Whether another process (the CLI) committed since the last call; then the table is re-read and
   * the differences are applied to the records in place and returned. Cheap when nothing changed:
   * one pragma.
   */
  poll(): MemberChanges | null {
    const v = this.currentDataVersion();
    if (v === this.dataVersion) return null;
    this.dataVersion = v;
    const added: Member[] = [];
    const revoked: Member[] = [];
    const readmitted: Member[] = [];
    for (const r of readMembers(this.db)) {
      const k = idKey(r.id);
      const held = this.byKey.get(k);
      if (held === undefined) {
        const m = Member.fromRow(r);
        this.byKey.set(k, m);
        added.push(m);
        continue;
      }
      const keyChanged = !Buffer.from(held.publicKey).equals(Buffer.from(r.publicKey));
      if (held.active && r.revokedAt !== null) {
        held.revokedAt = r.revokedAt;
        held.cert = null;
        revoked.push(held);
      } else if ((!held.active && r.revokedAt === null) || keyChanged) {
        held.publicKey = Uint8Array.from(r.publicKey);
        held.prefixLen = r.prefixLen;
        held.previousKey = r.previousKey === null ? null : Uint8Array.from(r.previousKey);
        held.revokedAt = r.revokedAt;
        held.admittedAt = r.admittedAt;
        held.via = r.via;
        held.cert = null;
        readmitted.push(held);
      }
    }
    return { added, revoked, readmitted };
  }

  private currentDataVersion(): number {
    return Number(this.db.pragma('data_version', { simple: true }));
  }
}
