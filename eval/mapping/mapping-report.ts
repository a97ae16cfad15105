/**
 * The targets, the verdicts, the terminal tables and bench-results/mapping-hierarchy.json. JSON
 * field names are snake_case: the file is read by people and other tools, not by this code.
 */
import { formatTable } from '../routing/table.ts';
import { CLASS_NAMES, EXCHANGES, MESSAGE_KINDS, wireName, type MappingParams } from './hierarchy-params.ts';
import type { StrategyResult } from './tally.ts';

/** The targets for the strategies that choose per class. */
export const TARGETS = {
  hitRatioMin: 0.95,
  staleRatioMax: 0.005,
  messagesVsAllPushMax: 0.1,
} as const;
/** Judged against the targets; learned-warm is judged too, as information. */
export const JUDGED = ['hybrid', 'learned', 'learned-warm'] as const;
export const BASELINE = 'all-push';
/** The fairer push baseline, reported beside all-push (the target is judged against all-push). */
export const PUSH_FOLLOWERS = 'push-followers';

export interface Verdict {
  readonly strategy: string;
  readonly target: string;
  readonly value: number;
  readonly limit: number;
  readonly pass: boolean;
}

export function baseline(results: readonly StrategyResult[]): StrategyResult {
  const found = results.find((r) => r.name === BASELINE);
  if (found === undefined) throw new RangeError(`no ${BASELINE} result to compare with`);
  return found;
}

export function judge(results: readonly StrategyResult[]): Verdict[] {
  const push = baseline(results);
  return results
    .filter((r) => (JUDGED as readonly string[]).includes(r.name))
    .flatMap((r) => [
      { strategy: r.name, target: 'hit ratio >= 95%', value: r.hitRatio, limit: TARGETS.hitRatioMin, pass: r.hitRatio >= TARGETS.hitRatioMin },
      { strategy: r.name, target: 'stale ratio <= 0.5%', value: r.staleRatio, limit: TARGETS.staleRatioMax, pass: r.staleRatio <= TARGETS.staleRatioMax },
      {
        strategy: r.name,
        target: 'messages <= 10% of all-push',
        value: r.totalMessages / push.totalMessages,
        limit: TARGETS.messagesVsAllPushMax,
        pass: r.totalMessages <= TARGETS.messagesVsAllPushMax * push.totalMessages,
      },
    ]);
}

const pct = (x: number, digits = 2): string => `${(x * 100).toFixed(digits)}%`;
/** Stale ratios span 10^-6 (all-push) to 10^-1 (all-cache): keep three significant digits. */
const smallPct = (x: number): string => (x === 0 ? '0%' : x * 100 >= 0.1 ? pct(x, 3) : `${(x * 100).toPrecision(3)}%`);
const num = (x: number, digits = 1): string => x.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });

export function resultsTable(results: readonly StrategyResult[]): string {
  const push = baseline(results);
  const followers = results.find((r) => r.name === PUSH_FOLLOWERS);
  const rows = results.map((r) => [
    r.name,
    pct(r.hitRatio),
    smallPct(r.staleRatio),
    smallPct(r.staleAnswerRatio),
    num(r.messagesPerHostHour, 2),
    pct(r.totalMessages / push.totalMessages, 1),
    followers === undefined ? '-' : pct(r.totalMessages / followers.totalMessages, 0),
    num(r.peak.msgsPerS, 0),
    `${r.peak.tier} ${r.peak.index}`,
  ]);
  return formatTable(['strategy', 'hit %', 'stale % (time)', 'stale answers %', 'msgs/host-h', '% of all-push', '% of push-followers', 'peak RM msgs/s', 'busiest RM'], rows);
}

export function missTable(results: readonly StrategyResult[]): string {
  const rows = results.map((r) => [r.name, pct(r.hitRatio), pct(r.coldMissRatio), pct(r.expiredMissRatio), pct(r.lapsedMissRatio)]);
  return formatTable(['strategy', 'hit', 'cold miss (first ask at this site)', 'TTL expired', 'follow lapsed'], rows);
}

export function classTable(results: readonly StrategyResult[]): string {
  const rows = results.map((r) => [r.name, ...CLASS_NAMES.flatMap((c) => [pct(r.byClass[c].hitRatio, 1), smallPct(r.byClass[c].staleRatio)])]);
  return formatTable(['strategy', ...CLASS_NAMES.flatMap((c) => [`${c} hit`, `${c} stale`])], rows);
}

/** Fetches by true class (rows) and the class the strategy acted on (columns). */
export function fillsTable(r: StrategyResult): string {
  const rows = r.fills.map((row, i) => {
    const total = row.reduce((a, b) => a + b, 0);
    return [CLASS_NAMES[i], ...row.map((v) => (total === 0 ? '-' : pct(v / total, 1))), num(total, 0)];
  });
  return formatTable([`${r.name}: true \\ acted on`, ...CLASS_NAMES, 'fetches'], rows);
}

export function messagesTable(results: readonly StrategyResult[]): string {
  const rows = results.map((r) => [r.name, ...MESSAGE_KINDS.map((k) => num(r.messagesByKind[k] / (r.hosts * r.hours), 2))]);
  return formatTable(['msgs/host-h by exchange', ...MESSAGE_KINDS], rows);
}

export function verdictTable(verdicts: readonly Verdict[]): string {
  const show = (v: Verdict): string => (v.target.startsWith('stale') ? smallPct(v.value) : pct(v.value, v.target.startsWith('messages') ? 2 : 1));
  return formatTable(
    ['strategy', 'target', 'measured', 'verdict'],
    verdicts.map((v) => [v.strategy, v.target, show(v), v.pass ? 'PASS' : 'FALL SHORT']),
  );
}

export interface Checks {
  readonly allPullStale: { readonly simulated: number; readonly analytic: number };
  readonly allPushStale: { readonly simulated: number; readonly analytic: number };
  readonly allPullHit: { readonly simulated: number; readonly steadyState: number };
  readonly hybridHit: { readonly simulated: number; readonly steadyState: number };
  /** Lookups per host and hour at which hybrid's steady-state hit ratio would reach the target (null: never). */
  readonly hitTargetLookupsPerHostHour: number | null;
}

export function buildJson(p: MappingParams, results: readonly StrategyResult[], verdicts: readonly Verdict[], checks: Checks, runtimeS: number): object {
  const push = baseline(results);
  const followers = results.find((r) => r.name === PUSH_FOLLOWERS);
  const r6 = (x: number): number => Math.round(x * 1e6) / 1e6;
  const r9 = (x: number): number => Number(x.toPrecision(6));
  return {
    generated: new Date().toISOString(),
    generated_by: 'npm run eval:mapping (eval/mapping/main.ts)',
    runtime_s: Math.round(runtimeS * 10) / 10,
    params: {
      seed: p.seed,
      hosts: p.hosts,
      hours: p.hours,
      warmup_hours: p.warmupHours,
      rms: { top: 1, middle: p.middles, bottom: p.bottoms },
      class_mix: Object.fromEntries(CLASS_NAMES.map((c, i) => [c, p.classMix[i]])),
      nomadic_periods_hours: p.nomadicPeriods.map((q) => ({ hours: q.hours, share: q.share })),
      mobile_primary_mean_s: p.mobilePrimaryMeanS,
      mobile_backup_mean_s: p.mobileBackupMeanS,
      lookups_per_host_hour: p.lookupsPerHostHour,
      zipf_s: p.zipfS,
      rm_hop_s: p.rmHopS,
      referral_ttl_s: p.referralTtlS,
      pull_ttl_s: p.pullTtlS,
      cache_ttl_s: p.cacheTtlS,
      static_ttl_s: p.staticTtlS,
      nomadic_ttl_s: p.nomadicTtlS,
      follow_lease_s: p.followLeaseS,
      follow_renew_after: r6(p.followRenewAfter),
      learn_fallback: p.learnFallback,
      message_costs: Object.fromEntries(MESSAGE_KINDS.map((k) => [k, { messages: EXCHANGES[k].messages, wire: wireName(k), what: EXCHANGES[k].what }])),
      sources: 'docs/mapping-hierarchy.md, "Parameters"',
    },
    definitions: {
      hit_ratio: 'lookups answered by the asking site RM without asking upstream / all lookups in the window',
      stale_ratio: 'time-weighted: of all site-RM time holding another site\'s binding it would hand out without asking, the share during which it was older than the home RM\'s',
      stale_answer_ratio: 'lookups answered with an out-of-date binding / all lookups',
      messages_per_host_hour: 'all control messages in the window / (hosts x hours)',
      peak_rm_msgs_per_s: 'messages sent or received by the busiest single RM in its busiest 1-second bucket of the window',
    },
    strategies: results.map((r) => ({
      name: r.name,
      description: r.description,
      hit_ratio: r6(r.hitRatio),
      stale_ratio: r9(r.staleRatio),
      messages_per_host_hour: r6(r.messagesPerHostHour),
      peak_rm_msgs_per_s: r.peak.msgsPerS,
      stale_answer_ratio: r9(r.staleAnswerRatio),
      messages_vs_all_push: r9(r.totalMessages / push.totalMessages),
      messages_vs_push_followers: followers === undefined ? null : r9(r.totalMessages / followers.totalMessages),
      lookups: r.lookups,
      total_messages: r.totalMessages,
      messages_per_host_hour_by_exchange: Object.fromEntries(MESSAGE_KINDS.map((k) => [k, r6(r.messagesByKind[k] / (r.hosts * r.hours))])),
      busiest_rm: { tier: r.peak.tier, index: r.peak.index, second_of_window: r.peak.second },
      misses: { cold: r6(r.coldMissRatio), ttl_expired: r6(r.expiredMissRatio), follow_lapsed: r6(r.lapsedMissRatio) },
      by_class: Object.fromEntries(
        CLASS_NAMES.map((c) => [
          c,
          { lookups: r.byClass[c].lookups, hit_ratio: r6(r.byClass[c].hitRatio), stale_ratio: r9(r.byClass[c].staleRatio), stale_answer_ratio: r9(r.byClass[c].staleAnswerRatio), held_binding_hours: Math.round(r.byClass[c].heldHours) },
        ]),
      ),
      fetches_true_class_by_acted_class: Object.fromEntries(CLASS_NAMES.map((c, i) => [c, Object.fromEntries(CLASS_NAMES.map((d, j) => [d, r.fills[i][j]]))])),
    })),
    targets: {
      hit_ratio_min: TARGETS.hitRatioMin,
      stale_ratio_max: TARGETS.staleRatioMax,
      messages_vs_all_push_max: TARGETS.messagesVsAllPushMax,
      baseline: BASELINE,
      verdicts: verdicts.map((v) => ({ strategy: v.strategy, target: v.target, measured: r9(v.value), limit: v.limit, pass: v.pass })),
    },
    checks: {
      all_pull_stale_ratio: { simulated: r9(checks.allPullStale.simulated), analytic: r9(checks.allPullStale.analytic) },
      all_push_stale_ratio: { simulated: r9(checks.allPushStale.simulated), analytic: r9(checks.allPushStale.analytic) },
      all_pull_hit_ratio: { simulated: r6(checks.allPullHit.simulated), steady_state_model: r6(checks.allPullHit.steadyState) },
      hybrid_hit_ratio: { simulated: r6(checks.hybridHit.simulated), steady_state_model: r6(checks.hybridHit.steadyState) },
      hybrid_lookups_per_host_hour_for_95pct_hit: checks.hitTargetLookupsPerHostHour === null ? null : Math.round(checks.hitTargetLookupsPerHostHour),
    },
  };
}
