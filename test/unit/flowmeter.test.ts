import { describe, expect, it } from 'vitest';
import {
  ByteStream,
  DEFAULT_SEED,
  firstMismatch,
  degradedMs,
  halfRateMs,
  firstByteMs,
  longestGap,
  longestIntervalGap,
  meanMbps,
  parseCli,
  parseReport,
  rebucket,
  ReportError,
  Report,
  SinkReport,
  SourceReport,
} from '../../scripts/tools/flowmeter.ts';
import { counterDelta, parseNetstat, parseSsTcpInfo } from '../../scripts/bench/mptcp.ts';

/** A series of `n` 10 ms buckets of `b` bytes with the given bucket indices empty. */
function series(n: number, empty: Iterable<number>, b = 250_000): number[] {
  const s = new Array<number>(n).fill(b);
  for (const i of empty) s[i] = 0;
  return s;
}
const range = (a: number, b: number): number[] => Array.from({ length: b - a }, (_, k) => a + k);

describe('longestGap over a bucket series', () => {
  it('is zero for a flow that never pauses', () => {
    expect(longestGap(series(100, []), 10)).toEqual({ ms: 0, startMs: null });
  });

  it('measures the longest run of empty buckets, in ms, and where it starts', () => {
    const s = series(100, [...range(10, 13), ...range(40, 52)]);
    expect(longestGap(s, 10)).toEqual({ ms: 120, startMs: 400 });
  });

  it('only looks inside the window, and clips a run already in progress at its start', () => {
    const s = series(100, [...range(10, 30), ...range(60, 65)]);
    // The 200 ms gap at 100..300 ms is before the window; the one in progress at 250 ms counts from 250.
    expect(longestGap(s, 10, 250, 1000)).toEqual({ ms: 50, startMs: 250 });
    expect(longestGap(s, 10, 300, 1000)).toEqual({ ms: 50, startMs: 600 });
  });

  it('counts a run in progress at the window start in full when asked not to clip', () => {
    const s = series(100, [...range(10, 30), ...range(60, 65)]);
    expect(longestGap(s, 10, 250, 1000, false)).toEqual({ ms: 200, startMs: 100 });
    expect(longestGap(s, 10, 300, 1000, false)).toEqual({ ms: 50, startMs: 600 });
    expect(longestGap(series(10, range(0, 4)), 10, 20, 100, false)).toEqual({ ms: 40, startMs: 0 });
  });

  it('counts buckets the series never reached as empty: a flow that stalled until the bound', () => {
    const s = series(30, range(25, 30)); // bytes until 250 ms, then nothing, series ends at 300 ms
    expect(longestGap(s, 10, 200, 1000)).toEqual({ ms: 750, startMs: 250 });
  });

  it('works with coarser buckets', () => {
    expect(longestGap([5, 0, 0, 7], 50)).toEqual({ ms: 100, startMs: 50 });
  });

  it('rejects a non-positive bucket size', () => {
    expect(() => longestGap([1], 0)).toThrow(RangeError);
  });
});

describe('other series helpers', () => {
  it('finds the first bucket with bytes', () => {
    expect(firstByteMs([0, 0, 3, 0, 5], 10)).toBe(20);
    expect(firstByteMs([0, 0], 10)).toBeNull();
  });

  it('re-buckets by summing', () => {
    expect(rebucket([1, 2, 3, 4, 5], 2)).toEqual([3, 7, 5]);
    expect(() => rebucket([1], 0)).toThrow(RangeError);
  });

  it('computes Mbit/s over a window', () => {
    // 250 000 bytes per 10 ms = 200 Mbit/s.
    expect(meanMbps(series(100, []), 10, 0, 1000)).toBeCloseTo(200, 6);
    expect(meanMbps(series(100, range(0, 50)), 10, 0, 1000)).toBeCloseTo(100, 6);
    expect(meanMbps([], 10, 0, 100)).toBeNull();
  });

  it('counts the time spent below half the reference rate, in 100 ms steps', () => {
    // 200 Mbit/s, then 10% of it from 1 s to 1.3 s, then nothing for 100 ms, then back.
    const s = series(300, range(140, 150));
    for (const i of range(100, 130)) s[i] = 25_000;
    expect(degradedMs(s, 10, 1000, 3000, 200)).toBe(400);
    expect(degradedMs(s, 10, 1500, 3000, 200)).toBe(0);
  });

  it('says when the flow is back at half the reference rate after its dip (window centre; 0 when never below)', () => {
    // 200 Mbit/s, nothing from 1 s to 1.3 s, then back at once: back at half rate 300 ms after 1 s.
    const stop = series(300, range(100, 130));
    expect(halfRateMs(stop, 10, 1000, 3000, 200)).toBe(300);
    expect(halfRateMs(stop, 10, 1500, 3000, 200)).toBe(0);
    // A trickle at 10% of the rate until 1.4 s is not "back"; the full rate from 1.4 s is.
    const trickle = series(300, range(100, 140));
    for (const i of range(100, 140)) trickle[i] = 25_000;
    expect(halfRateMs(trickle, 10, 1000, 3000, 200)).toBe(400);
    // What was in flight arrives for 100 ms after the fault, then 200 ms of nothing: 300 ms.
    expect(halfRateMs(series(300, range(110, 130)), 10, 1000, 3000, 200)).toBe(300);
    // A stall that begins 1 s after the fault is not the fault's (on the shared box: the sink without CPU).
    expect(halfRateMs(series(300, range(200, 210)), 10, 1000, 3000, 200)).toBe(0);
    // Never back: null, the caller counts it to its bound.
    expect(halfRateMs(series(300, range(100, 300)), 10, 1000, 3000, 200)).toBeNull();
  });
});

describe('ByteStream: the bytes a source sends, checkable at the sink', () => {
  const seed = Buffer.from(DEFAULT_SEED, 'hex');

  it('is the same stream however it is cut, and any slice of it can be made directly', () => {
    const a = new ByteStream(seed);
    const whole = Buffer.concat([a.next(1000), a.next(7), a.next(65_536)]);
    const b = new ByteStream(seed);
    expect(Buffer.concat([b.next(3), b.next(66_540)]).equals(whole)).toBe(true);
    expect(ByteStream.slice(seed, 0, whole.length).equals(whole)).toBe(true);
    expect(ByteStream.slice(seed, 1_003, 500).equals(whole.subarray(1_003, 1_503))).toBe(true);
    expect(new ByteStream(Buffer.alloc(16, 1)).next(64).equals(whole.subarray(0, 64))).toBe(false);
  });

  it('finds where misplaced bytes were sent, and says so when they are garbage', () => {
    const sent = ByteStream.slice(seed, 0, 3_000_000);
    const needle = sent.subarray(1_234_567, 1_234_567 + 64);
    expect(ByteStream.sourceOffsetOf(seed, needle, 2_000_000)).toBe(1_234_567);
    expect(ByteStream.sourceOffsetOf(seed, Buffer.alloc(64, 7), 2_000_000)).toBeNull();
  });

  it('locates the first differing byte of a chunk', () => {
    const x = Buffer.from('abcdef');
    expect(firstMismatch(x, Buffer.from('abcdef'))).toBe(-1);
    expect(firstMismatch(x, Buffer.from('abcXef'))).toBe(3);
    expect(firstMismatch(x, Buffer.from('abc'))).toBe(3);
  });
});

describe('longestIntervalGap over event times (rr echoes)', () => {
  it('is the longest time between consecutive echoes', () => {
    expect(longestIntervalGap([10, 20, 30, 300, 310], 0, 310)).toEqual({ ms: 270, startMs: 30 });
  });

  it('clips at the window start and runs to the window end when the stream never recovered', () => {
    expect(longestIntervalGap([10, 20, 30, 40], 25, 40)).toEqual({ ms: 10, startMs: 30 });
    expect(longestIntervalGap([10, 20, 30], 25, 1000)).toEqual({ ms: 970, startMs: 30 });
    expect(longestIntervalGap([], 100, 400)).toEqual({ ms: 300, startMs: 100 });
  });
});

const sink = {
  tool: 'flowmeter',
  mode: 'sink',
  reset: false,
  error: null,
  completed: true,
  origin_epoch_ms: 1_700_000_000_000,
  fault_at_ms: 3000,
  end_ms: 7010.5,
  default_congestion: 'bbr',
  bytes: 1000,
  sha256: 'ab'.repeat(32),
  verified: true,
  mismatch: null,
  bucket_ms: 10,
  buckets: [0, 500, 500],
  gap_ms: 0,
  gap_start_ms: null,
  max_gap_ms: 0,
  first_byte_ms: 10,
  sampler_max_interval_ms: 6.2,
  rr: {
    tool: 'flowmeter',
    mode: 'rr-server',
    reset: false,
    error: null,
    completed: true,
    origin_epoch_ms: 1_700_000_000_000,
    fault_at_ms: 3000,
    end_ms: 7000,
    default_congestion: 'bbr',
    requests: 700,
    echoed_bytes: 44_800,
  },
};

describe('parseReport', () => {
  it('narrows the last JSON line of the output', () => {
    const out = `flowmeter: listening\n${JSON.stringify({ ...sink, bytes: 1 })}\n${JSON.stringify(sink)}\n`;
    const r = parseReport(out, SinkReport);
    expect(r.bytes).toBe(1000);
    expect(r.rr?.requests).toBe(700);
    expect(parseReport(JSON.stringify(sink), Report).mode).toBe('sink');
  });

  it('says what is wrong with a missing, broken or foreign report', () => {
    expect(() => parseReport('', SinkReport)).toThrow(/no JSON report/);
    expect(() => parseReport('{"bytes": 1', SinkReport)).toThrow(/not JSON/);
    expect(() => parseReport(JSON.stringify({ ...sink, bytes: 'many' }), SinkReport)).toThrow(/bytes/);
    expect(() => parseReport(JSON.stringify(sink), SourceReport)).toThrow(ReportError);
  });
});

describe('parseCli', () => {
  const now = 1_700_000_000_000;
  it('reads a source command line with its schedule', () => {
    const c = parseCli(['source', '--connect', 'fd00:1::c', '--port', '5001', '--rr-port', '5002', '--seconds', '7', '--start-at', String(now + 2000), '--fault-at', String(now + 5000), '--until', String(now + 14000)], now);
    expect(c).toMatchObject({ mode: 'source', host: 'fd00:1::c', port: 5001, rrPort: 5002, seconds: 7, bucketMs: 10, intervalMs: 10 });
    expect(c.sched).toEqual({ startAt: now + 2000, faultAt: now + 5000, until: now + 14000 });
  });

  it('defaults the schedule and bounds a client by seconds + 10 s', () => {
    const c = parseCli(['rr-client', '--connect', '192.0.2.1', '--port', '1', '--seconds', '2'], now);
    expect(c.sched).toEqual({ startAt: now + 500, faultAt: null, until: now + 500 + 12_000 });
  });

  it('refuses what it cannot run', () => {
    expect(() => parseCli(['drain'], now)).toThrow(/unknown mode/);
    expect(() => parseCli(['sink', '--port', '1'], now)).toThrow(/--listen/);
    expect(() => parseCli(['source', '--connect', 'x', '--port', '1'], now)).toThrow(/--seconds/);
    expect(() => parseCli(['sink', '--listen', '::', '--port', '70000'], now)).toThrow(/--port/);
    expect(() => parseCli(['sink', '--listen', '::', '--port', '1', '--bogus', '1'], now)).toThrow();
    expect(() => parseCli(['sink', '--listen', '::', '--port', '1', '--start-at', '10', '--until', '5'], now)).toThrow(/--until/);
    expect(() => parseCli(['sink', '--listen', '::', '--port', '1', '--seed', 'xyz'], now)).toThrow(/--seed/);
  });
});

describe('MPTCP helpers (scripts/bench/mptcp.ts)', () => {
  it('parses /proc/net/netstat groups and counter deltas', () => {
    const text = 'TcpExt: SyncookiesSent Foo\nTcpExt: 1 2\nMPTcpExt: MPCapableSYNTX MPJoinSynAckRx\nMPTcpExt: 3 4\n';
    const n = parseNetstat(text);
    expect(n.MPTcpExt).toEqual({ MPCapableSYNTX: 3, MPJoinSynAckRx: 4 });
    expect(n.TcpExt?.Foo).toBe(2);
    expect(counterDelta({ a: 1, b: 2 }, { a: 1, b: 5, c: 1 })).toEqual({ b: 3, c: 1 });
  });

  it('parses ss -tniH with and without the state column', () => {
    const text = [
      'ESTAB 0      0      192.0.2.65%eth-b:37231  203.0.113.2:5001',
      '\t cubic wscale:10,10 rto:204 rtt:0.224/0.141 mss:1448 tcp-ulp-mptcp flags:Jjec',
      '0 0 [fd00:1::a]:41000 [fd00:1::c]:5002',
      '\t ts sack bbr wscale:7,7 rto:201',
    ].join('\n');
    expect(parseSsTcpInfo(text)).toEqual([
      { local: '192.0.2.65%eth-b:37231', peer: '203.0.113.2:5001', congestion: 'cubic', mptcpSubflow: true },
      { local: '[fd00:1::a]:41000', peer: '[fd00:1::c]:5002', congestion: 'bbr', mptcpSubflow: false },
    ]);
  });
});

describe('failover bench helpers (scripts/bench/failover.ts, plot.ts)', async () => {
  const { parseOptions, betterReps, representative, summarize, missingTools, SCENARIOS, V6_DEFAULT, meetsTarget, betterThanMptcp, verifyMptcp, dominantUplink } =
    await import('../../scripts/bench/failover.ts');
  const { UsageProblem } = await import('../../scripts/bench/table.ts');
  const { goodputRows } = await import('../../scripts/bench/plot.ts');
  type Run = Parameters<typeof summarize>[0][number];
  const run = (system: 'realmnet' | 'mptcp', rep: number, gap: number, extra: Partial<Run> = {}): Run =>
    ({
      scenario: 'carrier-loss',
      system,
      rep,
      gap_ms: gap,
      rr_gap_ms: gap + 5,
      reset: false,
      data_intact: true,
      completed: true,
      recovered: true,
      degraded_ms: 100,
      goodput_mbps_before: 180,
      error: null,
      sink: null,
      ...extra,
    }) as Run;

  it('parses the command line, and refuses unknown scenarios, systems and impossible schedules', () => {
    const o = parseOptions(['--reps', '2', '--only', 'silent-blackhole,carrier-loss', '--systems', 'mptcp']);
    expect(o.reps).toBe(2);
    // Both families by default, and both scenarios are in the default IPv6 set.
    expect(o.scenarios.map((s) => s.name)).toEqual(['carrier-loss', 'silent-blackhole', 'carrier-loss-v6', 'silent-blackhole-v6']);
    expect(o.systems).toEqual(['mptcp']);
    expect(o.capMbit).toBe(o.rateMbit);
    // Every scenario on IPv4, the default IPv6 set after them.
    expect(parseOptions([]).scenarios.map((s) => s.name)).toEqual([...SCENARIOS.map((s) => s.name), ...V6_DEFAULT.map((n) => `${n}-v6`)]);
    expect(() => parseOptions(['--only', 'meteor-strike'])).toThrow(UsageProblem);
    expect(() => parseOptions(['--systems', 'nebula'])).toThrow(UsageProblem);
    expect(() => parseOptions(['--seconds', '4', '--fault-at', '3'])).toThrow(/fault-at/);
    expect(() => parseOptions(['--reps', '0'])).toThrow(UsageProblem);
  });

  it('runs the IPv6 underlay as <name>-v6: the default set, all with --all-v6, or the ones named', () => {
    const names = (argv: string[]): string[] => parseOptions(argv).scenarios.map((s) => s.name);
    const only = ['--only', 'carrier-loss,double-failure,two-carrier-losses,idle-uplink-loss'];
    expect(names([...only, '--families', 'v4,v6'])).toEqual(['carrier-loss', 'double-failure', 'idle-uplink-loss', 'two-carrier-losses', 'carrier-loss-v6', 'double-failure-v6']);
    expect(names([...only, '--families', 'v6', '--all-v6'])).toEqual(['carrier-loss-v6', 'double-failure-v6', 'idle-uplink-loss-v6', 'two-carrier-losses-v6']);
    expect(names(['--only', 'uplink-restored-v6'])).toEqual(['uplink-restored-v6']);
    expect(parseOptions(['--only', 'carrier-loss-v6']).scenarios[0]).toMatchObject({ family: 'v6', base: 'carrier-loss', targetMs: 50, targetMaxMs: 100 });
    expect(() => parseOptions(['--only', 'carrier-loss-v6', '--families', 'v4'])).toThrow(/leaves out v6/);
    expect(() => parseOptions(['--only', 'random-loss-30', '--families', 'v6'])).toThrow(/nothing to run/);
    expect(() => parseOptions(['--families', 'v5'])).toThrow(UsageProblem);
  });

  it('meets the target only with the median within target_ms and the worst within target_max_ms, on the expected uplink', () => {
    const sc = { targetMs: 50, targetMaxMs: 100 };
    const runs = [run('realmnet', 1, 40), run('realmnet', 2, 50), run('realmnet', 3, 90)];
    expect(meetsTarget(sc, runs, summarize(runs))).toBe(true);
    const slowOnce = [...runs.slice(0, 2), run('realmnet', 3, 140)];
    expect(meetsTarget(sc, slowOnce, summarize(slowOnce))).toBe(false); // median 50, but max 140 > 100
    const slowMedian = [run('realmnet', 1, 60), run('realmnet', 2, 70), run('realmnet', 3, 40)];
    expect(meetsTarget(sc, slowMedian, summarize(slowMedian))).toBe(false);
    expect(meetsTarget({ targetMs: null, targetMaxMs: null }, runs, summarize(runs))).toBeNull();
    const onC = { targetMs: 100, targetMaxMs: null, expectUplink: 'ispc' as const };
    const ended = (u: 'ispb' | 'ispc') => [run('realmnet', 1, 40, { uplink_after_fault: u })];
    expect(meetsTarget(onC, ended('ispc'), summarize(ended('ispc')))).toBe(true);
    expect(meetsTarget(onC, ended('ispb'), summarize(ended('ispb')))).toBe(false);
  });

  it('is better than MPTCP only when both the bulk and the rr medians are lower', () => {
    const rn = summarize([run('realmnet', 1, 100, { rr_gap_ms: 100 })]);
    expect(betterThanMptcp(rn, summarize([run('mptcp', 1, 200, { rr_gap_ms: 200 })]))).toBe(true);
    expect(betterThanMptcp(rn, summarize([run('mptcp', 1, 200, { rr_gap_ms: 50 })]))).toBe(false);
    expect(betterThanMptcp(rn, summarize([run('mptcp', 1, 200, { rr_gap_ms: null })]))).toBeNull();
    expect(betterThanMptcp(rn, null)).toBeNull();
  });

  it('verifies MPTCP: the counters and every expected subflow, naming what is missing', () => {
    const expected: [string, string][] = [
      ['192.0.2.1', '203.0.113.2'],
      ['192.0.2.65', '203.0.113.2'],
      ['192.0.2.129', '203.0.113.2'],
      ['192.0.2.1', '203.0.113.130'],
    ];
    const seen = expected.map(([l, p]) => `${l} → ${p}`);
    const counters = { MPCapableSYNACKRX: 2, MPJoinSynAckRx: 4, AddAddr: 2 };
    expect(verifyMptcp(seen, expected, counters)).toEqual({ verified: true, missing: [] });
    expect(verifyMptcp(seen.slice(0, 3), expected, counters).missing).toEqual(['no subflow 192.0.2.1 → 203.0.113.130']);
    expect(verifyMptcp(seen, expected, { MPCapableSYNACKRX: 2, MPJoinSynAckRx: 4 }).missing).toEqual(["ch's ADD_ADDR not received"]);
  });

  it('names the uplink that carried at least 90% of what mh sent', () => {
    expect(dominantUplink({ ispa: 0.1, ispb: 0.2, ispc: 50 })).toBe('ispc');
    expect(dominantUplink({ ispa: 20, ispb: 20, ispc: 0 })).toBeNull();
    expect(dominantUplink({ ispa: null, ispb: null, ispc: null })).toBeNull();
  });

  it('names a reference that cannot run instead of measuring it (mptcpize missing, chrt missing)', () => {
    const none = () => false;
    const all = () => true;
    expect(missingTools(parseOptions(['--systems', 'realmnet,mptcp']), all)).toEqual([]);
    expect(missingTools(parseOptions(['--systems', 'realmnet,mptcp']), (t) => t !== 'mptcpize')).toEqual(['mptcpize']);
    expect(missingTools(parseOptions(['--systems', 'realmnet']), (t) => t !== 'mptcpize')).toEqual([]);
    expect(missingTools({ systems: ['realmnet'], sched: 'rr' }, none)).toEqual(['chrt']);
  });

  it('summarizes runs: median and max gap, resets, integrity, recoveries', () => {
    const s = summarize([run('realmnet', 1, 80), run('realmnet', 2, 120, { reset: true }), run('realmnet', 3, 90, { data_intact: false, recovered: false })]);
    expect(s).toMatchObject({ runs: 3, gap_ms_median: 90, gap_ms_max: 120, gap_ms_min: 80, resets: 1, data_intact: false, recovered: 2, rr_gap_ms_median: 95 });
    expect(summarize([])).toBeNull();
  });

  it('picks the median-gap run to plot, and counts repetitions where realmnet was shorter', () => {
    const runs = [run('realmnet', 1, 300), run('realmnet', 2, 100), run('realmnet', 3, 200), run('mptcp', 1, 250), run('mptcp', 2, 250), run('mptcp', 3, 150)];
    const sink = { buckets: [], bucket_ms: 10 } as unknown as Run['sink'];
    expect(representative(runs.filter((r) => r.system === 'realmnet').map((r) => ({ ...r, sink })))?.rep).toBe(3);
    expect(representative(runs)).toBeNull(); // no sink reports: nothing to plot
    expect(betterReps(runs)).toBe('1/3');
    expect(betterReps(runs.filter((r) => r.system === 'mptcp'))).toBeNull();
  });

  it('turns bucket series into Mbit/s steps for the plot', () => {
    const rows = goodputRows([{ system: 'realmnet', rep: 1, gapMs: 0, buckets: [125_000, 125_000, 0, 0, 62_500], bucketMs: 10 }], 20);
    expect(rows).toEqual([
      { system: 'realmnet', t: 0, mbps: 100 },
      { system: 'realmnet', t: 0.02, mbps: 0 },
      { system: 'realmnet', t: 0.04, mbps: 25 },
    ]);
  });
});
