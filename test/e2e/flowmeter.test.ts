/**
 * flowmeter through the plain testbed underlay (no overlay): a 600 ms silent blackhole in ispa, then
 * cleared. The sink must see a gap at least as long as the blackhole, starting at it, and no longer
 * than the blackhole plus TCP's next retransmission (RTO backoff: 0.2, 0.4, 0.8 s...), with every
 * byte intact and no reset. Fails, never skips, without root.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseReport, SinkReport, SourceReport } from '../../scripts/tools/flowmeter.ts';
import { TESTBED, up, type Testbed } from '../../scripts/testbed/topology.ts';
import { REPO } from '../helpers/agents.ts';
import { requireRoot, uniquePrefix } from '../helpers/netns.ts';

const TOOL = join(REPO, 'scripts', 'tools', 'flowmeter.ts');
const BLACKHOLE_MS = 600;
const FAULT_AT_MS = 1_500;
const SECONDS = 4;
let tb: Testbed;

describe('flowmeter in the testbed', () => {
  beforeAll(async () => {
    requireRoot();
    tb = await up({ prefix: uniquePrefix('fm') });
    // A modest rate keeps the two tools' CPU low on a shared 2-core box.
    await tb.rateLimit('ispa', TESTBED.dev.ispa.core, 100);
  });

  afterAll(async () => {
    await tb?.down();
  });

  it('measures a silent blackhole as a goodput gap of about its length, data intact', async () => {
    const ch = TESTBED.v4.ch.core;
    // Both tools start together; the source retries until the sink listens. Node + tsx takes up to
    // ~2 s to start on a busy box: sending begins 3 s from now, the same instant for both.
    const startAt = Date.now() + 3_000;
    const faultAt = startAt + FAULT_AT_MS;
    const until = startAt + (SECONDS + 6) * 1000;
    const sched = ['--start-at', String(startAt), '--fault-at', String(faultAt), '--until', String(until)];
    const node = (args: string[]): string[] => ['--import', 'tsx', TOOL, ...args];
    const sink = tb.spawn('ch', process.execPath, node(['sink', '--listen', '0.0.0.0', '--port', '5001', '--rr-port', '5002', ...sched]), { cwd: REPO });
    const source = tb.spawn('mh', process.execPath, node(['source', '--connect', ch, '--port', '5001', '--rr-port', '5002', '--seconds', String(SECONDS), ...sched]), {
      cwd: REPO,
    });
    try {
      await new Promise((r) => setTimeout(r, faultAt - Date.now()));
      await tb.blackhole('ispa');
      await new Promise((r) => setTimeout(r, faultAt + BLACKHOLE_MS - Date.now()));
      await tb.clearBlackhole('ispa');
      await Promise.race([Promise.all([sink.exited, source.exited]), new Promise((r) => setTimeout(r, until + 3_000 - Date.now()))]);
    } finally {
      await Promise.all([sink.stop(), source.stop()]);
    }
    const s = parseReport(sink.stdoutTail(), SinkReport);
    const c = parseReport(source.stdoutTail(), SourceReport);
    const why = `sink: ${JSON.stringify({ ...s, buckets: undefined })}\nsource: ${JSON.stringify({ ...c, rr: { ...c.rr, echo_ms: undefined } })}`;

    expect(c.late_start_ms, why).toBeLessThan(500);
    expect(s.completed && c.completed, why).toBe(true);
    expect(s.reset || c.reset, why).toBe(false);
    expect(s.bytes, why).toBeGreaterThan(10_000_000);
    expect(s.bytes, why).toBe(c.bytes);
    expect(s.sha256, why).toBe(c.sha256);

    // The gap opens at the blackhole (after the bytes already in flight and queued in tbf, up to
    // ~150 ms, have drained), lasts until after the clear (one 10 ms bucket of slack), and ends with
    // TCP's next retransmission, well before a second backoff step would have passed.
    const gapStart = s.gap_start_ms ?? -1;
    expect(gapStart, why).toBeGreaterThanOrEqual(FAULT_AT_MS - 10);
    expect(gapStart, why).toBeLessThanOrEqual(FAULT_AT_MS + 250);
    expect(gapStart + s.gap_ms, why).toBeGreaterThanOrEqual(FAULT_AT_MS + BLACKHOLE_MS - 10);
    expect(s.gap_ms, why).toBeGreaterThanOrEqual(BLACKHOLE_MS - 250);
    expect(s.gap_ms, why).toBeLessThanOrEqual(BLACKHOLE_MS + 1_000);
    expect(s.fault_at_ms).toBe(FAULT_AT_MS);
    expect(s.buckets.length * s.bucket_ms, why).toBeGreaterThanOrEqual(SECONDS * 1000);

    // The request/response stream stalls through the blackhole too, loses nothing, and resumes.
    const rr = c.rr;
    expect(rr, why).not.toBeNull();
    if (rr === null) return;
    expect(rr.reset || (s.rr?.reset ?? true), why).toBe(false);
    expect(rr.lost, why).toBe(0);
    expect(rr.sent, why).toBeGreaterThan(300);
    expect(rr.gap_ms, why).toBeGreaterThanOrEqual(BLACKHOLE_MS - 250);
    expect(rr.gap_ms, why).toBeLessThanOrEqual(BLACKHOLE_MS + 1_500);
    expect(s.rr?.requests, why).toBe(rr.sent);
  });
});
