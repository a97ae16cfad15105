import Database from 'better-sqlite3';
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { RealmnetError } from '../../shared/errors.ts';

/**
 * The RM's SQLite file: one schema, opened the same way by the running RM (store/bindings.ts) and by
 * the operator's CLI (admin.ts), which writes the members table while the RM runs.
 *
 *   bindings(id, seq, bytes, expires_at, live)      the journal of registrations (live = 0: tombstone)
 *   members(id, public_key, prefix_len, admitted_at, revoked_at, previous_key, via)
 *   invites_used(invite_id, expires_at)             join tokens already spent (kept until they expire)
 *   groups(id, seq, bytes)                          user and data bindings (slice 2), the newest of each
 *   serves(group_id, host_id, expires_at)           hosts' consent to serve a user or data ID
 *
 * WAL lets the CLI write while the RM reads; busy_timeout makes either side wait for the other's
 * short transaction instead of failing with SQLITE_BUSY. Schema version 2 added the members and
 * invites tables (version 1 files are upgraded in place; they had no members, so every host of an
 * upgraded realm must be admitted); version 3 the groups and serves tables (slice 2; added in place).
 */
export const SCHEMA_VERSION = 3;
/** How long a writer waits for the other process's transaction, ms. */
const BUSY_TIMEOUT_MS = 5_000;

export function openStoreDatabase(path: string, synchronous: 'full' | 'normal'): Database {
  try {
    if (path !== ':memory:') mkdirSync(dirname(path), { recursive: true });
    const db = new Database(path);
    db.pragma('journal_mode = WAL');
    db.pragma(`busy_timeout = ${BUSY_TIMEOUT_MS}`);
    db.pragma(`synchronous = ${synchronous === 'full' ? 'FULL' : 'NORMAL'}`);
    const version = db.pragma('user_version', { simple: true });
    if (version !== 0 && version !== 1 && version !== 2 && version !== SCHEMA_VERSION) {
      throw new Error(`store schema version ${String(version)} is not ${SCHEMA_VERSION} (written by another realmnet version)`);
    }
    db.transaction(() => {
      db.exec(`CREATE TABLE IF NOT EXISTS bindings (
        id BLOB PRIMARY KEY,
        seq INTEGER NOT NULL,
        bytes BLOB NOT NULL,
        expires_at INTEGER NOT NULL,
        live INTEGER NOT NULL
      ) WITHOUT ROWID`);
      // The tombstone sweep finds its rows through this (partial) index, never by a table scan.
      db.exec('CREATE INDEX IF NOT EXISTS bindings_tombstones ON bindings (expires_at) WHERE live = 0');
      db.exec(`CREATE TABLE IF NOT EXISTS members (
        id BLOB PRIMARY KEY,
        public_key BLOB NOT NULL,
        prefix_len INTEGER NOT NULL,
        admitted_at INTEGER NOT NULL,
        revoked_at INTEGER,
        previous_key BLOB,
        via TEXT NOT NULL
      ) WITHOUT ROWID`);
      db.exec(`CREATE TABLE IF NOT EXISTS invites_used (
        invite_id BLOB PRIMARY KEY,
        expires_at INTEGER NOT NULL
      ) WITHOUT ROWID`);
      db.exec('CREATE INDEX IF NOT EXISTS invites_used_expiry ON invites_used (expires_at)');
      db.exec(`CREATE TABLE IF NOT EXISTS groups (
        id BLOB PRIMARY KEY,
        seq INTEGER NOT NULL,
        bytes BLOB NOT NULL
      ) WITHOUT ROWID`);
      db.exec(`CREATE TABLE IF NOT EXISTS serves (
        group_id BLOB NOT NULL,
        host_id BLOB NOT NULL,
        expires_at INTEGER NOT NULL,
        PRIMARY KEY (group_id, host_id)
      ) WITHOUT ROWID`);
      db.pragma(`user_version = ${SCHEMA_VERSION}`);
    })();
    return db;
  } catch (e) {
    throw new RealmnetError('STORE_FAILED', `cannot open the RM store ${path}: ${(e as Error).message}`, 'check store.path: its directory must be writable', { cause: e });
  }
}
