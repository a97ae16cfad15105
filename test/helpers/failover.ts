/**
 * Helpers for the failover end-to-end tests (test/e2e/failover.test.ts) and the demo: what the
 * agents say about their paths, a checked TCP flow over host IDs with faults on one schedule, and
 * the faults the testbed does not have as one call (a flapping link).
 *
 * The flow is scripts/tools/flowmeter.ts: the source sends the AES-CTR stream of a seed, the sink
 * checks every byte against it, so "equal data on both ends" means same count, same sha256 and no
 * misplaced byte; its 10 ms buckets give the goodput gap for the record (tests never assert speed).
 */
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { z } from 'zod';
import { parseReport, SinkReport, SourceReport, type SinkReport as SinkReportT, type SourceReport as SourceReportT } from '../../scripts/tools/flowmeter.ts';
import type { NsProcess, Testbed } from '../../scripts/testbed/topology.ts';
import { controlStatus, REPO } from './agents.ts';

// 1. What the agents say (`realmnet status --json`).

export const PATH_STATES = ['unknown', 'up', 'suspect', 'down', 'probation'] as const;

export const PathStatus = z.object({
  /** The peer's host ID. */
  peer: z.string(),
  /** The local uplink's name. */
  uplink: z.string(),
  /** The peer's locator, "addr:port". */
  locator: z.string(),
  state: z.enum(PATH_STATES),
  rttMs: z.number().nullable(),
  lossPct: z.number(),
  inUse: z.boolean(),
});
export type PathStatus = z.infer<typeof PathStatus>;

export const FailoverRecord = z.object({
  at: z.string(),
  peer: z.string(),
  from: z.string().nullable(),
  to: z.string().nullable(),
  reason: z.string(),
  tookMs: z.number().nullable(),
  /** Datagrams re-sent over the new path (issue #11); absent from older agents. */
  resentPackets: z.number().default(0),
});
export type FailoverRecord = z.infer<typeof FailoverRecord>;

const UplinkView = z.object({ name: z.string(), up: z.boolean(), txPackets: z.number(), rxPackets: z.number() });
const MapCacheView = z.object({ hostId: z.string(), seq: z.number(), locators: z.array(z.string()), path: z.string().nullable() });

/**
 * The part of an agent's status the failover tests read. `paths` and `failovers` are absent from
 * agents older than the failover core (issue #5): they parse as [] so that the harness runs on both.
 */
export const FailoverView = z.object({
  hostId: z.string(),
  uplinks: z.array(UplinkView),
  mapCache: z.array(MapCacheView),
  paths: z.array(PathStatus).default([]),
  failovers: z.array(FailoverRecord).default([]),
  /** How late the agent's event loop ran (agent/lag.ts); absent from agents before it was measured. */
  eventLoop: z
    .object({ p99Ms: z.number(), maxMs: z.number(), recentP99Ms: z.number(), recentMaxMs: z.number(), seconds: z.array(z.object({ at: z.number(), maxMs: z.number(), p99Ms: z.number() })) })
    .optional(),
});
export type FailoverView = z.infer<typeof FailoverView>;

export async function failoverView(tb: Testbed, node: 'mh' | 'ch'): Promise<FailoverView> {
  // The JSON is the agent's AgentStatus; narrow the part read here instead of trusting it.
  const raw = await controlStatus(tb, node);
  const r = FailoverView.safeParse(raw);
  if (!r.success) {
    const i = r.error.issues[0];
    throw new Error(`status of ${node} not understood: ${i ? `${i.path.join('.')}: ${i.message}` : 'unknown shape'}`);
  }
  return r.data;
}

/** One line per path and failover, for failure messages and the demo. */
export function describeView(node: string, v: FailoverView): string {
  const paths = v.paths.map(
    (p) => `  path ${p.uplink} → ${p.locator}: ${p.state}${p.inUse ? ' (in use)' : ''}, rtt ${p.rttMs === null ? '—' : `${p.rttMs.toFixed(1)} ms`}, loss ${p.lossPct.toFixed(0)}%`,
  );
  const fo = v.failovers.map((f) => `  failover ${f.at}: ${f.from ?? '—'} → ${f.to ?? '—'} (${f.reason}${f.tookMs === null ? '' : `, ${f.tookMs} ms`})`);
  const cache = v.mapCache.map((e) => `  map-cache ${e.hostId} seq ${e.seq}: ${e.locators.join(', ')}; path ${e.path ?? '—'}`);
  const up = v.uplinks.map((u) => `  uplink ${u.name}: ${u.up ? 'up' : 'DOWN'}, tx ${u.txPackets}, rx ${u.rxPackets}`);
  return [`${node}:`, ...up, ...paths, ...fo, ...cache].join('\n');
}

/** The paths of `view` that leave through uplink `uplink` (mh) or go to a locator containing `locator` (ch). */
export function pathsVia(v: FailoverView, where: { uplink?: string; locator?: string }): PathStatus[] {
  return v.paths.filter((p) => (where.uplink === undefined || p.uplink === where.uplink) && (where.locator === undefined || locatorHas(p.locator, where.locator)));
}

/** Whether "addr:port" or "[v6]:port" names the address `addr`. */
export function locatorHas(locator: string, addr: string): boolean {
  const host = locator.startsWith('[') ? locator.slice(1, locator.indexOf(']')) : locator.slice(0, locator.lastIndexOf(':'));
  return host === addr;
}

/** Failovers recorded after `since` (ms epoch). */
export function failoversSince(v: FailoverView, since: number): FailoverRecord[] {
  return v.failovers.filter((f) => Date.parse(f.at) >= since);
}

/** Polls `probe` every `everyMs` until it returns a value other than null, or throws `what()` after `ms`. */
export async function waitFor<T>(probe: () => Promise<T | null>, ms: number, what: string | (() => Promise<string> | string), everyMs = 100): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await probe().catch(() => null);
    if (v !== null) return v;
    if (Date.now() > deadline) throw new Error(`${typeof what === 'string' ? what : await what()} (waited ${ms} ms)`);
    await sleep(everyMs);
  }
}

// 2. A checked flow with faults on one schedule.

const FLOWMETER = join(REPO, 'scripts', 'tools', 'flowmeter.ts');

export interface FaultStep {
  /** ms after sending starts. */
  atMs: number;
  label: string;
  run(): Promise<void>;
}

export interface FlowPlan {
  /** The sink's listen address and the source's destination (ch's host ID). */
  to: string;
  /** How long the source sends. */
  seconds: number;
  /** Where the measured window opens (ms after sending starts): gaps are counted from here. */
  windowFromMs: number;
  faults: readonly FaultStep[];
  /** After the last byte was due, how long a stalled flow may still take (default 15 s). */
  graceS?: number;
  port?: number;
  rrPort?: number;
}

export interface FaultDone {
  label: string;
  plannedMs: number;
  /** When the command returned, ms after sending starts (null: it failed). */
  doneMs: number | null;
  error: string | null;
}

export interface FlowResult {
  sink: SinkReportT;
  source: SourceReportT;
  faults: FaultDone[];
  /** Same byte count and sha256 on both ends, every byte checked at the sink. */
  intact: boolean;
  /** A socket error on either end of the bulk or the request/response connection. */
  reset: boolean;
  /** Both tools finished by themselves before the bound. */
  completed: boolean;
  /** Longest goodput gap (10 ms buckets) in the window, for the record. */
  gapMs: number;
  /** Longest time without an echo of the 10 ms request/response stream in the window. */
  rrGapMs: number | null;
  /** Bytes arrived in the last second of sending: the flow was moving again at the end. */
  movingAtEnd: boolean;
  /** The epoch ms at which sending started (bucket 0). */
  startAt: number;
  /** Wall time of runFlow, from spawning the tools to their reports. */
  wallMs: number;
  summary: string;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, Math.max(0, ms)));
const errText = (e: unknown): string => (e instanceof Error ? e.message : String(e)).split('\n')[0]?.slice(0, 300) ?? '';

/** node start-up under load on this 2-core box is up to ~2 s (scripts/bench/failover.ts). */
const LEAD_MS = 2_500;

/**
 * A bulk TCP flow (plus a 10 ms request/response stream) from mh to `plan.to` in ch, with the fault
 * steps run at their times; resolves when both tools have reported. Never leaves a process behind.
 */
export async function runFlow(tb: Testbed, plan: FlowPlan): Promise<FlowResult> {
  const port = plan.port ?? 5001;
  const rrPort = plan.rrPort ?? 5002;
  const graceS = plan.graceS ?? 15;
  const seed = randomBytes(16).toString('hex');
  const t0 = Date.now();
  const tail = (p: NsProcess): string => p.stderrTail().trim().split('\n').slice(-6).join(' | ');
  // A tool that dies while starting (seen once: source and sink both exited within 0.4 s, the cause
  // not captured, on a box where other work was changing the tree) is retried once, with its output
  // in the summary; a source that runs but cannot connect is not retried: that is the overlay
  // failing, which the caller must see.
  let started: { sink: NsProcess; source: NsProcess; startAt: number; until: number } | null = null;
  const crashes: string[] = [];
  for (let attempt = 1; started === null; attempt++) {
    const startAt = Date.now() + LEAD_MS;
    const until = startAt + (plan.seconds + graceS) * 1000;
    const sched = ['--start-at', String(startAt), '--fault-at', String(startAt + plan.windowFromMs), '--until', String(until), '--seed', seed];
    const tool = (node: 'mh' | 'ch', args: string[]): NsProcess => tb.spawn(node, process.execPath, ['--import', 'tsx', FLOWMETER, ...args, ...sched], { cwd: REPO });
    const sink = tool('ch', ['sink', '--listen', plan.to, '--port', String(port), '--rr-port', String(rrPort)]);
    const source = tool('mh', ['source', '--connect', plan.to, '--port', String(port), '--rr-port', String(rrPort), '--seconds', String(plan.seconds)]);
    while (!source.stderrTail().includes('flowmeter: connected') && source.running() && Date.now() < startAt + 3_000) await sleep(20);
    if (source.stderrTail().includes('flowmeter: connected')) {
      started = { sink, source, startAt, until };
      break;
    }
    const why = `source ${source.running() ? 'not connected 3 s after the start' : `exited: ${tail(source)}`}; sink ${sink.running() ? 'running' : `exited: ${tail(sink)}`}`;
    const crashed = !source.running();
    await Promise.all([sink.stop(500), source.stop(500)]);
    crashes.push(why);
    if (!crashed || attempt >= 2) throw new Error(`the flow did not start (${attempt} attempt(s)): ${crashes.join(' // ')}`);
  }
  const { sink, source, startAt, until } = started;
  const faults: FaultDone[] = [];
  try {
    const steps = [...plan.faults].sort((a, b) => a.atMs - b.atMs);
    for (const s of steps) {
      await sleep(startAt + s.atMs - Date.now());
      const f: FaultDone = { label: s.label, plannedMs: s.atMs, doneMs: null, error: null };
      try {
        await s.run();
        f.doneMs = Date.now() - startAt;
      } catch (e) {
        f.error = errText(e);
      }
      faults.push(f);
    }
    await Promise.race([Promise.all([sink.exited, source.exited]), sleep(until + 2_000 - Date.now())]);
  } finally {
    await Promise.all([sink.stop(1_000), source.stop(1_000)]);
  }
  const s = parseReport(sink.stdoutTail(), SinkReport);
  const c = parseReport(source.stdoutTail(), SourceReport);
  const intact = s.bytes > 0 && s.verified && s.bytes === c.bytes && s.sha256 === c.sha256;
  const reset = Boolean(s.reset || c.reset || s.rr?.reset || c.rr?.reset);
  const completed = Boolean(s.completed && c.completed);
  const lastSecond = s.buckets.slice(Math.floor(((plan.seconds - 1) * 1000) / s.bucket_ms), Math.floor((plan.seconds * 1000) / s.bucket_ms));
  const movingAtEnd = lastSecond.some((b) => b > 0);
  const rrGapMs = c.rr?.gap_ms ?? null;
  const summary =
    `${(s.bytes / 1e6).toFixed(0)} MB received of ${(c.bytes / 1e6).toFixed(0)} MB sent in ${plan.seconds} s; ` +
    `intact ${intact}${s.mismatch ? ` (first wrong byte at ${s.mismatch.first_offset})` : ''}, reset ${reset}` +
    `${s.error || c.error ? ` (${[s.error, c.error].filter((x) => x).join(', ')})` : ''}, completed ${completed}, ` +
    `goodput gap ${s.gap_ms} ms, rr gap ${rrGapMs ?? '—'} ms, moving at the end ${movingAtEnd}` +
    `${crashes.length > 0 ? ` (tools restarted once: ${crashes.join(' // ')})` : ''}; faults: ` +
    faults.map((f) => `${f.label} @${f.plannedMs}${f.error ? ` FAILED ${f.error}` : f.doneMs === null ? '' : ` (done ${f.doneMs})`}`).join(', ');
  return { sink: s, source: c, faults, intact, reset, completed, gapMs: s.gap_ms, rrGapMs, movingAtEnd, startAt, wallMs: Date.now() - t0, summary };
}

// 3. Faults the testbed has no single call for.

/**
 * Flapping: `node`'s `dev` goes down and comes back up `downMs` later, once every `periodMs`, `count`
 * times (on ispa's to-mh, mh sees carrier come and go). Resolves after the last up; the link is up
 * at the end even when a command failed.
 */
export async function flap(tb: Testbed, node: 'ispa' | 'ispb' | 'mh', dev: string, o: { periodMs: number; downMs: number; count: number }): Promise<number> {
  const t0 = Date.now();
  let done = 0;
  try {
    for (let i = 0; i < o.count; i++) {
      await sleep(t0 + i * o.periodMs - Date.now());
      await tb.linkDown(node, dev);
      await sleep(t0 + i * o.periodMs + o.downMs - Date.now());
      await tb.linkUp(node, dev);
      done++;
    }
  } finally {
    await tb.linkUp(node, dev).catch(() => {});
  }
  return done;
}

/**
 * Packets each uplink of mh sent (agent counters) over `ms`: which uplink carries mh's traffic now.
 * Probes are ~10 datagrams/s per path; a bulk flow is thousands.
 */
export async function uplinkTxOver(tb: Testbed, ms: number): Promise<Record<string, number>> {
  const a = await failoverView(tb, 'mh');
  await sleep(ms);
  const b = await failoverView(tb, 'mh');
  const out: Record<string, number> = {};
  for (const u of b.uplinks) out[u.name] = u.txPackets - (a.uplinks.find((x) => x.name === u.name)?.txPackets ?? 0);
  return out;
}
