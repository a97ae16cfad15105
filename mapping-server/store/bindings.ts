import type Database from 'better-sqlite3';
import type { Clock } from '../../shared/clock.ts';
import type { Logger } from '../../shared/log.ts';
import type { LocatorPref } from '../../shared/wire/messages.ts';
import type { Member } from './members.ts';
import { openStoreDatabase } from './schema.ts';

/**
 * The binding store: every live binding in memory, SQLite (better-sqlite3, WAL) as the durable
 * journal.
 *
 * 1. Lookups read only the in-memory Map (key: the ID's 16 bytes as a latin1 string, value: a small
 *    record holding the signed wire bytes): SQLite is never on the lookup path.
 * 2. Writes update memory at once (so the next registration's sequence check sees them) and queue a
 *    journal row. Rows that arrive within batchWindowMs (or batchMax rows) share one transaction;
 *    after it commits, each write's `done` runs: that is when the RM acknowledges (group commit).
 *    If a commit fails, memory is rolled back and every `done` gets the error.
 * 3. Expired registrations stay in SQLite as tombstones (live = 0): their sequence number keeps
 *    rejecting replays of older bindings after the binding itself is gone from memory. They are
 *    deleted (gc(), in bounded batches) once they are older than a day plus the registration
 *    expiry, so the table does not grow with every key ever seen (docs/security.md, decision 5).
 * 4. Other durable writes of the RM (members, used invites: store/members.ts) share the same group
 *    commit through journal(): one transaction, one fsync, and their callers answer after it.
 *
 * synchronous=FULL (default): the WAL is fsynced at each commit, so an acknowledged registration
 * survives power loss; NORMAL only survives a process crash (kill -9). One fsync per batch, not per
 * registration, keeps FULL affordable. The commit runs on the event loop (better-sqlite3 is
 * synchronous): a batch stalls lookups for one fsync, which is why batches are capped.
 */
export class StoredBinding {
  constructor(
    /** The signed wire form, as the host sent it. */
    readonly bytes: Uint8Array,
    readonly seq: number,
    /** Clock ms after which the registration is gone unless refreshed. */
    readonly expiresAt: number,
    /** Seconds the binding may be cached (from the binding). */
    readonly ttl: number,
    /** Realm policy on its locators (policy.ts), computed when stored. */
    readonly prefs: readonly LocatorPref[],
    /**
     * The host's member record (its certificate goes with every answer), so the lookup path needs
     * no second map lookup; null when the loader did not know it (then the RM looks it up).
     */
    readonly member: Member | null = null,
  ) {}
}

export interface StoreOptions {
  /** File path, or ':memory:' for tests. */
  readonly path: string;
  readonly synchronous: 'full' | 'normal';
  readonly batchWindowMs: number;
  readonly batchMax: number;
  readonly clock: Clock;
  readonly log: Logger;
  /**
   * Called for every live row at open(): turns stored bytes into a record's ttl and prefs, or null to
   * drop the row (e.g. the ID left the realm after a config change, or its host is no member).
   */
  readonly describe: (bytes: Uint8Array) => { ttl: number; prefs: readonly LocatorPref[]; member?: Member } | null;
}

type Done = (err: Error | null) => void;
interface BindingOp {
  readonly key: string;
  readonly prev: StoredBinding | undefined;
  readonly next: StoredBinding | undefined;
  /** 'put' writes the whole row; 'refresh' only expires_at; 'expire' makes the row a tombstone. */
  readonly kind: 'put' | 'refresh' | 'expire';
  readonly done: Done | null;
}
/** Another table's write in the same transaction (journal()); its caller undoes its own memory on error. */
interface OtherOp {
  readonly kind: 'other';
  readonly write: () => void;
  readonly done: Done | null;
}
type Op = BindingOp | OtherOp;

export interface StoreCounters {
  commits: number;
  rowsWritten: number;
  commitErrors: number;
  /** Longest time one commit held the event loop, ms. */
  maxCommitMs: number;
  /** Tombstones and spent invites deleted by gc(). */
  tombstonesDeleted: number;
  invitesDeleted: number;
}

export class BindingStore {
  private readonly db: Database;
  private readonly mem = new Map<string, StoredBinding>();
  private pending: Op[] = [];
  private timer: NodeJS.Timeout | null = null;
  private closed = false;
  private readonly stUpsert;
  private readonly stRefresh;
  private readonly stExpire;
  private readonly stGet;
  private readonly stGcTombstones;
  private readonly stGcInvites;
  private readonly stAnyTombstone;
  private readonly stAnyInvite;
  private readonly commitBatch: (ops: readonly Op[]) => void;
  readonly counters: StoreCounters = { commits: 0, rowsWritten: 0, commitErrors: 0, maxCommitMs: 0, tombstonesDeleted: 0, invitesDeleted: 0 };

  constructor(private readonly opts: StoreOptions) {
    this.db = openStoreDatabase(opts.path, opts.synchronous);
    this.stUpsert = this.db.prepare(
      `INSERT INTO bindings (id, seq, bytes, expires_at, live) VALUES (?, ?, ?, ?, 1)
       ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, bytes = excluded.bytes, expires_at = excluded.expires_at, live = 1`,
    );
    this.stRefresh = this.db.prepare('UPDATE bindings SET expires_at = ?, live = 1 WHERE id = ? AND seq = ?');
    this.stExpire = this.db.prepare('UPDATE bindings SET live = 0 WHERE id = ? AND seq = ?');
    this.stGet = this.db.prepare<{ seq: number; bytes: Buffer }>('SELECT seq, bytes FROM bindings WHERE id = ?');
    this.stGcTombstones = this.db.prepare('DELETE FROM bindings WHERE id IN (SELECT id FROM bindings WHERE live = 0 AND expires_at < ? LIMIT ?)');
    this.stGcInvites = this.db.prepare('DELETE FROM invites_used WHERE invite_id IN (SELECT invite_id FROM invites_used WHERE expires_at < ? LIMIT ?)');
    this.stAnyTombstone = this.db.prepare('SELECT 1 FROM bindings WHERE live = 0 AND expires_at < ? LIMIT 1');
    this.stAnyInvite = this.db.prepare('SELECT 1 FROM invites_used WHERE expires_at < ? LIMIT 1');
    this.commitBatch = this.db.transaction((ops: readonly Op[]) => {
      for (const op of ops) {
        if (op.kind === 'other') {
          op.write();
          continue;
        }
        const id = Buffer.from(op.key, 'latin1');
        if (op.kind === 'put' && op.next) this.stUpsert.run(id, op.next.seq, op.next.bytes, Math.round(op.next.expiresAt));
        else if (op.kind === 'refresh' && op.next) this.stRefresh.run(Math.round(op.next.expiresAt), id, op.next.seq);
        else if (op.kind === 'expire' && op.prev) this.stExpire.run(id, op.prev.seq);
      }
    });
  }

  /** Loads every live, unexpired row into memory. Returns how many. */
  load(): number {
    const now = this.opts.clock.now();
    const rows = this.db.prepare<{ id: Buffer; seq: number; bytes: Buffer; expires_at: number }>(
      'SELECT id, seq, bytes, expires_at FROM bindings WHERE live = 1',
    );
    const gone: string[] = [];
    for (const r of rows.iterate()) {
      const key = r.id.toString('latin1');
      const d = r.expires_at > now ? this.opts.describe(r.bytes) : null;
      if (d === null) {
        gone.push(key);
        continue;
      }
      this.mem.set(key, new StoredBinding(new Uint8Array(r.bytes), r.seq, r.expires_at, d.ttl, d.prefs, d.member ?? null));
    }
    if (gone.length > 0) {
      const expire = this.db.prepare('UPDATE bindings SET live = 0 WHERE id = ?');
      this.db.transaction(() => {
        for (const k of gone) expire.run(Buffer.from(k, 'latin1'));
      })();
    }
    return this.mem.size;
  }

  get size(): number {
    return this.mem.size;
  }

  /** Hot path: the live binding for key (the ID's 16 bytes as latin1). */
  get(key: string): StoredBinding | undefined {
    return this.mem.get(key);
  }

  /**
   * The last binding ever stored for key, live or expired, for the sequence check. Only IDs not in
   * memory touch SQLite here (a registration path, never a lookup path).
   */
  held(key: string): { seq: number; bytes: Uint8Array } | undefined {
    const m = this.mem.get(key);
    if (m !== undefined) return m;
    const row = this.stGet.get(Buffer.from(key, 'latin1'));
    return row === undefined ? undefined : { seq: row.seq, bytes: row.bytes };
  }

  /** Stores a new binding; done(null) after the commit that makes it durable. */
  put(key: string, rec: StoredBinding, done: Done): void {
    const prev = this.mem.get(key);
    // Memory first: enqueue() may commit at once (full batch) and run done before returning.
    this.mem.set(key, rec);
    this.enqueue({ key, prev, next: rec, kind: 'put', done });
  }

  /** Extends the registration of the binding held now (same bytes); done after commit. */
  refresh(key: string, expiresAt: number, done: Done): void {
    const prev = this.mem.get(key);
    if (prev === undefined) {
      done(new Error('nothing to refresh'));
      return;
    }
    const next = new StoredBinding(prev.bytes, prev.seq, Math.max(prev.expiresAt, expiresAt), prev.ttl, prev.prefs, prev.member);
    this.mem.set(key, next);
    this.enqueue({ key, prev, next, kind: 'refresh', done });
  }

  /** Drops an expired registration from memory; its row becomes a tombstone. */
  expire(key: string): void {
    const prev = this.mem.get(key);
    if (prev === undefined) return;
    this.mem.delete(key);
    this.enqueue({ key, prev, next: undefined, kind: 'expire', done: null });
  }

  /**
   * A write to another table of the store (members, used invites) in the next group commit;
   * done(null) once durable, done(err) if the commit failed (nothing of it was written).
   */
  journal(write: () => void, done: Done): void {
    this.enqueue({ kind: 'other', write, done });
  }

  /** The SQLite connection, for the other tables' prepared statements (store/members.ts). */
  get database(): Database {
    return this.db;
  }

  /**
   * Deletes at most `batch` tombstones that expired before cutoffMs and at most `batch` used invites
   * that expired before nowS, in the next group commit (bounded work per sweep tick).
   */
  gc(cutoffMs: number, nowS: number, batch: number): void {
    // Two index seeks first: an idle store must not pay a commit (an fsync) every tick for nothing.
    if (this.stAnyTombstone.get(Math.floor(cutoffMs)) === undefined && this.stAnyInvite.get(Math.floor(nowS)) === undefined) return;
    this.journal(() => {
      this.counters.tombstonesDeleted += this.stGcTombstones.run(Math.floor(cutoffMs), batch).changes;
      this.counters.invitesDeleted += this.stGcInvites.run(Math.floor(nowS), batch).changes;
    }, () => undefined);
  }

  /** Live entries, for the expiry sweep (safe to expire() while iterating). */
  entries(): IterableIterator<[string, StoredBinding]> {
    return this.mem.entries();
  }

  /** Commits whatever is queued, now. */
  flush(): void {
    if (this.timer !== null) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    if (this.pending.length === 0 || this.closed) return;
    const ops = this.pending;
    this.pending = [];
    const t0 = performance.now();
    try {
      this.commitBatch(ops);
    } catch (e) {
      this.counters.commitErrors++;
      this.opts.log.error({ err: (e as Error).message, rows: ops.length }, 'store commit failed; registrations in it are not acknowledged');
      // Undo in reverse so that several ops on one key restore the oldest state.
      for (let i = ops.length - 1; i >= 0; i--) {
        const op = ops[i];
        if (op.kind === 'other') continue;
        const cur = this.mem.get(op.key);
        if (cur === op.next) {
          if (op.prev === undefined) this.mem.delete(op.key);
          else this.mem.set(op.key, op.prev);
        }
      }
      const err = e instanceof Error ? e : new Error(String(e));
      for (const op of ops) op.done?.(err);
      return;
    }
    const ms = performance.now() - t0;
    this.counters.commits++;
    this.counters.rowsWritten += ops.length;
    if (ms > this.counters.maxCommitMs) this.counters.maxCommitMs = ms;
    for (const op of ops) op.done?.(null);
  }

  close(): void {
    if (this.closed) return;
    this.flush();
    this.closed = true;
    this.db.close();
  }

  private enqueue(op: Op): void {
    if (this.closed) {
      op.done?.(new Error('store is closed'));
      return;
    }
    this.pending.push(op);
    if (this.pending.length >= this.opts.batchMax) {
      this.flush();
      return;
    }
    if (this.timer === null) {
      this.timer = setTimeout(() => {
        this.timer = null;
        this.flush();
      }, this.opts.batchWindowMs);
    }
  }
}
