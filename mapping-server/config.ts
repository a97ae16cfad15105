import { z } from 'zod';
import { MSG, isIpAddress, isIpv6Address, isIpv6Prefix, loadConfigFile, parseConfigObject, type DeepReadonly } from '../shared/config.ts';
import { MAX_ID_PREFIX_LEN, parsePrefix, type Prefix } from '../shared/ids.ts';

/**
 * The Realm Manager's configuration: one YAML file, validated once into a frozen object. Every
 * default lives in DEFAULTS; docs/control-protocol.md documents each key and says why
 * the limits are what they are.
 */
export const CONTROL_PORT = 4342;

export const DEFAULTS = {
  port: CONTROL_PORT,
  listen: ['0.0.0.0', '::'],
  key: 'rm.key',
  store: {
    path: 'rm.db',
    /**
     * FULL: an acknowledged registration survives power loss, not only a crash (WAL + NORMAL only
     * survives a crash). Group commit makes it affordable: one fsync per batch, not per binding.
     */
    synchronous: 'full',
    /** Registrations arriving within this window share one transaction (and one fsync). */
    batchWindowMs: 2,
    batchMax: 1024,
  },
  /**
   * LISP's defaults: refresh every 60 s, expire after 180 s without refresh. A session may send
   * 10 REGISTERs/s (burst 20): an agent sends one per uplink session per refresh, and each "newer"
   * one can cost an Ed25519 verify.
   */
  registration: { refreshS: 60, expiryS: 180, perSessionPerS: 10, burst: 20 },
  lookup: { negativeTtlS: 60, maxTtlS: 3600 },
  /**
   * hellosPerS: HELLOs with a valid cookie (each costs ~1 ms of public-key work). perId: sessions of
   * one host ID (an agent has one per uplink; beyond, its least recently seen one is evicted, so a
   * replayed HELLO cannot lock the host out). perPrefix: sessions from one source /24 or /64 (a NAT
   * of a thousand hosts fits; beyond, REJECT busy).
   */
  sessions: { max: 100_000, idleS: 600, hellosPerS: 2_000, perId: 16, perPrefix: 1_024 },
  /** perId: summed over the ID's sessions (perId sessions × perSession would be 65,536). */
  subscriptions: { perSession: 4_096, total: 1_000_000, perId: 16_384 },
  /** perSession: a session over it loses its own oldest pending push, never another's. */
  push: { retransmitMs: 200, maxAttempts: 6, maxPending: 200_000, perSession: 4_096 },
  /**
   * perSessionPerS/sessionBurst: every authenticated message of a session (today's per-address
   * budget, now the session's own). perPrefixPerS/prefixBurst/maxPrefixes: sessionless traffic per
   * source /24 or /64 (two HELLOs per session set-up with the cookie, so a burst of 2,000 lets a
   * prefix of 1,000 agents reconnect at once). repliesPerS: COOKIEs and REJECTs sent in total.
   */
  rateLimit: {
    perSessionPerS: 20_000,
    sessionBurst: 40_000,
    perPrefixPerS: 200,
    prefixBurst: 2_000,
    maxPrefixes: 65_536,
    repliesPerS: 10_000,
  },
  sweep: { intervalMs: 1_000, batch: 50_000 },
  /** Membership (docs/security.md): certificates live a day; nobody is admitted without the operator. */
  admission: { certTtlS: 86_400, open: false },
  log: { level: 'info', format: 'pretty' },
  /**
   * Slice 2 (docs/slice2.md): no user or data prefix, no user or data IDs. maxGroups bounds the user
   * and data bindings held (each up to ~350 bytes, plus up to 8 consents).
   */
  slice2: { maxGroups: 100_000 },
} as const;

const prefix = z.string().refine(isIpv6Prefix, { message: MSG.ipv6Prefix });
const idOrPrefix = z.string().refine((s) => isIpv6Prefix(s) || isIpv6Address(s), { message: 'is not a host ID or an ID prefix (e.g. fd00:1::/32 or fd00:1::a)' });
const listenItem = z.union([
  z.string().refine(isIpAddress, { message: MSG.ip }),
  z.strictObject({ address: z.string().refine(isIpAddress, { message: MSG.ip }), port: z.number().int().min(0).max(65535, MSG.port) }),
]);
const positive = (d: number) => z.number().int().min(1).default(d);

const uplinkPref = z.strictObject({
  /** backup: priority raised to at least 200, so used only when every preferred locator is down; never: marked down. */
  use: z.enum(['normal', 'backup', 'never']).default('normal'),
  priority: z.number().int().min(0).max(255).optional(),
  weight: z.number().int().min(0).max(255).optional(),
});

const lookupRule = z.strictObject({
  /** Who asks: host IDs or ID prefixes (checked against the asker's authenticated host ID). */
  askers: z.array(idOrPrefix).min(1, 'needs at least one asker ID or prefix'),
  /** Whose locators they may learn: host IDs or prefixes inside this realm. */
  targets: z.array(idOrPrefix).min(1, 'needs at least one target ID or prefix'),
});

export const RmConfigSchema = z
  .strictObject({
    realm: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/, 'is not a realm name (letters, digits, "._-", e.g. acme)'),
    prefix: prefix,
    /** Sub-realms this RM serves too: host IDs may be derived under their (longer) prefixes. */
    subRealms: z.array(z.strictObject({ name: z.string().min(1).max(63), prefix })).default([]),
    listen: z.array(listenItem).min(1, 'needs at least one address, e.g. ["0.0.0.0", "::"]').default([...DEFAULTS.listen]),
    port: z.number().int().min(0).max(65535, MSG.port).default(DEFAULTS.port),
    /** The RM's Ed25519 key file (created with mode 0600 if missing); it signs session set-ups. */
    key: z.string().min(1).default(DEFAULTS.key),
    store: z
      .strictObject({
        path: z.string().min(1).default(DEFAULTS.store.path),
        synchronous: z.enum(['full', 'normal']).default(DEFAULTS.store.synchronous),
        batchWindowMs: z.number().min(0).max(1000).default(DEFAULTS.store.batchWindowMs),
        batchMax: positive(DEFAULTS.store.batchMax),
      })
      .prefault({}),
    registration: z
      .strictObject({
        refreshS: positive(DEFAULTS.registration.refreshS),
        expiryS: positive(DEFAULTS.registration.expiryS),
        perSessionPerS: positive(DEFAULTS.registration.perSessionPerS),
        burst: positive(DEFAULTS.registration.burst),
      })
      .prefault({}),
    lookup: z
      .strictObject({ negativeTtlS: positive(DEFAULTS.lookup.negativeTtlS), maxTtlS: positive(DEFAULTS.lookup.maxTtlS) })
      .prefault({}),
    sessions: z
      .strictObject({
        max: positive(DEFAULTS.sessions.max),
        idleS: positive(DEFAULTS.sessions.idleS),
        hellosPerS: positive(DEFAULTS.sessions.hellosPerS),
        perId: positive(DEFAULTS.sessions.perId),
        perPrefix: positive(DEFAULTS.sessions.perPrefix),
      })
      .prefault({}),
    subscriptions: z
      .strictObject({
        perSession: positive(DEFAULTS.subscriptions.perSession),
        total: positive(DEFAULTS.subscriptions.total),
        perId: positive(DEFAULTS.subscriptions.perId),
      })
      .prefault({}),
    push: z
      .strictObject({
        retransmitMs: positive(DEFAULTS.push.retransmitMs),
        maxAttempts: positive(DEFAULTS.push.maxAttempts),
        maxPending: positive(DEFAULTS.push.maxPending),
        perSession: positive(DEFAULTS.push.perSession),
      })
      .prefault({}),
    rateLimit: z
      .strictObject({
        perSessionPerS: positive(DEFAULTS.rateLimit.perSessionPerS),
        sessionBurst: positive(DEFAULTS.rateLimit.sessionBurst),
        perPrefixPerS: positive(DEFAULTS.rateLimit.perPrefixPerS),
        prefixBurst: positive(DEFAULTS.rateLimit.prefixBurst),
        maxPrefixes: positive(DEFAULTS.rateLimit.maxPrefixes),
        repliesPerS: positive(DEFAULTS.rateLimit.repliesPerS),
      })
      .prefault({}),
    sweep: z.strictObject({ intervalMs: positive(DEFAULTS.sweep.intervalMs), batch: positive(DEFAULTS.sweep.batch) }).prefault({}),
    admission: z
      .strictObject({
        /** Lifetime of a membership certificate; agents renew it after a third of it. */
        certTtlS: z.number().int().min(60, 'must be at least 60 s').max(30 * 86_400, 'must be at most 30 days').default(DEFAULTS.admission.certTtlS),
        /**
         * Hosts admitted at start under the realm prefix: base64 Ed25519 public keys or paths of key
         * files (only "publicKey" is read). Handy for testbeds; `realmnet rm admit` is the operator's way.
         */
        keys: z.array(z.string().min(1, 'is empty: a base64 public key or a key file path')).default([]),
        /** Admits every host whose HELLO verifies (benchmarks only: there is no realm boundary then). */
        open: z.boolean().default(DEFAULTS.admission.open),
      })
      .prefault({}),
    policy: z
      .strictObject({
        lookup: z
          .strictObject({
            /** Hosts inside this realm (and its sub-realms) may look up every host of the realm. */
            sameRealm: z.enum(['allow', 'deny']).default('allow'),
            rules: z.array(lookupRule).default([]),
          })
          .prefault({}),
        /** Preferences on the realm's hosts' uplinks, by uplink name, applied to every binding served. */
        uplinks: z.record(z.string().regex(/^[A-Za-z0-9._-]{1,32}$/, 'is not an uplink name'), uplinkPref).default({}),
      })
      .prefault({}),
    slice2: z
      .strictObject({
        /** User IDs are derived under this prefix (e.g. fd00:1:f001::/48); it must not overlap the host prefixes. */
        userPrefix: prefix.optional(),
        /** Data IDs are derived under this prefix. */
        dataPrefix: prefix.optional(),
        maxGroups: positive(DEFAULTS.slice2.maxGroups),
      })
      .prefault({}),
    log: z
      .strictObject({
        level: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']).default(DEFAULTS.log.level),
        format: z.enum(['json', 'pretty']).default(DEFAULTS.log.format),
      })
      .prefault({}),
  })
  .superRefine((c, ctx) => {
    const len = Number(c.prefix.split('/')[1]);
    if (isIpv6Prefix(c.prefix) && safePrefix(c.prefix) === null) {
      ctx.addIssue({ code: 'custom', path: ['prefix'], input: c.prefix, message: 'has bits set after the prefix length (e.g. fd00:1::/32, not fd00:1::5/32)' });
    }
    if (len > MAX_ID_PREFIX_LEN) {
      ctx.addIssue({ code: 'custom', path: ['prefix'], input: c.prefix, message: `is longer than /${MAX_ID_PREFIX_LEN} (host IDs need at least 64 hash bits)` });
    }
    if (c.registration.expiryS <= c.registration.refreshS) {
      ctx.addIssue({ code: 'custom', path: ['registration', 'expiryS'], message: `must be longer than refreshS (${c.registration.refreshS}), e.g. 3 × refreshS` });
    }
    if (!isIpv6Prefix(c.prefix)) return;
    const realm = safePrefix(c.prefix);
    const hostPrefixes = [realm, ...c.subRealms.map((s) => safePrefix(s.prefix))].filter((p): p is Prefix => p !== null);
    const tiers: [string, string | undefined][] = [['userPrefix', c.slice2.userPrefix], ['dataPrefix', c.slice2.dataPrefix]];
    for (const [key, text] of tiers) {
      if (text === undefined) continue;
      const p = safePrefix(text);
      if (p === null) {
        ctx.addIssue({ code: 'custom', path: ['slice2', key], input: text, message: 'has bits set after the prefix length' });
        continue;
      }
      if (p.length > MAX_ID_PREFIX_LEN) ctx.addIssue({ code: 'custom', path: ['slice2', key], input: text, message: `is longer than /${MAX_ID_PREFIX_LEN} (IDs need at least 64 hash bits)` });
      // Host IDs and user/data IDs must never be confused: an ID's prefix tells which tier it is.
      if (hostPrefixes.some((h) => h.covers(p) || p.covers(h))) ctx.addIssue({ code: 'custom', path: ['slice2', key], input: text, message: 'overlaps the host prefix (or a sub-realm): give users and data prefixes of their own' });
    }
    const u = c.slice2.userPrefix === undefined ? null : safePrefix(c.slice2.userPrefix);
    const d = c.slice2.dataPrefix === undefined ? null : safePrefix(c.slice2.dataPrefix);
    if (u !== null && d !== null && (u.covers(d) || d.covers(u))) ctx.addIssue({ code: 'custom', path: ['slice2', 'dataPrefix'], message: 'overlaps slice2.userPrefix: users and data need separate prefixes' });
    c.subRealms.forEach((s, i) => {
      const sub = safePrefix(s.prefix);
      if (realm === null || sub === null) return;
      if (!realm.covers(sub) || sub.length > MAX_ID_PREFIX_LEN) {
        ctx.addIssue({
          code: 'custom',
          path: ['subRealms', i, 'prefix'],
          input: s.prefix,
          message: `is not inside the realm prefix ${realm.toString()} with a length of at most /${MAX_ID_PREFIX_LEN}`,
        });
      }
    });
  });

function safePrefix(s: string): Prefix | null {
  try {
    return parsePrefix(s);
  } catch {
    return null;
  }
}

export type RmConfig = DeepReadonly<z.output<typeof RmConfigSchema>>;

export function loadRmConfig(file: string): RmConfig {
  return loadConfigFile(RmConfigSchema, file);
}

export function parseRmConfig(raw: unknown): RmConfig {
  return parseConfigObject(RmConfigSchema, raw);
}
