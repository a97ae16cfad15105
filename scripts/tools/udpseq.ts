/**
 * udpseq: numbered UDP datagrams, to see what a UDP application sees across a failover (issue #11:
 * re-sent packets and make-before-break copies must never reach an application twice).
 *
 *   tsx scripts/tools/udpseq.ts recv --listen ADDR --port P --seconds S
 *   tsx scripts/tools/udpseq.ts send --to ADDR --port P --seconds S [--pps 2000] [--size 1000]
 *
 * Each datagram carries its number (8 bytes, big-endian) and is padded to --size. The receiver runs
 * for --seconds, then prints one JSON line: { received, unique, duplicates, highest, missing, gaps }
 * (gaps: the first ten runs of missing numbers).
 * The sender prints { sent } when done.
 */
import { createSocket } from 'node:dgram';
import { isIPv6 } from 'node:net';
import { parseArgs } from 'node:util';

class UsageError extends Error {
  readonly code = 'USAGE';
}

function num(v: string | undefined, name: string, dflt: number): number {
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0) throw new UsageError(`--${name} ${v}: expected a positive number`);
  return n;
}

async function recv(listen: string, port: number, seconds: number): Promise<void> {
  const sock = createSocket({ type: isIPv6(listen) ? 'udp6' : 'udp4' });
  const seen = new Set<number>();
  let received = 0;
  let duplicates = 0;
  let highest = -1;
  sock.on('message', (m) => {
    if (m.length < 8) return;
    const seq = Number(m.readBigUInt64BE(0));
    received++;
    if (seen.has(seq)) duplicates++;
    else seen.add(seq);
    if (seq > highest) highest = seq;
  });
  await new Promise<void>((resolve, reject) => {
    sock.once('error', reject);
    sock.bind(port, listen, () => resolve());
  });
  // A failover's re-sends arrive as a burst: a small buffer would lose them here, not in the network.
  try {
    sock.setRecvBufferSize(8 * 1024 * 1024);
  } catch {
    // Capped by net.core.rmem_max; the kernel's RcvbufErrors counter tells if it mattered.
  }
  process.stderr.write('udpseq: listening\n');
  await new Promise((r) => setTimeout(r, seconds * 1000));
  sock.close();
  // The first runs of missing numbers, [first, last], to tell a failover's loss from a start-up one.
  const gaps: [number, number][] = [];
  for (let s = 0; s <= highest && gaps.length < 10; s++) {
    if (seen.has(s)) continue;
    let e = s;
    while (e + 1 <= highest && !seen.has(e + 1)) e++;
    gaps.push([s, e]);
    s = e;
  }
  process.stdout.write(JSON.stringify({ received, unique: seen.size, duplicates, highest, missing: highest + 1 - seen.size, gaps }) + '\n');
}

async function send(to: string, port: number, seconds: number, pps: number, size: number): Promise<void> {
  const sock = createSocket({ type: isIPv6(to) ? 'udp6' : 'udp4' });
  let sent = 0;
  const start = performance.now();
  const end = start + seconds * 1000;
  await new Promise<void>((resolve) => {
    const tick = (): void => {
      const now = performance.now();
      if (now >= end) return resolve();
      // Catch up to the schedule: the timer is coarse, the rate is not.
      const due = Math.floor(((now - start) / 1000) * pps);
      while (sent < due) {
        // A buffer per datagram: dgram sends asynchronously and would read a reused one later.
        const buf = Buffer.alloc(Math.max(8, size));
        buf.writeBigUInt64BE(BigInt(sent), 0);
        sock.send(buf, port, to);
        sent++;
      }
      setTimeout(tick, 1);
    };
    tick();
  });
  await new Promise((r) => setTimeout(r, 200));
  sock.close();
  process.stdout.write(JSON.stringify({ sent }) + '\n');
}

async function main(): Promise<void> {
  const { positionals, values } = parseArgs({
    allowPositionals: true,
    options: { listen: { type: 'string' }, to: { type: 'string' }, port: { type: 'string' }, seconds: { type: 'string' }, pps: { type: 'string' }, size: { type: 'string' } },
  });
  const mode = positionals[0];
  const port = num(values.port, 'port', 5003);
  const seconds = num(values.seconds, 'seconds', 5);
  if (mode === 'recv') return recv(values.listen ?? '::', port, seconds);
  if (mode === 'send') {
    if (values.to === undefined) throw new UsageError('send needs --to ADDR');
    return send(values.to, port, seconds, num(values.pps, 'pps', 2000), num(values.size, 'size', 1000));
  }
  throw new UsageError('usage: udpseq recv --listen ADDR --port P --seconds S | udpseq send --to ADDR --port P --seconds S [--pps N] [--size B]');
}

main().catch((e: unknown) => {
  process.stderr.write(`udpseq: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(2);
});
