import { newRegistry, readCounter, readGauge, snake, type Registry } from '../shared/prometheus.ts';

/**
 * The Realm Manager's Prometheus metrics, made from its flat counters (counters.ts: `lookup.positive`,
 * `rx.drop.badMac`, `hierarchy.queriesSent`, …) read once per scrape. A group of counters becomes one
 * metric with a label (realmnet_rm_lookups_total{result="positive"}), so a counter added to a group
 * later is exported without a change here; live sizes are gauges. docs/operations.md lists them.
 */
export interface RmMetrics {
  readonly registry: Registry;
  readonly beforeScrape: () => void;
}

/** Group → metric name and the label its members go under. */
const GROUPS: Readonly<Record<string, readonly [string, string, string]>> = {
  hello: ['realmnet_rm_hellos_total', 'result', 'HELLOs (session set-up) by outcome.'],
  cookie: ['realmnet_rm_cookies_total', 'event', 'Cookies sent, accepted and stale (flood defence).'],
  challenge: ['realmnet_rm_challenges_total', 'event', 'Return-routability challenges.'],
  ratelimit: ['realmnet_rm_rate_limited_total', 'budget', 'Datagrams refused by a rate limit, by budget.'],
  renew: ['realmnet_rm_certificate_renewals_total', 'result', 'Membership certificates renewed or refused.'],
  members: ['realmnet_rm_member_events_total', 'event', 'Members admitted and revoked, revocations pushed.'],
  lookup: ['realmnet_rm_lookups_total', 'result', 'Lookups answered, by result (positive, negative, denied by policy).'],
  register: ['realmnet_rm_registrations_total', 'result', 'Registrations by outcome (ok, refresh, stale, forged, …).'],
  subscribe: ['realmnet_rm_subscriptions_total', 'result', 'Subscriptions (followers of a binding) added or refused.'],
  reject: ['realmnet_rm_rejects_total', 'reason', 'REJECTs sent, by reason.'],
  sessions: ['realmnet_rm_session_events_total', 'event', 'Sessions created, expired, evicted, revoked.'],
  push: ['realmnet_rm_pushes_total', 'event', 'Pushes to followers: sent, retransmitted, acked, given up.'],
  store: ['realmnet_rm_store_events_total', 'event', 'The durable store: commits, rows written, errors, deletions.'],
  groups: ['realmnet_rm_group_events_total', 'event', 'Slice 2 (user and data IDs): publishes, serves, lookups, presence.'],
  hierarchy: ['realmnet_rm_hierarchy_events_total', 'event', 'The realm hierarchy: queries, answers, referrals, pushes between RMs.'],
};

/** Names that are sizes now, not counts: metric name and help. */
const GAUGES: Readonly<Record<string, readonly [string, string]>> = {
  'bindings.live': ['realmnet_rm_bindings', 'Host bindings held (registered, not expired).'],
  'sessions.live': ['realmnet_rm_sessions', 'Sessions with hosts.'],
  'subscriptions.live': ['realmnet_rm_subscriptions', 'Subscriptions held (who follows which binding).'],
  'members.active': ['realmnet_rm_members', 'Members of the realm (admitted, not revoked).'],
  'push.pending': ['realmnet_rm_pushes_pending', 'Pushes waiting for their ack.'],
  'ratelimit.prefixes': ['realmnet_rm_rate_limit_prefixes', 'Prefixes the rate limiter tracks.'],
  'groups.live': ['realmnet_rm_groups', 'User and data IDs held (slice 2).'],
  'hierarchy.cached': ['realmnet_rm_hierarchy_cached_answers', "Other realms' answers cached for this realm's hosts."],
  'hierarchy.referrals': ['realmnet_rm_hierarchy_referrals', 'Referrals cached.'],
  'hierarchy.followers': ['realmnet_rm_hierarchy_followers', "Other RMs following this realm's bindings."],
  'hierarchy.chainKnown': ['realmnet_rm_hierarchy_chain_known', "Whether this RM holds its own delegation chain: 1 or 0."],
};

/** Single counters outside the groups. */
const SINGLES: Readonly<Record<string, readonly [string, string]>> = {
  'rx.datagrams': ['realmnet_rm_received_datagrams_total', 'Datagrams received.'],
  'tx.datagrams': ['realmnet_rm_sent_datagrams_total', 'Datagrams sent.'],
  'tx.errors': ['realmnet_rm_send_errors_total', 'Datagrams the kernel refused to send.'],
  'bindings.expired': ['realmnet_rm_bindings_expired_total', 'Bindings that expired without a refresh.'],
  'ratelimit.overflow': ['realmnet_rm_rate_limit_overflows_total', "Prefixes dropped from a full rate-limit table."],
};

/** Counters whose value is a duration in ms, exported in seconds. */
const MAX_COMMIT = 'store.maxCommitMs';

export function rmMetrics(counters: () => Record<string, number>, info: { version: string; realm: string }): RmMetrics {
  const registry = newRegistry('realmnet_rm_');
  let snap: Record<string, number> | null = null;
  const c = (): Record<string, number> => (snap ??= counters());
  const rows = (pick: (k: string) => string | null, label: string) => () =>
    Object.entries(c()).flatMap(([k, v]) => {
      const value = pick(k);
      return value === null ? [] : [[{ [label]: value }, v] as const];
    });

  readGauge(registry, 'realmnet_rm_info', 'This Realm Manager: its realm prefix and version (always 1).', ['realm', 'version'], () => [[{ realm: info.realm, version: info.version }, 1]]);
  for (const [key, [name, help]] of Object.entries(SINGLES)) readCounter(registry, name, help, [], () => [[{}, c()[key] ?? 0]]);
  for (const [key, [name, help]] of Object.entries(GAUGES)) readGauge(registry, name, help, [], () => [[{}, c()[key] ?? 0]]);
  readCounter(registry, 'realmnet_rm_dropped_datagrams_total', 'Datagrams dropped, by reason (malformed, bad MAC, replay, rate limited, …).', ['reason'], rows((k) => (k.startsWith('rx.drop.') ? snake(k.slice(8)) : null), 'reason'));
  readCounter(registry, 'realmnet_rm_handled_messages_total', 'Messages handled, by type.', ['type'], rows((k) => (k.startsWith('rx.handled.') ? snake(k.slice(11)) : null), 'type'));
  for (const [group, [name, label, help]] of Object.entries(GROUPS)) {
    readCounter(registry, name, help, [label], rows((k) => {
      const dot = k.indexOf('.');
      if (dot < 0 || k.slice(0, dot) !== group || k in GAUGES || k in SINGLES || k === MAX_COMMIT) return null;
      return snake(k.slice(dot + 1));
    }, label));
  }
  readGauge(registry, 'realmnet_rm_store_max_commit_seconds', 'The longest time one store commit held the event loop.', [], () => [[{}, (c()[MAX_COMMIT] ?? 0) / 1000]]);
  return {
    registry,
    beforeScrape: () => {
      snap = null;
    },
  };
}
