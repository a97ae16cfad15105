/**
 * flowmeter: a goodput meter for failover measurements, run inside network namespaces.
 *
 *   sink      TCP server: reads in large chunks, hashes everything (sha256), checks every byte against the
 *             expected stream (see ByteStream), and counts delivered bytes
 *             into fixed buckets (10 ms) from a timer that samples a counter (never a timestamp per read:
 *             on 2 cores a receiver that wakes per small read costs more CPU than the flow it measures).
 *             With --rr-port it also runs the request/response echo server in the same process.
 *   source    TCP client: sends the byte stream of --seed for --seconds (or --bytes), hashing what it wrote.
 *             With --rr-port it also runs the request/response client in the same process.
 *   rr-server echoes 64-byte messages (TCP_NODELAY).
 *   rr-client sends one 64-byte message every 10 ms and timestamps each echo.
 *
 * Each mode prints ONE JSON line on stdout when it is done (shapes: SinkReport, SourceReport,
 * RrClientReport, RrServerReport below; parse them with parseReport). Progress goes to stderr; a
 * server writes "flowmeter: listening" once it accepts connections.
 *
 * Time: all processes share the box's clock, so the harness hands every process the same absolute
 * schedule in epoch milliseconds: --start-at (sending begins; bucket 0 starts here), --fault-at (the
 * fault window opens: gaps are measured from here to the end of the flow) and --until (the hard bound:
 * whatever is still open is destroyed, the report says completed: false, and a stall counts up to
 * here). Nothing in this tool can hang past --until.
 *
 * Congestion control is not chosen here: Node cannot set TCP_CONGESTION on a socket, and a netns
 * other than the root one may not make cubic its default while cubic is not in the (global)
 * net.ipv4.tcp_allowed_congestion_control. The bench sets it per route (`ip route ... congctl cubic`),
 * which the kernel applies to every TCP socket (and MPTCP subflow) using that route, and checks it
 * with `ss -ti`. `default_congestion` in the reports is the namespace's default, for the record.
 *
 * MPTCP: run the same tool under `mptcpize run node --import tsx flowmeter.ts ...` (LD_PRELOAD turns
 * its TCP sockets into IPPROTO_MPTCP; checked with `ss -Mi` and the MPTcpExt counters: it works
 * with Node 20, so there is no separate Python tool).
 *
 *   node --import tsx scripts/tools/flowmeter.ts sink   --listen :: --port 5001 --rr-port 5002 --fault-at T
 *   node --import tsx scripts/tools/flowmeter.ts source --connect fd00:1::c --port 5001 --rr-port 5002 --seconds 8
 */
import { createCipheriv, createHash, type Cipher } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { z } from 'zod';

// 1. Pure measurement functions (unit-tested).

export const RR_MESSAGE_BYTES = 64;
export const DEFAULT_BUCKET_MS = 10;
export const DEFAULT_RR_INTERVAL_MS = 10;

export interface Gap {
  /** Length in ms (a multiple of the bucket size for bucket series). */
  ms: number;
  /** Where it starts, in ms from the series origin (null when there is no gap). */
  startMs: number | null;
}

/**
 * The longest run of buckets with no new bytes inside the window [fromMs, toMs), in ms. Bucket i
 * covers [i*bucketMs, (i+1)*bucketMs); buckets the series does not reach (the flow stalled until the
 * bound) count as empty. A run already in progress at fromMs counts from fromMs, or from its real
 * start with `clip: false` (to ask "was the flow moving at fromMs?", e.g. when an uplink comes back).
 */
export function longestGap(buckets: readonly number[], bucketMs: number, fromMs = 0, toMs = buckets.length * bucketMs, clip = true): Gap {
  if (!(bucketMs > 0)) throw new RangeError(`bucketMs ${bucketMs} must be positive`);
  const first = Math.max(0, Math.floor(fromMs / bucketMs));
  const end = Math.ceil(toMs / bucketMs);
  let best = 0;
  let bestStart = -1;
  let run = 0;
  if (!clip) for (let i = first - 1; i >= 0 && (buckets[i] ?? 0) === 0; i--) run++;
  for (let i = first; i < end; i++) {
    if ((buckets[i] ?? 0) > 0) {
      run = 0;
      continue;
    }
    run++;
    if (run > best) {
      best = run;
      bestStart = i - run + 1;
    }
  }
  return { ms: best * bucketMs, startMs: bestStart < 0 ? null : bestStart * bucketMs };
}

/** The first bucket that holds bytes, in ms from the origin, or null. */
export function firstByteMs(buckets: readonly number[], bucketMs: number): number | null {
  const i = buckets.findIndex((b) => b > 0);
  return i < 0 ? null : i * bucketMs;
}

/**
 * The longest interval with no event (e.g. echoes received) inside [fromMs, toMs], for sorted event
 * times: the interval open at fromMs counts from fromMs, the one open at toMs up to toMs.
 */
export function longestIntervalGap(times: readonly number[], fromMs: number, toMs: number): Gap {
  let best = 0;
  let bestStart: number | null = null;
  let prev = fromMs;
  for (const t of times) {
    if (t <= fromMs) continue;
    if (t > toMs) break;
    if (t - prev > best) {
      best = t - prev;
      bestStart = prev;
    }
    prev = t;
  }
  if (toMs - prev > best) {
    best = toMs - prev;
    bestStart = prev;
  }
  return { ms: best, startMs: bestStart };
}

/** Sums a bucket series into coarser buckets (e.g. 10 ms → 100 ms for a plot). */
export function rebucket(buckets: readonly number[], factor: number): number[] {
  if (!Number.isInteger(factor) || factor < 1) throw new RangeError(`factor ${factor} must be a positive integer`);
  const out: number[] = [];
  for (let i = 0; i < buckets.length; i += factor) {
    let s = 0;
    for (let j = i; j < Math.min(i + factor, buckets.length); j++) s += buckets[j] ?? 0;
    out.push(s);
  }
  return out;
}

/** Goodput in Mbit/s of the bytes delivered in [fromMs, toMs), or null for an empty window. */
export function meanMbps(buckets: readonly number[], bucketMs: number, fromMs: number, toMs: number): number | null {
  const a = Math.max(0, Math.floor(fromMs / bucketMs));
  const b = Math.min(buckets.length, Math.floor(toMs / bucketMs));
  if (b <= a) return null;
  let s = 0;
  for (let i = a; i < b; i++) s += buckets[i] ?? 0;
  return (s * 8) / ((b - a) * bucketMs * 1000);
}

/**
 * Time spent below `fraction` of a reference rate after `fromMs`, in whole `stepMs` steps up to
 * `toMs`: the gap says how long nothing arrived; this says how long the flow was crippled (a
 * trickle of retransmissions ends a gap but not the damage).
 */
export function degradedMs(buckets: readonly number[], bucketMs: number, fromMs: number, toMs: number, refMbps: number, fraction = 0.5, stepMs = 100): number {
  let total = 0;
  for (let t = fromMs; t + stepMs <= toMs; t += stepMs) {
    const m = meanMbps(buckets, bucketMs, t, t + stepMs) ?? 0;
    if (m < fraction * refMbps) total += stepMs;
  }
  return total;
}

/**
 * How long after `fromMs` the flow took to be back at `fraction` (half) of a reference rate. Windows
 * of `windowMs` slide bucket by bucket from `fromMs`: the first one below the line that starts within
 * `dipWithinMs` of `fromMs` is the dip (it may come a little after the fault, while what was already
 * in flight still arrives), and the answer is the centre of the first window after it back at or
 * above the line, from `fromMs`; the centre makes a full stop of G ms starting at the fault, followed
 * by the full rate, read as G. 0 when no window starting within `dipWithinMs` falls below the line;
 * null when the flow dipped and never came back before `toMs` (the caller counts that to its bound,
 * like a gap). Unlike degradedMs (the total time below the line, in 100 ms steps, wherever it falls)
 * this is one recovery time.
 *
 * Why dipWithinMs (500 ms): what was in flight when a path failed drains within about one RTT plus
 * the testbed's tbf queues (≤ 50 ms each), far less than that; a dip that begins later is not this
 * fault's. On the shared 2-core box it is typically the sink itself going without CPU for 50–100 ms
 * (the failover bench notes those), which without the limit read as a 2.5 s "recovery" of a flow the
 * fault never slowed (idle-uplink-loss, 2026-12-04).
 */
export function halfRateMs(
  buckets: readonly number[],
  bucketMs: number,
  fromMs: number,
  toMs: number,
  refMbps: number,
  fraction = 0.5,
  windowMs = 100,
  dipWithinMs = 500,
): number | null {
  const line = fraction * refMbps;
  let dipped = false;
  for (let t = Math.ceil(fromMs / bucketMs) * bucketMs; t + windowMs <= toMs; t += bucketMs) {
    const below = (meanMbps(buckets, bucketMs, t, t + windowMs) ?? 0) < line;
    if (below) dipped = true;
    else if (dipped) return t + windowMs / 2 - fromMs;
    else if (t - fromMs > dipWithinMs) return 0;
  }
  return dipped ? null : 0;
}

export function medianOf(xs: readonly number[]): number | null {
  if (xs.length === 0) return null;
  const s = [...xs].sort((p, q) => p - q);
  const m = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? (s[m] ?? null) : ((s[m - 1] ?? 0) + (s[m] ?? 0)) / 2;
}

/**
 * The bytes a source sends: the AES-128-CTR keystream of a 16-byte seed (random-looking, no pattern
 * that a lost or repeated block could hide behind, 1–2 GB/s with AES-NI). Because it is a function of
 * the seed and the offset, the sink checks every byte as it arrives, which tells a corrupted stream
 * from a truncated one (a transfer cut short at the bound still arrived intact as far as it went), and
 * can say where misplaced bytes came from (sourceOffsetOf).
 */
export class ByteStream {
  private readonly ks: Cipher;
  private zeros = Buffer.alloc(0);

  constructor(private readonly seed: Buffer) {
    if (seed.length !== 16) throw new RangeError('the seed is 16 bytes');
    this.ks = ByteStream.cipherAt(seed, 0);
  }

  /** A keystream cipher positioned at `offset` (a multiple of 16). */
  private static cipherAt(seed: Buffer, offset: number): Cipher {
    const iv = Buffer.alloc(16);
    iv.writeBigUInt64BE(BigInt(offset / 16), 8);
    return createCipheriv('aes-128-ctr', seed, iv);
  }

  /** The next n bytes of the stream, in a fresh buffer. */
  next(n: number): Buffer {
    if (this.zeros.length < n) this.zeros = Buffer.alloc(Math.max(n, 256 * 1024));
    return this.ks.update(this.zeros.subarray(0, n));
  }

  /** Bytes [from, from + n) of the stream. */
  static slice(seed: Buffer, from: number, n: number): Buffer {
    const start = Math.floor(Math.max(0, from) / 16) * 16;
    const c = ByteStream.cipherAt(seed, start);
    return c.update(Buffer.alloc(n + (Math.max(0, from) - start))).subarray(Math.max(0, from) - start);
  }

  /**
   * Where in the stream `needle` (bytes that arrived at `atOffset` but do not belong there) was sent,
   * searching ±`radius` bytes around it; null when not found (garbage rather than misplaced data).
   */
  static sourceOffsetOf(seed: Buffer, needle: Buffer, atOffset: number, radius = 16 * 1024 * 1024): number | null {
    const from = Math.max(0, atOffset - radius);
    const hay = ByteStream.slice(seed, from, atOffset + radius - from);
    const i = hay.indexOf(needle);
    return i < 0 ? null : from + i;
  }
}

export const DEFAULT_SEED = '72656d6c6d6e65742d666c6f776d7472';

/** Compares a received chunk with what the stream says belongs there; -1 when equal. */
export function firstMismatch(got: Buffer, expected: Buffer): number {
  if (got.equals(expected)) return -1;
  const n = Math.min(got.length, expected.length);
  for (let i = 0; i < n; i++) if (got[i] !== expected[i]) return i;
  return n;
}

// 2. The reports, as zod schemas: the harness narrows the tool's stdout with parseReport.

const Common = {
  tool: z.literal('flowmeter'),
  /** ECONNRESET, EPIPE, ETIMEDOUT...: any socket error on the flow counts as a reset. */
  reset: z.boolean(),
  error: z.string().nullable(),
  /** The flow ended cleanly (FIN both ways) before --until. */
  completed: z.boolean(),
  origin_epoch_ms: z.number(),
  /** Relative to the origin; null without --fault-at. */
  fault_at_ms: z.number().nullable(),
  /** When the flow ended (or was given up at --until), relative to the origin. */
  end_ms: z.number(),
  default_congestion: z.string().nullable(),
};

export const RrServerReport = z.object({
  ...Common,
  mode: z.literal('rr-server'),
  requests: z.number(),
  echoed_bytes: z.number(),
});
export type RrServerReport = z.infer<typeof RrServerReport>;

export const RrClientReport = z.object({
  ...Common,
  mode: z.literal('rr-client'),
  interval_ms: z.number(),
  sent: z.number(),
  echoed: z.number(),
  /** Sent but never echoed by the end (TCP loses nothing unless the connection dies). */
  lost: z.number(),
  /** Longest time between consecutive echoes in the fault window (the whole flow without --fault-at). */
  gap_ms: z.number(),
  gap_start_ms: z.number().nullable(),
  /** Longest time between consecutive echoes over the whole flow. */
  max_gap_ms: z.number(),
  rtt_ms_median: z.number().nullable(),
  rtt_ms_max: z.number().nullable(),
  /** Receive times of the echoes, ms from the origin (0.1 ms). */
  echo_ms: z.array(z.number()),
});
export type RrClientReport = z.infer<typeof RrClientReport>;

export const SinkReport = z.object({
  ...Common,
  mode: z.literal('sink'),
  bytes: z.number(),
  sha256: z.string(),
  /** Every byte that arrived is the byte the source sent at that offset (says nothing of bytes that did not arrive). */
  verified: z.boolean(),
  /** The first offset where the received bytes differ from the stream, the number of differing chunks, and
   *  where the 64 bytes found at that offset were really sent (null: nowhere within ±16 MB). */
  mismatch: z
    .object({ first_offset: z.number(), chunks: z.number(), found_at_source_offset: z.number().nullable(), sample_hex: z.string() })
    .nullable(),
  bucket_ms: z.number(),
  /** Bytes delivered to the application per bucket, bucket 0 starting at the origin. */
  buckets: z.array(z.number()),
  /** Longest run of empty buckets from --fault-at to the end (after the first byte without --fault-at). */
  gap_ms: z.number(),
  gap_start_ms: z.number().nullable(),
  /** Longest run of empty buckets from the first byte to the end. */
  max_gap_ms: z.number(),
  first_byte_ms: z.number().nullable(),
  /** The sampling timer's longest interval: bucket attribution is only as good as this. */
  sampler_max_interval_ms: z.number(),
  rr: RrServerReport.nullable(),
});
export type SinkReport = z.infer<typeof SinkReport>;

export const SourceReport = z.object({
  ...Common,
  mode: z.literal('source'),
  bytes: z.number(),
  sha256: z.string(),
  /** When the bulk connection was up, ms from the origin (negative: before --start-at, as planned). */
  connected_ms: z.number(),
  /** How late sending began after --start-at (connection set-up or a slow start of this process). */
  late_start_ms: z.number(),
  rr: RrClientReport.nullable(),
});
export type SourceReport = z.infer<typeof SourceReport>;

export const Report = z.discriminatedUnion('mode', [SinkReport, SourceReport, RrClientReport, RrServerReport]);
export type Report = z.infer<typeof Report>;

export class ReportError extends Error {
  override name = 'ReportError';
}

/** The last JSON line of a flowmeter's stdout, narrowed; throws ReportError saying what was wrong. */
export function parseReport<S extends z.ZodType>(stdout: string, schema: S): z.infer<S> {
  const line = stdout
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l.startsWith('{'))
    .pop();
  if (line === undefined) throw new ReportError(`flowmeter printed no JSON report: ${stdout.trim().slice(0, 200) || '(nothing)'}`);
  let raw: unknown;
  try {
    raw = JSON.parse(line);
  } catch (e) {
    throw new ReportError(`flowmeter report is not JSON: ${e instanceof Error ? e.message : String(e)}`);
  }
  const r = schema.safeParse(raw);
  if (!r.success) {
    const i = r.error.issues[0];
    throw new ReportError(`flowmeter report not understood: ${i ? `${i.path.join('.')}: ${i.message}` : 'unknown shape'}`);
  }
  return r.data;
}

// 3. The modes.

interface Schedule {
  /** Epoch ms: sending begins, bucket 0 starts. */
  startAt: number;
  /** Epoch ms or null. */
  faultAt: number | null;
  /** Epoch ms: hard bound. */
  until: number;
}

/** How long after --start-at a client keeps retrying a refused connect (it then starts late, and says so). */
const CONNECT_GRACE_MS = 3_000;

const nowMs = (): number => performance.timeOrigin + performance.now();
const round1 = (x: number): number => Math.round(x * 10) / 10;

function defaultCongestion(): string | null {
  try {
    return readFileSync('/proc/sys/net/ipv4/tcp_congestion_control', 'utf8').trim();
  } catch {
    return null;
  }
}

function errorCode(e: unknown): string {
  if (e instanceof Error) return 'code' in e && typeof e.code === 'string' ? e.code : e.message;
  return String(e);
}

function listen(server: Server, host: string, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host, port, backlog: 8 }, () => {
      server.off('error', reject);
      resolve();
    });
  });
}

function connectOnce(host: string, port: number, noDelay: boolean): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = createConnection({ host, port, noDelay });
    s.once('error', reject);
    s.once('connect', () => {
      s.off('error', reject);
      resolve(s);
    });
  });
}

/**
 * Connects, retrying while the server is not listening yet (the harness starts both ends at once to
 * save a process start-up), until `deadline` (epoch ms).
 */
async function connect(host: string, port: number, noDelay: boolean, deadline: number): Promise<Socket> {
  for (;;) {
    try {
      return await connectOnce(host, port, noDelay);
    } catch (e) {
      if (errorCode(e) !== 'ECONNREFUSED' || nowMs() + 50 > deadline) throw e;
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

/** The echo side of the request/response stream: one connection, echoed byte for byte. */
function serveRr(server: Server, sched: Schedule): Promise<RrServerReport> {
  return new Promise((resolve) => {
    let bytes = 0;
    let reset = false;
    let error: string | null = null;
    let finished = false;
    let completed = false;
    let sock: Socket | null = null;
    const finish = (): void => {
      if (finished) return;
      finished = true;
      clearTimeout(bound);
      sock?.destroy();
      server.close();
      resolve({
        tool: 'flowmeter',
        mode: 'rr-server',
        reset,
        error,
        completed,
        origin_epoch_ms: sched.startAt,
        fault_at_ms: sched.faultAt === null ? null : sched.faultAt - sched.startAt,
        end_ms: round1(nowMs() - sched.startAt),
        default_congestion: defaultCongestion(),
        requests: Math.floor(bytes / RR_MESSAGE_BYTES),
        echoed_bytes: bytes,
      });
    };
    const bound = setTimeout(finish, Math.max(0, sched.until - nowMs()));
    server.once('connection', (s) => {
      sock = s;
      s.setNoDelay(true);
      s.on('data', (d: Buffer) => {
        bytes += d.length;
        s.write(d);
      });
      s.on('error', (e) => {
        reset = true;
        error ??= errorCode(e);
      });
      s.on('end', () => (completed = !reset));
      s.on('close', finish);
    });
  });
}

/** Bulk sink: hash everything, count bytes into buckets from a sampling timer. */
function serveBulk(server: Server, sched: Schedule, bucketMs: number, sampleMs: number, seed: Buffer): Promise<Omit<SinkReport, 'rr'>> {
  return new Promise((resolve) => {
    const hash = createHash('sha256');
    const stream = new ByteStream(seed);
    let mismatch: { first_offset: number; chunks: number; needle: Buffer } | null = null;
    const buckets: number[] = [];
    let bytes = 0;
    let sampled = 0;
    let lastTick = nowMs();
    let maxInterval = 0;
    let reset = false;
    let error: string | null = null;
    let completed = false;
    let finished = false;
    let sock: Socket | null = null;
    // Attribute the bytes that arrived since the last tick to the bucket holding this tick: they were
    // delivered to us by then. Sampling twice per bucket keeps timer jitter from leaving a bucket empty.
    const sample = (): void => {
      const t = nowMs();
      // Only once the flow runs: before that the interval includes this process's own start-up.
      if (t > sched.startAt) maxInterval = Math.max(maxInterval, t - lastTick);
      lastTick = t;
      const idx = Math.max(0, Math.floor((t - sched.startAt) / bucketMs));
      while (buckets.length <= idx) buckets.push(0);
      buckets[idx] = (buckets[idx] ?? 0) + (bytes - sampled);
      sampled = bytes;
      // Drain the socket once per tick, in 64 KiB reads, instead of waking for every arriving packet:
      // packets that come out of a TUN one by one would otherwise cost one wake-up and one small read
      // each (measured: 42% of a core at 100 Mbit/s over realmnet). resume() starts reading, the poll
      // phase that follows reads what the kernel holds, and the check phase pauses again. The kernel
      // buffers at most a tick of data (auto-tuned receive buffer), so the flow is not slowed.
      const s = sock;
      if (s !== null && !s.destroyed) {
        s.resume();
        setImmediate(() => s.pause());
      }
    };
    const timer = setInterval(sample, sampleMs);
    const finish = (): void => {
      if (finished) return;
      finished = true;
      sample();
      clearInterval(timer);
      clearTimeout(bound);
      sock?.destroy();
      server.close();
      const endMs = nowMs() - sched.startAt;
      const faultMs = sched.faultAt === null ? null : sched.faultAt - sched.startAt;
      const first = firstByteMs(buckets, bucketMs);
      // A flow that never completed stalled until the bound: its window runs to the bound.
      const overall = first === null ? { ms: endMs, startMs: 0 } : longestGap(buckets, bucketMs, first, endMs);
      const windowed = faultMs === null ? overall : longestGap(buckets, bucketMs, faultMs, endMs);
      resolve({
        tool: 'flowmeter',
        mode: 'sink',
        reset,
        error,
        completed,
        origin_epoch_ms: sched.startAt,
        fault_at_ms: faultMs,
        end_ms: round1(endMs),
        default_congestion: defaultCongestion(),
        bytes,
        sha256: hash.digest('hex'),
        verified: mismatch === null,
        mismatch:
          mismatch === null
            ? null
            : {
                first_offset: mismatch.first_offset,
                chunks: mismatch.chunks,
                found_at_source_offset: ByteStream.sourceOffsetOf(seed, mismatch.needle, mismatch.first_offset),
                sample_hex: mismatch.needle.subarray(0, 16).toString('hex'),
              },
        bucket_ms: bucketMs,
        buckets,
        gap_ms: round1(windowed.ms),
        gap_start_ms: windowed.startMs,
        max_gap_ms: round1(overall.ms),
        first_byte_ms: first,
        sampler_max_interval_ms: round1(maxInterval),
      });
    };
    const bound = setTimeout(finish, Math.max(0, sched.until - nowMs()));
    server.once('connection', (s) => {
      sock = s;
      s.on('data', (d: Buffer) => {
        const at = firstMismatch(d, stream.next(d.length));
        if (at >= 0) {
          if (mismatch === null) mismatch = { first_offset: bytes + at, chunks: 0, needle: Buffer.from(d.subarray(at, at + 64)) };
          mismatch.chunks++;
        }
        bytes += d.length;
        hash.update(d);
      });
      // Read only when the sampler ticks (see sample()): paused until then.
      s.pause();
      s.on('error', (e) => {
        reset = true;
        error ??= errorCode(e);
      });
      s.on('end', () => (completed = !reset));
      s.on('close', finish);
    });
  });
}

interface RrClientOptions {
  seconds: number;
  intervalMs: number;
}

/** From startAt sends one message per interval for `seconds` on a connected socket, then waits for the echoes. */
function rrClient(sock: Socket, o: RrClientOptions, sched: Schedule): Promise<RrClientReport> {
  const sendTimes: number[] = [];
  const echoes: number[] = [];
  const rtts: number[] = [];
  let pending: Buffer = Buffer.alloc(0);
  let reset = false;
  let error: string | null = null;
  let completed = false;
  const stopAt = sched.startAt + o.seconds * 1000;
  const total = Math.max(0, Math.floor((o.seconds * 1000) / o.intervalMs));
  let sending = true;
  return new Promise((resolve) => {
    let finished = false;
    let sendTimer: NodeJS.Timeout | undefined;
    const finish = (): void => {
      if (finished) return;
      finished = true;
      clearTimeout(sendTimer);
      clearTimeout(bound);
      sock.destroy();
      const endMs = nowMs() - sched.startAt;
      const faultMs = sched.faultAt === null ? null : sched.faultAt - sched.startAt;
      const firstEcho = echoes[0];
      const overall = firstEcho === undefined ? { ms: endMs, startMs: 0 } : longestIntervalGap(echoes, firstEcho, endMs);
      const windowed = faultMs === null ? overall : longestIntervalGap(echoes, faultMs, endMs);
      const sortedRtt = [...rtts].sort((a, b) => a - b);
      resolve({
        tool: 'flowmeter',
        mode: 'rr-client',
        reset,
        error,
        completed,
        origin_epoch_ms: sched.startAt,
        fault_at_ms: faultMs,
        end_ms: round1(endMs),
        default_congestion: defaultCongestion(),
        interval_ms: o.intervalMs,
        sent: sendTimes.length,
        echoed: echoes.length,
        lost: sendTimes.length - echoes.length,
        gap_ms: round1(windowed.ms),
        gap_start_ms: windowed.startMs === null ? null : round1(windowed.startMs),
        max_gap_ms: round1(overall.ms),
        rtt_ms_median: sortedRtt.length ? round1(medianOf(sortedRtt) ?? 0) : null,
        rtt_ms_max: sortedRtt.length ? round1(sortedRtt[sortedRtt.length - 1] ?? 0) : null,
        echo_ms: echoes.map(round1),
      });
    };
    const bound = setTimeout(finish, Math.max(0, sched.until - nowMs()));
    let ending = false;
    const maybeDone = (): void => {
      if (!ending && !sending && echoes.length >= sendTimes.length) {
        ending = true;
        completed = !reset;
        sock.end();
      }
    };
    sock.on('data', (d: Buffer) => {
      const t = nowMs() - sched.startAt;
      pending = pending.length === 0 ? d : Buffer.concat([pending, d]);
      while (pending.length >= RR_MESSAGE_BYTES) {
        const seq = pending.readUInt32BE(0);
        pending = pending.subarray(RR_MESSAGE_BYTES);
        const sent = sendTimes[seq];
        echoes.push(t);
        if (sent !== undefined) rtts.push(t - sent);
      }
      maybeDone();
    });
    sock.on('error', (e) => {
      reset = true;
      error ??= errorCode(e);
    });
    sock.on('close', finish);
    // Message k leaves at startAt + k*interval (absolute schedule, so timer drift does not accumulate).
    const sendNext = (): void => {
      const k = sendTimes.length;
      if (k >= total || nowMs() >= stopAt || sock.destroyed) {
        sending = false;
        maybeDone();
        return;
      }
      const msg = Buffer.alloc(RR_MESSAGE_BYTES);
      msg.writeUInt32BE(k, 0);
      const t = nowMs() - sched.startAt;
      msg.writeDoubleBE(t, 4);
      sendTimes.push(t);
      sock.write(msg);
      sendTimer = setTimeout(sendNext, Math.max(0, sched.startAt + (k + 1) * o.intervalMs - nowMs()));
    };
    sendTimer = setTimeout(sendNext, Math.max(0, sched.startAt - nowMs()));
  });
}

interface SourceOptions {
  seconds: number;
  /** Stop after this many bytes (and `seconds` at the latest). */
  bytes: number | null;
  chunkBytes: number;
  seed: Buffer;
}

function bulkSource(sock: Socket, connectedMs: number, o: SourceOptions, sched: Schedule): Promise<Omit<SourceReport, 'rr'>> {
  const hash = createHash('sha256');
  const stream = new ByteStream(o.seed);
  let sent = 0;
  let reset = false;
  let error: string | null = null;
  let completed = false;
  let ended = false;
  let lateStart = 0;
  const stopAt = sched.startAt + o.seconds * 1000;
  return new Promise((resolve) => {
    let finished = false;
    let stopTimer: NodeJS.Timeout | undefined;
    let startTimer: NodeJS.Timeout | undefined;
    const finish = (): void => {
      if (finished) return;
      finished = true;
      clearTimeout(bound);
      clearTimeout(stopTimer);
      clearTimeout(startTimer);
      sock.destroy();
      resolve({
        tool: 'flowmeter',
        mode: 'source',
        reset,
        error,
        completed,
        origin_epoch_ms: sched.startAt,
        fault_at_ms: sched.faultAt === null ? null : sched.faultAt - sched.startAt,
        end_ms: round1(nowMs() - sched.startAt),
        default_congestion: defaultCongestion(),
        bytes: sent,
        sha256: hash.digest('hex'),
        connected_ms: round1(connectedMs),
        late_start_ms: round1(lateStart),
      });
    };
    const bound = setTimeout(finish, Math.max(0, sched.until - nowMs()));
    const stop = (): void => {
      if (ended) return;
      ended = true;
      // FIN after everything queued; 'close' follows the peer's FIN.
      sock.end();
    };
    const pump = (): void => {
      // Yield every few ms so that the timers of this process (the rr client) stay on time when the
      // kernel keeps accepting writes (a fast path or a large send buffer).
      const yieldAt = performance.now() + 4;
      while (!ended) {
        if (performance.now() > yieldAt) {
          setImmediate(pump);
          return;
        }
        if (nowMs() >= stopAt || (o.bytes !== null && sent >= o.bytes)) return stop();
        const n = o.bytes === null ? o.chunkBytes : Math.min(o.chunkBytes, o.bytes - sent);
        // A fresh buffer per write (next() returns one): write() keeps a reference until it is sent.
        const piece = stream.next(n);
        hash.update(piece);
        sent += n;
        if (!sock.write(piece)) {
          sock.once('drain', pump);
          return;
        }
      }
    };
    sock.on('error', (e) => {
      reset = true;
      error ??= errorCode(e);
    });
    sock.on('end', () => (completed = !reset));
    sock.on('close', finish);
    startTimer = setTimeout(
      () => {
        lateStart = Math.max(0, nowMs() - sched.startAt);
        // A stalled connection never drains: the stop timer ends the flow on time anyway.
        stopTimer = setTimeout(stop, Math.max(0, stopAt - nowMs()));
        pump();
      },
      Math.max(0, sched.startAt - nowMs()),
    );
  });
}

// 4. Command line.

class UsageError extends Error {}

const USAGE = `usage: flowmeter.ts MODE [options]
  sink      --listen ADDR --port P [--rr-port Q] [--bucket-ms 10] [--seed HEX32]
  source    --connect ADDR --port P [--rr-port Q] --seconds S [--bytes N] [--seed HEX32]
  rr-server --listen ADDR --port P
  rr-client --connect ADDR --port P --seconds S [--interval-ms 10]
common: --start-at EPOCH_MS (default: now + 500 ms) --fault-at EPOCH_MS --until EPOCH_MS (default: start + seconds + 10 s; servers: now + 60 s)`;

interface Cli {
  mode: 'sink' | 'source' | 'rr-server' | 'rr-client';
  host: string;
  port: number;
  rrPort: number | null;
  seconds: number;
  bytes: number | null;
  bucketMs: number;
  intervalMs: number;
  seed: Buffer;
  sched: Schedule;
}

export function parseCli(argv: readonly string[], now: number): Cli {
  const [mode, ...rest] = argv;
  if (mode !== 'sink' && mode !== 'source' && mode !== 'rr-server' && mode !== 'rr-client') throw new UsageError(`unknown mode "${mode ?? ''}"`);
  let v;
  try {
    v = parseArgs({
      args: rest,
      options: {
        listen: { type: 'string' },
        connect: { type: 'string' },
        port: { type: 'string' },
        'rr-port': { type: 'string' },
        seconds: { type: 'string' },
        bytes: { type: 'string' },
        'bucket-ms': { type: 'string', default: String(DEFAULT_BUCKET_MS) },
        'interval-ms': { type: 'string', default: String(DEFAULT_RR_INTERVAL_MS) },
        'start-at': { type: 'string' },
        'fault-at': { type: 'string' },
        until: { type: 'string' },
        seed: { type: 'string', default: DEFAULT_SEED },
      },
      strict: true,
      allowPositionals: false,
    }).values;
  } catch (e) {
    throw new UsageError(e instanceof Error ? e.message : String(e));
  }
  const num = (s: string | undefined, name: string, min: number, max: number): number | null => {
    if (s === undefined) return null;
    const n = Number(s);
    if (!Number.isFinite(n) || n < min || n > max) throw new UsageError(`--${name} ${s}: expected a number from ${min} to ${max}`);
    return n;
  };
  const server = mode === 'sink' || mode === 'rr-server';
  const host = server ? v.listen : v.connect;
  if (host === undefined) throw new UsageError(`${mode} needs --${server ? 'listen' : 'connect'}`);
  const port = num(v.port, 'port', 1, 65535);
  if (port === null) throw new UsageError(`${mode} needs --port`);
  const seconds = num(v.seconds, 'seconds', 0.1, 3600);
  if (!server && seconds === null) throw new UsageError(`${mode} needs --seconds`);
  const startAt = num(v['start-at'], 'start-at', 0, Number.MAX_SAFE_INTEGER) ?? now + 500;
  const faultAt = num(v['fault-at'], 'fault-at', 0, Number.MAX_SAFE_INTEGER);
  const until = num(v.until, 'until', 0, Number.MAX_SAFE_INTEGER) ?? (server ? now + 60_000 : startAt + (seconds ?? 0) * 1000 + 10_000);
  if (until <= startAt) throw new UsageError('--until must be after --start-at');
  if (!/^[0-9a-fA-F]{32}$/.test(v.seed)) throw new UsageError(`--seed ${v.seed}: expected 32 hex digits (16 bytes)`);
  return {
    mode,
    host,
    port,
    rrPort: num(v['rr-port'], 'rr-port', 1, 65535),
    seconds: seconds ?? 0,
    bytes: num(v.bytes, 'bytes', 1, Number.MAX_SAFE_INTEGER),
    bucketMs: num(v['bucket-ms'], 'bucket-ms', 1, 1000) ?? DEFAULT_BUCKET_MS,
    intervalMs: num(v['interval-ms'], 'interval-ms', 1, 1000) ?? DEFAULT_RR_INTERVAL_MS,
    seed: Buffer.from(v.seed, 'hex'),
    sched: { startAt, faultAt, until },
  };
}

async function main(argv: readonly string[]): Promise<number> {
  let c: Cli;
  try {
    c = parseCli(argv, nowMs());
  } catch (e) {
    if (e instanceof UsageError) {
      process.stderr.write(`flowmeter: ${e.message}\n${USAGE}\n`);
      return 2;
    }
    throw e;
  }
  let report: Report;
  switch (c.mode) {
    case 'sink': {
      const bulk = createServer();
      const rr = c.rrPort === null ? null : createServer();
      await listen(bulk, c.host, c.port);
      if (rr !== null && c.rrPort !== null) await listen(rr, c.host, c.rrPort);
      process.stderr.write(`flowmeter: listening on [${c.host}]:${c.port}${c.rrPort === null ? '' : ` and :${c.rrPort}`}\n`);
      const [b, r] = await Promise.all([serveBulk(bulk, c.sched, c.bucketMs, Math.max(1, c.bucketMs / 2), c.seed), rr === null ? null : serveRr(rr, c.sched)]);
      report = { ...b, rr: r };
      break;
    }
    case 'rr-server': {
      const rr = createServer();
      await listen(rr, c.host, c.port);
      process.stderr.write(`flowmeter: listening on [${c.host}]:${c.port}\n`);
      report = await serveRr(rr, c.sched);
      break;
    }
    case 'source': {
      const deadline = Math.min(c.sched.until, c.sched.startAt + CONNECT_GRACE_MS);
      const rrPort = c.rrPort;
      const [bulk, rr] = await Promise.all([connect(c.host, c.port, false, deadline), rrPort === null ? null : connect(c.host, rrPort, true, deadline)]);
      const connectedMs = nowMs() - c.sched.startAt;
      // The harness waits for this line before --start-at, and retries with more lead without it.
      process.stderr.write(`flowmeter: connected ${round1(connectedMs)} ms from start\n`);
      const [b, r] = await Promise.all([
        bulkSource(bulk, connectedMs, { seconds: c.seconds, bytes: c.bytes, chunkBytes: 256 * 1024, seed: c.seed }, c.sched),
        rr === null ? null : rrClient(rr, { seconds: c.seconds, intervalMs: c.intervalMs }, c.sched),
      ]);
      report = { ...b, rr: r };
      break;
    }
    case 'rr-client': {
      const sock = await connect(c.host, c.port, true, Math.min(c.sched.until, c.sched.startAt + CONNECT_GRACE_MS));
      process.stderr.write(`flowmeter: connected ${round1(nowMs() - c.sched.startAt)} ms from start\n`);
      report = await rrClient(sock, { seconds: c.seconds, intervalMs: c.intervalMs }, c.sched);
      break;
    }
  }
  process.stdout.write(JSON.stringify(report) + '\n');
  return 0;
}

const invokedDirectly = process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href;
if (invokedDirectly) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (e: unknown) => {
      // A failed connect or listen: one line, non-zero, so the harness can say why.
      process.stderr.write(`flowmeter: ${e instanceof Error ? errorCode(e) + ': ' + e.message : String(e)}\n`);
      process.exit(1);
    },
  );
}
