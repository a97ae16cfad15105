import Database from 'better-sqlite3';
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import type { Clock } from '../../shared/clock.ts';
import type { Logger } from '../../shared/log.ts';
import { RealmnetError } from '../../shared/errors.ts';
import type { LocatorPref } from '../../shared/wire/messages.ts';

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
 *    rejecting replays of older bindings after the binding itself is gone from memory.
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
   * drop the row (e.g. the ID left the realm after a config change).
   */
  readonly describe: (bytes: Uint8Array) => { ttl: number; prefs: readonly LocatorPref[] } | null;
}

type Done = (err: Error | null) => void;
interface Op {
  readonly key: string;
  readonly prev: StoredBinding | undefined;
  readonly next: StoredBinding | undefined;
  /** 'put' writes the whole row; 'refresh' only expires_at; 'expire' makes the row a tombstone. */
  readonly kind: 'put' | 'refresh' | 'expire';
  readonly done: Done | null;
}

export interface StoreCounters {
  commits: number;
  rowsWritten: number;
  commitErrors: number;
  /** Longest time one commit held the event loop, ms. */
  maxCommitMs: number;
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
  private readonly commitBatch: (ops: readonly Op[]) => void;
  readonly counters: StoreCounters = { commits: 0, rowsWritten: 0, commitErrors: 0, maxCommitMs: 0 };

  constructor(private readonly opts: StoreOptions) {
    try {
      if (opts.path !== ':memory:') mkdirSync(dirname(opts.path), { recursive: true });
      this.db = new Database(opts.path);
      this.db.pragma('journal_mode = WAL');
      this.db.pragma(`synchronous = ${opts.synchronous === 'full' ? 'FULL' : 'NORMAL'}`);
      this.db.exec(`CREATE TABLE IF NOT EXISTS bindings (
        id BLOB PRIMARY KEY,
        seq INTEGER NOT NULL,
        bytes BLOB NOT NULL,
        expires_at INTEGER NOT NULL,
        live INTEGER NOT NULL
      ) WITHOUT ROWID`);
      const version = this.db.pragma('user_version', { simple: true });
      if (version === 0) this.db.pragma('user_version = 1');
      else if (version !== 1) throw new Error(`store schema version ${String(version)} is not 1 (written by another realmnet version)`);
    } catch (e) {
      throw new RealmnetError('STORE_FAILED', `cannot open the binding store ${opts.path}: ${(e as Error).message}`, 'check store.path: its directory must be writable', { cause: e });
    }
    this.stUpsert = this.db.prepare(
      `INSERT INTO bindings (id, seq, bytes, expires_at, live) VALUES (?, ?, ?, ?, 1)
       ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, bytes = excluded.bytes, expires_at = excluded.expires_at, live = 1`,
    );
    this.stRefresh = this.db.prepare('UPDATE bindings SET expires_at = ?, live = 1 WHERE id = ? AND seq = ?');
    this.stExpire = this.db.prepare('UPDATE bindings SET live = 0 WHERE id = ? AND seq = ?');
    this.stGet = this.db.prepare<{ seq: number; bytes: Buffer }>('SELECT seq, bytes FROM bindings WHERE id = ?');
    this.commitBatch = this.db.transaction((ops: readonly Op[]) => {
      for (const op of ops) {
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
      this.mem.set(key, new StoredBinding(new Uint8Array(r.bytes), r.seq, r.expires_at, d.ttl, d.prefs));
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
    const next = new StoredBinding(prev.bytes, prev.seq, Math.max(prev.expiresAt, expiresAt), prev.ttl, prev.prefs);
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
