import { z } from 'zod';
import { MSG, metricsConfigSchema, isInterfaceName, isIpAddress, isIpv6Address, isIpv6Prefix, loadConfigFile, parseConfigObject, type DeepReadonly } from '../shared/config.ts';
import { DATA_PORT, MAX_INSTANCE_ID, SEALED_HEADER_LEN, TAG_LEN } from '../shared/wire/header.ts';
import { DEFAULT_PATH_TIMING } from './paths/state.ts';
import { parseToken } from '../shared/membership.ts';
import { parsePrefix } from '../shared/ids.ts';

/**
 * The agent's configuration: one YAML file, validated once at start-up into a frozen object.
 * Every default lives in DEFAULTS; examples/agent.yaml documents each key.
 */
export const DEFAULTS = {
  tun: { name: 'rn0', mtu: 1400, offload: false, coalesce: true, batchSize: 64 },
  listenPort: DATA_PORT,
  underlayMtu: 1500,
  realm: { instanceId: 0 },
  routing: { tableBase: 4341, rulePriority: 4341 },
  limits: { mapCacheEntries: 65_536 },
  log: { level: 'info', format: 'pretty' },
  /** Why these numbers: docs/dataplane-crypto.md (WireGuard's timers, shortened where failover needs it). */
  dataplane: {
    encryption: 'on',
    cipher: 'aes-256-gcm',
    rekeyAfterS: 120,
    rekeyAfterPackets: 2 ** 23,
    rejectAfterS: 180,
    maxSessions: 4096,
    handshakesPerS: 200,
  },
  /** Abstract unix socket: private to the network namespace, gone when the agent exits. */
  control: { socket: '@realmnet/agent' },
  /**
   * Slice 2 (docs/slice2.md): flows to user/data IDs pinned at once (each a few dozen bytes in typed
   * arrays; beyond, the least recently used of a bucket is evicted), forgotten after flowIdleS.
   */
  slice2: { maxFlows: 65_536, flowIdleS: 120 },
  rm: { port: 4342, bindingTtlS: 120, pendingPerId: 32, pendingTotal: 1024, negativeTtlMaxS: 5 },
  /** Path probing and failover; why these numbers: agent/paths/state.ts, DEFAULT_PATH_TIMING. */
  failover: {
    probeIntervalMs: DEFAULT_PATH_TIMING.probeIntervalMs,
    idleProbeIntervalMs: DEFAULT_PATH_TIMING.idleProbeIntervalMs,
    suspectAfterMs: DEFAULT_PATH_TIMING.suspectAfterMs,
    downAfterMs: DEFAULT_PATH_TIMING.downAfterMs,
    holdDownMs: DEFAULT_PATH_TIMING.holdDownMs,
    upAfterReplies: DEFAULT_PATH_TIMING.upAfterReplies,
    makeBeforeBreak: true,
    /** Why these sizes: agent/dataplane/flight.ts and docs/failover.md. */
    resend: { enabled: true, bufferBytes: 16 * 1024 * 1024, perPeerBytes: 4 * 1024 * 1024, maxAgeMs: 1_000 },
  },
} as const;

const ip = z.string().refine(isIpAddress, { message: MSG.ip });
const port = z.number().int().min(1, MSG.port).max(65535, MSG.port);
const priority = z.number().int().min(0).max(255);
const weight = z.number().int().min(0).max(255);

const locator = z.strictObject({
  address: ip,
  port: port.default(DATA_PORT),
  priority: priority.default(1),
  weight: weight.default(1),
});

const uplink = z.strictObject({
  name: z.string().regex(/^[A-Za-z0-9_.-]{1,32}$/, 'is not an uplink name (letters, digits, "_.-", e.g. ispa)'),
  /** The Linux interface the uplink leaves through; with `gateway`, the agent adds source-policy routing. */
  interface: z.string().refine(isInterfaceName, { message: MSG.ifname }).optional(),
  locator: ip,
  gateway: ip.optional(),
  priority: priority.default(1),
  weight: weight.default(1),
});

const ed25519PublicKey = (what: string) =>
  z.string().refine((s) => Buffer.from(s, 'base64').length === 32, { message: `is not a base64 Ed25519 public key (32 bytes; ${what})` });

const peer = z.strictObject({
  hostId: z.string().refine(isIpv6Address, { message: MSG.ipv6 }),
  locators: z.array(locator).min(1, 'needs at least one locator'),
  /**
   * The peer's public key (base64; `realmnet keygen` prints it): the static peer is then trusted with
   * this key, as a WireGuard peer list does, and sessions to it are encrypted. Needed with encryption on.
   */
  publicKey: ed25519PublicKey('`realmnet keygen` prints it as "publicKey"').optional(),
});

const rmServer = z.strictObject({
  address: ip,
  port: port.default(DEFAULTS.rm.port),
  /**
   * The RM's public key (base64 of 32 bytes; `realmnet rm key --config rm.yaml` prints it): pins the
   * RM's identity and the realm's. Required unless rm.join is given or the state file holds it.
   */
  publicKey: ed25519PublicKey('copy "publicKey" from the RM key file').optional(),
});

export const AgentConfigSchema = z
  .strictObject({
    /** Static mode: the host ID itself. With `identity`, the ID is derived from the key and may be omitted. */
    hostId: z.string().refine(isIpv6Address, { message: MSG.ipv6 }).optional(),
    identity: z
      .strictObject({
        /** Key file made by `realmnet keygen`. */
        key: z.string().min(1),
        /** The realm (or sub-realm) prefix the host ID is derived under, e.g. fd00:1::/64. May be omitted with rm.join (the token names it). */
        prefix: z.string().refine(isIpv6Prefix, { message: MSG.ipv6Prefix }).optional(),
        /**
         * Where the agent keeps the last sequence number and message counter it used, so that a
         * restart never reuses one (default: the key file's path + ".state").
         */
        state: z.string().min(1).optional(),
      })
      .optional(),
    /** Realm Managers to register with and look up in; without them only static peers are reachable. */
    rm: z
      .strictObject({
        servers: z.array(rmServer).min(1, 'needs at least one RM, e.g. [{ address: 203.0.113.66 }]'),
        /**
         * A one-time join token from the operator (`realmnet rm invite`): the host joins the realm with
         * it and pins the realm key it carries. Used once; afterwards the state file holds the
         * membership, so the (spent) token may stay in the file.
         */
        join: z
          .string()
          .superRefine((t, ctx) => {
            try {
              parseToken(t);
            } catch (e) {
              ctx.addIssue({ code: 'custom', message: `is not a join token: ${(e as Error).message.replace(/^join token: /, '')} (copy the whole line \`realmnet rm invite\` printed)` });
            }
          })
          .optional(),
        bindingTtlS: z.number().int().min(5).max(86_400).default(DEFAULTS.rm.bindingTtlS),
        pendingPerId: z.number().int().min(0).max(4096).default(DEFAULTS.rm.pendingPerId),
        pendingTotal: z.number().int().min(0).max(1_000_000).default(DEFAULTS.rm.pendingTotal),
        /**
         * Cap on how long a negative answer is believed. Short by default: a host that registers a
         * moment after we asked (it booted later) should be reachable in seconds, not after the RM's
         * negative TTL (LISP's one minute).
         */
        negativeTtlMaxS: z.number().int().min(0).max(3600).default(DEFAULTS.rm.negativeTtlMaxS),
      })
      .optional(),
    realm: z
      .strictObject({
        prefixes: z.array(z.string().refine(isIpv6Prefix, { message: MSG.ipv6Prefix })).min(1, 'needs at least one prefix, e.g. ["fd00::/8"]'),
        instanceId: z.number().int().min(0).max(MAX_INSTANCE_ID).default(DEFAULTS.realm.instanceId),
      }),
    tun: z
      .strictObject({
        name: z.string().refine(isInterfaceName, { message: MSG.ifname }).default(DEFAULTS.tun.name),
        mtu: z.number().int().min(1280, 'must be at least 1280 (the IPv6 minimum)').max(65000).default(DEFAULTS.tun.mtu),
        offload: z.boolean().default(DEFAULTS.tun.offload),
        /** MTU mode: merge received TCP segments into super-packets for the kernel (docs/dataplane-coalescing.md). */
        coalesce: z.boolean().default(DEFAULTS.tun.coalesce),
        batchSize: z.number().int().min(1).max(256).default(DEFAULTS.tun.batchSize),
      })
      .prefault({}),
    listenPort: port.default(DEFAULTS.listenPort),
    /** The smallest MTU of the uplinks' paths; offload frames are cut into chunks that fit it. */
    underlayMtu: z.number().int().min(1280, 'must be at least 1280').max(9000).default(DEFAULTS.underlayMtu),
    uplinks: z.array(uplink).min(1, 'needs at least one uplink, e.g. [{ name: ispa, locator: 192.0.2.1 }]'),
    peers: z.array(peer).default([]),
    /**
     * Slice 2: the user and data IDs this host serves, each a binding file written by
     * `realmnet user|data ...` (the owner's signed list of hosts). Listing a file here is this host's
     * consent: the agent puts the ID on its TUN device and tells the RM it serves it.
     */
    serve: z.array(z.strictObject({ binding: z.string().min(1, 'is empty: the path of a binding file from `realmnet user create` or `realmnet data publish`') })).default([]),
    slice2: z
      .strictObject({
        maxFlows: z.number().int().min(8).max(1 << 22).refine((n) => (n & (n - 1)) === 0, { message: 'must be a power of two (e.g. 65536)' }).default(DEFAULTS.slice2.maxFlows),
        flowIdleS: z.number().int().min(1).max(86_400).default(DEFAULTS.slice2.flowIdleS),
      })
      .prefault({}),
    routing: z
      .strictObject({
        tableBase: z.number().int().min(1).max(0x7fffffff).default(DEFAULTS.routing.tableBase),
        rulePriority: z.number().int().min(1).max(32000).default(DEFAULTS.routing.rulePriority),
      })
      .prefault({}),
    limits: z.strictObject({ mapCacheEntries: z.number().int().min(1).default(DEFAULTS.limits.mapCacheEntries) }).prefault({}),
    log: z
      .strictObject({
        level: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']).default(DEFAULTS.log.level),
        format: z.enum(['json', 'pretty']).default(DEFAULTS.log.format),
      })
      .prefault({}),
    /** Prometheus endpoint (off by default): docs/operations.md lists the metrics. */
    metrics: metricsConfigSchema,
    control: z
      .strictObject({
        socket: z.string().min(1).default(DEFAULTS.control.socket),
        /** Besides root, members of this group (a name, or a gid) may read the status. Default: root only. */
        group: z.union([z.string().regex(/^[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?$/, 'is not a group name (e.g. realmnet) or gid'), z.number().int().min(0).max(0xfffffffe)]).optional(),
      })
      .prefault({}),
    /** Data-plane encryption: sessions between agents (agent/sessions/) and the packets sealed with them. */
    dataplane: z
      .strictObject({
        /** 'off' exists for measurement only: packets are then forgeable and readable on the path. */
        encryption: z.enum(['on', 'off']).default(DEFAULTS.dataplane.encryption),
        cipher: z.enum(['aes-256-gcm', 'chacha20-poly1305']).default(DEFAULTS.dataplane.cipher),
        /** A session is replaced after this long or this many packets sent (a new handshake, no gap). */
        rekeyAfterS: z.number().int().min(1).max(86_400).default(DEFAULTS.dataplane.rekeyAfterS),
        /** At most 2^23: AES-GCM's key must stop at 2^24 packets (docs/dataplane-crypto.md), and the rekey needs a margin. */
        rekeyAfterPackets: z.number().int().min(1000).max(2 ** 23).default(DEFAULTS.dataplane.rekeyAfterPackets),
        /** Keys older than this are wiped and never used again, whatever happened to their rekey. */
        rejectAfterS: z.number().int().min(2).max(86_400 * 2).default(DEFAULTS.dataplane.rejectAfterS),
        /** Sessions held at once (each keeps two keys and a replay window in native memory). */
        maxSessions: z.number().int().min(16).max(4096).refine((n) => (n & (n - 1)) === 0, { message: 'must be a power of two (e.g. 4096)' }).default(DEFAULTS.dataplane.maxSessions),
        /** Above this many handshake initiations a second, the agent asks initiators for a cookie first. */
        handshakesPerS: z.number().int().min(1).max(100_000).default(DEFAULTS.dataplane.handshakesPerS),
      })
      .prefault({}),
    /** Path probing (needs identity keys: probes are MACed with a key derived from both hosts' keys). */
    failover: z
      .strictObject({
        probeIntervalMs: z.number().int().min(10, 'must be at least 10 ms').max(60_000).default(DEFAULTS.failover.probeIntervalMs),
        /** 0 = never probe idle paths. */
        idleProbeIntervalMs: z.number().int().min(0).max(3_600_000).default(DEFAULTS.failover.idleProbeIntervalMs),
        suspectAfterMs: z.number().int().min(10).max(60_000).default(DEFAULTS.failover.suspectAfterMs),
        downAfterMs: z.number().int().min(10).max(600_000).default(DEFAULTS.failover.downAfterMs),
        holdDownMs: z.number().int().min(0).max(3_600_000).default(DEFAULTS.failover.holdDownMs),
        upAfterReplies: z.number().int().min(1).max(100).default(DEFAULTS.failover.upAfterReplies),
        /** While the path traffic just left is only suspect, it keeps getting a copy of every packet. */
        makeBeforeBreak: z.boolean().default(DEFAULTS.failover.makeBeforeBreak),
        /** Re-sending the packets in flight on a path that failed (the flight recorder). */
        resend: z
          .strictObject({
            enabled: z.boolean().default(DEFAULTS.failover.resend.enabled),
            bufferBytes: z.number().int().min(256 * 1024, 'must be at least 262144 (256 KiB)').max(1024 * 1024 * 1024, 'must be at most 1 GiB').default(DEFAULTS.failover.resend.bufferBytes),
            perPeerBytes: z.number().int().min(1500).max(1024 * 1024 * 1024).default(DEFAULTS.failover.resend.perPeerBytes),
            maxAgeMs: z.number().int().min(10).max(60_000).default(DEFAULTS.failover.resend.maxAgeMs),
          })
          .prefault({}),
      })
      .prefault({}),
  })
  .superRefine((c, ctx) => {
    if (c.serve.length > 0 && c.rm === undefined) ctx.addIssue({ code: 'custom', path: ['serve'], message: 'needs a Realm Manager (rm): the RM offers this host for the user/data IDs it serves' });
    const names = new Set<string>();
    c.uplinks.forEach((u, i) => {
      if (names.has(u.name)) ctx.addIssue({ code: 'custom', path: ['uplinks', i, 'name'], message: `"${u.name}" is used by two uplinks (names must be unique)` });
      names.add(u.name);
      if (u.gateway !== undefined && u.interface === undefined)
        ctx.addIssue({ code: 'custom', path: ['uplinks', i, 'interface'], message: 'is missing: source-policy routing via a gateway needs the interface name (e.g. eth0)' });
    });
    if (c.hostId === undefined && c.identity === undefined)
      ctx.addIssue({ code: 'custom', path: ['hostId'], message: 'is missing: set hostId (static bindings only) or identity.key and identity.prefix (the ID is derived from the key)' });
    if (c.rm !== undefined && c.identity === undefined)
      ctx.addIssue({ code: 'custom', path: ['identity'], message: 'is missing: registering with a Realm Manager needs a key (identity.key, made by `realmnet keygen`) and identity.prefix' });
    // Static mode (hostId, no RM) may give a key without a prefix: it then only opens sessions with
    // the static peers, which trust it by their config, as a WireGuard peer list does.
    if (c.identity !== undefined && c.identity.prefix === undefined && c.rm?.join === undefined && (c.rm !== undefined || c.hostId === undefined))
      ctx.addIssue({ code: 'custom', path: ['identity', 'prefix'], message: 'is missing: give the realm prefix the host ID is derived under (e.g. fd00:1::/64), or a join token in rm.join (it names the prefix)' });
    if (c.identity?.prefix !== undefined && c.rm?.join !== undefined && isIpv6Prefix(c.identity.prefix)) {
      try {
        const t = parseToken(c.rm.join);
        if (t.prefix.toString() !== parsePrefixSafe(c.identity.prefix))
          ctx.addIssue({ code: 'custom', path: ['identity', 'prefix'], message: `(${c.identity.prefix}) differs from the join token's prefix ${t.prefix.toString()}: remove identity.prefix (the token names it) or use a token for this prefix` });
      } catch {
        // rm.join's own check reports it.
      }
    }
    if (c.rm !== undefined && c.rm.pendingPerId > c.tun.batchSize) {
      ctx.addIssue({ code: 'custom', path: ['rm', 'pendingPerId'], message: `(${c.rm.pendingPerId}) must not exceed tun.batchSize (${c.tun.batchSize}): the packets kept for one ID go back to the data plane as one batch` });
    }
    const f = c.failover;
    if (f.downAfterMs < f.suspectAfterMs) ctx.addIssue({ code: 'custom', path: ['failover', 'downAfterMs'], message: `(${f.downAfterMs}) must not be below suspectAfterMs (${f.suspectAfterMs})` });
    if (f.resend.perPeerBytes > f.resend.bufferBytes) ctx.addIssue({ code: 'custom', path: ['failover', 'resend', 'perPeerBytes'], message: `(${f.resend.perPeerBytes}) must not exceed bufferBytes (${f.resend.bufferBytes}): one peer cannot re-send more than the buffer holds` });
    if (f.suspectAfterMs < f.probeIntervalMs) ctx.addIssue({ code: 'custom', path: ['failover', 'suspectAfterMs'], message: `(${f.suspectAfterMs}) must be at least probeIntervalMs (${f.probeIntervalMs}): a path cannot be judged before it was asked` });
    const d = c.dataplane;
    if (d.rejectAfterS <= d.rekeyAfterS) ctx.addIssue({ code: 'custom', path: ['dataplane', 'rejectAfterS'], message: `(${d.rejectAfterS}) must be above rekeyAfterS (${d.rekeyAfterS}): a session must outlive the moment it is replaced` });
    if (d.encryption === 'on') {
      if (c.identity === undefined)
        ctx.addIssue({ code: 'custom', path: ['identity'], message: 'is missing: encryption (dataplane.encryption, on by default) needs this host\'s key (identity.key, made by `realmnet keygen`); or set dataplane.encryption: off (measurement only)' });
      c.peers.forEach((p, i) => {
        if (p.publicKey === undefined)
          ctx.addIssue({ code: 'custom', path: ['peers', i, 'publicKey'], message: `is missing: encryption (dataplane.encryption, on by default) needs each static peer's key (\`realmnet keygen\` on ${p.hostId} prints it); or set dataplane.encryption: off (measurement only)` });
      });
      // The sealed header and tag must fit where the plain header did (docs/dataplane-crypto.md).
      const room = c.underlayMtu - 40 - 8 - SEALED_HEADER_LEN - TAG_LEN;
      if (!c.tun.offload && c.tun.mtu > room)
        ctx.addIssue({ code: 'custom', path: ['tun', 'mtu'], message: `(${c.tun.mtu}) is too large for underlayMtu ${c.underlayMtu} with encryption: at most ${room} (IPv6 40 + UDP 8 + sealed header ${SEALED_HEADER_LEN} + tag ${TAG_LEN})` });
    }
    const ids = new Set<string>();
    c.peers.forEach((p, i) => {
      if (ids.has(p.hostId)) ctx.addIssue({ code: 'custom', path: ['peers', i, 'hostId'], message: `"${p.hostId}" is listed twice` });
      ids.add(p.hostId);
    });
  });

function parsePrefixSafe(p: string): string {
  try {
    return parsePrefix(p).toString();
  } catch {
    return p;
  }
}

export type AgentConfig = DeepReadonly<z.output<typeof AgentConfigSchema>>;

export function loadAgentConfig(file: string): AgentConfig {
  return loadConfigFile(AgentConfigSchema, file);
}

export function parseAgentConfig(raw: unknown): AgentConfig {
  return parseConfigObject(AgentConfigSchema, raw);
}
