import { chmodSync, copyFileSync, existsSync, mkdirSync, readFileSync, statSync } from 'node:fs';
import { basename, join } from 'node:path';
import type Database from 'better-sqlite3';
import { loadKeyPair } from '../shared/keyfile.ts';
import type { KeyPair } from '../shared/crypto/ed25519.ts';
import { SystemError, UsageError } from '../shared/errors.ts';
import { HostId, deriveHostId, parseHostId, type Prefix } from '../shared/ids.ts';
import { formatToken, mintToken } from '../shared/membership.ts';
import { publicKeyFromText } from './admission.ts';
import type { RmConfig } from './config.ts';
import { Realm } from './realm.ts';
import { openStoreDatabase } from './store/schema.ts';
import { prepareWriteMember, readMember, readMembers, type MemberRow } from './store/members.ts';

/**
 * The operator's side of membership (docs/security.md, "Operator's steps"): what `realmnet rm
 * invite | admit | revoke | members | key` do, as functions of a loaded RM config so that tests call
 * them without a process.
 *
 * invite and key need only the RM's key file (a token's secret is recomputed by the RM from its key:
 * no state, no running RM). admit, revoke and members open the RM's SQLite store directly (WAL, busy
 * timeout): the running RM notices the change within a second (PRAGMA data_version) and applies it.
 */

/** The RM key, which must exist: these commands never create one (the RM would then not know it). */
export function rmKeyOf(config: RmConfig): KeyPair {
  if (!existsSync(config.key)) {
    throw new UsageError(`the RM key file ${config.key} does not exist`, 'start the RM once (`realmnet rm --config rm.yaml` creates it) or point "key" in the config at it');
  }
  return loadKeyPair(config.key);
}

/** The realm's prefix, or a sub-realm's by name. */
export function prefixFor(config: RmConfig, sub: string | undefined): Prefix {
  const realm = Realm.fromConfig(config);
  if (sub === undefined) return realm.prefix;
  const s = realm.subRealms.find((x) => x.name === sub);
  if (s === undefined) {
    const names = realm.subRealms.map((x) => x.name);
    throw new UsageError(`--sub ${sub}: no such sub-realm in the config`, names.length === 0 ? 'the config has no subRealms' : `sub-realms: ${names.join(', ')}`);
  }
  return s.prefix;
}

/** "24h", "90m", "3600s", "7d" or plain seconds → seconds. */
export function parseDuration(text: string): number {
  const m = /^(\d+)\s*([smhd]?)$/.exec(text.trim());
  if (m === null || Number(m[1]) === 0) throw new UsageError(`--ttl ${text}: not a duration`, 'e.g. 24h, 90m, 7d, 3600 (seconds)');
  const n = Number(m[1]) * ({ '': 1, s: 1, m: 60, h: 3600, d: 86_400 } as const)[m[2] as '' | 's' | 'm' | 'h' | 'd'];
  if (n > 365 * 86_400) throw new UsageError(`--ttl ${text}: longer than a year`, 'a join token should be short-lived: hours or days');
  return n;
}

export interface Invite {
  readonly token: string;
  readonly prefix: string;
  /** ISO time. */
  readonly expiresAt: string;
}

/** One-time join tokens (stateless: each carries a secret only the RM's key recomputes). */
export function invite(config: RmConfig, o: { ttlS: number; sub?: string; count: number; nowMs?: number }): Invite[] {
  if (!Number.isInteger(o.count) || o.count < 1 || o.count > 10_000) throw new UsageError(`--count ${o.count}: must be 1..10000`);
  const key = rmKeyOf(config);
  const prefix = prefixFor(config, o.sub);
  const expiresAt = Math.floor((o.nowMs ?? Date.now()) / 1000) + o.ttlS;
  return Array.from({ length: o.count }, () => ({
    token: formatToken(mintToken(key, prefix, expiresAt)),
    prefix: prefix.toString(),
    expiresAt: new Date(expiresAt * 1000).toISOString(),
  }));
}

/** What an operator pastes into the host's agent config, for the hint invite prints. */
export function inviteHint(config: RmConfig, token: string): string {
  const addr = config.listen.map((l) => (typeof l === 'string' ? l : l.address)).find((a) => a !== '0.0.0.0' && a !== '::') ?? 'RM-ADDRESS';
  return `# in the host's agent config (the token pins the RM's key and names the prefix; used once):
rm:
  servers: [{ address: ${addr}, port: ${config.port} }]
  join: ${token}
identity:
  key: /etc/realmnet/host.key   # realmnet keygen --out /etc/realmnet/host.key
`;
}

export interface MemberInfo {
  readonly hostId: string;
  readonly publicKey: string;
  readonly prefixLen: number;
  readonly admittedAt: string;
  readonly revokedAt: string | null;
  readonly via: string;
}

function info(r: MemberRow): MemberInfo {
  return {
    hostId: parseHostIdBytes(r.id),
    publicKey: Buffer.from(r.publicKey).toString('base64'),
    prefixLen: r.prefixLen,
    admittedAt: new Date(r.admittedAt * 1000).toISOString(),
    revokedAt: r.revokedAt === null ? null : new Date(r.revokedAt * 1000).toISOString(),
    via: r.via,
  };
}

function parseHostIdBytes(b: Uint8Array): string {
  return HostId.fromBytes(b).toString();
}

function withStore<T>(config: RmConfig, f: (db: Database) => T): T {
  const db = openStoreDatabase(config.store.path, config.store.synchronous);
  try {
    return f(db);
  } finally {
    db.close();
  }
}

/**
 * Admits a public key (a key file's "publicKey", or base64) under the realm or sub-realm prefix. A
 * revoked member is admitted again. Returns the member.
 */
export function admit(config: RmConfig, o: { publicKey: Uint8Array; sub?: string; nowMs?: number }): MemberInfo & { already: boolean } {
  const prefix = prefixFor(config, o.sub);
  const id = deriveHostId(prefix, o.publicKey);
  return withStore(config, (db) => {
    const held = readMember(db, id.toBytes());
    if (held !== undefined && held.revokedAt === null) return { ...info(held), already: true };
    const row: MemberRow = {
      id: id.toBytes(),
      publicKey: o.publicKey,
      prefixLen: prefix.length,
      admittedAt: Math.floor((o.nowMs ?? Date.now()) / 1000),
      revokedAt: null,
      previousKey: held?.previousKey ?? null,
      via: 'admit',
    };
    db.transaction(() => prepareWriteMember(db)(row))();
    return { ...info(row), already: false };
  });
}

/** The public key an `admit` names: --key FILE (only "publicKey" is read) or --public-key B64. */
export function publicKeyArg(o: { key?: string; publicKey?: string }): Uint8Array {
  if ((o.key === undefined) === (o.publicKey === undefined)) throw new UsageError('give exactly one of --key FILE and --public-key BASE64');
  if (o.publicKey !== undefined) {
    if (!/^[A-Za-z0-9+/]{43}=$/.test(o.publicKey.trim())) throw new UsageError(`--public-key: "${o.publicKey}" is not a base64 Ed25519 public key (32 bytes, 44 characters)`, 'copy "publicKey" from the host key file');
    return new Uint8Array(Buffer.from(o.publicKey.trim(), 'base64'));
  }
  let text: string;
  try {
    text = readFileSync(o.key as string, 'utf8');
  } catch (e) {
    throw new UsageError(`--key ${o.key}: cannot read it (${(e as NodeJS.ErrnoException).code ?? String(e)})`);
  }
  try {
    return publicKeyFromText(text, `--key ${o.key}`);
  } catch (e) {
    throw new UsageError((e as Error).message, 'a realmnet key file (`realmnet keygen`) or a file with the base64 public key');
  }
}

/** Revokes a member: the running RM ends its sessions and tells its followers within a second. */
export function revoke(config: RmConfig, o: { hostId: string; nowMs?: number }): MemberInfo {
  let id;
  try {
    id = parseHostId(o.hostId);
  } catch (e) {
    throw new UsageError(`--id ${o.hostId}: ${(e as Error).message}`, 'give the host ID as `realmnet rm members` lists it');
  }
  return withStore(config, (db) => {
    const held = readMember(db, id.toBytes());
    if (held === undefined) throw new UsageError(`${id.toString()} is not a member of this realm`, 'see `realmnet rm members`');
    if (held.revokedAt !== null) return info(held);
    const row = { ...held, revokedAt: Math.floor((o.nowMs ?? Date.now()) / 1000) };
    db.transaction(() => prepareWriteMember(db)(row))();
    return info(row);
  });
}

export function members(config: RmConfig): MemberInfo[] {
  return withStore(config, (db) => readMembers(db).map(info)).sort((a, b) => a.admittedAt.localeCompare(b.admittedAt));
}

export function formatMembers(list: readonly MemberInfo[]): string {
  if (list.length === 0) return 'no members (admit hosts with `realmnet rm invite` or `realmnet rm admit`)\n';
  const rows = list.map((m) => [m.hostId, `/${m.prefixLen}`, m.admittedAt.replace(/\.\d+Z$/, 'Z'), m.revokedAt === null ? 'member' : `revoked ${m.revokedAt.replace(/\.\d+Z$/, 'Z')}`, m.via]);
  const head = ['HOST ID', 'PREFIX', 'ADMITTED', 'STATE', 'VIA'];
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (r: readonly string[]) => r.map((c, i) => c.padEnd(w[i])).join('  ').trimEnd() + '\n';
  return line(head) + rows.map(line).join('');
}

export interface BackupResult {
  readonly dir: string;
  readonly key: string;
  readonly store: string;
  readonly bindings: number;
  readonly members: number;
}

/**
 * `realmnet rm backup`: a consistent copy of what a realm cannot lose, taken while the RM runs: its
 * key (the realm's identity: every agent pins it) and its store (members, bindings, spent invites)
 * through SQLite's online backup, which copies a consistent snapshot even while the RM commits (a
 * plain `cp` of a WAL database can catch it half-written). Files are 0600 in a 0700 directory.
 */
export async function backup(config: RmConfig, outDir: string): Promise<BackupResult> {
  rmKeyOf(config);
  if (config.store.path === ':memory:') throw new UsageError('store.path is :memory:: there is no store to back up', 'give the RM a store file (store.path)');
  if (!existsSync(config.store.path)) throw new UsageError(`the store ${config.store.path} does not exist`, 'start the RM once, or point store.path at it');
  if (existsSync(outDir) && !statSync(outDir).isDirectory()) throw new UsageError(`--out ${outDir} is a file`, 'give a directory (created if missing)');
  mkdirSync(outDir, { recursive: true, mode: 0o700 });
  chmodSync(outDir, 0o700);
  const key = join(outDir, basename(config.key));
  const store = join(outDir, basename(config.store.path));
  if (existsSync(key) || existsSync(store)) throw new UsageError(`${outDir} already holds a backup (${basename(config.key)} or ${basename(config.store.path)})`, 'give a new directory, e.g. one named by the date');
  copyFileSync(config.key, key);
  chmodSync(key, 0o600);
  const db = openStoreDatabase(config.store.path, config.store.synchronous);
  try {
    await db.backup(store);
  } catch (e) {
    throw new SystemError('STORE_FAILED', `backing up ${config.store.path} failed: ${e instanceof Error ? e.message : String(e)}`, 'check the disk space and permissions of --out');
  } finally {
    db.close();
  }
  chmodSync(store, 0o600);
  const copy = openStoreDatabase(store, 'normal');
  try {
    const count = (table: string) => (copy.prepare(`SELECT count(*) AS n FROM ${table}`).get() as { n: number }).n;
    return { dir: outDir, key, store, bindings: count('bindings'), members: count('members') };
  } finally {
    copy.close();
  }
}
