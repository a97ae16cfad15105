/**
 * One iperf3 TCP measurement between two testbed nodes: a one-shot server (`-s -1`) bound to an
 * address in one namespace, a client in another. Congestion control is set explicitly (cubic by
 * default): the machine's default is bbr, which distorts comparisons (DESIGN.md §2).
 * Bounded in time: the client is killed after seconds + 15 s, the server when the client is done.
 */
import { z } from 'zod';
import type { AnyTopology, NodeOf, NsProcess, Testbed } from '../testbed/topology.ts';

export interface IperfOptions<N extends string> {
  server: N;
  client: N;
  /** The server binds to it and the client connects to it; IPv4 or IPv6. */
  address: string;
  seconds?: number;
  /** Parallel streams (-P). */
  streams?: number;
  congestion?: string;
  port?: number;
  /** Client source address (-B). */
  bind?: string;
}

export interface IperfResult {
  /** Receiver-side sum over all streams. */
  gbps: number;
  senderGbps: number;
  /** TCP retransmissions (sender side), when iperf3 reports them. */
  retransmits: number | null;
  /** The MSS the client's TCP used, when reported. */
  mss: number | null;
  congestion: string | null;
  seconds: number;
  streams: number;
}

export class IperfError extends Error {
  override name = 'IperfError';
}

const Sum = z.object({ bits_per_second: z.number(), seconds: z.number().optional(), retransmits: z.number().optional() });
const IperfJson = z.object({
  error: z.string().optional(),
  start: z.object({ tcp_mss_default: z.number().optional(), tcp_mss: z.number().optional() }).optional(),
  end: z
    .object({
      sum_received: Sum.optional(),
      sum_sent: Sum.optional(),
      sender_tcp_congestion: z.string().optional(),
    })
    .optional(),
});

/** Narrows iperf3 -J output; throws IperfError with iperf3's own message when the test failed. */
export function parseIperfJson(text: string, streams: number): IperfResult {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    throw new IperfError(`iperf3 printed no JSON: ${text.trim().slice(0, 300) || '(nothing)'}`);
  }
  const parsed = IperfJson.safeParse(raw);
  if (!parsed.success) throw new IperfError(`iperf3 JSON not understood: ${parsed.error.issues[0]?.message ?? 'unknown shape'}`);
  const j = parsed.data;
  if (j.error !== undefined) throw new IperfError(`iperf3: ${j.error}`);
  const rx = j.end?.sum_received;
  const tx = j.end?.sum_sent;
  if (!rx || !tx) throw new IperfError('iperf3 JSON has no end.sum_received / end.sum_sent');
  return {
    gbps: rx.bits_per_second / 1e9,
    senderGbps: tx.bits_per_second / 1e9,
    retransmits: tx.retransmits ?? null,
    mss: j.start?.tcp_mss_default ?? j.start?.tcp_mss ?? null,
    congestion: j.end?.sender_tcp_congestion ?? null,
    seconds: rx.seconds ?? 0,
    streams,
  };
}

async function waitListening<T extends AnyTopology>(tb: Testbed<T>, node: NodeOf<T>, port: number, server: NsProcess, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (!server.running()) throw new IperfError(`iperf3 server exited: ${(server.stderrTail() || server.stdoutTail()).trim().slice(0, 300)}`);
    const r = await tb.exec(node, 'ss', ['-Hltn', `sport = :${port}`], { allowFail: true });
    if (r.code === 0 && r.stdout.trim().length > 0) return;
    await new Promise((res) => setTimeout(res, 50));
  }
  throw new IperfError(`iperf3 server did not listen on port ${port} within ${ms} ms`);
}

export async function runIperf<T extends AnyTopology>(tb: Testbed<T>, o: IperfOptions<NodeOf<T>>): Promise<IperfResult> {
  const seconds = o.seconds ?? 10;
  const streams = o.streams ?? 1;
  const port = o.port ?? 5201;
  const server = tb.spawn(o.server, 'iperf3', ['-s', '-1', '-B', o.address, '-p', String(port)]);
  try {
    await waitListening(tb, o.server, port, server, 5_000);
    const args = ['-c', o.address, '-p', String(port), '-t', String(seconds), '-P', String(streams), '-J', '-C', o.congestion ?? 'cubic', '--connect-timeout', '3000'];
    if (o.bind !== undefined) args.push('-B', o.bind);
    const r = await tb.exec(o.client, 'iperf3', args, { allowFail: true, timeoutMs: (seconds + 15) * 1000 });
    if (r.code === -1 && r.stdout.trim() === '') throw new IperfError(`iperf3 client killed after ${seconds + 15} s`);
    return parseIperfJson(r.stdout, streams);
  } finally {
    await server.stop(1_000);
  }
}
