import { z } from 'zod';
import { MSG, metricsConfigSchema, isIpAddress, isIpv6Address, isIpv6Prefix, loadConfigFile, parseConfigObject, type DeepReadonly } from '../shared/config.ts';
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
  /**
   * The realm hierarchy (docs/hierarchy.md). Referrals live an hour (LISP-DDT's default is a day;
   * an hour bounds how long a moved child RM is missed). A query to another RM is retried twice,
   * 300 ms apart (a cross-realm first lookup is 3 RTTs: a lost datagram must not cost seconds), and a
   * failed resolution is remembered 10 s so that a dead RM is not asked for every packet.
   */
  hierarchy: {
    referralTtlS: 3_600,
    delegationLifeS: 86_400,
    queryTimeoutMs: 300,
    queryAttempts: 3,
    negativeTtlS: 10,
    cacheMax: 100_000,
    learnClasses: true,
    defaultClass: 'nomadic',
    /**
     * Customer classes (DESIGN.md section 5): static hosts are cached for an hour and never pushed,
     * nomadic hosts (renumbered daily) are pulled with a 5-minute TTL, mobile and multihomed hosts
     * that fail over are pushed to every RM that follows them and cached for a minute in between.
     */
    classes: {
      static: { ttlS: 3_600, push: false },
      nomadic: { ttlS: 300, push: false },
      mobile: { ttlS: 60, push: true },
    },
  },
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

const rmAddress = z.union([
  z.string().refine(isIpAddress, { message: MSG.ip }).transform((address) => ({ address, port: CONTROL_PORT })),
  z.strictObject({ address: z.string().refine(isIpAddress, { message: MSG.ip }), port: z.number().int().min(1).max(65535, MSG.port).default(CONTROL_PORT) }),
]);
const rmKey = z.string().min(1, 'is empty: the RM public key in base64, or the path of its key file');
const classParams = (d: { ttlS: number; push: boolean }) =>
  z.strictObject({ ttlS: z.number().int().min(1).max(86_400, 'must be at most a day').default(d.ttlS), push: z.boolean().default(d.push) }).prefault({});
const className = z.enum(['static', 'nomadic', 'mobile']);
const delegationItem = z.strictObject({
  /** The child realm's prefix: inside this RM's own prefix, longer than it. */
  prefix,
  name: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/, 'is not a realm name').optional(),
  /** Where the child RM answers (1 to 4 addresses). */
  rms: z.array(rmAddress).min(1, 'needs at least one RM address').max(4, 'at most 4 RM addresses'),
  publicKey: rmKey,
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
            /**
             * Hosts of other realms (through the hierarchy): denied unless a rule's askers name their
             * realm's prefix, or this says allow. A foreign realm asks as a whole (its RM resolves for
             * all its hosts), so rules match other realms by prefix, never by single host.
             */
            otherRealms: z.enum(['allow', 'deny']).default('deny'),
            rules: z.array(lookupRule).default([]),
          })
          .prefault({}),
        /** Preferences on the realm's hosts' uplinks, by uplink name, applied to every binding served. */
        uplinks: z.record(z.string().regex(/^[A-Za-z0-9._-]{1,32}$/, 'is not an uplink name'), uplinkPref).default({}),
        /** Customer classes set by the operator, per host ID or prefix (first match wins); others are learned. */
        classes: z.array(z.strictObject({ targets: z.array(idOrPrefix).min(1, 'needs at least one host ID or prefix'), class: className })).default([]),
      })
      .prefault({}),
    hierarchy: z
      .strictObject({
        /** The top RM (absent on the top RM itself): where resolution of other realms' IDs starts. */
        root: z.strictObject({ rms: z.array(rmAddress).min(1, 'needs at least one RM address').max(4, 'at most 4 RM addresses'), publicKey: rmKey }).optional(),
        /** Child realms whose prefixes this RM delegates. */
        delegations: z.array(delegationItem).default([]),
        referralTtlS: z.number().int().min(1).max(86_400).default(DEFAULTS.hierarchy.referralTtlS),
        delegationLifeS: z.number().int().min(60).max(30 * 86_400).default(DEFAULTS.hierarchy.delegationLifeS),
        queryTimeoutMs: z.number().int().min(10).max(10_000).default(DEFAULTS.hierarchy.queryTimeoutMs),
        queryAttempts: z.number().int().min(1).max(10).default(DEFAULTS.hierarchy.queryAttempts),
        negativeTtlS: z.number().int().min(1).max(3_600).default(DEFAULTS.hierarchy.negativeTtlS),
        cacheMax: positive(DEFAULTS.hierarchy.cacheMax),
        learnClasses: z.boolean().default(DEFAULTS.hierarchy.learnClasses),
        defaultClass: className.default(DEFAULTS.hierarchy.defaultClass),
        classes: z
          .strictObject({
            static: classParams(DEFAULTS.hierarchy.classes.static),
            nomadic: classParams(DEFAULTS.hierarchy.classes.nomadic),
            mobile: classParams(DEFAULTS.hierarchy.classes.mobile),
          })
          .prefault({}),
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
    /** Prometheus endpoint (off by default): docs/operations.md lists the metrics. */
    metrics: metricsConfigSchema,
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
    c.hierarchy.delegations.forEach((d, i) => {
      const sub = safePrefix(d.prefix);
      if (realm === null || sub === null) return;
      if (!realm.covers(sub) || sub.length <= realm.length || sub.length > MAX_ID_PREFIX_LEN) {
        ctx.addIssue({ code: 'custom', path: ['hierarchy', 'delegations', i, 'prefix'], input: d.prefix, message: `is not strictly inside the realm prefix ${realm.toString()} (with a length of at most /${MAX_ID_PREFIX_LEN})` });
      }
      c.hierarchy.delegations.forEach((o, j) => {
        const other = safePrefix(o.prefix);
        if (j > i && other !== null && (other.covers(sub) || sub.covers(other))) ctx.addIssue({ code: 'custom', path: ['hierarchy', 'delegations', j, 'prefix'], input: o.prefix, message: `overlaps delegation ${d.prefix}: give each child realm its own prefix` });
      });
      if (hostPrefixes.slice(1).some((h) => h.covers(sub) || sub.covers(h))) ctx.addIssue({ code: 'custom', path: ['hierarchy', 'delegations', i, 'prefix'], input: d.prefix, message: 'overlaps a sub-realm this RM serves itself: a prefix is either served here or delegated' });
    });
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
